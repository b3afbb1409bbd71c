"""Lexical ranking and rank fusion shared by graph memory's search paths.

Query words (:func:`query_terms`: identifier-aware, stop words dropped), FTS5 ``MATCH``
expressions that skip terms too common to rank (:func:`match_terms`), reciprocal rank
fusion (:func:`rrf`), the convex BM25 + cosine combination (:func:`hybrid`) and result
excerpts. Used by :mod:`.query` (similarity), :mod:`.episodes` (episode search) and
:mod:`.history` (mode=history); it imports none of them, so those modules form no
import circle.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

__all__ = ["STOP_WORDS", "RRF_K", "EXCERPT_CHARS", "HYBRID_ALPHA", "MAX_SCORED", "query_terms", "fts_or_query",
           "match_expression", "match_terms", "rrf", "hybrid", "excerpt"]

#: Reciprocal rank fusion constant (Cormack et al. 2009 use k = 60).
RRF_K = 60
#: Characters of content shown per result.
EXCERPT_CHARS = 160
#: Weight of the normalised cosine in the convex combination with normalised BM25 (see
#: :func:`hybrid`). Chosen on LoCoMo conversations 26 and 30 only, from 0.1 to 0.9 in steps
#: of 0.1: 0.4 was best on each of the two (recall@10 26: 0.796, 30: 0.817); 0.3 and 0.5 are
#: within 0.01 of it.
HYBRID_ALPHA = 0.4

# A plain English stop-word list (function words and question words); such words carry
# no topic, and in an OR query they would match almost every document.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves also get got s t ve ll d re m let lets like tell know
""".split())

