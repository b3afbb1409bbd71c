"""Hostile or broken input (issue 13, "Bad input"): each case drives the real path — a
subprocess CLI, the OpenCode hook stream, the MCP server over stdio — and checks what a
user would see: a clear error and nothing lost, never a traceback or a hang.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.conftest import REPO, run_cli

DEEP = "[" * 100_000 + "]" * 100_000  # far past CPython's recursion limit


def episodes(project: Path, session_id: str) -> list[str]:
    """The texts of a session's episodes, in order (read straight from the database)."""
    import sqlite3

    conn = sqlite3.connect(project / ".opencode" / "opensage.db")
    try:
        return [r[0] for r in conn.execute("SELECT text FROM episodes WHERE session_id = ? ORDER BY seq", (session_id,))]
    finally:
        conn.close()


# -- lone surrogates and invalid UTF-8 --------------------------------------------------------
def test_a_lone_surrogate_in_a_hook_event_is_kept_as_a_replacement_character(cli, project):
    r = cli("hook", "user-message", input='{"session_id": "s1", "text": "half an emoji \\ud83d here"}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    assert episodes(project, "s1") == ["half an emoji \ufffd here"]


def test_invalid_utf8_on_hook_stdin_is_kept_as_replacement_characters(project):
    proc = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "hook", "user-message"],
                          input=b'{"session_id": "s1", "text": "bytes \xff\xfe end"}', capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert episodes(project, "s1") == ["bytes \ufffd\ufffd end"]


# -- deeply nested JSON -----------------------------------------------------------------------
def test_deeply_nested_hook_stdin_is_a_usage_error_without_traceback(cli, project):
    r = cli("hook", "user-message", input=DEEP)
    assert r.returncode == 2
    assert "nested more than 64 levels" in r.stderr and "Traceback" not in r.stderr


def test_deeply_nested_metadata_argument_is_a_usage_error(cli, project):
    for depth in (5000, 500):  # past the recursion limit, and past the 64-level bound only
        value = '{"a":' * depth + "1" + "}" * depth
        r = cli("@memory-add-node", "type=concept", "label=x", f"metadata={value}")
        assert r.returncode == 2, r.stderr
        assert "argument 'metadata' is nested more than 64 levels" in r.stderr and "Traceback" not in r.stderr
    assert run_cli(project, "--json", "@memory-query", "query=x", "mode=pattern").stdout.strip() in ("[]", "")


def test_deeply_nested_repl_line_is_an_error_and_the_repl_goes_on(cli):
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    r = cli("chat", input=f"@memory-add-node type=concept label=x metadata={deep}\n"
                          "@memory-add-node type=concept label=after\n")
    assert "nested more than 64 levels" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "added n1 (concept) after" in r.stdout


def test_opencode_stream_answers_a_too_deep_batch_and_still_records_the_next(project):
    good = {"events": [{"hook": "user-message", "payload": {"session_id": "s9", "text": "after the bad one \ud83d"}}]}
    lines = DEEP + "\n" + json.dumps(good) + "\n"
    proc = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "hook", "--from", "opencode"],
                          input=lines.encode("utf-8", "surrogatepass"), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(answers) == 2
    assert "nested more than 64 levels" in answers[0]["error"]
    assert answers[1]["results"][0]["ok"] is True
    assert episodes(project, "s9") == ["after the bad one \ufffd"]


# -- the OpenCode shim: slicing must not cut an emoji -----------------------------------------
@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_opencode_shim_never_sends_half_an_emoji(project, tmp_path):
    from opensage.integrations.opencode import plugin_source
    from opensage.store import Workspace

    shim = tmp_path / "opensage.mjs"
    shim.write_text(plugin_source(Workspace(project)))
    driver = tmp_path / "drive.mjs"
    driver.write_text(
        "const mod = await import(process.argv[2]);\n"
        "const hooks = await mod.default.server({});\n"
        "const text = 'a'.repeat(19999) + '\\u{1F600}';\n"  # the emoji straddles unit 20,000
        "await hooks['tool.execute.after']({sessionID: 'js1', tool: 'bash', callID: 'c1', args: {}}, {output: text});\n"
        "await hooks.dispose();\n")
    proc = subprocess.run(["node", str(driver), shim.as_uri()], capture_output=True, text=True, timeout=120,
                          cwd=project, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    texts = episodes(project, "js1")
    assert "a" * 19999 in texts  # cut before the emoji: no U+FFFD, nothing lost


# -- bounded queries --------------------------------------------------------------------------
def test_a_catastrophic_regex_returns_at_once(cli):
    assert cli("@memory-add-node", "type=concept", "label=" + "a" * 48 + "!").returncode == 0
    # (a+)+$ on 48 a's and a '!' backtracks 2**48 steps unbounded: returning before the
    # subprocess deadline (TimeoutExpired otherwise) is the behaviour under test
    r = cli("@memory-query", "mode=pattern", "query=(a+)+$", "field=label", timeout=30)
    assert r.returncode == 0, r.stderr
    assert "0 results" in r.stdout


def test_an_unsupported_regex_and_an_overlong_query_get_clear_errors(cli):
    r = cli("@memory-query", "mode=pattern", r"query=(\w)\1")
    assert r.returncode == 2 and "backreferences and lookaround are not supported" in r.stderr
    r = cli("@memory-query", "query=" + "word " * 2_000)
    assert r.returncode == 2 and "similarity takes at most 4,000" in r.stderr


# -- MCP: slow or broken requests never silence the server ------------------------------------
def _server(project) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "opensage", "--workspace", str(project), "mcp"])


