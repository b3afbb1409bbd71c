"""Wait for a state, never for a fixed time: ``wait_until(predicate, timeout_s, what)``."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float = 30.0, what: str = "the state",
               interval_s: float = 0.05) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    :param timeout_s: deadline in seconds (monotonic clock); a generous bound, since a
        loaded machine only makes the wait longer, never the test wrong.
    :param interval_s: pause between two checks, in seconds.
    :raises AssertionError: naming ``what`` and the last value, when the deadline passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {value!r})")
        time.sleep(interval_s)
