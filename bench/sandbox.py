"""Per-run overhead of the sandbox: a trivial tool run sandboxed vs. as a bare subprocess.

    python bench/sandbox.py [--runs 30]

Prints the median (and p90) wall time in ms of: the bare subprocess, the tool through
:func:`opensage.sandbox.run` at the ``bwrap`` level, and ``bwrap ... true`` alone (no
interpreter), so the sandbox's own cost can be read off. Target: median sandboxed run
under 80 ms. The tool also runs without the per-run cgroup (the isolation added for
issue 11 that costs anything per run: tmpfs scratch and the longer seccomp filter are
part of both rows), interleaved with the full runs, so its cost reads off under the same
load. Dev measurement (nothing is tuned on it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opensage import sandbox
from opensage.plugins.dynamic_tools.runner import python_argv

TOOL = 'import json,sys\nreq=json.load(sys.stdin)\nprint(json.dumps({"result": req["arguments"]["x"] + 1}))\n'
TARGET_MS = 80.0


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    opts = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="opensage-bench-"))
    folder.chmod(0o755)
    code = folder / "tool.py"
    code.write_text(TOOL)
    argv = python_argv(code)  # exactly how a generated Python tool is started
    stdin = json.dumps({"arguments": {"x": 41}, "state": None})
    config = {"allow_fallback": False}
    level = sandbox.available_level(config)

    bare, boxed, shell, no_cgroup = [], [], [], []
    full_cgroup = sandbox._cgroup_for
    for _ in range(3):  # warm caches
        subprocess.run(argv, input=stdin, capture_output=True, text=True)
        sandbox.run(argv, stdin=stdin, readable=[folder], config=config)
    for _ in range(opts.runs):
        t = time.perf_counter()
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True)
        bare.append((time.perf_counter() - t) * 1000)
        assert json.loads(out.stdout)["result"] == 42
        t = time.perf_counter()
        res = sandbox.run(argv, stdin=stdin, readable=[folder], config=config)
        boxed.append((time.perf_counter() - t) * 1000)
        assert res.ok and json.loads(res.stdout)["result"] == 42, res
        sandbox._cgroup_for = lambda limits: None
        try:
            t = time.perf_counter()
            res = sandbox.run(argv, stdin=stdin, readable=[folder], config=config)
            no_cgroup.append((time.perf_counter() - t) * 1000)
        finally:
            sandbox._cgroup_for = full_cgroup
        assert res.ok, res
        t = time.perf_counter()
        res = sandbox.run(["true"], config=config)
        shell.append((time.perf_counter() - t) * 1000)
        assert res.ok
    rows = [("bare subprocess (python tool)", *_stats(bare)),
            (f"sandbox.run, level {level} (python tool)", *_stats(boxed)),
            ("  same without the per-run cgroup", *_stats(no_cgroup)),
            (f"sandbox.run, level {level} (/usr/bin/true)", *_stats(shell))]
    print(f"{'run':45} {'median ms':>10} {'p90 ms':>10}   ({opts.runs} runs each)")
    for name, med, p90 in rows:
        print(f"{name:45} {med:10.1f} {p90:10.1f}")
    overhead = rows[1][1] - rows[0][1]
    verdict = "OK" if rows[1][1] < TARGET_MS else "OVER TARGET"
    load = os.getloadavg()[0]
    print(f"sandboxed run median {rows[1][1]:.1f} ms (target < {TARGET_MS:.0f} ms): {verdict}; "
          f"overhead over bare {overhead:.1f} ms; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(json.dumps({"bench": "sandbox", "split": "dev", "runs": opts.runs, "level": level,
                      "bare_median_ms": round(rows[0][1], 1), "median_ms": round(rows[1][1], 1),
                      "no_cgroup_median_ms": round(rows[2][1], 1), "true_median_ms": round(rows[3][1], 1),
                      "target_ms": TARGET_MS, "ok": rows[1][1] < TARGET_MS, "load": round(load, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