def test_mcp_answers_pings_while_a_pattern_query_runs_and_the_query_returns(project):
    async def main():
        with anyio.fail_after(60):
            return await session()

    async def session():
        async with stdio_client(_server(project)) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                await s.call_tool("memory-add-node", {"type": "concept", "label": "a" * 48 + "!"})
                results = {}

                async def query():
                    results["query"] = await s.call_tool(
                        "memory-query", {"query": "(a+)+$", "mode": "pattern", "field": "label"})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(query)
                    with anyio.fail_after(10):
                        await s.send_ping()
                        results["ping"] = True
                # a 200,000-word similarity query is refused at once, with the reason
                with anyio.fail_after(20):
                    results["huge"] = await s.call_tool("memory-query", {"query": "word " * 200_000})
                return results

    results = anyio.run(main)
    assert results["ping"] is True
    assert not results["query"].is_error
    assert results["huge"].is_error
    assert "similarity takes at most 4,000" in results["huge"].content[0].text


def _raw_exchange(project, lines: list[bytes], expect: int, timeout: float = 60) -> list[dict]:
    """Write raw lines to ``opensage mcp`` and read ``expect`` answers (a deadline, no sleeps)."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    proc = subprocess.Popen([sys.executable, "-m", "opensage", "--workspace", str(project), "mcp"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(json.dumps(init).encode() + b"\n")
        proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        for line in lines:
            proc.stdin.write(line + b"\n")
        proc.stdin.flush()
        answers = []
        deadline = time.monotonic() + timeout
        while len(answers) < expect + 1 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            answers.append(json.loads(line))
        return answers[1:]
    finally:
        proc.kill()
        proc.wait()


def test_mcp_answers_too_deep_and_lone_surrogate_requests_with_errors(project):
    deep = (b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "read_graph", "arguments": {"x": '
            + b"[" * 5000 + b"]" * 5000 + b"}}}")
    surrogate = (b'{"jsonrpc": "2.0", "id": "s", "method": "tools/call", "params": {"name": "memory-add-node", '
                 b'"arguments": {"type": "concept", "label": "half \\ud83d"}}}')
    broken = b'{"jsonrpc": "2.0", "id": 9, "method": '
    ping = b'{"jsonrpc": "2.0", "id": 10, "method": "ping"}'
    answers = _raw_exchange(project, [deep, surrogate, broken, ping], expect=4)
    by_id = {a.get("id"): a for a in answers}
    assert "nested more than 64 levels" in by_id[7]["error"]["message"]
    assert "lone UTF-16 surrogate" in by_id["s"]["error"]["message"]
    assert by_id[9]["error"]["code"] == -32700  # not JSON, but its id can still be read
    assert by_id[10]["result"] == {}  # and the server is still there


# -- concurrency ------------------------------------------------------------------------------
def test_two_clients_deleting_and_relating_the_same_entities_never_get_internal_errors(project):
    """Client A deletes and re-creates two entities while client B relates and un-relates
    them (two server processes, one database): every answer is a result, never an
    "internal error" (FOREIGN KEY / NoneType races before each write was one transaction)."""
    ents = [{"name": n, "entityType": "t", "observations": ["o"]} for n in ("X", "Y")]
    rel = {"from": "X", "to": "Y", "relationType": "knows"}
    rounds = 400  # 2,400 calls: 4-8 "internal error" answers on 39364b8

    async def churn(s, out):
        for _ in range(rounds):
            out.append(await s.call_tool("delete_entities", {"entityNames": ["X", "Y"]}))
            out.append(await s.call_tool("create_entities", {"entities": ents}))
            out.append(await s.call_tool("add_observations", {"observations": [{"entityName": "X", "contents": ["p"]}]}))

    async def relate(s, out):
        for _ in range(rounds):
            out.append(await s.call_tool("create_relations", {"relations": [rel]}))
            out.append(await s.call_tool("open_nodes", {"names": ["X", "Y"]}))
            out.append(await s.call_tool("delete_relations", {"relations": [rel]}))

    async def main():
        a_out, b_out = [], []
        async with stdio_client(_server(project)) as (ra, wa), stdio_client(_server(project)) as (rb, wb):
            async with ClientSession(ra, wa) as a, ClientSession(rb, wb) as b:
                await a.initialize()
                await b.initialize()
                await a.call_tool("create_entities", {"entities": ents})
                async with anyio.create_task_group() as tg:
                    tg.start_soon(churn, a, a_out)
                    tg.start_soon(relate, b, b_out)
                graph = (await a.call_tool("read_graph", {})).structured_content
        return a_out + b_out, graph

    results, graph = anyio.run(main)
    texts = [c.text for r in results for c in r.content if getattr(c, "type", "") == "text"]
    internal = [t for t in texts if "internal error" in t]
    assert not internal, internal[:3]
    # add_observations may find X missing (a real "not found", like the reference); nothing else fails
    failed = [t for r, t in zip(results, texts) if r.is_error]
    assert all("Entity with name X not found" in t for t in failed), failed[:3]
    assert len(results) == 6 * rounds
    assert {e["name"] for e in graph["entities"]} <= {"X", "Y"}


class _SlowPlugin:
    """``@wait-here`` blocks until released; ``@quick`` answers at once (test plugin)."""

    def __init__(self):
        import threading

        self.release = threading.Event()
        self.started = threading.Event()

    from opensage.hookspecs import hookimpl

    @hookimpl
    def register_commands(self, register):
        from opensage.types import ArgModel, Command, CommandResult

        class NoArgs(ArgModel):
            pass

        def wait_here(args, ctx):
            self.started.set()
            self.release.wait(30)
            return CommandResult(text="released")

        register(Command("wait-here", NoArgs, wait_here, "Block until released (test)."))
        register(Command("quick", NoArgs, lambda a, c: CommandResult(text="quick"), "Answer at once (test)."))


def test_mcp_calls_run_concurrently_a_slow_call_does_not_block_others(workspace):
    from mcp import Client

    from opensage.host import Host
    from opensage.mcp_server import build_server

    plugin = _SlowPlugin()
    host = Host(workspace, plugins=[plugin])

    async def main():
        order = []
        async with Client(build_server(host), mode="legacy") as client:
            async def slow():
                await client.call_tool("wait-here", {})
                order.append("slow")

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                with anyio.fail_after(20):
                    while not plugin.started.is_set():
                        await anyio.sleep(0.01)
                    quick = await client.call_tool("quick", {})
                    order.append("quick")
                    found = await client.call_tool("memory-query", {"query": "anything"})
                    order.append("query")
                plugin.release.set()
        return order, quick, found

    try:
        order, quick, found = anyio.run(main)
    finally:
        plugin.release.set()
        host.close()
    assert order == ["quick", "query", "slow"]
    assert not quick.is_error and not found.is_error


# -- the sandbox from a non-normalised interpreter path ---------------------------------------
@pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")
def test_generated_tools_run_when_opensage_was_started_as_dotdot_venv_python(project, tmp_path):
    from opensage.plugins.dynamic_tools import store
    from opensage.store import Workspace
    from opensage.types import ToolExample, ToolSpec

    spec = ToolSpec(
        name="word-count", description="Count the words of a text.", language="python",
        parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        code="import json,sys\nd=json.load(sys.stdin)\nprint(json.dumps({'result': len(d['arguments']['text'].split())}))\n",
        examples=[ToolExample(arguments={"text": "a b c"}, expected=3)],
    )
    store.save(Workspace(project), spec, checked=[])
    link = tmp_path / "venv"
    link.symlink_to(sys.prefix)  # a venv next to the project, reached as ../venv/bin/python
    python = f"../venv/bin/{Path(sys.executable).name}"
    r = subprocess.run([python, "-m", "opensage", "@word-count", "text=one two three four"], cwd=project,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4"


def test_a_claude_transcript_with_line_separators_bad_bytes_and_half_emoji_is_read(cli, project):
    """Stop without last_assistant_message reads the transcript: U+2028 inside a JSON
    string is not a line break, invalid UTF-8 elsewhere and a lone surrogate do not lose
    the reply."""
    from tests.test_claude_hooks import SID, payload

    reply = {"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "text", "text": "first\u2028second \ud83d"}]}}
    transcript = project / ".claude-transcript.jsonl"
    transcript.write_bytes(b'{"type": "user", "message": {"role": "user", "content": "hi \xff"}}\n'
                           # raw U+2028 (as JSON.stringify writes it), the half emoji as an escape
                           + json.dumps(reply, ensure_ascii=False).replace("\ud83d", "\\ud83d").encode() + b"\n")
    stop = json.loads(payload("stop.json", project))
    del stop["last_assistant_message"]
    r = cli("hook", "--from", "claude", input=json.dumps(stop))
    assert r.returncode == 0, r.stderr
    assert episodes(project, SID) == ["first\u2028second \ufffd"]
