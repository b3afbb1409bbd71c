"""The real OpenCode CLI (npm ``opencode-ai``, pinned) with ``opensage install opencode``.

OpenCode talks to a scripted OpenAI-compatible server on 127.0.0.1 that makes it call
our MCP tools: ``memory-add-node``, then ``memory-query``, then the agent made by
``@generate-agent`` through OpenCode's ``task`` tool, then answer with the query
result. We check what a user would: the node is in our database, the plugin recorded
the session (and the subagent's child session) as episodes, the query result reached
the model; ``opencode mcp list`` shows our server connected and ``opencode agent list``
shows the generated agent as a subagent.
Hermetic: temporary HOME, no network (proxies point at a closed port). Skipped only
when node/npm are missing.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI, system_text, tool_messages
from tests.opencode_env import hermetic_env, opencode_bin, seed_config_dir
from tests.polling import wait_until

needs_opencode = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                    reason="needs node and npm for the real OpenCode CLI")

ADD_TOOL = "opensage_memory-add-node"
QUERY_TOOL = "opensage_memory-query"
PROMPT = "Remember that auth uses RS256 JWTs, then look up what we know about JWT."
DRAFT = {
    "name": "sql-migration-reviewer",
    "description": "Reviews SQL migrations for table locks and long-running rewrites before they ship.",
    "prompt": "You review SQL migration files. Find statements that take heavy locks or rewrite large "
              "tables, explain the risk and propose a safer sequence. Report findings as a list.",
    "tools": {"read": "allow", "search": "allow"},
    "steps": 10,
}


REVIEW = "No heavy locks: the migration only adds a nullable column."


class Script:
    """The scripted model: title -> text; then add-node, query, a task for the generated
    subagent, and a final answer with the query result. The subagent answers REVIEW."""

    def __init__(self):
        self.tools_seen: list[str] = []
        self.task_description = ""

    def __call__(self, body):
        tools = [t["function"]["name"] for t in body.get("tools") or []]
        if not tools:  # the title generator (and other tool-less helper agents)
            return {"content": "JWT memory"}
        if DRAFT["prompt"] in system_text(body):  # the generated subagent, started by the task tool
            return {"content": REVIEW}
        self.tools_seen = tools
        self.task_description = next((t["function"].get("description", "") for t in body["tools"]
                                      if t["function"]["name"] == "task"), "")
        results = tool_messages(body)
        if len(results) == 0:
            return {"tool_calls": [{"name": ADD_TOOL, "arguments": {
                "type": "decision", "label": "UseRS256JWT", "content": "auth uses RS256-signed JWT access tokens"}}]}
        if len(results) == 1:
            return {"tool_calls": [{"name": QUERY_TOOL, "arguments": {"query": "JWT"}}]}
        if len(results) == 2:
            return {"tool_calls": [{"name": "task", "arguments": {
                "description": "Review the migration", "subagent_type": DRAFT["name"],
                "prompt": "Review migrations/0042_add_column.sql for locking problems."}}]}
        return {"content": "Here is what memory says:\n" + results[1] + "\nReviewer: " + results[2]}


def _run(cmd, env, cwd, timeout=90):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def opencode():
    try:
        return opencode_bin()
    except subprocess.CalledProcessError as exc:  # no registry: say so instead of a bare traceback
        pytest.fail(f"could not npm-install opencode-ai: {exc.stderr[-800:]}")


@pytest.mark.opencode
@needs_opencode
def test_opencode_calls_our_mcp_tools_and_the_plugin_records_the_session(opencode, tmp_path):
    started = time.monotonic()
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    opensage = [sys.executable, "-m", "opensage", "--workspace", str(project)]
    inst = _run([*opensage, "install", "opencode"], env=None, cwd=project)
    assert inst.returncode == 0, inst.stderr
    assert "wrote .opencode/plugin/opensage.js" in inst.stdout

    # a generated agent (the scripted model writes the draft) must show up as an OpenCode subagent
    script_file = tmp_path / "script.json"
    script_file.write_text(json.dumps([json.dumps(DRAFT)]))
    gen = subprocess.run([*opensage, "@generate-agent", "task=review SQL migrations for locking"],
                         capture_output=True, text=True, timeout=120,
                         env={**hermetic_env(home, project, "http://127.0.0.1:9/v1"),
                              "OPENSAGE_MODEL": "scripted/test", "OPENSAGE_SCRIPT": str(script_file)})
    assert gen.returncode == 0, gen.stderr

    for config_dir in (project / ".opencode", home / ".config" / "opencode"):
        seed_config_dir(config_dir)

    script = Script()
    with FakeOpenAI(script) as llm:
        env = hermetic_env(home, project, llm.base_url)
        t0 = time.monotonic()
        run = _run([opencode, "run", "--format", "json", PROMPT], env=env, cwd=project, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        t1 = time.monotonic()
        # one after the other: two OpenCode processes starting at once in the same HOME
        # contend for OpenCode's own SQLite database ("database is locked", seen once in CI)
        mcp_list = _run([opencode, "mcp", "list"], env, project)
        agent_list = _run([opencode, "agent", "list"], env, project)
        t2 = time.monotonic()
    elapsed = time.monotonic() - started
    opencode_s = t2 - t0
    print(f"opencode run {t1 - t0:.1f} s, mcp list + agent list {t2 - t1:.1f} s, "
          f"OpenCode total {opencode_s:.1f} s, test total {elapsed:.1f} s")
    assert not llm.errors, llm.errors

    # OpenCode offered our MCP tools to the model under <server>_<tool> names
    assert ADD_TOOL in script.tools_seen and QUERY_TOOL in script.tools_seen
    assert "opensage_create_entities" in script.tools_seen

    # 1. the node the model asked for is in our database
    db = sqlite3.connect(project / ".opencode" / "opensage.db")
    assert db.execute("SELECT type, content FROM nodes WHERE label='UseRS256JWT'").fetchone() == (
        "decision", "auth uses RS256-signed JWT access tokens")

    # 2. the plugin recorded the session as episodes, in order
    parent = db.execute("SELECT session_id FROM episodes WHERE kind='user_message' AND text LIKE ?",
                        (f"%{PROMPT[:30]}%",)).fetchone()[0]
    assert parent.startswith("ses_")
    rows = db.execute("SELECT kind, tool, text FROM episodes WHERE session_id=? ORDER BY seq", (parent,)).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("user_message", None),
        ("tool_call", ADD_TOOL), ("tool_result", ADD_TOOL),
        ("tool_call", QUERY_TOOL), ("tool_result", QUERY_TOOL),
        ("tool_call", "task"), ("tool_result", "task"),
        ("assistant_message", None),
    ]
    assert "RS256" in rows[0][2]
    assert "UseRS256JWT" in rows[2][2]  # the MCP result text, not the raw JSON envelope
    assert REVIEW in rows[6][2]  # the subagent's answer came back through the task tool
    assert db.execute("SELECT source FROM sessions WHERE id=?", (parent,)).fetchone() == ("opencode",)
    # `opencode run` sends no session.deleted: the session ended and was compressed when the run exited
    assert db.execute("SELECT ended_at FROM sessions WHERE id=?", (parent,)).fetchone()[0] is not None
    assert db.execute("SELECT COUNT(*) FROM episodes WHERE session_id=? AND compressed_at IS NULL",
                      (parent,)).fetchone()[0] == 0
    # the subagent ran in its own (child) session, recorded too
    child = db.execute("SELECT session_id FROM episodes WHERE kind='user_message' AND text LIKE ?",
                       ("%0042_add_column.sql%",)).fetchone()[0]
    assert child != parent
    assert db.execute("SELECT kind, text FROM episodes WHERE session_id=? ORDER BY seq", (child,)).fetchall() == [
        ("user_message", "Review migrations/0042_add_column.sql for locking problems."),
        ("assistant_message", REVIEW),
    ]

    # 3. the query result reached the model, and its answer reached the user
    final_request = llm.requests[-1]
    query_result = tool_messages(final_request)[1]
    assert "UseRS256JWT" in query_result and "RS256-signed JWT" in query_result
    texts = [json.loads(line)["part"].get("text", "") for line in run.stdout.splitlines()
             if line.startswith("{") and json.loads(line).get("type") == "text"]
    assert any("UseRS256JWT" in t for t in texts)
    assert "UseRS256JWT" in rows[-1][2] and REVIEW in rows[-1][2]  # the final answer's episode

    # must-show 2: the MCP server is connected; the generated agent is a subagent
    assert mcp_list.returncode == 0, mcp_list.stderr
    listing = _strip_ansi(mcp_list.stdout + mcp_list.stderr)
    assert "opensage" in listing and "connected" in listing
    assert agent_list.returncode == 0, agent_list.stderr
    agents = _strip_ansi(agent_list.stdout)
    assert "sql-migration-reviewer (subagent)" in agents
    # ... and the primary agent can call it: the task tool offered to the model lists it
    assert f"sql-migration-reviewer: {DRAFT['description']}" in script.task_description

    # uninstall removes exactly what install added
    un = _run([*opensage, "uninstall", "opencode"], env=None, cwd=project)
    assert un.returncode == 0, un.stderr
    assert not (project / "opencode.json").exists()
    assert not (project / ".opencode" / "plugin").exists()
    assert not (project / ".opencode" / "command").exists()
    assert (project / ".opencode" / "agent" / "sql-migration-reviewer.md").exists()  # not ours to remove


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


SHIM_DRIVER = r"""
const plugin = (await import(process.argv[2])).default
const hooks = await plugin.server({})
const sid = "ses_shim1"
await hooks.event({ event: { type: "session.created", properties: { sessionID: sid, info: { id: sid } } } })
await hooks["chat.message"]({ sessionID: sid, agent: "build" },
  { message: {}, parts: [{ type: "text", text: "fix the login bug in src/auth.py" }, { type: "text", text: "hidden", synthetic: true }] })
