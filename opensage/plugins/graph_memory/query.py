"""Retrieval over graph memory: similarity (hybrid), pattern and traversal queries.

*Similarity* is a small hybrid retriever in the style the field has settled on
(Graphiti, Mem0 v3): several rankers produce candidate lists, fused with reciprocal rank
fusion, then expanded one hop along the graph.

Rankers:

1. **BM25 over nodes** — SQLite FTS5 ``nodes_fts`` (label, identifier words, content;
   column weights :data:`NODE_WEIGHTS`). The query becomes an OR of quoted words with
   stop words removed, so user text can never break FTS syntax; on large collections
   very common words are left out (:data:`MAX_DF_DOCS`), which bounds the work.
2. **Fuzzy labels** — rapidfuzz ``ratio`` of identifier-like query tokens against node
   labels (whole label and its dotted/slashed segments, lowercased, separators removed),
   so ``parse_config`` finds ``ParseConfig`` and ``AuthServce`` finds ``AuthService``.
   A character-trigram index (numpy, built per host on first use, extended as nodes
   are added) preselects at most :data:`FUZZY_CANDIDATES` labels, so a lookup stays
   around a millisecond at 100k nodes.
3. **BM25+ over episodes** — each turn with its speaker, its date and (at a lower
   weight) its neighbouring turns, FTS5 BM25 plus the BM25+ lower bound per word
   contained (Lv & Zhai 2011), plus a speaker-aware list when the query names a
   speaker (see :func:`.episodes.episode_rankings`), so questions about what was said in
   a session find the turns; for a question about past work ("how did we fix ...") also
   the best turn of each session, sessions ranked by their three best turns
   (:data:`SESSION_WEIGHT`). An episode result names the files its session edited.
4. **Dense embeddings** (optional, the ``embeddings`` extra) — not a list of its own but a
   second stage of every BM25 list above (nodes, episodes, the speaker list): each is
   re-ranked over its BM25 pool plus the items nearest by cosine similarity of sentence
   embeddings, by a convex combination of the normalised scores (see
   :func:`.embeddings.hybrid`; Bruch et al., ACM TOIS 2023), so a paraphrase with no
   shared word is found too; absent when the extra is not installed or
   ``OPENSAGE_EMBEDDINGS`` is not on. Equal fused scores are then ordered by cosine.

Fusion: RRF score = Σ weight / (k + rank), k = 60, weight 1 except the speaker list
(Cormack, Clarke & Büttcher, "Reciprocal
rank fusion outperforms Condorcet and individual rank learning methods", SIGIR 2009).
Expansion: neighbours of the top :data:`EXPAND_TOP` node hits are added with the hit's
score times :data:`EXPAND_DECAY` and remember the edge that reached them.

*Pattern* is a regular expression or glob over node fields; *traversal* walks edges
from a start node with a recursive CTE, in breadth-first order.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from opensage.errors import NotFoundError, UsageError
from opensage.untrusted import MAX_REGEX_CHARS, compile_regex
from opensage.plugins.graph_memory import episodes as ep
from opensage.plugins.graph_memory.filters import MemoryFilter
from opensage.plugins.graph_memory.graph import TYPE_NAME, Graph, format_id, graph_for, parse_id
from opensage.plugins.graph_memory.ranking import (  # noqa: F401 - query_terms ... excerpt are public here too
    MAX_DF_DOCS, MAX_SCORED, RRF_K, STOP_WORDS, _RAW_TOKEN, _SEGMENT_SPLIT, _WORD, excerpt, fts_or_query, hybrid,
    match_expression, query_terms, rrf)
from opensage.store import in_chunks

__all__ = [
    "Result",
    "QueryEngine",
    "engine_for",
    "query_terms",
    "fts_or_query",
    "match_expression",
    "rrf",
    "excerpt",
    "STOP_WORDS",
    "RRF_K",
]

#: BM25 column weights of ``nodes_fts`` (label, identifier words, content).
NODE_WEIGHTS = (4.0, 2.0, 1.0)
#: Candidates each ranker contributes before fusion.
RANKER_DEPTH = 50
#: Neighbours of this many top node hits are added (1-hop expansion) ...
EXPAND_TOP = 5
#: ... with the hit's score times this factor ...
EXPAND_DECAY = 0.5
#: ... at most this many edges per hit (heaviest first).
EXPAND_EDGES = 8
#: rapidfuzz ``ratio`` (0-100) a label must reach to count as a fuzzy match.
FUZZY_CUTOFF = 75
#: Only fuzzy matches within this many points of the best one are ranked (a near-exact
#: label match should not be outvoted by loose matches that BM25 also likes).
FUZZY_BAND = 8
#: Labels preselected by the trigram index before rapidfuzz scores them.
FUZZY_CANDIDATES = 300
#: Nodes taken per matching label key (a key such as "edge" may name thousands).
KEY_NODES_SHOWN = 20
#: Edges shown per result.
RELATIONS_SHOWN = 4
#: RRF weight of the session list, used only for a question about past work ("how did we
#: fix ...", :func:`.history.is_past_work_question`): the best turn of each session, sessions
#: ordered by their three best turns (:func:`.episodes.best_of_sessions`). Such a question
#: asks for a piece of work, and a fix spreads its words over several turns. Weight 1 as
#: every other list. bench/fixes.py click (dev), similarity: session MRR 0.59 -> 0.81. Not
#: used for other questions: on LoCoMo (what was said, a turn is the unit) the same list at
#: weight 0.5 took recall@10 from 0.77 to 0.71.
SESSION_WEIGHT = 1.0
#: Files a session edited given with each of its episodes (``sessionFiles``; the text shows
#: :data:`RELATIONS_SHOWN`).
SESSION_FILES = 12
#: Deepest traversal allowed.
MAX_DEPTH = 6
#: Rows the traversal CTE may produce before it stops (bounds work on dense graphs).
TRAVERSAL_ROW_CAP = 200_000
#: Longest similarity query (characters). Work grows with the number of query words
#: (each is looked up in FTS5 and in the fuzzy label index: about 40 us a word on a small
#: graph, measured with 20,000 words); 4,000 characters (~600 words) is a long paragraph.
#: ``@memory-query`` rejects longer queries; other callers' text is cut to this length.
MAX_QUERY_CHARS = 4000
#: Longest pattern (characters), regex or glob: the same bound as any untrusted regex.
MAX_PATTERN_CHARS = MAX_REGEX_CHARS

_ASCII_DROP = str.maketrans("", "", "".join(chr(c) for c in range(128) if not chr(c).isalnum()))
_ASCII_SEGMENTS = str.maketrans({c: "\x00" for c in "./\\:# \t\n"})


def _norm_key(text: str) -> str:
    """Lowercase letters and digits only (``Parse_Config`` -> ``parseconfig``)."""
    if text.isascii():
        return text.lower().translate(_ASCII_DROP)
    return "".join(_WORD.findall(text.lower()))


def _label_keys(label: str) -> list[str]:
    """Lookup keys of a label: the whole label, its segments, and its last two segments run
    together (``click.core.Context.invoke`` gives ``contextinvoke``: people write a member as
    ``Class.member``, which against the whole label falls under :data:`FUZZY_CUTOFF`);
    lowercase letters/digits only."""
    whole = _norm_key(label)
    keys = [whole] if whole else []
    segments = label.translate(_ASCII_SEGMENTS).split("\x00") if label.isascii() else _SEGMENT_SPLIT.split(label)
    if len(segments) > 1:
        for seg in segments:
            k = _norm_key(seg)
            if len(k) >= 3 and k not in keys:
                keys.append(k)
        if len(segments) > 2:
            k = _norm_key(segments[-2] + segments[-1])
            if len(k) >= 3 and k not in keys:
                keys.append(k)
    return keys


def _looks_like_identifier(token: str) -> bool:
    core = token.strip(".:/\\-")
    return bool(
        re.search(r"[a-z0-9][A-Z]", core)
        or re.search(r"\w[_.:/\\]\w", core)
        or (re.search(r"[A-Za-z]", core) and re.search(r"\d", core))
    )


# -- fuzzy label index -----------------------------------------------------------------------
class LabelIndex:
    """In-memory trigram index over the distinct label keys of nodes, for fuzzy label lookup.

    Built from the ``nodes`` table on first use (about 1 s of CPU at 100k nodes) and
    saved to ``.opencode/cache/label-index.npz``, so the next process (one CLI command
    per process) loads it in milliseconds when the table has not changed since
    (same ``max(id)``, ``count(*)`` and ``sum(id)``). Nodes added later (higher ids) are
    appended to a small tail that is scanned directly, and the index is rebuilt when the
    tail grows past :attr:`TAIL_MAX` or nodes were deleted (noticed through ``max(id)``
    and ``count(*)``, looked at only after a commit: ``PRAGMA data_version`` and the
    connection's ``total_changes``).
    """

    TAIL_MAX = 5000
    CACHE_VERSION = 2

    def __init__(self, db) -> None:
        self.db = db
        self._signature: tuple[int, int] | None = None
        self._max_seen = 0
        self._seen: tuple[int, int] | None = None
        self._count = 0
        self._keys: list[str] = []
        self._kn_flat = None  # numpy int64: node ids of all keys, key after key
        self._kn_off = None  # numpy int64: key i owns _kn_flat[_kn_off[i]:_kn_off[i + 1]]
        self._key_tri = None  # numpy float64: trigrams per key
        self._codes = None  # sorted trigram codes (uint64)
        self._code_key = None  # key index per sorted code
        self._tail: list[tuple[str, int]] = []
        # one lookup at a time: a refresh replaces several arrays that a concurrent
        # lookup (the MCP server runs calls in threads) must not see half-replaced
        self._lock = threading.Lock()

    @property
    def cache_path(self):
        """``.opencode/cache/label-index.npz`` next to the database: the saved index, reused
        while the nodes are unchanged.
        """
        return self.db.cache_dir / "label-index.npz"

    def _refresh(self, persist: bool = True) -> None:
        conn = self.db.conn
        # nothing committed by another connection (data_version) nor by this one (total_changes)?
        seen = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        if seen == self._seen:
            return
        self._seen = seen
        if self._signature is None:
            max_id, count, id_sum = conn.execute(
                "SELECT coalesce(max(id), 0), count(*), coalesce(sum(id), 0) FROM nodes").fetchone()
            if not self._load((max_id, count, id_sum)):
                self._build()
                if persist:
                    self._save((max_id, count, id_sum))
            self._max_seen, self._count, self._signature = max_id, count, (max_id, count)
            return
        max_id, count = conn.execute("SELECT coalesce(max(id), 0), count(*) FROM nodes").fetchone()
        if self._signature == (max_id, count):
            return
        if len(self._tail) < self.TAIL_MAX:
            new = conn.execute("SELECT id, label FROM nodes WHERE id > ?", (self._max_seen,)).fetchall()
            if self._count + len(new) == count:  # only additions since the last look
                for nid, label in new:
                    self._tail.extend((key, nid) for key in _label_keys(label))
                self._max_seen, self._count, self._signature = max_id, count, (max_id, count)
                return
        self._build()
        self._max_seen, self._count, self._signature = max_id, count, (max_id, count)

    def _build(self) -> None:
        import numpy as np

        owners: dict[str, list[int]] = {}
        for nid, label in self.db.conn.execute("SELECT id, label FROM nodes"):
            for key in _label_keys(label):
                owners.setdefault(key, []).append(nid)
        keys = list(owners)
        self._keys = keys
        sizes = np.fromiter((len(owners[k]) for k in keys), dtype=np.int64, count=len(keys))
        self._kn_off = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self._kn_flat = np.fromiter((n for k in keys for n in owners[k]), dtype=np.int64, count=int(sizes.sum()))
        self._key_tri = np.asarray([max(1, len(k) - 2) for k in keys], dtype=np.float64)
        self._tail = []
        if not keys:
            self._codes = np.zeros(0, dtype=np.uint64)
            self._code_key = np.zeros(0, dtype=np.int32)
            return
        # all keys in one UTF-32 array separated by 0; a trigram code packs 3 code points (21 bits each)
        joined = "\x00".join(keys) + "\x00"
        cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        key_of_pos = np.cumsum(cps == 0) - (cps == 0)  # index of the key each position belongs to
        a, b, c = cps[:-2], cps[1:-1], cps[2:]
        valid = (a != 0) & (b != 0) & (c != 0)
        codes = (a << np.uint64(42)) | (b << np.uint64(21)) | c
        codes = codes[valid]
        owners_pos = key_of_pos[:-2][valid]
        order = np.argsort(codes)
        self._codes = codes[order]
        self._code_key = owners_pos[order].astype(np.int32)

    def _save(self, signature: tuple[int, int, int]) -> None:
        """Write the index next to the database (atomically; a failure only costs a rebuild later)."""
        import os
        import tempfile

        import numpy as np

        path = self.cache_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".label-index.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, version=np.int64(self.CACHE_VERSION), signature=np.asarray(signature, dtype=np.int64),
                             keys=np.frombuffer("\x00".join(self._keys).encode("utf-8"), dtype=np.uint8),
                             kn_flat=self._kn_flat, kn_off=self._kn_off, key_tri=self._key_tri,
                             codes=self._codes, code_key=self._code_key)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except OSError:
            pass

    def _load(self, signature: tuple[int, int, int]) -> bool:
        """Load the saved index if it was built from exactly this ``nodes`` table."""
        import zipfile

        import numpy as np

        try:
            with np.load(self.cache_path, allow_pickle=False) as data:
                if int(data["version"]) != self.CACHE_VERSION or tuple(data["signature"].tolist()) != signature:
                    return False
                raw = data["keys"].tobytes().decode("utf-8")
                self._keys = raw.split("\x00") if raw else []
                self._kn_flat, self._kn_off = data["kn_flat"], data["kn_off"]
                self._key_tri, self._codes, self._code_key = data["key_tri"], data["codes"], data["code_key"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return False
        self._tail = []
        return len(self._keys) + 1 == len(self._kn_off)

    @staticmethod
    def _trigram_codes(key: str):
        import numpy as np

        cps = [ord(ch) for ch in key]
        return np.asarray(sorted({(cps[i] << 42) | (cps[i + 1] << 21) | cps[i + 2] for i in range(len(cps) - 2)}),
                          dtype=np.uint64)

    def _nodes_of(self, key_index: int) -> list[int]:
        lo, hi = int(self._kn_off[key_index]), int(self._kn_off[key_index + 1])
        return self._kn_flat[lo:min(hi, lo + KEY_NODES_SHOWN)].tolist()

    def lookup(self, key: str, limit: int = RANKER_DEPTH, persist: bool = True) -> list[tuple[int, float]]:
        """Node ids whose label keys are close to ``key``: [(node id, ratio 0-100)] best first.

        :param persist: save a newly built index to the cache file (False on error paths,
            which must leave nothing on disk).
        """
        with self._lock:
            return self._lookup(key, limit, persist)

    def _lookup(self, key: str, limit: int, persist: bool) -> list[tuple[int, float]]:
        import numpy as np
        from rapidfuzz import fuzz, process

        self._refresh(persist)
        candidates: list[tuple[str, int]] = []
        if self._keys:
            if len(key) >= 3:
                qcodes = self._trigram_codes(key)
                lo = np.searchsorted(self._codes, qcodes, side="left")
                hi = np.searchsorted(self._codes, qcodes, side="right")
                # trigrams found in a quarter of all keys say little and cost the most
                common = max(1000, len(self._keys) // 4)
                spans = [(l, h) for l, h in zip(lo.tolist(), hi.tolist()) if h > l]
                rare = [(l, h) for l, h in spans if h - l <= common]
                parts = [self._code_key[l:h] for l, h in (rare if len(rare) >= 2 else spans)]
                if parts:
                    counts = np.bincount(np.concatenate(parts), minlength=len(self._keys))
                    need = max(1, int(len(parts) * 0.3))
                    hits = np.nonzero(counts >= need)[0]
                    if len(hits) > FUZZY_CANDIDATES:
                        # Dice coefficient of trigram sets: shared / mean size (favours similar lengths)
                        dice = 2.0 * counts[hits] / (len(qcodes) + self._key_tri[hits])
                        top = np.argpartition(-dice, FUZZY_CANDIDATES)[:FUZZY_CANDIDATES]
                        hits = hits[top]
                    candidates = [(self._keys[i], self._nodes_of(i)) for i in hits.tolist()]
            else:
                candidates = [(k, self._nodes_of(i)) for i, k in enumerate(self._keys) if k == key]
        candidates.extend((k, [n]) for k, n in self._tail)
        if not candidates:
            return []
        scored = process.extract(key, [c[0] for c in candidates], scorer=fuzz.ratio, processor=None,
                                 score_cutoff=FUZZY_CUTOFF, limit=None)
        best: dict[int, float] = {}
        for _, score, i in scored:
            for nid in candidates[i][1][:KEY_NODES_SHOWN]:
                if score > best.get(nid, -1):
                    best[nid] = score
        return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


# -- results ---------------------------------------------------------------------------------
@dataclass
class Result:
    """One query result (a node or an episode).

    :param score: similarity: fused RRF score (higher is better); pattern: 1.0;
        traversal: 1 / depth.
    :param relations: a few edges of the node: ``{"direction": "out"|"in", "type", "id", "label"}``.
    :param via: how graph expansion or traversal reached it: ``{"from", "fromLabel", "edge", "direction"}``.
    """

    kind: str
    id: str
    label: str
    type: str
    excerpt: str
    score: float
    relations: list[dict[str, Any]] = field(default_factory=list)
    via: dict[str, Any] | None = None
    depth: int | None = None
    episode: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: nodes: tags, and validity (``validFrom``; ``validTo``/``supersededBy`` when superseded)
    tags: list[str] = field(default_factory=list)
    validity: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON: ``kind``, ``id``, ``label``, ``type``, ``excerpt``, ``score`` (6 digits),
        ``relations``; ``via``/``depth`` when set, the episode's fields for an episode,
        ``metadata`` when not empty, ``tags`` and validity for a node.
        """
        out = {
            "kind": self.kind, "id": self.id, "label": self.label, "type": self.type,
            "excerpt": self.excerpt, "score": round(self.score, 6), "relations": self.relations,
        }
        if self.via is not None:
            out["via"] = self.via
        if self.depth is not None:
            out["depth"] = self.depth
        if self.episode is not None:
            out.update(self.episode)
        if self.metadata:
            out["metadata"] = self.metadata
        if self.kind == "node":
            out["tags"] = self.tags
            out.update(self.validity)
        return out

    def render(self, n: int) -> str:
        """The result as a few terminal lines, numbered ``n``: id, label, type, score, depth,
        tags, superseded mark, excerpt and relations.
        """
        head = f"{n}. {self.id} {self.label} ({self.type})  score {self.score:.4f}"
        if self.depth is not None:
            head += f"  depth {self.depth}"
        if self.tags:
            head += f"  #{' #'.join(self.tags)}"
        if self.validity.get("supersededBy") or self.validity.get("validTo"):
            head += f"  [superseded by {self.validity.get('supersededBy') or '?'}]"
        lines = [head]
        if self.excerpt:
            lines.append(f"   {self.excerpt}")
        if self.via:
            arrow = f"-{self.via['edge']}->" if self.via["direction"] == "out" else f"<-{self.via['edge']}-"
            lines.append(f"   via {self.via['fromLabel']} ({self.via['from']}) {arrow} this")
        if self.episode and self.episode.get("sessionFiles"):
            lines.append("   session edited: " + ", ".join(self.episode["sessionFiles"][:RELATIONS_SHOWN]))
        if self.relations:
            rels = ", ".join(
                (f"-{r['type']}-> {r['label']}" if r["direction"] == "out" else f"<-{r['type']}- {r['label']}")
                for r in self.relations
            )
            lines.append(f"   {rels}")
        return "\n".join(lines)


class QueryEngine:
    """The three query modes over one workspace's graph memory (one engine per host)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.db = graph.db
        self.labels = LabelIndex(graph.db)
        self._dense = None  # embeddings.DenseIndex, made on the first similarity query that can use it

    # -- similarity ----------------------------------------------------------------------
    def _bm25_nodes(self, match: str, node_type: str | None, limit: int, scored: int = MAX_SCORED,
                    with_scores: bool = False, flt: MemoryFilter | None = None) -> list:
        """Node ids by BM25, best first (with ``with_scores``: [(id, -bm25)], higher is
        better); at most ``scored`` matching rows are scored. ``flt`` conditions are
        applied inside the query (filtered before scoring)."""
        w = ", ".join(f"{x:g}" for x in NODE_WEIGHTS)
        if flt is not None and not node_type and flt.only_current:
            # the default filter: drop the (few) superseded ids from an unfiltered query
            # rather than look up every match's row (measured: +1.5 ms CPU p50 at 100k)
            gone = flt.superseded_ids(self.db.conn)
            if gone is not None:
                found = self._bm25_nodes(match, None, limit + len(gone), scored, with_scores, None)
                return [x for x in found if (x[0] if with_scores else x) not in gone][:limit]
        cand = flt.candidate_ids(self.db.conn) if flt is not None and not node_type else None
        if cand is not None:
            # a selective filter (a tag, a time range...): score the matches as without a
            # filter, keep those in the candidate set, then check the other conditions on
            # the few left. Checking every match inside SQL costs a row lookup per match
            # (3x slower at 100k nodes, measured with bench/memory_scale.py).
            cur = self.db.conn.cursor()
            cur.row_factory = None  # plain tuples: thousands of rows
            rows = cur.execute(
                f"SELECT rowid, bm25(nodes_fts, {w}) FROM nodes_fts WHERE nodes_fts MATCH ? LIMIT {int(scored)}",
                (match,)).fetchall()
            rows = sorted((r for r in rows if r[0] in cand), key=lambda r: r[1])
            kept = flt.keep_nodes(self.db.conn, [r[0] for r in rows], limit=limit)
            if with_scores:
                score = {r[0]: -r[1] for r in rows}
                return [(i, score[i]) for i in kept]
            return kept
        cond, cparams = flt.node_sql() if flt is not None else ("", [])
        if node_type:
            cond = "n.type = ?" + (f" AND {cond}" if cond else "")
            cparams = [node_type, *cparams]
        if cond:
            # CROSS JOIN: drive from the FTS matches (SQLite would otherwise pick a nodes index
            # and run MATCH once per node in the range: 30x slower at 100k nodes, measured)
            inner = (f"SELECT f.rowid AS id, bm25(nodes_fts, {w}) AS s FROM nodes_fts f CROSS JOIN nodes n "
                     f"ON n.id = f.rowid WHERE nodes_fts MATCH ? AND {cond} LIMIT {int(scored)}")
            params: tuple = (match, *cparams, limit)
        else:
            inner = f"SELECT rowid AS id, bm25(nodes_fts, {w}) AS s FROM nodes_fts WHERE nodes_fts MATCH ? LIMIT {int(scored)}"
            params = (match, limit)
        if with_scores:
            return [(r[0], -r[1]) for r in self.db.conn.execute(f"SELECT id, s FROM ({inner}) ORDER BY s LIMIT ?", params)]
        return [r[0] for r in self.db.conn.execute(f"SELECT id FROM ({inner}) ORDER BY s LIMIT ?", params)]

    def _in_vocabulary(self, word: str) -> bool:
        q = '"' + word.replace('"', '""') + '"'
        return self.db.conn.execute("SELECT 1 FROM nodes_fts WHERE nodes_fts MATCH ? LIMIT 1", (q,)).fetchone() is not None

    def _fuzzy_keys(self, query: str) -> list[str]:
        """Query tokens worth a fuzzy label lookup: identifiers, words unknown to the index,
        and (for short queries) all content words run together."""
        keys: list[str] = []
        for raw in _RAW_TOKEN.findall(query):
            key = "".join(_WORD.findall(raw.lower()))
            if len(key) < 4 or key in STOP_WORDS:
                continue
            if _looks_like_identifier(raw) or not all(self._in_vocabulary(w) for w in _WORD.findall(raw.lower())):
                keys.append(key)
        content = [w for w in _WORD.findall(query.lower()) if w not in STOP_WORDS]
        if 1 < len(content) <= 3 and len("".join(content)) <= 40:
            keys.append("".join(content))
        return list(dict.fromkeys(keys))

    def _fuzzy_nodes(self, query: str, node_type: str | None, flt: MemoryFilter | None = None) -> list[int]:
        keys = self._fuzzy_keys(query)
        if not keys or self.db.conn.execute("SELECT 1 FROM nodes LIMIT 1").fetchone() is None:
            return []
        best: dict[int, float] = {}
        for key in keys:
            for nid, score in self.labels.lookup(key):
                best[nid] = max(best.get(nid, 0.0), score)
        if not best:
            return []
        top = max(best.values())
        ranked = [nid for nid, score in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
                  if score >= top - FUZZY_BAND]
        if node_type and ranked:
            types = {r[0]: r[1] for r in self.db.conn.execute(
                f"SELECT id, type FROM nodes WHERE id IN ({','.join('?' * len(ranked))})", ranked)}
            ranked = [n for n in ranked if types.get(n) == node_type]
        if flt is not None:
            ranked = flt.keep_nodes(self.db.conn, ranked)
        return ranked[:RANKER_DEPTH]

    def similarity(self, query: str, node_type: str | None = None, max_results: int = 10,
                   flt: MemoryFilter | None = None) -> list[Result]:
        """Hybrid ranked retrieval (see the module docstring). ``node_type="episode"`` searches
        only episodes; any other ``node_type`` searches only nodes of that type.
        ``flt`` (default: current nodes only) filters nodes inside the BM25 query and the
        other rankers' lists and the 1-hop expansion; episodes are filtered after ranking
        (a deeper pool is ranked when an episode filter is on).
        Only the first :data:`MAX_QUERY_CHARS` characters of ``query`` are used."""
        query = query[:MAX_QUERY_CHARS]
        flt = flt if flt is not None else MemoryFilter()
        if node_type:
            flt = MemoryFilter(**{**flt.__dict__, "node_types": [node_type]})
        terms = query_terms(query)
        lists: list[list[tuple[str, int]]] = []
        weights: list[float] = []
        want_nodes = flt.wants_nodes
        want_episodes = flt.wants_episodes
        depth = max(RANKER_DEPTH, max_results * 2)
        dense = self._dense_index()
        if want_nodes:
            nt = None
            match, scored = match_expression(self.db.conn, "nodes", query)
            if dense is not None:  # BM25 re-ranked with cosine (see embeddings.hybrid)
                bm = self._bm25_nodes(match, nt, depth, scored, with_scores=True, flt=flt) if match else []
                near = flt.keep_nodes(self.db.conn, dense.nearest(query, "node", depth * (4 if flt.narrows_nodes else 1),
                                                                  None))[:depth]
                cosine = dense.cosines(query, "node", [i for i, _ in bm] + near)
                lists.append([("n", i) for i in hybrid(bm, near, cosine, limit=depth)])
                weights.append(1.0)
            elif match:
                lists.append([("n", i) for i in self._bm25_nodes(match, nt, depth, scored, flt=flt)])
                weights.append(1.0)
            lists.append([("n", i) for i in self._fuzzy_nodes(query, nt, flt)])
            weights.append(1.0)
        if want_episodes and terms:
            narrow = flt.narrows_episodes
            for ids, weight in ep.episode_rankings(self.db, query, depth * (4 if narrow else 1), dense=dense):
                if narrow:
                    ids = flt.keep_episodes(self.db.conn, ids)[:depth]
                lists.append([("e", i) for i in ids])
                weights.append(weight)
            if _about_past_work(query):  # a piece of work: the session is the unit (see SESSION_WEIGHT)
                best = ep.best_of_sessions(self.db, query, depth)
                if best:
                    lists.append([("e", i) for i in best])
                    weights.append(SESSION_WEIGHT)
        fused = rrf(lists, weights=weights)
        if dense is not None and fused:
            # equal fused scores (e.g. rank 1 of the node list and of the episode list) are
            # ordered by cosine similarity rather than by list order
            cos = {**{("n", i): c for i, c in dense.cosines(query, "node", [k[1] for k, _ in fused if k[0] == "n"]).items()},
                   **{("e", i): c for i, c in dense.cosines(query, "episode", [k[1] for k, _ in fused if k[0] == "e"]).items()}}
            fused.sort(key=lambda kv: (-round(kv[1], 12), -cos.get(kv[0], -1.0)))
        scores = dict(fused)
        via: dict[tuple[str, int], dict[str, Any]] = {}
        # 1-hop expansion from the top node hits
        top_nodes = [key[1] for key, _ in fused if key[0] == "n"][:EXPAND_TOP] if want_nodes else []
        for nid in top_nodes:
            base = scores[("n", nid)] * EXPAND_DECAY
            rows = self.db.conn.execute(
                "SELECT src, dst, type, weight FROM edges WHERE src=? UNION ALL "
                "SELECT src, dst, type, weight FROM edges WHERE dst=? ORDER BY weight DESC LIMIT ?",
                (nid, nid, EXPAND_EDGES),
            ).fetchall()
            for src, dst, etype, _w in rows:
                other, direction = (dst, "out") if src == nid else (src, "in")
                key = ("n", other)
                if key in scores or other == nid:
                    continue
                scores[key] = base
                via[key] = {"from": format_id(nid), "edge": etype, "direction": direction, "_from": nid}
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        if via:
            allowed = set(flt.keep_nodes(self.db.conn, [k[1] for k in via]))
            ranked = [(k, s) for k, s in ranked if k not in via or k[1] in allowed]
        ranked = ranked[:max_results]
        return self._materialize(ranked, terms, via)

    def _dense_index(self):
        """The optional dense ranker (:class:`.embeddings.DenseIndex`), or None when its extra
        is not installed or ``OPENSAGE_EMBEDDINGS`` is not on (then nothing heavy is imported)."""
        from opensage.plugins.graph_memory import embeddings

        if not embeddings.available():
            return None
        if self._dense is None:
            self._dense = embeddings.DenseIndex(self.db)
        return self._dense

    def _types(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        return {r[0]: r[1] for r in self.db.conn.execute(
            f"SELECT id, type FROM nodes WHERE id IN ({','.join('?' * len(ids))})", ids)}

    def _materialize(self, ranked: list[tuple[tuple[str, int], float]], terms: list[str],
                     via: dict | None = None) -> list[Result]:
        via = via or {}
        node_ids = [k[1] for k, _ in ranked if k[0] == "n"]
        node_ids += [v["_from"] for v in via.values()]
        nodes = self.graph.get_many(node_ids)
        episodes = ep.get_episodes(self.db, [k[1] for k, _ in ranked if k[0] == "e"])
        rels = self.relations_many([k[1] for k, _ in ranked if k[0] == "n"])
        session_files = self.session_files({e.session_id for e in episodes.values()})
        out: list[Result] = []
        for key, score in ranked:
            if key[0] == "n":
                node = nodes.get(key[1])
                if node is None:
                    continue
                v = None
                if key in via:
                    src = nodes.get(via[key]["_from"])
                    v = {"from": via[key]["from"], "fromLabel": src.label if src else via[key]["from"],
                         "edge": via[key]["edge"], "direction": via[key]["direction"]}
                validity = {"validFrom": node.valid_from}
                if node.valid_to is not None:
                    validity.update(validTo=node.valid_to,
                                    supersededBy=format_id(node.superseded_by) if node.superseded_by else None)
                out.append(Result("node", node.ref, node.label, node.type, excerpt(node.content, terms), score,
                                  rels.get(node.id, []), v, metadata=node.metadata, tags=node.tags,
                                  validity=validity))
            else:
                e = episodes.get(key[1])
                if e is None:
                    continue
                label = f"{e.session_id}#{e.seq}" + (f" {e.role}" if e.role else "")
                text = e.text or " ".join(x for x in (e.tool, e.path) if x)
                if e.kind == "tool_call" and e.args:  # a call is its arguments, not only a tool name
                    text = f"{e.tool or 'tool'} " + json.dumps(e.args, ensure_ascii=False, default=str)
                out.append(Result("episode", e.ref, label, "episode", excerpt(text, terms), score,
                                  self._episode_relations(e.id),
                                  episode={"sessionId": e.session_id, "seq": e.seq, "eventKind": e.kind,
                                           "role": e.role, "tool": e.tool, "path": e.path, "meta": e.meta,
                                           "timestamp": e.timestamp,
                                           **({"sessionFiles": session_files[e.session_id]}
                                              if session_files.get(e.session_id) else {})}))
        return out

    def session_files(self, session_ids: Iterable[str], limit: int = SESSION_FILES) -> dict[str, list[str]]:
        """Files each session edited (its ``session`` node's ``touches`` edges with ``op=edit``,
        from compression), at most ``limit`` per session, heaviest edge first: what a user
        asking about past work wants next to a turn of that session. Sessions not compressed
        yet have none."""
        ids = list(session_ids)
        if not ids:
            return {}
        out: dict[str, list[str]] = {}
        rows = self.db.conn.execute(
            "SELECT s.label, f.label FROM nodes s JOIN edges e ON e.src = s.id AND e.type = 'touches'"
            " JOIN nodes f ON f.id = e.dst AND f.type = 'file'"
            f" WHERE s.type = 'session' AND s.label IN ({','.join('?' * len(ids))})"
            " AND json_extract(e.metadata, '$.op') = 'edit' ORDER BY e.weight DESC, e.id", ids)
        for sid, label in rows:
            files = out.setdefault(sid, [])
            if len(files) < limit:
                files.append(label)
        return out

    def relations(self, node_id: int, limit: int = RELATIONS_SHOWN) -> list[dict[str, Any]]:
        """A few edges of a node (heaviest first), each with the label of its other end."""
        return self.relations_many([node_id], limit).get(node_id, [])

    def relations_many(self, node_ids: list[int], limit: int = RELATIONS_SHOWN) -> dict[int, list[dict[str, Any]]]:
        """:meth:`relations` of several nodes in two queries (window functions pick the top edges)."""
        if not node_ids:
            return {}
        marks = ",".join("?" * len(node_ids))
        rows = self.db.conn.execute(
            "SELECT owner, src, dst, type, weight FROM ("
            " SELECT src AS owner, src, dst, type, weight,"
            "  row_number() OVER (PARTITION BY src ORDER BY weight DESC, id) AS r"
            f" FROM edges WHERE src IN ({marks})"
            " UNION ALL"
            " SELECT dst AS owner, src, dst, type, weight,"
            "  row_number() OVER (PARTITION BY dst ORDER BY weight DESC, id) AS r"
            f" FROM edges WHERE dst IN ({marks})"
            ") WHERE r <= ?",
            (*node_ids, *node_ids, limit),
        ).fetchall()
        per: dict[int, list] = {}
        for owner, src, dst, etype, weight in rows:
            per.setdefault(owner, []).append((src, dst, etype, weight))
        others = self._labels({(d if s == o else s) for o, s, d, _t, _w in rows})
        out: dict[int, list[dict[str, Any]]] = {}
        for owner, edges in per.items():
            rels = []
            for src, dst, etype, _w in sorted(edges, key=lambda e: -e[3])[:limit]:
                is_out = src == owner
                other = dst if is_out else src
                rels.append({"direction": "out" if is_out else "in", "type": etype, "id": format_id(other),
                             "label": others.get(other, format_id(other))})
            out[owner] = rels
        return out

    def _labels(self, ids) -> dict[int, str]:
        ids = list(ids)
        out: dict[int, str] = {}
        for chunk, marks in in_chunks(ids):
            out.update(self.db.conn.execute(
                f"SELECT id, label FROM nodes WHERE id IN ({marks})", chunk).fetchall())
        return out

    def _episode_relations(self, episode_id: int) -> list[dict[str, Any]]:
        rows = self.db.conn.execute(
            "SELECT n.id, n.label FROM node_episodes ne JOIN nodes n ON n.id = ne.node_id WHERE ne.episode_id=? LIMIT ?",
            (episode_id, RELATIONS_SHOWN),
        ).fetchall()
        return [{"direction": "in", "type": "derived_from", "id": format_id(r[0]), "label": r[1]} for r in rows]

    # -- pattern -------------------------------------------------------------------------
    @staticmethod
    def compile_pattern(pattern: str, syntax: str = "regex", case_sensitive: bool = False):
        """Compile a regex (searched anywhere) or glob (whole field). Raises UsageError.

        Regexes use RE2 through :func:`opensage.untrusted.compile_regex` (linear-time
        matching; no backreferences or lookaround). Globs use ``fnmatch.translate`` with
        Python's ``re`` (its translation of ``*`` does not backtrack catastrophically).
        """
        if len(pattern) > MAX_PATTERN_CHARS:
            raise UsageError(f"pattern is {len(pattern):,} characters; at most {MAX_PATTERN_CHARS:,} are "
                             f"accepted. Use a shorter pattern.")
        if syntax == "glob":
            flags = 0 if case_sensitive else re.IGNORECASE
            return re.compile(fnmatch.translate(pattern), flags | re.DOTALL)
        return compile_regex(pattern, case_sensitive=case_sensitive, what="query",
                             hint=", or pass syntax=glob for wildcards like Auth*")

    def pattern(self, pattern: str, field: str = "any", syntax: str = "regex", node_type: str | None = None,
                max_results: int = 10, case_sensitive: bool = False, flt: MemoryFilter | None = None) -> list[Result]:
        """Nodes whose ``field`` (label, content, type, metadata keys/values, or any) matches
        and that pass ``flt`` (default: current nodes only).

        Regex: ``re.search`` semantics; glob: the whole field value must match. Results in id order.
        """
        rx = self.compile_pattern(pattern, syntax, case_sensitive)
        test = rx.match if syntax == "glob" else rx.search
        flt = flt if flt is not None else MemoryFilter()
        cond, cparams = flt.node_sql()
        if node_type:
            cond = "n.type = ?" + (f" AND {cond}" if cond else "")
            cparams = [node_type, *cparams]
        sql = "SELECT * FROM nodes n NOT INDEXED" + (f" WHERE {cond}" if cond else "") + " ORDER BY id"
        hits: list[tuple[tuple[str, int], float]] = []
        for row in self.db.conn.execute(sql, cparams):
            values: list[str] = []
            if field in ("label", "any"):
                values.append(row["label"])
            if field in ("content", "any"):
                values.append(row["content"])
            if field in ("type", "any"):
                values.append(row["type"])
            if field in ("metadata", "any"):
                values.extend(_flatten_metadata(json.loads(row["metadata"] or "{}")))
            if any(v is not None and test(v) for v in values):
                hits.append((("n", row["id"]), 1.0))
                if len(hits) >= max_results:
                    break
        terms = [] if syntax == "glob" else [t for t in re.findall(r"\w{3,}", pattern)]
        return self._materialize(hits, terms)

    # -- traversal -----------------------------------------------------------------------
    def resolve_start(self, start: str):
        """The start node: an id (``n12``), an exact label, or the one identifier in free text
        that is an exact label. Raises NotFoundError with the closest labels as a fix."""
        start = (start or "").strip()
        if not start:
            raise UsageError("traversal needs a start node: pass startNode=<id or label> (or query=<label>).")
        try:
            return self.graph.resolve(start, "startNode")
        except NotFoundError:
            pass
        if parse_id(start) is None:
            found = []
            for raw in _RAW_TOKEN.findall(start):
                rows = self.db.conn.execute("SELECT id FROM nodes WHERE label=?", (raw.strip(".:/\\-"),)).fetchall()
                if len(rows) == 1:
                    found.append(rows[0][0])
            found = list(dict.fromkeys(found))
            if len(found) == 1:
                return self.graph.get(found[0])
        suggestions = []
        for key in dict.fromkeys(_label_keys(start)[:1] + self._fuzzy_keys(start)):
            for nid, _ in self.labels.lookup(key, limit=5, persist=False):
                if nid not in suggestions:
                    suggestions.append(nid)
        nodes = self.graph.get_many(suggestions[:5])
        hint = ", ".join(f"{format_id(n)} {nodes[n].label}" for n in suggestions[:5] if n in nodes)
        raise NotFoundError(
            f"unknown startNode {start!r}: no node has that id or exact label."
            + (f" Closest labels: {hint}; pass one of these ids as startNode." if hint
               else " Find it with @memory-query query=\"...\" (similarity) and pass its id, e.g. startNode=n12.")
        )

    def traversal(self, start: str, depth: int = 2, direction: str = "out", edge_types: Sequence[str] | None = None,
                  node_type: str | None = None, max_results: int = 10,
                  flt: MemoryFilter | None = None) -> tuple[Any, list[Result]]:
        """Walk edges from ``start`` up to ``depth`` hops (recursive CTE), breadth-first.

        :param direction: ``out`` follows src->dst, ``in`` goes against edges ("who depends
            on X": ``in`` over ``depends_on``/``imports``/``calls``), ``both`` ignores direction.
        :returns: (start node, results in BFS order: depth, then id), each with the edge that reached it.
        :raises UsageError: depth outside 1..6, bad direction or edge type, unknown start node.
        """
        if not 1 <= int(depth) <= MAX_DEPTH:
            raise UsageError(f"depth must be between 1 and {MAX_DEPTH}, got {depth}; e.g. depth=2.")
        if direction not in ("out", "in", "both"):
            raise UsageError(f"direction must be out, in or both, got {direction!r}.")
        types = list(edge_types or [])
        for t in types:
            if not TYPE_NAME.match(t or ""):
                raise UsageError(f"edgeTypes entry {t!r} is not an edge type; use lowercase words like [\"calls\",\"imports\"].")
        start_node = self.resolve_start(start)
        tf = f" AND e.type IN ({','.join('?' * len(types))})" if types else ""
        steps = []
        params: list[Any] = [start_node.id]
        if direction in ("out", "both"):
            steps.append(f"SELECT e.dst, w.depth + 1 FROM walk w JOIN edges e ON e.src = w.node WHERE w.depth < ?{tf}")
            params += [int(depth), *types]
        if direction in ("in", "both"):
            steps.append(f"SELECT e.src, w.depth + 1 FROM walk w JOIN edges e ON e.dst = w.node WHERE w.depth < ?{tf}")
            params += [int(depth), *types]
        if self.db.backend == "postgresql":
            # PostgreSQL allows one recursive term (both directions: one join on either end)
            # and no LIMIT inside a recursive query, but computes only the rows the outer
            # query fetches, so a LIMIT there bounds the walk the same way
            if direction == "both":
                steps = ["SELECT CASE WHEN e.src = w.node THEN e.dst ELSE e.src END, w.depth + 1 FROM walk w"
                         f" JOIN edges e ON (e.src = w.node OR e.dst = w.node) WHERE w.depth < ?{tf}"]
                params = [start_node.id, int(depth), *types]
            sql = ("WITH RECURSIVE walk(node, depth) AS (SELECT ?::bigint, 0 UNION " + " UNION ".join(steps)
                   + f") SELECT node, min(depth) AS d FROM (SELECT * FROM walk LIMIT {TRAVERSAL_ROW_CAP}) AS w"
                   " GROUP BY node")
        else:
            sql = (
                "WITH RECURSIVE walk(node, depth) AS (SELECT ?, 0 UNION " + " UNION ".join(steps)
                + f" LIMIT {TRAVERSAL_ROW_CAP}) SELECT node, min(depth) AS d FROM walk GROUP BY node"
            )
        reached = {node: d for node, d in self.db.conn.execute(sql, params) if node != start_node.id}
        order = sorted(reached, key=lambda n: (reached[n], n))
        if node_type:
            types_of = self._types(order)
            order = [n for n in order if types_of.get(n) == node_type]
        # the walk goes through every node (a superseded decision still links its neighbours);
        # the filter (default: current nodes only) decides which reached nodes are shown
        order = (flt if flt is not None else MemoryFilter()).keep_nodes(self.db.conn, order, limit=max_results)
        reached[start_node.id] = 0
        via: dict[tuple[str, int], dict[str, Any]] = {}
        # the edge that reached each shown node: one from a node one level closer to the start
        candidates: dict[int, list[tuple[int, str, str]]] = {}
        marks = ",".join("?" * len(order))
        if order and direction in ("out", "both"):  # parent -> nid
            for src, dst, etype in self.db.conn.execute(
                    f"SELECT e.src, e.dst, e.type FROM edges e WHERE e.dst IN ({marks}){tf}", (*order, *types)):
                candidates.setdefault(dst, []).append((src, etype, "out"))
        if order and direction in ("in", "both"):  # nid -> parent
            for src, dst, etype in self.db.conn.execute(
                    f"SELECT e.src, e.dst, e.type FROM edges e WHERE e.src IN ({marks}){tf}", (*order, *types)):
                candidates.setdefault(src, []).append((dst, etype, "in"))
        for nid in order:
            for parent, etype, how in sorted(candidates.get(nid, []), key=lambda c: (c[0], c[2])):
                if reached.get(parent) == reached[nid] - 1:
                    via[("n", nid)] = {"from": format_id(parent), "edge": etype, "direction": how, "_from": parent}
                    break
        ranked = [(("n", nid), 1.0 / reached[nid]) for nid in order]
        results = self._materialize(ranked, [], via)
        for r in results:
            r.depth = reached[parse_id(r.id)]
        return start_node, results


def _about_past_work(query: str) -> bool:
    from opensage.plugins.graph_memory.history import is_past_work_question

    return is_past_work_question(query)


def _flatten_metadata(meta: Any, prefix: str = "") -> list[str]:
    """Keys and scalar values of a JSON object, nested keys as ``a.b``."""
    out: list[str] = []
    if isinstance(meta, dict):
        for k, v in meta.items():
            key = f"{prefix}{k}"
            out.append(key)
            out.extend(_flatten_metadata(v, key + "."))
    elif isinstance(meta, list):
        for v in meta:
            out.extend(_flatten_metadata(v, prefix))
    elif meta is not None:
        out.append(str(meta))
    return out


def engine_for(host) -> QueryEngine:
    """The host's :class:`QueryEngine` (one per host; its fuzzy label index lives as long as the host)."""
    return host.service(QueryEngine, lambda h: QueryEngine(graph_for(h)))
