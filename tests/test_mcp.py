"""``opensage mcp`` with the official MCP Python client.

The server runs as a real subprocess (``python -m opensage --workspace X mcp``) spoken
to over stdio by ``mcp.ClientSession``; the tools/list_changed test connects in-process
to a host whose command set grows during the session.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from contextlib import asynccontextmanager

import anyio
import jsonschema
import psutil
import pytest

from tests.stores import store_conn
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from opensage.hookspecs import hookimpl
from opensage.plugins.graph_memory.memory_compat import COMPAT_TOOLS
from opensage.types import ArgModel, Command, CommandResult

REFERENCE_TOOLS = {"create_entities", "create_relations", "add_observations", "delete_entities",
                   "delete_observations", "delete_relations", "read_graph", "search_nodes", "open_nodes"}


@asynccontextmanager
async def mcp_session(project):
    # the SDK passes a child only a few variables unless told: give it this test's (the store)
    params = StdioServerParameters(command=sys.executable, env=dict(os.environ),
                                   args=["-m", "opensage", "--workspace", str(project), "mcp"])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def test_every_command_and_reference_tool_is_listed_with_a_valid_schema(project, host):
    async def main():
        async with mcp_session(project) as s:
            return (await s.list_tools()).tools

    tools = run(main)
    names = [t.name for t in tools]
    assert len(names) == len(set(names))
    assert set(host.commands) <= set(names)
    assert REFERENCE_TOOLS <= set(names)
    for tool in tools:
        schema = tool.input_schema
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object"
        assert set(schema.get("required", [])) <= set(schema["properties"]), tool.name
        assert tool.description
    by_name = {t.name: t for t in tools}
    # the schema is the command's own pydantic model (camelCase aliases), not a hand-written copy
    for name, command in host.commands.items():
        expected = command.args.model_json_schema(by_alias=True)
        assert by_name[name].input_schema["properties"] == expected.get("properties", {})
    assert by_name["create_relations"].input_schema == COMPAT_TOOLS["create_relations"].input_schema()


def test_command_call_writes_the_graph_and_returns_text_and_its_data_in_meta(project):
    async def main():
        async with mcp_session(project) as s:
            added = await s.call_tool("memory-add-node", {"type": "decision", "label": "UseJWT",
                                                          "content": "auth uses RS256 JWTs"})
            found = await s.call_tool("memory-query", {"query": "JWT"})
            return added, found

    added, found = run(main)
    assert not added.is_error
    assert text_of(added).startswith("added n1 (decision) UseJWT")
    # the model reads the text: no structuredContent (Claude Code would give the model that
    # JSON instead); the data rides in _meta for clients that want it
    assert added.structured_content is None and found.structured_content is None
    assert added.meta["opensage/data"]["node"]["label"] == "UseJWT"
    assert "UseJWT" in text_of(found)
    conn = store_conn(project)
    assert conn.execute("SELECT type, content FROM nodes WHERE label='UseJWT'").fetchone() == ("decision", "auth uses RS256 JWTs")


def test_bad_arguments_give_an_error_result_naming_the_field_and_the_server_lives_on(project):
    async def main():
        async with mcp_session(project) as s:
            missing = await s.call_tool("memory-add-node", {"type": "concept"})
            wrong = await s.call_tool("memory-add-edge", {"fromId": "a", "toId": "b", "type": "uses", "weight": 7})
            unknown_arg = await s.call_tool("memory-add-node", {"type": "concept", "label": "X", "colour": "red"})
            unknown_tool = await s.call_tool("no-such-tool", {})
            compat = await s.call_tool("create_entities", {"entities": [{"name": "A", "observations": []}]})
            ok = await s.call_tool("memory-add-node", {"type": "concept", "label": "StillAlive"})
            return missing, wrong, unknown_arg, unknown_tool, compat, ok

    missing, wrong, unknown_arg, unknown_tool, compat, ok = run(main)
    assert missing.is_error and "'label'" in text_of(missing)
    assert wrong.is_error and "'weight'" in text_of(wrong)
    assert unknown_arg.is_error and "'colour'" in text_of(unknown_arg)
    assert unknown_tool.is_error and "no-such-tool" in text_of(unknown_tool)
    assert compat.is_error and "entities[0].entityType" in text_of(compat)
    assert not ok.is_error and "StillAlive" in text_of(ok)


def test_reference_memory_tools_behave_like_the_reference_server(project):
    """The reference server's documented cases, through MCP (result text and structuredContent)."""
    alice = {"name": "Alice", "entityType": "person", "observations": ["likes tea"]}
    acme = {"name": "Acme", "entityType": "organization", "observations": ["makes anvils"]}
    works = {"from": "Alice", "to": "Acme", "relationType": "works at"}

    async def main():
        out = {}
        async with mcp_session(project) as s:
            out["create"] = await s.call_tool("create_entities", {"entities": [alice, acme]})
            out["create_again"] = await s.call_tool("create_entities", {"entities": [alice]})
            out["relate"] = await s.call_tool("create_relations", {"relations": [works, works]})
            out["relate_missing"] = await s.call_tool("create_relations", {"relations": [
                {"from": "Alice", "to": "Ghost", "relationType": "knows"}]})
            out["observe"] = await s.call_tool("add_observations", {"observations": [
                {"entityName": "Alice", "contents": ["likes tea", "codes in Rust"]}]})
            out["observe_missing"] = await s.call_tool("add_observations", {"observations": [
                {"entityName": "Ghost", "contents": ["x"]}]})
            out["search"] = await s.call_tool("search_nodes", {"query": "RUST"})
            out["open"] = await s.call_tool("open_nodes", {"names": ["Acme"]})
            out["del_obs"] = await s.call_tool("delete_observations", {"deletions": [
                {"entityName": "Alice", "observations": ["likes tea"]}]})
            out["del_rel"] = await s.call_tool("delete_relations", {"relations": [works]})
            out["del_ent"] = await s.call_tool("delete_entities", {"entityNames": ["Acme"]})
            out["read"] = await s.call_tool("read_graph", {})
        return out

    out = run(main)
    assert out["create"].structured_content == {"entities": [alice, acme]}
    assert text_of(out["create"]).startswith("[")  # the JSON array, like the reference
    assert out["create_again"].structured_content == {"entities": []}
    assert out["relate"].structured_content == {"relations": [works]}
    ghost = {"from": "Alice", "to": "Ghost", "relationType": "knows"}
    assert out["relate_missing"].structured_content == {"relations": [ghost]}  # accepted, as by the reference
    assert out["observe"].structured_content == {"results": [{"entityName": "Alice", "addedObservations": ["codes in Rust"]}]}
    assert out["observe_missing"].is_error and "Entity with name Ghost not found" in text_of(out["observe_missing"])
    assert out["search"].structured_content == {
        "entities": [{"name": "Alice", "entityType": "person", "observations": ["likes tea", "codes in Rust"]}],
        "relations": [works, ghost]}
    assert out["open"].structured_content == {"entities": [acme], "relations": [works]}
    assert text_of(out["del_obs"]) == "Observations deleted successfully"
    assert out["del_obs"].structured_content == {"success": True, "message": "Observations deleted successfully"}
    assert text_of(out["del_rel"]) == "Relations deleted successfully"
    assert text_of(out["del_ent"]) == "Entities deleted successfully"
    assert out["read"].structured_content == {
        "entities": [{"name": "Alice", "entityType": "person", "observations": ["codes in Rust"]}], "relations": [ghost]}


