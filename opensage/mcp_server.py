"""``opensage mcp``: every ``@``-command as an MCP tool, over stdio (the ``mcp`` SDK).

* Each registered command is a tool named like the command (``memory-add-node``);
  its input schema is the command's pydantic model
  (``Command.args.model_json_schema(by_alias=True)``), never hand-written; its result
  is the command's text plus its data as structured content.
* The nine tools of the MCP reference memory server (``create_entities`` ...
  ``open_nodes``, see :mod:`opensage.memory_compat`) work over the same graph.
* Bad arguments give an error result (``isError: true``) whose text names the field;
  a failing command never stops the server.
* After each call the command set is compared with the previous one; when a call
  added or removed commands (``@generate-tool``), the server sends
  ``notifications/tools/list_changed``.

Calls run one at a time in a worker thread, so a slow command does not block the
protocol loop (pings, cancellation).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import NotificationOptions, Server

from opensage.errors import OpenSageError

__all__ = ["build_server", "serve_stdio", "tool_list", "call_tool"]

log = logging.getLogger("opensage.mcp")

SERVER_NAME = "opensage"
INSTRUCTIONS = (
    "OpenSage: graph memory, generated agents and generated tools for this project. "
    "memory-add-node / memory-add-edge store knowledge; memory-query retrieves it. "
    "create_entities ... open_nodes are compatible with the reference MCP memory server."
)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The pydantic schema, made acceptable to every MCP client: an object with properties."""
    schema = dict(schema)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


def tool_list(host) -> list[types.Tool]:
    """The MCP tools for ``host``: its commands, then the reference memory tools."""
    from opensage.memory_compat import COMPAT_TOOLS

    tools = []
    for command in host.commands.values():
        description = command.summary
        if command.uses_llm:
            description += " (calls the configured model)"
        tools.append(types.Tool(
            name=command.name,
            description=description,
            input_schema=_clean_schema(command.args.model_json_schema(by_alias=True)),
        ))
    for tool in COMPAT_TOOLS.values():
        if tool.name in host.commands:  # a plugin command wins; never list a name twice
            continue
        tools.append(types.Tool(name=tool.name, description=tool.description,
                                input_schema=_clean_schema(tool.input_schema())))
    return tools


def _structured(data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    if isinstance(data, dict):
        return data
    return {"result": data}


def call_tool(host, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
    """Run one tool call synchronously; every failure becomes an error result."""
    from opensage.memory_compat import COMPAT_TOOLS, compat_for

    try:
        if name in host.commands or name.lstrip("@") in host.commands or name not in COMPAT_TOOLS:
            result = host.run(name, dict(arguments or {}))
            text, data = result.text, result.data
        else:
            text, data = COMPAT_TOOLS[name].run(compat_for(host), arguments)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=_structured(data),
        )
    except OpenSageError as exc:
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"Error: {exc}")], is_error=True)
    except Exception as exc:  # a bug in a command must not take the server down
        log.exception("tool %s failed", name)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"Error: internal error in {name}: {type(exc).__name__}: {exc}")],
            is_error=True,
        )


def build_server(host) -> Server:
    """The low-level MCP server bound to ``host``."""
    lock = anyio.Lock()

    def names() -> tuple[str, ...]:
        host.refresh_commands()
        return tuple(host.commands)

    async def on_list_tools(ctx, params) -> types.ListToolsResult:
        async with lock:
            tools = await anyio.to_thread.run_sync(lambda: tool_list(host))
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        async with lock:
            before = await anyio.to_thread.run_sync(lambda: tuple(host.commands))
            result = await anyio.to_thread.run_sync(lambda: call_tool(host, params.name, params.arguments))
            after = await anyio.to_thread.run_sync(names)
        if set(before) != set(after):
            try:
                await ctx.session.send_tool_list_changed()
            except Exception as exc:  # the client may not take notifications; the call still succeeded
                log.debug("tools/list_changed not sent: %s", exc)
        return result

    return Server(
        SERVER_NAME,
        version=_version(),
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("opensage")
    except Exception:
        return "0"


async def _serve(host) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(host)
    options = server.create_initialization_options(NotificationOptions(tools_changed=True))
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, options)


def serve_stdio(host) -> None:
    """Serve MCP over stdin/stdout until the client closes the pipe."""
    logging.getLogger("mcp").setLevel(logging.WARNING)
    try:
        anyio.run(_serve, host)
    except KeyboardInterrupt:  # pragma: no cover
        pass
    finally:
        host.close()
        sys.stdout.flush()
