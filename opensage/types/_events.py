from __future__ import annotations

import time
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, model_validator

EventKind = Literal[
    "user_message",
    "assistant_message",
    "tool_call",
    "tool_result",
    "error",
    "file_edit",
    "command",
]
#: The kinds as a tuple (the same list as :data:`EventKind`, written once).
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


class SessionEvent(BaseModel):
    """One thing that happened in a host session (recorded as an *episode*).

    :param kind: one of :data:`EVENT_KINDS`.
    :param text: the message text, tool output or error message.
    :param role: who produced it (``user``, ``assistant``, a speaker name...).
    :param tool: tool name for ``tool_call``/``tool_result``.
    :param args: tool arguments for ``tool_call`` (the JSON object the model sent: e.g.
        ``{"command": "pytest -q"}``, ``{"file_path": "src/a.py", "old_string": ..., "new_string": ...}``,
        ``{"query": "JWT"}``); kept verbatim, its string values are searchable and
        compression reads paths, commands and edited code from it.
    :param call_id: pairs a ``tool_result`` with its ``tool_call`` (Claude Code's
        ``tool_use_id``, OpenCode's ``callID``); stored in ``meta["call_id"]``. Without
        it a result is paired with the latest call of the same tool.
    :param path: file path for ``file_edit`` (relative to the workspace if possible).
    :param timestamp: seconds since the epoch (float); defaults to now.
    :param meta: anything else the host wants kept (JSON object).
    """

    model_config = {"extra": "forbid", "defer_build": True}

    kind: EventKind
    text: str = ""
    role: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    call_id: str | None = None
    path: str | None = None
    timestamp: float = Field(default_factory=time.time)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """Lone UTF-16 surrogates (half an emoji, undecodable bytes) become U+FFFD: the
        episode must be storable as UTF-8 whichever door the event came in by."""
        from opensage.untrusted import scrub

        return scrub(data) if isinstance(data, dict) else data
