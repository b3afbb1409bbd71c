"""Start-up time of a command that needs no model.

Runs ``opensage @memory-query query=x`` (the console script installed next to this
Python, as a virtualenv puts it on PATH; else ``python -m opensage``) in a fresh
workspace several times and prints the wall time median and p90 in ms, and whether
litellm was imported (it must not be). Target (issue 2): under 300 ms of wall time.

Not ``shutil.which("opensage")``: under pyenv that finds the shim, a shell script that
runs ``pyenv exec`` first and adds about 100 ms here (358 against 251 ms median,
measured back to back), which is pyenv's cost, not ours.

    python bench/startup.py [--runs 15] [--command "@memory-query query=x"]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--command", default="@memory-query query=x")
    args = ap.parse_args()
    script = Path(sys.executable).parent / "opensage"
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "opensage"]
    with tempfile.TemporaryDirectory() as ws:
        argv = [*base, "--workspace", ws, *shlex.split(args.command)]
        subprocess.run(argv, capture_output=True, check=True)  # warm the page cache, create the db
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            times.append((time.perf_counter() - t0) * 1000)
        probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "opensage", "--workspace", ws,
                                *shlex.split(args.command)], capture_output=True, text=True, check=True)
    litellm = any(line.rstrip().endswith("| litellm") for line in probe.stderr.splitlines())
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    print(f"{'command':<40} {'runs':>4} {'median ms':>10} {'p90 ms':>8} {'litellm imported':>17}")
    print(f"{' '.join(argv[len(base) + 2:]):<40} {args.runs:>4} {statistics.median(times):>10.1f} {p90:>8.1f} {str(litellm):>17}")


if __name__ == "__main__":
    main()
