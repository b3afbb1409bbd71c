"""Hooks never lose an event when the team store is down: a local spool, delivered later.

With the team store (PostgreSQL, ``OPENSAGE_DATABASE_URL``; docs/team.md) a host's hook
can find the server unreachable (:class:`opensage.errors.StoreUnavailable`). The hook
paths (``opensage hook EVENT``, the OpenCode bridge, ``opensage hook --from claude``,
``opensage-hook`` and its hook server) do every store operation of a session through a
:class:`Recorder`. When an operation raises ``StoreUnavailable``, it and every later one
of that hook call are appended to the workspace's spool, and the hook answers the host as
usual (no memory context, a short note); nothing is recorded out of order.

* **The spool**: ``.opencode/hook-queue.jsonl``, one JSON object per line (:func:`entry`),
  appended under the file lock ``hook-queue.jsonl.lock`` and fsynced. Its bookkeeping,
  ``hook-queue.state.json``, holds how many bytes were delivered (``offset``), how many
  events it holds and how many were dropped.
* **Bounded**: at most :data:`MAX_QUEUE_BYTES` bytes and :data:`MAX_QUEUE_EVENTS` events.
  Beyond that the *new* event is dropped (the oldest are kept: they are the start of the
  story), counted in ``dropped``, logged, and reported by the next delivery.
* **Delivery**: the first store operation of the next hook call, when the spool is not
  empty, delivers it first, in order (:func:`deliver`, at most :data:`HOOK_BUDGET_S`
  seconds per hook call so the host is not held; the rest waits for the next call), then
  the new event. ``opensage memory flush-queue`` delivers everything at once, and the
  Claude hook server delivers while idle (every :data:`IDLE_RETRY_S` seconds).
* **Exactly once**: a replayed session event carries ``meta["queue_id"]`` (its spool entry's
  id), and graph memory skips an episode whose ``queue_id`` is already stored in that
  session (:func:`opensage.plugins.graph_memory.episodes.record_episode`). The spool is only
  emptied after everything in it was committed, and the delivered offset is saved as it
  goes; so delivery interrupted anywhere (the server dies again, the process is killed)
  resumes without losing or duplicating an episode. Lifecycle entries (session start,
  compaction, session end) are idempotent when replayed (compression only reads episodes
  not yet compressed).
* **Bounded waits**: one failed connection per hook call (the team store's connect timeout,
  :data:`opensage.pgstore.CONNECT_TIMEOUT_S`); a batch of events (an OpenCode batch, the
  Claude queue folder) shares one :class:`Recorder`, so it waits once, not per event.

The one ambiguity left: a commit whose acknowledgement is lost with the connection (the
server died between committing and answering) is spooled and recorded once more at
delivery. A live event carries no queue id, so that one cannot be recognised.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from opensage.errors import OpenSageError, StoreUnavailable, UsageError
from opensage.store import Workspace, atomic_write_json

__all__ = [
    "Recorder", "recorder", "batch", "deliver", "pending", "append", "queue_path", "state_path",
    "Delivery", "DeliveryFailed", "QueueForAnotherStore", "store_name", "MAX_QUEUE_BYTES", "MAX_QUEUE_EVENTS", "HOOK_BUDGET_S", "QUEUE_NAME",
]

log = logging.getLogger("opensage.hook_queue")

QUEUE_NAME = "hook-queue.jsonl"
#: The spool's size limit (bytes). A day of heavy Claude Code use records a few MB of
#: events (tool results are cut to 20,000 characters), so this holds weeks of outage.
MAX_QUEUE_BYTES = 100 * 1024 * 1024
#: The spool's event limit.
MAX_QUEUE_EVENTS = 1_000_000
#: Seconds one hook call may spend delivering the spool before answering its host (the
#: rest waits for the next call); Claude Code's hook timeout is 60 s, this stays far below.
HOOK_BUDGET_S = 5.0
#: Seconds a process waits for the spool's lock (held by a deliverer for at most about
#: :data:`HOOK_BUDGET_S` plus one event).
LOCK_WAIT_S = 60.0
#: Seconds between delivery attempts of an idle Claude hook server while the spool is not empty.
IDLE_RETRY_S = 10.0
#: How often delivery saves its offset (entries); replays are idempotent, so this only
#: bounds the work repeated after a crash.
SAVE_EVERY = 50


def queue_path(workspace: Workspace) -> Path:
    """``<root>/.opencode/hook-queue.jsonl``: the spool."""
    return workspace.state_dir / QUEUE_NAME


def state_path(workspace: Workspace) -> Path:
    """``<root>/.opencode/hook-queue.state.json``: delivered offset and counters."""
    return workspace.state_dir / "hook-queue.state.json"


def _lock(workspace: Workspace):
    from filelock import FileLock

    workspace.ensure_state_dir()
    return FileLock(str(workspace.state_dir / (QUEUE_NAME + ".lock")), timeout=LOCK_WAIT_S)


def _read_state(workspace: Workspace) -> dict[str, int]:
    state = {"offset": 0, "events": 0, "dropped": 0}
    try:
        data = json.loads(state_path(workspace).read_text(encoding="utf-8"))
        if isinstance(data, dict):
            state.update({k: int(data[k]) for k in state if isinstance(data.get(k), int) and data[k] >= 0})
    except (OSError, ValueError):
        pass
    return state


def pending(workspace: Workspace) -> bool:
    """True when the spool holds something (one ``stat``; no lock)."""
    try:
        return queue_path(workspace).stat().st_size > 0
    except OSError:
        return False


def store_name(host) -> str:
    """Which store ``host`` writes: the team store's URL (password redacted) and project
    key, or the SQLite file's path; '' before the host opened its store."""
    db = getattr(host, "_db", None)
    if db is None:
        return ""
    describe = getattr(db, "describe", None)
    name = describe() if callable(describe) else str(getattr(db, "path", ""))
    project = getattr(db, "project", None)
    return f"{name} (project {project})" if project else name


