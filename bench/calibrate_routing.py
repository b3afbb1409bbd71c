"""Calibrate the meaning-based part of the intent router on the TUNING sets only.

Since the learned classifier (scripts/build_route_classifier.py, which calibrates its own
thresholds) this part decides only for routes the classifier does not know and when no
classifier file is loaded; its ``similarity_threshold``s and ``NONE_MARGIN`` still come
from here.

The tuning sets were written while the template router was tuned, so its lexical
evidence already routes nearly all of them: calibrating the combination on them would
switch the meaning-based part off. So the meaning-based part is calibrated on its own,
on two kinds of requests it has not memorised:

* every request of ``routing_cases/holdout/fresh/unseen.yaml`` (similarities only, the
  lexical decision ignored), and
* every example sentence of the routes, scored against the *other* examples
  (leave-one-out),

and the search picks

* the margin by which a route's similarity must beat the ``none`` route's
  (:data:`opensage.plugins.routing.routing.NONE_MARGIN`), and
* each route's ``similarity_threshold``,

to minimise ``misses + 3 x false positives`` (a wrong command costs more than a missed
one: the host's own model still sees a missed request). Prints the values to copy into
``opensage/config/intent-routes.yaml`` / ``routing.py``; changes nothing itself. Never
reads the independent or fresh sets.

    python bench/calibrate_routing.py [--fp-cost 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from opensage.plugins.routing import routing  # noqa: E402
from opensage.plugins.routing.routing import NONE_ROUTE, PACKAGED_ROUTES, Router, load_routes  # noqa: E402

TUNING = ["routing_cases.yaml", "routing_holdout.yaml", "routing_fresh.yaml", "routing_unseen.yaml"]
FP_COST = 3.0


def main() -> int:
    global FP_COST
    if len(sys.argv) > 2 and sys.argv[1] == "--fp-cost":
        FP_COST = float(sys.argv[2])
    router = Router(load_routes(PACKAGED_ROUTES))
    import numpy as np

    rows = []
    for name in TUNING:
        for case in yaml.safe_load((HERE / name).read_text())["cases"]:
            sims, _ = router.similarities(case["text"])
            rows.append((case["route"], None, False, sims))
    examples = list(router.examples)
    for i, (route, example) in enumerate(examples):  # leave-one-out: a router without this example
        cfg = router.config.model_copy(deep=True)
        for spec in cfg.routes:
            if spec.name == route:
                spec.examples = [e for e in spec.examples if e != example] or spec.examples
        loo = Router(cfg)
        sims, _ = loo.similarities(example)
        rows.append((route, None, False, sims))
    routes = [r for r in router.routes if r != NONE_ROUTE]

    def cost(margin: float, thr: dict[str, float]) -> tuple[float, int, int]:
        miss = fp = 0
        for expected, lexical, veto, sims in rows:
            got = lexical
            if got is None and not veto and sims:
                best = max(sims, key=sims.get)
                if best != NONE_ROUTE and sims[best] >= thr[best] and sims[best] - sims.get(NONE_ROUTE, 0) >= margin:
                    got = best
            got = got or NONE_ROUTE
            if got != expected:
                if expected == NONE_ROUTE:
                    fp += 1
                else:
                    miss += 1
        return miss + FP_COST * fp, miss, fp

    grid = [round(0.2 + 0.01 * i, 2) for i in range(61)]
    best = None
    for margin in [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1]:
        thr = {r: 0.6 for r in routes}
        for _ in range(3):  # coordinate descent over the routes
            for r in routes:
                scored = [(cost(margin, {**thr, r: t})[0], -t, t) for t in grid]
                thr[r] = min(scored)[2]  # lowest cost; ties go to the higher threshold
        c = cost(margin, thr)
        print(f"margin {margin:.2f}: cost {c[0]:.0f} (misses {c[1]}, false positives {c[2]})")
        if best is None or c[0] < best[0][0]:
            best = (c, margin, dict(thr))
    (c, miss, fp), margin, thr = best[0], best[1], best[2]
    print(f"\nbest: NONE_MARGIN = {margin}, misses {miss}, false positives {fp} over {len(rows)} requests")
    for r in routes:
        print(f"  {r}: similarity_threshold: {thr[r]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
