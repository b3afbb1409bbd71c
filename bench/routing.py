"""Accuracy and speed of the intent router on labelled sets of requests.

Sets (each file's header says where it came from):

* tuned — ``routing_cases.yaml``, ``routing_holdout.yaml``, ``routing_fresh.yaml``,
  ``routing_unseen.yaml`` (written by the project's own sessions) and
  ``routing_fresh2.yaml``, ``routing_fresh3.yaml``, ``routing_fresh4.yaml`` (written by
  helpers who never saw the router) and ``routing_none_confusable.yaml`` (ordinary
  requests using the commands' words, written for training): the classifier is trained
  on all eight (scripts/build_route_classifier.py), so
  their numbers here are training numbers. Honest dev numbers for them come from
  ``python scripts/build_route_classifier.py --cv`` (each file held out in turn).
* independent (frozen) — ``routing_independent.yaml``: 340 requests written by a helper
  who never saw the router, briefed only with the commands' user-facing descriptions;
  frozen before tuning; never trained or tuned on (only its totals were looked at).
* fresh — ``routing_fresh5.yaml``: 300 requests written the same way after round 2
  (the last tuning round), frozen before round 2 was evaluated; report-only. Any file
  given with ``--extra`` is reported the same way.

For each set: accuracy, the ``none`` false-positive rate (ordinary requests that fired
a command), and the confusion pairs (printed for tuned sets only, so nobody tunes on the
held-out ones by accident; ``--show-misses`` prints them for every set). Then the
decision time (median / p95 in ms, every request routed once by a warm router, after a
first decision that loads the classifier and the vectors and builds the example index)
and the cold start of ``opensage route`` (a fresh process, median of 5). Ends with one
JSON line.

Targets (issue 15) on the frozen independent set: accuracy >= 95 %, none false
positives <= 3 %, median decision <= 5 ms after the first, ``opensage route`` cold
start <= 500 ms. ``--strict`` exits 1 when one is missed.

    python bench/routing.py --sets tuned              # while tuning: training sets only
    python bench/routing.py [--extra FILE ...]        # every set, report-only ones included
    python bench/routing.py [--show-misses] [--strict] [--no-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from opensage.plugins.routing.routing import NONE_ROUTE, PACKAGED_ROUTES, Router, load_routes  # noqa: E402

SETS = [
    ("tuned", "routing_cases.yaml"),
    ("tuned", "routing_holdout.yaml"),
    ("tuned", "routing_fresh.yaml"),
    ("tuned", "routing_unseen.yaml"),
    ("tuned", "routing_fresh2.yaml"),
    ("tuned", "routing_fresh3.yaml"),
    ("tuned", "routing_fresh4.yaml"),
    ("tuned", "routing_none_confusable.yaml"),
    ("independent", "routing_independent.yaml"),
    ("fresh", "routing_fresh5.yaml"),
]


#: Routes that run the same command in another mode count as that command's route: the sets
#: label "how did we fix ..." questions opensage_memory_query, and the router may answer
#: opensage_memory_history (@memory-query mode=history).
SAME_COMMAND = {"opensage_memory_history": "opensage_memory_query"}


def evaluate(router: Router, cases: list[dict]) -> dict:
    per_route: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusion: Counter = Counter()
    misses, arg_failures, times = [], [], []
    for case in cases:
        t0 = time.perf_counter()
        d = router.decide(case["text"])
        times.append((time.perf_counter() - t0) * 1000)
        expected = case["route"]
        per_route[expected][1] += 1
        if SAME_COMMAND.get(d.route, d.route) == expected:
            per_route[expected][0] += 1
            for key, value in (case.get("args") or {}).items():
                if d.arguments.get(key) != value:
                    arg_failures.append((case["text"], key, value, d.arguments.get(key)))
        else:
            confusion[(expected, d.route)] += 1
            misses.append((expected, d.route, d.how, round(d.confidence, 3), case["text"]))
    n = len(cases)
    ok = sum(c for c, _ in per_route.values())
    none_ok, none_n = per_route[NONE_ROUTE] if NONE_ROUTE in per_route else (0, 0)
    return {"n": n, "correct": ok, "accuracy": ok / n if n else 0.0,
            "none_fp": none_n - none_ok, "none_n": none_n,
            "none_fp_rate": (none_n - none_ok) / none_n if none_n else 0.0,
            "per_route": dict(per_route), "confusion": confusion, "misses": misses,
            "arg_failures": arg_failures, "times": times}


def cold_start(runs: int = 5) -> float:
    """Median wall time (ms) of ``opensage route --json TEXT`` in a fresh process."""
    out = []
    env = {**os.environ, "OPENSAGE_MODEL": ""}
    for i in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "opensage"), "route", "--json",
                        f"what do we know about the cache {i}"],
                       check=True, capture_output=True, env=env, cwd=HERE.parent)
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", choices=["tuned", "all"], default="all",
                    help="tuned: only the tuning sets (use this while tuning)")
    ap.add_argument("--show-misses", action="store_true", help="print misses of every set, not only tuned ones")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start measurement")
    ap.add_argument("--extra", type=Path, nargs="*", default=[],
                    help="more report-only sets (YAML with cases: [{text, route}]), e.g. a new fresh set")
    args = ap.parse_args()

    router = Router(load_routes(PACKAGED_ROUTES), tiebreak=False)  # no model: the offline router is measured
    t0 = time.perf_counter()
    router.decide("warm up: build the example index")
    first_ms = (time.perf_counter() - t0) * 1000

    results = {}
    all_times = []
    print(f"{'set':<32}{'role':<13}{'n':>5}{'accuracy':>10}{'none FP':>12}")
    for role, name, path in [(role, name, HERE / name) for role, name in SETS] + \
            [("fresh", p.name, p) for p in args.extra]:
        if not path.exists() or (args.sets == "tuned" and role != "tuned"):
            continue
        cases = yaml.safe_load(path.read_text())["cases"]
        r = evaluate(router, cases)
        results[name] = (role, r)
        all_times.extend(r["times"])
        print(f"{name:<32}{role:<13}{r['n']:>5}{r['accuracy']:>10.1%}"
              f"{r['none_fp']:>6}/{r['none_n']:<3} {r['none_fp_rate']:.1%}")
    tuned = [r for role, r in results.values() if role == "tuned"]
    tn = sum(r["n"] for r in tuned)
    tok = sum(r["correct"] for r in tuned)
    tfp = sum(r["none_fp"] for r in tuned)
    tnone = sum(r["none_n"] for r in tuned)
    print(f"{'tuned sets together':<32}{'tuned':<13}{tn:>5}{tok / tn:>10.1%}{tfp:>6}/{tnone:<3} {tfp / tnone:.1%}")

    for name, (role, r) in results.items():
        if role != "tuned" and not args.show_misses:
            continue
        if r["misses"] or r["arg_failures"]:
            print(f"\n{name}: misses (expected -> got, how, confidence)")
            for expected, got, how, conf, text in r["misses"]:
                print(f"  {expected} -> {got} ({how} {conf}): {text}")
            for text, key, want, have in r["arg_failures"]:
                print(f"  argument {key} = {have!r}, expected {want!r}: {text}")

    median = statistics.median(all_times)
    p95 = statistics.quantiles(all_times, n=20)[-1]
    print(f"\ndecision time over {len(all_times)} requests (warm router): median {median:.3f} ms, "
          f"p95 {p95:.3f} ms; first decision (loads the classifier and the vectors, embeds {len(router.examples)} "
          f"examples) {first_ms:.1f} ms")
    cold = None if args.no_cold else cold_start()
    if cold is not None:
        print(f"opensage route cold start (fresh process, median of 5): {cold:.0f} ms")

    summary = {"bench": "routing", "decision_ms_median": round(median, 3), "decision_ms_p95": round(p95, 3),
               "first_decision_ms": round(first_ms, 1), "cold_start_ms": None if cold is None else round(cold),
               "tuned": {"n": tn, "accuracy": round(tok / tn, 4), "none_fp_rate": round(tfp / tnone, 4)}}
    for name, (role, r) in results.items():
        summary[name.removesuffix(".yaml")] = {"role": role, "n": r["n"], "accuracy": round(r["accuracy"], 4),
                                              "none_fp_rate": round(r["none_fp_rate"], 4)}
    ind = results.get("routing_independent.yaml")
    if ind is not None:
        r = ind[1]
        targets = {"independent accuracy >= 95%": r["accuracy"] >= 0.95,
                   "independent none FP <= 3%": r["none_fp_rate"] <= 0.03,
                   "median decision <= 5 ms": median <= 5.0}
        if cold is not None:
            targets["cold start <= 500 ms"] = cold <= 500
        print("\ntargets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
        summary["targets_met"] = all(targets.values())
    print(json.dumps(summary))
    return 1 if args.strict and not summary.get("targets_met", True) else 0


if __name__ == "__main__":
    sys.exit(main())
