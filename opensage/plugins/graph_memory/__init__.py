"""The ``graph-memory`` plugin: a knowledge graph of code, concepts, decisions and session history.

Commands: @memory-add-node, @memory-add-edge, @memory-query, @memory-compress-session,
@memory-visualize, @memory-ingest. Session hooks record every event as an episode and
compress sessions into lasting nodes.
"""

from __future__ import annotations

from opensage.hookspecs import hookimpl
from opensage.plugins.graph_memory import cmd_nodes

#: Modules that each define ``COMMANDS`` (a list of :class:`opensage.types.Command`).
COMMAND_MODULES = [cmd_nodes]


@hookimpl
def register_commands(register):
    for module in COMMAND_MODULES:
        for command in module.COMMANDS:
            register(command)
