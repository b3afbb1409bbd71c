"""Episodes: every session event kept verbatim, numbered per session, and indexed for search.

An *episode* is one :class:`opensage.types.SessionEvent` as it happened (the lossless
layer of graph memory; nodes derived from it point back through ``node_episodes``).
Episodes are shown as ``e<integer>`` (``e42``).

The full-text index ``episodes_fts`` has four columns per episode: its own ``text``
(plus tool name, path and argument values), its ``role`` (speaker), ``context`` (the
text of the :data:`WINDOW` turns before and after it in the same session, so a reply such as
"yes, last Tuesday" is found by the words of the question it answers) and ``date``
(weekday, day, month and year of its timestamp, local time, so "in May 2023" matches).

*Provenance.* The tool calls of opensage's own memory commands (``@memory-query`` as
an MCP tool, a ``/memory-query`` slash command and the prompt OpenCode expands it to,
``opensage @memory-query`` in a shell tool...) and their results are kept as episodes but marked ``provenance`` (``call`` /
``result``) and left out of the index: a memory query's result is an echo of nodes
the graph already holds, so ranking it would let echoes outrank and crowd out the
evidence they came from. For the same reason, lines of an assistant message that repeat
such a result verbatim are left out of that message's index entry, and provenance
episodes are not part of their neighbours' ``context``. The call that added a node
(``@memory-add-node``) is linked to that node at compression.

Several processes may record into one session at once (hosts run ``opensage hook`` once
per event): the sequence number is computed inside the ``BEGIN IMMEDIATE`` transaction
that inserts the row, so numbers are distinct and gap-free, and nothing is lost.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from opensage.camel import camel, camel_dict
from opensage.store import Database, in_chunks, insert_rows
from opensage.types import SessionEvent

__all__ = [
    "Episode",
    "record_episode",
    "insert_episode_copies",
    "fill_marks",
    "EPISODE_COLUMNS",
    "list_episodes",
    "get_episodes",
    "mark_compressed",
    "search_episodes",
    "rank_episodes",
    "episode_rankings",
    "bm25_episodes",
    "format_episode_id",
    "parse_episode_id",
    "WINDOW",
    "MEMORY_TOOLS",
    "own_tool",
    "provenance_of",
    "mark_modeled",
    "strip_echo",
    "best_of_sessions",
    "rank_sessions",
]

_ROLE_WORDS = re.compile(r"[^\W_]+")

#: Turns on each side whose text is indexed as an episode's ``context``.
WINDOW = 2
#: Characters of each neighbouring turn kept in ``context``.
CONTEXT_CHARS = 600


#: opensage's own memory commands (``@``-commands, the same names as MCP tools) and the
#: reference memory server's tools it serves (opensage/plugins/graph_memory/memory_compat.py): their results
#: are echoes of the graph, so their episodes are provenance, not evidence.
MEMORY_TOOLS = frozenset({
    "memory-query", "memory-add-node", "memory-add-edge", "memory-visualize", "memory-ingest",
    "memory-compress-session", "create_entities", "create_relations", "add_observations", "delete_entities",
    "delete_observations", "delete_relations", "read_graph", "search_nodes", "open_nodes",
})
#: How hosts name opensage's MCP tools: Claude Code ``mcp__<server>__<tool>``, OpenCode
#: ``<server>_<tool>`` (the server is installed as ``opensage``).
_TOOL_PREFIXES = ("mcp__opensage__", "opensage_", "opensage__", "opensage.", "@")
_SHELL_OWN = re.compile(r"\bopensage\b[^\n]*?\s@(memory-[a-z-]+)")
_SLASH_OWN = re.compile(r"^\s*[/@](memory-[a-z-]+)\b")
#: The prompt OpenCode sends for a ``/memory-...`` slash command installed by opensage
#: (opensage/integrations/opencode.py ``command_markdown``): the request, not evidence.
_TEMPLATE_OWN = re.compile(r"^\s*Call the `(?:opensage_|mcp__opensage__)(memory-[a-z-]+)` tool")
#: Keys of ``meta`` under which hosts put the id that pairs a tool result with its call.
CALL_ID_KEYS = ("call_id", "callID", "tool_use_id", "toolUseId", "tool_call_id")
#: Episodes before a tool result searched for its call.
_CALL_LOOKBACK = 8
#: Episodes before an assistant message whose provenance results count as echoed.
_ECHO_LOOKBACK = 12


def own_tool(tool: str | None) -> str | None:
    """The opensage memory command a host's tool name stands for, or None.

    ``opensage_memory-query`` (OpenCode), ``mcp__opensage__memory-query`` (Claude Code),
    ``memory-query``, ``opensage_search_nodes`` -> ``memory-query`` / ``search_nodes``.
    """
    name = (tool or "").strip()
    for prefix in _TOOL_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = name.replace("memory_", "memory-", 1) if name.startswith("memory_") else name
    if name.startswith("memory-"):
        name = name.replace("_", "-")
    return name if name in MEMORY_TOOLS else None


def _shell_text(args: Any, text: str) -> str:
    if isinstance(args, dict):
        for key in ("command", "cmd", "script"):
            value = args.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return " ".join(value)
    return text or ""


def provenance_of(kind: str, tool: str | None, args: Any, text: str, call_provenance: str | None = None) -> str | None:
    """``call``, ``result`` or None (evidence) for one event (see the module docstring).

    :param call_provenance: for a ``tool_result``, the provenance of the call it answers.
    """
    if kind == "tool_call":
        if own_tool(tool) or _SHELL_OWN.search(_shell_text(args, "")):
            return "call"
    elif kind == "tool_result":
        if own_tool(tool) or call_provenance == "call":
            return "result"
    elif kind == "command":
        if _SLASH_OWN.match(text or "") or _SHELL_OWN.search(_shell_text(args, text)):
            return "call"
    elif kind == "user_message":
        if _TEMPLATE_OWN.match(text or ""):
            return "call"
    return None


def call_id(meta: dict | None) -> str | None:
    """The id pairing a tool result with its call (``meta`` keys :data:`CALL_ID_KEYS`)."""
    for key in CALL_ID_KEYS:
        value = (meta or {}).get(key)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return None


def _call_provenance(conn, session_id: str, seq: int, tool: str | None, meta: dict) -> str | None:
    """Provenance of the tool call a result at ``seq`` answers: same call id, else the
    latest call of the same tool among the :data:`_CALL_LOOKBACK` episodes before it."""
    cid = call_id(meta)
    rows = conn.execute(
        "SELECT tool, meta, provenance FROM episodes WHERE session_id=? AND seq < ? AND seq >= ? AND kind='tool_call'"
        " ORDER BY seq DESC", (session_id, seq, seq - _CALL_LOOKBACK)).fetchall()
    for row in rows:
        row_meta = json.loads(row["meta"] or "{}")
        if cid is not None and call_id(row_meta) is not None:
            if call_id(row_meta) == cid:
                return row["provenance"]
        elif row["tool"] == tool:
            return row["provenance"]
    return None


def backfill_provenance(conn) -> None:
    """Set ``provenance`` of every episode recorded before migration m004 (session by session, in order)."""
    rows = conn.execute("SELECT id, session_id, seq, kind, tool, args, text, meta FROM episodes "
                        "WHERE kind IN ('tool_call', 'tool_result', 'command', 'user_message') "
                        "ORDER BY session_id, seq").fetchall()
    for row in rows:
        args = json.loads(row["args"]) if row["args"] else None
        call = (_call_provenance(conn, row["session_id"], row["seq"], row["tool"], json.loads(row["meta"] or "{}"))
                if row["kind"] == "tool_result" else None)
        prov = provenance_of(row["kind"], row["tool"], args, row["text"] or "", call)
        if prov:
            conn.execute("UPDATE episodes SET provenance=? WHERE id=?", (prov, row["id"]))


def format_episode_id(episode_id: int) -> str:
    """The public id of episode ``episode_id``: ``e<id>`` (e.g. ``e12``)."""
    return f"e{episode_id}"


def parse_episode_id(text: str) -> int | None:
    """The integer id in a public episode id ``e<digits>`` (surrounding spaces allowed), or
    None when ``text`` is not one.
    """
    text = (text or "").strip()
    if len(text) > 1 and text[0] == "e" and text[1:].isdigit():
        return int(text[1:])
    return None


@camel
@dataclass
class Episode:
    """One recorded session event.

    :param seq: 1, 2, 3... within the session, in recording order.
    :param timestamp: seconds since the epoch (the event's own time).
    :param compressed_at: when a memory agent folded it into nodes (epoch seconds), or None.
    :param provenance: ``call``/``result`` for opensage's own memory commands and their
        results (kept, never ranked), None for evidence.
    :param modeled_at: when the model pass of compression read it (epoch seconds), or None.
    """

    id: int
    session_id: str
    seq: int
    kind: str
    text: str = ""
    role: str | None = None
    tool: str | None = None
    path: str | None = None
    args: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    timestamp: float = 0.0
    compressed_at: float | None = None
    provenance: str | None = None
    modeled_at: float | None = None

    @property
    def ref(self) -> str:
        """The public id, ``e<id>``."""
        return format_episode_id(self.id)

    def as_dict(self) -> dict[str, Any]:
        """Every field but ``modeled_at`` under its camelCase name; ``id`` as ``e<n>``."""
        return {**camel_dict(self, exclude={"modeled_at"}), "id": self.ref}

    @classmethod
    def from_row(cls, row) -> "Episode":
        """An episode from an ``episodes`` row (a ``sqlite3.Row``; ``args``/``meta`` are JSON text;
        columns added by later migrations are optional).
        """
        return cls(
            row["id"], row["session_id"], row["seq"], row["kind"], row["text"] or "", row["role"],
            row["tool"], row["path"], json.loads(row["args"]) if row["args"] else None,
            json.loads(row["meta"] or "{}"), row["timestamp"], row["compressed_at"],
            row["provenance"] if "provenance" in row.keys() else None,
            row["modeled_at"] if "modeled_at" in row.keys() else None,
        )


# -- indexing -------------------------------------------------------------------------------
def _own_text(row) -> str:
    parts = [row["text"] or ""]
    for key in ("tool", "path"):
        if row[key]:
            parts.append(row[key])
    if row["args"]:
        try:
            args = json.loads(row["args"])
        except ValueError:
            args = {}
        if isinstance(args, dict):
            parts.extend(str(v)[:300] for v in args.values() if isinstance(v, (str, int, float)))
    return "\n".join(p for p in parts if p)


def _date_text(ts: float) -> str:
    tm = time.localtime(ts)
    return f"{time.strftime('%A', tm)} {tm.tm_mday} {time.strftime('%B', tm)} {tm.tm_year}"


def _reindex(conn, episode_id: int) -> None:
    """(Re)write the FTS row of one episode from the table (its text, role, neighbours, date)."""
    row = conn.execute("SELECT * FROM episodes WHERE id=?", (episode_id,)).fetchone()
    conn.execute("DELETE FROM episodes_fts WHERE rowid=?", (episode_id,))
    if row is None or _is_provenance(row):
        return
    prov = " AND provenance IS NULL" if "provenance" in row.keys() else ""
    neighbours = conn.execute(
        f"SELECT * FROM episodes WHERE session_id=? AND seq BETWEEN ? AND ? AND seq != ?{prov} ORDER BY seq",
        (row["session_id"], row["seq"] - WINDOW, row["seq"] + WINDOW, row["seq"]),
    ).fetchall()
    context = "\n".join(
        f"{n['role'] or ''}: "
        + ((_without_echo(conn, n, n["text"] or "") if prov and n["kind"] == "assistant_message" else n["text"] or "")
           [:CONTEXT_CHARS])
        for n in neighbours)
    own = _own_text(row)
    if row["kind"] == "assistant_message" and prov:
        own = _without_echo(conn, row, own)
    conn.execute(
        "INSERT INTO episodes_fts(rowid, text, role, context, date) VALUES (?,?,?,?,?)",
        (episode_id, own, row["role"] or "", context, _date_text(row["timestamp"])),
    )


def _is_provenance(row) -> bool:
    return "provenance" in row.keys() and bool(row["provenance"])


def _flat(line: str) -> str:
    return " ".join(line.split()).strip(" -*>`|")


def _without_echo(conn, row, text: str) -> str:
    """``text`` without the lines that repeat a provenance result of the :data:`_ECHO_LOOKBACK`
    episodes before it (an assistant quoting a memory query's answer back to the user)."""
    results = conn.execute(
        "SELECT text FROM episodes WHERE session_id=? AND seq < ? AND seq >= ? AND provenance='result'",
        (row["session_id"], row["seq"], row["seq"] - _ECHO_LOOKBACK)).fetchall()
    return strip_echo(text, [r["text"] or "" for r in results])


def strip_echo(text: str, results: list[str]) -> str:
    """``text`` without its lines that repeat one of ``results`` (whole lines, or a piece
    of at least 24 characters found in one)."""
    if not results or not text:
        return text
    echoed = {_flat(line) for r in results for line in (r or "").splitlines()}
    echoed.discard("")
    joined = "\n".join(_flat(r or "") for r in results)
    kept = []
    for line in text.splitlines():
        flat = _flat(line)
        if flat and (flat in echoed or (len(flat) >= 24 and flat in joined)):
            continue
        kept.append(line)
    return "\n".join(kept)


def reindex_all(conn) -> None:
    """Rebuild every episode's FTS row (used by migrations m002 and m004)."""
    for (episode_id,) in conn.execute("SELECT id FROM episodes ORDER BY id").fetchall():
        _reindex(conn, episode_id)


# -- writing ---------------------------------------------------------------------------------
def record_episode(db: Database, session_id: str, event: SessionEvent) -> Episode:
    """Store ``event`` as the next episode of ``session_id`` and index it, in one transaction.

    The previous episode's index entry is refreshed too (this turn is part of its context).
    Safe with concurrent writers in several processes: ``seq`` is computed under the write
    lock (``BEGIN IMMEDIATE``).

    An event delivered from the hook queue carries ``meta["queue_id"]``
    (:mod:`opensage.hook_queue`): when an episode of the same session, kind and timestamp
    already has that id, it was delivered before (an interrupted delivery) and is returned
    instead of being stored twice.

    :returns: the stored :class:`Episode`.
    """
    meta = dict(event.meta or {})
    if event.call_id is not None:
        meta["call_id"] = event.call_id
    queue_id = meta.get("queue_id")
    with db.transaction() as conn:
        if isinstance(queue_id, str):
            for row in conn.execute("SELECT * FROM episodes WHERE session_id=? AND kind=? AND timestamp=?",
                                    (session_id, event.kind, float(event.timestamp))).fetchall():
                if json.loads(row["meta"] or "{}").get("queue_id") == queue_id:
                    return Episode.from_row(row)
        seq = conn.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM episodes WHERE session_id=?", (session_id,)
        ).fetchone()[0]
        call = _call_provenance(conn, session_id, seq, event.tool, meta) if event.kind == "tool_result" else None
        provenance = provenance_of(event.kind, event.tool, event.args, event.text or "", call)
        cur = conn.execute(
            "INSERT INTO episodes(session_id, seq, kind, role, tool, path, text, args, meta, timestamp, provenance)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                session_id, seq, event.kind, event.role, event.tool, event.path, event.text or "",
                json.dumps(event.args, default=str) if event.args is not None else None,
                json.dumps(meta, default=str), float(event.timestamp), provenance,
            ),
        )
        episode_id = cur.lastrowid
        _reindex(conn, episode_id)
        for (neighbour,) in conn.execute(
            "SELECT id FROM episodes WHERE session_id=? AND seq >= ? AND seq < ?",
            (session_id, seq - WINDOW, seq) if provenance is None else (session_id, 0, 0),
        ).fetchall():
            _reindex(conn, neighbour)
        row = conn.execute("SELECT * FROM episodes WHERE id=?", (episode_id,)).fetchone()
    return Episode.from_row(row)


