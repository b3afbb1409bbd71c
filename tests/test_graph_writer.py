"""Graph memory is the only writer of its tables (issue 12, must-show 3).

* Every public path that stores a node (``@memory-add-node``, ``@memory-ingest`` of Python
  and TypeScript, the memory-server tools, ``opensage memory import`` of JSONL and of a
  Markdown mirror) leaves the same full-text index rows as ``@memory-add-node`` does for a
  node with the same type, label, content and metadata: the index is kept by SQLite
  triggers from one ``terms`` rule, not by each writer.
* Migrations are self-contained: a database written by the first release
  (tests/data/first_release.db, see tests/data/README.md) opens, migrates and answers.
"""

from __future__ import annotations

import ast
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.stores import on_postgresql, store_conn

from opensage.host import Host
from opensage.plugins.graph_memory.memory_compat import COMPAT_TOOLS, compat_for
from opensage.store import Workspace

DATA = Path(__file__).parent / "data"


def index_form(db: Path, node_id: int) -> list[tuple[str, int, str]]:
    """The node's rows in the FTS5 index itself: (column, token offset, term), in order
    (on the team store: the node's tsvector, the index PostgreSQL keeps)."""
    if on_postgresql():
        conn = store_conn(db.parent.parent)
        try:
            row = conn.execute("SELECT tsv::text FROM nodes WHERE id=?", (node_id,)).fetchone()
            return [("tsv", 0, row[0])] if row else []
        finally:
            conn.close()
    conn = sqlite3.connect(db)
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, nodes_fts, instance)")
        rows = conn.execute("SELECT col, offset, term FROM temp.vocab WHERE doc=? ORDER BY col, offset, term",
                            (node_id,)).fetchall()
        conn.execute("INSERT INTO nodes_fts(nodes_fts) VALUES ('integrity-check')")
    finally:
        conn.close()
    return [tuple(r) for r in rows]


def node(db: Path, type_: str, label: str) -> dict:
    conn = store_conn(db.parent.parent)
    try:
        cols = ("id", "type", "label", "content", "metadata", "terms")
        row = conn.execute(f"SELECT {', '.join(cols)} FROM nodes WHERE type=? AND label=?", (type_, label)).fetchone()
    finally:
        conn.close()
    assert row is not None, (type_, label)
    return dict(zip(cols, row))


