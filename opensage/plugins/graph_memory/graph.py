"""The graph store: nodes, typed weighted edges and their FTS5 index, over :class:`opensage.store.Database`.

Node ids are shown as ``n<integer>`` (``n42``); anywhere a node is named, its id or its
exact label is accepted.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from opensage.camel import camel, camel_dict
from opensage.errors import NotFoundError, UsageError
from opensage.store import Database, in_chunks
from opensage.plugins.graph_memory.schema import MIGRATIONS

__all__ = ["Graph", "Node", "normalize_tags", "near_duplicate", "TAG_NAME", "Edge", "NODE_TYPES", "EDGE_TYPES", "identifier_terms", "node_terms", "insert_node_row", "update_node_row", "delete_node_row", "write_edge_row", "delete_edge_row", "move_edges", "link_episodes", "format_id", "parse_id"]

#: Node types of the seed plus code-graph ones. Other types are accepted too (lowercase words).
NODE_TYPES = (
    "code", "concept", "entity", "decision", "query", "answer", "event", "file",
    "module", "class", "function", "method", "error", "command", "session", "task", "plan", "agent",
)
#: Common edge types; any lowercase snake_case word is accepted.
EDGE_TYPES = (
    "uses", "depends_on", "implements", "calls", "imports", "contains", "inherits",
    "mentions", "derived_from", "fixes", "answers", "touches", "related_to", "produced",
)
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def identifier_terms(text: str) -> str:
    """Split identifiers into words: ``ParseConfig.parse_value`` -> ``parse config parse value``."""
    words = []
    for token in re.findall(r"[A-Za-z0-9]+", text):
        parts = _CAMEL.findall(token)
        if len(parts) > 1:
            words.extend(p.lower() for p in parts)
    return " ".join(words)


def node_terms(label: str, metadata: dict | None = None) -> str:
    """The ``terms`` index column of a node: the label's identifier words plus, for a code
    symbol, its short name (``metadata["name"]``). One rule for every writer, so equal
    nodes get equal index rows (migration m006 back-filled old rows with a frozen copy)."""
    name = (metadata or {}).get("name")
    return f"{identifier_terms(label)} {name if isinstance(name, str) else ''}".strip()


# -- the writer of the ``nodes`` table -------------------------------------------------------
# Every path that stores nodes (add-node, ingest of every language, the memory-server tools,
# Markdown and JSONL import, compaction, forget) goes through these three functions, inside
# the caller's transaction. ``nodes_fts`` follows by SQLite triggers (migration m006): no
# Python code writes index rows.
def insert_node_row(conn, *, type: str, label: str, content: str = "", metadata: dict | None = None,
                    now: float | None = None, valid_from: float | None = None, session_id: str | None = None,
                    source: str | None = None, dated: bool = True) -> int:
    """Insert one node row (no checks: callers validate); returns its id.

    :param now: created/updated time, epoch seconds (default now); ``valid_from`` defaults to it.
    :param dated: False leaves ``valid_from`` NULL (code symbols and memory-server entities,
        which time filters do not select).
    :raises sqlite3.IntegrityError: a node of that (type, label) exists.
    """
    now = time.time() if now is None else now
    meta = metadata or {}
    return conn.execute(
        "INSERT INTO nodes(type, label, content, metadata, created_at, updated_at, valid_from, session_id, source,"
        " terms) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (type, label, content or "", json.dumps(meta), now, now,
         (float(valid_from) if valid_from is not None else now) if dated else None, session_id, source, node_terms(label, meta)),
    ).lastrowid


def update_node_row(conn, node_id: int, *, label: str, content: str, metadata: dict, now: float | None = None,
                    session_id: str | None = None, source: str | None = None) -> None:
    """Set a node's content and metadata (``label`` is its current label, for the index
    terms); ``session_id``/``source`` fill only when the row has none. ``now``: epoch seconds."""
    conn.execute("UPDATE nodes SET content=?, metadata=?, terms=?, updated_at=?, session_id=coalesce(session_id, ?),"
                 " source=coalesce(source, ?) WHERE id=?",
                 (content or "", json.dumps(metadata), node_terms(label, metadata),
                  time.time() if now is None else now, session_id, source, node_id))


def delete_node_row(conn, node_id: int) -> None:
    """Delete one node row; its edges, tags and provenance links go by ``ON DELETE CASCADE``,
    its index row by trigger; nodes it had superseded become current again."""
    conn.execute("UPDATE nodes SET valid_to=NULL, superseded_by=NULL WHERE superseded_by=?", (node_id,))
    conn.execute("DELETE FROM embeddings WHERE kind='node' AND id=?", (node_id,))
    conn.execute("DELETE FROM edges WHERE src=? OR dst=?", (node_id, node_id))
    conn.execute("DELETE FROM nodes WHERE id=?", (node_id,))


# -- the writer of the ``edges`` and ``node_episodes`` tables (same callers as above) ---------
def write_edge_row(conn, src: int, dst: int, type: str, weight: float, metadata: dict | None = None,
                   now: float | None = None) -> None:
    """Insert the (src, type, dst) edge, or set its weight (0..1) and metadata when it exists.
    ``now``: epoch seconds (default now). No checks: callers validate."""
    now = time.time() if now is None else now
    conn.execute(
        "INSERT INTO edges(src, dst, type, weight, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?)"
        " ON CONFLICT(src, type, dst) DO UPDATE SET weight=excluded.weight, metadata=excluded.metadata,"
        " updated_at=excluded.updated_at",
        (src, dst, type, float(weight), json.dumps(metadata or {}), now, now))


def delete_edge_row(conn, edge_id: int) -> None:
    """Delete one edge by its row id."""
    conn.execute("DELETE FROM edges WHERE id=?", (edge_id,))


def move_edges(conn, old_id: int, new_id: int) -> None:
    """Re-point every edge of node ``old_id`` at ``new_id`` (a placeholder replaced by a node)."""
    conn.execute("UPDATE edges SET src=? WHERE src=?", (new_id, old_id))
    conn.execute("UPDATE edges SET dst=? WHERE dst=?", (new_id, old_id))


def link_episodes(conn, node_id: int, episode_ids: Iterable[int]) -> int:
    """Record that ``node_id`` was derived from ``episode_ids``; returns how many links are new."""
    added = 0
    for ep in episode_ids:
        added += conn.execute("INSERT OR IGNORE INTO node_episodes(node_id, episode_id) VALUES (?,?)",
                              (node_id, ep)).rowcount
    return added


def format_id(node_id: int) -> str:
    """The public id of node ``node_id``: ``n<id>`` (e.g. ``n42``)."""
    return f"n{node_id}"


def parse_id(text: str) -> int | None:
    """The integer id in a public node id ``n<digits>`` (surrounding spaces allowed), or None
    when ``text`` is not one.
    """
    m = re.fullmatch(r"n(\d+)", text.strip())
    return int(m.group(1)) if m else None


@camel
@dataclass
class Node:
    """A node. Times are epoch seconds.

    :param valid_from: when the knowledge became true (first recorded; the earliest
        provenance episode for compressed nodes); what ``since``/``until`` filter on.
    :param valid_to: when it stopped being current (superseded); None while current.
    :param superseded_by: id of the node that replaced it, or None.
    :param session_id: the session it came from (None when added outside a session).
    :param source: who recorded it (the session source: ``opencode``, ``claude``, ``cli``...).
    :param tags: lowercase tags (see :data:`TAG_NAME`), sorted.
    :param merged: set (not stored) when a write was merged into this existing node:
        ``{"label", "ratio"}`` of the near-duplicate that was folded in.
    """

    id: int
    type: str
    label: str
    content: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    valid_from: float | None = None
    valid_to: float | None = None
    superseded_by: int | None = None
    session_id: str | None = None
    source: str | None = None
    tags: list[str] = field(default_factory=list)
    merged: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        """The public id, ``n<id>``."""
        return format_id(self.id)

    @property
    def current(self) -> bool:
        """True while the node has not been superseded (``valid_to`` unset)."""
        return self.valid_to is None

    def as_dict(self) -> dict[str, Any]:
        """Every field under its camelCase name; ids as ``n<id>``; ``mergedDuplicate`` only
        when a write was merged into this node."""
        out = camel_dict(self, exclude={"merged"})
        out["id"] = self.ref
        out["supersededBy"] = format_id(self.superseded_by) if self.superseded_by else None
        if self.merged:
            out["mergedDuplicate"] = self.merged
        return out

    @classmethod
    def from_row(cls, row, tags: list[str] | None = None) -> "Node":
        """A node from a ``nodes`` row (a ``sqlite3.Row``); columns added by later migrations
        are optional, so rows of an older schema load too.

        :param tags: the node's tags (the row does not hold them).
        """
        keys = row.keys()
        return cls(row["id"], row["type"], row["label"], row["content"], json.loads(row["metadata"] or "{}"),
                   row["created_at"], row["updated_at"],
                   row["valid_from"] if "valid_from" in keys else row["created_at"],
                   row["valid_to"] if "valid_to" in keys else None,
                   row["superseded_by"] if "superseded_by" in keys else None,
                   row["session_id"] if "session_id" in keys else None,
                   row["source"] if "source" in keys else None,
                   list(tags or []))


@dataclass
class Edge:
    id: int
    src: int
    dst: int
    type: str
    weight: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The edge as JSON: ``{"id", "from": "n<id>", "to": "n<id>", "type", "weight" (0-1), "metadata"}``."""
        return {"id": self.id, "from": format_id(self.src), "to": format_id(self.dst), "type": self.type,
                "weight": self.weight, "metadata": self.metadata}

    @classmethod
    def from_row(cls, row) -> "Edge":
        """An edge from an ``edges`` row (a ``sqlite3.Row``; ``metadata`` is JSON text)."""
        return cls(row["id"], row["src"], row["dst"], row["type"], row["weight"], json.loads(row["metadata"] or "{}"))


