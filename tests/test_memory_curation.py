"""Memory curation (issue 17): filters, current truth (supersession), merge-on-write,
retention and @memory-forget, through the host's commands and the real SQLite store."""

from __future__ import annotations

import json
import time

import pytest

from opensage.errors import NotFoundError, UsageError
from opensage.plugins.graph_memory.filters import MemoryFilter, parse_time
from opensage.plugins.graph_memory.graph import DUPLICATE_RATIO, graph_for, near_duplicate
from opensage.types import SessionEvent

from conftest import db_snapshot

DAY = 86400.0


def ids(result) -> list[str]:
    return [r["id"] for r in result.data]


def labels(result) -> set[str]:
    return {r["label"] for r in result.data}


def add(host, line, session=None):
    return host.run_line(line, session=session).data["node"]


def set_valid_from(host, ref: str, ts: float) -> None:
    """Backdate a node (a test cannot wait a week): what compression does for old episodes."""
    with host.db.transaction() as conn:
        conn.execute("UPDATE nodes SET valid_from=? WHERE id=?", (ts, int(ref[1:])))


@pytest.fixture
def tagged(host):
    now = time.time()
    claude = host.session("s-claude", source="claude")
    cli = host.session("s-cli", source="cli")
    n = {
        "login": add(host, '@memory-add-node type=fact label="Login rate limit" content="login token limit is 5 per minute" tags=["auth","security"]', claude),
        "refresh": add(host, '@memory-add-node type=fact label="Token refresh" content="refresh token rotates hourly" tags=["auth"]', claude),
        "db": add(host, '@memory-add-node type=decision label="Token table in Postgres" content="store token rows in Postgres" tags=["db"]', cli),
        "old": add(host, '@memory-add-node type=error label="Token crash" content="token parser crashed on empty input" tags=["auth"]', cli),
    }
    set_valid_from(host, n["old"]["id"], now - 30 * DAY)
    set_valid_from(host, n["refresh"]["id"], now - 3 * DAY)
    host.run_line("@memory-add-edge fromId=\"Login rate limit\" toId=\"Token refresh\" type=related_to")
    host.run_line("@memory-add-edge fromId=\"Token refresh\" toId=\"Token table in Postgres\" type=uses")
    host.run_line("@memory-add-edge fromId=\"Token refresh\" toId=\"Token crash\" type=related_to")
    return {k: v["id"] for k, v in n.items()}


# -- filters -----------------------------------------------------------------------------------
def test_tags_any_and_all(host, tagged):
    anyr = host.run_line('@memory-query query=token maxResults=20 tags=["auth","db"]')
    assert set(ids(anyr)) == {tagged["login"], tagged["refresh"], tagged["db"], tagged["old"]}
    allr = host.run_line('@memory-query query=token maxResults=20 tags=["auth","security"] tagsMode=all')
    assert ids(allr) == [tagged["login"]]
    one = host.run_line('@memory-query query=token maxResults=20 tags=["db"]')
    assert ids(one) == [tagged["db"]]
    assert "tags any:db" in one.text


def test_since_until_iso_relative_and_words(host, tagged):
    week = host.run_line("@memory-query query=token maxResults=20 since=7d")
    assert tagged["old"] not in ids(week) and tagged["refresh"] in ids(week)
    recent = host.run_line("@memory-query query=token maxResults=20 since=1d")
    assert set(ids(recent)) == {tagged["login"], tagged["db"]}
    older = host.run_line(f"@memory-query query=token maxResults=20 until=\"{time.strftime('%Y-%m-%d', time.localtime(time.time() - 10 * DAY))}\"")
    assert ids(older) == [tagged["old"]]
    words = host.run_line('@memory-query query=token maxResults=20 since="last week"')
    assert set(ids(words)) == set(ids(week))


def test_session_source_and_node_types(host, tagged):
    assert set(ids(host.run_line("@memory-query query=token maxResults=20 session=s-claude"))) == {
        tagged["login"], tagged["refresh"]}
    assert set(ids(host.run_line("@memory-query query=token maxResults=20 source=cli"))) == {tagged["db"], tagged["old"]}
    typed = host.run_line('@memory-query query=token maxResults=20 nodeTypes=["decision","error"]')
    assert set(ids(typed)) == {tagged["db"], tagged["old"]}