def test_a_thousand_sequential_calls_keep_memory_steady(project):
    """1,000 calls on one server process; its RSS at call 1,000 is within 20 MB of call 100."""
    async def main():
        rss = {}
        async with mcp_session(project) as s:
            me = psutil.Process()
            server = next(p for p in me.children(recursive=True) if "mcp" in p.cmdline())
            for i in range(1, 1001):
                kind = i % 4
                if kind == 0:
                    r = await s.call_tool("memory-add-node", {"type": "concept", "label": f"Concept{i % 50}",
                                                              "content": f"note {i}"})
                elif kind == 1:
                    r = await s.call_tool("search_nodes", {"query": f"concept{i % 50}"})
                elif kind == 2:
                    r = await s.call_tool("memory-add-node", {"type": "concept"})  # an error result
                else:
                    r = await s.call_tool("open_nodes", {"names": [f"Concept{i % 50}"]})
                assert r.is_error == (kind == 2)
                if i in (100, 1000):
                    rss[i] = server.memory_info().rss
        return rss

    rss = run(main)
    growth_mb = (rss[1000] - rss[100]) / 2**20
    assert growth_mb < 20, f"server RSS grew {growth_mb:.1f} MB between call 100 and call 1000"


# -- tools/list_changed ----------------------------------------------------------------------
class EmptyArgs(ArgModel):
    pass


