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

A chain is one piece of work in one **session**: the unit a user means by "how did we fix
X" is the session in which X was fixed. Sessions are ranked by the evidence of their
episodes (:func:`.episodes.rank_sessions`: each session scored by the sum of its three
best BM25+ episode scores — a fix spreads its words over several turns). Sessions reached
only through an anchor node the question names (:data:`ANCHOR_TYPES`: BM25 over nodes
plus nodes derived from matching episodes; only nodes whose evidence comes from at most
:data:`SPECIFIC_SESSIONS` sessions: an error label such as ``AssertionError`` recurs in
dozens of sessions and says nothing about which one is meant), such as a decision stored
with ``@memory-add-node``, come after them.

Within a session, the anchor is the best-ranked anchor node from that session alone (a
decision for "why did we pick ..."), else the session itself; the session's errors, the
nodes that fixed them *in that session*, its decisions, the files it edited and the
symbols and commands involved fill the chain, with the session's best-matching episodes
as evidence. Question words ("how", "did", "fix", "pick"...) are left out of the search:
they say what kind of answer is wanted, not what it is about. Episodes that are
provenance (results of memory queries) are not indexed, so a past answer to the same
question cannot stand in for the evidence.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from opensage.camel import camel, camel_dict
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
#: An anchor node names the sessions it came from only when there are at most this many.
SPECIFIC_SESSIONS = 2
#: Files listed per chain in the structured result (the text shows :data:`SHOWN`).
MAX_FILES = 20
#: Best-matching episodes of the session given as evidence per chain.
EVIDENCE = 2
#: Items of each kind shown per chain.
SHOWN = 5


def is_past_work_question(text: str) -> bool:
    """True for a question about past work: "how did we fix X", "why did we pick Y", "what was the fix for Z"."""
    return bool(_PAST_WORK.search(text or ""))


