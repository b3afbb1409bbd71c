"""``opensage hook --serve``: the workspace's hook server for Claude Code events.

Started on demand by the ``opensage-hook`` client (:mod:`opensage_hook`) and gone when
idle, it keeps one :class:`~opensage.host.Host` warm so a hook event costs a socket round
trip instead of a Python start-up and the plugins' import (0.4-0.9 s measured per event
before; ``bench/hooks.py`` measures it now).

Protocol, one connection per event: the client sends the event's JSON (at most
:data:`opensage_hook.MAX_BYTES`) and closes its side; the server answers
``b"<exit code>\\n" + stdout + b"\\0" + stderr``: the same exit code, JSON answer and
error text as ``opensage hook --from claude``. Events are handled one at a time in
arrival order (Claude Code waits for each hook before the next). Events whose answer
is always ``{}`` (:data:`ACK_FIRST`: tool results, stops, compaction, session end) are
answered as soon as they are read and validated, then recorded before the next
connection is accepted, so Claude Code does not wait for the database (or for a whole
compression); a failure while recording them goes to ``hookd.log`` beside the socket.

The frequent events whose answer is always ``{}`` (tool results, stops) do not even
start ``opensage-hook``: their installed hook appends the JSON to
``.opencode/run/queue/`` with ``sh`` (:data:`opensage.integrations.claude.QUEUE_COMMAND`).
The server records queued events every :data:`QUEUE_POLL_S` seconds and before each
event it is sent; the direct path records them before its own event
(:func:`drain_queue`), so they are never lost and keep their order.

Safety: the socket lives in a folder only the user can enter (0700; the socket itself
is 0600), connections from another uid are refused (``SO_PEERCRED``), a payload is
bounded in size and in the time it may take to arrive, and one server per workspace
holds ``hookd.lock`` (a second one exits at once).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import struct
import time
from pathlib import Path

from opensage.errors import OpenSageError, UsageError

__all__ = ["serve", "handle_bytes", "DEFAULT_IDLE_S"]

log = logging.getLogger("opensage.hookd")

#: Seconds without an event after which the server exits (``$OPENSAGE_HOOKD_IDLE_S``).
DEFAULT_IDLE_S = 600.0
#: Claude Code events answered ``{}`` before they are recorded (see the module docstring).
ACK_FIRST = frozenset({"PostToolUse", "PostToolUseFailure", "Stop", "SubagentStop", "PreCompact", "SessionEnd"})
#: Seconds a client may take to send its event once connected.
READ_TIMEOUT_S = 10.0


def parse_event(data: bytes) -> dict:
    """The event's JSON object. :raises UsageError: not JSON, too deep, or not an object."""
    try:
        payload = json.loads(data.decode("utf-8", errors="replace") or "{}")  # bad UTF-8 -> U+FFFD
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"stdin is not valid JSON ({str(exc)[:200]}); send one JSON object per hook call.") from None
    if not isinstance(payload, dict):
        raise UsageError("stdin must hold one JSON object (a Claude Code hook payload).")
    return payload


def ack_first(payload: dict) -> bool:
    """True for a valid event whose answer is ``{}`` whatever happens (:data:`ACK_FIRST`)."""
    return (payload.get("hook_event_name") in ACK_FIRST and isinstance(payload.get("session_id"), str)
            and bool(payload["session_id"]))


def handle_bytes(host, data: bytes | dict, timestamp: float | None = None) -> tuple[int, str, str]:
    """One Claude Code event (raw JSON bytes, or the parsed object) -> ``(exit code,
    stdout, stderr)``, as the direct path ``opensage hook --from claude`` would give them.
    ``timestamp``: when it happened (epoch seconds), for queued events."""
    from opensage.hook_queue import batch
    from opensage.integrations.claude import handle_hook

    try:
        payload = data if isinstance(data, dict) else parse_event(data)
        with batch(host) as rec:  # the team store down: the event is queued, the answer is {}
            before = rec.queued + rec.dropped
            answer = handle_hook(host, payload, timestamp=timestamp)
            note = rec.note + "\n" if rec.queued + rec.dropped > before else ""
    except OpenSageError as exc:
        return exc.exit_code, "", f"Error: {exc}\n"
    except Exception as exc:  # a bug must not take the server down; the client reports it
        log.exception("hook event failed")
        return 1, "", f"Error: internal error in opensage hook: {type(exc).__name__}: {exc}\n"
    return 0, json.dumps(answer) + "\n", note


#: Where the queueing hook (:data:`opensage.integrations.claude.QUEUE_COMMAND`) puts events.
QUEUE_REL = ".opencode/run/queue"
#: A queued file larger than this (bytes) is set aside (``*.toolarge``), not parsed.
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: How often the server looks at the queue while no connection comes (s).
QUEUE_POLL_S = 0.25


def drain_queue(host) -> int:
    """Record every queued Claude Code event of ``host``'s workspace, oldest first, then
    delete its file. Held under ``queue.lock`` so the server and a direct-path hook
    never take the same file; a file that is not a valid event is logged and removed.

    :returns: how many files were handled.
    """
    folder = Path(host.workspace.root) / QUEUE_REL
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except FileNotFoundError:
        return 0
    if not names:
        return 0
    from opensage.hook_queue import batch

    lock_fd = os.open(str(folder.parent / "queue.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    handled = 0
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with batch(host):  # one wait for a dead team store, not one per file
            handled = _drain_files(host, folder)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    return handled


def _drain_files(host, folder: Path) -> int:
    """:func:`drain_queue`'s loop (the caller holds ``queue.lock``)."""
    handled = 0
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".json")):
        path = folder / name
        try:
            if path.stat().st_size > MAX_QUEUED_BYTES:
                path.rename(path.with_suffix(".toolarge"))
                log.warning("queued hook event %s is over %d bytes; set aside", name, MAX_QUEUED_BYTES)
                continue
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        stamp = name.split("-", 1)[0]
        when = int(stamp) / 1e9 if stamp.isdigit() and len(stamp) > 12 else None
        code, _, err = handle_bytes(host, data, timestamp=when)
        if code:
            log.warning("queued hook event %s: %s", name, err.strip())
        path.unlink()
        handled += 1
    return handled


