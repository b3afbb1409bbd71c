"""The whole host <-> plugin contract.

Every hook is called with keyword arguments; an implementation declares only the
arguments it uses (pluggy), so new arguments can be added without breaking plugins.
The full reference, with exact signatures and examples, is ``docs/plugin-hooks.md``
(a test keeps the two in step).

Call semantics:

* *collect* hooks (``register_commands``, ``register_tools``) receive a ``register``
  callback; the host validates what is registered and remembers which plugin it came
  from. A plugin that raises is logged and skipped.
* *broadcast* hooks (``session_start``, ``session_event``, ``session_compact``,
  ``session_end``, ``agent_run_finished``) are called on every plugin; one that raises is logged and the others
  still run.
* *firstresult* hooks (``route_intent``, ``compaction_context``, ``prompt_context``,
  ``classify_task``, ``recommend_agent``, ``agent_stats``, ``run_topology``, ``remember_run``) stop at the first
  plugin that returns something other than ``None``.

The host calls every hook through ``pm.hook`` and rejects, at start-up, an
implementation whose name matches no hookspec here (``pm.check_pending()``); see
:class:`opensage.host._PluginManager` for how a raising plugin is isolated.
"""

from __future__ import annotations

import pluggy

__all__ = ["hookspec", "hookimpl"]

hookspec = pluggy.HookspecMarker("opensage")
hookimpl = pluggy.HookimplMarker("opensage")


@hookspec
def register_commands(register, host):
    """Add ``@``-commands: call ``register(Command(...))`` once per command (``host``: the Host asking)."""


@hookspec
def register_tools(register, session, host):
    """Add tools that agents may call: ``register(Tool(...))``; asked anew each time (``host``: the Host asking)."""


@hookspec
def session_start(session):
    """A host session began (``session.id``, ``session.source``, ``session.workspace``)."""


@hookspec
def session_event(session, event):
    """One session event (a :class:`opensage.types.SessionEvent`) happened."""


@hookspec
def session_compact(session):
    """The host is about to compact its context: move what matters into lasting memory."""


@hookspec
def session_end(session):
    """A host session ended: final compression and clean-up."""


@hookspec(firstresult=True)
def route_intent(session, text):
    """Route free text to a command: return a :class:`opensage.types.Route` or ``None``."""


@hookspec(firstresult=True)
def compaction_context(session, max_chars):
    """Return text (at most ``max_chars`` characters) the host should keep across compaction."""


@hookspec(firstresult=True)
def prompt_context(session, text, max_chars):
    """Return memory relevant to a prompt the user just sent (at most ``max_chars`` characters), or ``None``."""


@hookspec(firstresult=True)
def classify_task(task):
    """The task type of ``task`` (free text): one of :data:`opensage.types.TASK_TYPES`, or ``None``."""


@hookspec(firstresult=True)
def recommend_agent(host, task, task_type, candidates):
    """The name of the agent (one of ``candidates``, a list of names) to reuse for ``task``, or ``None``."""


@hookspec
def agent_run_finished(host, agent, task_type, result):
    """An agent run finished: ``agent`` (name), ``task_type``, ``result`` (an :class:`opensage.types.AgentResult`)."""


@hookspec(firstresult=True)
def agent_stats(host):
    """Per (agent, task type) run totals as a list of dicts (``name``, ``totalTasks``, ``successCount``,
    ``totalCost`` USD, ``avgLatency`` ms), or ``None`` when no plugin keeps them."""


@hookspec(firstresult=True)
def run_topology(host, topology, task, task_type, subtasks, strategies, merge_strategy, verifier, run_id,
                 session, budget, model, ask_policy, on_event):
    """Run agents on ``task`` as ``topology`` (``single``, ``vertical``, ``horizontal``): return an
    awaitable of the outcome dict (see docs/plugin-hooks.md), or ``None`` when this plugin runs no agents."""


@hookspec(firstresult=True)
def remember_run(host, report):
    """Record a coordinated run (the coordinator's ``RunReport``) in lasting memory: return
    ``{role: node id}`` (``task``, ``plan``, ``outcome``, ``agent:<name>``, ``file:<path>``), or ``None``."""