await hooks["tool.execute.after"]({ tool: "edit", sessionID: sid, callID: "c1", args: { filePath: "src/auth.py" } },
  { title: "", output: "Edit applied", metadata: {} })
await hooks.event({ event: { type: "message.updated", properties: { info: { id: "m2", sessionID: sid, role: "assistant" } } } })
await hooks.event({ event: { type: "message.part.updated",
  properties: { part: { id: "p1", messageID: "m2", sessionID: sid, type: "text", text: "Fixed the login bug." } } } })
await hooks.event({ event: { type: "session.idle", properties: { sessionID: sid } } })
const output = { context: ["OpenCode's own context"] }
await hooks["experimental.session.compacting"]({ sessionID: sid }, output)
await hooks.dispose()
console.log(JSON.stringify(output))
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_plugin_shim_records_events_and_feeds_compaction(tmp_path):
    """The generated shim under node, with the hook inputs OpenCode 1.18 passes (no OpenCode needed)."""
    project = tmp_path / "project"
    project.mkdir()
    opensage = [sys.executable, "-m", "opensage", "--workspace", str(project)]
    assert _run([*opensage, "install", "opencode"], env=None, cwd=project).returncode == 0
    driver = tmp_path / "driver.mjs"
    driver.write_text(SHIM_DRIVER)
    shim = project / ".opencode" / "plugin" / "opensage.js"
    r = _run(["node", str(driver), shim.as_uri()], env=None, cwd=project, timeout=60)
    assert r.returncode == 0, r.stderr
    context = json.loads(r.stdout.strip().splitlines()[-1])["context"]
    assert context[0] == "OpenCode's own context"
    assert len(context) == 2 and "src/auth.py" in context[1]  # our memory joined the compaction context
    db = sqlite3.connect(project / ".opencode" / "opensage.db")
    rows = db.execute("SELECT kind, tool, path, text, compressed_at FROM episodes WHERE session_id='ses_shim1' "
                      "ORDER BY seq").fetchall()
    assert [r[:4] for r in rows] == [
        ("user_message", None, None, "fix the login bug in src/auth.py"),
        ("tool_call", "edit", None, ""),
        ("tool_result", "edit", None, "Edit applied"),
        ("file_edit", "edit", "src/auth.py", ""),
        ("assistant_message", None, None, "Fixed the login bug."),
    ]
    assert all(r[4] is not None for r in rows)  # compaction compressed them


