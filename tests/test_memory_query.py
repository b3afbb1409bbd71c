"""@memory-query: similarity (hybrid), pattern and traversal, through the host and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opensage.errors import NotFoundError, UsageError
from opensage.host import Host
from opensage.store import Workspace
from opensage.types import SessionEvent

from conftest import db_snapshot

GRAPH = [
    '@memory-add-node type=class label=AuthService content="Handles login, password checks and token refresh." metadata={"owner": "identity-team", "layer": "service"}',
    '@memory-add-node type=class label=ParseConfig content="Reads the YAML configuration file and validates it."',
    '@memory-add-node type=class label=PaymentService content="Charges cards through the payment gateway."',
    '@memory-add-node type=class label=OrderService content="Creates orders and asks PaymentService to charge."',
    '@memory-add-node type=module label=api.routes content="HTTP routes of the public API."',
    '@memory-add-node type=function label=checkout_handler content="Checkout endpoint: builds an order."',
    '@memory-add-node type=decision label="Use Postgres" content="We store orders in Postgres for transactions."',
    '@memory-add-node type=concept label=TokenStore content="Keeps refresh tokens; rotates them hourly."',
    "@memory-add-edge fromId=OrderService toId=PaymentService type=calls",
    "@memory-add-edge fromId=api.routes toId=OrderService type=imports",
    "@memory-add-edge fromId=checkout_handler toId=OrderService type=calls",
    "@memory-add-edge fromId=AuthService toId=ParseConfig type=uses",
    "@memory-add-edge fromId=AuthService toId=TokenStore type=depends_on weight=0.9",
    '@memory-add-edge fromId=OrderService toId="Use Postgres" type=implements',
]


def build(host):
    for line in GRAPH:
        host.run_line(line)


@pytest.fixture
def graph_host(host):
    build(host)
    return host


def q(host, **args):
    return host.run("memory-query", args)


def labels(result):
    return [r["label"] for r in result.data]


# -- similarity --------------------------------------------------------------------------------
def test_similarity_ranks_bm25_hits_and_shows_relations(graph_host):
    res = q(graph_host, query="token refresh")
    assert labels(res)[0] in ("AuthService", "TokenStore")
    assert {"AuthService", "TokenStore"} <= set(labels(res)[:3])
    top = res.data[0]
    assert set(top) >= {"id", "label", "type", "excerpt", "score", "relations"}
    auth = next(r for r in res.data if r["label"] == "AuthService")
    assert {"direction": "out", "type": "depends_on", "id": auth["relations"][0]["id"], "label": "TokenStore"} in auth["relations"]
    assert "-depends_on-> TokenStore" in res.text and "score" in res.text
    assert res.data[0]["score"] >= res.data[-1]["score"]


@pytest.mark.parametrize("query, expected", [
    ("AuthServce", "AuthService"),        # misspelled
    ("PaymnetSrvice", "PaymentService"),  # misspelled twice: no word matches, only the fuzzy ranker
    ("parse_config", "ParseConfig"),      # snake_case of a CamelCase label
    ("paymentservice", "PaymentService"),  # lowercased, joined
    ("CheckoutHandler", "checkout_handler"),
])
def test_similarity_finds_identifiers_fuzzily(graph_host, query, expected):
    assert labels(q(graph_host, query=query))[0] == expected


def test_similarity_finds_a_member_written_as_class_dot_member(host, project):
    # "Context.invoke" (or misspelled "Contxt.invok") on the code graph of click's core.py is
    # click.core.Context.invoke; Context.invoked_subcommand, whose words match as well, came first
    import shutil

    import click

    (project / "click").mkdir()
    shutil.copy(Path(click.__file__).parent / "core.py", project / "click" / "core.py")
    (project / "click" / "__init__.py").write_text("")
    host.run("memory-ingest", {"path": "click"})
    for query in ("Context.invoke", "Contxt.invok"):
        assert labels(q(host, query=query, maxResults=3))[0] == "click.core.Context.invoke", query


def test_similarity_expands_one_hop_with_the_edge(graph_host):
    res = q(graph_host, query="gateway cards")  # only PaymentService's text has these words
    assert labels(res)[0] == "PaymentService"
    order = next(r for r in res.data if r["label"] == "OrderService")  # its caller, one hop away
    assert order["via"] == {"from": res.data[0]["id"], "fromLabel": "PaymentService", "edge": "calls",
                            "direction": "in"}
    assert order["score"] < res.data[0]["score"]
    assert "via PaymentService" in res.text and "<-calls- this" in res.text
    assert "via" not in res.data[0]


def test_similarity_node_type_filter_and_max_results(graph_host):
    res = q(graph_host, query="orders service payment checkout", nodeType="class")
    assert res.data and all(r["type"] == "class" for r in res.data)
    assert len(q(graph_host, query="service orders token payment routes", maxResults=2).data) == 2
    assert len(q(graph_host, query="service orders token payment routes").data) > 2


def test_similarity_searches_session_episodes(graph_host):
    session = graph_host.session("chat-1", source="test")
    graph_host.record(session, SessionEvent(kind="user_message", role="user", text="Should we move invoices to a queue?",
                                            meta={"dia_id": "D1:1"}))
    graph_host.record(session, SessionEvent(kind="assistant_message", role="assistant", text="Yes, RabbitMQ fits."))
    res = q(graph_host, query="invoices queue")
    ep = res.data[0]
    assert ep["kind"] == "episode" and ep["sessionId"] == "chat-1" and ep["seq"] == 1
    assert ep["meta"] == {"dia_id": "D1:1"} and ep["eventKind"] == "user_message"
    only = q(graph_host, query="queue", nodeType="episode")
    assert only.data and all(r["kind"] == "episode" for r in only.data)
    assert all(r["kind"] == "node" for r in q(graph_host, query="queue payment", nodeType="class").data)


def test_similarity_empty_result_says_what_to_try(graph_host):
    res = q(graph_host, query="kubernetes helm chart")
    assert res.data == []
    assert "No results" in res.text and "try" in res.text


def test_query_text_never_breaks_fts_syntax(graph_host):
    for text in ['"unbalanced', "AND OR NOT", "NEAR(a b)", "col:umn*", "a - b ^ c", "(((", "Auth* OR"]:
        assert isinstance(q(graph_host, query=text).data, list)


def test_excerpt_is_short_and_around_the_match(host):
    long = "intro " * 60 + "the refresh token rotation happens here " + "outro " * 60
    host.run("memory-add-node", {"type": "concept", "label": "Rotation", "content": long})
    ex = q(host, query="rotation happens").data[0]["excerpt"]
    assert len(ex) <= 170 and "rotation happens" in ex and ex.startswith("…")


# -- pattern -------------------------------------------------------------------------------------
def test_pattern_regex_glob_fields_and_case(graph_host):
    assert labels(q(graph_host, query="Service$", mode="pattern", field="label")) == [
        "AuthService", "PaymentService", "OrderService"]
    assert labels(q(graph_host, query="service$", mode="pattern", field="label"))[0] == "AuthService"  # case-insensitive
    assert q(graph_host, query="service$", mode="pattern", field="label", caseSensitive=True).data == []
    assert labels(q(graph_host, query="*Service", mode="pattern", syntax="glob", field="label")) == [
        "AuthService", "PaymentService", "OrderService"]
    assert labels(q(graph_host, query="api.*", mode="pattern", syntax="glob")) == ["api.routes"]
    assert labels(q(graph_host, query="identity", mode="pattern", field="metadata")) == ["AuthService"]
    assert labels(q(graph_host, query="^layer$", mode="pattern", field="metadata")) == ["AuthService"]  # keys too
    assert labels(q(graph_host, query="yaml", mode="pattern", field="content")) == ["ParseConfig"]
    assert labels(q(graph_host, query="^decision$", mode="pattern", field="type")) == ["Use Postgres"]
    assert len(q(graph_host, query=".", mode="pattern", maxResults=3).data) == 3
    assert all(r["type"] == "class" for r in q(graph_host, query=".", mode="pattern", nodeType="class").data)
    empty = q(graph_host, query="^zzz", mode="pattern")
    assert empty.data == [] and "No node matches" in empty.text


# -- traversal -----------------------------------------------------------------------------------
def test_reverse_traversal_finds_dependents_in_bfs_order(graph_host):
    res = q(graph_host, mode="traversal", startNode="PaymentService", direction="in", depth=3)
    assert [(r["label"], r["depth"]) for r in res.data] == [
        ("OrderService", 1), ("api.routes", 2), ("checkout_handler", 2)]
    assert res.data[0]["via"]["edge"] == "calls" and res.data[0]["via"]["fromLabel"] == "PaymentService"
    assert res.data[1]["via"]["fromLabel"] == "OrderService"
    assert "traversal from" in res.text and "depth 2" in res.text
    # depth limits, and the query text can name the start node
    res1 = q(graph_host, mode="traversal", query="what depends on PaymentService", direction="in", depth=1)
    assert labels(res1) == ["OrderService"]


def test_traversal_directions_edge_types_and_max_results(graph_host):
    out = q(graph_host, mode="traversal", startNode="OrderService")
    assert set(labels(out)) == {"PaymentService", "Use Postgres"}
    both = q(graph_host, mode="traversal", startNode="OrderService", direction="both", depth=1)
    assert set(labels(both)) == {"PaymentService", "Use Postgres", "api.routes", "checkout_handler"}
    only_calls = q(graph_host, mode="traversal", startNode="OrderService", direction="both", edgeTypes=["calls"])
    assert set(labels(only_calls)) == {"PaymentService", "checkout_handler"}
    assert len(q(graph_host, mode="traversal", startNode="OrderService", direction="both", maxResults=2).data) == 2
    start_id = q(graph_host, query="PaymentService").data[0]["id"]
    assert labels(q(graph_host, mode="traversal", startNode=start_id, direction="in", depth=1)) == ["OrderService"]
    leaf = q(graph_host, mode="traversal", startNode="TokenStore")
    assert leaf.data == [] and "direction=both" in leaf.text


def test_traversal_handles_cycles(graph_host):
    graph_host.run_line("@memory-add-edge fromId=PaymentService toId=OrderService type=calls")
    res = q(graph_host, mode="traversal", startNode="OrderService", depth=6)
    assert sorted(labels(res)) == ["PaymentService", "Use Postgres"]


def test_in_process_errors(graph_host):
    with pytest.raises(NotFoundError, match="PaymentService"):  # suggests the close label
        q(graph_host, mode="traversal", startNode="PaymentServce")
    with pytest.raises(UsageError, match="depth"):
        q(graph_host, mode="traversal", startNode="OrderService", depth=7)
    with pytest.raises(UsageError, match="edgeTypes"):
        q(graph_host, mode="traversal", startNode="OrderService", edgeTypes=["Bad Type"])
    with pytest.raises(UsageError, match="needs query"):
        q(graph_host, query="  ")


# -- the CLI door: exit 2, nothing changed ---------------------------------------------------------
def test_cli_errors_exit_2_and_change_nothing(cli, project):
    h = Host(Workspace(project))
    try:
        build(h)
    finally:
        h.close()
    before = db_snapshot(project)
    cases = [
        (["@memory-query", "query=([", "mode=pattern"], "regular expression"),
        (["@memory-query", "mode=traversal", "startNode=NoSuchNode"], "unknown startNode"),
        (["@memory-query", "query=x", "mode=fuzzy"], "mode"),
        (["@memory-query", "mode=traversal", "startNode=OrderService", "depth=9"], "depth"),
        (["@memory-query", "query=x", "maxResults=0"], "maxResults"),
    ]
    for args, needle in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
    assert db_snapshot(project) == before
    assert not (project / ".opencode" / "cache").exists()  # no derived files either
    ok = cli("--json", "@memory-query", "query=AuthServce", "maxResults=3")
    assert ok.returncode == 0 and json.loads(ok.stdout)[0]["label"] == "AuthService"
    text = cli("@memory-query", "mode=traversal", "startNode=PaymentService", "direction=in")
    assert text.returncode == 0 and "OrderService" in text.stdout and "<-calls-" in text.stdout


def test_bulk_load_keeps_the_index_in_sync_and_validates_first(host):
    from opensage.plugins.graph_memory.graph import graph_for

    graph = graph_for(host)
    ids = graph.bulk_load(
        [("class", "CacheWarmer", "Fills the cache at start-up.", {}), ("class", "CacheStore", "LRU store.", {})],
        [(0, 1, "uses", 0.7)],
    )
    res = q(host, query="CacheWarmr")
    assert res.data[0]["id"] == f"n{ids[0]}" and res.data[0]["relations"][0]["label"] == "CacheStore"
    before = graph.counts()
    with pytest.raises(UsageError, match="edge type"):
        graph.bulk_load([("class", "Other", "", {})], [(0, 0, "Not A Type", 0.5)])
    assert graph.counts() == before


def test_saved_label_index_is_reused_only_while_nodes_are_unchanged(project):
    def fresh_host():
        return Host(Workspace(project))

    a = fresh_host()
    try:
        build(a)
        assert labels(q(a, query="PaymnetSrvice"))[0] == "PaymentService"
    finally:
        a.close()
    cache = Host(Workspace(project)).db.cache_dir / "label-index.npz"  # .opencode/cache/ (team store: .../team/)
    assert cache.exists()
    b = fresh_host()
    try:  # unchanged table: the saved index answers
        assert labels(q(b, query="PaymnetSrvice"))[0] == "PaymentService"
        b.run("memory-add-node", {"type": "class", "label": "InvoiceRenderer"})
        assert labels(q(b, query="InvocieRendrer"))[0] == "InvoiceRenderer"  # in-process tail
    finally:
        b.close()
    c = fresh_host()
    try:  # the saved index is older than the table: not used, rebuilt
        assert labels(q(c, query="InvocieRendrer"))[0] == "InvoiceRenderer"
    finally:
        c.close()
    cache.write_bytes(b"not an npz file")
    d = fresh_host()
    try:  # a damaged cache file is ignored
        assert labels(q(d, query="PaymnetSrvice"))[0] == "PaymentService"
    finally:
        d.close()
