"""The intent router's learned classifier: numpy only, weights from ``config/route-classifier.npz``.

A multinomial logistic regression over the packaged routes (memory history folded
into memory query) plus ``none`` as a class of its own, trained offline by
``scripts/build_route_classifier.py`` (scikit-learn, a build-time extra; never
imported here). Its input for one text is

* sparse features, the strings :func:`features` returns (word stems, word-stem
  pairs, character 3–5-grams of the words, a few shape flags), each weighted by the
  idf shipped with the vocabulary (character n-grams at half weight, folded in at
  build time) and the whole L2-normalised — what scikit-learn's
  ``TfidfVectorizer(binary=True, sublinear_tf=False)`` computes, but over the exported
  vocabulary: unknown strings are ignored, so no hashing code exists twice;
* the static sentence vector of :mod:`opensage.plugins.routing.route_vectors` (128 numbers), times
  ``dense_weight``.

``probabilities(text)`` is ``softmax(x @ W + b)``. The router fires the most probable
class when it is a route and its probability reaches that route's calibrated
threshold (``thresholds`` in the file, from grouped cross-validation at build time;
docs/routing.md). Loading the file costs a few milliseconds; one text about 0.2 ms.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from pathlib import Path

CLASSIFIER_FILE = Path(__file__).resolve().parents[2] / "config" / "route-classifier.npz"

#: Routes that the classifier does not tell apart: the second is decided between them
#: afterwards by nearest examples (same command, another mode).
FOLDED = {"opensage_memory_history": "opensage_memory_query"}

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_JOBLIKE = re.compile(r"\b(?:job[-_][a-z0-9][a-z0-9_-]*|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}|"
                      r"(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{6,})\b")
_PATHLIKE = re.compile(r"(?:^|\s)(?:\.{1,2}/|~/|/)?[\w.-]+/[\w./-]*|\b[\w-]+\.(?:py|md|txt|rst|ts|js|json|ya?ml|toml)\b")
_CODELIKE = re.compile(r"\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*\b|\b[a-z][a-z0-9]*_[a-z0-9_]+\b")
_LEADIN = re.compile(r"^\s*[^:\n]{1,60}?(?::|\s[-–—]+)\s+\S")

_LOCK = threading.Lock()
_LOADED: dict[str, "Classifier | None"] = {}


def _stem(w: str) -> str:
    """A light English stem (the router's own ``_norm`` rule set, copied small on purpose:
    the features must not change when the template matcher's normalisation does)."""
    w = w.replace("'", "")
    if len(w) > 4 and w.endswith("ing") and len(w) - 3 >= 4:
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed") and len(w) - 2 >= 4:
        w = w[:-2]
    elif len(w) > 4 and w.endswith("es") and not w.endswith("sses") and len(w) - 2 >= 4:
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    return w


def features(text: str) -> list[str]:
    """The sparse feature strings of ``text`` (deduplicated, in first-seen order).

    ``w:`` a word stem, ``b:`` two consecutive stems (``^``/``$`` mark the ends),
    ``c:`` a character 3-, 4- or 5-gram of a lower-case word padded with ``<``/``>``,
    ``x:`` a shape flag (a job-id-like token, a path, a code-like name, a
    ``lead-in:`` before the body). Only the first 2,000 characters are read.

    :param text: any text.
    :returns: the list of feature strings (possibly empty).
    """
    raw = unicodedata.normalize("NFKC", (text or "")[:2000])
    low = raw.lower().replace("’", "'")
    words = _WORD.findall(low)
    stems = [_stem(w) for w in words]
    out: dict[str, None] = {}
    if not words:
        return []
    for s in stems:
        out["w:" + s] = None
    seq = ["^", *stems, "$"]
    for a, b in zip(seq, seq[1:]):
        out[f"b:{a} {b}"] = None
    for w in words:
        padded = f"<{w}>"
        for n in (3, 4, 5):
            for i in range(len(padded) - n + 1):
                out["c:" + padded[i:i + n]] = None
    if _JOBLIKE.search(low):
        out["x:jobid"] = None
    if _PATHLIKE.search(raw):
        out["x:path"] = None
    if _CODELIKE.search(raw):
        out["x:code"] = None
    if _LEADIN.match(raw):
        out["x:leadin"] = None
    if raw.rstrip().endswith("?"):
        out["x:question"] = None
    return list(out)


def examples_digest(examples: list[str]) -> str:
    """sha256 (hex, first 16) of one route's example sentences in order: what the
    shipped weights were trained on, compared per route when a router is built."""
    h = hashlib.sha256()
    for e in examples:
        h.update(e.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


class Classifier:
    """The shipped weights and :meth:`probabilities`.

    :param path: an ``.npz`` written by ``scripts/build_route_classifier.py`` with
        ``vocab`` (newline-joined feature strings, uint8 bytes), ``idf`` (float32, n),
        ``W_sparse`` (float16, n x classes), ``W_dense`` (float32, dims x classes),
        ``bias`` (float32, classes) and ``meta`` (JSON bytes: classes, thresholds,
        dense_weight, per-route example digests, data hash).
    :raises OSError: the file cannot be read; ``KeyError``/``ValueError`` if malformed.
    """

    def __init__(self, path: Path = CLASSIFIER_FILE) -> None:
        import numpy as np

        self._np = np
        with np.load(path, allow_pickle=False) as data:
            vocab = data["vocab"].tobytes().decode("utf-8").split("\n")
            self.idf = data["idf"].astype(np.float32)
            self.w_sparse = data["W_sparse"].astype(np.float32)
            self.w_dense = data["W_dense"].astype(np.float32)
            self.bias = data["bias"].astype(np.float32)
            self.meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        if len(vocab) != len(self.idf) or self.w_sparse.shape[0] != len(vocab):
            raise ValueError(f"{path}: vocabulary and weights differ in length")
        self.index = {f: i for i, f in enumerate(vocab)}
        self.classes: list[str] = list(self.meta["classes"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in self.meta["thresholds"].items()}
        self.dense_weight = float(self.meta["dense_weight"])
        #: route -> digest of the examples the weights were trained on
        self.digests: dict[str, str] = dict(self.meta.get("digests", {}))

    def logits(self, text: str, dense=None):
        """Raw class scores, shape (classes,).

        :param dense: the text's static sentence vector (unit length) or ``None``
            (then the dense part is left out, as for a missing vectors file).
        """
        np = self._np
        ids = [i for i in (self.index.get(f) for f in features(text)) if i is not None]
        z = self.bias.copy()
        if ids:
            w = self.idf[ids]
            w = w / float(np.sqrt((w * w).sum()))
            z += w @ self.w_sparse[ids]
        if dense is not None:
            z += self.dense_weight * (dense @ self.w_dense)
        return z

    def probabilities(self, text: str, dense=None) -> dict[str, float]:
        """``{class: probability}`` (softmax of :meth:`logits`; sums to 1)."""
        np = self._np
        z = self.logits(text, dense)
        p = np.exp(z - z.max())
        p /= p.sum()
        return {c: float(v) for c, v in zip(self.classes, p)}


def classifier(path: Path = CLASSIFIER_FILE) -> Classifier | None:
    """The shared classifier for ``path``, loaded on first use; ``None`` when the file is
    missing or unreadable (the router then decides by nearest examples)."""
    key = str(path)
    if key in _LOADED:
        return _LOADED[key]
    with _LOCK:
        if key not in _LOADED:
            try:
                _LOADED[key] = Classifier(path)
            except (OSError, KeyError, ValueError) as exc:
                import logging

                logging.getLogger("opensage.routing").warning("route classifier %s not loaded: %s", path, exc)
                _LOADED[key] = None
    return _LOADED[key]