#: The stored columns of an episode, in the order :func:`insert_episode_copies` takes them.
EPISODE_COLUMNS = ("session_id", "seq", "kind", "role", "tool", "path", "text", "args", "meta", "timestamp",
                   "compressed_at", "provenance", "modeled_at")


def insert_episode_copies(conn, rows: Sequence[Sequence[Any]]) -> dict[tuple[str, int], int]:
    """Insert episodes copied from another store (``opensage memory push/pull --episodes``)
    inside the caller's transaction, keeping their ``seq`` and every stored field, then
    index them and the turns around them (their context changed).

    :param rows: tuples in :data:`EPISODE_COLUMNS` order (``args``/``meta`` as JSON text);
        the (session_id, seq) pairs must be new in this store (callers look them up first).
    :returns: ``{(session_id, seq): new episode id}``.
    :raises sqlite3.IntegrityError: a (session_id, seq) that exists.
    """
    rows = [tuple(r) for r in rows]
    insert_rows(conn, f"INSERT INTO episodes({', '.join(EPISODE_COLUMNS)})", rows)
    by_session: dict[str, list[int]] = {}
    for row in rows:
        by_session.setdefault(row[0], []).append(int(row[1]))
    ids: dict[tuple[str, int], int] = {}
    for session_id, seqs in by_session.items():
        for chunk, marks in in_chunks(seqs):
            for r in conn.execute(f"SELECT id, seq FROM episodes WHERE session_id=? AND seq IN ({marks})",
                                  (session_id, *chunk)).fetchall():
                ids[(session_id, int(r[1]))] = r[0]
    for session_id, seqs in by_session.items():
        for (episode_id,) in conn.execute(
                "SELECT id FROM episodes WHERE session_id=? AND seq BETWEEN ? AND ? ORDER BY seq",
                (session_id, min(seqs) - WINDOW, max(seqs) + WINDOW)).fetchall():
            _reindex(conn, episode_id)
    return ids