def test_filters_in_pattern_traversal_and_history(host, tagged):
    pat = host.run_line('@memory-query mode=pattern query=token tags=["auth"] since=7d maxResults=20')
    assert set(ids(pat)) == {tagged["login"], tagged["refresh"]}
    walk = host.run_line(f"@memory-query mode=traversal startNode={tagged['refresh']} direction=both depth=1 "
                         "tags=[\"db\"] maxResults=20")
    assert ids(walk) == [tagged["db"]]
    hist = host.run_line('@memory-query mode=history query="token crash" since=7d')
    assert all(c["anchor"]["id"] != tagged["old"] for c in hist.data)
    hist_all = host.run_line('@memory-query mode=history query="token crash"')
    assert any(c["anchor"]["id"] == tagged["old"] for c in hist_all.data)


def test_episode_filters(host):
    for sid, source, text in (("e1", "claude", "the flux capacitor overheats"),
                              ("e2", "opencode", "the flux capacitor is fine")):
        host.record(host.session(sid, source=source), SessionEvent(kind="user_message", role="user", text=text))
    both = host.run_line("@memory-query query=\"flux capacitor\" nodeType=episode")
    assert {r["sessionId"] for r in both.data} == {"e1", "e2"}
    only = host.run_line("@memory-query query=\"flux capacitor\" source=opencode")
    assert {r["sessionId"] for r in only.data} == {"e2"}
    tagged = host.run_line('@memory-query query="flux capacitor" tags=["auth"]')
    assert tagged.data == []  # episodes carry no tags


def test_bad_filters_are_usage_errors_and_change_nothing(host, project, tagged):
    before = db_snapshot(project)
    for line in ('@memory-query query=token since="the day the music died"',
                 '@memory-query query=token tags=["Bad Tag!"]',
                 '@memory-query query=token since=2026-12-01 until=2026-11-01',
                 '@memory-query query=token nodeTypes=["Not A Type"]'):
        with pytest.raises(UsageError):
            host.run_line(line)
    assert db_snapshot(project) == before


def test_parse_time_forms():
    now = 1_800_000_000.0
    assert parse_time("7d", now=now) == now - 7 * DAY
    assert parse_time("12h", now=now) == now - 12 * 3600
    assert abs(parse_time("2 weeks ago", now=now) - (now - 14 * DAY)) < DAY
    assert parse_time("2026-11-30T10:00:00+00:00") == 1796032800.0


