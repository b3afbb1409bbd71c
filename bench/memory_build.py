"""Speed of building graph memory: @memory-ingest, @memory-compress-session, @memory-visualize.

* ingest: the installed ``rich`` package (or ``--path``), first run and re-run with
  nothing changed (every file is still parsed to recompute cross-file edges; no writes);
* compress: a synthetic session of ``--episodes`` events (messages with decisions and
  questions, shell calls, failures and fixes), rules only, first run and re-run;
* visualize: the neighbourhood of the most called function, radius 2, 60 nodes.

Prints one table row per step (wall ms, nodes/edges written). Targets (issue 2):
ingesting rich (~100 files) in a few seconds at most; compressing 1,000 episodes in
under 2 s.

    python bench/memory_build.py [--path DIR] [--episodes 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from opensage.host import Host
from opensage.store import Workspace
from opensage.types import SessionEvent


def _events(n: int):
    for i in range(n):
        k = i % 8
        if k == 0:
            yield SessionEvent(kind="user_message", role="user",
                               text=f"Why does module_{i % 37}.py fail on input {i}? Let's use a retry with backoff in fetch_page_{i % 11}.")
        elif k == 1:
            yield SessionEvent(kind="assistant_message", role="assistant",
                               text=f"The RetryPolicy in src/net_{i % 13}.py handles it; I'll go with exponential backoff.")
        elif k == 2:
            yield SessionEvent(kind="tool_call", tool="bash", args={"command": f"pytest -q tests/test_net_{i % 13}.py"})
        elif k == 3:
            yield SessionEvent(kind="tool_result", tool="bash", meta={"exit_code": 1},
                               text=f"FAILED tests/test_net_{i % 13}.py::test_retry - TimeoutError: fetch {i % 5} timed out")
        elif k == 4:
            yield SessionEvent(kind="file_edit", path=f"src/net_{i % 13}.py", text="retry")
        elif k == 5:
            yield SessionEvent(kind="assistant_message", role="assistant", text="Fixed the TimeoutError by retrying.")
        elif k == 6:
            yield SessionEvent(kind="tool_call", tool="bash", args={"command": f"pytest -q tests/test_net_{i % 13}.py"})
        else:
            yield SessionEvent(kind="tool_result", tool="bash", meta={"exit_code": 0}, text="4 passed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=None, help="folder to ingest (default: the installed rich package)")
    ap.add_argument("--episodes", type=int, default=1000)
    args = ap.parse_args()
    if args.path is None:
        import rich

        args.path = os.path.dirname(rich.__file__)
    os.environ.pop("OPENSAGE_MODEL", None)
    rows = []
    with tempfile.TemporaryDirectory() as ws:
        host = Host(Workspace(Path(ws)))
        for label in ("ingest (first)", "ingest (unchanged)"):
            t0 = time.perf_counter()
            d = host.run("memory-ingest", {"path": args.path}).data
            rows.append((label, (time.perf_counter() - t0) * 1000,
                         f"{d['files']} files, {d['classes']} classes, {d['functions']} functions, {d['methods']} methods, "
                         f"{d['edges']} edges; +{d['nodesAdded']} nodes +{d['edgesAdded']} edges"))
        session = host.session("bench", source="bench")
        t0 = time.perf_counter()
        for ev in _events(args.episodes):
            host.record(session, ev)
        rows.append((f"record {args.episodes} episodes", (time.perf_counter() - t0) * 1000, "one transaction each"))
        for label in ("compress (first)", "compress (again)"):
            t0 = time.perf_counter()
            d = host.run("memory-compress-session", {"sessionId": "bench", "useModel": "never"}).data
            rows.append((label, (time.perf_counter() - t0) * 1000,
                         f"{d['newTotal']} new nodes, {d['newEdges']} new edges, {d['provenanceLinks']} provenance links"))
        top = host.db.conn.execute(
            "SELECT dst FROM edges WHERE type='calls' GROUP BY dst ORDER BY count(*) DESC LIMIT 1").fetchone()
        if top:
            t0 = time.perf_counter()
            d = host.run("memory-visualize", {"centerNode": f"n{top[0]}"}).data
            rows.append(("visualize (radius 2, 60 nodes)", (time.perf_counter() - t0) * 1000,
                         f"{d['shown']} of {d['total']} nodes, {len(d['mermaid'])} chars"))
        host.close()
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'ms':>8}  result")
    for label, ms, note in rows:
        print(f"{label:<{width}}  {ms:>8.0f}  {note}")


if __name__ == "__main__":
    main()