def test_install_opencode_keeps_what_is_there_and_uninstall_restores_it(tmp_path):
    project = tmp_path / "project"
    (project / ".opencode" / "command").mkdir(parents=True)
    config = {"$schema": "https://opencode.ai/config.json", "theme": "tokyonight",
              "mcp": {"github": {"type": "remote", "url": "https://example.invalid/mcp"}}}
    (project / "opencode.json").write_text(json.dumps(config, indent=2))
    mine = "---\ndescription: my own memory-query\n---\nDo it my way: $ARGUMENTS\n"
    (project / ".opencode" / "command" / "memory-query.md").write_text(mine)
    opensage = [sys.executable, "-m", "opensage", "--workspace", str(project)]

    r = _run([*opensage, "install", "opencode"], env=None, cwd=project)
    assert r.returncode == 0, r.stderr
    assert "kept .opencode/command/memory-query.md (exists and was not written by opensage)" in r.stdout
    merged = json.loads((project / "opencode.json").read_text())
    assert merged["theme"] == "tokyonight" and merged["mcp"]["github"] == config["mcp"]["github"]
    assert merged["mcp"]["opensage"]["type"] == "local"
    assert merged["mcp"]["opensage"]["command"][-1] == "mcp"
    assert list(merged) == list(config)  # key order kept
    assert (project / ".opencode" / "command" / "memory-query.md").read_text() == mine
    add_node = (project / ".opencode" / "command" / "memory-add-node.md").read_text()
    assert add_node.startswith("---\ndescription: ") and "`opensage_memory-add-node`" in add_node
    assert "$ARGUMENTS" in add_node and "`label`" in add_node
    shim = (project / ".opencode" / "plugin" / "opensage.js").read_text()
    assert '"command": ["opensage"]' in shim and "__OPENSAGE_CONFIG__" not in shim
    assert sys.executable not in shim and str(project) not in shim  # a team can commit it

    again = _run([*opensage, "install", "opencode"], env=None, cwd=project)  # idempotent
    assert again.returncode == 0, again.stderr
    assert json.loads((project / "opencode.json").read_text()) == merged

    r = _run([*opensage, "uninstall", "opencode"], env=None, cwd=project)
    assert r.returncode == 0, r.stderr
    assert json.loads((project / "opencode.json").read_text()) == config
    assert sorted(p.name for p in (project / ".opencode" / "command").iterdir()) == ["memory-query.md"]
    assert not (project / ".opencode" / "plugin").exists()
    assert not (project / ".opencode" / "opensage-install.json").exists()