class DeliveryFailed(OpenSageError):
    """Delivering a queued entry failed outside the plugins' hooks for another reason than
    the store being unreachable (a server error, e.g. a missing table): the entry and
    everything after it stay queued, in order; the message names the entry and the error.
    (A plugin raising inside a hook is logged and skipped, as for a live event.)"""


class QueueForAnotherStore(OpenSageError):
    """The hook queue holds events for another store than the one this workspace uses
    now (``OPENSAGE_DATABASE_URL`` changed): they are delivered only to their own store."""


def entry(op: str, session_id: str, source: str, event: dict | None = None, store: str = "") -> dict[str, Any]:
    """One spool line: ``{"id", "op", "session_id", "source", "store", "queued_at"[, "event"]}``.

    :param op: ``start`` / ``record`` / ``compact`` / ``end`` (the host's session operations).
    :param event: for ``record``, the :class:`opensage.types.SessionEvent` as JSON (its
        ``timestamp`` is when it happened, kept through delivery).
    :param store: :func:`store_name` of the store that was unreachable: the only one the
        entry is delivered to (never silently to another).
    """
    out: dict[str, Any] = {"id": uuid.uuid4().hex, "op": op, "session_id": session_id, "source": source,
                           "store": store, "queued_at": time.time()}
    if event is not None:
        out["event"] = event
    return out


def append(workspace: Workspace, item: dict[str, Any]) -> bool:
    """Append one entry to the spool (under its lock, fsynced).

    :returns: False when the spool is full (:data:`MAX_QUEUE_BYTES` / :data:`MAX_QUEUE_EVENTS`):
        the entry was dropped and counted.
    :raises OSError: the spool cannot be written (full disk, read-only folder).
    :raises filelock.Timeout: the lock stayed taken for :data:`LOCK_WAIT_S` seconds.
    """
    line = (json.dumps(item, ensure_ascii=False, default=str) + "\n").encode("utf-8", "surrogateescape")
    path = queue_path(workspace)
    with _lock(workspace):
        state = _read_state(workspace)
        size = path.stat().st_size if path.exists() else 0
        if size == 0:
            state.update(offset=0, events=0)
        if size + len(line) > MAX_QUEUE_BYTES or state["events"] >= MAX_QUEUE_EVENTS:
            state["dropped"] += 1
            atomic_write_json(state_path(workspace), state)
            log.error("hook queue %s is full (%d events, %d bytes): event dropped (%d dropped so far)",
                      path, state["events"], size, state["dropped"])
            return False
        fd = os.open(str(path), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a crash: end it
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        state["events"] += 1
        atomic_write_json(state_path(workspace), state)
    return True


@dataclass
class Delivery:
    """What :func:`deliver` did: entries ``delivered``, ``remaining`` in the spool,
    ``rejected`` (unreadable lines or invalid entries, set aside in
    ``hook-queue.rejected.jsonl``), ``dropped`` (events the full spool lost), ``errors``
    (why each was set aside)."""

    delivered: int = 0
    remaining: int = 0
    rejected: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)


def _set_aside(workspace: Workspace, line: bytes, why: str) -> None:
    path = workspace.state_dir / "hook-queue.rejected.jsonl"
    record = {"error": why[:500], "line": line.decode("utf-8", "replace").rstrip("\n")}
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # session text: private
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    log.error("hook queue entry set aside in %s: %s", path, why[:500])


