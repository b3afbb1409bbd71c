"""Moving lasting knowledge between two stores: ``opensage memory push`` / ``pull`` (issue 16).

:func:`sync` copies graph memory from a *source* store to a *destination* store. Both are
:class:`opensage.store.Database`-like objects (the local SQLite file, or the team store on
PostgreSQL, :mod:`opensage.pgstore`), so the same code runs SQLite → PostgreSQL,
PostgreSQL → SQLite and SQLite → SQLite. The source is only read (plain ``SELECT``s); the
destination is written through graph memory's one writer (:mod:`.graph`, and
:func:`.episodes.insert_episode_copies` for episodes), in one transaction: a failure
writes nothing.

What is copied
    Every node with its content, metadata, times (``created_at``, ``updated_at``,
    ``valid_from``, ``valid_to``), which node superseded it, its session and source and
    its tags; every edge with its weight, metadata and times; provenance links (node →
    episode) whose episode exists in the destination (after the copy, with
    ``episodes=True``). With ``episodes=True`` also the raw episodes. Not copied: derived
    or local state (the full-text index is rebuilt by the destination, vectors of the
    dense ranker are recomputed there, the retention clock, sessions, tool state, jobs).
    Nothing is ever deleted: a node removed on one side is not removed on the other.

Identity (so a second run adds nothing)
    * a node is its (type, label) — ids differ between stores and are never copied;
    * an edge is (source node's (type, label), edge type, target node's (type, label));
    * an episode is its (session_id, seq); a provenance link is (node, episode).

Conflicts (the same identity on both sides with different data): :func:`winner`
    A node's *data* is its content, metadata (as canonical JSON), ``valid_from``,
    ``valid_to``, superseding node's (type, label), ``session_id``, ``source`` and tags;
    an edge's is its weight and metadata. Equal data: nothing is written (whatever the
    times say). Different data: the version with the later ``updated_at`` wins (times
    compared to the millisecond); on a tie, the version whose data has the larger SHA-256
    (of the canonical JSON of its data) wins. The rule is symmetric, so ``push`` then
    ``pull`` leaves both stores holding the same winner. When the destination's version
    wins, the destination is left as it is (counted as ``kept``). When the source's wins,
    it overwrites the destination's row, ``updated_at`` included (so the next run finds
    them equal). ``created_at`` becomes the earlier of the two.
    Episodes are a log and are never rewritten: an episode of the same (session_id, seq)
    with a different text stays as the destination has it (counted as ``conflicting``,
    and provenance links to it are not copied); one that differs only in being marked
    compressed/modelled on the source gets those marks (counted as ``updated``).

Cost: both stores' node and edge keys are read into memory (about 1 KB per node with its
content); the writes are one statement per new or changed row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opensage.errors import OpenSageError, UsageError
from opensage.plugins.graph_memory.episodes import EPISODE_COLUMNS, fill_marks, insert_episode_copies
from opensage.plugins.graph_memory.graph import (
    Graph, add_node_tags, link_episode_pairs, overwrite_node_copy, set_node_tags, set_superseded_by, write_edge_rows,
    write_node_copies,
)
from opensage.pgstore import PostgresDatabase, redact_url
from opensage.store import Database, Workspace, database_url, project_key

__all__ = ["sync", "SyncReport", "Counts", "winner", "open_store", "close_store", "local_store", "team_url",
           "TEAM_URL_ENV"]

#: The environment variable naming the team store (issue 16); the default of ``--to``/``--from``.
TEAM_URL_ENV = "OPENSAGE_DATABASE_URL"
#: Times are compared at this resolution (seconds): a store may keep fewer digits of a float.
TIME_RESOLUTION_S = 0.001

NodeKey = tuple[str, str]


@dataclass
class Counts:
    """What happened to one kind of row: ``new`` (inserted), ``updated`` (the source's
    version replaced the destination's), ``unchanged`` (equal data), ``kept`` (the
    destination's version won the conflict rule and stayed)."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    kept: int = 0


@dataclass
class SyncReport:
    """The outcome of one :func:`sync`. ``episodes`` is None when episodes were not copied;
    its ``kept`` counts conflicting episodes (same (session_id, seq), different text).
    ``links``: provenance links added. ``skipped_edges``: source edges whose end node
    disappeared while the source was read. ``dry_run``: nothing was written."""

    source: str
    destination: str
    nodes: Counts = field(default_factory=Counts)
    edges: Counts = field(default_factory=Counts)
    episodes: Counts | None = None
    links: int = 0
    skipped_edges: int = 0
    dry_run: bool = False

    @property
    def new(self) -> int:
        """Rows inserted: nodes, edges, episodes and provenance links."""
        return self.nodes.new + self.edges.new + (self.episodes.new if self.episodes else 0) + self.links

    @property
    def updated(self) -> int:
        """Rows overwritten by the source's version: nodes, edges, episodes."""
        return self.nodes.updated + self.edges.updated + (self.episodes.updated if self.episodes else 0)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``new``/``updated`` totals included)."""
        return {**asdict(self), "new": self.new, "updated": self.updated}

    def text(self, verb: str) -> str:
        """A few lines for a person, first ``<verb> SOURCE -> DEST: N new, M updated``."""
        def line(name: str, c: Counts) -> str:
            return (f"  {name}: {c.new} new, {c.updated} updated, {c.unchanged} unchanged, "
                    f"{c.kept} kept (the destination's version won)")
        out = [f"{verb}{' (dry run, nothing written)' if self.dry_run else ''} {self.source} -> "
               f"{self.destination}: {self.new} new, {self.updated} updated",
               line("nodes", self.nodes), line("edges", self.edges)]
        if self.episodes is not None:
            e = self.episodes
            out.append(f"  episodes: {e.new} new, {e.updated} updated (compression marks), {e.unchanged} unchanged, "
                       f"{e.kept} conflicting (kept as the destination has them)")
        else:
            out.append("  episodes: not copied (add --episodes)")
        out.append(f"  provenance links: {self.links} new")
        if self.skipped_edges:
            out.append(f"  skipped {self.skipped_edges} edges whose end node was deleted during the copy")
        return "\n".join(out)


# -- the data compared between two stores -------------------------------------------------
def _meta(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value or "{}")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _t(value: Any) -> float | None:
    return None if value is None else round(float(value) / TIME_RESOLUTION_S) * TIME_RESOLUTION_S


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass
class _Node:
    id: int
    key: NodeKey
    content: str
    metadata: dict
    created_at: float
    updated_at: float
    valid_from: float | None
    valid_to: float | None
    superseded_by: NodeKey | None
    session_id: str | None
    source: str | None
    tags: list[str]

    def row(self, created_at: float) -> tuple:
        """The fields :func:`.graph.write_node_copies` takes (``NODE_COPY_FIELDS`` order)."""
        return (self.key[0], self.key[1], self.content, self.metadata, created_at, self.updated_at,
                self.valid_from, self.valid_to, self.session_id, self.source)

    def data(self) -> str:
        return _canonical([self.content, self.metadata, _t(self.valid_from), _t(self.valid_to),
                           list(self.superseded_by) if self.superseded_by else None,
                           self.session_id, self.source, sorted(self.tags)])


@dataclass
class _Edge:
    weight: float
    metadata: dict
    created_at: float
    updated_at: float

    def data(self) -> str:
        return _canonical([round(float(self.weight), 6), self.metadata])


def winner(source_updated_at: float, source_data: str, dest_updated_at: float, dest_data: str) -> str:
    """Which version of one node or edge present on both sides wins: ``"same"`` (equal data),
    ``"source"`` or ``"destination"``.

    The later ``updated_at`` (epoch seconds, compared at :data:`TIME_RESOLUTION_S`) wins; on a
    tie, the larger SHA-256 of the data (the canonical JSON text of the compared fields, see
    the module docstring). Symmetric: swapping the two sides swaps the answer.
    """
    if source_data == dest_data:
        return "same"
    ts, td = _t(source_updated_at), _t(dest_updated_at)
    if ts != td:
        return "source" if ts > td else "destination"
    hs = hashlib.sha256(source_data.encode()).hexdigest()
    hd = hashlib.sha256(dest_data.encode()).hexdigest()
    return "source" if hs > hd else "destination"


_NODE_COLUMNS = ("n.id, n.type, n.label, n.content, n.metadata, n.created_at, n.updated_at, n.valid_from,"
                 " n.valid_to, n.session_id, n.source, s.type AS sup_type, s.label AS sup_label")


def _read_nodes(conn) -> dict[NodeKey, _Node]:
    tags: dict[int, list[str]] = {}
    for node_id, tag in conn.execute("SELECT node_id, tag FROM node_tags").fetchall():
        tags.setdefault(node_id, []).append(tag)
    out: dict[NodeKey, _Node] = {}
    for r in conn.execute(f"SELECT {_NODE_COLUMNS} FROM nodes n LEFT JOIN nodes s ON s.id = n.superseded_by"
                          " ORDER BY n.id").fetchall():
        key = (r["type"], r["label"])
        out[key] = _Node(r["id"], key, r["content"] or "", _meta(r["metadata"]), float(r["created_at"]),
                         float(r["updated_at"]), r["valid_from"], r["valid_to"],
                         (r["sup_type"], r["sup_label"]) if r["sup_type"] is not None else None,
                         r["session_id"], r["source"], sorted(tags.get(r["id"], [])))
    return out


def _read_edges(conn) -> dict[tuple[NodeKey, str, NodeKey], _Edge]:
    out = {}
    for r in conn.execute(
            "SELECT s.type AS s_type, s.label AS s_label, e.type AS e_type, d.type AS d_type, d.label AS d_label,"
            " e.weight, e.metadata, e.created_at, e.updated_at"
            " FROM edges e JOIN nodes s ON s.id = e.src JOIN nodes d ON d.id = e.dst ORDER BY e.id").fetchall():
        out[((r["s_type"], r["s_label"]), r["e_type"], (r["d_type"], r["d_label"]))] = _Edge(
            float(r["weight"]), _meta(r["metadata"]), float(r["created_at"]), float(r["updated_at"]))
    return out


_EPISODE_DATA = ("kind", "role", "tool", "path", "text", "args", "meta", "timestamp", "provenance")


def _episode_data(row) -> str:
    values = []
    for col in _EPISODE_DATA:
        v = row[col]
        if col in ("args", "meta") and v is not None and not isinstance(v, str):
            v = json.dumps(v)
        if col in ("args", "meta") and isinstance(v, str):
            try:
                v = _canonical(json.loads(v))
            except ValueError:
                pass
        values.append(_t(v) if col == "timestamp" else v)
    return _canonical(values)


class _Rollback(Exception):
    """Raised inside the destination transaction of a dry run to undo it."""


# -- the copy -------------------------------------------------------------------------------
def sync(source: Database, dest: Database, *, episodes: bool = False, dry_run: bool = False,
         source_name: str = "", dest_name: str = "") -> SyncReport:
    """Copy graph memory from ``source`` to ``dest`` (see the module docstring for what,
    the identity of rows and the conflict rule).

    :param source: / :param dest: open stores (:class:`opensage.store.Database` or
        :class:`opensage.pgstore.PostgresDatabase`); both are migrated first.
    :param episodes: also copy raw episodes (and so every provenance link).
    :param dry_run: count what would change and write nothing (the destination's
        transaction is rolled back).
    :param source_name: / :param dest_name: how the report names the stores.
    :returns: a :class:`SyncReport`.
    :raises opensage.errors.StoreUnavailable: a store cannot be reached (nothing written).
    """
    Graph(source)
    Graph(dest)
    report = SyncReport(source_name, dest_name, dry_run=dry_run, episodes=Counts() if episodes else None)
    src = source.conn
    # edges first: every end node they name is then among the nodes read after them
    # (unless deleted in between, then the edge is skipped)
    src_edges = _read_edges(src)
    src_nodes = _read_nodes(src)
    links = [(r[0], r[1], int(r[2])) for r in src.execute(
        "SELECT n.id, e.session_id, e.seq FROM node_episodes ne JOIN nodes n ON n.id = ne.node_id"
        " JOIN episodes e ON e.id = ne.episode_id").fetchall()]
    src_episodes = []
    if episodes:
        cols = ", ".join(EPISODE_COLUMNS)
        src_episodes = src.execute(f"SELECT {cols} FROM episodes ORDER BY session_id, seq").fetchall()
    try:
        with dest.transaction() as conn:
            _copy(conn, report, src_nodes, src_edges, links, src_episodes)
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    except Exception as exc:
        if not _database_error(exc):
            raise
        # e.g. text PostgreSQL cannot store (a NUL character), a value over a column's limit
        raise OpenSageError(f"copying into {dest_name or 'the destination'} failed, nothing was written: "
                            f"{type(exc).__name__}: {str(exc).strip()[:500]}") from None
    return report


def _database_error(exc: BaseException) -> bool:
    """True for an error a store raised (``sqlite3.Error``, any ``psycopg.Error``)."""
    import sqlite3

    return isinstance(exc, sqlite3.Error) or any(
        c.__module__.split(".")[0] == "psycopg" and c.__name__ == "Error" for c in type(exc).__mro__)


def _copy(conn, report: SyncReport, src_nodes: dict[NodeKey, _Node], src_edges: dict, links: list,
          src_episodes: list) -> None:
    dst_nodes = _read_nodes(conn)
    c = report.nodes
    fresh: list[_Node] = []
    changed: list[tuple[_Node, _Node]] = []
    for key, n in src_nodes.items():
        mine = dst_nodes.get(key)
        if mine is None:
            fresh.append(n)
            continue
        verdict = winner(n.updated_at, n.data(), mine.updated_at, mine.data())
        if verdict == "same":
            c.unchanged += 1
        elif verdict == "destination":
            c.kept += 1
        else:
            changed.append((n, mine))
    c.new, c.updated = len(fresh), len(changed)
    ids: dict[NodeKey, int] = {k: n.id for k, n in dst_nodes.items()}
    if fresh:
        write_node_copies(conn, [n.row(n.created_at) for n in fresh])
        ids = {(r[1], r[2]): r[0] for r in conn.execute("SELECT id, type, label FROM nodes").fetchall()}
        add_node_tags(conn, [(ids[n.key], t) for n in fresh for t in n.tags])
    for n, mine in changed:
        overwrite_node_copy(conn, mine.id, n.row(min(n.created_at, mine.created_at)))
        if mine.tags != n.tags:
            set_node_tags(conn, mine.id, n.tags)
    # supersession points at nodes by id: set once every copied node has one
    for n, mine in [(n, None) for n in fresh] + changed:
        target = ids.get(n.superseded_by) if n.superseded_by else None
        current = ids.get(mine.superseded_by) if mine is not None and mine.superseded_by else None
        if target != current:
            set_superseded_by(conn, ids[n.key], target)

    dst_edges = _read_edges(conn)
    c = report.edges
    edge_rows = []
    for (s, etype, d), e in src_edges.items():
        if s not in ids or d not in ids:
            report.skipped_edges += 1
            continue
        mine = dst_edges.get((s, etype, d))
        verdict = "new" if mine is None else winner(e.updated_at, e.data(), mine.updated_at, mine.data())
        if verdict == "same":
            c.unchanged += 1
        elif verdict == "destination":
            c.kept += 1
        else:
            edge_rows.append((ids[s], ids[d], etype, e.weight, e.metadata, e.created_at, e.updated_at))
            if mine is None:
                c.new += 1
            else:
                c.updated += 1
    write_edge_rows(conn, edge_rows)

    dst_episodes: dict[tuple[str, int], int] = {}
    theirs: dict[tuple[str, int], tuple[str, Any, Any]] = {}
    for row in conn.execute(f"SELECT id, {', '.join(EPISODE_COLUMNS)} FROM episodes").fetchall():
        k = (row["session_id"], int(row["seq"]))
        dst_episodes[k] = row["id"]
        if src_episodes:  # only the digest of its data is kept: episodes can be many and long
            theirs[k] = (hashlib.sha256(_episode_data(row).encode()).hexdigest(), row["compressed_at"],
                         row["modeled_at"])
    conflicting: set[tuple[str, int]] = set()
    if src_episodes:
        c = report.episodes
        fresh = []
        for row in src_episodes:
            k = (row["session_id"], int(row["seq"]))
            if k not in dst_episodes:
                fresh.append(tuple(
                    json.dumps(row[col]) if col in ("args", "meta") and row[col] is not None
                    and not isinstance(row[col], str) else row[col] for col in EPISODE_COLUMNS))
                continue
            digest, compressed_at, modeled_at = theirs[k]
            if hashlib.sha256(_episode_data(row).encode()).hexdigest() != digest:
                c.kept += 1
                conflicting.add(k)
                continue
            marks = {col: row[col] for col, have in (("compressed_at", compressed_at), ("modeled_at", modeled_at))
                     if row[col] is not None and have is None}
            if marks:
                fill_marks(conn, dst_episodes[k], **marks)
                c.updated += 1
            else:
                c.unchanged += 1
        new_ids = insert_episode_copies(conn, fresh)
        c.new += len(new_ids)
        dst_episodes.update(new_ids)

    by_id = {n.id: key for key, n in src_nodes.items()}
    have = {(r[0], r[1]) for r in conn.execute("SELECT node_id, episode_id FROM node_episodes").fetchall()}
    wanted = set()
    for node_id, session_id, seq in links:
        key = by_id.get(node_id)
        ep = dst_episodes.get((session_id, seq))
        if key is None or ep is None or key not in ids or (session_id, seq) in conflicting:
            continue
        if (ids[key], ep) not in have:
            wanted.add((ids[key], ep))
    link_episode_pairs(conn, sorted(wanted))
    report.links = len(wanted)


# -- naming and opening stores ----------------------------------------------------------------
def team_url(given: str | None, workspace: Path) -> str:
    """The team store's URL: ``given`` (``--to``/``--from``), else what every other command
    uses for ``workspace`` (``$OPENSAGE_DATABASE_URL``, or the project's trusted
    ``team.database_url``; :func:`opensage.store.database_url`).

    :raises UsageError: neither names one, or the project file is not trusted (exit 2).
    """
    if given and given.strip():
        return given.strip()
    url = database_url(Workspace(workspace))
    if not url:
        raise UsageError(f"no team store named: pass --to/--from URL (postgresql://user@host:5432/dbname) "
                         f"or set {TEAM_URL_ENV}.")
    return url


def open_store(url: str, workspace: Path):
    """Open the store named by ``url`` for ``workspace`` (whose project key the team store
    uses); returns ``(database, description)`` where the description has no password.

    * ``postgresql://…`` / ``postgres://…``: the team store (:mod:`opensage.pgstore`);
      it is connected to at once, so an unreachable server fails here;
    * ``sqlite:///ABSOLUTE/PATH`` or a path: an existing SQLite file, or an existing
      workspace folder (its ``.opencode/opensage.db``, created when missing).

    :raises UsageError: a malformed URL, another scheme, or a SQLite path that does not
        exist (exit 2); the message names the URL with its password redacted.
    :raises opensage.errors.StoreUnavailable: the server cannot be reached (exit 1).
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise UsageError(f"store URL {shown!r} is malformed ({exc}); use postgresql://user@host:5432/dbname "
                         "or sqlite:///path/to/opensage.db") from None
    scheme = parts.scheme.lower()
    if scheme in ("postgresql", "postgres"):
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise UsageError(f"store URL {shown!r} names no server; use postgresql://user@host:5432/dbname")
        return _open_postgres(url, workspace), shown
    if scheme in ("sqlite", ""):
        path = Path(parts.path if scheme == "sqlite" else url).expanduser()
        if scheme == "sqlite" and parts.netloc:
            raise UsageError(f"store URL {shown!r}: a SQLite URL has no host; use sqlite:///absolute/path/opensage.db")
        if path.is_dir():  # a workspace folder: its store is made when missing, as any command does
            path = path / ".opencode" / "opensage.db"
        elif not path.is_file():
            raise UsageError(f"no SQLite store at {str(path)!r} (from {shown!r}); name an existing opensage.db "
                             "or a workspace folder that has one.")
        return Database(path.resolve()), str(path.resolve())
    raise UsageError(f"store URL {shown!r} has an unknown scheme {parts.scheme!r}; use postgresql://user@host:5432/dbname "
                     "or sqlite:///path/to/opensage.db")


def _open_postgres(url: str, workspace: Path):
    db = PostgresDatabase(url, project_key(Workspace(workspace)))
    try:
        db.conn  # noqa: B018 - connect now: an unreachable server fails before anything is read or written
    except ImportError as exc:  # psycopg is missing from this installation
        raise UsageError(f"the team store needs psycopg ({exc}); pip install 'psycopg[binary,pool]'") from None
    return db


def close_store(db) -> None:
    """Close a store opened by :func:`open_store` (its pool too, for the team store)."""
    closer = getattr(db, "close_pool", None) or db.close
    try:
        closer()
    except OpenSageError:
        pass


def local_store(workspace: Path, must_exist: bool) -> Database:
    """The workspace's own SQLite store (``.opencode/opensage.db``), whatever
    ``$OPENSAGE_DATABASE_URL`` says.

    :raises UsageError: ``must_exist`` and there is no such file (nothing to push).
    """
    path = workspace / ".opencode" / "opensage.db"
    if must_exist and not path.is_file():
        raise UsageError(f"no local store at {str(path)!r}: nothing to push (is --workspace the right project?).")
    return Database(path)