def fill_marks(conn, episode_id: int, *, compressed_at: float | None = None, modeled_at: float | None = None) -> int:
    """Set an episode's ``compressed_at``/``modeled_at`` (epoch seconds) where they are still
    NULL, inside the caller's transaction (a copy from another store that compressed it);
    None leaves a mark alone. Returns how many marks were set."""
    done = 0
    for column, at in (("compressed_at", compressed_at), ("modeled_at", modeled_at)):
        if at is not None:
            done += conn.execute(f"UPDATE episodes SET {column}=? WHERE id=? AND {column} IS NULL",
                                 (float(at), episode_id)).rowcount
    return done


def _mark(db: Database, column: str, episode_ids: Iterable[int], at: float | None) -> int:
    """Set ``column`` (``compressed_at`` or ``modeled_at``) where it is still NULL; returns the count."""
    ids = [int(i) for i in episode_ids]
    at = time.time() if at is None else float(at)
    marked = 0
    with db.transaction() as conn:
        for chunk, marks in in_chunks(ids):
            cur = conn.execute(
                f"UPDATE episodes SET {column}=? WHERE {column} IS NULL AND id IN ({marks})",
                (at, *chunk),
            )
            marked += cur.rowcount
    return marked


def mark_compressed(db: Database, episode_ids: Iterable[int], at: float | None = None) -> int:
    """Set ``compressed_at`` (epoch seconds, default now) on the given episodes.

    :returns: how many episodes were marked (already-marked ones are left as they were).
    """
    return _mark(db, "compressed_at", episode_ids, at)


