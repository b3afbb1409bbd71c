"""Retention of raw episodes, run without a daemon (at session end, at most once a day).

Configuration (environment):

* ``OPENSAGE_MEMORY_EPISODE_DAYS`` — raw episodes are deleted this many days after they
  were compressed into lasting nodes (default :data:`DEFAULT_EPISODE_DAYS`; ``off``
  keeps them for ever). Lasting nodes (decisions, errors, facts...) are never deleted by
  retention; only ``@memory-forget`` removes them.
* The check runs at the end of a session and at most once per :data:`INTERVAL_S`
  seconds per workspace (the last run is kept in the ``memory_upkeep`` table).
"""

from __future__ import annotations

import os

from opensage.errors import UsageError

#: Days raw episodes are kept after compression, by default.
DEFAULT_EPISODE_DAYS = 90.0
#: Seconds between two retention runs (one a day).
INTERVAL_S = 86400.0


def episode_days() -> float | None:
    """The configured retention in days, or None when it is off.

    :raises UsageError: the variable is neither a non-negative number nor ``off``.
    """
    raw = os.environ.get("OPENSAGE_MEMORY_EPISODE_DAYS", "").strip().lower()
    if not raw:
        return DEFAULT_EPISODE_DAYS
    if raw in ("off", "never", "none"):
        return None
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise UsageError(f"OPENSAGE_MEMORY_EPISODE_DAYS={raw!r} is not valid: give days (e.g. 90) or 'off'.")
    return days


def run_retention(graph, force: bool = False, now: float | None = None) -> int | None:
    """Apply the retention policy when due (or ``force``); returns episodes deleted, None when not run."""
    days = episode_days()
    if days is None or not (force or graph.upkeep_due(INTERVAL_S, now)):
        return None
    return graph.apply_retention(days, now)
