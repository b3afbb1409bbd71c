"""Exact questions about the code graph (``@memory-query mode=code relation=...``).

The answers an agent acts on without re-checking: who calls / references a symbol
(transitively, ``depth`` hops), what it calls, the members of a type (inherited ones
marked), its implementors or overriders, the definitions in a file, unused definitions,
and whether an exact symbol exists. Symbols are matched **exactly**, never fuzzily (see
:meth:`CodeGraph.resolve`): a made-up name gets a clear "no".

Everything is indexed SQL over the ``nodes``/``edges`` tables (label index, the
``(src, type, dst)`` unique index and ``edges(dst, type)``), so a point question costs
well under a millisecond on a 500-file project (bench/codegraph.py measures it);
``unused`` scans the definitions of the asked kinds.

Relations (``relation=``):

* ``exists`` — the exact symbol's node(s), or none.
* ``callers`` / ``callees`` — incoming / outgoing ``calls`` edges (property reads count as
  calls of the property), ``depth`` hops (default 1).
* ``references`` — every use: incoming ``calls``, ``references``, ``inherits`` edges and the
  definitions the symbol ``decorates``, ``depth`` hops (default 1).
* ``members`` — what a class (or module) contains; a class's inherited members follow,
  marked with the base they come from, unless overridden.
* ``implementors`` — subclasses of a class (transitively, up to ``depth``, default 6),
  or for a method the same-named methods of those subclasses (overriders).
* ``file-symbols`` — the definitions of a file (its label, e.g. ``src/app/models.py``), in
  line order.
* ``unused`` — definitions (of ``nodeType``: function, method, class, variable, attribute;
  default function, method and class) that no edge uses, leaving out dunder methods,
  methods overriding a base method, ``test_*`` functions, ``main`` and names a package
  re-exports; ``query`` optionally limits it to labels or file paths starting with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from opensage.errors import NotFoundError, UsageError
from opensage.plugins.graph_memory.graph import Graph, format_id, parse_id
from opensage.store import in_chunks

__all__ = ["CodeGraph", "CodeHit", "RELATIONS", "SYMBOL_TYPES", "MAX_CODE_DEPTH"]

RELATIONS = ("exists", "callers", "callees", "references", "members", "implementors", "file-symbols", "unused")
#: Node types that name a definition.
SYMBOL_TYPES = ("module", "class", "function", "method", "variable", "attribute")
#: Deepest transitive walk.
MAX_CODE_DEPTH = 6
#: Nodes a transitive walk may visit before it stops (bounds work on dense graphs).
VISIT_CAP = 20_000
_USE_EDGES = ("calls", "references", "inherits")
_PL = "json_extract(metadata, '$.path'), json_extract(metadata, '$.line')"
_NPL = "json_extract(n.metadata, '$.path'), json_extract(n.metadata, '$.line')"
_UNUSED_DEFAULT = ("function", "method", "class")


@dataclass
class CodeHit:
    """One answer: a node, how far from the asked symbol, and the edge that reached it."""

    id: int
    type: str
    label: str
    path: str | None = None
    line: int | None = None
    depth: int | None = None
    edge: str | None = None
    edge_line: int | None = None
    via: str | None = None  # the node the edge came from (transitive walks), or the base class of an inherited member
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The hit as JSON: ``id`` (``n<id>``), ``type``, ``label``, ``path``, ``line``; ``depth``,
        ``edge``, ``edgeLine`` and ``via`` when set, then the ``extra`` keys.
        """
        out = {"id": format_id(self.id), "type": self.type, "label": self.label, "path": self.path, "line": self.line}
        for key, value in (("depth", self.depth), ("edge", self.edge), ("edgeLine", self.edge_line), ("via", self.via)):
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out

    def render(self, n: int) -> str:
        """The hit as one numbered terminal line: id, type, label, ``path:line`` and how it was
        reached (edge, line, depth and via).
        """
        where = f"{self.path}:{self.line}" if self.path and self.line else (self.path or "")
        text = f"{n}. {format_id(self.id)} {self.type} {self.label}"
        if where:
            text += f"  {where}"
        notes = []
        if self.edge:
            notes.append(self.edge + (f" {start}" if (start := self.extra.get("overridden")) else "")
                         + (f" at line {self.edge_line}" if self.edge_line else ""))
        if self.depth and self.depth > 1 and self.via:
            notes.append(f"depth {self.depth} via {self.via}")
        elif self.via and not self.edge:
            notes.append(f"inherited from {self.via}")
        if self.extra.get("property"):
            notes.append("property read")
        if notes:
            text += "  (" + ", ".join(notes) + ")"
        return text


