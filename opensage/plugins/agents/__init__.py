"""The ``agents`` plugin: agents the model writes for a task, in each host's own format.

Commands: @generate-agent, @list-generated-agents (this module's :mod:`cmd_agents`),
plus the topology commands other modules add to :data:`COMMAND_MODULES`.
Python API: :func:`opensage.plugins.agents.generate.generate_agent`,
:func:`opensage.plugins.agents.files.load_agent`,
:func:`opensage.plugins.agents.files.list_agents`.
"""

from __future__ import annotations

from opensage.hookspecs import hookimpl
from opensage.plugins.agents import cmd_agents, cmd_topology

#: Modules that each define ``COMMANDS`` (a list of :class:`opensage.types.Command`).
COMMAND_MODULES = [cmd_agents, cmd_topology]


@hookimpl
def register_commands(register):
    """hookimpl: the agents plugin's ``@``-commands (generate, list, topologies)."""
    for module in COMMAND_MODULES:
        for command in module.COMMANDS:
            register(command)


@hookimpl
def run_topology(host, topology, task, task_type, subtasks, strategies, merge_strategy, verifier, run_id,
                 session, budget, model, ask_policy, on_event):
    """The coroutine :func:`topology.run_plan` (an agent, a vertical chain or a horizontal ensemble)."""
    from opensage.plugins.agents.topology import run_plan

    return run_plan(host, topology, task, task_type=task_type, subtasks=subtasks, strategies=strategies,
                    merge_strategy=merge_strategy, verifier=verifier, run_id=run_id, session=session,
                    budget=budget, model=model, ask_policy=ask_policy or "deny", on_event=on_event)
