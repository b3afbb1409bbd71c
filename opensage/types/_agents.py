from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field, field_validator

AGENT_NAME = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"

#: Built-in tool names an agent may be allowed: file tools, shell, memory, plus generated tools by name.
BUILTIN_TOOLS = ("read", "write", "edit", "list", "search", "shell", "memory_query", "memory_add")

Permission = Literal["allow", "ask", "deny"]

#: Kinds of task the registry learns separately (the coordinator's analysis picks one;
#: ``opensage.plugins.agent_registry.registry.classify_task`` is the model-free fallback).
TASK_TYPES = ("implement", "fix", "test", "refactor", "document", "analyze", "research")

#: How a horizontal ensemble picks its result (the agents plugin implements them; the
#: coordinator validates a requested one before any model call).
MERGE_STRATEGIES = ("majority_vote", "llm_judge", "best_score")

#: Agent name shown for a step or member whose agent could not be generated.
NO_AGENT = "(no agent)"


class AgentSpec(BaseModel):
    """A generated agent, as the model writes it and the hosts load it.

    :param name: kebab-case, at most 64 characters (also the file name).
    :param mode: ``subagent`` (called by another agent), ``primary`` (the user talks to it)
        or ``all`` (either), as OpenCode defines them.
    :param prompt: the system prompt (the body of the agent file).
    :param tools: tool name -> permission (``allow``/``ask``/``deny``); tools not listed
        are denied to generated agents run standalone. Generated tools are named as registered.
    :param model: litellm model string, or None for the configured default.
    :param temperature: sampling temperature in [0, 2], or None for the model's default.
    :param steps: the most tool-calling steps one run may take.
    :param task: the task this agent was generated for.
    :param version: 1 for a new agent; regenerating an existing name writes version n+1.
    """

    name: str = Field(pattern=AGENT_NAME, max_length=64)
    description: str = Field(min_length=1, max_length=1024)
    mode: Literal["primary", "subagent", "all"] = "subagent"
    prompt: str = Field(min_length=1)
    tools: dict[str, Permission] = Field(default_factory=lambda: {t: "allow" for t in ("read", "list", "search")})
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    steps: int = Field(default=20, ge=1, le=500)
    task: str = ""
    specialization: str = ""
    version: int = Field(default=1, ge=1)
    created_at: float = Field(default_factory=time.time)

    model_config = {"defer_build": True}

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, v):
        return v.strip().lower() if isinstance(v, str) else v


class AgentResult(BaseModel):
    """What one agent run produced.

    :param output: the agent's final answer (text).
    :param files_changed: workspace-relative paths written or edited.
    :param tokens: prompt + completion tokens over the run.
    :param cost_usd: from litellm's price map (0.0 when unknown).
    :param latency_ms: wall time of the run in milliseconds.
    :param steps: model calls made.
    :param error: why it failed, when ``success`` is False.
    """

    agent: str
    task: str = ""
    output: str = ""
    success: bool = False
    files_changed: list[str] = Field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    steps: int = 0
    error: str | None = None

    model_config = {"defer_build": True}