class CodeGraph:
    """Code questions over one workspace's graph (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        self.conn = graph.db.conn

    # -- symbols -------------------------------------------------------------------------
    def _row(self, r) -> CodeHit:
        return CodeHit(r[0], r[1], r[2], r[3], r[4])

    def resolve(self, symbol: str) -> list[CodeHit]:
        """The definitions an exact symbol names, in this order of rules (the first that finds
        any wins): a node id (``n42``); a node whose label is exactly ``symbol``; a name a
        package re-exports (``app.User`` when ``app/__init__.py`` imports ``User`` from
        ``.models``); a label ending in ``.symbol`` or ``:symbol`` (a shorter dotted name such
        as ``Task.teleport``, or a qualified name inside a root's namespace). Segments must
        match whole and exactly: ``Task.teleport`` never finds ``Task.teleports``.

        :returns: the matching definitions ([] when there is none).
        :raises UsageError: an empty symbol.
        """
        symbol = (symbol or "").strip()
        if not symbol:
            raise UsageError("mode=code needs query=<symbol>, e.g. query=app.models.User or query=User.save.")
        qmarks = ",".join("?" * len(SYMBOL_TYPES))
        nid = parse_id(symbol)
        if nid is not None:
            rows = self.conn.execute(f"SELECT id, type, label, {_PL} FROM nodes WHERE id=?", (nid,)).fetchall()
            if rows:
                return [self._row(r) for r in rows]
        rows = self.conn.execute(
            f"SELECT id, type, label, {_PL} FROM nodes WHERE label=? AND type IN ({qmarks}) ORDER BY id",
            (symbol, *SYMBOL_TYPES)).fetchall()
        if rows:
            return [self._row(r) for r in rows]
        target = self._reexport(symbol)
        if target:
            rows = self.conn.execute(
                f"SELECT id, type, label, {_PL} FROM nodes WHERE label=? AND type IN ({qmarks})",
                (target, *SYMBOL_TYPES)).fetchall()
            if rows:
                return [self._row(r) for r in rows]
        last = symbol.replace(":", ".").rsplit(".", 1)[-1]
        if not last:
            return []
        phrase = '"' + last.replace('"', '""') + '"'
        rows = self.conn.execute(
            f"SELECT n.id, n.type, n.label, {_NPL} FROM nodes_fts f JOIN nodes n ON n.id = f.rowid"
            f" WHERE nodes_fts MATCH ? AND n.type IN ({qmarks}) LIMIT 2000",
            (f"label : {phrase}", *SYMBOL_TYPES)).fetchall()
        return [self._row(r) for r in rows
                if r["label"].endswith("." + symbol) or r["label"].endswith(":" + symbol)]

    def _reexport(self, symbol: str, depth: int = 0) -> str | None:
        """``pkg.Y`` -> ``pkg.x.Y`` through the ``exports`` of package modules (recorded by the ingest)."""
        parts = symbol.split(".")
        for i in range(len(parts) - 1, 0, -1):
            row = self.conn.execute("SELECT metadata FROM nodes WHERE type='module' AND label=?",
                                    (".".join(parts[:i]),)).fetchone()
            if row is None:
                continue
            exports = json.loads(row[0] or "{}").get("exports") or {}
            target = exports.get(parts[i])
            if not target:
                return None
            full = ".".join([target, *parts[i + 1:]])
            if self.conn.execute("SELECT 1 FROM nodes WHERE label=?", (full,)).fetchone():
                return full
            return self._reexport(full, depth + 1) if depth < 5 else None
        return None

    def one(self, symbol: str) -> CodeHit:
        """The single definition ``symbol`` names. Raises NotFoundError (none) or UsageError (several)."""
        hits = self.resolve(symbol)
        if not hits:
            raise NotFoundError(
                f"no symbol {symbol!r} in the code graph: no definition has exactly that qualified name or "
                "dotted suffix (matching is exact, not fuzzy). Check the spelling, or list a file's definitions "
                "with relation=file-symbols; ingest code with @memory-ingest.")
        if len(hits) > 1:
            options = ", ".join(f"{format_id(h.id)} {h.type} {h.label}" for h in hits[:8])
            more = f" and {len(hits) - 8} more" if len(hits) > 8 else ""
            raise UsageError(f"symbol {symbol!r} names {len(hits)} definitions: {options}{more}; "
                             "pass the full qualified name or the id.")
        return hits[0]

    # -- relations -----------------------------------------------------------------------
    def ask(self, relation: str, symbol: str, depth: int | None = None, node_types: list[str] | None = None,
            limit: int = 50) -> tuple[str, list[CodeHit], CodeHit | None]:
        """Answer one question.

        :param relation: one of :data:`RELATIONS`.
        :param symbol: the symbol (``exists``, ``unused``: see the module docstring), or a file label (``file-symbols``).
        :param depth: hops for transitive relations, 1-:data:`MAX_CODE_DEPTH`.
        :param node_types: ``unused``: the definition kinds; others: keep only these result types.
        :param limit: most results returned.
        :returns: (header text, results, the asked symbol's node or None).
        :raises UsageError: unknown relation, ambiguous symbol; NotFoundError: unknown symbol or file.
        """
        if relation not in RELATIONS:
            raise UsageError(f"relation {relation!r} is not known; use one of {', '.join(RELATIONS)}.")
        if depth is not None and not 1 <= depth <= MAX_CODE_DEPTH:
            raise UsageError(f"depth must be 1-{MAX_CODE_DEPTH}, got {depth}.")
        if relation == "exists":
            hits = self.resolve(symbol)
            return (f"exists {symbol!r}: " + (f"yes, {len(hits)} definition{'s' if len(hits) != 1 else ''}" if hits
                                               else "no such symbol (exact match; nothing similar is suggested)"),
                    hits[:limit], None)
        if relation == "unused":
            hits = self.unused(node_types or list(_UNUSED_DEFAULT), symbol.strip(), limit)
            kinds = ",".join(node_types or _UNUSED_DEFAULT)
            return f"unused {kinds}" + (f" under {symbol.strip()!r}" if symbol.strip() else ""), hits, None
        if relation == "file-symbols":
            file_id, label = self._file(symbol)
            return f"definitions in {label}", self.file_symbols(file_id, node_types, limit), None
        start = self.one(symbol)
        if relation == "members":
            hits = self.members(start)
        elif relation == "implementors":
            hits = self.implementors(start, depth or MAX_CODE_DEPTH)
        elif relation == "callers":
            hits = self.walk(start, "in", ("calls",), depth or 1, property_reads=True)
        elif relation == "callees":
            hits = self.walk(start, "out", ("calls",), depth or 1)
        else:
            hits = self.walk(start, "in", _USE_EDGES, depth or 1, decorated=True)
        hops = f", depth <= {depth or 1}" if relation in ("callers", "callees", "references") else ""
        return f"{relation} of {start.label}{hops}", self._keep(hits, node_types)[:limit], start

    @staticmethod
    def _keep(hits: list[CodeHit], node_types: list[str] | None) -> list[CodeHit]:
        return [h for h in hits if h.type in node_types] if node_types else hits

    def _nodes(self, ids) -> dict[int, CodeHit]:
        ids = list(ids)
        out: dict[int, CodeHit] = {}
        for chunk, marks in in_chunks(ids):
            for r in self.conn.execute(
                    f"SELECT id, type, label, {_PL} FROM nodes WHERE id IN ({marks})", chunk):
                out[r["id"]] = self._row(r)
        return out

    def walk(self, start: CodeHit, direction: str, types: tuple[str, ...], depth: int,
             property_reads: bool = False, decorated: bool = False) -> list[CodeHit]:
        """Breadth-first over ``types`` edges (``in``: who uses, ``out``: what is used), nearest first."""
        tq = ",".join("?" * len(types))
        near, far = ("src", "dst") if direction == "in" else ("dst", "src")
        em = "json_extract(metadata, '$.line'), json_extract(metadata, '$.property')"
        sql = f"SELECT {near} AS other, type, {em} FROM edges WHERE {far}=? AND type IN ({tq})"
        if property_reads:
            sql += (f" UNION ALL SELECT {near}, 'calls', {em} FROM edges WHERE {far}=? AND type='references'"
                    " AND json_extract(metadata, '$.property') = 1")
        if decorated:
            sql += f" UNION ALL SELECT dst, type, {em} FROM edges WHERE src=? AND type='decorates'"
        params_extra = 1 + int(property_reads) + int(decorated)
        found: dict[int, tuple[int, str, int | None, int, bool]] = {}
        frontier = [start.id]
        seen = {start.id}
        for level in range(1, depth + 1):
            nxt = []
            for nid in frontier:
                args = [nid, *types] + [nid] * (params_extra - 1)
                for r in self.conn.execute(sql, args):
                    other = r[0]
                    if other in seen:
                        continue
                    seen.add(other)
                    found[other] = (level, r[1], r[2], nid, bool(r[3]))
                    nxt.append(other)
                    if len(seen) > VISIT_CAP:
                        break
            frontier = nxt
            if not frontier or len(seen) > VISIT_CAP:
                break
        nodes = self._nodes([*found, *{v[3] for v in found.values()}])
        hits = []
        for nid, (level, etype, line, via, prop) in found.items():
            h = nodes.get(nid)
            if h is None or h.type == "file":
                continue
            h.depth, h.edge, h.edge_line = level, etype, line
            h.via = nodes[via].label if via in nodes else start.label
            if prop:
                h.extra["property"] = True
            hits.append(h)
        hits.sort(key=lambda h: (h.depth, h.label))
        return hits

    def _children(self, parent_id: int) -> list[CodeHit]:
        ids = [r[0] for r in self.conn.execute("SELECT dst FROM edges WHERE src=? AND type='contains'", (parent_id,))]
        nodes = self._nodes(ids)
        return sorted(nodes.values(), key=lambda h: (h.line or 0, h.label))

    def _bases(self, cls_id: int) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT dst FROM edges WHERE src=? AND type='inherits'", (cls_id,))]

    def members(self, start: CodeHit) -> list[CodeHit]:
        """Own members in line order, then inherited ones not overridden (nearest base first)."""
        own = self._children(start.id)
        if start.type != "class":
            return own
        names = {h.label.rsplit(".", 1)[-1] for h in own}
        out = list(own)
        seen = {start.id}
        queue = self._bases(start.id)
        base_nodes: dict[int, CodeHit] = {}
        while queue and len(seen) < 200:
            base = queue.pop(0)
            if base in seen:
                continue
            seen.add(base)
            if base not in base_nodes:
                base_nodes.update(self._nodes([base]))
            for h in self._children(base):
                name = h.label.rsplit(".", 1)[-1]
                if name not in names:
                    names.add(name)
                    h.via = base_nodes[base].label if base in base_nodes else None
                    out.append(h)
            queue.extend(self._bases(base))
        return out

    def implementors(self, start: CodeHit, depth: int) -> list[CodeHit]:
        """Subclasses of a class, or the overriders of a method, up to ``depth`` levels of inheritance."""
        if start.type == "class":
            return self.walk(start, "in", ("inherits",), depth)
        if start.type != "method":
            raise UsageError(f"relation=implementors needs a class or a method; {start.label} is a {start.type}.")
        cls_row = self.conn.execute("SELECT src FROM edges WHERE dst=? AND type='contains'", (start.id,)).fetchone()
        if cls_row is None:
            return []
        name = start.label.rsplit(".", 1)[-1]
        cls = self._nodes([cls_row[0]])[cls_row[0]]
        out = []
        for sub in self.walk(cls, "in", ("inherits",), depth):
            row = self.conn.execute(
                f"SELECT n.id, n.type, n.label, {_NPL} FROM edges e JOIN nodes n ON n.id = e.dst"
                " WHERE e.src=? AND e.type='contains' AND n.type='method' AND n.label=?",
                (sub.id, f"{sub.label}.{name}")).fetchone()
            if row is not None:
                h = self._row(row)
                h.depth, h.edge = sub.depth, "overrides"
                h.extra["overridden"] = start.label
                h.via = sub.via if sub.depth and sub.depth > 1 else None
                out.append(h)
        return out

    def _file(self, path: str) -> tuple[int, str]:
        path = (path or "").strip().replace("\\", "/")
        if not path:
            raise UsageError("relation=file-symbols needs query=<file>, e.g. query=src/app/models.py.")
        row = self.conn.execute("SELECT id, label FROM nodes WHERE type='file' AND label=?",
                                (path.removeprefix("./"),)).fetchone()
        if row is None:
            raise NotFoundError(f"no ingested file {path!r}: give the file's label as ingested "
                                "(relative to the workspace root, e.g. src/app/models.py).")
        return row[0], row[1]

    def file_symbols(self, file_id: int, node_types: list[str] | None = None, limit: int = 1000) -> list[CodeHit]:
        """Definitions contained (transitively) by the file, in line order, at most ``limit``."""
        tfilter = f" WHERE n.type IN ({','.join('?' * len(node_types))})" if node_types else ""
        rows = self.conn.execute(
            "WITH RECURSIVE sub(id) AS (SELECT dst FROM edges WHERE src=? AND type='contains'"
            " UNION SELECT e.dst FROM edges e JOIN sub ON e.src = sub.id WHERE e.type='contains')"
            f" SELECT n.id, n.type, n.label, {_NPL} FROM nodes n JOIN sub ON n.id = sub.id{tfilter}"
            " ORDER BY 5, 3 LIMIT ?", (file_id, *(node_types or ()), int(limit))).fetchall()
        return [self._row(r) for r in rows]

    def unused(self, kinds: list[str], under: str, limit: int) -> list[CodeHit]:
        """Definitions of ``kinds`` nothing uses (see the module docstring), in label order."""
        for k in kinds:
            if k not in SYMBOL_TYPES or k == "module":
                raise UsageError(f"relation=unused: nodeType {k!r} is not a definition kind; use "
                                 "function, method, class, variable or attribute.")
        qmarks = ",".join("?" * len(kinds))
        where, params = "", []
        if under:
            where = " AND (n.label >= ? AND n.label < ? OR json_extract(n.metadata, '$.path') LIKE ? ESCAPE '\\')"
            esc = under.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params = [under, under + "\uffff", esc + "%"]
        rows = self.conn.execute(
            f"SELECT n.id, n.type, n.label, {_NPL}, json_extract(n.metadata, '$.source'),"
            f" json_extract(n.metadata, '$.name') FROM nodes n WHERE n.type IN ({qmarks}){where}"
            " AND NOT EXISTS (SELECT 1 FROM edges e WHERE e.dst = n.id AND e.type IN ('calls','references','inherits'))"
            " AND NOT EXISTS (SELECT 1 FROM edges e WHERE e.src = n.id AND e.type = 'decorates')"
            " ORDER BY n.label", (*kinds, *params)).fetchall()
        exported = self._exported()
        out = []
        for r in rows:
            if r[5] != "ingest":
                continue
            name = r[6] or r[2].rsplit(".", 1)[-1]
            if (name.startswith("__") and name.endswith("__")) or name.startswith("test") or name == "main":
                continue
            if r[2] in exported or (r[1] == "method" and self._overrides(r[0], name)):
                continue
            out.append(self._row(r))
            if len(out) >= limit:
                break
        return out

    def _exported(self) -> set[str]:
        out: set[str] = set()
        for (meta,) in self.conn.execute(
                "SELECT metadata FROM nodes WHERE type='module' AND json_extract(metadata, '$.package') = 1"):
            out.update((json.loads(meta or "{}").get("exports") or {}).values())
        return out

    def _overrides(self, method_id: int, name: str) -> bool:
        """True when a base class of the method's class (transitively) defines the same name."""
        row = self.conn.execute("SELECT src FROM edges WHERE dst=? AND type='contains'", (method_id,)).fetchone()
        if row is None:
            return False
        queue, seen = self._bases(row[0]), set()
        while queue and len(seen) < 100:
            base = queue.pop(0)
            if base in seen:
                continue
            seen.add(base)
            label = self.conn.execute("SELECT label FROM nodes WHERE id=?", (base,)).fetchone()
            if label and self.conn.execute("SELECT 1 FROM nodes WHERE label=? AND type='method'",
                                           (f"{label[0]}.{name}",)).fetchone():
                return True
            queue.extend(self._bases(base))
        return False
