"""Build ``opensage/config/route-classifier.npz``: the intent router's learned classifier
(see docs/routing.md, "How matching works"), and measure it by grouped cross-validation.

Training data (and nothing else):

* every route's ``examples`` in ``opensage/config/intent-routes.yaml`` (labelled with
  the route; ``opensage_memory_history`` folded into ``opensage_memory_query``,
  ``none`` a class of its own), and
* the tuning sets ``bench/routing_cases|holdout|fresh|unseen|fresh2|fresh3|fresh4|none_confusable.yaml``.

The report-only sets (``bench/routing_independent.yaml`` and any later fresh set) are
never read here.

Model: multinomial logistic regression (scikit-learn, build time only) over the sparse
features of :func:`opensage.plugins.routing.route_classifier.features` (binary, idf-weighted — character
n-grams at ``CHAR_WEIGHT`` — L2-normalised; vocabulary = features seen at least
``MIN_DF`` times) and the static
sentence vector of :mod:`opensage.plugins.routing.route_vectors` times ``DENSE_WEIGHT``.

Per-route thresholds: the probability a route needs to fire, chosen on out-of-fold
probabilities (every training group predicted by a model that did not see it) to
minimise ``misses + FP_COST x false positives`` — a command fired on an ordinary request
costs more than a missed one, which the host's own model still sees — and shrunk
halfway towards the best single threshold (:func:`calibrate`).

    pip install scikit-learn         # build time only (the `route-classifier` extra)
    python scripts/build_route_classifier.py            # writes the .npz (about 1 min)
    python scripts/build_route_classifier.py --cv       # dev numbers: each tuning file held out in turn
    python scripts/build_route_classifier.py --check    # exit 1 if the shipped file is stale

Deterministic: the same inputs give the same weights (lbfgs, no random state used).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opensage.plugins.routing.route_classifier import CLASSIFIER_FILE, FOLDED, examples_digest, features  # noqa: E402
from opensage.plugins.routing.routing import NONE_ROUTE, PACKAGED_ROUTES, load_routes  # noqa: E402

#: the files trained on (each also a cross-validation group); never a report-only set
TRAIN_FILES = ["routing_cases.yaml", "routing_holdout.yaml", "routing_fresh.yaml", "routing_unseen.yaml",
               "routing_fresh2.yaml", "routing_fresh3.yaml", "routing_fresh4.yaml", "routing_none_confusable.yaml"]
#: regularisation of the logistic regression (inverse strength), chosen by --cv
C = 20.0
#: scale of the dense sentence vector next to the unit-length sparse part, chosen by --cv
DENSE_WEIGHT = 0.5
#: weight of the character n-gram features next to the word features (folded into the
#: exported idf): they give typo tolerance but, at full weight, fit the writers' spelling;
#: chosen by --cv (1.0, 0.5, 0.3, 0.15, 0 compared)
CHAR_WEIGHT = 0.5
#: a feature string must occur in at least this many training texts to be kept
MIN_DF = 2
#: a false positive costs this many misses in the threshold search
FP_COST = 4.0
#: thresholds are searched on this grid (probability of the winning route)
GRID = [round(0.2 + 0.02 * i, 2) for i in range(36)]
#: folds the YAML examples are split into for out-of-fold predictions (by position)
EXAMPLE_FOLDS = 5


def training_data(routes_file: Path = PACKAGED_ROUTES) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """``(texts, labels, groups, digests)``; groups are ``examples:k`` or the file name."""
    config = load_routes(routes_file)
    texts, labels, groups = [], [], []
    digests = {}
    i = 0
    for route in config.routes:
        if not route.enabled:
            continue
        digests[route.name] = examples_digest(route.examples)
        for example in route.examples:
            texts.append(example)
            labels.append(FOLDED.get(route.name, route.name))
            groups.append(f"examples:{i % EXAMPLE_FOLDS}")
            i += 1
    for name in TRAIN_FILES:
        for case in yaml.safe_load((ROOT / "bench" / name).read_text())["cases"]:
            texts.append(case["text"])
            labels.append(FOLDED.get(case["route"], case["route"]))
            groups.append(name)
    return texts, labels, groups, digests


def data_hash(routes_file: Path = PACKAGED_ROUTES) -> str:
    """sha256 of everything the weights depend on: the training texts and labels, the
    hyper-parameters, the vectors file and the source of the feature functions. The
    test compares it with the shipped one."""
    import inspect

    from opensage.plugins.routing import route_classifier
    from opensage.plugins.routing.route_vectors import VECTORS_FILE

    texts, labels, groups, _ = training_data(routes_file)
    h = hashlib.sha256(json.dumps({"C": C, "dense": DENSE_WEIGHT, "char": CHAR_WEIGHT, "min_df": MIN_DF, "fp": FP_COST,
                                   "grid": GRID, "folds": EXAMPLE_FOLDS}).encode())
    for t, l, g in zip(texts, labels, groups):
        h.update(f"{l}\t{g}\t{t}\0".encode("utf-8"))
    h.update(hashlib.sha256(VECTORS_FILE.read_bytes()).digest())
    for fn in (route_classifier.features, route_classifier._stem):  # the feature code itself
        h.update(inspect.getsource(fn).encode("utf-8"))
    for rx in (route_classifier._WORD, route_classifier._JOBLIKE, route_classifier._PATHLIKE,
               route_classifier._CODELIKE, route_classifier._LEADIN):
        h.update(rx.pattern.encode("utf-8"))
    return h.hexdigest()


class Featurizer:
    """Vocabulary + idf fitted on training texts; ``transform`` gives the model input."""

    def __init__(self, texts: list[str], min_df: int = MIN_DF, dense_weight: float = DENSE_WEIGHT):
        from opensage.plugins.routing.route_vectors import encoder

        df: Counter = Counter()
        for t in texts:
            df.update(features(t))
        self.vocab = sorted(f for f, c in df.items() if c >= min_df)
        self.index = {f: i for i, f in enumerate(self.vocab)}
        n = len(texts)
        self.idf = np.array([(math.log((1 + n) / (1 + df[f])) + 1) * (CHAR_WEIGHT if f.startswith("c:") else 1.0)
                             for f in self.vocab], np.float32)
        self.enc = encoder()
        self.dense_weight = dense_weight

    def transform(self, texts: list[str]):
        from scipy import sparse

        rows, cols, vals = [], [], []
        for r, t in enumerate(texts):
            ids = [i for i in (self.index.get(f) for f in features(t)) if i is not None]
            if not ids:
                continue
            w = self.idf[ids]
            w = w / np.sqrt((w * w).sum())
            rows.extend([r] * len(ids))
            cols.extend(ids)
            vals.extend(w.tolist())
        sp = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(self.vocab)), dtype=np.float64)
        if self.enc is None:
            raise SystemExit("opensage/config/route-vectors.npz is missing: build it first (scripts/build_route_vectors.py)")
        dense = np.stack([self.enc.embed(t) for t in texts]) * self.dense_weight
        return sparse.hstack([sp, sparse.csr_matrix(dense)]).tocsr()


def fit(texts: list[str], labels: list[str], c: float = C, dense_weight: float = DENSE_WEIGHT):
    from sklearn.linear_model import LogisticRegression

    feat = Featurizer(texts, dense_weight=dense_weight)
    model = LogisticRegression(C=c, max_iter=3000, tol=1e-6)
    model.fit(feat.transform(texts), labels)
    return feat, model


def predict(feat: Featurizer, model, texts: list[str]) -> tuple[list[str], np.ndarray]:
    return list(model.classes_), model.predict_proba(feat.transform(texts))


def out_of_fold(texts, labels, groups, c=C, dense_weight=DENSE_WEIGHT, exclude=()):
    """Probabilities of every text from a model trained without its group (and without
    the groups in ``exclude``, which are left out entirely)."""
    keep = [i for i, g in enumerate(groups) if g not in exclude]
    out: dict[int, np.ndarray] = {}
    classes = None
    for g in sorted({groups[i] for i in keep}):
        tr = [i for i in keep if groups[i] != g]
        te = [i for i in keep if groups[i] == g]
        feat, model = fit([texts[i] for i in tr], [labels[i] for i in tr], c, dense_weight)
        cls, p = predict(feat, model, [texts[i] for i in te])
        classes = classes or cls
        assert cls == classes
        for i, row in zip(te, p):
            out[i] = row
    return classes, out


def decide(classes: list[str], p: np.ndarray, thresholds: dict[str, float]) -> str:
    k = int(np.argmax(p))
    route = classes[k]
    if route == NONE_ROUTE or p[k] < thresholds.get(route, 0.5):
        return NONE_ROUTE
    return route


def score(classes, probs: dict[int, np.ndarray], labels, thresholds) -> tuple[int, int, int, int]:
    """``(correct, n, none false positives, none n)``."""
    ok = fp = nn = 0
    for i, p in probs.items():
        got = decide(classes, p, thresholds)
        ok += got == labels[i]
        if labels[i] == NONE_ROUTE:
            nn += 1
            fp += got != NONE_ROUTE
    return ok, len(probs), fp, nn


def calibrate(classes, probs: dict[int, np.ndarray], labels, fp_cost: float = FP_COST) -> dict[str, float]:
    """Per-route thresholds: the single best threshold for all routes, and each route's
    own best (coordinate descent), both minimising ``misses + fp_cost x false
    positives`` and taking the middle of a range of equally good values; the result is
    halfway between the two. (Grouped CV on fresh2/fresh3/unseen/holdout: per-route
    alone 506/532 correct, the single threshold 510, halfway 510 — per-route values fit
    noise, the halfway ones keep a route's own tendency.)"""
    routes = [c for c in classes if c != NONE_ROUTE]

    def cost(t):
        ok, n, fp, _ = score(classes, probs, labels, t)
        return (n - ok - fp) + fp_cost * fp

    def middle_of_best(costs):
        plateau = [v for v, k in zip(GRID, costs) if k == min(costs)]
        return plateau[len(plateau) // 2]

    common = middle_of_best([cost({r: v for r in routes}) for v in GRID])
    thr = {r: common for r in routes}
    for _ in range(3):
        for r in routes:
            thr[r] = middle_of_best([cost({**thr, r: v}) for v in GRID])
    return {r: round((thr[r] + common) / 2, 3) for r in routes}


def export(feat: Featurizer, model, meta: dict, out: Path) -> None:
    """Write the weights the runtime reads (:class:`opensage.plugins.routing.route_classifier.Classifier`)."""
    nv = len(feat.vocab)
    coef = model.coef_.astype(np.float32)  # (classes, features)
    arrays = {
        "vocab": np.frombuffer("\n".join(feat.vocab).encode("utf-8"), dtype=np.uint8),
        "idf": feat.idf.astype(np.float32),
        "W_sparse": coef[:, :nv].T.astype(np.float16),
        "W_dense": coef[:, nv:].T.astype(np.float32),
        "bias": model.intercept_.astype(np.float32),
        "meta": np.frombuffer(json.dumps({"classes": list(model.classes_), "dense_weight": feat.dense_weight,
                                          **meta}, sort_keys=True).encode("utf-8"), dtype=np.uint8),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:  # fixed timestamps: byte-identical rebuilds
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.save(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    out.write_bytes(buf.getvalue())


def build(out: Path) -> dict:
    t0 = time.perf_counter()
    texts, labels, groups, digests = training_data()
    classes, oof = out_of_fold(texts, labels, groups)
    thresholds = calibrate(classes, oof, labels)
    ok, n, fp, nn = score(classes, oof, labels, thresholds)
    feat, model = fit(texts, labels)
    assert list(model.classes_) == classes
    meta = {"thresholds": thresholds, "digests": digests, "data_hash": data_hash(), "C": C, "min_df": MIN_DF,
            "fp_cost": FP_COST, "oof": {"correct": ok, "n": n, "none_fp": fp, "none_n": nn}}
    export(feat, model, meta, out)
    print(f"{len(texts)} training texts, {len(classes)} classes, {len(feat.vocab)} features; out-of-fold "
          f"{ok}/{n} = {ok / n:.1%}, none false positives {fp}/{nn}")
    print("thresholds: " + ", ".join(f"{r} {t:.2f}" for r, t in thresholds.items()))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.0f} s")
    return meta


def cross_validate(held_out: list[str], grid_c: list[float], grid_dense: list[float]) -> None:
    """Dev numbers: for each held-out tuning file, train on everything else, calibrate the
    thresholds on out-of-fold predictions of everything else, report on the held-out file:
    the classifier alone, the whole router with it (the runtime code on the exported
    weights: argument filling and masking included), and the router with templates and
    patterns deciding first (the policy before the classifier)."""
    import tempfile

    from opensage.plugins.routing.route_classifier import Classifier
    from opensage.plugins.routing.routing import Router

    texts, labels, groups, _ = training_data()
    config = load_routes()
    lexical_router = Router(config, tiebreak=False, classifier=None)
    print(f"{'held out':<24}{'C':>6}{'dense':>7}{'classifier':>12}{'router':>18}{'templates first':>22}"
          "   (dev: grouped CV; accuracy, none false positives)")
    results = []
    for c in grid_c:
        for dw in grid_dense:
            for name in held_out:
                classes, inner = out_of_fold(texts, labels, groups, c, dw, exclude=(name,))
                thr = calibrate(classes, inner, labels)
                tr = [i for i, g in enumerate(groups) if g != name]
                te = [i for i, g in enumerate(groups) if g == name]
                feat, model = fit([texts[i] for i in tr], [labels[i] for i in tr], c, dw)
                _, p = predict(feat, model, [texts[i] for i in te])
                ok, n, fp, nn = score(classes, dict(zip(te, p)), labels, thr)
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "clf.npz"
                    export(feat, model, {"thresholds": thr, "digests": training_data()[3]}, path)
                    router = Router(config, tiebreak=False, classifier=Classifier(path))
                    full = [0, 0, 0]
                    first = [0, 0, 0]
                    for i in te:
                        d = router.decide(texts[i])
                        lex = lexical_router.decide(texts[i])
                        for tally, got in ((full, d.route), (first, lex.route if lex.how in ("template", "pattern")
                                                              else d.route)):
                            got = FOLDED.get(got, got)
                            tally[0] += got == labels[i]
                            tally[1] += labels[i] == NONE_ROUTE and got != NONE_ROUTE
                            tally[2] += labels[i] == NONE_ROUTE
                results.append((name, c, dw, ok / n, fp / nn, full[0] / n, full[1] / nn, first[0] / n, first[1] / nn))
                print(f"{name:<24}{c:>6g}{dw:>7g}{ok / n:>7.1%} {fp:>2}/{nn:<2}{full[0] / n:>11.1%} {full[1]:>2}/{nn:<2}"
                      f"{first[0] / n:>15.1%} {first[1]:>2}/{nn:<2}", flush=True)
    print(json.dumps({"bench": "route_classifier_cv", "results": [
        {"held_out": r[0], "C": r[1], "dense": r[2], "classifier_accuracy": round(r[3], 4),
         "classifier_none_fp": round(r[4], 4), "router_accuracy": round(r[5], 4), "router_none_fp": round(r[6], 4),
         "templates_first_accuracy": round(r[7], 4), "templates_first_none_fp": round(r[8], 4)}
        for r in results]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CLASSIFIER_FILE)
    ap.add_argument("--cv", action="store_true", help="print dev numbers (grouped CV), write nothing")
    ap.add_argument("--held-out", nargs="*", default=["routing_fresh4.yaml", "routing_fresh3.yaml", "routing_fresh2.yaml"])
    ap.add_argument("--C", type=float, nargs="*", default=[C])
    ap.add_argument("--dense", type=float, nargs="*", default=[DENSE_WEIGHT])
    ap.add_argument("--check", action="store_true", help="exit 1 when the shipped file was built from other data")
    args = ap.parse_args()
    if args.check:
        from opensage.plugins.routing.route_classifier import Classifier

        shipped = Classifier(args.out).meta.get("data_hash")
        if shipped != data_hash():
            print(f"{args.out} is stale: run python scripts/build_route_classifier.py")
            return 1
        print(f"{args.out} matches its training data")
        return 0
    if args.cv:
        cross_validate(args.held_out, args.C, args.dense)
        return 0
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