def test_filter_cli_stays_fast_path(cli, project):
    """The CLI accepts the filters; ISO/age forms do not import dateparser."""
    assert cli("@memory-add-node", "type=fact", "label=Quokka", "content=quokka facts", "tags=[\"zoo\"]").returncode == 0
    done = cli("--json", "@memory-query", "query=quokka", "since=1d", "tags=[\"zoo\"]")
    assert done.returncode == 0, done.stderr
    assert [r["label"] for r in json.loads(done.stdout)] == ["Quokka"]
    import subprocess
    import sys
    probe = subprocess.run([sys.executable, "-c",
                            "import sys; from opensage.plugins.graph_memory.filters import parse_time; "
                            "parse_time('7d'); parse_time('2026-01-01'); print('dateparser' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"


def test_tags_editable(host, tagged):
    out = host.run_line(f'@memory-tag node={tagged["db"]} add=["storage","DB"] remove=["nope"]')
    assert out.data["tags"] == ["db", "storage"]
    host.run_line(f'@memory-tag node={tagged["db"]} remove=["db"]')
    assert ids(host.run_line('@memory-query query=token tags=["db"]')) == []
    assert ids(host.run_line('@memory-query query=token tags=["storage"]')) == [tagged["db"]]
    host.run_line('@memory-add-node type=decision label="Token table in Postgres" tags=["x1"]')
    assert graph_for(host).tags_of(int(tagged["db"][1:])) == ["x1"]


# -- current truth -----------------------------------------------------------------------------
def test_later_decision_on_same_subject_supersedes(host):
    first = add(host, '@memory-add-node type=decision label="Job queue in Postgres" '
                      'content="We keep the job queue in Postgres tables."')
    other = add(host, '@memory-add-node type=decision label="Lint with ruff" content="We lint with ruff."')
    second = add(host, '@memory-add-node type=decision label="Job queue moves to SQLite" '
                       'content="Switch the job queue to SQLite instead of Postgres tables."')
    default = host.run_line("@memory-query query=\"job queue\" maxResults=20")
    assert second["id"] in ids(default) and first["id"] not in ids(default)
    both = host.run_line("@memory-query query=\"job queue\" maxResults=20 includeSuperseded=true")
    assert {first["id"], second["id"]} <= set(ids(both))
    old = graph_for(host).get(int(first["id"][1:]))
    assert old.superseded_by == int(second["id"][1:]) and old.valid_to is not None
    assert graph_for(host).get(int(other["id"][1:])).current  # other subject untouched
    # asOf before the change: the earlier decision was current then
    set_valid_from(host, first["id"], time.time() - 10 * DAY)
    with host.db.transaction() as conn:
        conn.execute("UPDATE nodes SET valid_from=?, valid_to=? WHERE id IN (?, ?)",
                     (time.time() - 2 * DAY, None, int(second["id"][1:]), -1))
        conn.execute("UPDATE nodes SET valid_to=? WHERE id=?", (time.time() - 2 * DAY, int(first["id"][1:])))
    then = host.run_line("@memory-query query=\"job queue\" asOf=5d maxResults=20")
    assert first["id"] in ids(then) and second["id"] not in ids(then)


def test_decision_without_change_cue_does_not_supersede(host):
    a = add(host, '@memory-add-node type=decision label="Cache in Redis" content="cache sessions in redis"')
    add(host, '@memory-add-node type=decision label="Cache TTL" content="cache sessions in redis for one hour"')
    assert graph_for(host).get(int(a["id"][1:])).current


def test_manual_supersede_and_add_node_supersedes(host, project):
    a = add(host, '@memory-add-node type=fact label="API port" content="the API listens on 8080"')
    b = add(host, '@memory-add-node type=fact label="API port now" content="the API listens on 9090"')
    out = host.run_line(f"@memory-supersede old={a['id']} new={b['id']}")
    assert "superseded" in out.text
    assert ids(host.run_line("@memory-query query=\"API listens\" maxResults=10")) == [b["id"]]
    c = host.run_line(f'@memory-add-node type=fact label="API port final" content="the API listens on 443" supersedes="{b["id"]}"')
    assert "now superseded" in c.text
    assert ids(host.run_line("@memory-query query=\"API listens\"")) == [c.data["id"]]
    before = db_snapshot(project)
    with pytest.raises(UsageError):
        host.run_line(f"@memory-supersede old={a['id']} new={a['id']}")
    with pytest.raises(NotFoundError):
        host.run_line(f"@memory-supersede old=n9999 new={a['id']}")
    assert db_snapshot(project) == before


def test_supersession_from_compressed_sessions(host, monkeypatch):
    """The deterministic extraction finds both decisions; the later session's replaces the earlier."""
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    for sid, text in (("d1", "We decided to use Postgres for the job queue storage."),
                      ("d2", "Let's switch the job queue storage to SQLite instead of Postgres.")):
        host.record(host.session(sid, source="cli"), SessionEvent(kind="user_message", role="user", text=text))
        host.run_line(f"@memory-compress-session sessionId={sid} useModel=never")
    res = host.run_line("@memory-query query=\"job queue storage\" nodeType=decision maxResults=10")
    assert len(res.data) == 1 and "SQLite" in res.data[0]["label"]
    full = host.run_line("@memory-query query=\"job queue storage\" nodeType=decision includeSuperseded=true")
    assert len(full.data) == 2


# -- merge on write ----------------------------------------------------------------------------
#: Hand-labelled dev pairs (the threshold DUPLICATE_RATIO was chosen on these).
DUPLICATES = [
    ("Use SQLite for the cache.", "use sqlite for the cache"),
    ("We store sessions in Redis", "We store sessions in Redis."),
    ("Retry the upload three times with backoff", "Retry the upload three times with a backoff"),
    ("Parser crashes on empty configuration files", "Parser crashes on empty configuraton files"),
]
DISTINCT = [
    ("Use SQLite for the cache.", "Use Postgres for the cache."),
    ("The API listens on port 8080", "The API listens on port 8081"),
    ("Retry the upload three times with backoff", "Retry the download three times with backoff"),
    ("We store sessions in Redis", "We store sessions in Memcached"),
    ("Alice", "Alicia"),  # short names: never a fuzzy merge
]


def test_near_duplicate_dev_pairs():
    for a, b in DUPLICATES:
        assert near_duplicate(a, b) is not None, (a, b)
    for a, b in DISTINCT:
        assert near_duplicate(a, b) is None, (a, b)
    assert DUPLICATE_RATIO == 90.0


def test_merge_on_write_keeps_provenance(host):
    s = host.session("m1", source="cli")
    host.record(s, SessionEvent(kind="user_message", role="user", text="remember: we store sessions in Redis"))
    graph = graph_for(host)
    first, _ = graph.upsert_node("fact", "Sessions in Redis", "We store sessions in Redis", episode_ids=[1],
                                 tags=["cache"])
    out = host.run_line('@memory-add-node type=fact label="sessions in redis." content="we store sessions in redis." '
                        'tags=["infra"]')
    assert out.data["id"] == first.ref and out.data["created"] is False
    assert "merged into" in out.text
    node = graph.get(first.id)
    assert node.metadata["mergedLabels"] == ["sessions in redis."]
    assert node.tags == ["cache", "infra"]
    assert host.db.conn.execute("SELECT count(*) FROM node_episodes WHERE node_id=?", (first.id,)).fetchone()[0] == 1
    distinct = host.run_line('@memory-add-node type=fact label="Sessions in Memcached" '
                             'content="We store sessions in Memcached"')
    assert distinct.data["created"] is True
    assert host.db.conn.execute("SELECT count(*) FROM nodes WHERE type='fact'").fetchone()[0] == 2


def test_merge_at_compaction(host, monkeypatch):
    """Compression writes through the same path: a decision repeated in a later session is one node."""
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    for sid, text in (("c1", "We decided to use ruff for linting the repository."),
                      ("c2", "We decided to use Ruff for linting the repository!")):
        host.record(host.session(sid, source="cli"), SessionEvent(kind="user_message", role="user", text=text))
        host.run_line(f"@memory-compress-session sessionId={sid} useModel=never")
    rows = host.db.conn.execute("SELECT id FROM nodes WHERE type='decision'").fetchall()
    assert len(rows) == 1
    sessions = {r[0] for r in host.db.conn.execute(
        "SELECT DISTINCT e.session_id FROM node_episodes ne JOIN episodes e ON e.id=ne.episode_id WHERE ne.node_id=?",
        (rows[0][0],))}
    assert sessions == {"c1", "c2"}  # provenance of both sessions kept


# -- retention ---------------------------------------------------------------------------------
def test_retention_at_session_end(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    monkeypatch.setenv("OPENSAGE_MEMORY_EPISODE_DAYS", "30")
    s = host.session("r1", source="cli")
    host.record(s, SessionEvent(kind="user_message", role="user", text="We decided to use tabs in the Makefile."))
    host.end_session(s)  # compressed; retention runs but the episodes are fresh
    conn = host.db.conn
    assert conn.execute("SELECT count(*) FROM episodes WHERE session_id='r1'").fetchone()[0] == 1
    from opensage.plugins.graph_memory.upkeep import run_retention

    graph = graph_for(host)
    later = time.time() + 31 * DAY
    assert run_retention(graph, now=later) == 1  # a day later: due, and the episode is 31 days old
    assert conn.execute("SELECT count(*) FROM episodes WHERE session_id='r1'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM episodes_fts").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM nodes WHERE type='decision'").fetchone()[0] == 1  # lasting node kept
    assert run_retention(graph, now=later + 60) is None  # rate-limited: ran a minute ago
    monkeypatch.setenv("OPENSAGE_MEMORY_EPISODE_DAYS", "off")
    assert run_retention(graph, force=True) is None
    monkeypatch.setenv("OPENSAGE_MEMORY_EPISODE_DAYS", "soon")
    with pytest.raises(UsageError):
        run_retention(graph, force=True)


def test_uncompressed_episodes_are_never_deleted(host, monkeypatch):
    monkeypatch.setenv("OPENSAGE_MEMORY_EPISODE_DAYS", "0")
    host.record(host.session("r2"), SessionEvent(kind="user_message", role="user", text="not compressed yet"))
    from opensage.plugins.graph_memory.upkeep import run_retention

    assert run_retention(graph_for(host), force=True, now=time.time() + 365 * DAY) == 0


# -- forget ------------------------------------------------------------------------------------
def test_forget_node_says_what_it_removed(host, tagged, project):
    out = host.run_line(f"@memory-forget node={tagged['refresh']}")
    assert "Token refresh" in out.text and "3 edges" in out.text
    assert host.db.conn.execute("SELECT count(*) FROM nodes WHERE id=?", (int(tagged["refresh"][1:]),)).fetchone()[0] == 0
    assert host.db.conn.execute("SELECT count(*) FROM node_tags WHERE node_id=?", (int(tagged["refresh"][1:]),)).fetchone()[0] == 0
    assert tagged["refresh"] not in ids(host.run_line("@memory-query query=refresh"))
    before = db_snapshot(project)
    with pytest.raises(NotFoundError):
        host.run_line("@memory-forget node=n9999")
    with pytest.raises(UsageError):
        host.run_line("@memory-forget")
    with pytest.raises(NotFoundError):
        host.run_line("@memory-forget session=nope")
    assert db_snapshot(project) == before


def test_forget_session_with_episodes_and_its_nodes(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    for sid, text in (("f1", "We decided to use black for formatting."),
                      ("f2", "We decided to pin numpy below 3.")):
        host.record(host.session(sid, source="cli"), SessionEvent(kind="user_message", role="user", text=text))
        host.run_line(f"@memory-compress-session sessionId={sid} useModel=never")
    out = host.run_line("@memory-forget session=f1")
    assert out.data["episodes"] == 1
    gone = {(n["type"], n["label"]) for n in out.data["nodes"]}
    assert ("session", "f1") in gone and any(t == "decision" and "black" in l for t, l in gone)
    assert "forgot session f1: 1 episodes" in out.text
    conn = host.db.conn
    assert conn.execute("SELECT count(*) FROM episodes WHERE session_id='f1'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM episodes WHERE session_id='f2'").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM nodes WHERE label LIKE '%numpy%'").fetchone()[0] == 1
    assert host.run_line("@memory-query query=black").data == []


def test_filter_defaults_are_current_only():
    assert MemoryFilter().node_sql()[0] == "n.valid_to IS NULL"
    assert MemoryFilter(include_superseded=True).node_sql()[0] == ""


def test_mcp_memory_query_takes_filters(project):
    """The MCP tool (real server subprocess, official client) filters like the command."""
    import anyio
    import sys

    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async def main():
        params = StdioServerParameters(command=sys.executable, args=["-m", "opensage", "--workspace", str(project), "mcp"])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = {t.name: t for t in (await s.list_tools()).tools}
                props = tools["memory-query"].input_schema["properties"]
                await s.call_tool("memory-add-node", {"type": "fact", "label": "Wombat diet", "content": "wombats eat grass",
                                                      "tags": ["zoo"]})
                await s.call_tool("memory-add-node", {"type": "fact", "label": "Wombat burrow",
                                                      "content": "wombats dig burrows"})
                hit = await s.call_tool("memory-query", {"query": "wombats", "tags": ["zoo"], "since": "1d"})
                bad = await s.call_tool("memory-query", {"query": "wombats", "since": "whenever-ish"})
                return props, hit, bad

    props, hit, bad = anyio.run(main)
    assert {"since", "until", "tags", "tagsMode", "session", "source", "nodeTypes", "asOf",
            "includeSuperseded"} <= set(props)
    text = hit.content[0].text  # the model reads the text (no structuredContent for commands)
    assert "Wombat diet" in text and "Wombat burrow" not in text and "tags any:zoo" in text
    assert bad.is_error and "since" in bad.content[0].text


def test_results_show_tags_and_supersession(host):
    a = add(host, '@memory-add-node type=fact label="Build tool" content="we build with make" tags=["build"]')
    b = add(host, '@memory-add-node type=fact label="Build tool now" content="we build with just"')
    host.run_line(f"@memory-supersede old={a['id']} new={b['id']}")
    out = host.run_line('@memory-query query="build" includeSuperseded=true')
    row = next(r for r in out.data if r["id"] == a["id"])
    assert row["tags"] == ["build"] and row["supersededBy"] == b["id"] and row["validTo"] >= row["validFrom"]
    assert f"[superseded by {b['id']}]" in out.text and "#build" in out.text


def test_forget_session_keep_nodes(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    host.record(host.session("k1", source="cli"),
                SessionEvent(kind="user_message", role="user", text="We decided to vendor the icons."))
    host.run_line("@memory-compress-session sessionId=k1 useModel=never")
    out = host.run_line("@memory-forget session=k1 keepNodes=true")
    assert out.data["episodes"] == 1 and out.data["nodes"] == []
    assert host.db.conn.execute("SELECT count(*) FROM nodes WHERE type='decision'").fetchone()[0] == 1


def test_forget_from_the_cli(cli):
    assert cli("@memory-add-node", "type=fact", "label=Ephemeral", "content=to be forgotten").returncode == 0
    done = cli("@memory-forget", "node=Ephemeral")
    assert done.returncode == 0, done.stderr
    assert "forgot n1 (fact) Ephemeral" in done.stdout
    again = cli("@memory-forget", "node=Ephemeral")
    assert again.returncode != 0 and "unknown node" in again.stderr and "Traceback" not in again.stderr
    both = cli("@memory-forget", "node=n1", "session=s1")
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_history_mode_includes_superseded(host):
    old = add(host, '@memory-add-node type=decision label="Job queue in Postgres" '
                    'content="We keep the job queue in Postgres tables."')
    add(host, '@memory-add-node type=decision label="Job queue moves to SQLite" '
              'content="Switch the job queue to SQLite instead of Postgres tables."')
    assert old["id"] not in ids(host.run_line('@memory-query query="job queue Postgres" maxResults=20'))
    hist = host.run_line('@memory-query mode=history query="why did we pick Postgres for the job queue"')
    assert any(c["anchor"]["id"] == old["id"] for c in hist.data)


# -- errors fixed stop being current -----------------------------------------------------------
ERROR_TEXT = ("Traceback (most recent call last):\n  File \"src/config.py\", line 12, in load_config\n"
              "KeyError: 'database_url'")


def record_error_session(host, sid: str, when: float) -> None:
    s = host.session(sid, source="cli")
    host.record(s, SessionEvent(kind="user_message", role="user", text="Run the config loader tests please.",
                                timestamp=when))
    host.record(s, SessionEvent(kind="tool_call", tool="bash", args={"command": "pytest -q tests/test_config.py"},
                                timestamp=when + 1))
    host.record(s, SessionEvent(kind="tool_result", tool="bash", meta={"exit_code": 1}, text=ERROR_TEXT,
                                timestamp=when + 2))
    host.run_line(f"@memory-compress-session sessionId={sid} useModel=never")


def fix_session(host, sid: str, when: float, text: str, use_model: str = "never"):
    s = host.session(sid, source="cli")
    host.record(s, SessionEvent(kind="user_message", role="user", text="Is the config loader working now?",
                                timestamp=when))
    host.record(s, SessionEvent(kind="assistant_message", role="assistant", text=text, timestamp=when + 1))
    return host.run_line(f"@memory-compress-session sessionId={sid} useModel={use_model}")


def error_rows(result) -> list[dict]:
    return [r for r in result.data if r["type"] == "error"]


def test_error_fixed_in_later_session_is_not_current(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    t0 = time.time() - 2 * DAY
    record_error_session(host, "e1", t0)
    q = '@memory-query query="KeyError database_url" maxResults=10'
    [err] = error_rows(host.run_line(q))
    assert "open" in host.compaction_context(host.session("e1"), max_chars=4000).split(err["label"][:20], 1)[1][:200]

    fix_session(host, "e2", t0 + DAY, "I fixed the KeyError for database_url in load_config by reading a default.")
    assert error_rows(host.run_line(q)) == []  # no longer presented as an open problem
    full = error_rows(host.run_line(q + " includeSuperseded=true"))
    assert [r["id"] for r in full] == [err["id"]]
    node = graph_for(host).get(int(err["id"][1:]))
    assert node.valid_to is not None and t0 + DAY <= node.valid_to <= t0 + DAY + 5
    fixer = graph_for(host).get(node.superseded_by)
    assert fixer.type == "decision" and "fixed the KeyError" in fixer.label
    # provenance: the fix links back to the second session's episode
    eps = host.db.conn.execute("SELECT e.session_id FROM node_episodes ne JOIN episodes e ON e.id=ne.episode_id"
                               " WHERE ne.node_id=?", (fixer.id,)).fetchall()
    assert {r[0] for r in eps} == {"e2"}
    # what was current before the fix still shows it
    before = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0 + DAY / 2))
    assert [r["id"] for r in error_rows(host.run_line(q + f' asOf="{before}"'))] == [err["id"]]
    # the compaction context of the fixing session shows it fixed, not open
    ctx = host.compaction_context(host.session("e2"), max_chars=4000)
    line = next(l for l in ctx.splitlines() if "KeyError" in l and err["id"] in l)
    assert "fixed by" in line and "open" not in line
    hist = host.run_line('@memory-query mode=history query="KeyError database_url" includeSuperseded=true')
    assert "fixed" in hist.text and " open" not in hist.text


def test_unrelated_fix_sentence_leaves_error_open(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    t0 = time.time() - 2 * DAY
    record_error_session(host, "e1", t0)
    # names the error kind but not its subject: uncertain, and without a model nothing changes
    fix_session(host, "e2", t0 + DAY, "I fixed a KeyError in the billing export.")
    assert len(error_rows(host.run_line('@memory-query query="KeyError database_url"'))) == 1


def test_fixes_edge_by_hand_and_supersede_unknown_id(host, project, cli):
    err = add(host, '@memory-add-node type=error label="TimeoutError: upload stalls" content="S3 upload hangs"')
    fix = add(host, '@memory-add-node type=decision label="Upload in 5 MB parts" content="multipart upload fixes the stall"')
    host.run_line(f"@memory-add-edge fromId={fix['id']} toId={err['id']} type=fixes")
    assert error_rows(host.run_line('@memory-query query="upload stalls"')) == []
    node = graph_for(host).get(int(err["id"][1:]))
    assert node.superseded_by == int(fix["id"][1:]) and json.loads(
        host.db.conn.execute("SELECT metadata FROM nodes WHERE id=?", (node.id,)).fetchone()[0])["resolved"]
    before = db_snapshot(project)
    done = cli("@memory-supersede", "old=n9999", f"new={fix['id']}")
    assert done.returncode == 2 and "n9999" in done.stderr and "Traceback" not in done.stderr
    assert db_snapshot(project) == before


def test_error_recurring_after_fix_is_open_again(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    t0 = time.time() - 3 * DAY
    record_error_session(host, "e1", t0)
    fix_session(host, "e2", t0 + DAY, "I fixed the KeyError for database_url in load_config by reading a default.")
    assert error_rows(host.run_line('@memory-query query="KeyError database_url"')) == []
    record_error_session(host, "e3", t0 + 2 * DAY)
    assert len(error_rows(host.run_line('@memory-query query="KeyError database_url"'))) == 1


# -- the model judges "same subject" for uncertain pairs ---------------------------------------
@pytest.fixture
def scripted(monkeypatch):
    from opensage import testing
    monkeypatch.setenv("OPENSAGE_MODEL", "scripted/judge")
    monkeypatch.setenv("OPENSAGE_MODEL_RETRIES", "0")
    from opensage.plugins.graph_memory import compress
    compress._JUDGE_CACHE.clear()
    return testing


def session_knowledge_or(answer):
    """Answer the extraction request with nothing new and the judge request with ``answer``."""
    def reply(messages, tools):
        system = messages[0]["content"]
        if "same subject" in system:
            return answer
        return json.dumps({"items": [], "relations": []})
    return reply


def test_model_judges_uncertain_fix(host, scripted):
    t0 = time.time() - 2 * DAY
    record_error_session(host, "e1", t0)
    script = scripted.install([session_knowledge_or('{"same_subject": true}')] * 10)
    rep = fix_session(host, "e2", t0 + DAY, "I fixed the KeyError, the loader reads a default now.", use_model="auto")
    assert rep.data["judgeCalls"] == 1
    assert error_rows(host.run_line('@memory-query query="KeyError database_url"')) == []
    judged = host.db.conn.execute("SELECT metadata FROM edges WHERE type='fixes'").fetchone()[0]
    assert json.loads(judged)["judgedBy"] == "model"
    assert any("EARLIER" in m["content"] for req in script.requests for m in req["messages"] if m["role"] == "user")


@pytest.mark.parametrize("answer", ["not json at all", {"error": "timeout"}, '{"same_subject": "maybe"}'])
def test_model_garbage_or_timeout_keeps_deterministic_result(host, scripted, answer):
    t0 = time.time() - 2 * DAY
    record_error_session(host, "e1", t0)
    scripted.install([session_knowledge_or(answer)] * 10)
    rep = fix_session(host, "e2", t0 + DAY, "I fixed the KeyError, the loader reads a default now.", use_model="auto")
    assert rep.data["judgeCalls"] == 1 and rep.data["judgeError"]
    assert "Traceback" not in (rep.data["judgeError"] or "")
    assert len(error_rows(host.run_line('@memory-query query="KeyError database_url"'))) == 1  # still open


def test_model_judges_uncertain_decisions(host, scripted):
    host.record(host.session("d1", source="cli"), SessionEvent(
        kind="user_message", role="user", text="We decided to use Postgres for the job queue storage.",
        timestamp=time.time() - DAY))
    host.run_line("@memory-compress-session sessionId=d1 useModel=never")
    scripted.install([session_knowledge_or('{"same_subject": true}')] * 10)
    host.record(host.session("d2", source="cli"), SessionEvent(
        kind="user_message", role="user", text="We decided the job queue storage will be SQLite."))
    rep = host.run_line("@memory-compress-session sessionId=d2 useModel=auto")
    assert rep.data["judgeCalls"] >= 1
    res = host.run_line('@memory-query query="job queue storage" nodeType=decision maxResults=10')
    assert len(res.data) == 1 and "SQLite" in res.data[0]["label"]


def test_supersede_error_by_hand_records_its_fix(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    t0 = time.time() - 2 * DAY
    record_error_session(host, "e1", t0)
    [err] = error_rows(host.run_line('@memory-query query="KeyError database_url"'))
    fix = add(host, '@memory-add-node type=fact label="database_url has a default" content="config falls back to sqlite"')
    host.run_line(f"@memory-supersede old={err['id']} new={fix['id']}")
    assert error_rows(host.run_line('@memory-query query="KeyError database_url"')) == []
    ctx = host.compaction_context(host.session("e1"), max_chars=4000)
    line = next(l for l in ctx.splitlines() if err["id"] in l)
    assert "fixed by fact database_url has a default" in line
    # forgetting the fix makes the error an open problem again
    host.run_line(f"@memory-forget node={fix['id']}")
    assert len(error_rows(host.run_line('@memory-query query="KeyError database_url"'))) == 1


def test_model_judge_is_not_asked_again_on_recompression(host, scripted):
    t0 = time.time() - 2 * DAY
    record_error_session(host, "e1", t0)
    script = scripted.install([session_knowledge_or('{"same_subject": false}')] * 10)
    rep = fix_session(host, "e2", t0 + DAY, "I fixed the KeyError, the loader reads a default now.", use_model="auto")
    assert rep.data["judgeCalls"] == 1
    assert len(error_rows(host.run_line('@memory-query query="KeyError database_url"'))) == 1  # the model said no
    sent = len(script.requests)
    from opensage.plugins.graph_memory import compress
    compress._JUDGE_CACHE.clear()  # a new process: only the episodes' compressed_at stops a second request
    again = host.run_line("@memory-compress-session sessionId=e2 useModel=auto")
    assert again.data["judgeCalls"] == 0 and len(script.requests) == sent
