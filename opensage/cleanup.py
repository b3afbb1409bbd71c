"""Clean-up on every exit path of the CLI: SIGTERM, SIGINT and SIGHUP included.

Resources that live on the host while a command runs (sandboxed process groups, their
scratch folders, cgroups, placeholder files) register a callback here; the handlers
installed by :func:`install_signal_handlers` run every callback, then end the process the
way the signal asks (``KeyboardInterrupt`` for SIGINT, exit status ``128 + signal`` for
SIGTERM and SIGHUP), so ``finally`` blocks run too. SIGKILL cannot be caught: what it
leaves behind is removed by the start-up sweep of the next run
(:func:`opensage.sandbox.sweep_stale`). Deliberately free of heavy imports: the CLI
installs the handlers before anything else.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

__all__ = ["register", "unregister", "run_all", "install_signal_handlers"]

_lock = threading.Lock()
_callbacks: dict[int, Callable[[], None]] = {}
_next = 0


def register(callback: Callable[[], None]) -> int:
    """Add ``callback`` (no arguments, must be idempotent); returns a token for :func:`unregister`."""
    global _next
    with _lock:
        _next += 1
        _callbacks[_next] = callback
        return _next


def unregister(token: int) -> None:
    """Drop the callback registered under ``token`` (a no-op when it already ran or is unknown)."""
    with _lock:
        _callbacks.pop(token, None)


def run_all() -> None:
    """Run every registered callback once (errors are swallowed: clean-up must go on)."""
    with _lock:
        callbacks = list(_callbacks.values())
        _callbacks.clear()
    for cb in callbacks:
        try:
            cb()
        except Exception:
            pass


def _handler(signum, frame) -> None:
    run_all()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Handle SIGTERM, SIGINT and SIGHUP in the main thread (no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            signal.signal(sig, _handler)
        except (OSError, ValueError):
            pass
