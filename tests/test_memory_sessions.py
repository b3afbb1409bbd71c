"""Memory inside real sessions: what a host records through `opensage hook` and what comes back.

The flow every host e2e test relies on (its contract, driven through the real
`opensage hook` command in subprocesses, with the event shapes Claude Code and the
OpenCode shim send): a session stores a decision with @memory-add-node, runs a memory
query, hits an error in a test run, fixes it with an edit, re-runs green and compacts;
a *new* session asks "how did we fix ...". The answer carries the decision and the fix;
neither query results (echoes) nor tool-name stubs appear among the top results.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.stores import store_conn

from opensage.host import Host
from opensage.store import Workspace
from opensage.types import SessionEvent

DECISION = ("UseRS256JWT", "auth signs JWT access tokens with RS256 because the gateway verifies them "
                           "with the public key only")
TEST_CMD = "python -m pytest -q tests/test_auth.py"
FAILED_RUN = (
    "F.\n=================================== FAILURES ===================================\n"
    "Traceback (most recent call last):\n"
    '  File "src/auth.py", line 12, in refresh_token\n'
    "    exp = claims['exp']\n"
    "KeyError: 'exp'\n"
    "FAILED tests/test_auth.py::test_refresh - KeyError: 'exp'\n"
    "1 failed, 1 passed in 0.12s"
)
FIX_SENTENCE = ("Fixed the KeyError: refresh tokens carry no 'exp' claim, so refresh_token in src/auth.py "
                "now reads it with claims.get('exp').")
QUESTION = "how did we fix the KeyError in the refresh tokens?"
TOOL_STUBS = ("opensage_memory", "mcp__opensage", "memory-add-node", "memory-query", "task_result")


def _query_text(cli, *args) -> str:
    done = cli("@memory-query", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def claude_session(cli, project, sid: str) -> list[dict]:
    """Claude Code hook payloads of the first session (PostToolUse after each tool ran)."""
    # what the MCP server does when Claude's model calls the tools
    assert cli("@memory-add-node", "type=decision", f"label={DECISION[0]}", f"content={DECISION[1]}").returncode == 0
    query_result = _query_text(cli, "query=JWT tokens")
    base = {"session_id": sid, "transcript_path": str(project / "t.jsonl"), "cwd": str(project)}

    def tool(name, tool_input, response, n):
        return {**base, "hook_event_name": "PostToolUse", "tool_name": name, "tool_input": tool_input,
                "tool_response": response, "tool_use_id": f"toolu_0{n}"}

    return [
        {**base, "hook_event_name": "SessionStart", "source": "startup"},
        {**base, "hook_event_name": "UserPromptSubmit",
         "prompt": "Remember that auth signs JWTs with RS256, then make the auth tests pass."},
        tool("mcp__opensage__memory-add-node", {"type": "decision", "label": DECISION[0], "content": DECISION[1]},
             [{"type": "text", "text": f"added n1 (decision) {DECISION[0]}"}], 1),
        tool("mcp__opensage__memory-query", {"query": "JWT tokens"}, [{"type": "text", "text": query_result}], 2),
        tool("Bash", {"command": TEST_CMD, "description": "Run the auth tests"},
             {"stdout": FAILED_RUN, "stderr": "", "interrupted": False, "isImage": False}, 3),
        tool("Edit", {"file_path": str(project / "src" / "auth.py"), "old_string": "exp = claims['exp']",
                      "new_string": "exp = claims.get('exp')"},
             {"filePath": str(project / "src" / "auth.py"), "oldString": "exp = claims['exp']",
              "newString": "exp = claims.get('exp')", "structuredPatch": [], "userModified": False}, 4),
        tool("Bash", {"command": TEST_CMD, "description": "Run the auth tests again"},
             {"stdout": "..\n2 passed in 0.05s", "stderr": "", "interrupted": False, "isImage": False}, 5),
        # the answer quotes the memory query back (an echo) and says what fixed the error
        {**base, "hook_event_name": "Stop", "stop_hook_active": False,
         "last_assistant_message": FIX_SENTENCE + "\nMemory says:\n" + query_result},
    ]


def opencode_session(cli, project, sid: str) -> list[dict]:
    """The OpenCode shim's batch items for the same session (tool.execute.after -> tool-call + tool-result)."""
    assert cli("@memory-add-node", "type=decision", f"label={DECISION[0]}", f"content={DECISION[1]}").returncode == 0
    query_result = _query_text(cli, "query=JWT tokens")

    def tool(name, args, output, n):
        return [{"hook": "tool-call", "payload": {"session_id": sid, "tool": name, "args": args, "meta": {"callID": f"c{n}"}}},
                {"hook": "tool-result", "payload": {"session_id": sid, "tool": name, "text": output, "meta": {"callID": f"c{n}"}}}]

    return [
        {"hook": "session-start", "payload": {"session_id": sid}},
        {"hook": "user-message", "payload": {"session_id": sid, "role": "user",
                                             "text": "Remember that auth signs JWTs with RS256, then make the auth tests pass."}},
        *tool("opensage_memory-add-node", {"type": "decision", "label": DECISION[0], "content": DECISION[1]},
              f"added n1 (decision) {DECISION[0]}", 1),
        *tool("opensage_memory-query", {"query": "JWT tokens"}, query_result, 2),
        *tool("bash", {"command": TEST_CMD, "description": "Run the auth tests"}, FAILED_RUN, 3),
        *tool("edit", {"filePath": str(project / "src" / "auth.py"), "oldString": "exp = claims['exp']",
                       "newString": "exp = claims.get('exp')"}, "Edit applied successfully.", 4),
        {"hook": "file-edit", "payload": {"session_id": sid, "path": "src/auth.py", "tool": "edit"}},
        *tool("bash", {"command": TEST_CMD, "description": "Run the auth tests again"}, "..\n2 passed in 0.05s", 5),
        {"hook": "assistant-message", "payload": {"session_id": sid, "role": "assistant",
                                                  "text": FIX_SENTENCE + "\nMemory says:\n" + query_result}},
    ]


