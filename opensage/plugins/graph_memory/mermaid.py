"""Mermaid ``flowchart LR`` views of the graph: a node's neighbourhood, or the most connected nodes.

Node ids in the diagram are ``n<db id>`` (never derived from labels, so they cannot
collide or hit Mermaid keywords such as ``end``); labels are always quoted and every
character Mermaid could read as syntax is written as an entity code (``#quot;``,
``#91;``...). Mermaid's default limits are 500 edges and 50,000 characters per diagram
(``maxEdges``/``maxTextSize`` in its configuration), so views are capped by
``max_nodes`` and at most :data:`MAX_EDGES` edges, and say so when they are truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from opensage.plugins.graph_memory.graph import Edge, Graph, Node
from opensage.store import in_chunks

__all__ = ["Subgraph", "neighbourhood", "most_connected", "render", "escape_label", "MAX_EDGES"]

#: Mermaid's default ``maxEdges`` is 500; keep below it.
MAX_EDGES = 400
LABEL_CHARS = 60
#: Only these characters pass through unchanged; everything else is an entity code.
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:_-+*/=@!?'~$%^")
_NAMED = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}
#: (open, close) of the node shape per type; anything else is a rectangle.
SHAPES = {
    "file": ('[/"', '"/]'),
    "module": ('[["', '"]]'),
    "class": ('["', '"]'),
    "function": ('("', '")'),
    "method": ('("', '")'),
    "decision": ('{"', '"}'),
    "error": ('>"', '"]'),
    "query": ('(["', '"])'),
    "answer": ('(["', '"])'),
    "session": ('[("', '")]'),
    "command": ('[\\"', '"\\]'),
    "concept": ('(("', '"))'),
}
NOTE_ID = "more_nodes"


def escape_label(text: str, limit: int = LABEL_CHARS) -> str:
    """Text safe inside a quoted Mermaid label: one line, at most ``limit`` characters, no raw syntax."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    out = []
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        else:
            out.append(f"#{ord(ch)};")
    return "".join(out)


@dataclass
class Subgraph:
    """Nodes and edges chosen for a view; ``total`` counts the candidates before truncation."""

    nodes: list[Node]
    edges: list[Edge]
    total: int
    center: Node | None = None
    title: str = ""

    @property
    def hidden(self) -> int:
        """Candidates left out of the view by the node limit (``total`` minus those shown)."""
        return max(0, self.total - len(self.nodes))


def _type_filter(edge_types) -> tuple[str, tuple]:
    types = tuple(edge_types or ())
    return (f" AND type IN ({','.join('?' * len(types))})", types) if types else ("", ())


def _neighbours(graph: Graph, ids: list[int], direction: str, edge_types=None) -> list[tuple[int, int, float]]:
    """(from frontier node, neighbour, weight) over edges in ``direction`` for a batch of nodes."""
    out = []
    conn = graph.db.conn
    tfilter, targs = _type_filter(edge_types)
    for chunk, marks in in_chunks(ids):
        if direction in ("out", "both"):
            out += [(r[0], r[1], r[2]) for r in conn.execute(
                f"SELECT src, dst, weight FROM edges WHERE src IN ({marks}){tfilter}", (*chunk, *targs))]
        if direction in ("in", "both"):
            out += [(r[0], r[1], r[2]) for r in conn.execute(
                f"SELECT dst, src, weight FROM edges WHERE dst IN ({marks}){tfilter}", (*chunk, *targs))]
    return out


def neighbourhood(graph: Graph, center: Node, radius: int = 2, max_nodes: int = 60, direction: str = "both",
                  count_limit: int = 100_000, edge_types=None) -> Subgraph:
    """Breadth-first neighbourhood of ``center`` up to ``radius`` hops along ``direction`` (in/out/both),
    over edges of ``edge_types`` only when given (e.g. ``["calls"]`` with ``in``: who calls it).

    Closer nodes come first; within one hop, nodes reached by heavier edges first. The
    nodes beyond ``max_nodes`` are counted (up to ``count_limit``) for the truncation note.
    """
    dist = {center.id: 0}
    order = [center.id]
    frontier = [center.id]
    for hop in range(1, radius + 1):
        best: dict[int, float] = {}
        for _, nb, w in _neighbours(graph, frontier, direction, edge_types):
            if nb not in dist:
                best[nb] = max(best.get(nb, 0.0), w)
        frontier = sorted(best, key=lambda n: (-best[n], n))
        for nb in frontier:
            dist[nb] = hop
        order.extend(frontier)
        if not frontier or len(order) >= count_limit:
            break
    keep = order[:max_nodes]
    nodes = graph.get_many(keep)
    chosen = [nodes[i] for i in keep if i in nodes]
    return Subgraph(chosen, _edges_among(graph, [n.id for n in chosen], edge_types), len(order), center=center)


