"""Filters of memory queries: time range, tags, session, source, node types, validity.

One :class:`MemoryFilter` is built from the command arguments (:meth:`MemoryFilter.build`)
and turned into SQL conditions on ``nodes`` (alias ``n``) and ``episodes`` (alias ``e``),
so every query mode filters inside SQLite and the indexes of migration 5 (``curation``)
carry the work. Similarity is driven by the FTS5 index (the node conditions are checked
per matching row by id: a ``CROSS JOIN`` keeps SQLite from driving the query from a
``nodes`` index and running MATCH per node); a tag filter is a lookup in
``node_tags(node_id, tag)`` per candidate row.

Time: nodes are filtered on ``valid_from`` (when the knowledge was first recorded; for
compressed nodes the time of the earliest episode it came from), episodes on their
``timestamp``. Times are given as ISO dates (``2026-11-30``, ``2026-11-30T14:00``), as
``<n><unit>`` ago (``90m``, ``12h``, ``7d``, ``2w``; parsed here, no library needed), or in
plain language (``yesterday``, ``last week``, ``3 days ago``), parsed by ``dateparser``
(imported only when such a form is given: its import costs ~100 ms).

Validity: by default only current nodes (``valid_to`` NULL) are returned;
``include_superseded`` returns superseded ones too; ``as_of`` returns what was current
at that time (``valid_from <= as_of < valid_to``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Sequence

from opensage.errors import UsageError
from opensage.store import in_chunks

__all__ = ["MemoryFilter", "parse_time"]

_AGO = re.compile(r"^\s*(\d{1,6})\s*(m|min|mins|minutes?|h|hours?|d|days?|w|weeks?|y|years?)\s*(ago)?\s*$", re.I)
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
#: Longest time expression accepted (characters).
MAX_TIME_CHARS = 100


def parse_time(text: str, what: str = "since", now: float | None = None) -> float:
    """Epoch seconds for a time expression (see the module docstring).

    A date without a time means its start (00:00 local time). A time zone in an ISO date
    is honoured; otherwise local time.

    :raises UsageError: the text is not a time, or too long (nothing is changed).
    """
    raw = (text or "").strip()
    now = time.time() if now is None else now
    if not raw or len(raw) > MAX_TIME_CHARS:
        raise UsageError(f"{what}={text!r} is not a time: give an ISO date (2026-11-30), an age such as 7d or 12h, "
                         "or words such as 'yesterday' or 'last week'.")
    m = _AGO.match(raw)
    if m:
        unit = m.group(2).lower()
        key = "m" if unit.startswith("m") else unit[0]
        return now - int(m.group(1)) * _UNIT_S[key]
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return dt.timestamp()
    except ValueError:
        pass
    if raw.lower() in ("now", "today"):
        return now if raw.lower() == "now" else datetime.fromtimestamp(now).replace(
            hour=0, minute=0, second=0, microsecond=0).timestamp()
    import dateparser  # plain-language dates; imported only here (start-up stays fast)

    dt = dateparser.parse(raw, settings={"PREFER_DATES_FROM": "past",
                                         "RELATIVE_BASE": datetime.fromtimestamp(now),
                                         "RETURN_AS_TIMEZONE_AWARE": False})
    if dt is None:
        raise UsageError(f"{what}={text!r} is not a time dateparser understands: give an ISO date (2026-11-30), "
                         "an age such as 7d or 12h, or words such as 'yesterday' or 'last week'.")
    return dt.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class MemoryFilter:
    """What a query may return. Empty lists / None mean "no constraint".

    :param since: / :param until: epoch seconds (inclusive).
    :param tags: lowercase tags; ``tags_mode`` ``any`` (at least one) or ``all``.
    :param session: session id. :param source: session source (opencode, claude, cli...).
    :param node_types: node types; ``episode`` in it admits session episodes.
    :param as_of: epoch seconds: what was current then. :param include_superseded: also
        superseded nodes (ignored with ``as_of``).
    """

    since: float | None = None
    until: float | None = None
    tags: list[str] = field(default_factory=list)
    tags_mode: str = "any"
    session: str | None = None
    source: str | None = None
    node_types: list[str] = field(default_factory=list)
    as_of: float | None = None
    include_superseded: bool = False

    @classmethod
    def build(cls, *, since: str | None = None, until: str | None = None, tags: Sequence[str] | None = None,
              tags_mode: str = "any", session: str | None = None, source: str | None = None,
              node_types: Iterable[str] | None = None, as_of: str | None = None,
              include_superseded: bool = False, now: float | None = None) -> "MemoryFilter":
        """Parse and check user arguments. :raises UsageError: a bad time, tag or type."""
        from opensage.plugins.graph_memory.graph import TYPE_NAME, normalize_tags

        types = []
        for t in node_types or []:
            if not TYPE_NAME.match(t or ""):
                raise UsageError(f"nodeTypes entry {t!r} is not a node type; use lowercase words such as "
                                 "[\"decision\",\"error\"] (episode = session episodes).")
            types.append(t)
        if tags_mode not in ("any", "all"):
            raise UsageError(f"tagsMode must be any or all, not {tags_mode!r}.")
        flt = cls(
            since=parse_time(since, "since", now) if since else None,
            until=parse_time(until, "until", now) if until else None,
            tags=normalize_tags(tags) if tags else [],
            tags_mode=tags_mode, session=session or None, source=source or None,
            node_types=list(dict.fromkeys(types)),
            as_of=parse_time(as_of, "asOf", now) if as_of else None,
            include_superseded=bool(include_superseded),
        )
        if flt.since is not None and flt.until is not None and flt.since > flt.until:
            raise UsageError(f"since ({_iso(flt.since)}) is after until ({_iso(flt.until)}): nothing can match; "
                             "swap them.")
        return flt

    # -- what it admits --------------------------------------------------------------------------
    @property
    def wants_nodes(self) -> bool:
        """False only when the node-type filter asks for episodes alone."""
        return not self.node_types or any(t != "episode" for t in self.node_types)

    @property
    def wants_episodes(self) -> bool:
        """Episodes have no tags, type or validity: a tag or node-type filter (without
        ``episode``) or ``as_of`` leaves them out."""
        if self.node_types and "episode" not in self.node_types:
            return False
        return not self.tags and self.as_of is None

    @property
    def narrows_nodes(self) -> bool:
        """True when some node may be left out (always, unless superseded ones are included)."""
        return bool(self.node_sql()[0])

    @property
    def narrows_episodes(self) -> bool:
        """True when some condition applies to episodes (time, session, source...)."""
        return bool(self.episode_sql()[0])

    def node_sql(self, alias: str = "n") -> tuple[str, list]:
        """(condition, params) on ``nodes AS alias``; '' when nothing is filtered."""
        a = alias
        parts: list[str] = []
        params: list = []
        if self.as_of is not None:
            parts.append(f"{a}.valid_from <= ? AND ({a}.valid_to IS NULL OR {a}.valid_to > ?)")
            params += [self.as_of, self.as_of]
        elif not self.include_superseded:
            parts.append(f"{a}.valid_to IS NULL")
        if self.since is not None:
            parts.append(f"{a}.valid_from >= ?")
            params.append(self.since)
        if self.until is not None:
            parts.append(f"{a}.valid_from <= ?")
            params.append(self.until)
        types = [t for t in self.node_types if t != "episode"]
        if types:
            parts.append(f"{a}.type IN ({','.join('?' * len(types))})")
            params += types
        if self.session:
            parts.append(f"{a}.session_id = ?")
            params.append(self.session)
        if self.source:
            parts.append(f"{a}.source = ?")
            params.append(self.source)
        if self.tags:
            marks = ",".join("?" * len(self.tags))
            # correlated, per candidate row, on node_tags(node_id, tag): a non-correlated
            # IN (SELECT ...) would list every node of the tag on each call (thousands at 100k)
            if self.tags_mode == "all" and len(self.tags) > 1:
                parts.append(f"(SELECT count(*) FROM node_tags t WHERE t.node_id = {a}.id AND t.tag IN ({marks}))"
                             f" = {len(self.tags)}")
            else:
                parts.append(f"EXISTS (SELECT 1 FROM node_tags t WHERE t.node_id = {a}.id AND t.tag IN ({marks}))")
            params += self.tags
        return " AND ".join(parts), params

    def episode_sql(self, alias: str = "e") -> tuple[str, list]:
        """(condition, params) on ``episodes AS alias``; '' when nothing is filtered."""
        a = alias
        parts: list[str] = []
        params: list = []
        if self.since is not None:
            parts.append(f"{a}.timestamp >= ?")
            params.append(self.since)
        if self.until is not None:
            parts.append(f"{a}.timestamp <= ?")
            params.append(self.until)
        if self.session:
            parts.append(f"{a}.session_id = ?")
            params.append(self.session)
        if self.source:
            parts.append(f"{a}.session_id IN (SELECT id FROM sessions WHERE source = ?)")
            params.append(self.source)
        return " AND ".join(parts), params

    @property
    def only_current(self) -> bool:
        """True for the default filter: nothing but "current nodes only"."""
        return (self.as_of is None and not self.include_superseded and self.since is None and self.until is None
                and not self.tags and not self.session and not self.source
                and not [t for t in self.node_types if t != "episode"])

    def superseded_ids(self, conn, max_size: int = 1000) -> set[int] | None:
        """Ids of superseded nodes (partial index ``nodes_superseded``), or None when more
        than ``max_size`` (then filter inside SQL instead)."""
        cur = conn.cursor()
        cur.row_factory = None
        ids = {r[0] for r in cur.execute(
            f"SELECT id FROM nodes INDEXED BY nodes_superseded WHERE valid_to IS NOT NULL LIMIT {max_size + 1}")}
        return ids if len(ids) <= max_size else None

    def candidate_ids(self, conn, max_size: int = 20_000) -> set[int] | None:
        """Ids of the nodes that pass the *selective* constraints, read from their indexes
        (tags: ``node_tags``; ``since``/``until``: ``nodes(valid_from)``; ``session``,
        ``source``), or None when none of them admits at most ``max_size`` nodes.

        A superset: the other conditions (validity, type, unselective constraints) still
        have to be checked (:meth:`keep_nodes`). Counting first is cheap (index only, under
        a millisecond at 100k nodes); reading a set of 20,000 ids takes a few.
        """
        parts: list[tuple[str, list]] = []
        if self.tags:
            marks = ",".join("?" * len(self.tags))
            if self.tags_mode == "all" and len(self.tags) > 1:
                parts.append((f"SELECT node_id FROM node_tags WHERE tag IN ({marks}) GROUP BY node_id"
                              f" HAVING count(*) = {len(self.tags)}", list(self.tags)))
            else:
                parts.append((f"SELECT node_id FROM node_tags WHERE tag IN ({marks})", list(self.tags)))
        if self.since is not None or self.until is not None:
            lo = self.since if self.since is not None else float("-inf")
            hi = self.until if self.until is not None else float("inf")
            parts.append(("SELECT id FROM nodes INDEXED BY nodes_valid_from WHERE valid_from BETWEEN ? AND ?", [lo, hi]))
        if self.session:
            parts.append(("SELECT id FROM nodes INDEXED BY nodes_session WHERE session_id = ?", [self.session]))
        if self.source:
            parts.append(("SELECT id FROM nodes INDEXED BY nodes_source WHERE source = ?", [self.source]))
        small = []
        for sql, params in parts:
            n = conn.execute(f"SELECT count(*) FROM ({sql} LIMIT {max_size + 1})", params).fetchone()[0]
            if n <= max_size:
                small.append((n, sql, params))
        if not small:
            return None
        # only the smallest set is read (the other conditions are checked on the few
        # matches left); plain tuples, not sqlite3.Row objects, to keep it cheap
        _n, sql, params = min(small, key=lambda x: x[0])
        cur = conn.cursor()
        cur.row_factory = None
        return {r[0] for r in cur.execute(sql, params)}

    # -- applying it to id lists ----------------------------------------------------------------
    def keep_nodes(self, conn, ids: Sequence[int], limit: int | None = None) -> list[int]:
        """``ids`` (order kept) that pass the node conditions; stops after ``limit`` kept.

        Rows are looked up by id (``NOT INDEXED``: without it SQLite may walk a whole
        column index such as ``valid_from`` instead of the few ids asked for).
        """
        ids = list(ids)
        cond, params = self.node_sql()
        if not ids or not cond:
            return ids[:limit] if limit is not None else ids
        out: list[int] = []
        for chunk, marks in in_chunks(ids):
            ok = {r[0] for r in conn.execute(
                f"SELECT n.id FROM nodes n NOT INDEXED WHERE n.id IN ({marks}) AND {cond}",
                (*chunk, *params))}
            out.extend(x for x in chunk if x in ok)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def keep_episodes(self, conn, ids: Sequence[int]) -> list[int]:
        """``ids`` (order kept) that pass the episode conditions ([] when episodes are excluded)."""
        ids = list(ids)
        if not self.wants_episodes:
            return []
        cond, params = self.episode_sql()
        if not ids or not cond:
            return ids
        if self.source and not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='sessions'").fetchone():
            return []
        ok: set[int] = set()
        for chunk, marks in in_chunks(ids):
            ok.update(r[0] for r in conn.execute(
                f"SELECT e.id FROM episodes e WHERE e.id IN ({marks}) AND {cond}",
                (*chunk, *params)))
        return [i for i in ids if i in ok]

    def describe(self) -> str:
        """A short text of the active constraints ('' for the default: current nodes only)."""
        bits = []
        if self.since is not None:
            bits.append(f"since {_iso(self.since)}")
        if self.until is not None:
            bits.append(f"until {_iso(self.until)}")
        if self.tags:
            bits.append(f"tags {self.tags_mode}:{','.join(self.tags)}")
        if self.session:
            bits.append(f"session {self.session}")
        if self.source:
            bits.append(f"source {self.source}")
        if self.node_types:
            bits.append(f"types {','.join(self.node_types)}")
        if self.as_of is not None:
            bits.append(f"as of {_iso(self.as_of)}")
        elif self.include_superseded:
            bits.append("including superseded")
        return "; ".join(bits)