def mark_modeled(db: Database, episode_ids: Iterable[int], at: float | None = None) -> int:
    """Set ``modeled_at`` (epoch seconds, default now): the model pass of compression read them.

    :returns: how many episodes were marked."""
    return _mark(db, "modeled_at", episode_ids, at)


# -- reading ---------------------------------------------------------------------------------
def list_episodes(db: Database, session_id: str, *, uncompressed: bool = False, after_seq: int = 0,
                  limit: int | None = None) -> list[Episode]:
    """Episodes of one session in ``seq`` order.

    :param uncompressed: only those not yet marked compressed.
    :param after_seq: only those with ``seq`` greater than this.
    :param limit: at most this many (None: all).
    """
    sql = "SELECT * FROM episodes WHERE session_id=? AND seq > ?"
    params: list[Any] = [session_id, after_seq]
    if uncompressed:
        sql += " AND compressed_at IS NULL"
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return [Episode.from_row(r) for r in db.conn.execute(sql, params)]


def get_episodes(db: Database, ids: Iterable[int]) -> dict[int, Episode]:
    """Episodes by id (missing ids are left out)."""
    ids = list(ids)
    out: dict[int, Episode] = {}
    for chunk, marks in in_chunks(ids):
        for row in db.conn.execute(f"SELECT * FROM episodes WHERE id IN ({marks})", chunk):
            out[row["id"]] = Episode.from_row(row)
    return out