def run_first_session(cli, project, host_name: str, sid: str) -> str:
    """Feed the first session through `opensage hook` as the host would; compact; return the context."""
    if host_name == "claude":
        for payload in claude_session(cli, project, sid):
            done = cli("hook", "--from", "claude", input=json.dumps(payload))
            assert done.returncode == 0, done.stderr
        done = cli("hook", "--from", "claude", input=json.dumps(
            {"session_id": sid, "cwd": str(project), "hook_event_name": "PreCompact", "trigger": "auto"}))
        assert done.returncode == 0, done.stderr
        # after /compact Claude starts a new context: SessionStart(source=compact) brings memory back
        done = cli("hook", "--from", "claude", input=json.dumps(
            {"session_id": sid, "cwd": str(project), "hook_event_name": "SessionStart", "source": "compact"}))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
    items = opencode_session(cli, project, sid) + [{"hook": "compact", "payload": {"session_id": sid}}]
    done = cli("hook", "--from", "opencode", input=json.dumps({"events": items}) + "\n")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    assert all(r.get("ok") for r in results), results
    return results[-1]["context"]


@pytest.mark.parametrize("host_name", ["claude", "opencode"])
def test_a_new_session_asks_how_it_was_fixed(cli, project, host_name):
    first = "ses_first"
    context = run_first_session(cli, project, host_name, first)

    # compaction brings back the decision stored with @memory-add-node (with its reason),
    # the error and what fixed it, and the file touched
    assert f"{DECISION[0]}: {DECISION[1]}" in context
    assert "KeyError: 'exp'" in context and "fixed by" in context and "src/auth.py" in context
    assert "from: " + TEST_CMD in context
    assert len(context) <= 4000

    db = store_conn(project)
    # the memory tools' calls and results are kept, as provenance
    kept = db.execute("SELECT kind, provenance FROM episodes WHERE session_id=? AND provenance IS NOT NULL ORDER BY seq",
                      (first,)).fetchall()
    assert kept == [("tool_call", "call"), ("tool_result", "result")] * 2
    # the decision node points back to the call that stored it
    assert db.execute("SELECT e.tool FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id "
                      "JOIN nodes n ON n.id = ne.node_id WHERE n.label=?", (DECISION[0],)).fetchone()[0].endswith(
        "memory-add-node")
    # no nodes named after tools, ids or host plumbing
    labels = [r[0] for r in db.execute("SELECT label FROM nodes WHERE type='entity'")]
    assert not [label for label in labels if any(stub in label for stub in TOOL_STUBS) or label.startswith("toolu_")]

    # --- a new session, later: "how did we fix ...?"
    second = "ses_second"
    if host_name == "claude":
        done = cli("hook", "--from", "claude", input=json.dumps(
            {"session_id": second, "cwd": str(project), "hook_event_name": "UserPromptSubmit", "prompt": QUESTION}))
    else:
        done = cli("hook", "user-message", input=json.dumps({"session_id": second, "text": QUESTION, "role": "user"}))
    assert done.returncode == 0, done.stderr

    history = cli("--json", "@memory-query", "mode=history", f"query={QUESTION}")
    assert history.returncode == 0, history.stderr
    chain = json.loads(history.stdout)[0]
    assert chain["error"]["label"] == "KeyError: 'exp'" and chain["error"]["resolved"] is True
    assert any(f["label"].startswith("Fixed the KeyError") for f in chain["fixes"])
    assert "src/auth.py" in chain["files"] and TEST_CMD in chain["commands"]
    assert DECISION[0] in [d["label"] for d in chain["decisions"]]
    assert chain["sessions"][0]["id"] == first
    text = cli("@memory-query", "mode=history", f"query={QUESTION}").stdout
    assert "fix: decision" in text and DECISION[1] in text and f"session {first}" in text

    # the same question through the prompt-context hook (UserPromptSubmit)
    host = Host(Workspace(project))
    try:
        brought = host.prompt_context(host.session(second), QUESTION, max_chars=2000)
    finally:
        host.close()
    assert brought.startswith("OpenSage memory of past work:") and "KeyError: 'exp'" in brought
    assert DECISION[0] in brought and "Fixed the KeyError" in brought and len(brought) <= 2000

    # an ordinary search: evidence first, no query results (echoes) and no tool-name stubs on top
    top = json.loads(cli("--json", "@memory-query", "query=JWT tokens RS256 KeyError", "maxResults=5").stdout)
    # the KeyError was fixed: the fix (or the decision) comes first, the error only with includeSuperseded
    assert top and (top[0]["label"] == DECISION[0] or top[0]["label"].startswith("Fixed the KeyError"))
    assert "KeyError: 'exp'" not in [r["label"] for r in top]
    full = json.loads(cli("--json", "@memory-query", "query=JWT tokens RS256 KeyError", "maxResults=5",
                          "includeSuperseded=true").stdout)
    assert "KeyError: 'exp'" in [r["label"] for r in full]
    for r in top:
        assert r.get("provenance") is None
        assert not (r["kind"] == "episode" and r.get("tool") and r["excerpt"].strip() == r["tool"])
        assert not any(stub in r["label"] for stub in TOOL_STUBS)
        assert "similarity 'JWT tokens'" not in r["excerpt"]  # a past query's result