def replay(host, item: dict[str, Any]) -> None:
    """Do one spooled entry on the store (see :func:`entry`).

    :raises StoreUnavailable: the store is still (or again) unreachable.
    :raises ValueError, KeyError, TypeError: the entry is not valid.
    """
    from opensage.types import SessionEvent

    op, sid, source = item["op"], item["session_id"], item.get("source") or "hook"
    if not isinstance(sid, str) or not sid:
        raise ValueError("entry without a session_id")
    if op == "record":
        event = SessionEvent.model_validate(item["event"])
        event.meta = {**(event.meta or {}), "queue_id": item["id"]}
        # a plugin raising (other than StoreUnavailable) is logged by the host and the others
        # still run, exactly as for a live event; the queue goes on
        host.record(host.session(sid, source=source), event)
        return
    if op not in ("start", "compact", "end"):
        raise ValueError(f"unknown operation {op!r}")
    session = host.session(sid, source=source)
    if op == "start":
        host.start_session(session)
    elif op == "compact":
        host.compact(session)
    else:
        host.end_session(session)


def _current_store(host) -> str:
    """:func:`store_name` once the host's store is open (opening it may raise StoreUnavailable)."""
    if getattr(host, "_db", None) is None:
        host.db  # noqa: B018 - opens the store (the name needs it)
    return store_name(host)


def deliver(host, budget_s: float | None = None) -> Delivery:
    """Deliver the spool of ``host``'s workspace, oldest first, under the spool's lock.

    :param budget_s: stop after about this many seconds (None: until empty).
    :returns: a :class:`Delivery`.
    :raises StoreUnavailable: the store is unreachable; what was delivered before stays
        delivered (the offset is saved), the rest waits.
    :raises QueueForAnotherStore: the next entry was queued for another store than the
        workspace's current one (it stays queued).
    :raises DeliveryFailed: an entry failed on the server outside the plugins' hooks (it stays queued).
    :raises filelock.Timeout: another process held the spool for :data:`LOCK_WAIT_S` s.
    """
    workspace = host.workspace
    done = Delivery()
    if not pending(workspace):
        return done
    start = time.monotonic()
    path = queue_path(workspace)
    with _lock(workspace):
        state = _read_state(workspace)
        done.dropped = state["dropped"]
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return done
        offset = state["offset"]
        since_save = 0
        finished = False
        try:
            with fh:
                size = os.fstat(fh.fileno()).st_size
                if offset > size:  # bookkeeping older than the file: start over (replays are idempotent)
                    offset = 0
                fh.seek(offset)
                while True:
                    if budget_s is not None and time.monotonic() - start > budget_s:
                        break
                    line = fh.readline()
                    if not line:
                        finished = True
                        break
                    try:
                        item = json.loads(line) if line.endswith(b"\n") else None
                        if not isinstance(item, dict):
                            raise ValueError("not a complete JSON object (a line torn by a crash?)")
                        target = item.get("store") or ""
                        if target and target != _current_store(host):
                            raise QueueForAnotherStore(
                                f"{path} holds hook events for {target}, but this workspace now uses "
                                f"{_current_store(host)}; they are delivered only there: point "
                                "OPENSAGE_DATABASE_URL back at it and run 'opensage memory flush-queue' "
                                "(or move the file away to give them up)")
                        replay(host, item)
                        done.delivered += 1
                    except (StoreUnavailable, QueueForAnotherStore):
                        raise
                    except (ValueError, KeyError, TypeError, UsageError) as exc:  # the entry itself is bad
                        _set_aside(workspace, line, f"{type(exc).__name__}: {exc}")
                        done.rejected += 1
                        done.errors.append(str(exc)[:200])
                    except Exception as exc:  # noqa: BLE001 - a server or plugin error: keep it queued, in order
                        what = f"{item.get('op')} of session {item.get('session_id')}" if isinstance(item, dict) else "?"
                        raise DeliveryFailed(
                            f"delivering the hook queue {path} stopped at an entry ({what}): "
                            f"{type(exc).__name__}: {str(exc)[:300]}; it and the rest stay queued "
                            "('opensage memory flush-queue' retries)") from exc
                    offset += len(line)
                    since_save += 1
                    if since_save >= SAVE_EVERY:
                        state["offset"] = offset
                        atomic_write_json(state_path(workspace), state)
                        since_save = 0
        finally:
            if finished:
                if state["dropped"]:
                    log.error("hook queue: %d events were dropped while it was full", state["dropped"])
                # bookkeeping first: a crash before the unlink replays the file (idempotent)
                atomic_write_json(state_path(workspace), {"offset": 0, "events": 0, "dropped": 0})
                path.unlink(missing_ok=True)
            else:
                state["offset"] = offset
                state["events"] = max(0, state["events"] - done.delivered - done.rejected)
                atomic_write_json(state_path(workspace), state)
        if not finished:
            done.remaining = max(1, state["events"])
    return done


