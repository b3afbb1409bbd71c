"""How long a hook keeps its host waiting when the team store cannot be reached (issue 16).

A Claude Code ``UserPromptSubmit`` event through ``opensage-hook claude`` (the direct
path: a Python process per event, as when no hook server runs; the hook server pays the
same wait once per event, without the start-up), with ``OPENSAGE_DATABASE_URL`` pointing
at:

* ``refused`` — a closed port on 127.0.0.1 (the server is down, its machine is up);
* ``black hole`` — a port that completes the TCP handshake and never answers (a hung
  server, a firewall dropping packets after the handshake);
* ``sqlite`` — no team store (the local file; the floor: Python start-up and recording);
* ``server up`` — with ``--db URL``, a PostgreSQL server that answers.

Each failing event must answer exit 0 with ``{}`` after about the team store's connect
timeout (``opensage.pgstore.CONNECT_TIMEOUT_S``) and leave one line in the workspace's
hook queue; the script checks both. Nothing is tuned here: one measurement set.

    python bench/hook_outage.py [--events 5] [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _event(i: int) -> str:
    return json.dumps({"session_id": "bench-outage", "hook_event_name": "UserPromptSubmit", "cwd": "/",
                       "prompt": f"prompt number {i}"})


def _run(project: Path, url: str | None, events: int) -> list[float]:
    env = {**os.environ, "CLAUDE_PROJECT_DIR": str(project), "OPENSAGE_HOOK_SERVER": "0",
           "OPENSAGE_PROJECT": "bench/hook-outage", "OPENSAGE_DATABASE_URL": url or ""}
    hook = str(Path(sys.executable).parent / "opensage-hook")
    times = []
    for i in range(events):
        start = time.monotonic()
        r = subprocess.run([hook, "claude"], input=_event(i), capture_output=True, text=True, env=env, timeout=120)
        times.append(time.monotonic() - start)
        if r.returncode != 0 or json.loads(r.stdout or "null") is None:
            raise SystemExit(f"hook failed (exit {r.returncode}): {r.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5, help="events per row (default 5)")
    parser.add_argument("--db", default=None, help="a reachable postgresql:// URL for the 'server up' row")
    args = parser.parse_args()
    from opensage.pgstore import CONNECT_TIMEOUT_S

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)
    rows = [("sqlite", None), ("refused", f"postgresql://u@127.0.0.1:{refused_port}/db"),
            ("black hole", f"postgresql://u@127.0.0.1:{hole.getsockname()[1]}/db")]
    if args.db:
        rows.append(("server up", args.db))
    results = {}
    print(f"{'store':<12} {'events':>6} {'median s':>9} {'max s':>7} {'queued':>7}")
    for name, url in rows:
        with tempfile.TemporaryDirectory(prefix="opensage-outage-") as tmp:
            project = Path(tmp)
            times = _run(project, url, args.events)
            queue = project / ".opencode" / "hook-queue.jsonl"
            queued = len(queue.read_text().splitlines()) if queue.exists() else 0
        if name in ("refused", "black hole") and queued != args.events:
            raise SystemExit(f"{name}: {queued} of {args.events} events queued")
        results[name] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                         "queued": queued}
        print(f"{name:<12} {args.events:>6} {statistics.median(times):>9.2f} {max(times):>7.2f} {queued:>7}")
    hole.close()
    print(json.dumps({"bench": "hook_outage", "connect_timeout_s": CONNECT_TIMEOUT_S, "events": args.events,
                      "rows": results}))


if __name__ == "__main__":
    main()