#: BM25 column weights of ``episodes_fts`` (text, role, context, date): the turn's own
#: words count fully, its neighbours' words (the context window) at 0.3, so a turn is
#: found both by what it says and by what it answers (passage-in-context retrieval).
#: Chosen on LoCoMo conversations 26 and 30 only (see bench/locomo.py, which lists
#: what else was tried and left out).
EPISODE_WEIGHTS = (1.0, 0.5, 0.3, 0.3)


def bm25_episodes(db: Database, match: str, weights: tuple[float, float, float, float], limit: int,
                  session_id: str | None = None, scored: int | None = None) -> list[tuple[int, float]]:
    """Rank episodes for an FTS5 ``match`` expression: [(episode id, bm25)] best first (bm25 < 0).

    At most ``scored`` (default ``ranking.MAX_SCORED``) matching rows are scored (a work
    bound at scale)."""
    from opensage.plugins.graph_memory.ranking import MAX_SCORED

    sql = (f"SELECT rowid, bm25(episodes_fts, {', '.join(f'{w:g}' for w in weights)}) AS s "
           "FROM episodes_fts WHERE episodes_fts MATCH ?")
    params: list[Any] = [match]
    if session_id is not None:
        sql += " AND rowid IN (SELECT id FROM episodes WHERE session_id=?)"
        params.append(session_id)
    sql = f"SELECT rowid, s FROM ({sql} LIMIT {int(scored or MAX_SCORED)}) ORDER BY s LIMIT ?"
    params.append(int(limit))
    return [(r[0], r[1]) for r in db.conn.execute(sql, params)]