def most_connected(graph: Graph, max_nodes: int = 60, edge_types=None) -> Subgraph:
    """The ``max_nodes`` nodes with the most edges (of ``edge_types`` when given; ties: lower id
    first), with the edges among them. ``total`` counts the nodes that have such an edge (all
    nodes when no type is given)."""
    conn = graph.db.conn
    tfilter, targs = _type_filter(edge_types)
    if targs:
        total = conn.execute(f"SELECT count(*) FROM (SELECT src FROM edges WHERE 1{tfilter} UNION "
                             f"SELECT dst FROM edges WHERE 1{tfilter})", (*targs, *targs)).fetchone()[0]
        rows = conn.execute(
            f"SELECT id, count(*) AS deg FROM (SELECT src AS id FROM edges WHERE 1{tfilter} UNION ALL "
            f"SELECT dst FROM edges WHERE 1{tfilter}) GROUP BY id ORDER BY deg DESC, id LIMIT ?",
            (*targs, *targs, max_nodes)).fetchall()
    else:
        total = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
        rows = conn.execute(
            """
            SELECT n.id, (SELECT count(*) FROM edges WHERE src = n.id) + (SELECT count(*) FROM edges WHERE dst = n.id) AS deg
            FROM nodes n ORDER BY deg DESC, n.id LIMIT ?
            """,
            (max_nodes,),
        ).fetchall()
    ids = [r[0] for r in rows]
    nodes = graph.get_many(ids)
    chosen = [nodes[i] for i in ids if i in nodes]
    return Subgraph(chosen, _edges_among(graph, ids, edge_types), total, title="most connected nodes")


def _edges_among(graph: Graph, ids: list[int], edge_types=None) -> list[Edge]:
    if not ids:
        return []
    wanted = set(ids)
    conn = graph.db.conn
    tfilter, targs = _type_filter(edge_types)
    edges = []
    for chunk, marks in in_chunks(ids):
        for r in conn.execute(f"SELECT * FROM edges WHERE src IN ({marks}){tfilter}",
                              (*chunk, *targs)):
            if r["dst"] in wanted:
                edges.append(Edge.from_row(r))
    edges.sort(key=lambda e: (-e.weight, e.id))
    return edges


def _node_line(node: Node) -> str:
    open_, close = SHAPES.get(node.type, ('["', '"]'))
    text = escape_label(f"{node.type}: {node.label}", LABEL_CHARS + 10)
    return f"    n{node.id}{open_}{text}{close}"


def render(sub: Subgraph, max_edges: int = MAX_EDGES) -> str:
    """The Mermaid source of ``sub``. A truncated view has a comment line and a note node."""
    lines = ["flowchart LR"]
    shown_edges = sub.edges[:max_edges]
    header = f"%% graph-memory: {len(sub.nodes)} of {sub.total} nodes, {len(shown_edges)} edges"
    if sub.center is not None:
        header += f", around n{sub.center.id}"
    lines.append(header)
    if sub.hidden or len(sub.edges) > len(shown_edges):
        lines.append(f"%% truncated: {sub.hidden} more nodes and {len(sub.edges) - len(shown_edges)} more edges not shown")
    for node in sub.nodes:
        lines.append(_node_line(node))
    for e in shown_edges:
        lines.append(f"    n{e.src} -->|{escape_label(e.type, 40)}| n{e.dst}")
    if sub.hidden:
        lines.append(f'    {NOTE_ID}["{escape_label(f"… {sub.hidden} more nodes not shown", 80)}"]')
        lines.append(f"    class {NOTE_ID} note")
        lines.append("    classDef note fill:#fff8c4,stroke:#b8a400,stroke-dasharray:4")
    if sub.center is not None:
        lines.append(f"    class n{sub.center.id} center")
        lines.append("    classDef center stroke-width:3px")
    return "\n".join(lines) + "\n"


def node_summaries(nodes: Iterable[Node]) -> list[dict]:
    """``[{"id": "n<id>", "type", "label"}]`` of ``nodes``, in order."""
    return [{"id": n.ref, "type": n.type, "label": n.label} for n in nodes]
