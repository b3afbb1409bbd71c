"""The graph store: nodes, typed weighted edges and their FTS5 index, over :class:`opensage.store.Database`.

Node ids are shown as ``n<integer>`` (``n42``); anywhere a node is named, its id or its
exact label is accepted.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from opensage.errors import NotFoundError, UsageError
from opensage.store import Database
from opensage.plugins.graph_memory.schema import MIGRATIONS

__all__ = ["Graph", "Node", "Edge", "NODE_TYPES", "EDGE_TYPES", "identifier_terms", "format_id", "parse_id"]

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


def format_id(node_id: int) -> str:
    return f"n{node_id}"


def parse_id(text: str) -> int | None:
    m = re.fullmatch(r"n(\d+)", text.strip())
    return int(m.group(1)) if m else None


@dataclass
class Node:
    id: int
    type: str
    label: str
    content: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def ref(self) -> str:
        return format_id(self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.ref, "type": self.type, "label": self.label, "content": self.content,
            "metadata": self.metadata, "createdAt": self.created_at, "updatedAt": self.updated_at,
        }

    @classmethod
    def from_row(cls, row) -> "Node":
        return cls(row["id"], row["type"], row["label"], row["content"], json.loads(row["metadata"] or "{}"),
                   row["created_at"], row["updated_at"])


@dataclass
class Edge:
    id: int
    src: int
    dst: int
    type: str
    weight: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "from": format_id(self.src), "to": format_id(self.dst), "type": self.type,
                "weight": self.weight, "metadata": self.metadata}

    @classmethod
    def from_row(cls, row) -> "Edge":
        return cls(row["id"], row["src"], row["dst"], row["type"], row["weight"], json.loads(row["metadata"] or "{}"))


def check_type(value: str, what: str) -> str:
    if not TYPE_NAME.match(value or ""):
        raise UsageError(f"{what} {value!r} is not valid: use a lowercase word such as 'code' or 'depends_on'.")
    return value


class Graph:
    """Nodes and edges in the workspace database (tables created on first use)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("graph-memory", MIGRATIONS)

    # -- nodes ---------------------------------------------------------------------------
    def upsert_node(self, type: str, label: str, content: str = "", metadata: dict | None = None,
                    *, merge_metadata: bool = True, episode_ids: Iterable[int] = ()) -> tuple[Node, bool]:
        """Add a node, or update the node with the same (type, label).

        :returns: (node, created) — ``created`` is False when an existing node was updated.
        :raises UsageError: empty label or invalid type.
        """
        check_type(type, "node type")
        if not label or not label.strip():
            raise UsageError("node label must not be empty; give a short name, e.g. label=\"AuthService\".")
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM nodes WHERE type=? AND label=?", (type, label)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO nodes(type, label, content, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                    (type, label, content or "", json.dumps(metadata or {}), now, now),
                )
                node_id, created = cur.lastrowid, True
            else:
                node_id, created = row["id"], False
                meta = json.loads(row["metadata"] or "{}") if merge_metadata else {}
                meta.update(metadata or {})
                new_content = content if content else row["content"]
                conn.execute("UPDATE nodes SET content=?, metadata=?, updated_at=? WHERE id=?",
                             (new_content, json.dumps(meta), now, node_id))
                conn.execute("DELETE FROM nodes_fts WHERE rowid=?", (node_id,))
            final = conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
            conn.execute("INSERT INTO nodes_fts(rowid, label, terms, content) VALUES (?,?,?,?)",
                         (node_id, label, identifier_terms(label), final["content"]))
            for ep in episode_ids:
                conn.execute("INSERT OR IGNORE INTO node_episodes(node_id, episode_id) VALUES (?,?)", (node_id, ep))
        return Node.from_row(final), created

    def get(self, node_id: int) -> Node | None:
        row = self.db.conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return Node.from_row(row) if row else None

    def get_many(self, ids: Iterable[int]) -> dict[int, Node]:
        ids = list(ids)
        out: dict[int, Node] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = f"SELECT * FROM nodes WHERE id IN ({','.join('?' * len(chunk))})"
            for row in self.db.conn.execute(q, chunk):
                out[row["id"]] = Node.from_row(row)
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
            return Node.from_row(rows[0])
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
            conn.execute("UPDATE nodes SET content=?, metadata=?, updated_at=? WHERE id=?",
                         (new_content, json.dumps(new_meta), now, node_id))
            conn.execute("DELETE FROM nodes_fts WHERE rowid=?", (node_id,))
            conn.execute("INSERT INTO nodes_fts(rowid, label, terms, content) VALUES (?,?,?,?)",
                         (node_id, row["label"], identifier_terms(row["label"]), new_content))
            final = conn.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return Node.from_row(final)

    def delete_edge(self, src: int, dst: int, type: str) -> bool:
        """Remove the (src, type, dst) edge; returns whether there was one."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM edges WHERE src=? AND type=? AND dst=?", (src, type, dst))
        return cur.rowcount > 0

    def delete_node(self, node_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM nodes_fts WHERE rowid=?", (node_id,))
            conn.execute("DELETE FROM nodes WHERE id=?", (node_id,))

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
                  edges: Iterable[tuple[int, int, str, float]] = ()) -> list[int]:
        """Insert many new nodes, then edges between them, in one transaction (FTS kept in sync).

        For imports and benchmarks: no upsert logic, so (type, label) pairs must be new
        (a duplicate raises ``sqlite3.IntegrityError`` and nothing is written).

        :param nodes: (type, label, content, metadata) tuples.
        :param edges: (src index, dst index, type, weight) tuples; indexes point into ``nodes``.
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
        now = time.time()
        with self.db.transaction() as conn:
            first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM nodes").fetchone()[0]
            ids = list(range(first, first + len(nodes)))
            conn.executemany(
                "INSERT INTO nodes(id, type, label, content, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                ((i, t, l, c or "", json.dumps(m or {}), now, now) for i, (t, l, c, m) in zip(ids, nodes)),
            )
            conn.executemany(
                "INSERT INTO nodes_fts(rowid, label, terms, content) VALUES (?,?,?,?)",
                ((i, l, identifier_terms(l), c or "") for i, (_t, l, c, _m) in zip(ids, nodes)),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO edges(src, dst, type, weight, metadata, created_at, updated_at)"
                " VALUES (?,?,?,?,'{}',?,?)",
                ((ids[s], ids[d], t, float(w), now, now) for s, d, t, w in edges),
            )
        return ids

    def counts(self) -> dict[str, int]:
        c = self.db.conn
        return {
            "nodes": c.execute("SELECT count(*) FROM nodes").fetchone()[0],
            "edges": c.execute("SELECT count(*) FROM edges").fetchone()[0],
            "episodes": c.execute("SELECT count(*) FROM episodes").fetchone()[0],
        }


def graph_for(host) -> Graph:
    """The host's :class:`Graph` (one per host)."""
    return host.service(Graph, lambda h: Graph(h.db))
