"""The ``dynamic-tools`` plugin: the model writes tools, the sandbox checks and runs them.

Commands: @generate-tool, @list-generated-tools, @execute-tool-stateful,
@async-tool-background, @poll-async-job, @cancel-async-job, plus ``@<name>`` for every
tool stored under ``.opencode/generated-tools/``. Agents get the stored tools through
``register_tools``. Every run goes through :mod:`opensage.sandbox`; the protocol and
limits are in ``docs/sandbox.md``.
"""

from __future__ import annotations

import logging

from opensage.hookspecs import hookimpl
from opensage.plugins.dynamic_tools import commands, store

log = logging.getLogger("opensage")


@hookimpl
def register_commands(register, host):
    """hookimpl: the dynamic-tools commands, then one ``@<name>`` command per generated tool
    of ``host``'s workspace (a tool named like a built-in command is skipped with a warning).
    """
    for command in commands.COMMANDS:
        register(command)
    if host is None:
        return
    reserved = {c.name for c in commands.COMMANDS}
    for tool in store.load_all(host.workspace):
        if tool.name in reserved:
            log.warning("generated tool %s shadows a dynamic-tools command; skipped", tool.name)
            continue
        register(commands.tool_command(tool))


@hookimpl
def register_tools(register, session, host):
    """hookimpl: every generated tool of the workspace as an agent tool (none without a host)."""
    if host is None and session is not None:
        host = session.host
    if host is None:
        return
    for tool in store.load_all(host.workspace):
        register(commands.agent_tool(tool))
