"""Models shared across the host/plugin boundary (pydantic and frozen dataclasses)."""

from opensage.types._agents import BUILTIN_TOOLS, MERGE_STRATEGIES, NO_AGENT, TASK_TYPES, AgentResult, AgentSpec
from opensage.types._commands import ArgModel, Command, CommandContext, CommandResult, Tool
from opensage.types._events import EVENT_KINDS, SessionEvent
from opensage.types._routes import Route
from opensage.types._tools import TOOL_FILES, ToolDraft, ToolExample, ToolLanguage, ToolSpec

__all__ = [
    "AgentSpec",
    "AgentResult",
    "BUILTIN_TOOLS",
    "TASK_TYPES",
    "MERGE_STRATEGIES",
    "NO_AGENT",
    "ArgModel",
    "Command",
    "CommandContext",
    "CommandResult",
    "Tool",
    "SessionEvent",
    "EVENT_KINDS",
    "Route",
    "ToolSpec",
    "ToolDraft",
    "ToolExample",
    "ToolLanguage",
    "TOOL_FILES",
]
