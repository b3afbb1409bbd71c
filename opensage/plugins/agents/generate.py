"""``generate_agent``: the model writes an agent spec; we validate it and write the files.

The model answers with an :class:`AgentDraft` (name, description, prompt, tool
permissions, temperature, steps) through :func:`opensage.llm.structured`, which feeds
validation errors back and tries at most ``max_attempts`` times. Everything is checked
before anything is written; if the model never produces a valid draft, nothing is.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opensage.errors import ModelError, UsageError
from opensage.types import BUILTIN_TOOLS, AgentSpec
from opensage.types._agents import AGENT_NAME, Permission

if TYPE_CHECKING:
    from opensage.host import Host, Session
    from opensage.plugins.agents import files

__all__ = ["AgentDraft", "generate_agent", "generate_agent_files", "available_tools", "claude_enabled", "MODES", "TOOL_HELP"]

MODES = ("primary", "subagent", "all")

#: What each built-in tool does, as the model is told when it chooses permissions.
TOOL_HELP: dict[str, str] = {
    "read": "read a file of the project",
    "write": "create or overwrite a file",
    "edit": "replace text in a file",
    "list": "list files matching a glob",
    "search": "search file contents (grep)",
    "shell": "run a shell command (sandboxed when run by opensage)",
    "memory_query": "query the project's graph memory",
    "memory_add": "add nodes and edges to graph memory",
    "webfetch": "fetch a web page (host only: OpenCode / Claude Code)",
}

#: Longest generated agent prompt, in characters (~5,000 tokens). A model can answer with
#: megabytes; every run of the agent sends its prompt again, so it is bounded here.
MAX_PROMPT_CHARS = 20_000

#: Tools a host offers beyond :data:`BUILTIN_TOOLS` (granted in the host's file only).
HOST_TOOLS = ("webfetch",)


class AgentDraft(BaseModel):
    """The spec the model writes (the rest of :class:`AgentSpec` comes from the request)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=AGENT_NAME, max_length=64,
                      description="kebab-case name, at most 64 characters, e.g. 'sql-migration-reviewer'")
    description: str = Field(min_length=10, max_length=1024,
                             description="one or two sentences: what the agent does and when to call it")
    prompt: str = Field(min_length=40, max_length=MAX_PROMPT_CHARS,
                        description="the agent's system prompt: role, method, constraints, what to report when done; "
                                    f"at most {MAX_PROMPT_CHARS} characters")
    tools: dict[str, Permission] = Field(
        description="tool name -> 'allow' | 'ask' | 'deny'; grant only what the task needs (others are denied)")
    temperature: float | None = Field(None, ge=0.0, le=1.0, description="sampling temperature, or null for the default")
    steps: int = Field(20, ge=1, le=100, description="most tool-calling steps one run may take")

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, v):
        return v.strip().lower() if isinstance(v, str) else v


def _draft_model(allowed: tuple[str, ...]) -> type[AgentDraft]:
    """:class:`AgentDraft` whose ``tools`` keys must be among ``allowed``."""
    allowed_set = frozenset(allowed)

    class Draft(AgentDraft):
        @field_validator("tools")
        @classmethod
        def _known_tools(cls, v: dict[str, str]) -> dict[str, str]:
            unknown = sorted(set(v) - allowed_set)
            if unknown:
                raise ValueError(f"unknown tool(s) {unknown}; use only: {', '.join(allowed)}")
            if not any(level != "deny" for level in v.values()):
                raise ValueError("grant at least one tool ('allow' or 'ask'), e.g. {\"read\": \"allow\"}")
            return v

    Draft.__name__ = Draft.__qualname__ = "AgentDraft"
    return Draft


def available_tools(host: "Host", session: "Session | None" = None) -> tuple[str, ...]:
    """Tool names an agent may be granted: built-ins, host tools, and every registered tool."""
    names = list(BUILTIN_TOOLS) + [t for t in HOST_TOOLS if t not in BUILTIN_TOOLS]
    try:
        registered = host.tools(session)
    except Exception:  # a broken plugin must not stop agent generation; host.tools logs it
        registered = {}
    names.extend(n for n in sorted(registered) if n not in names)
    return tuple(names)


def claude_enabled(value: bool | None = None) -> bool:
    """Whether to also write Claude Code agents: ``value`` if given, else ``$OPENSAGE_CLAUDE_AGENTS``
    (``1``/``true``/``yes``)."""
    if value is not None:
        return value
    return os.environ.get("OPENSAGE_CLAUDE_AGENTS", "").strip().lower() in ("1", "true", "yes", "on")


