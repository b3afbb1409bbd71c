"""A scripted "brain" for topology and coordinator tests: answers each model request from its content.

Requests are told apart by their system prompt (agent generation, task analysis,
decomposition, strategies, judge) or by carrying tools (an agent's tool loop). The
agent part is a callable ``act(task_text, tool_results) -> answer`` so parallel ensemble
members can be answered independently of the order their requests arrive in.
"""

from __future__ import annotations

import json
from typing import Any, Callable

ALL_TOOLS = {t: "allow" for t in ("read", "write", "edit", "list", "search", "shell")}


def call(name: str, **arguments: Any) -> dict:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def system_of(messages: list[dict]) -> str:
    return messages[0]["content"] if messages and messages[0].get("role") == "system" else ""


def user_of(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m.get("role") == "user"), "")


def tool_results(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m.get("role") == "tool"]


def draft(name: str, tools: dict | None = None, steps: int = 12) -> str:
    return json.dumps({
        "name": name,
        "description": f"Agent {name}: does one focused coding job and reports what it changed.",
        "prompt": f"You are {name}. Read the relevant files first, make the smallest correct change, "
                  "run the tests, and report which files you changed.",
        "tools": tools or ALL_TOOLS,
        "steps": steps,
    })


class Brain:
    """Callable for ``scripted.default``; records which kinds of request it saw in ``seen``."""

    def __init__(
        self,
        act: Callable[[str, list[str]], Any],
        *,
        name_for: Callable[[str], str] = lambda task: "task-worker",
        analysis: dict | None = None,
        subtasks: list[list[str]] | None = None,
        judge: dict | None = None,
        strategies: list[str] | None = None,
    ) -> None:
        self.act = act
        self.name_for = name_for
        self.analysis = analysis
        self.subtasks = list(subtasks or [])
        self.judge = judge
        self.strategies = strategies
        self.seen: list[str] = []
        self.judge_prompts: list[str] = []
        self.agent_tasks: list[str] = []

    def __call__(self, messages: list[dict], tools: Any) -> Any:
        system, user = system_of(messages), user_of(messages)
        if tools:
            self.seen.append("agent")
            if not tool_results(messages):
                self.agent_tasks.append(user)
            return self.act(user, tool_results(messages))
        if system.startswith("You design one specialised coding agent"):
            self.seen.append("generate")
            return draft(self.name_for(user.split("Agents that exist already")[0]))
        if system.startswith("You are the coordinator"):
            self.seen.append("analysis")
            return json.dumps(self.analysis)
        if system.startswith("You plan work"):
            self.seen.append("decompose")
            return json.dumps({"subtasks": self.subtasks.pop(0), "reason": "split by concern"})
        if system.startswith("You propose genuinely different approaches"):
            self.seen.append("strategies")
            return json.dumps({"strategies": self.strategies})
        if system.startswith("You are the memory agent"):
            # session compression at the end of `opensage run` (graph-memory plugin)
            self.seen.append("memory")
            return json.dumps({"items": [], "relations": []})
        if system.startswith("You are the judge"):
            self.seen.append("judge")
            self.judge_prompts.append(user)
            return json.dumps(self.judge)
        raise AssertionError(f"unexpected model request: {system[:200]!r}")
