"""The ``agent-registry`` plugin: every agent run, and which agent suits a task.

Python API: :class:`opensage.plugins.agent_registry.registry.AgentRegistry`
(``record``, ``recommend_agent``, ``rank``, ``get_task_history``, ``stats``) and
:func:`~opensage.plugins.agent_registry.registry.classify_task`.
Command: @agent-stats.
"""

from __future__ import annotations

from opensage.hookspecs import hookimpl
from opensage.plugins.agent_registry import cmd_registry

#: Modules that each define ``COMMANDS`` (a list of :class:`opensage.types.Command`).
COMMAND_MODULES = [cmd_registry]


@hookimpl
def register_commands(register):
    """hookimpl: the registry's ``@``-commands (``@agent-stats`` ...)."""
    for module in COMMAND_MODULES:
        for command in module.COMMANDS:
            register(command)
