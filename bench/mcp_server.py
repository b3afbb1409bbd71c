"""Latency and memory of ``opensage mcp`` under sequential calls from the official client.

    python bench/mcp_server.py [--calls 1000] [--nodes 2000]

Spawns ``python -m opensage --workspace TMP mcp``, seeds ``--nodes`` nodes, then makes
``--calls`` sequential calls cycling through four kinds (memory-add-node, search_nodes,
memory-query, an invalid call that returns an error result). Prints per-kind latency
(p50/p95 ms, client-measured round trip) and the server's RSS (MB, psutil) at call
100 and at the last call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import psutil
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def bench(calls: int, nodes: int) -> None:
    project = Path(tempfile.mkdtemp(prefix="opensage-mcp-bench-"))
    params = StdioServerParameters(command=sys.executable, args=["-m", "opensage", "--workspace", str(project), "mcp"])
    timings: dict[str, list[float]] = {"memory-add-node": [], "search_nodes": [], "memory-query": [], "error result": []}
    rss: dict[int, float] = {}
    started = time.perf_counter()
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            server = next(p for p in psutil.Process().children(recursive=True) if "mcp" in p.cmdline())
            for i in range(nodes):
                await s.call_tool("memory-add-node", {"type": "concept", "label": f"Seed{i}",
                                                      "content": f"seed node {i} about module_{i % 97}"})
            for i in range(1, calls + 1):
                kind = list(timings)[i % 4]
                args = {
                    "memory-add-node": {"type": "concept", "label": f"Concept{i % 200}", "content": f"note {i}"},
                    "search_nodes": {"query": f"module_{i % 97}"},
                    "memory-query": {"query": f"module_{i % 97} seed"},
                    "error result": {"type": "concept"},
                }[kind]
                name = "memory-add-node" if kind == "error result" else kind
                t0 = time.perf_counter()
                result = await s.call_tool(name, args)
                timings[kind].append((time.perf_counter() - t0) * 1000)
                assert result.is_error == (kind == "error result"), result
                if i in (100, calls):
                    rss[i] = server.memory_info().rss / 2**20
    total = time.perf_counter() - started
    print(f"opensage mcp: {calls} sequential calls after seeding {nodes} nodes ({total:.1f} s in all)\n")
    print(f"{'call':<18}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for kind, values in timings.items():
        print(f"{kind:<18}{len(values):>6}{pct(values, 0.5):>10.1f}{pct(values, 0.95):>10.1f}{statistics.mean(values):>10.1f}")
    print(f"\nserver RSS: {rss[100]:.1f} MB at call 100, {rss[calls]:.1f} MB at call {calls} "
          f"(growth {rss[calls] - rss[100]:+.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=2000)
    args = parser.parse_args()
    if args.calls < 100:
        parser.error("--calls must be at least 100")
    anyio.run(bench, args.calls, args.nodes)


if __name__ == "__main__":
    main()