def _messages(task: str, mode: str, specialization: str, tools: Iterable[str], registered_help: dict[str, str],
              existing: list[AgentSpec]) -> list[dict]:
    tool_lines = "\n".join(f"- {t}: {TOOL_HELP.get(t) or registered_help.get(t, 'a generated tool')}" for t in tools)
    others = "\n".join(f"- {a.name}: {a.description}" for a in existing[:30]) or "(none yet)"
    system = (
        "You design one specialised coding agent for an AI coding assistant (OpenCode / Claude Code). "
        f"It will run as a {mode} agent"
        + (" (called by another agent with a self-contained task; it must report its result in its final answer)."
           if mode == "subagent" else ".")
        + "\nWrite its spec: a kebab-case name that says what it does, a description the host uses to pick it, "
        "a focused system prompt (role, step-by-step method, constraints, definition of done, what to report), "
        "and the tool permissions it needs. Grant the fewest tools the task needs; use 'ask' for tools that "
        "change files or run commands when the task is risky.\nTools:\n" + tool_lines
    )
    user = f"Task the agent is for:\n{task}"
    if specialization:
        user += f"\n\nSpecialization: {specialization}"
    user += f"\n\nAgents that exist already (reuse a name only to improve that same agent):\n{others}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def generate_agent(
    host: "Host",
    task: str,
    mode: str = "subagent",
    specialization: str = "",
    *,
    name: str | None = None,
    model: str | None = None,
    claude: bool | None = None,
    session: "Session | None" = None,
    max_attempts: int = 3,
) -> AgentSpec:
    """Have the model write an agent for ``task``, validate it, and write it for the hosts.

    :param task: what the agent is for (non-empty).
    :param mode: ``subagent`` | ``primary`` | ``all`` (OpenCode's agent modes).
    :param specialization: an optional focus (e.g. "PostgreSQL migrations").
    :param name: force this name instead of the model's (kebab-case, ≤ 64).
    :param model: the model the agent runs on, a ``provider/model`` string written into the
        host files (None: the host's default); it is not the model that writes the spec.
    :param claude: also write ``.claude/agents/<name>.md`` (None: ``$OPENSAGE_CLAUDE_AGENTS``).
    :param max_attempts: model answers tried before giving up (validation errors are fed back).
    :returns: the stored spec (``version`` > 1 when the name existed; the old one is kept).
    :raises UsageError: bad arguments (before any model call; nothing written).
    :raises ModelNotConfigured: no model configured.
    :raises ModelError: the model gave no valid spec in ``max_attempts`` tries (nothing written).
    """
    return generate_agent_files(host, task, mode, specialization, name=name, model=model, claude=claude,
                                session=session, max_attempts=max_attempts).spec


def generate_agent_files(
    host: "Host",
    task: str,
    mode: str = "subagent",
    specialization: str = "",
    *,
    name: str | None = None,
    model: str | None = None,
    claude: bool | None = None,
    session: "Session | None" = None,
    max_attempts: int = 3,
) -> "files.WrittenAgent":
    """:func:`generate_agent`, returning the written paths as well (same arguments and errors)."""
    from opensage.plugins.agents import files

    if not isinstance(task, str) or not task.strip():
        raise UsageError("task must describe what the agent is for, e.g. task=\"review SQL migrations for locking\".")
    if mode not in MODES:
        raise UsageError(f"mode {mode!r} is not one of {', '.join(MODES)}.")
    if name is not None:
        name = name.strip().lower()
        if not re.match(AGENT_NAME, name) or len(name) > 64:
            raise UsageError(f"name {name!r} is not kebab-case (lowercase words joined by '-', at most 64 "
                             "characters), e.g. name=sql-reviewer.")
        if not files.is_generated(host.workspace, name) and files.opencode_path(host.workspace, name).exists():
            raise UsageError(f"an agent named {name!r} exists and was not generated by opensage; "
                             f"choose another name (e.g. {files.free_name(host.workspace, name)!r}).")
    write_claude = claude_enabled(claude)

    tools = available_tools(host, session)
    try:
        registered_help = {t.name: t.description for t in host.tools(session).values()}
    except Exception:
        registered_help = {}
    messages = _messages(task.strip(), mode, specialization.strip(), tools, registered_help,
                         files.list_agents(host.workspace))

    from opensage import llm

    try:
        answer = llm.structured(messages, _draft_model(tools), max_attempts=max_attempts)
    except llm.ModelUnavailable as exc:  # the provider failed (429, timeout, 5xx): not the model's output
        raise type(exc)(f"could not generate an agent: {exc} Nothing was written.") from exc
    except ModelError as exc:
        raise ModelError(f"could not generate an agent: {exc}. Nothing was written; try again, "
                         "or use a stronger model (OPENSAGE_MODEL).") from exc
    draft = answer.value
    chosen = name or files.free_name(host.workspace, draft.name)
    spec = AgentSpec(
        name=chosen,
        description=draft.description.strip(),
        mode=mode,
        prompt=draft.prompt.strip(),
        tools=dict(draft.tools),
        model=model,
        temperature=draft.temperature,
        steps=draft.steps,
        task=task.strip(),
        specialization=specialization.strip(),
    )
    return files.write_agent(host.workspace, spec, claude=write_claude)
