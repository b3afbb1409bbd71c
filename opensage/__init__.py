"""OpenSage for coding assistants: generated agents, generated tools and graph memory.

After *OpenSage: Self-programming Agent Generation Engine* (arXiv 2602.16891).
"""

from opensage.errors import ModelError, NotFoundError, OpenSageError, UsageError
from opensage.hookspecs import hookimpl
from opensage.types import ArgModel, Command, CommandContext, CommandResult, Route, SessionEvent, Tool

__all__ = [
    "hookimpl",
    "ArgModel",
    "Command",
    "CommandContext",
    "CommandResult",
    "Route",
    "SessionEvent",
    "Tool",
    "OpenSageError",
    "UsageError",
    "NotFoundError",
    "ModelError",
]

__version__ = "0.1.0"