#: RRF weight of the speaker list (see :func:`episode_rankings`).
SPEAKER_WEIGHT = 0.5
#: Candidates the speaker list is drawn from.
SPEAKER_DEPTH = 200


#: BM25+ lower bound on the term-frequency factor of a word an episode contains (Lv & Zhai,
#: "Lower-bounding term frequency normalization", CIKM 2011; 1.0 is their recommended
#: default, not tuned here). In BM25 a word's contribution shrinks towards 0 as the
#: document grows, and an episode's length includes its ``context`` (neighbouring turns):
#: a long turn, or one with long neighbours, that contains more of the question's words
#: can rank below a short one containing fewer. The bound adds DELTA x IDF per word
#: contained. 0 switches it off (plain FTS5 BM25).
BM25_PLUS_DELTA = 1.0
#: Candidates (FTS5 BM25 order) rescored with the BM25+ bound.
RESCORE_DEPTH = 200


def rank_episodes(db: Database, query: str, limit: int, session_id: str | None = None) -> list[tuple[int, float]]:
    """Episode ids for free-text ``query`` by BM25+, best first: [(id, score)] (more negative is better).

    The query is OR-ed quoted words without stop words (see
    :func:`opensage.plugins.graph_memory.ranking.match_expression`). FTS5 BM25 picks the
    :data:`RESCORE_DEPTH` best candidates, then the BM25+ bound (:data:`BM25_PLUS_DELTA`)
    is added: score = bm25 - DELTA * sum of the IDFs of the query words each one contains.
    """
    from opensage.plugins.graph_memory.ranking import _or, match_terms

    terms, scored, df = match_terms(db.conn, "episodes", query)
    if not terms:
        return []
    depth = max(limit, RESCORE_DEPTH) if BM25_PLUS_DELTA else limit
    ranked = bm25_episodes(db, _or(terms), EPISODE_WEIGHTS, depth, session_id, scored)
    if BM25_PLUS_DELTA and ranked:
        ranked = _bm25_plus(db.conn, terms, df, ranked, BM25_PLUS_DELTA)
    return ranked[:limit]


