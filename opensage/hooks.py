"""The door for host events: ``opensage hook EVENT`` and the OpenCode bridge
(:mod:`opensage.integrations.opencode`) deliver a session event through :func:`fire_hook`,
so an integration never imports the CLI to do it (that was an import circle).

Imports nothing heavy at module level: the CLI imports this for ``opensage --help``.
"""

from __future__ import annotations

from typing import Any

from opensage.errors import UsageError

__all__ = ["HOOK_EVENTS", "fire_hook"]

#: hook name (as typed on the command line) -> the session-event kind it records
#: (``None``: a lifecycle hook, or ``event`` whose body carries its own ``kind``).
HOOK_EVENTS = {
    "session-start": None,
    "session-end": None,
    "compact": None,
    "event": None,
    "user-message": "user_message",
    "assistant-message": "assistant_message",
    "tool-call": "tool_call",
    "tool-result": "tool_result",
    "error": "error",
    "file-edit": "file_edit",
}


def fire_hook(host, event: str, payload: dict[str, Any], session_id: str | None = None,
              source: str | None = None) -> dict[str, Any]:
    """Fire one hook EVENT (a key of :data:`HOOK_EVENTS`) with its JSON ``payload``.

    :returns: ``{"ok": true, "session_id", "hook"}`` plus ``"context"`` (the text to keep)
        for ``compact``. When a plugin raised in the hook (the others still ran), ``"ok"``
        is false and ``"errors"`` lists ``{"plugin", "hook", "error"}``.
    :raises UsageError: unknown event, no session id, or an invalid event body.
    """
    from opensage.host import event_from_json  # the host is heavy; `opensage --help` must not load it

    if event not in HOOK_EVENTS:
        raise UsageError(f"unknown hook event {event!r}: use one of {', '.join(sorted(HOOK_EVENTS))}.")
    payload = dict(payload)
    sid = session_id or payload.pop("session_id", None) or payload.pop("sessionId", None)
    if not sid or not isinstance(sid, str):
        raise UsageError('no session id: give --session-id or "session_id" in the JSON.')
    src = source or payload.pop("source", None) or "hook"
    kind = HOOK_EVENTS[event]
    event_obj = None
    if event == "event" or kind:
        if kind:
            payload["kind"] = kind
        event_obj = event_from_json(payload)
    session = host.session(sid, source=src)
    out: dict[str, Any] = {"ok": True, "session_id": sid, "hook": event}
    if event == "session-start":
        host.start_session(session)
    elif event == "session-end":
        host.end_session(session)
    elif event == "compact":
        host.compact(session)
        context = host.compaction_context(session)
        if context:
            out["context"] = context
    else:
        host.record(session, event_obj)
    if host.last_failures:
        out["ok"] = False
        out["errors"] = list(host.last_failures)
    return out
