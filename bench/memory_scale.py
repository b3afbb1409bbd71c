"""Graph memory at scale: bulk load, similarity, reverse traversal and single writes.

Builds a synthetic code-like graph (default 100k nodes / 300k edges) in a temporary
workspace with :meth:`Graph.bulk_load` (one transaction, FTS5 kept in sync), then times
the real command path (``host.run("memory-query", ...)``, ``host.run("memory-add-node", ...)``):

* similarity: a mix of natural-language queries (3-5 content words), exact labels,
  misspelled labels (one character changed) and snake_case spellings of CamelCase labels;
* traversal: depth 3, ``direction=in`` ("who depends on X") from random nodes;
* single add-node: one new node per call (one transaction each);
* record episode: one session event per call;
* filtered similarity (issue 17): the natural-language and label queries again, each with
  a 30-day time range (``since``/``until`` as ISO dates) *and* one tag; every node carries
  0-3 of 60 tags (Zipf-like: the commonest is on ~8% of nodes) and a ``valid_from`` spread
  uniformly over the past 365 days. Every result is checked against the filter.

Wall-clock percentiles depend on what else the machine runs; the process CPU time of
each call is shown beside them (the machine this was written on has 2 shared cores).

The first similarity query that needs fuzzy label matching builds the in-memory trigram
index and saves it; its time is shown on its own row, not in the percentiles, as is the
time a new host (the next CLI process) takes to load the saved index.
"misspelled label hit@3" checks that the fuzzy ranker finds the intended node (or another
node named by the same identifier, e.g. the module segment ``worker``) in the top 3.

Targets (from the design notes, shared/notes/memory-anchors.md): similarity p95 <= 25 ms, traversal p95 <= 5 ms,
add-node p95 <= 10 ms at 100k nodes / 300k edges; filtered similarity (time range + tag) p95 <= 25 ms
(issue 17). The data is synthetic (no dev/held-out split: nothing is tuned on it).

Usage::

    python bench/memory_scale.py [--nodes 100000] [--edges 300000] [--queries 200] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opensage.host import Host  # noqa: E402
from opensage.plugins.graph_memory.episodes import record_episode  # noqa: E402
from opensage.plugins.graph_memory.graph import graph_for  # noqa: E402
from opensage.plugins.graph_memory.query import _label_keys, engine_for  # noqa: E402
from opensage.store import Workspace  # noqa: E402
from opensage.types import SessionEvent  # noqa: E402

SYLLABLES = ("ka", "lo", "mi", "ren", "tas", "vo", "qui", "bel", "dor", "fen", "gul", "hap", "jin", "lor", "mek",
             "nar", "pol", "rus", "sil", "tor", "ul", "ves", "wik", "zan", "ext", "ion", "ar", "est", "ing", "ple")
CODE_WORDS = ("auth", "service", "payment", "config", "parse", "user", "order", "cache", "client", "server",
              "handler", "manager", "token", "session", "request", "response", "router", "queue", "worker",
              "event", "store", "model", "view", "controller", "factory", "builder", "index", "logger", "metric",
              "invoice", "account", "ledger", "report", "schema", "plugin", "job", "task", "graph", "node", "edge")
NODE_TYPES = ("module", "class", "function", "method", "concept", "decision", "file")
EDGE_TYPES = ("calls", "imports", "uses", "depends_on", "contains", "mentions")


def make_vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words = set(CODE_WORDS)
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(words)


def zipf_picker(rng: random.Random, vocab: list[str]):
    import itertools

    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(vocab))))
    order = vocab[:]
    rng.shuffle(order)

    def pick(k: int) -> list[str]:
        return rng.choices(order, cum_weights=cum, k=k)

    return pick


def make_graph(rng: random.Random, n_nodes: int, n_edges: int):
    vocab = make_vocabulary(rng)
    pick = zipf_picker(rng, vocab)
    nodes, seen = [], set()
    while len(nodes) < n_nodes:
        parts = [rng.choice(CODE_WORDS if rng.random() < 0.5 else vocab) for _ in range(rng.randint(2, 3))]
        label = "".join(p.capitalize() for p in parts)
        kind = rng.choice(NODE_TYPES)
        if kind in ("method", "function"):
            label = f"{label}.{'_'.join(rng.choice(vocab) for _ in range(2))}"
        elif kind == "module":
            label = ".".join(p.lower() for p in parts)
        if (kind, label) in seen:
            label = f"{label}{len(nodes)}"
        seen.add((kind, label))
        content = " ".join(pick(rng.randint(8, 24)))
        nodes.append((kind, label, content, {"owner": rng.choice(CODE_WORDS)}))
    edges = set()
    while len(edges) < n_edges:
        s = rng.randrange(n_nodes)
        # mostly local links (modules of nearby ids), some long-range
        d = (s + rng.randint(1, 200)) % n_nodes if rng.random() < 0.7 else rng.randrange(n_nodes)
        if s != d:
            edges.add((s, d, rng.choice(EDGE_TYPES), round(rng.uniform(0.1, 1.0), 2)))
    return nodes, sorted(edges), vocab, pick


def misspell(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(("drop", "swap", "sub"))
    if op == "drop":
        return word[:i] + word[i + 1:]
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + rng.choice("aeiou") + word[i + 1:]


def snake(label: str) -> str:
    import re

    base = label.split(".")[0]
    return "_".join(p.lower() for p in re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", base))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="graph-memory scale benchmark")
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=300_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--db", default="", help="postgresql://... : run on the team store (issue 16) instead of SQLite;"
                    " each run writes under its own project key")
    args = ap.parse_args(argv)
    if args.db:
        import os

        os.environ["OPENSAGE_DATABASE_URL"] = args.db  # every Host below opens the team store
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    nodes, edges, vocab, pick = make_graph(rng, args.nodes, args.edges)
    gen_s = time.perf_counter() - t0
    rows: list[tuple[str, str]] = []
    summary: dict = {"nodes": args.nodes, "edges": args.edges, "queries": args.queries, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="memory-scale-") as tmp:
        host = Host(Workspace(Path(tmp)), load_entrypoints=False)
        try:
            graph = graph_for(host)
            t0 = time.perf_counter()
            tag_names = [f"tag{i:02d}" for i in range(60)]
            tag_weights = [1.0 / (i + 1) for i in range(60)]
            now = time.time()
            # tags and times come from their own generator, so the query sample below is the
            # one earlier versions of this bench drew (before filters existed) for the same seed
            trng = random.Random(args.seed + 1)
            node_tags = [sorted(set(trng.choices(tag_names, tag_weights, k=trng.randint(0, 3)))) for _ in nodes]
            node_times = [now - trng.uniform(0, 365) * 86400 for _ in nodes]
            ids = graph.bulk_load(nodes, edges, tags=node_tags, valid_from=node_times)
            load_s = time.perf_counter() - t0
            counts = graph.counts()
            rows.append(("bulk load (nodes+edges+FTS)", f"{load_s:.2f} s  ({counts['nodes']} nodes, {counts['edges']} edges)"))

            t0 = time.perf_counter()
            engine_for(host).labels._refresh()
            rows.append(("label index build + save (first fuzzy query)", f"{(time.perf_counter() - t0) * 1000:.0f} ms"))
            other = Host(Workspace(Path(tmp)), load_entrypoints=False)  # as the next CLI process would
            try:
                t0 = time.perf_counter()
                engine_for(other).labels._refresh()
                rows.append(("label index load in a new host (saved index)", f"{(time.perf_counter() - t0) * 1000:.0f} ms"))
            finally:
                other.close()

            queries: list[tuple[str, int | None]] = []
            for i in range(args.queries):
                k = i % 4
                n = rng.randrange(len(nodes))
                label = nodes[n][1]
                if k == 0:
                    queries.append((" ".join(pick(rng.randint(3, 5))), None))
                elif k == 1:
                    queries.append((label, ids[n]))
                elif k == 2:
                    base = label.split(".")[0]
                    queries.append((misspell(rng, base), ids[n]))
                else:
                    queries.append((snake(label), ids[n]))
            sim_ms: list[float] = []
            sim_cpu: list[float] = []
            by_kind: dict[int, list[float]] = {0: [], 1: [], 2: [], 3: []}
            fuzzy_hits = fuzzy_total = 0
            for i, (q, target) in enumerate(queries):
                t0, c0 = time.perf_counter(), time.process_time()
                res = host.run("memory-query", {"query": q, "maxResults": 10})
                ms = (time.perf_counter() - t0) * 1000
                sim_cpu.append((time.process_time() - c0) * 1000)
                sim_ms.append(ms)
                by_kind[i % 4].append(ms)
                if i % 4 == 2:  # found the node, or another node named by the same identifier
                    fuzzy_total += 1
                    wanted = _label_keys(nodes[target - ids[0]][1].split(".")[0])[0]
                    fuzzy_hits += int(any(r["id"] == f"n{target}" or wanted in _label_keys(r["label"])
                                          for r in res.data[:3]))
            rows.append(("similarity p50 / p95 (all)", f"{pct(sim_ms, 50):.1f} / {pct(sim_ms, 95):.1f} ms"
                         f"  (CPU {pct(sim_cpu, 50):.1f} / {pct(sim_cpu, 95):.1f} ms)"))
            names = ("natural language", "exact label", "misspelled label", "snake_case of CamelCase")
            for k, name in enumerate(names):
                rows.append((f"  {name} p50 / p95", f"{pct(by_kind[k], 50):.1f} / {pct(by_kind[k], 95):.1f} ms"))
            rows.append(("misspelled label hit@3", f"{fuzzy_hits}/{fuzzy_total}"))

            import datetime as _dt

            flt_ms: list[float] = []
            flt_cpu: list[float] = []
            flt_results = flt_bad = 0
            for i, (q, _t) in enumerate(queries):
                if i % 4 not in (0, 1):
                    continue
                start_day = rng.uniform(30, 365)
                since = now - start_day * 86400
                until = since + 30 * 86400
                tag = rng.choices(tag_names[:20], tag_weights[:20])[0]
                iso = lambda ts: _dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")  # noqa: E731
                t0, c0 = time.perf_counter(), time.process_time()
                res = host.run("memory-query", {"query": q, "maxResults": 10, "since": iso(since),
                                                "until": iso(until), "tags": [tag]})
                flt_ms.append((time.perf_counter() - t0) * 1000)
                flt_cpu.append((time.process_time() - c0) * 1000)
                for r in res.data:
                    n = int(r["id"][1:]) - ids[0]
                    flt_results += 1
                    flt_bad += int(not (tag in node_tags[n] and since - 1 <= node_times[n] <= until + 1))
            rows.append(("filtered similarity (30 days + tag) p50 / p95",
                         f"{pct(flt_ms, 50):.1f} / {pct(flt_ms, 95):.1f} ms  (CPU {pct(flt_cpu, 50):.1f} / "
                         f"{pct(flt_cpu, 95):.1f} ms; {flt_results} results, "
                         f"{flt_bad} outside the filter)"))
            summary["filtered_similarity_p95_ms"] = round(pct(flt_ms, 95), 2)
            summary["filtered_similarity_cpu_p95_ms"] = round(pct(flt_cpu, 95), 2)
            summary["filtered_results_outside_filter"] = flt_bad
            summary["similarity_p95_ms"] = round(pct(sim_ms, 95), 2)

            trav_ms: list[float] = []
            trav_cpu: list[float] = []
            reached: list[int] = []
            for _ in range(args.queries):
                start = f"n{rng.choice(ids)}"
                t0, c0 = time.perf_counter(), time.process_time()
                res = host.run("memory-query", {"mode": "traversal", "startNode": start, "depth": 3,
                                                "direction": "in", "maxResults": 10})
                trav_ms.append((time.perf_counter() - t0) * 1000)
                trav_cpu.append((time.process_time() - c0) * 1000)
                reached.append(len(res.data))
            rows.append(("traversal depth 3 in p50 / p95", f"{pct(trav_ms, 50):.2f} / {pct(trav_ms, 95):.2f} ms"
                         f"  (CPU {pct(trav_cpu, 50):.2f} / {pct(trav_cpu, 95):.2f} ms;"
                         f" mean {statistics.mean(reached):.1f} results shown)"))

            add_ms: list[float] = []
            add_cpu: list[float] = []
            for i in range(args.queries):
                t0, c0 = time.perf_counter(), time.process_time()
                host.run("memory-add-node", {"type": "concept", "label": f"BenchConcept{i}",
                                             "content": " ".join(pick(12))})
                add_ms.append((time.perf_counter() - t0) * 1000)
                add_cpu.append((time.process_time() - c0) * 1000)
            summary["add_node_p95_ms"] = round(pct(add_ms, 95), 2)
            rows.append(("single add-node p50 / p95", f"{pct(add_ms, 50):.2f} / {pct(add_ms, 95):.2f} ms"
                         f"  (CPU {pct(add_cpu, 50):.2f} / {pct(add_cpu, 95):.2f} ms)"))

            ep_ms: list[float] = []
            for i in range(args.queries):
                event = SessionEvent(kind="user_message", role="user", text=" ".join(pick(15)))
                t0 = time.perf_counter()
                record_episode(host.db, "bench-session", event)
                ep_ms.append((time.perf_counter() - t0) * 1000)
            rows.append(("record episode p50 / p95", f"{pct(ep_ms, 50):.2f} / {pct(ep_ms, 95):.2f} ms"))

            sim_after: list[float] = []
            for q, _ in queries[:40]:
                t0 = time.perf_counter()
                host.run("memory-query", {"query": q, "maxResults": 10})
                sim_after.append((time.perf_counter() - t0) * 1000)
            rows.append(("similarity p95 after writes (tail index)", f"{pct(sim_after, 95):.1f} ms"))
        finally:
            host.close()
    print(f"graph-memory scale benchmark: {args.nodes} nodes, {args.edges} edges, {args.queries} queries each,"
          f" seed {args.seed} (synthetic data generated in {gen_s:.1f} s)")
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    import json

    summary["store"] = "postgresql" if args.db else "sqlite"
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