def test_every_public_path_writes_the_same_index_rows(host, project, cli, tmp_path):
    db = project / ".opencode" / "opensage.db"
    # @memory-add-node
    host.run("memory-add-node", {"type": "decision", "label": "use sqlite wal",
                                 "content": "Readers never block the writer in WAL mode"})
    # @memory-ingest: one Python and one TypeScript file
    repo = project / "repo"
    repo.mkdir()
    (repo / "settings.py").write_text(
        'class ParseConfig:\n    """Reads the YAML settings and checks the retry_budget."""\n\n'
        "    def load_value(self, key):\n        return key\n")
    (repo / "retry.ts").write_text(
        "/** How often a failed call is retried. */\nexport function retryBudget(maxTries: number): number {\n"
        "  return maxTries * 2;\n}\n")
    host.run("memory-ingest", {"path": "repo"})
    # the memory-server tools, as the MCP server calls them
    compat = compat_for(host)
    COMPAT_TOOLS["create_entities"].run(compat, {"entities": [
        {"name": "HttpRetryPolicy", "entityType": "component", "observations": ["backs off exponentially"]}]})
    COMPAT_TOOLS["add_observations"].run(compat, {"observations": [
        {"entityName": "HttpRetryPolicy", "contents": ["caps at 30 s"]}]})
    host.close()
    # opensage memory import (JSONL) and --markdown, as a user runs them
    jsonl = tmp_path / "memory.jsonl"
    jsonl.write_text(json.dumps({"type": "entity", "name": "Alice_Smith", "entityType": "person",
                                 "observations": ["owns the billingService"]}) + "\n")
    r = cli("memory", "import", str(jsonl))
    assert r.returncode == 0, r.stdout + r.stderr
    mirror = tmp_path / "notes"
    assert cli("memory", "export", "--markdown", str(mirror)).returncode == 0
    (mirror / "redis-outage.md").write_text("---\ntype: error\ntags: [infra]\n---\nRedisPool was down an hour.\n")
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 0, r.stdout + r.stderr

    conn = store_conn(project)
    written = [dict(zip(("id", "type", "label", "content", "metadata"), r)) for r in conn.execute(
        "SELECT id, type, label, content, metadata FROM nodes WHERE type NOT IN ('file', 'module') ORDER BY id")]
    conn.close()
    by_path = {w["label"]: w for w in written}
    class_label = next(lb for lb in by_path if lb.endswith("ParseConfig"))
    method_label = next(lb for lb in by_path if lb.endswith("load_value"))
    ts_label = next(lb for lb in by_path if lb.endswith("retryBudget"))
    md_label = next(w["label"] for w in written if w["type"] == "error")
    checked = ["use sqlite wal", class_label, method_label, ts_label, "HttpRetryPolicy", "Alice_Smith", md_label]

    # the same nodes written by @memory-add-node into a fresh workspace
    other = tmp_path / "other"
    other.mkdir()
    ref = Host(Workspace(other))
    try:
        for label in checked:
            w = by_path[label]
            ref.run("memory-add-node", {"type": w["type"], "label": w["label"], "content": w["content"],
                                        "metadata": json.loads(w["metadata"])})
    finally:
        ref.close()
    other_db = other / ".opencode" / "opensage.db"
    for label in checked:
        w = by_path[label]
        mine = index_form(db, w["id"])
        theirs = index_form(other_db, node(other_db, w["type"], label)["id"])
        assert mine and mine == theirs, label
    # the identifier words are indexed for every path: camelCase and snake_case alike
    terms = {label: node(db, by_path[label]["type"], label)["terms"] for label in checked}
    assert "parse config" in terms[class_label] and "retry budget" in terms[ts_label]
    assert "http retry policy" in terms["HttpRetryPolicy"] and "load_value" in terms[method_label]
    # a deleted node leaves no index row behind
    r = cli("@memory-forget", f"node=n{by_path['use sqlite wal']['id']}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert index_form(db, by_path["use sqlite wal"]["id"]) == []


def test_no_python_code_writes_index_rows():
    """Only graph.py writes nodes, edges, provenance links and tags; only SQL triggers in
    migrations write ``nodes_fts``; only the episode indexer writes
    ``episodes_fts`` (its ``context`` column is computed from neighbouring turns)."""
    root = Path(__file__).resolve().parents[1] / "opensage"
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(root).as_posix()
        if rel.endswith("graph_memory/schema.py") or rel.endswith("graph_memory/migration_code.py"):
            continue
        writes = ("INSERT INTO nodes_fts", "DELETE FROM nodes_fts", "UPDATE nodes_fts")
        if not rel.endswith("graph_memory/graph.py"):  # the one writer of the graph tables
            writes += tuple(f"{verb} {table}" for verb in ("INTO", "UPDATE", "DELETE FROM")
                            for table in ("nodes(", "nodes ", "edges", "node_episodes", "node_tags"))
        for needle in writes:
            if needle in text:
                offenders.append(f"{rel}: {needle}")
        if "episodes_fts" in text and ("INSERT INTO episodes_fts" in text or "DELETE FROM episodes_fts" in text) \
                and not rel.endswith("graph_memory/episodes.py"):
            offenders.append(f"{rel}: episodes_fts")
    assert offenders == []


def test_migrations_import_no_live_application_code():
    """The migration module imports only the store, its frozen copies and the standard library."""
    root = Path(__file__).resolve().parents[1] / "opensage" / "plugins" / "graph_memory"
    allowed = {"opensage.store", "opensage.pgschema", "opensage.plugins.graph_memory.migration_code"}
    for name in ("schema.py", "migration_code.py"):
        tree = ast.parse((root / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in imported if m and m.startswith("opensage")} <= allowed, name


def test_the_frozen_terms_rule_of_m006_matches_the_writer():
    from opensage.plugins.graph_memory.graph import node_terms
    from opensage.plugins.graph_memory.schema import _m006_terms

    for label, meta in [("ParseConfig.parse_value", {}), ("a/b.py::HTTPServer", {"name": "HTTPServer"}),
                        ("retry_budget", {"name": 3}), ("", {})]:
        assert _m006_terms(label, json.dumps(meta)) == node_terms(label, meta)


def test_a_database_of_the_first_release_upgrades_in_place(tmp_path):
    if on_postgresql():
        pytest.skip("upgrades an SQLite file of the first release (the team store began at graph-memory 6)")
    project = tmp_path / "old"
    (project / ".opencode").mkdir(parents=True)
    db = project / ".opencode" / "opensage.db"
    shutil.copy(DATA / "first_release.db", db)
    old = sqlite3.connect(db)
    assert old.execute("SELECT max(number) FROM _migrations WHERE namespace='graph-memory'").fetchone()[0] == 1
    old.close()

    host = Host(Workspace(project))
    try:
        hits = host.run("memory-query", {"query": "parse config"}).data
        assert hits[0]["label"] == "ParseConfig" and hits[0]["id"] == "n1"
        assert {"direction": "out", "type": "uses", "id": "n3", "label": "retry_budget"} in hits[0]["relations"]
        found = host.run("memory-query", {"query": "readers WAL writer"}).data
        assert "use sqlite wal" in [h["label"] for h in found]
        # new writes work beside the old nodes
        host.run("memory-add-node", {"type": "concept", "label": "BackoffPolicy", "content": "doubles the wait"})
        assert host.run("memory-query", {"query": "backoff policy"}).data[0]["label"] == "BackoffPolicy"
    finally:
        host.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT max(number) FROM _migrations WHERE namespace='graph-memory'").fetchone()[0] >= 6
    assert conn.execute("SELECT id, content FROM nodes WHERE label='ParseConfig'").fetchone() == (
        1, "Reads the YAML settings file and validates the retry budget")
    assert conn.execute("SELECT terms FROM nodes WHERE label='ParseConfig'").fetchone()[0] == "parse config"
    conn.close()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    h = Host(Workspace(fresh))
    try:
        h.run("memory-add-node", {"type": "class", "label": "ParseConfig",
                                  "content": "Reads the YAML settings file and validates the retry budget"})
    finally:
        h.close()
    assert index_form(db, 1) == index_form(fresh / ".opencode" / "opensage.db", 1)
