""""How did we fix ...?": answers about past work as chains of error, fix, decision and session.

A user asks in plain words ("how did we fix the race in the job queue", "why did we
pick RS256") and gets, per matching piece of past work, across every session:

* the **error** (its label, the command that produced it, whether it was resolved);
* the **fix**: the nodes with a ``fixes`` edge to it (files edited between the failure
  and the green re-run, the assistant's "fixed ..." sentences) and the decisions of the
  same session about those files, each with its reason (the node's content);
* the **files**, **symbols** and **commands** involved;
* the **session** it happened in (id, host) and **when** (local time of its episodes).

A question about a decision ("why did we pick ...") gives the decision as the anchor
with its reason, what it fixed, and the same session/time facts.

Anchors are found with the similarity machinery restricted to the node types a chain
can start from (:data:`ANCHOR_TYPES`): BM25 over nodes plus BM25+ over episodes mapped
to the nodes derived from them (``node_episodes``), fused by reciprocal rank fusion.
Question words ("how", "did", "fix", "pick"...) are left out of the search: they say
what kind of answer is wanted, not what it is about. Episodes that are provenance
(results of memory queries) are not indexed, so a past answer to the same question
cannot stand in for the evidence.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from opensage.plugins.graph_memory.graph import Graph, format_id

__all__ = ["Chain", "chains", "is_past_work_question", "render_chains"]

#: Node types a chain can start from.
ANCHOR_TYPES = ("error", "decision", "fact", "answer")
#: Words that say what kind of answer is wanted ("how did we fix"), not what it is about.
QUESTION_WORDS = frozenset("""
fix fixed fixes fixing solve solved resolve resolved pick picked choose chose chosen decide decided decision
handle handled make made go went end ended happen happened come came work worked reason
""".split())
_PAST_WORK = re.compile(
    r"\b(?:how|why|when|where|what)\b[^.?!]{0,40}\b(?:did|had)\s+(?:we|i|you)\b"
    r"|\b(?:how|why|when|where|what)\b[^.?!]{0,40}\bhave\s+(?:we|you)\s+\w+(?:ed|en|ne)\b"
    r"|\bwhat\s+(?:was|fixed)\s+(?:the\s+)?(?:fix|cause|reason|problem)\b|\bwhy\s+(?:is|are)\s+we\b",
    re.I,
)
#: Candidates taken from each ranked list before fusion.
DEPTH = 30
#: Items of each kind shown per chain.
SHOWN = 5


def is_past_work_question(text: str) -> bool:
    """True for a question about past work: "how did we fix X", "why did we pick Y", "what was the fix for Z"."""
    return bool(_PAST_WORK.search(text or ""))


@dataclass
class Chain:
    """One piece of past work: an anchor (an error, or a decision/fact/answer) and what is linked to it."""

    anchor: dict[str, Any]
    error: dict[str, Any] | None = None
    fixes: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    score: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "chain", "anchor": self.anchor, "error": self.error, "fixes": self.fixes,
                "decisions": self.decisions, "files": self.files, "symbols": self.symbols,
                "commands": self.commands, "sessions": self.sessions, "score": round(self.score, 6)}

    def render(self, n: int, width: int = 240) -> str:
        def cut(text: str, limit: int = width) -> str:
            flat = " ".join((text or "").split())
            return flat if len(flat) <= limit else flat[: limit - 1] + "…"

        def node_line(node: dict[str, Any]) -> str:
            reason = " ".join((node.get("content") or "").split())
            stem = node["label"].rstrip(" .…").casefold()
            if reason and reason.casefold().startswith(stem):  # the label is the content's title
                return f"{node['type']} {node['id']} {cut(reason, 240)}"
            return f"{node['type']} {node['id']} {node['label']}" + (f" — {cut(reason, 200)}" if reason else "")

        lines = []
        if self.error is not None:
            status = "fixed" if self.error.get("resolved") or self.fixes else "open"
            lines.append(f"{n}. error {self.error['id']} {self.error['label']} ({status})")
        else:
            lines.append(f"{n}. {node_line(self.anchor)}")
        for fix in self.fixes[:SHOWN]:
            lines.append(f"   fix: {node_line(fix)}")
        for dec in self.decisions[:SHOWN]:
            lines.append(f"   decision: {node_line(dec)}")
        facts = []
        if self.files:
            facts.append("files: " + ", ".join(self.files[:SHOWN]))
        if self.symbols:
            facts.append("symbols: " + ", ".join(self.symbols[:SHOWN]))
        if self.commands:
            facts.append("commands: " + "; ".join(cut(c, 100) for c in self.commands[:3]))
        if facts:
            lines.append("   " + " · ".join(facts))
        for s in self.sessions[:3]:
            lines.append(f"   session {s['id']}" + (f" ({s['source']})" if s.get("source") else "") + f", {s['when']}")
        return "\n".join(lines)


def _search_words(query: str) -> str:
    from opensage.plugins.graph_memory.query import query_terms

    words = [w for w in query_terms(query) if w not in QUESTION_WORDS]
    return " ".join(words) if words else query


def _anchors(graph: Graph, query: str, limit: int) -> list[tuple[int, float]]:
    """Anchor node ids, best first, with their fused (RRF) score."""
    from opensage.plugins.graph_memory import episodes as ep
    from opensage.plugins.graph_memory.query import match_expression, rrf

    conn = graph.db.conn
    text = _search_words(query)
    marks = ",".join("?" * len(ANCHOR_TYPES))
    lists: list[list[int]] = []
    match, scored = match_expression(conn, "nodes", text)
    if match:
        lists.append([r[0] for r in conn.execute(
            f"SELECT id FROM (SELECT f.rowid AS id, bm25(nodes_fts, 4.0, 2.0, 1.0) AS s FROM nodes_fts f"
            f" JOIN nodes n ON n.id = f.rowid WHERE nodes_fts MATCH ? AND n.type IN ({marks}) LIMIT {int(scored)})"
            " ORDER BY s LIMIT ?", (match, *ANCHOR_TYPES, DEPTH))])
    ranked = ep.rank_episodes(graph.db, text, DEPTH)
    if ranked:
        by_episode: dict[int, list[int]] = {}
        ids = [i for i, _ in ranked]
        for node_id, episode_id in conn.execute(
                f"SELECT ne.node_id, ne.episode_id FROM node_episodes ne JOIN nodes n ON n.id = ne.node_id"
                f" WHERE ne.episode_id IN ({','.join('?' * len(ids))}) AND n.type IN ({marks})", (*ids, *ANCHOR_TYPES)):
            by_episode.setdefault(episode_id, []).append(node_id)
        derived = list(dict.fromkeys(n for i in ids for n in sorted(by_episode.get(i, []))))
        if derived and match:
            # a node from a matching episode is an anchor when it says something about the
            # question itself, or is an error (its words are a traceback's, not the user's)
            own = {r[0] for r in conn.execute(
                f"SELECT rowid FROM nodes_fts WHERE nodes_fts MATCH ? AND rowid IN ({','.join('?' * len(derived))})",
                (match, *derived))}
            errors = {r[0] for r in conn.execute(
                f"SELECT id FROM nodes WHERE type='error' AND id IN ({','.join('?' * len(derived))})", derived)}
            derived = [n for n in derived if n in own or n in errors]
        if derived:
            lists.append(derived)
    return rrf(lists)[:limit] if lists else []


def _node(conn, node_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT id, type, label, content, metadata FROM nodes WHERE id=?", (node_id,)).fetchone()
    if row is None:
        return None
    return {"id": format_id(row["id"]), "type": row["type"], "label": row["label"], "content": row["content"] or "",
            "metadata": json.loads(row["metadata"] or "{}"), "_id": row["id"]}


def _public(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if not k.startswith("_") and k != "metadata"}
    if node["type"] == "error":
        out["resolved"] = bool(node["metadata"].get("resolved"))
    return out


def _linked(conn, node_id: int, edge: str, direction: str) -> list[int]:
    if direction == "in":
        sql = "SELECT src FROM edges WHERE dst=? AND type=? ORDER BY weight DESC, id"
    else:
        sql = "SELECT dst FROM edges WHERE src=? AND type=? ORDER BY weight DESC, id"
    return [r[0] for r in conn.execute(sql, (node_id, edge))]


def _sessions(conn, node_ids: list[int]) -> list[dict[str, Any]]:
    """Sessions whose episodes the nodes came from, earliest first, with the time of the first such episode."""
    if not node_ids:
        return []
    rows = conn.execute(
        "SELECT e.session_id, min(e.timestamp) AS t, s.source FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id"
        " LEFT JOIN sessions s ON s.id = e.session_id"
        f" WHERE ne.node_id IN ({','.join('?' * len(node_ids))}) GROUP BY e.session_id ORDER BY t",
        node_ids).fetchall()
    return [{"id": r["session_id"], "source": r["source"],
             "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["t"])), "timestamp": r["t"]} for r in rows]


_CODE_TYPES = ("class", "function", "method", "module", "entity")


def _build(conn, anchor: dict[str, Any], score: float, terms: list[str], exclude: set[str] = frozenset()) -> Chain:
    chain = Chain(anchor=_public(anchor), score=score)
    error = anchor if anchor["type"] == "error" else None
    if error is None:  # a decision that fixed an error: the chain is that error's
        fixed = _linked(conn, anchor["_id"], "fixes", "out")
        if fixed:
            error = _node(conn, fixed[0])
    members: list[dict[str, Any]] = [anchor]
    if error is not None:
        chain.error = _public(error)
        members.append(error)
        for fid in _linked(conn, error["_id"], "fixes", "in")[:SHOWN * 2]:
            node = _node(conn, fid)
            if node is None:
                continue
            members.append(node)
            if node["type"] == "file":
                chain.files.append(node["label"])
            else:
                chain.fixes.append(_public(node))
        cmd = error["metadata"].get("command")
        if isinstance(cmd, str):
            chain.commands.append(cmd)
        for cid in _linked(conn, error["_id"], "produced", "in"):
            node = _node(conn, cid)
            if node and node["label"] not in chain.commands:
                chain.commands.append(node["label"])
    if error is not None and anchor["type"] != "error" and not any(f["id"] == anchor["id"] for f in chain.fixes):
        chain.decisions.append(_public(anchor))
    # files, symbols mentioned by the members; decisions of the same session about the fixed files
    for node in list(members):
        for oid in _linked(conn, node["_id"], "mentions", "out") + _linked(conn, node["_id"], "touches", "out"):
            other = _node(conn, oid)
            if other is None:
                continue
            if other["type"] == "file" and other["label"] not in chain.files:
                chain.files.append(other["label"])
            elif other["type"] in _CODE_TYPES and other["label"] not in chain.symbols:
                chain.symbols.append(other["label"])
    sessions = _sessions(conn, [m["_id"] for m in members])
    # the decisions of the same session(s): the ones sharing words with the question or the
    # chain's files and symbols first (a decision stored with @memory-add-node is linked to
    # its session, not to the error)
    shown = {d["id"] for d in chain.decisions} | {f["id"] for f in chain.fixes} | {chain.anchor["id"]} | set(exclude)
    words = set(terms) | {w for x in chain.files + chain.symbols for w in re.findall(r"[a-z0-9]{3,}", x.lower())}
    candidates = []
    for s in sessions[:3]:
        for r in conn.execute(
                "SELECT n.id, n.label, n.content, n.updated_at FROM nodes sn JOIN edges e ON e.src = sn.id"
                " AND e.type='contains' JOIN nodes n ON n.id = e.dst AND n.type='decision'"
                " WHERE sn.type='session' AND sn.label=?", (s["id"],)):
            if format_id(r["id"]) in shown:
                continue
            text = f"{r['label']} {r['content']}".lower()
            overlap = sum(1 for w in words if w in text)
            if overlap or error is not None:  # beside a decision, only decisions about the same thing
                candidates.append((-overlap, -r["updated_at"], r["id"]))
    for _, _, nid in sorted(candidates)[:SHOWN]:
        node = _node(conn, nid)
        if node is not None and node["id"] not in shown:
            shown.add(node["id"])
            chain.decisions.append(_public(node))
    chain.sessions = sessions
    return chain


def chains(graph: Graph, query: str, max_chains: int = 3, flt=None) -> list[Chain]:
    """Chains of past work matching ``query`` (plain words), best first, at most ``max_chains``.

    Two anchors that lead to the same error give one chain (the better-ranked one).
    ``flt`` (a :class:`.filters.MemoryFilter`, optional) keeps only anchors that pass it.
    """
    from opensage.plugins.graph_memory.query import query_terms

    conn = graph.db.conn
    terms = query_terms(_search_words(query))
    out: list[Chain] = []
    seen: set[str] = set()
    anchors = list(_anchors(graph, query, DEPTH))
    if flt is not None:
        keep = set(flt.keep_nodes(conn, [a for a, _ in anchors]))
        anchors = [(a, s) for a, s in anchors if a in keep]
    for node_id, score in anchors:
        node = _node(conn, node_id)
        if node is None:
            continue
        if node["id"] in seen:  # already part of a better-ranked chain
            continue
        chain = _build(conn, node, score, terms, seen)
        key = chain.error["id"] if chain.error else chain.anchor["id"]
        if key in seen:
            continue
        seen.update({key, chain.anchor["id"]} | {f["id"] for f in chain.fixes} | {d["id"] for d in chain.decisions})
        out.append(chain)
        if len(out) >= max_chains:
            break
    return out


def render_chains(query: str, found: list[Chain], max_chars: int | None = None) -> str:
    """The text form: a header line, then each chain (see :meth:`Chain.render`), at most ``max_chars``."""
    head = f"history {query!r}: {len(found)} chain{'s' if len(found) != 1 else ''}"
    text = "\n".join([head] + [c.render(i) for i, c in enumerate(found, start=1)])
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - 1)].rstrip() + "…"
    return text
