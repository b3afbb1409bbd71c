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

    When the team store is unreachable the event is queued locally and delivered, in
    order, by a later hook (:mod:`opensage.hook_queue`); the answer then has ``"queued"``
    (a one-line note for the host) and no ``"context"``.

    :returns: ``{"ok": true, "session_id", "hook"}`` plus ``"context"`` (the text to keep)
        for ``compact``. When a plugin raised in the hook (the others still ran), ``"ok"``
        is false and ``"errors"`` lists ``{"plugin", "hook", "error"}``.
    :raises UsageError: unknown event, no session id, or an invalid event body.
    """
    from opensage.host import event_from_json  # the host is heavy; `opensage --help` must not load it
    from opensage.hook_queue import recorder

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
    rec = recorder(host)
    queued_before = rec.queued + rec.dropped
    session = rec.session(sid, src)  # delivers the queue first when it holds events
    host.last_failures = []
    out: dict[str, Any] = {"ok": True, "session_id": sid, "hook": event}
    if event == "session-start":
        rec.start(session)
    elif event == "session-end":
        rec.end(session)
    elif event == "compact":
        if rec.compact(session):
            context = rec.ask(lambda: host.compaction_context(session))
            if context:
                out["context"] = context
    else:
        rec.record(session, event_obj)
    if rec.queued + rec.dropped > queued_before:
        out["queued"] = rec.note
    if host.last_failures:
        out["ok"] = False
        out["errors"] = list(host.last_failures)
    return out
