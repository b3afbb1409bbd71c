"""Many writers on one team store: processes on two workspaces writing at once (issue 16).

``--procs`` processes (default 8) are split over two workspaces with different project
keys (two clones on two machines, simulated: ``OPENSAGE_PROJECT`` differs). Each process
opens the real host on its workspace and, at the same moment as the others, writes
``--nodes`` nodes through ``@memory-add-node`` and records ``--events`` session events
through the host's session-event path (what the Claude Code and OpenCode hooks call).
Then it checks, on the server:

* every node and event is present exactly once (per project: procs/2 × nodes nodes and
  procs/2 × events episodes, no duplicate (type, label) or (session, seq));
* isolation: a role granted only project A (``grant_project``) reads all of A's rows and
  none of B's, even when it sets ``opensage.project`` to B.

The store must be empty or fresh: the bench creates its own database on the server named
by ``--admin-url`` (a role allowed to create roles and databases), owned by a new
ordinary role, and drops nothing (inspect it afterwards).

    python bench/team_concurrency.py --admin-url postgresql://postgres@127.0.0.1:5432/postgres

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _worker(url: str, root: str, project: str, proc: int, nodes: int, events: int, start_at: float) -> dict:
    os.environ["OPENSAGE_DATABASE_URL"] = url
    os.environ["OPENSAGE_PROJECT"] = project
    os.environ["OPENSAGE_EMBEDDINGS"] = "0"
    from opensage.host import Host
    from opensage.store import Workspace
    from opensage.types import SessionEvent

    host = Host(Workspace(Path(root)), load_entrypoints=False)
    try:
        host.db.conn  # connect and migrate before the start line
        host.run("memory-query", {"query": "warm up"})
        while time.time() < start_at:
            time.sleep(0.005)
        t0 = time.perf_counter()
        session = host.session(f"s-{proc}", source="bench")
        for i in range(max(nodes, events)):
            if i < nodes:
                host.run("memory-add-node", {"type": "fact", "label": f"p{proc}-fact-{i}",
                                             "content": f"fact {i} written by process {proc}"})
            if i < events:
                host.record(session, SessionEvent(kind="user_message", role="user", text=f"event {i} of {proc}"))
        return {"proc": proc, "seconds": time.perf_counter() - t0}
    finally:
        host.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--admin-url", required=True, help="a role that may create roles and databases")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args(argv)
    import psycopg
    from urllib.parse import urlsplit

    from opensage.pgstore import grant_project

    name = "team_" + uuid.uuid4().hex[:8]
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{name}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        admin.execute(f'CREATE ROLE "{name}_a" LOGIN')
    parts = urlsplit(args.admin_url)
    host_port = f"{parts.hostname}:{parts.port or 5432}"
    url = f"postgresql://{name}@{host_port}/{name}"
    with psycopg.connect(args.admin_url.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as admin:
        admin.execute(f'GRANT ALL ON SCHEMA public TO "{name}"')

    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="opensage-team-"))
    roots = {"A": tmp / "machine-a", "B": tmp / "machine-b"}
    for r in roots.values():
        r.mkdir()
    projects = {"A": "example.com/team/project-a", "B": "example.com/team/project-b"}
    # migrate once, so the processes race on data, not on creating tables
    _worker(url, str(roots["A"]), projects["A"], -1, 0, 0, 0)
    start_at = time.time() + 3.0
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.procs) as pool:
        jobs = [pool.apply_async(_worker, (url, str(roots["AB"[p % 2]]), projects["AB"[p % 2]], p, args.nodes,
                                           args.events, start_at)) for p in range(args.procs)]
        results = [j.get(timeout=3600) for j in jobs]
    wall = time.perf_counter() - t0 - 3.0

    per_project = args.procs // 2
    rows = []
    ok = True
    with psycopg.connect(url, autocommit=True) as owner:
        for key in "AB":
            owner.execute("SELECT set_config('opensage.project', %s, false)", (projects[key],))
            n = owner.execute("SELECT count(*), count(DISTINCT (type, label)) FROM nodes WHERE type='fact'").fetchone()
            e = owner.execute("SELECT count(*), count(DISTINCT (session_id, seq)) FROM episodes"
                              " WHERE session_id LIKE 's-%'").fetchone()
            want_n, want_e = per_project * args.nodes, per_project * args.events
            good = n == (want_n, want_n) and e == (want_e, want_e)
            ok &= good
            rows.append((f"project {key}: fact nodes (distinct)", f"{n[0]} ({n[1]}) of {want_n}"))
            rows.append((f"project {key}: episodes (distinct)", f"{e[0]} ({e[1]}) of {want_e}"))
        grant_project(owner, projects["A"], f"{name}_a")
    confined = f"postgresql://{name}_a@{host_port}/{name}"
    with psycopg.connect(confined, autocommit=True) as role_a:
        role_a.execute("SELECT set_config('opensage.project', %s, false)", (projects["A"],))
        sees_a = role_a.execute("SELECT count(*) FROM nodes WHERE type='fact'").fetchone()[0]
        role_a.execute("SELECT set_config('opensage.project', %s, false)", (projects["B"],))
        sees_b = role_a.execute("SELECT count(*) FROM nodes").fetchone()[0]
        sees_b_eps = role_a.execute("SELECT count(*) FROM episodes").fetchone()[0]
    isolated = sees_a == per_project * args.nodes and sees_b == 0 and sees_b_eps == 0
    ok &= isolated
    rows.append(("role granted A only: A's fact nodes", str(sees_a)))
    rows.append(("same role asking for B: nodes / episodes", f"{sees_b} / {sees_b_eps}"))
    writes = args.procs * (args.nodes + args.events)
    rows.append(("wall time (all processes)", f"{wall:.1f} s"))
    rows.append(("writes per second (nodes + events)", f"{writes / wall:.0f}"))
    rows.append(("slowest process", f"{max(r['seconds'] for r in results):.1f} s"))
    print(f"team store concurrency: {args.procs} processes on 2 projects, {args.nodes} nodes + "
          f"{args.events} events each, database {name}")
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(json.dumps({"bench": "team_concurrency", "procs": args.procs, "nodes": args.nodes, "events": args.events,
                      "all_present_no_duplicates": ok and True, "isolation": isolated,
                      "wall_s": round(wall, 2), "writes_per_s": round(writes / wall), "database": name}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