def test_install_opencode_refuses_a_foreign_opensage_entry(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    config = {"mcp": {"opensage": {"type": "local", "command": ["somewhere-else"]}}}
    (project / "opencode.json").write_text(json.dumps(config))
    r = _run([sys.executable, "-m", "opensage", "--workspace", str(project), "install", "opencode"], env=None, cwd=project)
    assert r.returncode == 2 and "already has a different mcp.opensage entry" in r.stderr
    assert json.loads((project / "opencode.json").read_text()) == config
    assert not (project / ".opencode" / "plugin").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.opencode
@needs_opencode
def test_opencode_slash_command_and_compaction_carry_our_memory(opencode, tmp_path):
    """``opencode serve``: a session writes a file, the user runs ``/memory-query token store``
    (the command file from install), then the session is compacted (POST
    /session/:id/summarize). The shim compresses the session first and OpenCode's
    compaction request to the model carries what the graph learned."""
    import re
    import urllib.request

    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    inst = _run([sys.executable, "-m", "opensage", "--workspace", str(project), "install", "opencode"],
                env=None, cwd=project)
    assert inst.returncode == 0, inst.stderr
    for config_dir in (project / ".opencode", home / ".config" / "opencode"):
        seed_config_dir(config_dir)
    target = project / "src" / "token_store.py"

    def responder(body):
        if not body.get("tools"):
            return {"content": "Summary: created src/token_store.py."}  # title and compaction agents
        last = body["messages"][-1]
        if last["role"] == "user":
            text = json.dumps(last.get("content"))
            if "opensage_memory-query" in text:  # the /memory-query command's template
                return {"tool_calls": [{"name": QUERY_TOOL, "arguments": {"query": "token store"}}]}
            return {"tool_calls": [{"name": "write", "arguments": {"filePath": str(target), "content": "TOKENS = {}\n"}}]}
        called = [c["function"]["name"] for m in body["messages"] if m["role"] == "assistant"
                  for c in m.get("tool_calls") or []]
        if called and called[-1] == QUERY_TOOL:
            return {"content": "Memory says: " + tool_messages(body)[-1]}
        return {"content": "Created src/token_store.py."}

    with FakeOpenAI(responder) as llm:
        env = hermetic_env(home, project, llm.base_url)
        port = _free_port()
        server = subprocess.Popen([opencode, "serve", "--hostname", "127.0.0.1", "--port", str(port)],
                                  cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in server.stdout:
                if re.search(rf"listening on http://127\.0\.0\.1:{port}", line):
                    break
            base = f"http://127.0.0.1:{port}"

            def call(method, path, body=None):
                data = json.dumps(body).encode() if body is not None else None
                req = urllib.request.Request(base + path, method=method, data=data,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=90) as resp:
                    return json.loads(resp.read() or b"null")

            sid = call("POST", "/session", {})["id"]
            call("POST", f"/session/{sid}/message", {"parts": [{"type": "text", "text": "create the token store"}]})
            # a user typing "/memory-query token store": the command file written by install
            answer = call("POST", f"/session/{sid}/command", {"command": "memory-query", "arguments": "token store"})
            assert call("POST", f"/session/{sid}/summarize", {"providerID": "scripted", "modelID": "model"}) is True
            call("POST", "/instance/dispose", {})
        finally:
            server.terminate()
            server.wait(timeout=20)

    assert target.read_text() == "TOKENS = {}\n"
    command_prompts = [m for b in llm.requests for m in b.get("messages", [])
                       if m["role"] == "user" and "opensage_memory-query" in json.dumps(m.get("content"))]
    assert command_prompts and "token store" in json.dumps(command_prompts[0]["content"])  # $ARGUMENTS filled in
    answer_text = " ".join(p.get("text", "") for p in answer["parts"] if p.get("type") == "text")
    assert answer_text.startswith("Memory says:") and "token_store" in answer_text  # the query result came back
    from opensage.host import Host
    from opensage.store import Workspace

    host = Host(Workspace(project))
    try:
        memory = host.compaction_context(host.session(sid, source="opencode"))
    finally:
        host.close()
    assert memory and "src/token_store.py" in memory

    def texts(body):
        for m in body.get("messages", []):
            c = m.get("content")
            yield from ([c] if isinstance(c, str) else [p.get("text", "") for p in c or [] if isinstance(p, dict)])

    assert any(memory in t for b in llm.requests for t in texts(b)), \
        "OpenCode's compaction request did not carry opensage's memory"
    db = sqlite3.connect(project / ".opencode" / "opensage.db")
    rows = db.execute("SELECT kind, tool, path, compressed_at, text FROM episodes WHERE session_id=? ORDER BY seq",
                      (sid,)).fetchall()
    assert ("file_edit", "write", "src/token_store.py") in [r[:3] for r in rows]  # made relative to the project
    # everything before the compaction was compressed by it; the compaction's own summary
    # came after, and was compressed when the session ended at dispose
    *before, summary = rows
    assert all(r[3] is not None for r in before), rows
    assert summary[0] == "assistant_message" and summary[4].startswith("Summary:")
    assert summary[3] is not None and summary[3] > max(r[3] for r in before)
    assert db.execute("SELECT ended_at FROM sessions WHERE id=?", (sid,)).fetchone()[0] is not None
    assert db.execute("SELECT 1 FROM nodes WHERE type='file' AND label='src/token_store.py'").fetchone()


def test_hook_from_opencode_answers_one_line_per_batch(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    lines = [
        json.dumps({"events": [{"hook": "session-start", "payload": {"session_id": "ses_a"}},
                               {"hook": "user-message", "payload": {"session_id": "ses_a", "text": "hello"}}]}),
        "not json",
        json.dumps({"events": [{"hook": "no-such-hook", "payload": {}},
                               {"hook": "file-edit", "payload": {"session_id": "ses_a", "path": str(project / "a" / "b.py")}}]}),
    ]
    r = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "hook", "--from", "opencode"],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(answers) == 3
    assert [a["hook"] for a in answers[0]["results"]] == ["session-start", "user-message"]
    assert "not valid JSON" in answers[1]["error"]
    assert answers[2]["results"][0]["ok"] is False and "no-such-hook" in answers[2]["results"][0]["error"]
    assert answers[2]["results"][1]["ok"] is True
    db = sqlite3.connect(project / ".opencode" / "opensage.db")
    assert db.execute("SELECT kind, path FROM episodes ORDER BY seq").fetchall() == [
        ("user_message", None), ("file_edit", "a/b.py")]
    assert db.execute("SELECT source FROM sessions WHERE id='ses_a'").fetchone() == ("opencode",)


STORY_CHECK = "python3 check_tokens.py"
STORY_DECISION = ("We decided to sign JWT access tokens with RS256 instead of HS256, so other services "
                  "verify them with the public key only.")
STORY_FIX = ("Fixed the KeyError: 'exp' in src/tokens.py: expiry() now reads claims.get(\"exp\"), "
             "so tokens without an exp claim no longer crash the check.")
STORY_QUESTION = "How did we fix the KeyError exp in the token check?"
STORY_QUERY = {"query": "KeyError exp token expiry RS256"}


def _request_text(body) -> str:
    parts = [system_text(body)]
    for m in body.get("messages", []):
        c = m.get("content")
        parts += [c] if isinstance(c, str) else [p.get("text", "") for p in c or [] if isinstance(p, dict)]
    return "\n".join(p for p in parts if p)


@pytest.mark.opencode
@needs_opencode
def test_opencode_session_decides_fails_fixes_compacts_and_a_new_run_learns_how_it_was_fixed(opencode, tmp_path):
    """Must-show 1 (OpenCode) and 2: ``opencode serve`` runs a session that stores a decision,
    fails a check, fixes it and is compacted; then ``opencode run`` asks, in a new session,
    how it was fixed. That run's session ends and is compressed when ``opencode run``
    exits (OpenCode sends no session.deleted there), and its model request carries the
    decision and the fix; the memory query's top results hold neither query results
    nor tool-name stubs."""
    import re
    import urllib.request

    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    (project / "src").mkdir(parents=True)
    (project / "src" / "__init__.py").write_text("")
    tokens = project / "src" / "tokens.py"
    tokens.write_text('def expiry(claims):\n    return claims["exp"]\n')
    (project / "check_tokens.py").write_text(
        "from src.tokens import expiry\n\nassert expiry({}) is None\nprint('token check passed')\n")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    inst = _run([sys.executable, "-m", "opensage", "--workspace", str(project), "install", "opencode"],
                env=None, cwd=project)
    assert inst.returncode == 0, inst.stderr
    for config_dir in (project / ".opencode", home / ".config" / "opencode"):
        seed_config_dir(config_dir)

    seen: dict = {"first": None, "query": []}
    steps = [
        {"tool_calls": [{"name": ADD_TOOL, "arguments": {"type": "decision", "label": "Sign JWT access tokens with RS256",
                                                        "content": STORY_DECISION}}]},
        {"tool_calls": [{"name": QUERY_TOOL, "arguments": {"query": "JWT signing"}}]},
        {"tool_calls": [{"name": "bash", "arguments": {"command": STORY_CHECK, "description": "Run the token check"}}]},
        {"tool_calls": [{"name": "read", "arguments": {"filePath": str(tokens)}}]},
        {"tool_calls": [{"name": "edit", "arguments": {"filePath": str(tokens), "oldString": 'return claims["exp"]',
                                                      "newString": 'return claims.get("exp")'}}]},
        {"tool_calls": [{"name": "bash", "arguments": {"command": STORY_CHECK, "description": "Run the token check"}}]},
        {"content": STORY_FIX},
    ]

    def responder(body):
        if not body.get("tools"):  # title and compaction agents
            return {"content": "Summary: decided RS256 for JWTs; fixed KeyError 'exp' in src/tokens.py."}
        results = tool_messages(body)
        if STORY_QUESTION in _request_text(body):
            if not results:
                seen["first"] = body
                return {"tool_calls": [{"name": QUERY_TOOL, "arguments": STORY_QUERY}]}
            seen["query"].append(results[-1])
            return {"content": "The fix: src/tokens.py now uses claims.get."}
        return steps[min(len(results), len(steps) - 1)]

    with FakeOpenAI(responder) as llm:
        env = hermetic_env(home, project, llm.base_url)
        port = _free_port()
        server = subprocess.Popen([opencode, "serve", "--hostname", "127.0.0.1", "--port", str(port)],
                                  cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in server.stdout:
                if re.search(rf"listening on http://127\.0\.0\.1:{port}", line):
                    break
            base = f"http://127.0.0.1:{port}"

            def call(method, path, body=None):
                data = json.dumps(body).encode() if body is not None else None
                req = urllib.request.Request(base + path, method=method, data=data,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=90) as resp:
                    return json.loads(resp.read() or b"null")

            sid = call("POST", "/session", {})["id"]
            call("POST", f"/session/{sid}/message",
                 {"parts": [{"type": "text", "text": "Record the JWT decision, then make the token check pass."}]})
            assert call("POST", f"/session/{sid}/summarize", {"providerID": "scripted", "modelID": "model"}) is True
            call("POST", "/instance/dispose", {})
        finally:
            server.terminate()
            server.wait(timeout=20)
        second = _run([opencode, "run", "--format", "json", STORY_QUESTION], env=env, cwd=project, timeout=120)
        assert second.returncode == 0, second.stderr[-3000:]
    assert not llm.errors, llm.errors
    assert tokens.read_text() == 'def expiry(claims):\n    return claims.get("exp")\n'

    db = sqlite3.connect(project / ".opencode" / "opensage.db")
    rows = db.execute("SELECT kind, tool, text, args, compressed_at FROM episodes WHERE session_id=? ORDER BY seq",
                      (sid,)).fetchall()
    bash = [json.loads(r[3]) for r in rows if r[0] == "tool_call" and r[1] == "bash"]
    assert bash and all(a.get("command") == STORY_CHECK for a in bash)  # tool calls carry their arguments
    assert all(r[4] is not None for r in rows), [r[:2] for r in rows if r[4] is None]
    assert db.execute("SELECT ended_at FROM sessions WHERE id=?", (sid,)).fetchone()[0] is not None

    # must-show 2: the `opencode run` session ended and was compressed when the run exited
    new_sid = db.execute("SELECT session_id FROM episodes WHERE kind='user_message' AND text LIKE ?",
                         (f"%{STORY_QUESTION}%",)).fetchone()[0]
    assert new_sid != sid
    assert db.execute("SELECT ended_at FROM sessions WHERE id=?", (new_sid,)).fetchone()[0] is not None
    pending = db.execute("SELECT kind FROM episodes WHERE session_id=? AND compressed_at IS NULL", (new_sid,)).fetchall()
    assert pending == [], pending

    # must-show 1: the new session's model request carries the decision and the fix
    first = _request_text(seen["first"] or {})
    assert "RS256" in first, "the decision did not reach the new session's model"
    assert "src/tokens.py" in first and "KeyError" in first, "the fix did not reach the new session's model"
    # ... and the query's top results are evidence, not echoes of earlier queries or tool names
    assert seen["query"], "the model never saw the memory query's result"
    from tests.memory_results import echoes_and_stubs, result_blocks

    assert result_blocks(seen["query"][-1]), seen["query"][-1]
    assert echoes_and_stubs(seen["query"][-1]) == [], echoes_and_stubs(seen["query"][-1])


def test_hook_from_opencode_ends_each_session_once_and_at_end_of_input(tmp_path):
    """Ends come from dispose, the idle timer and end of input: a second end with nothing
    new is skipped (no second compression); a session resumed by a later process is
    open again and its next end compresses what came since; end of input (OpenCode gone,
    however) ends what is still open."""
    project = tmp_path / "project"
    project.mkdir()

    def serve(*batches):
        lines = "".join(json.dumps({"events": b}) + "\n" for b in batches)
        r = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "hook", "--from", "opencode"],
                           input=lines, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    def ev(hook, **payload):
        return {"hook": hook, "payload": {"session_id": "ses_r", **payload}}

    def state():
        db = sqlite3.connect(project / ".opencode" / "opensage.db")
        try:
            ended = db.execute("SELECT ended_at FROM sessions WHERE id='ses_r'").fetchone()[0]
            marks = [r[0] for r in db.execute("SELECT compressed_at FROM episodes WHERE session_id='ses_r' ORDER BY seq")]
            return ended, marks
        finally:
            db.close()

    answers = serve([ev("session-start"), ev("user-message", text="let us use RS256 for the JWT signer")],
                    [ev("session-end")], [ev("session-end")])
    assert answers[1]["results"][0].get("skipped") is None
    assert answers[2]["results"][0]["skipped"] == "already ended"  # the idle timer and dispose both asked
    ended1, marks1 = state()
    assert ended1 is not None and all(marks1)

    answers = serve([ev("session-end")])  # a new process, nothing new: still nothing to do
    assert answers[0]["results"][0]["skipped"] == "already ended"
    assert state() == (ended1, marks1)

    # resumed (opencode run -s ses_r): new events, then the process goes away without an end
    serve([ev("user-message", text="also rotate the signing key monthly")])
    ended2, marks2 = state()
    assert ended2 > ended1 and marks2[:len(marks1)] == marks1 and all(marks2)  # only the new episode


IDLE_DRIVER = r"""
const plugin = (await import(process.argv[2])).default
const hooks = await plugin.server({ directory: process.argv[3] })
const sid = "ses_idle"
await hooks.event({ event: { type: "session.created", properties: { sessionID: sid, info: { id: sid } } } })
await hooks["chat.message"]({ sessionID: sid }, { message: {}, parts: [{ type: "text", text: "use RS256 for JWTs" }] })
await hooks.event({ event: { type: "session.idle", properties: { sessionID: sid } } })
console.log("idle")
await new Promise((resolve) => setTimeout(resolve, 20000)) // OpenCode stays up (a TUI or serve)
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_shim_ends_an_idle_session_while_opencode_keeps_running(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    assert _run([sys.executable, "-m", "opensage", "--workspace", str(project), "install", "opencode"],
                env=None, cwd=project).returncode == 0
    driver = tmp_path / "driver.mjs"
    driver.write_text(IDLE_DRIVER)
    shim = project / ".opencode" / "plugin" / "opensage.js"
    import os

    proc = subprocess.Popen(["node", str(driver), shim.as_uri(), str(project)], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OPENSAGE_IDLE_END_S": "0.5"})
    try:
        assert proc.stdout.readline().strip() == "idle"
        def ended():
            try:
                db = sqlite3.connect(project / ".opencode" / "opensage.db")
                try:
                    row = db.execute("SELECT ended_at FROM sessions WHERE id='ses_idle'").fetchone()
                finally:
                    db.close()
            except sqlite3.OperationalError:  # the database or table is not there yet
                return None
            return row[0] if row else None

        wait_until(ended, 30, "the idle timer to end the session")
        assert proc.poll() is None  # ended by the idle timer, not by OpenCode exiting
        db = sqlite3.connect(project / ".opencode" / "opensage.db")
        assert db.execute("SELECT COUNT(*) FROM episodes WHERE session_id='ses_idle' AND compressed_at IS NULL"
                          ).fetchone()[0] == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