#: Tags: lowercase, start with a letter or digit, then letters, digits and _ . : / - (at most 40).
TAG_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,39}$")
#: Tags per node at most.
MAX_TAGS = 32
#: Node types merged on write when a near-duplicate exists. Not code-graph nodes (two
#: similar qualified names are two symbols), not entities (Alice and Alicia are two
#: people), not per-run nodes (task, plan, outcome, agent: the coordinator keys them by run).
DEDUPE_TYPES = frozenset({"decision", "fact", "error", "concept", "answer", "query"})
#: A fuzzy (not identical) merge needs at least this many words in each text: short
#: names differ by one letter and mean different things.
DUPLICATE_MIN_WORDS = 4
#: rapidfuzz ``fuzz.ratio`` (0-100) on the normalised text at or above which two nodes are
#: near-duplicates. Chosen by hand on the labelled dev pairs of tests/test_memory_curation.py
#: (measured: rewordings by case, punctuation, a typo or a filler word score 97.6-100;
#: pairs that differ in one key word score 82-96.4, e.g. port 8080 / 8081 at 96.4, so the
#: ratio alone cannot separate them and the word check of :func:`near_duplicate` does).
#: 90 leaves room for longer rewordings. Not tuned or checked on held-out data.
DUPLICATE_RATIO = 90.0
#: Candidates (FTS5 matches of the same type) compared with rapidfuzz on each write.
DUPLICATE_CANDIDATES = 20
MAX_MERGED_LABELS = 20
#: Change cues of the deterministic supersession rule (see Graph.detect_supersession).
CHANGE_CUE = re.compile(
    r"\b(instead|switch(?:ed|ing)? (?:to|from|back)|replac(?:e|es|ed|ing)|no longer|rather than|revert(?:ed)?|"
    r"supersed(?:e|es|ed)|mov(?:e|ed|ing) (?:to|from|away)|drop(?:ped)?|stop using|changed? (?:to|from)|"
    r"migrat(?:e|ed|ing) (?:to|from))\b", re.IGNORECASE)
