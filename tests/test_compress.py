"""@memory-compress-session: episodes recorded through `opensage hook` become nodes with provenance."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.stores import store_conn

from conftest import db_snapshot
from opensage.errors import ModelNotConfigured
from opensage.types import SessionEvent

#: (hook event, payload) of a small debugging session.
SESSION = [
    ("user-message", {"role": "user", "text": (
        "The parser in src/parser.py crashes on empty input. Let's use a guard clause in `parse_config` "
        "instead of try/except. How does ConfigLoader read environment variables?")}),
    ("assistant-message", {"role": "assistant", "text": "ConfigLoader reads them through load_env. Running the tests first."}),
    ("tool-call", {"tool": "bash", "args": {"command": "pytest -q tests/test_parser.py"}}),
    ("tool-result", {"tool": "bash", "meta": {"exit_code": 1},
                     "text": "FAILED tests/test_parser.py::test_empty - ValueError: empty input\n1 failed in 0.12s"}),
    ("file-edit", {"path": "src/parser.py", "text": "guard clause for empty input"}),
    ("assistant-message", {"role": "assistant", "text": "Fixed the ValueError by returning early in parse_config."}),
    ("tool-call", {"tool": "bash", "args": {"command": "pytest -q tests/test_parser.py"}}),
    ("tool-result", {"tool": "bash", "meta": {"exit_code": 0}, "text": "3 passed in 0.10s"}),
]

KIND = {"user-message": "user_message", "assistant-message": "assistant_message", "tool-call": "tool_call",
        "tool-result": "tool_result", "file-edit": "file_edit", "error": "error"}


def record_via_hooks(cli, session_id: str) -> None:
    for event, payload in SESSION:
        done = cli("hook", event, "--session-id", session_id, input=json.dumps(payload))
        assert done.returncode == 0, done.stderr


def record_in_process(host, session_id: str) -> None:
    session = host.session(session_id, source="test")
    for event, payload in SESSION:
        host.record(session, SessionEvent(kind=KIND[event], **payload))


def connect(project):
    return store_conn(project)


def node_id(conn, type_, label):
    row = conn.execute("SELECT id FROM nodes WHERE type=? AND label=?", (type_, label)).fetchone()
    assert row is not None, f"no {type_} node {label!r}; have {[tuple(r) for r in conn.execute('SELECT type, label FROM nodes')]}"
    return row[0]


def provenance_seqs(conn, nid):
    return sorted(r[0] for r in conn.execute(
        "SELECT e.seq FROM node_episodes ne JOIN episodes e ON e.id=ne.episode_id WHERE ne.node_id=?", (nid,)))


def has_edge(conn, src, etype, dst):
    return conn.execute("SELECT 1 FROM edges WHERE src=? AND type=? AND dst=?", (src, etype, dst)).fetchone() is not None


def test_compress_session_from_hook_events(cli, project):
    record_via_hooks(cli, "s1")
    done = cli("--json", "@memory-compress-session", "sessionId=s1", "useModel=never")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["episodes"] == 8 and report["newEpisodes"] == 8
    assert report["new"]["file"] == 2 and report["new"]["command"] == 1 and report["new"]["error"] == 1
    assert report["new"]["decision"] == 2 and report["new"]["query"] == 1 and report["new"]["answer"] == 1

    conn = connect(project)
    session = node_id(conn, "session", "s1")
    parser = node_id(conn, "file", "src/parser.py")
    assert has_edge(conn, session, "touches", parser)
    assert provenance_seqs(conn, parser) == [1, 5]                # mentioned, then edited

    command = node_id(conn, "command", "pytest -q tests/test_parser.py")
    assert has_edge(conn, session, "ran", command)
    error = node_id(conn, "error", "ValueError: empty input")
    assert has_edge(conn, command, "produced", error)
    assert 4 in provenance_seqs(conn, error)
    meta = json.loads(conn.execute("SELECT metadata FROM nodes WHERE id=?", (error,)).fetchone()[0])
    assert meta["resolved"] is True and meta["resolved_seq"] == 8
    assert has_edge(conn, parser, "fixes", error)                  # edited between failure and green re-run
    fix = node_id(conn, "decision", "Fixed the ValueError by returning early in parse_config")
    assert has_edge(conn, fix, "fixes", error) and provenance_seqs(conn, fix) == [6]

    decision = node_id(conn, "decision", "Let's use a guard clause in `parse_config` instead of try/except")
    assert provenance_seqs(conn, decision) == [1] and has_edge(conn, session, "contains", decision)
    assert has_edge(conn, decision, "mentions", node_id(conn, "entity", "parse_config"))

    query = node_id(conn, "query", "How does ConfigLoader read environment variables?")
    answer = node_id(conn, "answer", "ConfigLoader reads them through load_env")  # a title: its first sentence
    assert conn.execute("SELECT content FROM nodes WHERE id=?", (answer,)).fetchone()[0] == (
        "ConfigLoader reads them through load_env. Running the tests first")  # the full text
    assert has_edge(conn, answer, "answers", query) and provenance_seqs(conn, answer) == [2]
    assert conn.execute("SELECT count(*) FROM episodes WHERE compressed_at IS NULL").fetchone()[0] == 0
    conn.close()

    before = db_snapshot(project)
    again = cli("--json", "@memory-compress-session", "sessionId=s1")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["newTotal"] == 0 and second["newEdges"] == 0 and second["provenanceLinks"] == 0
    assert second["newEpisodes"] == 0
    after = db_snapshot(project)
    assert len(after["nodes"]) == len(before["nodes"]) and len(after["edges"]) == len(before["edges"])
    assert after["node_episodes"] == before["node_episodes"]


def test_compact_hook_compresses_and_returns_context(cli, host, project):
    record_in_process(host, "s2")
    done = cli("hook", "compact", "--session-id", "s2", input="{}")
    assert done.returncode == 0, done.stderr
    context = json.loads(done.stdout)["context"]
    assert "Let's use a guard clause" in context
    assert "ValueError: empty input (from: pytest -q tests/test_parser.py) — fixed by decision Fixed the ValueError" in context
    assert "src/parser.py" in context
    conn = connect(project)
    assert node_id(conn, "error", "ValueError: empty input")


def test_compaction_context_respects_max_chars_and_lists_open_questions(host):
    session = host.session("s3", source="test")
    host.record(session, SessionEvent(kind="user_message", role="user",
                                      text="Why does the cache in store.py grow without bound? We decided to cap it at 1000 entries."))
    host.record(session, SessionEvent(kind="error", text="Traceback (most recent call last):\nMemoryError: out of memory"))
    host.compact(session)
    text = host.compaction_context(session, max_chars=4000)
    assert "We decided to cap it at 1000 entries" in text
    assert "MemoryError: out of memory — open" in text
    assert "Open questions:" in text and "Why does the cache in store.py grow without bound?" in text
    short = host.compaction_context(session, max_chars=60)
    assert short and len(short) <= 60

    # a later session on the same file sees the earlier session's decision about it
    later = host.session("s3b", source="test")
    host.record(later, SessionEvent(kind="file_edit", path="store.py", text="tune cache"))
    host.compact(later)
    text = host.compaction_context(later, max_chars=4000)
    assert "Files touched: store.py" in text
    assert "From earlier sessions:" in text and "cap it at 1000 entries" in text


def test_unknown_session_exit_2_nothing_written(cli, host, project):
    record_in_process(host, "s4")
    before = db_snapshot(project)
    done = cli("@memory-compress-session", "sessionId=nope")
    assert done.returncode == 2
    assert "unknown session 'nope'" in done.stderr
    assert db_snapshot(project) == before


def test_model_extraction_adds_nodes_and_merges(host, scripted):
    record_in_process(host, "s5")
    scripted.add(json.dumps({
        "items": [
            {"type": "concept", "label": "guard clause", "content": "return early on invalid input", "episodes": [1, 6]},
            {"type": "decision", "label": "validate input at the parser boundary", "episodes": [1]},
            {"type": "Component", "label": "parser module"},       # the model's own category: kept as concept
            # the rules found this one already (different case): merged, not duplicated
            {"type": "decision", "label": "let's use a guard clause in `parse_config` instead of try/except",
             "episodes": [1]},
        ],
        "relations": [
            {"source": "validate input at the parser boundary", "type": "uses", "target": "guard clause"},
            {"source": "guard clause", "type": "fixes", "target": "ValueError: empty input"},
            {"source": "parser module", "type": "Depends on", "target": "guard clause"},
            {"source": "guard clause", "type": "related_to", "target": "nothing by this name"},
        ],
    }))
    result = host.run("memory-compress-session", {"sessionId": "s5", "useModel": "always"})
    data = result.data
    assert data["model"] == "scripted/test" and data["modelItems"] == 4 and data["droppedRelations"] == 1
    assert data["new"]["concept"] == 2 and data["new"]["decision"] == 3   # 2 from rules + 1 from the model
    assert data["tokens"] > 0
    prompt = json.dumps(scripted.requests[0]["messages"])
    assert "pytest -q tests/test_parser.py" in prompt and "ValueError" in prompt

    conn = host.db.conn
    concept = node_id(conn, "concept", "guard clause")
    decision = node_id(conn, "decision", "validate input at the parser boundary")
    error = node_id(conn, "error", "ValueError: empty input")
    assert has_edge(conn, decision, "uses", concept) and has_edge(conn, concept, "fixes", error)
    assert has_edge(conn, node_id(conn, "concept", "parser module"), "depends_on", concept)
    assert provenance_seqs(conn, concept) == [1, 6]
    assert conn.execute("SELECT count(*) FROM nodes WHERE type='decision' AND label LIKE '%guard clause in%'"
                        ).fetchone()[0] == 1

    again = host.run("memory-compress-session", {"sessionId": "s5"}).data
    assert again["newTotal"] == 0 and again["model"] is None
    assert len(scripted.requests) == 1            # nothing new to show the model


def test_model_failure_in_auto_mode_keeps_rules(host, scripted):
    record_in_process(host, "s6")
    scripted.add("not json", "still not json", "nope")
    data = host.run("memory-compress-session", {"sessionId": "s6"}).data
    assert data["modelError"] and "invalid" in data["modelError"]
    assert data["new"]["error"] == 1 and data["new"]["decision"] == 2


def test_use_model_always_without_model(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    record_in_process(host, "s7")
    with pytest.raises(ModelNotConfigured):
        host.run("memory-compress-session", {"sessionId": "s7", "useModel": "always"})
    assert host.db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0


def test_session_end_hook_compresses(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    record_in_process(host, "s8")
    host.end_session(host.session("s8"))
    conn = host.db.conn
    assert node_id(conn, "error", "ValueError: empty input")
    assert conn.execute("SELECT count(*) FROM episodes WHERE session_id='s8' AND compressed_at IS NULL").fetchone()[0] == 0


def test_mentions_link_to_ingested_code(host, project, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    src = project / "src" / "app"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "config.py").write_text(
        "class ConfigLoader:\n    def load_env(self):\n        return {}\n\n\ndef parse_config(text):\n    return text\n")
    host.run("memory-ingest", {"path": "src"})
    record_in_process(host, "s9")
    session9 = host.session("s9")
    host.record(session9, SessionEvent(kind="file_edit", path=str(src / "config.py"), text="absolute path"))
    data = host.run("memory-compress-session", {"sessionId": "s9"}).data
    conn = host.db.conn
    parse_config = node_id(conn, "function", "app.config.parse_config")
    loader = node_id(conn, "class", "app.config.ConfigLoader")
    load_env = node_id(conn, "method", "app.config.ConfigLoader.load_env")
    decision = node_id(conn, "decision", "Let's use a guard clause in `parse_config` instead of try/except")
    session = node_id(conn, "session", "s9")
    assert has_edge(conn, decision, "mentions", parse_config)
    assert has_edge(conn, session, "mentions", loader) and has_edge(conn, session, "mentions", load_env)
    assert 1 in provenance_seqs(conn, parse_config)     # the code node points back to the message
    # the edited file is the ingested file node (same workspace-relative label), and stays one
    config_file = node_id(conn, "file", "src/app/config.py")
    assert has_edge(conn, session, "touches", config_file)
    again = host.run("memory-ingest", {"path": "src"}).data
    assert again["unchanged"] == 2 and again["removedFiles"] == 0
    assert node_id(conn, "file", "src/app/config.py") == config_file and has_edge(conn, session, "touches", config_file)
    # no stand-in entity nodes for names that exist as code
    assert data["new"]["decision"] == 2
    assert conn.execute(
        "SELECT count(*) FROM nodes WHERE type='entity' AND label IN ('parse_config','ConfigLoader','load_env')"
    ).fetchone()[0] == 0


def test_model_requests_are_bounded(host, scripted, monkeypatch):
    from opensage.plugins.graph_memory import compress

    monkeypatch.setattr(compress, "MODEL_CHUNK_CHARS", 200)
    monkeypatch.setattr(compress, "MAX_MODEL_CHUNKS", 2)
    record_in_process(host, "s10")
    scripted.default = json.dumps({"items": [], "relations": []})
    data = host.run("memory-compress-session", {"sessionId": "s10"}).data
    assert len(scripted.requests) == 2
    assert data["modelSkippedEpisodes"] > 0
    first_prompt = scripted.requests[0]["messages"][-1]["content"]
    assert "[8] tool_result" in first_prompt          # the latest episodes are the ones sent, first
    assert data["new"]["error"] == 1                  # the rules still covered everything


def test_code_blocks_and_pasted_logs_do_not_flood_entities(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    session = host.session("s11", source="test")
    host.record(session, SessionEvent(kind="assistant_message", role="assistant", text=(
        "Here is the change to RetryPolicy:\n```python\ndef backoff_delay(attempt_no):\n"
        "    # use a list instead of a tuple\n    max_wait_s = 30\n    return min(max_wait_s, 2 ** attempt_no)\n```\n")))
    host.record(session, SessionEvent(kind="user_message", role="user",
                                      text=" ".join(f"value_{i}" for i in range(40))))
    host.record(session, SessionEvent(kind="user_message", role="user", text="what I want is a faster parser."))
    data = host.run("memory-compress-session", {"sessionId": "s11"}).data
    conn = host.db.conn
    entities = {r[0] for r in conn.execute("SELECT label FROM nodes WHERE type='entity'")}
    assert "RetryPolicy" in entities
    assert not {"backoff_delay", "attempt_no", "max_wait_s"} & entities
    assert len([e for e in entities if e.startswith("value_")]) == 15
    assert "decision" not in data["new"] and "query" not in data["new"]


def test_session_id_defaults_to_the_current_session(host, cli, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    record_in_process(host, "s12")
    data = host.run("memory-compress-session", {}, session=host.session("s12")).data
    assert data["sessionId"] == "s12" and data["new"]["error"] == 1
    done = cli("@memory-compress-session")
    assert done.returncode == 2 and "sessionId" in done.stderr