def _deliver_spool(host) -> None:
    """While idle: deliver the team store's hook queue (:mod:`opensage.hook_queue`) if it
    holds events, for at most :data:`opensage.hook_queue.HOOK_BUDGET_S` seconds."""
    from filelock import Timeout

    from opensage.errors import OpenSageError
    from opensage.hook_queue import HOOK_BUDGET_S, deliver, pending

    if not pending(host.workspace):
        return
    try:
        done = deliver(host, budget_s=HOOK_BUDGET_S)
    except (OpenSageError, Timeout) as exc:  # the store down, or an entry failing: it stays queued
        log.info("hook queue not delivered yet: %s", exc)
        return
    log.info("hook queue: delivered %d events (%d left, %d set aside)", done.delivered, done.remaining, done.rejected)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise UsageError(f"{path} belongs to another user; refusing to put the hook socket there.")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def _log_to(path: Path) -> None:
    """Failures of acknowledged events go to ``path`` (at most 2 x 1 MB)."""
    from logging.handlers import RotatingFileHandler

    if any(isinstance(h, RotatingFileHandler) for h in log.handlers):
        return
    handler = RotatingFileHandler(str(path), maxBytes=1_000_000, backupCount=1, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _peer_uid(conn: socket.socket) -> int | None:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except (OSError, AttributeError):
        return None


def _read_event(conn: socket.socket, limit: int) -> bytes | None:
    conn.settimeout(READ_TIMEOUT_S)
    chunks, size = [], 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def serve(host, idle_s: float | None = None) -> int:
    """Serve events for ``host``'s workspace until ``idle_s`` seconds pass without one.

    Between connections it records queued events (:func:`drain_queue`) every
    :data:`QUEUE_POLL_S` seconds, and before each connection's event.

    :returns: how many events were answered (0 when another server already runs).
    :raises UsageError: the socket folder belongs to another user.
    """
    from opensage.hook_queue import IDLE_RETRY_S, batch
    from opensage_hook import MAX_BYTES, socket_path

    if idle_s is None:
        try:
            idle_s = float(os.environ.get("OPENSAGE_HOOKD_IDLE_S") or DEFAULT_IDLE_S)
        except ValueError:
            raise UsageError("OPENSAGE_HOOKD_IDLE_S must be a number of seconds.") from None
    root = str(host.workspace.root)
    path = Path(socket_path(root))
    _private_dir(path.parent)
    _log_to(path.parent / "hookd.log")
    lock_fd = os.open(str(path.parent / (path.stem + ".lock")), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return 0  # another server answers this workspace
    served = 0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            path.unlink()  # a socket left by a server that died; we hold the lock
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        sock.listen(16)
        sock.settimeout(min(idle_s, QUEUE_POLL_S))
        me = os.getuid()
        last = retried = time.monotonic()
        while True:
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                if drain_queue(host):
                    last = time.monotonic()
                elif time.monotonic() - last >= idle_s:
                    break
                elif time.monotonic() - retried >= IDLE_RETRY_S:
                    retried = time.monotonic()
                    _deliver_spool(host)
                continue
            last = time.monotonic()
            with batch(host), conn:
                drain_queue(host)  # queued events happened before this one
                try:
                    if _peer_uid(conn) not in (me, None):
                        conn.sendall(b"2\n\0Error: the hook server only answers its own user.\n")
                        continue
                    data = _read_event(conn, MAX_BYTES)
                    if data == b"":  # a probe (wait_for_server): nothing to handle
                        continue
                    later = None
                    if data is None:
                        code, out, err = 2, "", f"Error: hook event larger than {MAX_BYTES} bytes.\n"
                    else:
                        try:
                            payload = parse_event(data)
                        except UsageError as exc:
                            payload, (code, out, err) = None, (exc.exit_code, "", f"Error: {exc}\n")
                        if payload is not None and ack_first(payload):
                            later, (code, out, err) = payload, (0, "{}\n", "")
                        elif payload is not None:
                            code, out, err = handle_bytes(host, payload)
                    conn.settimeout(READ_TIMEOUT_S)
                    try:
                        conn.sendall(f"{code}\n".encode() + out.encode("utf-8", "surrogateescape") + b"\0"
                                     + err.encode("utf-8", "surrogateescape"))
                    finally:
                        if later is not None:  # recorded before the next event is accepted
                            code, _, err = handle_bytes(host, later)
                            if code:
                                log.warning("%s event of session %s: %s", later.get("hook_event_name"),
                                            later.get("session_id"), err.strip())
                    served += 1
                except OSError as exc:  # the client went away; the event (if read) was handled
                    log.debug("hook client connection failed: %s", exc)
    finally:
        sock.close()
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    return served


def wait_for_server(root: str, timeout_s: float = 10.0) -> bool:
    """True once a hook server for ``root`` accepts connections (polled; for tests/benches)."""
    from opensage_hook import socket_path

    deadline = time.monotonic() + timeout_s
    path = socket_path(root)
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return True
            except OSError:
                time.sleep(0.02)
    return False