def _bm25_plus(conn, terms: list[str], df: dict[str, int], ranked: list[tuple[int, float]],
               delta: float) -> list[tuple[int, float]]:
    """Add the BM25+ bound to FTS5 ``bm25`` scores: -delta x IDF for every query word a
    candidate contains (in any column, as FTS5 counts a match). IDF as FTS5 computes it:
    log((N - n + 0.5) / (n + 0.5)), at least 1e-6, n = episodes containing the word
    (``df`` from :func:`ranking.match_terms` on large collections, else counted here, at
    most ``MAX_DF_DOCS`` rows). Work per word: its postings within the candidates' rowid
    range (at most the pruning limit, or the rows scored in the all-common case)."""
    from opensage.plugins.graph_memory.ranking import _quote

    bonus = {i: 0.0 for i, _ in ranked}
    lo, hi = min(bonus), max(bonus)
    n_rows = conn.execute("SELECT count(*) FROM episodes").fetchone()[0]
    for term in terms:
        phrase = _quote(term)
        n = df.get(term)
        if n is None:  # small collection: read all the word's postings, count them too
            hits = [r[0] for r in conn.execute("SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ?", (phrase,))]
            n = len(hits)
        else:
            hits = [r[0] for r in conn.execute(
                "SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ? AND rowid BETWEEN ? AND ?", (phrase, lo, hi))]
        if not n:
            continue
        idf = max(math.log((n_rows - n + 0.5) / (n + 0.5)), 1e-6)
        for i in bonus.keys() & hits:
            bonus[i] += idf
    return sorted(((i, s - delta * bonus[i]) for i, s in ranked), key=lambda x: x[1])


def episode_rankings(db: Database, query: str, limit: int, session_id: str | None = None,
                     dense=None) -> list[tuple[list[int], float]]:
    """Ranked episode lists for fusion, as (ids best first, RRF weight).

    1. BM25 over turn, speaker, neighbouring turns and date (weight 1);
    2. speaker-aware: when the query names a speaker (a word of an episode's ``role``,
       e.g. "What did Alice say about the cache?" or "what did the user ask"), the same
       ranking restricted to that speaker's own turns (weight :data:`SPEAKER_WEIGHT`),
       so the named person's words come before replies addressed to them.

    :param dense: the optional dense ranker (an :class:`.embeddings.DenseIndex`, only
        without ``session_id``): each list is then re-ranked over its BM25 pool plus the
        ``limit`` episodes nearest by cosine (the speaker list: those of the named
        speaker) by :func:`.embeddings.hybrid`.
    """
    from opensage.plugins.graph_memory.ranking import query_terms

    if session_id is not None:
        dense = None
    ranked = rank_episodes(db, query, max(limit, SPEAKER_DEPTH), session_id)
    near = dense.nearest(query, "episode", limit) if dense is not None else []
    if not ranked and not near:
        return []
    ids = list(dict.fromkeys([i for i, _ in ranked] + near))
    terms = set(query_terms(query))
    roles = {}
    for chunk, marks in in_chunks(ids):
        roles.update(db.conn.execute(
            f"SELECT id, lower(coalesce(role, '')) FROM episodes WHERE id IN ({marks})", chunk))
    is_named = {i for i in ids if terms.intersection(_ROLE_WORDS.findall(roles.get(i, "")))}
    if dense is None:
        lists = [([i for i, _ in ranked][:limit], 1.0)]
        named = [i for i, _ in ranked if i in is_named]
        if named:
            lists.append((named[:limit], SPEAKER_WEIGHT))
        return lists
    from opensage.plugins.graph_memory.ranking import hybrid

    cosine = dense.cosines(query, "episode", ids)
    lexical = [(i, -s) for i, s in ranked]  # FTS5 bm25() is negated: higher is better now
    lists = [(hybrid(lexical, near, cosine, limit=limit), 1.0)]
    if is_named:
        lists.append((hybrid([(i, s) for i, s in lexical if i in is_named], [i for i in near if i in is_named],
                             cosine, limit=limit), SPEAKER_WEIGHT))
    return lists