_WORD = re.compile(r"[^\W_]+")
_RAW_TOKEN = re.compile(r"[\w.:/\\-]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_SEGMENT_SPLIT = re.compile(r"[./\\:#\s]+")


# -- text helpers ---------------------------------------------------------------------------
def _split_word(token: str) -> list[str]:
    parts = _CAMEL.findall(token)
    return parts if len(parts) > 1 else [token]


def query_terms(text: str) -> list[str]:
    """Search words of ``text``: lowercased, identifiers split (``ParseConfig`` -> parse, config,
    parseconfig), stop words and 1-letter words removed, duplicates dropped, order kept.

    If every word is a stop word, the words are kept (a query is never emptied).
    """
    words: list[str] = []
    for token in _WORD.findall(text or ""):
        words.append(token.lower())
        parts = _split_word(token)
        if len(parts) > 1:
            words.extend(p.lower() for p in parts)
    seen: set[str] = set()
    kept = []
    for w in words:
        if w not in seen and w not in STOP_WORDS and (len(w) > 1 or w.isdigit()):
            seen.add(w)
            kept.append(w)
    if not kept:
        kept = list(dict.fromkeys(w for w in words if w))
    return kept


def fts_or_query(text: str) -> str:
    """An FTS5 MATCH expression: the :func:`query_terms` of ``text`` quoted and OR-ed ('' if none)."""
    return _or(query_terms(text))


#: Work bound for BM25 at scale: a query word found in more than MAX_DF_DOCS documents
#: *and* in more than MAX_DF_FRACTION of the collection is left out of the OR query (its
#: IDF weight is small, and scoring its postings would dominate latency: FTS5 scores
#: every matching row). If every word is that common, all are kept but only the first
#: COMMON_SCORED matching rows (rowid order) are scored: such a query discriminates
#: little anyway, and the fuzzy label ranker still runs.
#: Collections of at most MAX_DF_DOCS documents are never pruned.
MAX_DF_DOCS = 2000
MAX_DF_FRACTION = 0.02
#: At most this many matching rows are scored per BM25 query (in rowid order, oldest
#: first); reached only when every query word is very common (see above).
MAX_SCORED = 4 * MAX_DF_DOCS
COMMON_SCORED = 500
_FTS_TABLES = {"nodes": "nodes_fts", "episodes": "episodes_fts"}


def match_expression(conn, table: str, query: str) -> tuple[str, int]:
    """The FTS5 MATCH expression for ``query`` over ``table`` (``nodes`` or ``episodes``),
    and how many matching rows to score at most.

    :func:`fts_or_query`, with the very common words left out on large collections (see
    :data:`MAX_DF_DOCS`). Returns ('', 0) when the query has no words.
    """
    terms, scored, _ = match_terms(conn, table, query)
    return (_or(terms), scored) if terms else ("", 0)


def match_terms(conn, table: str, query: str) -> tuple[list[str], int, dict[str, int]]:
    """The words :func:`match_expression` OR-s together, how many rows to score at most, and
    the document frequencies found on the way (large collections only; counted up to the
    pruning limit + 1, so a larger count reads as that; on a store with an ``estimate_df``
    (the team store), estimates of the common words only — a word missing is rare)."""
    terms = query_terms(query)
    if not terms:
        return [], 0, {}
    n = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
    if n <= MAX_DF_DOCS:
        return terms, MAX_SCORED, {}
    fts = _FTS_TABLES[table]
    limit = int(max(MAX_DF_DOCS, MAX_DF_FRACTION * n))
    # document frequency: the store's estimate where it keeps one (PostgreSQL's column
    # statistics name the common words; a word missing there is rare), else counted up to
    # limit + 1 (all we need to know, and cheap on FTS5)
    estimate = getattr(conn, "estimate_df", None)
    df = estimate(table, terms) if estimate is not None else None
    if df is None:
        sql = f"SELECT count(*) FROM (SELECT 1 FROM {fts} WHERE {fts} MATCH ? LIMIT {limit + 1})"
        df = {t: conn.execute(sql, (_quote(t),)).fetchone()[0] for t in terms}
    kept = [t for t in terms if df.get(t, 0) <= limit]
    if kept:
        return kept, MAX_SCORED, df
    return terms, COMMON_SCORED, df


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _or(terms: list[str]) -> str:
    return " OR ".join(_quote(t) for t in terms)


def rrf(lists: Sequence[Sequence[Any]], k: int = RRF_K, weights: Sequence[float] | None = None) -> list[tuple[Any, float]]:
    """Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

    :param lists: ranked lists of keys (best first).
    :param k: smoothing constant (60 in the paper).
    :param weights: optional weight per list (default 1 each).
    :returns: [(key, Σ weight / (k + rank))] best first; rank starts at 1.
    """
    scores: dict[Any, float] = {}
    for n, ranked in enumerate(lists):
        w = 1.0 if weights is None else weights[n]
        for rank, key in enumerate(ranked, start=1):
            scores[key] = scores.get(key, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def excerpt(text: str, terms: Iterable[str] = (), width: int = EXCERPT_CHARS) -> str:
    """About ``width`` characters of ``text`` on one line, around the first query word found."""
    flat = " ".join((text or "").split())
    if len(flat) <= width:
        return flat
    pos = -1
    low = flat.lower()
    for t in terms:
        stem = t[: max(4, len(t) - 2)] if len(t) > 4 else t
        m = re.search(r"\b" + re.escape(stem), low)
        if m and (pos < 0 or m.start() < pos):
            pos = m.start()
    start = 0 if pos < width // 3 else pos - width // 3
    end = min(len(flat), start + width)
    start = max(0, end - width)
    out = flat[start:end]
    return ("…" if start > 0 else "") + out + ("…" if end < len(flat) else "")



def hybrid(lexical: Sequence[tuple[int, float]], nearest: Sequence[int], cosine: dict[int, float],
           alpha: float = HYBRID_ALPHA, limit: int | None = None) -> list[int]:
    """One lexical list re-ranked by a convex combination with cosine similarity.

    :param lexical: [(id, score)] of the lexical ranker, best first, score >= 0 higher better
        (``-bm25()`` of FTS5).
    :param nearest: ids nearest to the query by cosine (added to the candidates: a
        paraphrase with no word in common is still found).
    :param cosine: cosine similarity of every candidate (a missing one counts as the lowest).
    :returns: candidate ids by ``alpha * (cos - min) / (max - min) + (1 - alpha) * score / max score``
        (min and max over the candidates), best first; ties keep the lexical order.
    """
    cand = list(dict.fromkeys([i for i, _ in lexical] + list(nearest)))
    if not cand:
        return []
    lex = dict(lexical)
    top = max(lex.values(), default=0.0)
    present = [cosine[i] for i in cand if i in cosine]
    lo = min(present, default=0.0)
    span = (max(present, default=0.0) - lo) or 1.0
    scored = [(alpha * (cosine.get(i, lo) - lo) / span + ((1 - alpha) * lex.get(i, 0.0) / top if top > 0 else 0.0), n)
              for n, i in enumerate(cand)]
    scored.sort(key=lambda t: (-t[0], t[1]))
    out = [cand[n] for _, n in scored]
    return out if limit is None else out[:limit]