class GrowingPlugin:
    """A test plugin whose ``@make-command name=x`` registers a new command ``x``."""

    def __init__(self):
        self.extra: list[str] = []

    @hookimpl
    def register_commands(self, register):
        plugin = self

        class MakeArgs(ArgModel):
            name: str

        def make(args, ctx):
            plugin.extra.append(args.name)
            return CommandResult(text=f"made {args.name}", data={"made": args.name, "where": Path("/tmp")})

        def boom(args, ctx):
            raise RuntimeError("a bug in a plugin")

        register(Command("make-command", MakeArgs, make, "Register a new command (test)."))
        register(Command("boom", EmptyArgs, boom, "Always fails (test)."))
        for extra in self.extra:
            class EchoArgs(ArgModel):
                text: str = ""

            register(Command(extra, EchoArgs, lambda a, c: CommandResult(text=a.text), "Echo (generated)."))


def test_new_commands_are_announced_with_tools_list_changed(workspace):
    from mcp import Client

    from opensage.host import Host
    from opensage.mcp_server import build_server

    plugin = GrowingPlugin()
    host = Host(workspace, plugins=[plugin])
    notices = []

    changed = []  # an anyio.Event made inside the loop, set when the server announces a changed tool list

    async def on_message(message):
        method = getattr(getattr(message, "root", message), "method", None) or getattr(message, "method", None)
        if method:
            notices.append(method)
            if method == "notifications/tools/list_changed" and changed:
                changed[0].set()

    async def main():
        changed.append(anyio.Event())
        async with Client(build_server(host), mode="legacy", message_handler=on_message) as client:
            before = {t.name for t in (await client.list_tools()).tools}
            await client.call_tool("memory-add-node", {"type": "concept", "label": "Quiet"})
            quiet = list(notices)
            made = await client.call_tool("make-command", {"name": "echo-it"})
            with anyio.move_on_after(30):  # wait for the notice itself; the asserts below say if it never came
                await changed[0].wait()
            after = {t.name for t in (await client.list_tools()).tools}
            echoed = await client.call_tool("echo-it", {"text": "hello"})
            boom = await client.call_tool("boom", {})
            alive = await client.call_tool("echo-it", {"text": "still here"})
            return before, quiet, made, after, echoed, boom, alive

    try:
        before, quiet, made, after, echoed, boom, alive = anyio.run(main)
    finally:
        host.close()
    assert "echo-it" not in before
    assert "notifications/tools/list_changed" not in quiet
    assert not made.is_error
    assert "notifications/tools/list_changed" in notices
    assert "echo-it" in after
    assert text_of(echoed) == "hello"
    assert made.meta["opensage/data"] == {"made": "echo-it", "where": "/tmp"}  # non-JSON data as text
    assert boom.is_error and "internal error in boom: RuntimeError: a bug in a plugin" in text_of(boom)
    assert text_of(alive) == "still here"


def test_a_generated_tool_stored_meanwhile_is_announced_and_listed_with_its_schema(project):
    """A tool stored by @generate-tool (here: written by another process through the
    dynamic-tools store) becomes a command; the server notices after the next call."""
    from opensage.plugins.dynamic_tools import store
    from opensage.store import Workspace
    from opensage.types import ToolExample, ToolSpec

    spec = ToolSpec(
        name="word-count", description="Count the words of a text.", language="python",
        parameters={"type": "object", "properties": {"text": {"type": "string", "description": "the text"}},
                    "required": ["text"]},
        code="import json,sys\nd=json.load(sys.stdin)\nprint(json.dumps({'result': len(d['arguments']['text'].split())}))\n",
        examples=[ToolExample(arguments={"text": "a b c"}, expected=3)],
    )
    notices = []

    changed = []  # an anyio.Event made inside the loop, set when the server announces a changed tool list

    async def on_message(message):
        method = getattr(getattr(message, "root", message), "method", None) or getattr(message, "method", None)
        if method:
            notices.append(method)
            if method == "notifications/tools/list_changed" and changed:
                changed[0].set()

    async def main():
        changed.append(anyio.Event())
        params = StdioServerParameters(command=sys.executable,
                                       args=["-m", "opensage", "--workspace", str(project), "mcp"])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, message_handler=on_message) as s:
                await s.initialize()
                before = {t.name for t in (await s.list_tools()).tools}
                store.save(Workspace(project), spec, checked=[])
                await s.call_tool("read_graph", {})
                with anyio.move_on_after(30):  # wait for the notice itself; the asserts below say if it never came
                    await changed[0].wait()
                tools = {t.name: t for t in (await s.list_tools()).tools}
                return before, tools

    before, tools = run(main)
    assert "word-count" not in before
    assert "notifications/tools/list_changed" in notices
    assert tools["word-count"].input_schema["properties"]["text"]["type"] == "string"
    assert tools["word-count"].input_schema["required"] == ["text"]