def search_episodes(db: Database, query: str, limit: int = 20, session_id: str | None = None) -> list[tuple[Episode, float]]:
    """Episodes matching ``query`` (free text), best first, as (episode, score).

    :param session_id: only this session's episodes (None: all sessions).
    :returns: score = reciprocal rank fusion (Cormack et al. 2009, k = 60) of
        :func:`episode_rankings` (higher is better).
    """
    from opensage.plugins.graph_memory.ranking import rrf

    lists = episode_rankings(db, query, limit, session_id)
    fused = rrf([l for l, _ in lists], weights=[w for _, w in lists])[:limit]
    found = get_episodes(db, [i for i, _ in fused])
    return [(found[i], s) for i, s in fused if i in found]



#: Episodes ranked (BM25+) to score sessions in :func:`rank_sessions`.
SESSION_POOL = 200
#: A session's score is the sum of its SESSION_TOP best episode scores. Measured on the
#: dev repository of bench/fixes.py (click; werkzeug held out), session MRR of this
#: ranking: best episode only 0.79, top 2 0.83, top 3 0.83, top 5 0.81, all 0.68.
SESSION_TOP = 3


def rank_sessions(db: Database, query: str) -> list[tuple[str, float, list[int]]]:
    """Sessions for free-text ``query``, best first: [(session id, score, its matching episode
    ids best first)]. A session's score is the sum of its :data:`SESSION_TOP` best BM25+
    episode scores among the :data:`SESSION_POOL` best episodes (:func:`rank_episodes`):
    passage evidence aggregated to the document, between the best-passage (MaxP) and
    all-passages (SumP) rules (Callan, "Passage-level evidence in document retrieval",
    SIGIR 1994; Dai & Callan, SIGIR 2019). A piece of work spreads its words over several
    turns (the request, the edited code, the test names, the closing message), so three
    matching turns say more than one."""
    ranked = rank_episodes(db, query, SESSION_POOL)
    if not ranked:
        return []
    ids = [i for i, _ in ranked]
    session_of = dict(db.conn.execute(
        f"SELECT id, session_id FROM episodes WHERE id IN ({','.join('?' * len(ids))})", ids))
    per: dict[str, list[tuple[float, int]]] = {}
    for episode_id, score in ranked:  # best first; bm25 scores are negative, better is lower
        if episode_id in session_of:
            per.setdefault(session_of[episode_id], []).append((-score, episode_id))
    out = [(sid, sum(x for x, _ in hits[:SESSION_TOP]), [i for _, i in hits]) for sid, hits in per.items()]
    return sorted(out, key=lambda t: -t[1])


def best_of_sessions(db: Database, query: str, limit: int) -> list[int]:
    """The best episode of each session in :func:`rank_sessions` order, at most ``limit``:
    [episode id] best first."""
    return [eids[0] for _sid, _score, eids in rank_sessions(db, query)[:limit]]