@camel
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
    #: the session's best-matching episodes: {"id": "e12", "seq", "kind", "path", "excerpt"}
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``{"kind": "chain"}`` and every field (``score`` rounded to 6 digits)."""
        return {"kind": "chain", **camel_dict(self), "score": round(self.score, 6)}

    def render(self, n: int, width: int = 240) -> str:
        """The chain as numbered terminal lines (``n``): anchor, error, fixes, decisions, files,
        symbols, commands, sessions and evidence, each text cut to about ``width`` characters.
        """
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
        elif self.anchor.get("type") == "session":
            lines.append(f"{n}. session {self.anchor['label']}")
        else:
            lines.append(f"{n}. {node_line(self.anchor)}")
        if self.anchor.get("type") == "session" and not self.fixes:  # nothing distilled: what was said
            for e in self.evidence:
                lines.append(f"   {e['kind'].replace('_', ' ')} {e['id']}: {cut(e['excerpt'], 200)}")
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
    from opensage.plugins.graph_memory.ranking import query_terms

    words = [w for w in query_terms(query) if w not in QUESTION_WORDS]
    return " ".join(words) if words else query


def _anchors(graph: Graph, query: str, limit: int) -> list[tuple[int, float]]:
    """Anchor node ids, best first, with their fused (RRF) score."""
    from opensage.plugins.graph_memory import episodes as ep
    from opensage.plugins.graph_memory.ranking import match_expression, rrf

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


def _add_mentioned(conn, chain: "Chain", members: list[dict[str, Any]], own: set[int] | None = None) -> None:
    """Add to ``chain.files``/``chain.symbols`` the files and code symbols that ``members``
    mention or touch (only nodes in ``own`` when given), each once, in link order."""
    for node in list(members):
        for oid in _linked(conn, node["_id"], "mentions", "out") + _linked(conn, node["_id"], "touches", "out"):
            other = _node(conn, oid) if own is None or oid in own else None
            if other is None:
                continue
            if other["type"] == "file" and other["label"] not in chain.files:
                chain.files.append(other["label"])
            elif other["type"] in _CODE_TYPES and other["label"] not in chain.symbols:
                chain.symbols.append(other["label"])


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
        "SELECT e.session_id, min(e.timestamp) AS t, max(s.source) FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id"
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
    _add_mentioned(conn, chain, members)
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


def _node_sessions(conn, node_ids: list[int]) -> dict[int, set[str]]:
    """Node id -> the sessions of the episodes it was derived from (``node_episodes``)."""
    out: dict[int, set[str]] = {n: set() for n in node_ids}
    if node_ids:
        for nid, sid in conn.execute(
                "SELECT DISTINCT ne.node_id, e.session_id FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id"
                f" WHERE ne.node_id IN ({','.join('?' * len(node_ids))})", node_ids):
            out[nid].add(sid)
    return out


def _session_node(conn, sid: str) -> dict[str, Any]:
    row = conn.execute("SELECT id FROM nodes WHERE type='session' AND label=?", (sid,)).fetchone()
    node = _node(conn, row[0]) if row else None
    if node is None:  # a session not compressed yet: its episodes are all there is
        node = {"id": sid, "type": "session", "label": sid, "content": "", "metadata": {}, "_id": None}
    return node


def _build_session(conn, sid: str, anchor: dict[str, Any] | None, score: float, terms: list[str],
                   episode_ids: list[int], exclude: set[str]) -> Chain:
    """The chain of one session: its errors and what fixed them there, its decisions, the files
    it edited, symbols, commands, when, and its best-matching episodes as evidence."""
    from opensage.plugins.graph_memory import episodes as ep
    from opensage.plugins.graph_memory.ranking import excerpt

    session = _session_node(conn, sid)
    anchor = anchor or session
    chain = Chain(anchor=_public(anchor), score=score)
    own = {r[0] for r in conn.execute(
        "SELECT DISTINCT ne.node_id FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id WHERE e.session_id=?",
        (sid,))}
    if session["_id"] is not None:
        own |= {r[0] for r in conn.execute("SELECT dst FROM edges WHERE src=? AND type IN ('contains', 'touches')",
                                           (session["_id"],))}
    error = anchor if anchor["type"] == "error" else None
    if error is None and anchor["type"] != "session":  # a decision that fixed an error of this session
        fixed = [n for n in _linked(conn, anchor["_id"], "fixes", "out") if n in own]
        error = _node(conn, fixed[0]) if fixed else None
    if error is None:  # the session's errors, one that was fixed here first
        errors = sorted(r[0] for r in conn.execute(
            "SELECT DISTINCT n.id FROM episodes e JOIN node_episodes ne ON ne.episode_id = e.id"
            " JOIN nodes n ON n.id = ne.node_id AND n.type = 'error' WHERE e.session_id=?", (sid,)))
        fixed_here = [e for e in errors if any(f in own for f in _linked(conn, e, "fixes", "in"))]
        pick = (fixed_here or errors)[:1]
        error = _node(conn, pick[0]) if pick else None
    members: list[dict[str, Any]] = [anchor] if anchor["_id"] is not None else []
    if session["_id"] is not None:  # files the session edited first, then those it read
        edges = conn.execute("SELECT n.label, n.type, e.metadata FROM edges e JOIN nodes n ON n.id = e.dst"
                             " WHERE e.src=? AND e.type='touches' ORDER BY e.weight DESC, e.id", (session["_id"],))
        for label, ntype, meta in edges:
            if ntype == "file" and label not in chain.files:
                chain.files.append(label)
            elif ntype in _CODE_TYPES and label not in chain.symbols:
                chain.symbols.append(label)
    if error is not None:
        chain.error = _public(error)
        members.append(error)
        for fid in [f for f in _linked(conn, error["_id"], "fixes", "in") if f in own][:SHOWN * 2]:
            node = _node(conn, fid)
            if node is None:
                continue
            members.append(node)
            if node["type"] == "file":
                if node["label"] not in chain.files:
                    chain.files.append(node["label"])
            else:
                chain.fixes.append(_public(node))
        # the commands of this session that produced it (an error label recurs across sessions,
        # and its metadata names the command of the first one)
        for cid in _linked(conn, error["_id"], "produced", "in"):
            node = _node(conn, cid)
            if node and cid in own and node["label"] not in chain.commands:
                chain.commands.append(node["label"])
    if error is not None and anchor["type"] not in ("error", "session") \
            and not any(f["id"] == anchor["id"] for f in chain.fixes):
        chain.decisions.append(_public(anchor))
    _add_mentioned(conn, chain, members, own)  # files and symbols the anchor, error and fixes name in this session
    if session["_id"] is not None and not chain.commands:
        chain.commands += [r[0] for r in conn.execute(
            "SELECT n.label FROM edges e JOIN nodes n ON n.id = e.dst WHERE e.src=? AND e.type='ran'"
            " ORDER BY e.weight DESC, e.id LIMIT 3", (session["_id"],))]
    chain.files = chain.files[:MAX_FILES]
    # the session's decisions: the ones sharing words with the question or the chain's files
    # and symbols (beside a decision, only decisions about the same thing)
    shown = {d["id"] for d in chain.decisions} | {f["id"] for f in chain.fixes} | {chain.anchor["id"]} | set(exclude)
    words = set(terms) | {w for x in chain.files + chain.symbols for w in re.findall(r"[a-z0-9]{3,}", x.lower())}
    candidates = []
    if session["_id"] is not None:
        for r in conn.execute("SELECT n.id, n.label, n.content, n.updated_at FROM edges e JOIN nodes n ON n.id = e.dst"
                              " AND n.type='decision' WHERE e.src=? AND e.type='contains'", (session["_id"],)):
            if format_id(r["id"]) in shown:
                continue
            overlap = sum(1 for w in words if w in f"{r['label']} {r['content']}".lower())
            if overlap or (error is not None and anchor["type"] in ("error", "session")):
                candidates.append((-overlap, -r["updated_at"], r["id"]))
    for _, _, nid in sorted(candidates)[:SHOWN]:
        node = _node(conn, nid)
        if node is not None and node["id"] not in shown:
            shown.add(node["id"])
            chain.decisions.append(_public(node))
    row = conn.execute("SELECT min(e.timestamp), max(s.source) FROM episodes e LEFT JOIN sessions s ON s.id = e.session_id"
                       " WHERE e.session_id=?", (sid,)).fetchone()
    if row is not None and row[0] is not None:
        chain.sessions = [{"id": sid, "source": row[1], "timestamp": row[0],
                           "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(row[0]))}]
    best = episode_ids[:EVIDENCE]
    rows = {r["id"]: ep.Episode.from_row(r) for r in conn.execute(
        f"SELECT * FROM episodes WHERE id IN ({','.join('?' * len(best))})", best)} if best else {}
    for e in (rows[i] for i in best if i in rows):
        body = e.text or ""
        if e.kind == "tool_call" and e.args:
            body = f"{e.tool or 'tool'} " + json.dumps(e.args, ensure_ascii=False, default=str)
        chain.evidence.append({"id": e.ref, "seq": e.seq, "kind": e.kind, "path": e.path,
                               "excerpt": excerpt(body, terms)})
    return chain


def chains(graph: Graph, query: str, max_chains: int = 3, flt=None) -> list[Chain]:
    """Chains of past work matching ``query`` (plain words), best first, at most ``max_chains``:
    one per session (see the module docstring), plus one per matching anchor node that came
    from no session (stored with ``@memory-add-node`` outside any session).

    ``flt`` (a :class:`.filters.MemoryFilter`, optional) keeps only anchor nodes that pass it
    and only sessions with an episode that passes it (a tag or node-type filter admits no
    episodes, so then only node anchors remain)."""
    from opensage.plugins.graph_memory import episodes as ep
    from opensage.plugins.graph_memory.ranking import query_terms

    conn = graph.db.conn
    text = _search_words(query)
    terms = query_terms(text)
    ranked = ep.rank_sessions(graph.db, text)
    if flt is not None:
        ranked = [(sid, score, kept) for sid, score, eids in ranked if (kept := flt.keep_episodes(conn, eids))]
    episodes_of = {sid: eids for sid, _s, eids in ranked}
    anchors = [n for n, _ in _anchors(graph, query, DEPTH)]
    if flt is not None:
        keep = set(flt.keep_nodes(conn, anchors))
        anchors = [n for n in anchors if n in keep]
    sessions_of = _node_sessions(conn, anchors)
    by_anchor: list[tuple[str, Any]] = []
    for nid in anchors:
        found = sessions_of.get(nid, set())
        if not found:
            by_anchor.append(("n", nid))
        elif len(found) <= SPECIFIC_SESSIONS:
            by_anchor.extend(("s", sid) for sid in sorted(found))
    order = [(("s", sid), score) for sid, score, _e in ranked]
    # sessions (and session-less nodes) reached only through an anchor node come after:
    # fused with equal or even a quarter of the weight (RRF), the anchors' sessions outranked
    # the episode evidence (bench/fixes.py click, session MRR 0.83 -> 0.37 at weight 0.25):
    # an error label recurs, the turns around a fix are what tell sessions apart
    found = {k for k, _ in order}
    order += [(k, 0.0) for k in dict.fromkeys(by_anchor) if k not in found]
    out: list[Chain] = []
    seen: set[str] = set()
    for (kind, key), score in order:
        if kind == "n":
            node = _node(conn, key)
            if node is None or node["id"] in seen:
                continue
            chain = _build(conn, node, score, terms, seen)
        else:
            anchor = next((_node(conn, n) for n in anchors
                           if sessions_of.get(n) == {key} and format_id(n) not in seen), None)
            chain = _build_session(conn, key, anchor, score, terms, episodes_of.get(key, []), seen)
        seen.update({chain.anchor["id"]} | {f["id"] for f in chain.fixes} | {d["id"] for d in chain.decisions})
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
