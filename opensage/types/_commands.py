from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from opensage.store import Workspace

COMMAND_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class ArgModel(BaseModel):
    """Base for every command's argument model.

    Fields are declared in snake_case and exposed in camelCase (``max_results`` is
    ``maxResults`` on the command line, in MCP schemas and in docs, as in the seed);
    both spellings are accepted. Unknown arguments are rejected.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=False,
        defer_build=True,  # build validators on first use: start-up stays fast with many commands
    )


@dataclass
class CommandResult:
    """What a command returns.

    :param text: human-readable output (printed by the CLI, sent to models).
    :param data: the same result as JSON-able structured data (``--json``, MCP
        structured content).
    :param success: False when the command ran but what it ran failed (e.g. an agent
        chain stopped at a step): the CLI prints the result and exits 1, MCP marks the
        result ``isError``.
    """

    text: str
    data: Any = None
    success: bool = True


@dataclass
class CommandContext:
    """Everything a command handler may use: the host, the workspace and the session.

    :param agent: the name of the agent calling, when a tool is called from an agent run
        (``""`` otherwise); graph memory's ``memory_add`` tool records it as the source.
    """

    # an opensage.host.Host and its Session; not imported even for type checkers: types sits
    # below host in the import graph (host imports types), so naming them here is a circle
    host: Any
    session: Any = None
    agent: str = ""

    @property
    def workspace(self) -> "Workspace":
        """The host's workspace (the project the command runs in)."""
        return self.host.workspace


@dataclass(frozen=True)
class Command:
    """One ``@``-command.

    :param name: the name without ``@`` (kebab-case, e.g. ``memory-query``).
    :param args: the pydantic model (subclass of :class:`ArgModel`) of its arguments.
    :param handler: ``handler(args, ctx) -> CommandResult``; raise
        :class:`opensage.errors.UsageError` for bad input *before* writing anything.
    :param summary: one line for ``opensage commands``, docs and MCP.
    :param uses_llm: the command calls a model (may spend money; the REPL asks first).
    :param plugin: set by the host to the registering plugin's name.
    """

    name: str
    args: type[ArgModel]
    handler: Callable[[Any, CommandContext], CommandResult]
    summary: str
    uses_llm: bool = False
    plugin: str = ""

    def __post_init__(self) -> None:
        if not COMMAND_NAME.match(self.name):
            raise ValueError(f"command name {self.name!r} must be kebab-case, e.g. 'memory-query'")
        if not (isinstance(self.args, type) and issubclass(self.args, ArgModel)):
            raise TypeError(f"command {self.name!r}: args must subclass opensage.types.ArgModel")


@dataclass(frozen=True)
class Tool:
    """A tool an agent may call (built-in or generated).

    :param name: identifier as the model sees it (``[a-zA-Z0-9_-]{1,64}``).
    :param description: what it does, for the model.
    :param parameters: JSON Schema (object) of its arguments.
    :param run: ``run(arguments: dict, ctx: CommandContext) -> str`` — the text the model
        reads back. Raise :class:`opensage.errors.OpenSageError` to report a failure.
    :param plugin: set by the host to the registering plugin's name.
    """

    name: str
    description: str
    parameters: dict
    run: Callable[[dict, CommandContext], str]
    plugin: str = ""
    meta: dict = field(default_factory=dict, hash=False, compare=False)
