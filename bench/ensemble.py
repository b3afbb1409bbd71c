"""Wall time of a horizontal ensemble against a single agent, with a slow scripted model.

Every model call takes ``--delay`` seconds (default 1 s, the scripted provider sleeps
asynchronously, or in a worker thread for synchronous calls). One agent = one
generation call + one tool call (``read``) + one final answer = 3 calls. The single run
is a one-step chain (agent generated, scratch copy, run, changes applied); the ensemble
runs ``--members`` agents (default 4) with different strategies in parallel, each in its
own scratch copy, merged by ``majority_vote``. One untimed warm-up run goes first
(litellm's first call pays one-off set-up costs). Target (issue 5): ensemble wall time
≤ 1.5 × the single agent's.

    python bench/ensemble.py [--members 4] [--delay 1.0] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys._called_from_test = True  # no third-party entry-point plugins in a benchmark


def responder(delay: float):
    """Scripted answers decided from the request: agent spec, read call, final answer."""

    def answer(messages, tools):
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        if tools:
            if not any(m["role"] == "tool" for m in messages):
                return {"tool_calls": [{"name": "read", "arguments": {"path": "calc.py"}}], "delay_s": delay}
            return {"content": "parse_age converts text to int", "delay_s": delay}
        if system.startswith("You design one specialised coding agent"):
            tag = user.split("Approach to take: ")[1].split("\n")[0] if "Approach to take: " in user else "single"
            name = "reader-" + "".join(c if c.isalnum() else "-" for c in tag.lower()).strip("-")[:40]
            spec = {"name": name, "description": f"Reads code and answers ({tag}).",
                    "prompt": "You read the code that the task names and answer in one sentence, no edits.",
                    "tools": {"read": "allow", "list": "allow"}, "steps": 5}
            return {"content": json.dumps(spec), "delay_s": delay}
        if system.startswith("You are the memory agent"):
            return {"content": json.dumps({"items": [], "relations": []}), "delay_s": delay}
        raise AssertionError(f"unexpected request: {system[:120]!r}")

    return answer


async def one_single(host, task):
    from opensage.plugins.agents.topology import vertical

    return await vertical(host, task, [task], replan=False)


async def one_ensemble(host, task, members):
    from opensage.plugins.agents.topology import horizontal

    strategies = [f"strategy {i}" for i in range(1, members + 1)]
    return await horizontal(host, task, strategies, "majority_vote")


def fresh_host(tmp: Path):
    from opensage.host import Host
    from opensage.store import Workspace

    root = Path(tempfile.mkdtemp(dir=tmp))
    (root / "calc.py").write_text("def parse_age(text):\n    return int(text)\n")
    (root / "README.md").write_text("# calc\n")
    return Host(Workspace(root))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds per model call")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ["OPENSAGE_MODEL"] = "scripted/bench"
    from opensage import testing

    script = testing.install([], default=responder(args.delay))
    task = "What does parse_age in calc.py do?"
    singles, ensembles, calls = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = fresh_host(Path(tmp))  # first litellm calls pay one-off set-up costs; not timed
        asyncio.run(one_single(warm, task))
        warm.close()
        for _ in range(args.runs):
            host = fresh_host(Path(tmp))
            n0 = len(script.requests)
            t0 = time.perf_counter()
            report = asyncio.run(one_single(host, task))
            singles.append(time.perf_counter() - t0)
            calls["single"] = len(script.requests) - n0
            assert report.success, report.text()
            host.close()

            host = fresh_host(Path(tmp))
            n0 = len(script.requests)
            t0 = time.perf_counter()
            report = asyncio.run(one_ensemble(host, task, args.members))
            ensembles.append(time.perf_counter() - t0)
            calls["ensemble"] = len(script.requests) - n0
            assert report.success and all(m.result.success for m in report.members), report.text()
            host.close()
    single, ensemble = statistics.median(singles), statistics.median(ensembles)
    ratio = ensemble / single
    print(f"{'run':<22} {'model calls':>11} {'median wall s':>14} {'min s':>7} {'max s':>7}")
    print(f"{'single agent':<22} {calls['single']:>11} {single:>14.2f} {min(singles):>7.2f} {max(singles):>7.2f}")
    print(f"{f'{args.members}-way ensemble':<22} {calls['ensemble']:>11} {ensemble:>14.2f} "
          f"{min(ensembles):>7.2f} {max(ensembles):>7.2f}")
    print(f"ratio ensemble/single: {ratio:.2f} (target <= 1.5; delay {args.delay:g} s per call, {args.runs} runs)")
    sys.exit(0 if ratio <= 1.5 else 1)


if __name__ == "__main__":
    main()
