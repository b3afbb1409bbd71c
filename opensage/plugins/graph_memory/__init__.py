"""The ``graph-memory`` plugin: a knowledge graph of code, concepts, decisions and session history.

Commands: @memory-add-node, @memory-add-edge, @memory-tag, @memory-supersede,
@memory-forget, @memory-query, @memory-compress-session, @memory-visualize, @memory-ingest. Session hooks record every event as an episode and
compress sessions into lasting nodes.
"""

from __future__ import annotations

from opensage.store import store_exists

from opensage.hookspecs import hookimpl
from opensage.types import Tool
from opensage.plugins.graph_memory import cmd_build, cmd_nodes, cmd_query

#: Modules that each define ``COMMANDS`` (a list of :class:`opensage.types.Command`).
COMMAND_MODULES = [cmd_nodes, cmd_query, cmd_build]


@hookimpl
def register_commands(register):
    """hookimpl: graph memory's ``@memory-*`` commands."""
    for module in COMMAND_MODULES:
        for command in module.COMMANDS:
            register(command)


@hookimpl
def session_event(session, event):
    """Record the event as the session's next episode (verbatim, indexed for @memory-query)."""
    from opensage.plugins.graph_memory.episodes import record_episode
    from opensage.plugins.graph_memory.graph import graph_for

    record_episode(graph_for(session.host).db, session.id, event)


@hookimpl
def session_compact(session):
    """Compress the session's episodes into nodes before the host compacts its context."""
    from opensage.plugins.graph_memory.compress import compress_session

    compress_session(session.host, session.id, use_model="auto")


@hookimpl
def session_end(session):
    """Final compression of the session (rules; plus the model when one is configured), then
    the episode retention policy when due (see :mod:`.upkeep`; at most once a day)."""
    from opensage.plugins.graph_memory.compress import compress_session
    from opensage.plugins.graph_memory.graph import graph_for
    from opensage.plugins.graph_memory.upkeep import run_retention

    compress_session(session.host, session.id, use_model="auto")
    run_retention(graph_for(session.host))


@hookimpl
def compaction_context(session, max_chars):
    """The session's decisions, errors and fixes, open questions and files, at most ``max_chars`` characters."""
    from opensage.plugins.graph_memory.compress import compaction_text
    from opensage.plugins.graph_memory.graph import graph_for

    if not store_exists(session.host.workspace):
        return None
    return compaction_text(graph_for(session.host), session.id, max_chars)


@hookimpl
def prompt_context(session, text, max_chars):
    """Memory for a prompt: past-work chains for "how did we fix / why did we pick" questions
    (see :mod:`.history`), else the graph nodes most similar to the prompt; at most ``max_chars``."""
    from opensage.plugins.graph_memory.compress import prompt_text
    from opensage.plugins.graph_memory.graph import graph_for

    if not store_exists(session.host.workspace):
        return None
    return prompt_text(graph_for(session.host), text, max_chars)


def _memory_query(ctx, query: str, limit: int = 8) -> str:
    """Search graph memory with ``@memory-query`` (similarity mode), at most ``limit`` results (1..200)."""
    return ctx.host.run("memory-query", {"query": query, "max_results": max(1, min(int(limit), 200))}).text


def _memory_add(ctx, type: str, label: str, content: str = "") -> str:
    """Add or update the node (``type``, ``label``); its source is the calling agent."""
    from opensage.plugins.graph_memory.graph import graph_for

    node, created = graph_for(ctx.host).upsert_node(type, label, content, {"source": f"agent:{ctx.agent}"})
    return f"{'added' if created else 'updated'} {node.ref} ({node.type}) {node.label}"


def _object(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required}


#: The agent tools graph memory contributes (names as in :data:`opensage.types.BUILTIN_TOOLS`).
MEMORY_TOOLS = (
    Tool(
        name="memory_query",
        description="Search the project's graph memory (code, decisions, past runs) by keywords.",
        parameters=_object({
            "query": {"type": "string"},
            "limit": {"type": "integer", "default": 8, "minimum": 1, "maximum": 50},
        }, ["query"]),
        run=lambda arguments, ctx: _memory_query(ctx, **arguments),
    ),
    Tool(
        name="memory_add",
        description="Remember a fact in the project's graph memory as a node (same type+label updates it).",
        parameters=_object({
            "type": {"type": "string", "description": "lowercase word: concept, decision, code, answer..."},
            "label": {"type": "string", "description": "short unique name"},
            "content": {"type": "string"},
        }, ["type", "label"]),
        run=lambda arguments, ctx: _memory_add(ctx, **arguments),
    ),
)


@hookimpl
def register_tools(register):
    """The agent tools ``memory_query`` and ``memory_add`` (an agent gets them only when granted by name)."""
    for tool in MEMORY_TOOLS:
        register(tool)


@hookimpl
def remember_run(host, report):
    """The run's task, plan, agent, outcome and file nodes and their edges (:func:`runs.remember_run`)."""
    from opensage.plugins.graph_memory.runs import remember_run as remember

    return remember(host, report)
