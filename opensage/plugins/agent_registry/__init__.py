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


@hookimpl
def classify_task(task):
    """The model-free task type of ``task`` (:func:`registry.classify_task`)."""
    from opensage.plugins.agent_registry.registry import classify_task as classify

    return classify(task)


@hookimpl
def recommend_agent(host, task, task_type, candidates):
    """:meth:`registry.AgentRegistry.recommend_agent` over ``candidates`` (None: generate an agent)."""
    from opensage.plugins.agent_registry.registry import AgentRegistry

    return AgentRegistry(host.workspace).recommend_agent(task, task_type, candidates=candidates)


@hookimpl
def agent_run_finished(host, agent, task_type, result):
    """Record one agent run: success, cost USD, latency ms, tokens, steps and files changed."""
    from opensage.plugins.agent_registry.registry import AgentRegistry

    context = {"steps": result.steps, "filesChanged": result.files_changed}
    if result.error:
        context["error"] = result.error
    AgentRegistry(host.workspace).record(
        agent=agent, task_type=task_type, success=result.success, cost_usd=result.cost_usd,
        latency_ms=result.latency_ms, tokens=result.tokens, task=result.task, context=context,
    )


@hookimpl
def agent_stats(host):
    """:meth:`registry.AgentRegistry.stats` of every agent and task type."""
    from opensage.plugins.agent_registry.registry import AgentRegistry

    return AgentRegistry(host.workspace).stats()