def test_memory_query_results_are_provenance_not_evidence(host):
    """A result of @memory-query is kept but never ranked; nor are the lines an assistant echoes from it."""
    host.run("memory-add-node", {"type": "decision", "label": "UseRS256JWT", "content": "auth uses RS256 JWTs"})
    session = host.session("s1", source="test")
    answer = host.run("memory-query", {"query": "JWT"}).text
    host.record(session, SessionEvent(kind="tool_call", tool="opensage_memory-query", args={"query": "JWT"}, call_id="c1"))
    host.record(session, SessionEvent(kind="tool_result", tool="opensage_memory-query", text=answer, call_id="c1"))
    host.record(session, SessionEvent(kind="tool_call", tool="bash", args={"command": "opensage @memory-query query=JWT"}))
    host.record(session, SessionEvent(kind="tool_result", tool="bash", text=answer))
    host.record(session, SessionEvent(kind="assistant_message", role="assistant",
                                      text="The gateway team owns key rotation.\n" + answer))
    provenance = [r[0] for r in host.db.conn.execute("SELECT provenance FROM episodes ORDER BY seq")]
    assert provenance == ["call", "result", "call", "result", None]
    results = host.run("memory-query", {"query": "JWT RS256", "maxResults": 10}).data
    assert [r["label"] for r in results if r["kind"] == "node"][:1] == ["UseRS256JWT"]
    assert not [r for r in results if r["kind"] == "episode"]  # the echo lines are not indexed either
    # the assistant's own words still are
    found = host.run("memory-query", {"query": "key rotation gateway team", "nodeType": "episode"}).data
    assert found and found[0]["eventKind"] == "assistant_message"