SUBJECT_MIN_SHARED = 2
GENERIC_DECISION_WORDS = frozenset("""
a an the and or of for to in on at by with from as is are be we us our it its this that these those will
use using used decide decided decision go going let lets now instead switch switched switching replace replaced
replacing rather than no longer revert reverted move moved moving drop dropped stop change changed migrate
migrated because since so which keep should must can do not
""".split())


def _subject_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 2 and w not in GENERIC_DECISION_WORDS}


def _normal_text(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", (text or "").lower()))


def near_duplicate(a: str, b: str) -> float | None:
    """The rapidfuzz ``fuzz.ratio`` (0-100) of two texts when they are near-duplicates, else None.

    Texts are lowercased with punctuation dropped. Near-duplicates: the same normalised
    text, or (both at least :data:`DUPLICATE_MIN_WORDS` words) ratio >= :data:`DUPLICATE_RATIO` *and* every word found in only one of
    them has a close partner in the other (ratio >= 80, a typo) and no word with a digit
    differs — so "use Postgres for the queue" and "use SQLite for the queue" stay two nodes.
    """
    from rapidfuzz import fuzz, process

    na, nb = _normal_text(a), _normal_text(b)
    if not na or not nb:
        return None
    if na == nb:
        return 100.0
    if min(len(na.split()), len(nb.split())) < DUPLICATE_MIN_WORDS:
        return None
    ratio = fuzz.ratio(na, nb)
    if ratio < DUPLICATE_RATIO:
        return None
    wa, wb = set(na.split()), set(nb.split())
    for mine, other in ((wa - wb, list(wb)), (wb - wa, list(wa))):
        for w in mine:
            if any(ch.isdigit() for ch in w):
                return None
            if w in _FILLER:
                continue
            best = process.extractOne(w, other, scorer=fuzz.ratio)
            if best is None or best[1] < 80:
                return None
    return ratio


_FILLER = frozenset("a an the to of we will should just also really please so then".split())


def normalize_tags(tags: Iterable[str] | None, check: bool = True) -> list[str]:
    """Lowercased, stripped, de-duplicated, sorted tags. Raises UsageError for an invalid one (``check``)."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[,\s]+", tags) if t]
    out = []
    for t in tags:
        t = str(t).strip().lower().lstrip("#")
        if check and not TAG_NAME.match(t):
            raise UsageError(f"tag {t!r} is not valid: use lowercase letters, digits and _ . : / - "
                             "(at most 40 characters), e.g. tags=[\"auth\",\"db\"].")
        out.append(t)
    out = sorted(set(out))
    if check and len(out) > MAX_TAGS:
        raise UsageError(f"at most {MAX_TAGS} tags per node, got {len(out)}.")
    return out


def check_type(value: str, what: str) -> str:
    """``value`` when it is a valid node or edge type (:data:`TYPE_NAME`: a lowercase word).

    :param what: how the message names it (``node type``, ``edge type``).
    :raises UsageError: not a lowercase word; the message gives an example.
    """
    if not TYPE_NAME.match(value or ""):
        raise UsageError(f"{what} {value!r} is not valid: use a lowercase word such as 'code' or 'depends_on'.")
    return value



#: Rows per statement of :func:`_bulk_insert_pg` (each column bound as one array).
PG_BULK_ROWS = 20_000


def _bulk_insert_pg(conn, node_rows, tag_rows, edge_rows) -> None:
    """The rows of :meth:`Graph.bulk_load` on the team store: one ``INSERT ... SELECT FROM
    unnest(arrays)`` per :data:`PG_BULK_ROWS` rows instead of a statement per row (COPY
    is refused on tables with row-level security)."""
    import itertools

    def chunks(rows):
        it = iter(rows)
        while batch := list(itertools.islice(it, PG_BULK_ROWS)):
            yield [list(col) for col in zip(*batch)]

    for cols in chunks(node_rows):
        conn.execute("INSERT INTO nodes(id, type, label, content, metadata, created_at, updated_at, valid_from, terms)"
                     " SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[],"
                     " ?::float8[], ?::float8[], ?::float8[], ?::text[])", cols)
    for cols in chunks(tag_rows):
        conn.execute("INSERT INTO node_tags(tag, node_id) SELECT * FROM unnest(?::text[], ?::bigint[])", cols)
    for cols in chunks(edge_rows):
        conn.execute("INSERT OR IGNORE INTO edges(src, dst, type, weight, metadata, created_at, updated_at)"
                     " SELECT s, d, t, w, '{}', c, u FROM unnest(?::bigint[], ?::bigint[], ?::text[], ?::float8[],"
                     " ?::float8[], ?::float8[]) AS x(s, d, t, w, c, u)", cols)

class Graph:
    """Nodes and edges in the workspace database (tables created on first use)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("graph-memory", MIGRATIONS)

    # -- nodes ---------------------------------------------------------------------------
    def upsert_node(self, type: str, label: str, content: str = "", metadata: dict | None = None,
                    *, merge_metadata: bool = True, episode_ids: Iterable[int] = (),
                    tags: Iterable[str] | None = None, session_id: str | None = None, source: str | None = None,
                    valid_from: float | None = None, dedupe: bool = True,
                    supersedes: int | None = None) -> tuple[Node, bool]:
        """Add a node, or update the node with the same (type, label).

        A new node of a :data:`DEDUPE_TYPES` type that is a near-duplicate of a current node
        of the same type (see :func:`near_duplicate`) is merged into that node instead
        (metadata merged, the new label kept in ``metadata.mergedLabels``, provenance
        episodes and tags added); the returned node then has ``merged`` set. A new
        ``decision`` that changes an earlier current decision on the same subject (see
        :meth:`detect_supersession`) supersedes it.

        :param tags: None keeps the tags; a list replaces them (lowercase, :data:`TAG_NAME`).
        :param session_id: / :param source: where it came from; kept from the first write.
        :param valid_from: epoch seconds it became true; default the earliest episode of
            ``episode_ids``, else now. Kept from the first write.
        :param dedupe: False skips merge-on-write (bulk imports, tests of exact labels).
        :param supersedes: id of a node this one replaces (marked superseded by it).
        :returns: (node, created) — ``created`` is False when an existing node was updated
            or the write was merged into a near-duplicate.
        :raises UsageError: empty label, invalid type or tag.
        """
        check_type(type, "node type")
        if not label or not label.strip():
            raise UsageError("node label must not be empty; give a short name, e.g. label=\"AuthService\".")
        new_tags = normalize_tags(tags) if tags is not None else None
        episode_ids = list(episode_ids)
        now = time.time()
        merged: dict[str, Any] | None = None
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM nodes WHERE type=? AND label=?", (type, label)).fetchone()
            if row is None and dedupe and type in DEDUPE_TYPES:
                dup = self._find_duplicate(conn, type, label, content or "")
                if dup is not None:
                    row, ratio = dup
                    merged = {"label": label, "ratio": round(ratio, 1)}
            if row is None:
                if valid_from is None and episode_ids:
                    marks = ",".join("?" * len(episode_ids))
                    valid_from = conn.execute(f"SELECT min(timestamp) FROM episodes WHERE id IN ({marks})",
                                              episode_ids).fetchone()[0]
                node_id = insert_node_row(conn, type=type, label=label, content=content or "", metadata=metadata,
                                          now=now, valid_from=valid_from, session_id=session_id, source=source)
                created = True
            else:
                node_id, created = row["id"], False
                meta = json.loads(row["metadata"] or "{}") if merge_metadata or merged else {}
                meta.update(metadata or {})
                if merged:
                    labels = [x for x in meta.get("mergedLabels", []) if x != label][-(MAX_MERGED_LABELS - 1):]
                    meta["mergedLabels"] = labels + [label]
                    new_content = row["content"] if len(row["content"]) >= len(content or "") else content
                else:
                    new_content = content if content else row["content"]
                update_node_row(conn, node_id, label=row["label"], content=new_content, metadata=meta, now=now,
                                session_id=session_id, source=source)
            link_episodes(conn, node_id, episode_ids)
            if new_tags is not None:
                if not merged:
                    conn.execute("DELETE FROM node_tags WHERE node_id=?", (node_id,))
                conn.executemany("INSERT OR IGNORE INTO node_tags(tag, node_id) VALUES (?,?)",
                                 [(t, node_id) for t in new_tags])
            if supersedes is not None and supersedes != node_id:
                self.supersede(supersedes, node_id)
            elif created and type == "decision":
                self.detect_supersession(node_id)
            final = conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
            node = Node.from_row(final, self.tags_of(node_id))
        node.merged = merged
        return node, created

    def _find_duplicate(self, conn, type: str, label: str, content: str):
        """(row, ratio) of a current node of ``type`` that ``label``/``content`` nearly duplicates, or None."""
        text = f"{label} {content}"
        words = list(dict.fromkeys(t for t in re.findall(r"[^\W_]+", text.lower()) if len(t) > 2))
        if not words:
            return None
        # a near-duplicate shares almost every word: ask FTS5 for nodes having all of the
        # three longest words, or all of the next three (so one typo does not hide it);
        # an AND query stays fast at 100k nodes where an OR of every word does not
        longest = sorted(words, key=lambda w: (-len(w), w))[:6]
        q = lambda ws: "(" + " AND ".join('"' + w.replace('"', '""') + '"' for w in ws) + ")"  # noqa: E731
        match = q(longest[:3]) + (" OR " + q(longest[3:]) if len(longest) > 3 else "")
        rows = conn.execute(
            "SELECT n.* FROM nodes_fts f CROSS JOIN nodes n ON n.id = f.rowid WHERE nodes_fts MATCH ? AND n.type = ?"
            " AND n.valid_to IS NULL LIMIT ?", (match, type, DUPLICATE_CANDIDATES)).fetchall()
        best = None
        for r in rows:
            ratio = near_duplicate(text, f"{r['label']} {r['content']}")
            if ratio is not None and (best is None or ratio > best[1]):
                best = (r, ratio)
        return best

    def tags_of(self, node_id: int) -> list[str]:
        """The tags of node ``node_id``, sorted ([] for an unknown node)."""
        return [r[0] for r in self.db.conn.execute("SELECT tag FROM node_tags WHERE node_id=? ORDER BY tag", (node_id,))]

    def tags_many(self, ids: Iterable[int]) -> dict[int, list[str]]:
        """``{node id: [tags, sorted]}`` for the ``ids`` that have tags (chunked ``IN`` queries)."""
        ids = list(ids)
        out: dict[int, list[str]] = {}
        for chunk, marks in in_chunks(ids):
            for nid, tag in self.db.conn.execute(
                    f"SELECT node_id, tag FROM node_tags WHERE node_id IN ({marks}) ORDER BY tag",
                    chunk):
                out.setdefault(nid, []).append(tag)
        return out

    def edit_tags(self, node_id: int, add: Iterable[str] = (), remove: Iterable[str] = (),
                  replace: Iterable[str] | None = None) -> list[str]:
        """Change a node's tags (``replace`` first, then ``add``, then ``remove``); returns the new tags.

        :raises UsageError: an invalid tag or more than :data:`MAX_TAGS` tags (nothing changed).
        """
        add_t, remove_t = normalize_tags(add), normalize_tags(remove, check=False)
        base = normalize_tags(replace) if replace is not None else self.tags_of(node_id)
        final = sorted((set(base) | set(add_t)) - set(remove_t))
        if len(final) > MAX_TAGS:
            raise UsageError(f"a node takes at most {MAX_TAGS} tags; this would give it {len(final)}. Remove some.")
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM node_tags WHERE node_id=?", (node_id,))
            conn.executemany("INSERT INTO node_tags(tag, node_id) VALUES (?,?)", [(t, node_id) for t in final])
            conn.execute("UPDATE nodes SET updated_at=? WHERE id=?", (time.time(), node_id))
        return final

    # -- validity --------------------------------------------------------------------------
    def supersede(self, old_id: int, new_id: int, at: float | None = None, relation: str = "supersedes") -> None:
        """Mark ``old_id`` superseded by ``new_id``: ``valid_to`` = ``at`` (default the new
        node's ``valid_from``, never before the old one's), ``superseded_by`` = new id, and an
        edge new -[relation]-> old (``supersedes``; always ``fixes`` when ``old_id`` is an
        ``error``, which is then also marked ``metadata.resolved``: superseding an error by
        hand records its fix).

        :raises UsageError: a node superseding itself, or a cycle (new already superseded by old).
        """
        if old_id == new_id:
            raise UsageError("a node cannot supersede itself; pass two different ids (old=n1 new=n2).")
        with self.db.transaction() as conn:
            old = conn.execute("SELECT id, type, valid_from, metadata FROM nodes WHERE id=?", (old_id,)).fetchone()
            new = conn.execute("SELECT id, valid_from, superseded_by FROM nodes WHERE id=?", (new_id,)).fetchone()
            if old is None or new is None:
                raise NotFoundError(f"unknown node {format_id(old_id if old is None else new_id)}.")
            if new["superseded_by"] == old_id:
                raise UsageError(f"{format_id(new_id)} is already superseded by {format_id(old_id)}; "
                                 "undo that first (a cycle would hide both).")
            when = at if at is not None else (new["valid_from"] or time.time())
            when = max(float(when), float(old["valid_from"] or 0))
            conn.execute("UPDATE nodes SET valid_to=?, superseded_by=?, updated_at=? WHERE id=?",
                         (when, new_id, time.time(), old_id))
            if old["type"] == "error":
                relation = "fixes"
                meta = json.loads(old["metadata"] or "{}")
                if not meta.get("resolved"):
                    meta["resolved"] = True
                    conn.execute("UPDATE nodes SET metadata=? WHERE id=?", (json.dumps(meta), old_id))
            # a fixes edge keeps the weight compression gave it (0.5 when new): fixers stay ranked
            self.upsert_edge(new_id, old_id, relation, 1.0 if relation == "supersedes" else 0.5)

    def mark_fixed(self, error_id: int, fixer_id: int | None, at: float | None = None) -> bool:
        """An error fixed stops being current: ``valid_to`` = ``at`` (epoch seconds of the fix,
        default now; never before the error's ``valid_from``), ``superseded_by`` = the fixer
        (a decision, file, fact... with an edge fixer -[fixes]-> error), ``metadata.resolved``
        = true. An error fixed without a known fixer (the same command succeeded later) only
        gets ``valid_to``. Already non-current errors and non-error nodes are left alone.

        :returns: True when the error was marked.
        :raises NotFoundError: an unknown fixer id.
        """
        row = self.db.conn.execute("SELECT type, valid_to, valid_from, metadata FROM nodes WHERE id=?",
                                   (error_id,)).fetchone()
        if row is None or row["type"] != "error" or row["valid_to"] is not None:
            return False
        when = max(float(at if at is not None else time.time()), float(row["valid_from"] or 0))
        with self.db.transaction() as conn:
            meta = json.loads(row["metadata"] or "{}")
            meta["resolved"] = True
            conn.execute("UPDATE nodes SET metadata=? WHERE id=?", (json.dumps(meta), error_id))
            if fixer_id is not None and fixer_id != error_id:
                self.supersede(error_id, fixer_id, at=when, relation="fixes")
            else:
                conn.execute("UPDATE nodes SET valid_to=?, updated_at=? WHERE id=?", (when, time.time(), error_id))
        return True

    def reopen(self, node_id: int) -> bool:
        """Make a non-current node current again (an error fixed earlier that came back).
        The ``fixes``/``supersedes`` edges stay as history. Returns True when it changed."""
        with self.db.transaction() as conn:
            cur = conn.execute("UPDATE nodes SET valid_to=NULL, superseded_by=NULL, updated_at=? WHERE id=?"
                               " AND valid_to IS NOT NULL", (time.time(), node_id))
        return cur.rowcount > 0

    def detect_supersession(self, node_id: int) -> list[int]:
        """Deterministic "same subject" rule for decisions; returns the ids it superseded.

        A decision supersedes an earlier *current* decision when its text has a change cue
        (:data:`CHANGE_CUE`: instead, switch to, replace, no longer, rather than, revert, ...)
        and the two share at least :data:`SUBJECT_MIN_SHARED` subject words (content words
        minus :data:`GENERIC_DECISION_WORDS`). Without a cue nothing is superseded (two
        decisions about one subject can both hold); mark those by hand with
        ``@memory-supersede``.
        """
        conn = self.db.conn
        row = conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        if row is None or row["type"] != "decision":
            return []
        text = f"{row['label']} {row['content']}"
        if not CHANGE_CUE.search(text):
            return []
        words = _subject_words(text)
        if len(words) < SUBJECT_MIN_SHARED:
            return []
        match = " OR ".join('"' + w + '"' for w in sorted(words))
        done = []
        for r in conn.execute(
                "SELECT n.id, n.label, n.content FROM nodes_fts f JOIN nodes n ON n.id = f.rowid WHERE nodes_fts MATCH ?"
                " AND n.type = 'decision' AND n.valid_to IS NULL AND n.id != ? AND n.valid_from <= ?"
                " ORDER BY bm25(nodes_fts) LIMIT 20", (match, node_id, row["valid_from"])).fetchall():
            if len(words & _subject_words(f"{r['label']} {r['content']}")) >= SUBJECT_MIN_SHARED:
                self.supersede(r["id"], node_id)
                done.append(r["id"])
        return done

    def subject_candidates(self, node_id: int, limit: int = 5) -> list[Node]:
        """Earlier current decisions of *other* sessions that :meth:`detect_supersession`
        finds *uncertain* for decision ``node_id``: a change cue with only one shared subject
        word, or at least :data:`SUBJECT_MIN_SHARED` shared words without a cue. At most
        ``limit`` (FTS5 best first). The caller may ask a model (see ``compress.SubjectJudge``)."""
        conn = self.db.conn
        row = conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        if row is None or row["type"] != "decision" or row["valid_to"] is not None:
            return []
        text = f"{row['label']} {row['content']}"
        cue = CHANGE_CUE.search(text) is not None
        words = _subject_words(text)
        if not words:
            return []
        match = " OR ".join('"' + w + '"' for w in sorted(words)[:30])
        out = []
        for r in conn.execute(
                "SELECT n.* FROM nodes_fts f JOIN nodes n ON n.id = f.rowid WHERE nodes_fts MATCH ?"
                " AND n.type = 'decision' AND n.valid_to IS NULL AND n.id != ? AND n.valid_from <= ?"
                " AND coalesce(n.session_id, '') != coalesce(?, '') ORDER BY bm25(nodes_fts) LIMIT ?",
                (match, node_id, row["valid_from"], row["session_id"], limit * 4)).fetchall():
            shared = len(words & _subject_words(f"{r['label']} {r['content']}"))
            if (cue and shared == 1) or (not cue and shared >= SUBJECT_MIN_SHARED):
                out.append(Node.from_row(r))
                if len(out) >= limit:
                    break
        return out

    def get(self, node_id: int) -> Node | None:
        """Node ``node_id`` with its tags, or None when there is none."""
        row = self.db.conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return Node.from_row(row, self.tags_of(node_id)) if row else None

    def get_many(self, ids: Iterable[int]) -> dict[int, Node]:
        """``{id: Node}`` (with tags) for the ``ids`` that exist; unknown ids are left out."""
        ids = list(ids)
        out: dict[int, Node] = {}
        for chunk, marks in in_chunks(ids):
            q = f"SELECT * FROM nodes WHERE id IN ({marks})"
            for row in self.db.conn.execute(q, chunk):
                out[row["id"]] = Node.from_row(row)
        for nid, tags in self.tags_many(out).items():
            out[nid].tags = tags
        return out

    def resolve(self, ref: str, what: str = "node") -> Node:
        """A node by id (``n42``) or exact label. Raises NotFoundError, or UsageError when a label is ambiguous."""
        ref = (ref or "").strip()
        nid = parse_id(ref)
        if nid is not None:
            node = self.get(nid)
            if node is not None:
                return node
        rows = self.db.conn.execute("SELECT * FROM nodes WHERE label=? ORDER BY id", (ref,)).fetchall()
        if len(rows) == 1:
            return Node.from_row(rows[0], self.tags_of(rows[0]["id"]))
        if len(rows) > 1:
            options = ", ".join(f"{format_id(r['id'])} ({r['type']})" for r in rows[:6])
            raise UsageError(f"{what} label {ref!r} is ambiguous: {options}; pass the id instead.")
        raise NotFoundError(
            f"unknown {what} {ref!r}: no node has that id or exact label. "
            f"Find it with @memory-query query=\"{ref}\" and pass its id (e.g. n12)."
        )

    def update_node(self, node_id: int, *, content: str | None = None, metadata: dict | None = None) -> Node:
        """Set a node's content and/or replace its metadata (``None`` keeps the current value).

        Unlike :meth:`upsert_node`, an empty ``content`` clears it. For edits by a person
        (Markdown import, the web view).

        :raises NotFoundError: no node ``node_id``.
        """
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"unknown node {format_id(node_id)}: it was removed; reload and try again.")
            new_content = row["content"] if content is None else content
            new_meta = json.loads(row["metadata"] or "{}") if metadata is None else metadata
            update_node_row(conn, node_id, label=row["label"], content=new_content, metadata=new_meta, now=now)
            final = conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return Node.from_row(final, self.tags_of(node_id))

    def delete_edge(self, src: int, dst: int, type: str) -> bool:
        """Remove the (src, type, dst) edge; returns whether there was one."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM edges WHERE src=? AND type=? AND dst=?", (src, type, dst))
        return cur.rowcount > 0

    # -- forgetting and retention ------------------------------------------------------------
    def forget_node(self, node_id: int) -> dict[str, Any]:
        """Delete a node with its edges, tags, provenance links and vectors; nodes it had
        superseded become current again. Returns what was removed.

        :raises NotFoundError: unknown node.
        """
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id, type, label FROM nodes WHERE id=?", (node_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"unknown node {format_id(node_id)}.")
            edges = conn.execute("SELECT count(*) FROM edges WHERE src=? OR dst=?", (node_id, node_id)).fetchone()[0]
            links = conn.execute("SELECT count(*) FROM node_episodes WHERE node_id=?", (node_id,)).fetchone()[0]
            restored = [r[0] for r in conn.execute("SELECT id FROM nodes WHERE superseded_by=?", (node_id,))]
            delete_node_row(conn, node_id)
        return {"nodes": [{"id": format_id(node_id), "type": row["type"], "label": row["label"]}],
                "edges": edges, "provenanceLinks": links, "restored": [format_id(r) for r in restored]}

    def _delete_episodes(self, conn, ids: list[int]) -> None:
        for chunk, marks in in_chunks(ids):
            conn.execute(f"DELETE FROM embeddings WHERE kind='episode' AND id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM episodes WHERE id IN ({marks})", chunk)

    def forget_session(self, session_id: str, keep_nodes: bool = False) -> dict[str, Any]:
        """Delete a session's episodes and (unless ``keep_nodes``) its session node and the
        nodes that came only from it (recorded with that session and with no provenance
        episode of another session). Returns what was removed.

        :raises NotFoundError: no episode and no node of that session.
        """
        conn = self.db.conn
        ep_ids = [r[0] for r in conn.execute("SELECT id FROM episodes WHERE session_id=?", (session_id,))]
        node_rows = [] if keep_nodes else conn.execute(
            "SELECT n.id, n.type, n.label FROM nodes n WHERE (n.session_id=? OR (n.type='session' AND n.label=?))"
            " AND NOT EXISTS (SELECT 1 FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id"
            "  WHERE ne.node_id = n.id AND e.session_id != ?) ORDER BY n.id",
            (session_id, session_id, session_id)).fetchall()
        if not ep_ids and not node_rows:
            raise NotFoundError(f"unknown session {session_id!r}: no episode and no node of that session. "
                                "Sessions are listed by @memory-query mode=pattern field=type query=session.")
        with self.db.transaction() as tx:
            self._delete_episodes(tx, ep_ids)
            edges = 0
            for r in node_rows:
                edges += tx.execute("SELECT count(*) FROM edges WHERE src=? OR dst=?", (r[0], r[0])).fetchone()[0]
                delete_node_row(tx, r[0])
        return {"session": session_id, "episodes": len(ep_ids), "edges": edges,
                "nodes": [{"id": format_id(r[0]), "type": r[1], "label": r[2]} for r in node_rows]}

    def apply_retention(self, episode_days: float, now: float | None = None) -> int:
        """Delete raw episodes compressed more than ``episode_days`` days ago (lasting nodes
        are kept; their provenance links to those episodes go). Returns how many."""
        now = time.time() if now is None else now
        cutoff = now - float(episode_days) * 86400
        ids = [r[0] for r in self.db.conn.execute(
            "SELECT id FROM episodes WHERE compressed_at IS NOT NULL AND compressed_at < ?", (cutoff,))]
        with self.db.transaction() as conn:
            self._delete_episodes(conn, ids)
            conn.execute("INSERT OR REPLACE INTO memory_upkeep(key, value) VALUES ('retention_at', ?)", (str(now),))
        return len(ids)

    def upkeep_due(self, interval_s: float, now: float | None = None) -> bool:
        """True when retention last ran more than ``interval_s`` seconds ago (or never)."""
        now = time.time() if now is None else now
        row = self.db.conn.execute("SELECT value FROM memory_upkeep WHERE key='retention_at'").fetchone()
        return row is None or now - float(row[0]) >= interval_s

    # -- edges ---------------------------------------------------------------------------
    def upsert_edge(self, src: int, dst: int, type: str, weight: float = 0.5,
                    metadata: dict | None = None) -> tuple[Edge, bool]:
        """Add an edge, or merge into the existing (src, type, dst) edge (weight = max, metadata merged).

        :param weight: in [0, 1].
        :returns: (edge, created).
        """
        check_type(type, "edge type")
        if not 0.0 <= float(weight) <= 1.0:
            raise UsageError(f"edge weight must be between 0 and 1, got {weight}.")
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM edges WHERE src=? AND type=? AND dst=?", (src, type, dst)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO edges(src, dst, type, weight, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (src, dst, type, float(weight), json.dumps(metadata or {}), now, now),
                )
                edge_id, created = cur.lastrowid, True
            else:
                meta = json.loads(row["metadata"] or "{}")
                meta.update(metadata or {})
                conn.execute("UPDATE edges SET weight=?, metadata=?, updated_at=? WHERE id=?",
                             (max(row["weight"], float(weight)), json.dumps(meta), now, row["id"]))
                edge_id, created = row["id"], False
            final = conn.execute("SELECT * FROM edges WHERE id=?", (edge_id,)).fetchone()
            if type == "fixes" and created:
                # recording a fix (by compaction or by hand) ends the error's validity
                at = (metadata or {}).get("fixedAt")
                self.mark_fixed(dst, src, at if isinstance(at, (int, float)) else None)
        return Edge.from_row(final), created

    def edges_of(self, node_id: int, direction: str = "both", types: Iterable[str] | None = None) -> list[Edge]:
        """Edges leaving (``out``), entering (``in``) or touching (``both``) a node."""
        types = list(types or [])
        tfilter = f" AND type IN ({','.join('?' * len(types))})" if types else ""
        rows = []
        if direction in ("out", "both"):
            rows += self.db.conn.execute(f"SELECT * FROM edges WHERE src=?{tfilter}", (node_id, *types)).fetchall()
        if direction in ("in", "both"):
            rows += self.db.conn.execute(f"SELECT * FROM edges WHERE dst=?{tfilter}", (node_id, *types)).fetchall()
        return [Edge.from_row(r) for r in rows]

    # -- bulk ----------------------------------------------------------------------------
    def bulk_load(self, nodes: Iterable[tuple[str, str, str, dict]],
                  edges: Iterable[tuple[int, int, str, float]] = (), *,
                  tags: Sequence[Iterable[str]] | None = None,
                  valid_from: Sequence[float] | None = None) -> list[int]:
        """Insert many new nodes, then edges between them, in one transaction (FTS kept in sync).

        For imports and benchmarks: no upsert logic, so (type, label) pairs must be new
        (a duplicate raises ``sqlite3.IntegrityError`` and nothing is written).

        :param nodes: (type, label, content, metadata) tuples.
        :param edges: (src index, dst index, type, weight) tuples; indexes point into ``nodes``.
        :param tags: tags per node (same order as ``nodes``), optional.
        :param valid_from: epoch seconds per node (same order), optional; default now.
        :returns: the new node ids, in ``nodes`` order.
        :raises UsageError: invalid node/edge type, empty label, weight outside [0, 1].
        """
        nodes = list(nodes)
        edges = list(edges)
        for type_, label, _c, _m in nodes:
            check_type(type_, "node type")
            if not label or not label.strip():
                raise UsageError("node label must not be empty; give a short name, e.g. label=\"AuthService\".")
        for _s, _d, etype, weight in edges:
            check_type(etype, "edge type")
            if not 0.0 <= float(weight) <= 1.0:
                raise UsageError(f"edge weight must be between 0 and 1, got {weight}.")
        tag_lists = [normalize_tags(t) for t in tags] if tags is not None else None
        if (tag_lists is not None and len(tag_lists) != len(nodes)) or (
                valid_from is not None and len(valid_from) != len(nodes)):
            raise UsageError("bulk_load: tags and valid_from need one entry per node.")
        now = time.time()
        with self.db.transaction() as conn:
            if self.db.backend == "postgresql":  # ids are global there: take them from the sequence
                ids = [r[0] for r in conn.execute("SELECT nextval('nodes_id_seq') FROM generate_series(1, ?)",
                                                  (len(nodes),))]
            else:
                first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM nodes").fetchone()[0]
                ids = list(range(first, first + len(nodes)))
            node_rows = ((i, t, l, c or "", json.dumps(m or {}), now, now,
                          float(valid_from[n]) if valid_from is not None else now, node_terms(l, m))
                         for n, (i, (t, l, c, m)) in enumerate(zip(ids, nodes)))
            tag_rows = ((t, i) for i, ts in zip(ids, tag_lists or ()) for t in ts)
            edge_rows = ((ids[s], ids[d], t, float(w), now, now) for s, d, t, w in edges)
            if self.db.backend == "postgresql":
                _bulk_insert_pg(conn, node_rows, tag_rows, edge_rows)
            else:
                conn.executemany(
                    "INSERT INTO nodes(id, type, label, content, metadata, created_at, updated_at, valid_from, terms)"
                    " VALUES (?,?,?,?,?,?,?,?,?)", node_rows)
                conn.executemany("INSERT INTO node_tags(tag, node_id) VALUES (?,?)", tag_rows)
                conn.executemany(
                    "INSERT OR IGNORE INTO edges(src, dst, type, weight, metadata, created_at, updated_at)"
                    " VALUES (?,?,?,?,'{}',?,?)", edge_rows)
        return ids

    def counts(self) -> dict[str, int]:
        """``{"nodes": n, "edges": n, "episodes": n}``: row counts of the three tables."""
        c = self.db.conn
        return {
            "nodes": c.execute("SELECT count(*) FROM nodes").fetchone()[0],
            "edges": c.execute("SELECT count(*) FROM edges").fetchone()[0],
            "episodes": c.execute("SELECT count(*) FROM episodes").fetchone()[0],
        }


def graph_for(host) -> Graph:
    """The host's :class:`Graph` (one per host)."""
    return host.service(Graph, lambda h: Graph(h.db))
