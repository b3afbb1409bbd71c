"""Static sentence vectors for the intent router (no model call, no torch).

A text's vector is the normalised mean of its word pieces' vectors, read from
``opensage/config/route-vectors.npz`` (built by ``scripts/build_route_vectors.py``
from all-MiniLM-L6-v2, the model2vec recipe: one distilled vector per vocabulary
token, PCA, Zipf-rank weighting, int8). Tokenisation is BERT's uncased WordPiece,
written here so that no tokenizer library or JSON file loads on the routing path:
lower case, accents stripped, punctuation split off, greedy longest-match pieces
(``##`` continuations).

Loading the file costs about 40–100 ms on the shared 2-core machine, numpy's import
not included; embedding one sentence well under 0.1 ms (``python bench/routing.py``
reports the first and the later decisions).
"""

from __future__ import annotations

import threading
import unicodedata
from pathlib import Path

VECTORS_FILE = Path(__file__).resolve().parents[2] / "config" / "route-vectors.npz"

_LOCK = threading.Lock()
_LOADED: dict[str, "StaticEncoder"] = {}


def _basic_tokens(text: str) -> list[str]:
    """BERT's basic tokeniser (uncased): lower case, strip accents, split on whitespace
    and punctuation (each punctuation character is a token of its own)."""
    text = unicodedata.normalize("NFD", text.lower())
    out: list[str] = []
    cur: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Mn":
            continue
        if ch.isspace() or cat.startswith("C"):
            if cur:
                out.append("".join(cur))
                cur = []
        elif cat.startswith("P") or (ch.isascii() and not ch.isalnum()):
            if cur:
                out.append("".join(cur))
                cur = []
            out.append(ch)
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


class StaticEncoder:
    """Word-piece vectors and the tokeniser over them.

    :param path: an ``.npz`` with ``tokens`` (str array), ``vectors`` (int8, n x d) and
        ``scales`` (float16, n): vector = int8 row x scale.
    :raises OSError: the file cannot be read; ``KeyError``/``ValueError`` if malformed.
    """

    def __init__(self, path: Path = VECTORS_FILE) -> None:
        import numpy as np

        self._np = np
        with np.load(path, allow_pickle=False) as data:
            tokens = data["tokens"].tobytes().decode("utf-8").split("\n")
            self.vectors = data["vectors"]  # int8; scaled per row when used
            self.scales = data["scales"].astype(np.float32)
        self.index = {t: i for i, t in enumerate(tokens)}
        st = Path(path).stat()
        #: what the example cache is keyed by: this file's path, size and mtime
        self.identity = f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
        self.dims = self.vectors.shape[1]
        self._cache: dict[str, list[int]] = {}

    def pieces(self, word: str) -> list[int]:
        """Greedy longest-match WordPiece ids of one basic token (``[]`` if unknown)."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        ids: list[int] = []
        if len(word) <= 100:
            start = 0
            while start < len(word):
                end = len(word)
                found = None
                while start < end:
                    sub = word[start:end] if start == 0 else "##" + word[start:end]
                    found = self.index.get(sub)
                    if found is not None:
                        break
                    end -= 1
                if found is None:
                    ids = []
                    break
                ids.append(found)
                start = end
        if len(self._cache) < 50_000:
            self._cache[word] = ids
        return ids

    def embed(self, text: str):
        """The unit-length mean vector of ``text``'s word pieces (zeros if none known).

        :param text: any text; only the first 2,000 characters are read.
        :returns: a float32 numpy array of shape (dims,).
        """
        np = self._np
        ids: list[int] = []
        for tok in _basic_tokens(text[:2000]):
            ids.extend(self.pieces(tok))
        if not ids:
            return np.zeros(self.dims, np.float32)
        v = (self.vectors[ids].astype(np.float32) * self.scales[ids][:, None]).mean(0)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    def embed_many(self, texts: list[str], cache: bool = True):
        """Stacked :meth:`embed` vectors, shape (len(texts), dims).

        :param cache: keep the matrix in ``$XDG_CACHE_HOME/opensage/`` (default
            ``~/.cache/opensage/``), keyed by a hash of the texts and of the vectors
            file, so the next process loads it (about 1 ms) instead of embedding the
            routes' examples again (about 50 ms for 550). Cache errors are ignored.
        """
        np = self._np
        if not texts:
            return np.zeros((0, self.dims), np.float32)
        path = None
        if cache:
            import hashlib
            import os

            h = hashlib.sha256(f"{self.identity}\n".encode())
            for t in texts:
                h.update(t.encode("utf-8", "replace") + b"\0")
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opensage"
            path = base / f"route-examples-{h.hexdigest()[:24]}.npy"
            try:
                m = np.load(path, allow_pickle=False)
                if m.shape == (len(texts), self.dims) and m.dtype == np.float32:
                    return m
            except (OSError, ValueError):
                pass
        m = np.stack([self.embed(t) for t in texts]).astype(np.float32)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, m, allow_pickle=False)
                os.replace(tmp, path)
            except OSError:
                pass
        return m


def encoder(path: Path = VECTORS_FILE) -> StaticEncoder | None:
    """The shared encoder for ``path``, loaded on first use; ``None`` when the file is
    missing or unreadable (the router then uses its lexical evidence only)."""
    key = str(path)
    enc = _LOADED.get(key)
    if enc is not None:
        return enc
    with _LOCK:
        enc = _LOADED.get(key)
        if enc is None:
            try:
                enc = StaticEncoder(path)
            except (OSError, KeyError, ValueError):
                return None
            _LOADED[key] = enc
    return enc