def test_opencode_slash_command_prompt_is_provenance(host):
    """OpenCode expands /memory-query into a prompt full of argument descriptions: a request, not evidence."""
    from opensage.integrations.opencode import command_markdown

    command = host.command("memory-query")
    prompt = command_markdown(command).split("-->\n", 1)[1].replace("$ARGUMENTS", "token store")
    session = host.session("s1", source="opencode")
    host.record(session, SessionEvent(kind="command", text="/memory-query token store"))
    host.record(session, SessionEvent(kind="user_message", role="user", text=prompt))
    host.record(session, SessionEvent(kind="user_message", role="user", text="the traversal of the token store is slow"))
    assert [r[0] for r in host.db.conn.execute("SELECT provenance FROM episodes ORDER BY seq")] == ["call", "call", None]
    found = host.run("memory-query", {"query": "traversal token store", "nodeType": "episode"}).data
    assert [r["seq"] for r in found] == [3]


def test_tool_call_episodes_show_their_arguments(host):
    session = host.session("s1", source="test")
    host.record(session, SessionEvent(kind="tool_call", tool="grep", args={"pattern": "refresh_token", "path": "src"}))
    found = host.run("memory-query", {"query": "refresh_token", "nodeType": "episode"}).data
    assert found[0]["excerpt"] == 'grep {"pattern": "refresh_token", "path": "src"}'


