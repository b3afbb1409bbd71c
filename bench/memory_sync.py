"""``opensage memory push`` / ``pull`` at scale: how long moving a graph between stores takes.

Builds the synthetic code-like graph of ``bench/memory_scale.py`` (default 20k nodes /
60k edges, 0-3 tags per node) in a temporary workspace's SQLite store, then times
:func:`opensage.plugins.graph_memory.sync.sync` (what the commands run, without the
process start-up):

* first push into an empty team store (``--db``: a ``postgresql://`` URL, or by default
  another SQLite workspace);
* second push (nothing to do: every row compared, none written);
* a push after 1% of the nodes changed locally (those nodes rewritten, the rest compared);
* first pull into a fresh workspace, then a second pull.

Each copy is checked: the counts reported must equal the graph's, the second runs must
report ``0 new, 0 updated``, and the fresh workspace must end with as many nodes, edges and
tags as the source. No target is set (issue 16 names none); the numbers are reported.
Synthetic data, nothing tuned on it (no dev/held-out split).

Usage::

    python bench/memory_sync.py [--nodes 20000] [--edges 60000] [--db postgresql://user@host/db] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from memory_scale import CODE_WORDS, make_graph  # noqa: E402

from opensage.plugins.graph_memory.graph import Graph  # noqa: E402
from opensage.pgstore import redact_url  # noqa: E402
from opensage.plugins.graph_memory.sync import close_store, open_store, sync  # noqa: E402
from opensage.store import Database  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="memory push/pull benchmark")
    ap.add_argument("--nodes", type=int, default=20_000)
    ap.add_argument("--edges", type=int, default=60_000)
    ap.add_argument("--db", default=None, help="team store URL (default: another SQLite workspace)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    # every workspace of this run is one project on the team store
    os.environ["OPENSAGE_PROJECT"] = f"bench-sync-{uuid.uuid4().hex[:8]}"
    nodes, edges, _vocab, _pick = make_graph(rng, args.nodes, args.edges)
    tags = [sorted({rng.choice(CODE_WORDS) for _ in range(rng.randint(0, 3))}) for _ in nodes]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        local_ws, fresh_ws, team_ws = root / "local", root / "fresh", root / "team"
        for p in (local_ws, fresh_ws, team_ws):
            p.mkdir()
        local = Database(local_ws / ".opencode" / "opensage.db")
        t = time.perf_counter()
        Graph(local).bulk_load(nodes, edges, tags=tags)
        build_s = time.perf_counter() - t
        team, team_name = open_store(args.db or str(team_ws), local_ws)
        fresh = Database(fresh_ws / ".opencode" / "opensage.db")

        def timed(key: str, label: str, src, dst, expect_new: int, expect_updated: int):
            t0 = time.perf_counter()
            report = sync(src, dst)
            dt = time.perf_counter() - t0
            ok = (report.new, report.updated) == (expect_new, expect_updated)
            rows.append((key, label, dt, report.new, report.updated, ok))
            if not ok:
                print(f"UNEXPECTED {label}: {report.text('synced')}", file=sys.stderr)

        # the graph's edges may repeat a (src, type, dst) with another weight: bulk_load keeps one
        total = (local.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
                 + local.conn.execute("SELECT count(*) FROM edges").fetchone()[0])
        timed("push_s", "push (empty team store)", local, team, total, 0)
        timed("push_again_s", "push again (nothing new)", local, team, 0, 0)
        changed = rng.sample(range(len(nodes)), max(1, len(nodes) // 100))
        g = Graph(local)
        for i in changed:
            kind, label, content, meta = nodes[i]
            g.upsert_node(kind, label, content + " changed", meta, dedupe=False)
        timed("push_changed_s", "push after 1% of nodes changed", local, team, 0, len(changed))
        timed("pull_s", "pull into a fresh workspace", team, fresh, total, 0)
        timed("pull_again_s", "pull again (nothing new)", team, fresh, 0, 0)
        counts = [(db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0],
                   db.conn.execute("SELECT count(*) FROM edges").fetchone()[0],
                   db.conn.execute("SELECT count(*) FROM node_tags").fetchone()[0]) for db in (local, fresh)]
        for db in (local, fresh):
            db.close()
        close_store(team)
    same = counts[0] == counts[1]
    print(f"memory push/pull: {args.nodes} nodes, {args.edges} edges; team store {redact_url(team_name)}; "
          f"source built in {build_s:.1f} s")
    print(f"{'step':34} {'seconds':>8} {'new':>8} {'updated':>8}  as expected")
    for _key, label, dt, new, upd, ok in rows:
        print(f"{label:34} {dt:8.2f} {new:8d} {upd:8d}  {'yes' if ok else 'NO'}")
    print(f"fresh workspace holds the source's nodes, edges and tags: {'yes' if same else 'NO'} {counts}")
    backend = "postgresql" if (args.db or "").startswith(("postgresql:", "postgres:")) else "sqlite"
    print(json.dumps({"bench": "memory_sync", "backend": backend, "nodes": args.nodes, "edges": args.edges,
                      **{key: round(dt, 3) for key, _label, dt, *_ in rows},
                      "all_as_expected": all(r[5] for r in rows) and same}))


if __name__ == "__main__":
    main()