# -- the recorder the hook paths use ---------------------------------------------------------
class Recorder:
    """A hook call's door to the store: the host's session operations, spooled when the
    store is unreachable (see the module docstring).

    :attr:`queued` counts the operations spooled by this recorder; :attr:`note` is the
    one-line reason to show the host (empty when nothing was spooled).
    """

    def __init__(self, host) -> None:
        # psycopg_pool logs a warning per failed reconnection attempt; a hook's host gets
        # the one-line :attr:`note` instead
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self.host = host
        self.down: OpenSageError | None = None
        self.checked = False
        self.queued = 0
        self.dropped = 0
        self.elsewhere = ""

    @property
    def note(self) -> str:
        """``opensage: team store unreachable ...; N event(s) queued in ...`` or ''."""
        if not self.queued and not self.dropped:
            return f"opensage: {self.elsewhere}" if self.elsewhere else ""
        where = queue_path(self.host.workspace)
        text = f"opensage: {self.down}; {self.queued} event(s) queued in {where}, delivered when it is back"
        if self.dropped:
            text += f"; {self.dropped} dropped (the queue is full, docs/team.md)"
        return text

    def _ready(self) -> bool:
        """False when this call must spool: the store was found down, or the spool could
        not be delivered first (order)."""
        if self.down is not None:
            return False
        if not self.checked:
            self.checked = True
            if pending(self.host.workspace):
                try:
                    done = deliver(self.host, budget_s=HOOK_BUDGET_S)
                except (StoreUnavailable, DeliveryFailed) as exc:
                    if isinstance(exc, DeliveryFailed):
                        log.error("%s", exc)
                    self.down = exc
                    return False
                except QueueForAnotherStore as exc:  # not ours to deliver: record live, say so
                    self.elsewhere = str(exc)
                    log.warning("%s", exc)
                    return True
                if done.remaining:
                    self.down = StoreUnavailable("the hook queue is still being delivered")
                    return False
        return self.down is None

    def _spool(self, op: str, session, event=None) -> None:
        body = event.model_dump(mode="json") if event is not None else None
        try:
            ok = append(self.host.workspace, entry(op, session.id, session.source, body, store_name(self.host)))
        except Exception as exc:  # noqa: BLE001 - the host must still get its answer
            log.error("hook queue: could not spool a %s event of session %s: %s", op, session.id, exc)
            self.dropped += 1
            return
        if ok:
            self.queued += 1
        else:
            self.dropped += 1

    def _do(self, op: str, session, call: Callable[[], Any], event=None) -> bool:
        """Run ``call`` on the store, or spool ``op``; True when it ran."""
        if self._ready():
            try:
                call()
                return True
            except StoreUnavailable as exc:
                self.down = exc
        self._spool(op, session, event)
        return False

    def session(self, session_id: str, source: str):
        """The host's session (:meth:`opensage.host.Host.session`), or, with the store
        down, a session object not stored yet (delivery creates its row)."""
        if self._ready():
            try:
                return self.host.session(session_id, source=source)
            except StoreUnavailable as exc:
                self.down = exc
        from opensage.host import Session

        return Session(id=session_id, source=source, host=self.host)

    def start(self, session) -> bool:
        """``host.start_session`` or spool it."""
        return self._do("start", session, lambda: self.host.start_session(session))

    def record(self, session, event) -> bool:
        """``host.record`` (an episode) or spool it."""
        return self._do("record", session, lambda: self.host.record(session, event), event)

    def compact(self, session) -> bool:
        """``host.compact`` (compression) or spool it: it is done after delivery."""
        return self._do("compact", session, lambda: self.host.compact(session))

    def end(self, session) -> bool:
        """``host.end_session`` or spool it."""
        return self._do("end", session, lambda: self.host.end_session(session))

    def ask(self, call: Callable[[], Any]) -> Any:
        """A read for the host's answer (memory context): its value, or None with the store down."""
        if self.down is not None:
            return None
        try:
            return call()
        except StoreUnavailable as exc:
            self.down = exc
            return None


_BATCH: ContextVar[Recorder | None] = ContextVar("opensage_hook_batch", default=None)


def recorder(host) -> Recorder:
    """The :class:`Recorder` of the current :func:`batch` for ``host``, else a new one."""
    current = _BATCH.get()
    if current is not None and current.host is host:
        return current
    return Recorder(host)


@contextmanager
def batch(host) -> Iterator[Recorder]:
    """Share one :class:`Recorder` between the hook events handled inside (one wait for a
    dead server per batch, and order kept across the batch)."""
    current = _BATCH.get()
    if current is not None and current.host is host:
        yield current
        return
    rec = Recorder(host)
    token = _BATCH.set(rec)
    try:
        yield rec
    finally:
        _BATCH.reset(token)