def test_compression_makes_no_nodes_from_tool_names_tags_or_ids(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    session = host.session("s1", source="test")
    host.record(session, SessionEvent(kind="tool_call", tool="task", args={"description": "review"}))
    host.record(session, SessionEvent(kind="user_message", role="user", text=(
        "Use the `opensage_memory-query` tool, then task. The cache_key helper in `LruCache` is wrong.")))
    host.record(session, SessionEvent(kind="assistant_message", role="assistant", text=(
        "task_id: ses_2f6f1b2d9e41 (for resuming)\n<task_result>\nThe LruCache evicts too early.\n</task_result>\n"
        "I called toolu_01A2B3C4D5E6F7G8H9 for that.")))
    host.compact(session)
    labels = {r[0] for r in host.db.conn.execute("SELECT label FROM nodes WHERE type='entity'")}
    assert labels == {"cache_key", "LruCache"}


def test_decisions_and_answers_get_a_short_title_and_keep_the_full_text(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    session = host.session("s1", source="test")
    long_decision = ("We decided to move the token refresh into a background job that runs every five minutes and "
                     "renews every token expiring within the next ten minutes")
    host.record(session, SessionEvent(kind="user_message", role="user", text=(
        f"{long_decision}. Because the gateway rejects expired tokens without a retry. How should the job be scheduled?")))
    answer = "Use the existing APScheduler instance. " + "It already runs the cleanup jobs. " * 10
    host.record(session, SessionEvent(kind="assistant_message", role="assistant", text=answer))
    host.compact(session)
    conn = host.db.conn
    label, content = conn.execute("SELECT label, content FROM nodes WHERE type='decision'").fetchone()
    assert len(label) <= 90 and label.endswith("…") and long_decision.startswith(label[:-1])
    assert content == f"{long_decision}. Because the gateway rejects expired tokens without a retry"
    label, content = conn.execute("SELECT label, content FROM nodes WHERE type='answer'").fetchone()
    assert label == "Use the existing APScheduler instance" and content == " ".join(answer.split()).rstrip(" .")


def test_compaction_context_keeps_every_section_in_a_small_budget(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    session = host.session("s1", source="test")
    for i in range(12):
        host.record(session, SessionEvent(kind="user_message", role="user",
                                          text=f"Let's use strategy number {i} for the cache layer of module m{i}."))
    host.record(session, SessionEvent(kind="error", text="Traceback (most recent call last):\nTimeoutError: db is locked"))
    host.record(session, SessionEvent(kind="user_message", role="user", text="Why is the db locked during tests?"))
    host.record(session, SessionEvent(kind="file_edit", path="src/cache.py"))
    host.compact(session)
    text = host.compaction_context(session, max_chars=400)
    assert len(text) <= 400
    # decisions do not crowd out the error, the open question and the files
    assert "TimeoutError: db is locked — open" in text
    assert "Why is the db locked during tests?" in text and "Files touched: src/cache.py" in text
    assert "strategy number 11" in text  # the most recent decision first


def test_compaction_context_brings_lasting_knowledge_from_earlier_sessions(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    earlier = host.session("old", source="test")
    host.record(earlier, SessionEvent(kind="user_message", role="user",
                                      text="We decided to claim jobs with SELECT FOR UPDATE SKIP LOCKED in the job queue."))
    host.compact(earlier)
    now = host.session("new", source="test")
    host.record(now, SessionEvent(kind="user_message", role="user", text="Workers of the job queue pick the same job twice."))
    host.record(now, SessionEvent(kind="file_edit", path="src/jobqueue.py"))
    host.compact(now)
    text = host.compaction_context(now)
    assert "From earlier sessions:" in text and "SKIP LOCKED" in text


# -- the model pass -----------------------------------------------------------------------
def _session(host, sid="m1"):
    session = host.session(sid, source="test")
    host.record(session, SessionEvent(kind="user_message", role="user", text="Refresh tokens carry no exp claim."))
    host.record(session, SessionEvent(kind="assistant_message", role="assistant", text="Then read it with claims.get."))
    return session


def test_model_facts_have_provenance_and_are_idempotent(host, scripted, monkeypatch):
    from opensage import llm

    asked = []
    real = llm.complete
    monkeypatch.setattr(llm, "complete", lambda *a, **kw: asked.append(kw) or real(*a, **kw))
    session = _session(host)
    scripted.add(json.dumps({"items": [
        {"type": "fact", "label": "refresh tokens carry no exp claim", "content": "seen in the auth tests", "episodes": [1]},
        {"type": "fact", "label": "made-up provenance", "episodes": [99]}]}))
    data = host.run("memory-compress-session", {"sessionId": "m1"}).data
    assert data["new"]["fact"] == 2 and data["model"] == "scripted/test"
    assert asked[0]["max_tokens"] == 2000  # each request's output is bounded
    conn = host.db.conn
    seqs = [r[0] for r in conn.execute(
        "SELECT e.seq FROM nodes n JOIN node_episodes ne ON ne.node_id = n.id JOIN episodes e ON e.id = ne.episode_id"
        " WHERE n.label='refresh tokens carry no exp claim'")]
    assert seqs == [1]
    # compaction again: nothing new for the model, no new node
    host.compact(session)
    assert len(scripted.requests) == 1
    assert conn.execute("SELECT count(*) FROM nodes WHERE type='fact'").fetchone()[0] == 2


def test_failed_model_pass_is_retried_with_a_working_model(host, scripted):
    """Issue 13: after a failed model pass in auto mode, the episodes were never shown to a model again."""
    _session(host)
    scripted.add("not json", "not json", "not json")
    failed = host.run("memory-compress-session", {"sessionId": "m1"}).data
    assert failed["modelError"]
    scripted.add(json.dumps({"items": [{"type": "fact", "label": "refresh tokens carry no exp claim", "episodes": [1]}]}))
    retried = host.run("memory-compress-session", {"sessionId": "m1"}).data
    assert retried["modelError"] is None and retried["new"].get("fact") == 1
    assert "Refresh tokens carry no exp claim" in json.dumps(scripted.requests[-1]["messages"])


def test_a_flooding_model_answer_is_bounded(host, scripted):
    """Issue 13: a memory answer with 20,000 items added 20,010 nodes."""
    from opensage.plugins.graph_memory.compress import MAX_MODEL_ITEMS

    _session(host)
    # short labels keep the answer under llm.MAX_CONTENT_CHARS (1 MB), so it reaches compression
    items = [{"type": "fact", "label": f"c{i}", "episodes": [1]} for i in range(20_000)]
    relations = [{"source": f"c{i}", "type": "related_to", "target": f"c{i + 1}"} for i in range(500)]
    answer = json.dumps({"items": items, "relations": relations}, separators=(",", ":"))
    assert len(answer) < 1_000_000
    scripted.add(answer)
    before = host.db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
    data = host.run("memory-compress-session", {"sessionId": "m1"}).data
    after = host.db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
    assert data["modelDroppedItems"] > 20_000 - MAX_MODEL_ITEMS
    assert after - before <= MAX_MODEL_ITEMS + 10  # the model's 40 plus the rules' few
    assert host.db.conn.execute("SELECT count(*) FROM edges").fetchone()[0] <= 200


def test_migration_marks_episodes_recorded_before_it(host):
    """Databases recorded before provenance existed: migration m004 marks and unindexes their echoes."""
    from opensage.plugins.graph_memory.episodes import backfill_provenance, reindex_all

    session = host.session("old", source="test")
    host.record(session, SessionEvent(kind="tool_call", tool="mcp__opensage__memory-query", args={"query": "JWT"},
                                      meta={"tool_use_id": "toolu_1"}))
    host.record(session, SessionEvent(kind="tool_result", tool="mcp__opensage__memory-query",
                                      text="similarity 'JWT': 1 result\n1. n1 UseRS256JWT (decision)",
                                      meta={"tool_use_id": "toolu_1"}))
    conn = host.db.conn
    with host.db.transaction() as tx:  # the state an older version left behind
        tx.execute("UPDATE episodes SET provenance=NULL")
        reindex_all(tx)
    assert host.run("memory-query", {"query": "UseRS256JWT", "nodeType": "episode"}).data
    with host.db.transaction() as tx:
        backfill_provenance(tx)
        reindex_all(tx)
    assert [r[0] for r in conn.execute("SELECT provenance FROM episodes ORDER BY seq")] == ["call", "result"]
    assert host.run("memory-query", {"query": "UseRS256JWT", "nodeType": "episode"}).data == []


def test_why_did_we_pick_brings_the_decision_its_reason_and_session(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    old = host.session("ses_auth", source="claude")
    host.record(old, SessionEvent(kind="user_message", role="user", timestamp=1_700_000_000.0, text=(
        "We decided to sign JWTs with RS256. Because the gateway only holds the public key. "
        "Let's keep the cache TTL at five minutes.")))
    host.end_session(old)
    now = host.session("ses_later", source="claude")
    text = host.prompt_context(now, "why did we pick RS256 for the tokens?")
    assert "We decided to sign JWTs with RS256. Because the gateway only holds the public key" in text
    assert "session ses_auth (claude), " + __import__("time").strftime(
        "%Y-%m-%d %H:%M", __import__("time").localtime(1_700_000_000.0)) in text
    assert "cache TTL" not in text  # another decision of that session, about something else
    # not a question about past work: the most similar nodes
    assert host.prompt_context(now, "rotate the RS256 keys").startswith("OpenSage memory relevant to this request:")


def test_symbols_touched_come_from_edits_and_traceback_frames(host, monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    session = host.session("s1", source="test")
    host.record(session, SessionEvent(kind="tool_call", tool="bash", args={"command": "pytest -q"}))
    host.record(session, SessionEvent(kind="tool_result", tool="bash", meta={"exit_code": 1}, text=(
        'Traceback (most recent call last):\n  File "/usr/lib/python3/site.py", line 3, in run\n'
        '  File "src/queue.py", line 40, in claim_job\nRuntimeError: job claimed twice')))
    host.record(session, SessionEvent(kind="tool_call", tool="edit", args={
        "filePath": "src/queue.py", "oldString": "x", "newString": "class JobLock:\n    pass\n\ndef claim_job(db):\n    ..."}))
    host.compact(session)
    text = host.compaction_context(session)
    symbols = next(line for line in text.splitlines() if line.startswith("Symbols:"))
    assert "claim_job" in symbols and "JobLock" in symbols and " run" not in symbols  # library frames are not ours
    chain = host.run("memory-query", {"mode": "history", "query": "how did we fix the job claimed twice"}).data[0]
    assert chain["error"]["label"] == "RuntimeError: job claimed twice" and "claim_job" in chain["symbols"]


def test_compact_hook_with_a_model_brings_its_facts_back(cli, project, tmp_path):
    """`opensage hook compact` with OPENSAGE_MODEL set: the model's facts are stored with provenance
    and come back in the compaction context (scripted model in the hook's own process)."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps([json.dumps({"items": [
        {"type": "fact", "label": "refresh tokens carry no exp claim", "content": "seen in test_refresh", "episodes": [1]}]})]))
    env = {"OPENSAGE_MODEL": "scripted/facts", "OPENSAGE_SCRIPT": str(script)}
    for event, body in [("user-message", {"text": "test_refresh fails: the refresh token has no exp claim"}),
                        ("assistant-message", {"text": "Then we read exp with claims.get."})]:
        assert cli("hook", event, input=json.dumps({"session_id": "m1", **body}), env=env).returncode == 0
    done = cli("hook", "compact", input=json.dumps({"session_id": "m1"}), env=env)
    assert done.returncode == 0, done.stderr
    context = json.loads(done.stdout)["context"]
    assert "- fact refresh tokens carry no exp claim: seen in test_refresh" in context
    db = store_conn(project)
    assert db.execute("SELECT e.seq, e.modeled_at IS NOT NULL FROM nodes n JOIN node_episodes ne ON ne.node_id = n.id"
                      " JOIN episodes e ON e.id = ne.episode_id WHERE n.type='fact'").fetchall() == [(1, 1)]
    # compacting again asks the model nothing (the script is empty now) and changes nothing
    again = cli("hook", "compact", input=json.dumps({"session_id": "m1"}), env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["context"] == context


def test_history_mode_says_what_to_do_when_nothing_matches(cli, project):
    none = cli("@memory-query", "mode=history", "query=how did we fix the flux capacitor")
    assert none.returncode == 0, none.stderr
    assert "0 chains" in none.stdout and "compaction and session end" in none.stdout
    empty = cli("@memory-query", "mode=history", "query=")
    assert empty.returncode == 2 and "needs query=" in empty.stderr


@pytest.mark.parametrize("text, past", [
    ("how did we fix the race in the job queue", True), ("why did we pick RS256", True),
    ("what was the fix for the flaky test", True), ("how have we handled retries", True),
    ("why are we using RS256?", True), ("what do you think about this?", False),
    ("what do we know about auth", False), ("fix the bug in auth.py", False), ("how do I run the tests", False),
])
def test_questions_about_past_work_are_told_apart(text, past):
    from opensage.plugins.graph_memory.history import is_past_work_question

    assert is_past_work_question(text) is past


def test_the_issue_10_opencode_session_no_longer_retrieves_its_echoes(host):
    """The session of issue 10 (add-node, query, a task, an answer quoting both): `/memory-query JWT`
    gave 1 decision and 9 echoes; now the decision and the user's own words, nothing else of it."""
    host.run("memory-add-node", {"type": "decision", "label": "UseRS256JWT", "content": "auth uses RS256-signed JWT access tokens"})
    result = host.run("memory-query", {"query": "JWT"}).text
    task = ("task_id: ses_2abc123def456 (for resuming to continue this task if needed)\n\n<task_result>\n"
            "No heavy locks: the migration only adds a nullable column.\n</task_result>")
    s = host.session("ses_1", source="opencode")
    for event in [
        SessionEvent(kind="user_message", role="user", text="Remember that auth uses RS256 JWTs, then look up what we know about JWT."),
        SessionEvent(kind="tool_call", tool="opensage_memory-add-node", meta={"callID": "c1"},
                     args={"type": "decision", "label": "UseRS256JWT", "content": "auth uses RS256-signed JWT access tokens"}),
        SessionEvent(kind="tool_result", tool="opensage_memory-add-node", text="added n1 (decision) UseRS256JWT", meta={"callID": "c1"}),
        SessionEvent(kind="tool_call", tool="opensage_memory-query", args={"query": "JWT"}, meta={"callID": "c2"}),
        SessionEvent(kind="tool_result", tool="opensage_memory-query", text=result, meta={"callID": "c2"}),
        SessionEvent(kind="tool_call", tool="task", args={"description": "Review the migration"}, meta={"callID": "c3"}),
        SessionEvent(kind="tool_result", tool="task", text=task, meta={"callID": "c3"}),
        SessionEvent(kind="assistant_message", role="assistant", text=f"Here is what memory says:\n{result}\nReviewer: {task}"),
    ]:
        host.record(s, event)
    host.compact(s)
    found = host.run("memory-query", {"query": "JWT"}).data
    assert [(r["kind"], r["label"]) for r in found if r["type"] != "session"] == [
        ("node", "UseRS256JWT"), ("episode", "ses_1#1 user")]
    assert not host.db.conn.execute("SELECT 1 FROM nodes WHERE label IN ('task_result', 'opensage_memory', 'task_id')"
                                    ).fetchone()


def _fix_session(host, sid: str, ts: float, request: str, test: str, path: str, code: str, closing: str) -> None:
    """A session as a host records it: a request, a failing test run, an edit, a green run, a closing message."""
    s = host.session(sid, source="opencode")
    events = [
        SessionEvent(kind="user_message", role="user", text=request),
        SessionEvent(kind="tool_call", tool="bash", args={"command": f"pytest -q {test}"}),
        SessionEvent(kind="tool_result", tool="bash", meta={"exit_code": 1},
                     text=f"F\nE   AssertionError\nFAILED {test}::test_it - AssertionError\n1 failed in 0.05s"),
        SessionEvent(kind="tool_call", tool="edit", args={"filePath": path, "oldString": "pass\n", "newString": code}),
        SessionEvent(kind="file_edit", path=path),
        SessionEvent(kind="tool_call", tool="bash", args={"command": f"pytest -q {test}"}),
        SessionEvent(kind="tool_result", tool="bash", meta={"exit_code": 0}, text="1 passed in 0.04s"),
        SessionEvent(kind="assistant_message", role="assistant", text=closing),
    ]
    for n, event in enumerate(events):
        event.timestamp = ts + n
        host.record(s, event)
    host.end_session(s)


def test_history_gives_each_session_its_own_chain_with_the_files_it_edited(host, monkeypatch):
    """The same error label (a bare AssertionError) in two fix sessions: the question about one
    of them gets that session first, with the file it edited and its own test command only."""
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    _fix_session(host, "ses_pager", 1_700_000_000.0, "The pager hangs when the output is empty",
                 "tests/test_pager.py", "src/pager.py", "def page(lines):\n    if not lines:\n        return\n",
                 "The pager returns at once for empty output now.")
    _fix_session(host, "ses_color", 1_700_100_000.0, "Colors leak into piped output",
                 "tests/test_color.py", "src/color.py", "def strip_ansi(text):\n    return ANSI.sub('', text)\n",
                 "Piped output carries no color codes now.")
    result = host.run("memory-query", {"mode": "history", "query": "how did we fix the pager hanging on empty output?"})
    first = result.data[0]
    assert [s["id"] for s in first["sessions"]] == ["ses_pager"]
    assert first["error"]["label"].startswith("AssertionError")
    assert "src/pager.py" in first["files"] and not {"src/color.py", "tests/test_color.py"} & set(first["files"])
    assert first["commands"] == ["pytest -q tests/test_pager.py"]
    assert first["evidence"] and all(e["id"].startswith("e") for e in first["evidence"])
    block = result.text.split("\n2. ")[0]
    assert "session ses_pager" in block and "src/pager.py" in block and "color" not in block

    # the same question in the default mode: a turn of that session, with the files it edited
    found = host.run("memory-query", {"query": "how did we fix the pager hanging on empty output?", "maxResults": 3})
    top = found.data[0]
    assert top["kind"] == "episode" and top["sessionId"] == "ses_pager" and top["sessionFiles"] == ["src/pager.py"]
    assert "session edited: src/pager.py" in found.text
