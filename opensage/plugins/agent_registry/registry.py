"""The agent registry: every agent run, and which agent to use for the next task.

Every run is recorded in ``.opencode/agent-metrics.json`` in the seed's shape
(``{"agents": [AgentMetrics], "tasks": [TaskRecord]}``, the field names of the
Tachikoma ``AgentRegistry``), with our additions:

* ``agents[]``: ``name, taskType, successCount, failureCount, totalCost, avgLatency,
  lastUsed`` (seed) + ``totalTokens, totalLatency`` (ours). Unlike the seed,
  ``avgLatency`` averages *every* run, failures included, so an agent that only
  fails does not look fast.
* ``tasks[]``: ``taskId, agentName, taskType, timestamp (ms), duration (ms), cost
  (USD), success, context`` (seed) + ``task`` (the task text) and ``tokens`` (ours).
  Each run is stored once (the seed stored failures twice). The list keeps the
  newest :data:`MAX_TASKS` records; the per-agent totals in ``agents[]`` keep counting.

Writes are a read-modify-write of the whole file under a :class:`filelock.FileLock`
(``agent-metrics.json.lock``) and an atomic replace, so two processes recording at once
lose nothing and a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from opensage.errors import ConfigError, UsageError
from opensage.store import Workspace, atomic_write_json
from opensage.types._agents import TASK_TYPES

__all__ = [
    "TASK_TYPES",
    "MAX_TASKS",
    "Z_ONE_SIDED_95",
    "PRIOR_RUNS",
    "EXPLORE_Z",
    "wilson_upper_bound",
    "AgentRegistry",
    "Ranking",
    "classify_task",
    "wilson_lower_bound",
]

#: Task records kept in the file (newest first out). 10,000 records are about 3 MB of
#: JSON; scoring a recommendation against all of them with rapidfuzz takes ~10 ms.
MAX_TASKS = 10_000

#: z for a one-sided 95 % bound (the 95th percentile of the standard normal).
Z_ONE_SIDED_95 = 1.6448536269514722

#: Weight of the prior in the exploring score of :meth:`AgentRegistry.rank`, in runs:
#: one run, so one real run of this type already counts as much as everything the
#: agent did elsewhere. In bench/registry.py a heavier prior (2 or 4 runs) lowered
#: regret a little further when agents have a general skill, but raised it 30-60 %
#: above the seed rule's when per-type rates are unrelated; with 1 run regret was 29 %
#: lower than the seed rule's in the first world and within 5 % of it in the second.
PRIOR_RUNS = 1.0

#: z of the exploring (upper) bound: one standard error. In bench/registry.py z = 1.5
#: had more regret than z = 1 in both simulated worlds, z = 0.5 less in one and more in
#: the other.
EXPLORE_Z = 1.0

_SCHEMA = "opensage-agent-metrics/1"


# -- task classification (the model-free fallback) -----------------------------------------
#: Word stems that name each kind of task. A task's words are matched by prefix
#: ("refactoring" matches "refactor"). See :func:`classify_task`.
_TYPE_STEMS: dict[str, tuple[str, ...]] = {
    "fix": ("fix", "bug", "crash", "broken", "repair", "regression", "exception", "traceback",
            "fail", "error", "wrong", "incorrect", "hotfix", "patch"),
    "test": ("test", "pytest", "unittest", "coverage", "spec", "assert", "e2e"),
    "refactor": ("refactor", "rename", "restructur", "simplif", "cleanup", "clean", "extract",
                 "reorganiz", "reorganis", "deduplicat", "modulariz", "decouple", "tidy", "migrat"),
    "document": ("document", "docs", "doc", "readme", "docstring", "changelog", "comment",
                 "tutorial", "guide", "annotate"),
    "analyze": ("analy", "review", "audit", "profil", "investigat", "inspect", "diagnos",
                "explain", "understand", "measure", "benchmark", "why", "trace"),
    "research": ("research", "compar", "evaluat", "survey", "explor", "alternativ", "option",
                 "which", "choose", "recommend", "look", "find"),
    "implement": ("implement", "develop", "introduc", "feature", "integrat"),
}
#: Verbs that open every kind of work ("add tests", "write docs", "create a benchmark"):
#: they count for ``implement`` at a third of the weight. See :func:`classify_task`.
_GENERIC_STEMS = ("add", "creat", "build", "make", "write", "support", "new", "generat")
_WORD = re.compile(r"[a-z]+")


def classify_task(text: str) -> str:
    """The task type of ``text`` without a model: one of :data:`TASK_TYPES`.

    How it works: the text is lower-cased and split into words; each word that starts
    with one of a type's stems (``_TYPE_STEMS``) adds ``1 / (1 + i)`` to that type, ``i``
    being the word's position. Earlier words weigh more because a task is usually an
    instruction whose first verb names the kind of work ("Fix the flaky login test" is
    a fix, "Write tests for the parser" a test). Generic verbs (``_GENERIC_STEMS``: add,
    create, write...) open every kind of work, so they count for ``implement`` at a third
    of the weight: "Add unit tests" ties "add" (1/3 at position 0) with "tests" (1/3 at
    position 2), and a tie goes to the type listed first in ``_TYPE_STEMS`` (most
    specific first, ``implement`` last). Text with no matching word is ``implement``, the most common
    kind of coding task. Use the coordinator's model-based analysis when a model is
    configured; this is the fallback.
    """
    words = _WORD.findall((text or "").lower())
    scores: dict[str, float] = {}
    for i, word in enumerate(words):
        for task_type, stems in _TYPE_STEMS.items():
            if any(word.startswith(stem) for stem in stems):
                scores[task_type] = scores.get(task_type, 0.0) + 1.0 / (1 + i)
        if any(word.startswith(stem) for stem in _GENERIC_STEMS):
            scores["implement"] = scores.get("implement", 0.0) + 1.0 / (3 * (1 + i))
    if not scores:
        return "implement"
    order = list(_TYPE_STEMS)
    return max(scores, key=lambda t: (round(scores[t], 9), -order.index(t)))


# -- the confidence bound ------------------------------------------------------------------
def wilson_lower_bound(successes: float, trials: float, z: float = Z_ONE_SIDED_95) -> float:
    """Lower end of the Wilson score interval for a success rate (0.0 when ``trials`` is 0).

    ``(p + z²/2n − z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = successes/trials``
    — E. B. Wilson, "Probable inference, the law of succession, and statistical
    inference", JASA 22 (1927); recommended over the normal approximation for small n by
    Agresti & Coull, "Approximate is better than 'exact'…", The American Statistician 52
    (1998). Weighted (fractional) counts are accepted. With the default ``z`` (one-sided
    95 %) one success in one trial gives 0.27, not 100 %; 8 of 10 gives 0.55.
    """
    if trials <= 0:
        return 0.0
    p = min(max(successes / trials, 0.0), 1.0)
    z2 = z * z
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, (centre - spread) / (1 + z2 / trials))


def wilson_upper_bound(successes: float, trials: float, z: float = Z_ONE_SIDED_95) -> float:
    """Upper end of the Wilson score interval (1.0 when ``trials`` is 0); see :func:`wilson_lower_bound`."""
    if trials <= 0:
        return 1.0
    return 1.0 - wilson_lower_bound(trials - successes, trials, z)


@dataclass
class Ranking:
    """One candidate's evidence for a task, as :meth:`AgentRegistry.rank` scores it.

    :param successes: weighted successes (each past run weighs its relevance, 0–1).
    :param trials: weighted runs.
    :param runs: unweighted runs of this task type.
    :param score: the ranking score (see :meth:`AgentRegistry.rank`).
    :param lower_bound: Wilson lower bound of ``successes / trials`` (one-sided 95 %).
    :param prior_mean: the prior success rate from the agent's other task types.
    :param avg_cost_usd: mean cost per run of this type (USD).
    :param avg_latency_ms: mean latency per run of this type (ms).
    :param eligible: False when the agent has no success on relevant tasks (it never ranks first).
    """

    agent: str
    successes: float
    trials: float
    runs: int
    score: float
    lower_bound: float
    prior_mean: float
    avg_cost_usd: float
    avg_latency_ms: float
    eligible: bool

    def as_dict(self) -> dict[str, Any]:
        """The ranking as a plain dict (field names as declared, snake_case)."""
        return asdict(self)


def _empty() -> dict[str, Any]:
    return {"schema": _SCHEMA, "agents": [], "tasks": []}


class AgentRegistry:
    """Runs of agents and recommendations drawn from them.

    :param workspace: the project (a :class:`~opensage.store.Workspace` or its root
        path); the registry lives in its ``.opencode/agent-metrics.json``.
    :param path: another metrics file (instead of ``workspace``).
    :param max_tasks: task records kept (default :data:`MAX_TASKS`).

    With neither ``workspace`` nor ``path`` the registry lives in memory only
    (benchmarks and simulations).
    """

    def __init__(
        self,
        workspace: Workspace | Path | str | None = None,
        *,
        path: Path | str | None = None,
        max_tasks: int = MAX_TASKS,
    ) -> None:
        if path is None and workspace is not None:
            ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
            path = ws.metrics_path
        self.path = Path(path) if path is not None else None
        self.max_tasks = max_tasks
        self._memory = _empty() if self.path is None else None
        self._cache: tuple[tuple[int, int], dict[str, Any]] | None = None

    # -- storage -----------------------------------------------------------------------------
    def _lock(self):
        from filelock import FileLock

        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=60)

    def _read(self) -> dict[str, Any]:
        if self._memory is not None:
            return self._memory
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return _empty()
        key = (st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(
                f"{self.path} is not valid JSON ({exc}); fix it or move it away to start a new registry."
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("agents", []), list) \
                or not isinstance(data.get("tasks", []), list):
            raise ConfigError(
                f"{self.path} must be an object with 'agents' and 'tasks' lists (the agent-metrics "
                "format); fix it or move it away to start a new registry."
            )
        data.setdefault("agents", [])
        data.setdefault("tasks", [])
        self._cache = (key, data)
        return data

    # -- writing -----------------------------------------------------------------------------
    def record(
        self,
        agent: str,
        task: str = "",
        task_type: str | None = None,
        success: bool = False,
        cost_usd: float = 0.0,
        tokens: int = 0,
        latency_ms: float = 0.0,
        *,
        task_id: str | None = None,
        context: dict[str, Any] | None = None,
        timestamp_ms: float | None = None,
    ) -> dict[str, Any]:
        """Record one run of ``agent`` and return the stored task record.

        :param agent: the agent's name (1–64 characters).
        :param task: the task text (kept for similarity to later tasks).
        :param task_type: one of :data:`TASK_TYPES`; None classifies ``task`` with
            :func:`classify_task`.
        :param success: whether the run achieved the task.
        :param cost_usd: model cost of the run in USD (≥ 0).
        :param tokens: prompt + completion tokens (≥ 0).
        :param latency_ms: wall time of the run in milliseconds (≥ 0).
        :param context: extra JSON-able facts (e.g. ``{"error": "..."}``).
        :raises UsageError: a bad value (nothing is written).
        """
        record = self._make_record(agent, task, task_type, success, cost_usd, tokens, latency_ms,
                                   task_id, context, timestamp_ms)
        if self._memory is not None:
            self._apply(self._memory, [record])
            return record
        with self._lock():
            data = self._read_fresh()
            self._apply(data, [record])
            atomic_write_json(self.path, data)
            self._cache = None
        return record

    def record_many(self, runs: Iterable[dict[str, Any]]) -> int:
        """Record several runs (dicts with :meth:`record`'s arguments) in one locked write."""
        records = [
            self._make_record(r["agent"], r.get("task", ""), r.get("task_type"), r.get("success", False),
                              r.get("cost_usd", 0.0), r.get("tokens", 0), r.get("latency_ms", 0.0),
                              r.get("task_id"), r.get("context"), r.get("timestamp_ms"))
            for r in runs
        ]
        if self._memory is not None:
            self._apply(self._memory, records)
            return len(records)
        with self._lock():
            data = self._read_fresh()
            self._apply(data, records)
            atomic_write_json(self.path, data)
            self._cache = None
        return len(records)

    def _read_fresh(self) -> dict[str, Any]:
        self._cache = None
        data = self._read()
        return {"schema": _SCHEMA, **data, "agents": list(data["agents"]), "tasks": list(data["tasks"])}

    @staticmethod
    def _make_record(agent, task, task_type, success, cost_usd, tokens, latency_ms, task_id, context,
                     timestamp_ms) -> dict[str, Any]:
        if not isinstance(agent, str) or not agent.strip() or len(agent) > 64:
            raise UsageError(f"agent {agent!r} is not a valid agent name: use 1-64 characters, e.g. 'csv-fixer'.")
        if task_type is None:
            task_type = classify_task(task)
        if task_type not in TASK_TYPES:
            raise UsageError(f"task_type {task_type!r} is unknown; use one of: {', '.join(TASK_TYPES)}.")
        for label, value in (("cost_usd", cost_usd), ("tokens", tokens), ("latency_ms", latency_ms)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or value != value:
                raise UsageError(f"{label} must be a number >= 0, got {value!r}.")
        if context is not None:
            try:
                json.dumps(context)
            except (TypeError, ValueError):
                raise UsageError("context must be JSON-serialisable (a dict of strings, numbers, lists).") from None
        record: dict[str, Any] = {
            "taskId": task_id or f"task_{uuid.uuid4().hex[:12]}",
            "agentName": agent,
            "taskType": task_type,
            "timestamp": float(timestamp_ms if timestamp_ms is not None else time.time() * 1000),
            "duration": float(latency_ms),
            "cost": float(cost_usd),
            "success": bool(success),
            "task": task or "",
            "tokens": int(tokens),
        }
        if context:
            record["context"] = context
        return record

    def _apply(self, data: dict[str, Any], records: list[dict[str, Any]]) -> None:
        index = {(a["name"], a["taskType"]): a for a in data["agents"]}
        for rec in records:
            key = (rec["agentName"], rec["taskType"])
            agg = index.get(key)
            if agg is None:
                agg = {"name": key[0], "taskType": key[1], "successCount": 0, "failureCount": 0,
                       "totalCost": 0.0, "avgLatency": 0.0, "lastUsed": "", "totalTokens": 0,
                       "totalLatency": 0.0}
                data["agents"].append(agg)
                index[key] = agg
            else:
                agg.setdefault("totalTokens", 0)
                agg.setdefault("totalLatency", agg.get("avgLatency", 0.0) * (agg["successCount"] + agg["failureCount"]))
            agg["successCount" if rec["success"] else "failureCount"] += 1
            agg["totalCost"] += rec["cost"]
            agg["totalTokens"] += rec["tokens"]
            agg["totalLatency"] += rec["duration"]
            agg["avgLatency"] = agg["totalLatency"] / (agg["successCount"] + agg["failureCount"])
            agg["lastUsed"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rec["timestamp"] / 1000)) + "Z"
            data["tasks"].append(rec)
        if len(data["tasks"]) > self.max_tasks:
            del data["tasks"][: len(data["tasks"]) - self.max_tasks]

    # -- reading -----------------------------------------------------------------------------
    def agents(self) -> list[str]:
        """Names of every agent with at least one recorded run, sorted."""
        return sorted({a["name"] for a in self._read()["agents"]})

    def stats(self, agent: str | None = None, task_type: str | None = None) -> list[dict[str, Any]]:
        """Per (agent, task type) totals, seed fields plus derived ones, best first.

        Each row: ``name, taskType, successCount, failureCount, totalCost (USD), avgLatency (ms),
        lastUsed (ISO 8601), totalTokens`` and ``totalTasks, successRate, avgCost (USD per run),
        lowerBound`` (the Wilson lower bound of the success rate, see :func:`wilson_lower_bound`).
        """
        rows = []
        for a in self._read()["agents"]:
            if agent is not None and a["name"] != agent:
                continue
            if task_type is not None and a["taskType"] != task_type:
                continue
            n = a["successCount"] + a["failureCount"]
            rows.append({
                **a,
                "totalTasks": n,
                "successRate": a["successCount"] / n if n else 0.0,
                "avgCost": a["totalCost"] / n if n else 0.0,
                "lowerBound": wilson_lower_bound(a["successCount"], n),
            })
        rows.sort(key=lambda r: (r["taskType"], -r["lowerBound"], r["avgCost"], r["avgLatency"], r["name"]))
        return rows

    def get_task_history(
        self,
        agent: str | None = None,
        task_type: str | None = None,
        limit: int | None = 10,
        success: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded runs, newest first, filtered by agent, task type and outcome.

        :param limit: at most this many records (None: all kept records).
        """
        out = []
        for rec in reversed(self._read()["tasks"]):
            if agent is not None and rec.get("agentName") != agent:
                continue
            if task_type is not None and rec.get("taskType") != task_type:
                continue
            if success is not None and bool(rec.get("success")) != success:
                continue
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- recommending ------------------------------------------------------------------------
    def rank(
        self,
        task: str,
        task_type: str | None = None,
        candidates: Iterable[str] | None = None,
        explore: bool = True,
    ) -> list[Ranking]:
        """Score every candidate for ``task``, best first.

        Evidence (both modes):

        1. ``task_type`` defaults to :func:`classify_task` of ``task``.
        2. Each kept run of the candidate on this task type counts with weight
           ``(1 + sim) / 2``, ``sim`` being rapidfuzz's ``token_set_ratio`` of the two task
           texts / 100 (1.0 when either text is empty): a run of the same type always counts
           at least half, a near-identical task fully. ``s`` = weighted successes, ``n`` =
           weighted runs.
        3. Agents with no weighted success on this type are not eligible and rank after
           every eligible one: an agent that has only failed never ranks first.
        4. Equal scores go to the lower mean cost per run (USD), then the lower mean
           latency (ms).

        Score with ``explore=False`` — "which agent is proven best": the Wilson lower
        bound of ``s / n`` (:func:`wilson_lower_bound`, one-sided 95 %; Wilson 1927,
        Agresti & Coull 1998). One success in one run scores 0.27, 45 of 50 scores 0.82.

        Score with ``explore=True`` (the default; what a coordinator picking agents run
        after run should use) — "which agent should run now": an upper confidence bound
        (optimism in the face of uncertainty: Auer, Cesa-Bianchi & Fischer, "Finite-time
        analysis of the multiarmed bandit problem", Machine Learning 47, 2002) computed as
        the Wilson upper bound at ``z =`` :data:`EXPLORE_Z` on the evidence plus a prior
        worth :data:`PRIOR_RUNS` run(s): ``(s + PRIOR_RUNS·m) / (n + PRIOR_RUNS)``, where
        ``m`` is the agent's success rate on the *other* task types (shrunk towards the
        whole registry's rate, plus this type's offset; see ``_Priors``). A 1/1 agent is
        not taken as 100 %: its bound is pulled towards its record elsewhere, and it
        falls with every run that does not confirm it. Ranking by the lower bound alone
        explores too little — an agent with few runs can never overtake one with many; in
        ``bench/registry.py`` that policy had about 2.7 times the seed rule's regret.

        :param candidates: agent names to consider (default: every agent with runs).
        :param explore: optimistic (True) or conservative (False) score, as above.
        :raises UsageError: unknown ``task_type``.
        """
        task_type = task_type or classify_task(task)
        if task_type not in TASK_TYPES:
            raise UsageError(f"task_type {task_type!r} is unknown; use one of: {', '.join(TASK_TYPES)}.")
        data = self._read()
        names = sorted(set(candidates)) if candidates is not None else sorted({a["name"] for a in data["agents"]})
        wanted = set(names)
        prior = _Priors(data["agents"], task_type)
        runs = [r for r in data["tasks"] if r.get("taskType") == task_type and r.get("agentName") in wanted]
        weights = _similarity_weights(task, [r.get("task", "") for r in runs])
        ev: dict[str, list[float]] = {n: [0.0, 0.0, 0, 0.0, 0.0] for n in names}
        for rec, w in zip(runs, weights):
            e = ev[rec["agentName"]]
            e[0] += w * bool(rec.get("success"))
            e[1] += w
            e[2] += 1
            e[3] += float(rec.get("cost", 0.0))
            e[4] += float(rec.get("duration", 0.0))
        out = []
        for name in names:
            s, n, k, cost, lat = ev[name]
            m = prior.mean(name)
            lower = wilson_lower_bound(s, n)
            score = wilson_upper_bound(s + PRIOR_RUNS * m, n + PRIOR_RUNS, EXPLORE_Z) if explore else lower
            out.append(Ranking(
                agent=name, successes=s, trials=n, runs=k, score=score, lower_bound=lower, prior_mean=m,
                avg_cost_usd=cost / k if k else 0.0, avg_latency_ms=lat / k if k else 0.0,
                eligible=s > 0,
            ))
        out.sort(key=lambda r: (not r.eligible, -round(r.score, 12), r.avg_cost_usd, r.avg_latency_ms, r.agent))
        return out

    def recommend_agent(
        self,
        task: str,
        task_type: str | None = None,
        candidates: Iterable[str] | None = None,
        explore: bool = True,
    ) -> str | None:
        """The agent to use for ``task``, or None when no candidate has succeeded at such a task.

        The first of :meth:`rank`: similarity-weighted runs of this task type; with
        ``explore=True`` (default) an upper confidence bound on a prior from the agent's
        other task types (Auer et al. 2002, Wilson 1927), with ``explore=False`` the Wilson
        lower bound; then cost, then latency. An agent that has only failed is never
        chosen. None tells the caller to generate a new agent.

        :param task: the task text.
        :param task_type: one of :data:`TASK_TYPES` (from the coordinator's analysis);
            None classifies ``task`` with :func:`classify_task`.
        :param candidates: restrict to these agent names.
        :param explore: see :meth:`rank`.
        :raises UsageError: unknown ``task_type``.
        :raises ConfigError: the metrics file is corrupt.
        """
        ranked = self.rank(task, task_type, candidates, explore=explore)
        if ranked and ranked[0].eligible:
            return ranked[0].agent
        return None


class _Priors:
    """Prior means for :meth:`AgentRegistry.rank` from the per-(agent, type) totals.

    overall = (S + 1) / (N + 2) over every run (Laplace's rule of succession);
    type    = (S_t + PRIOR_RUNS·overall) / (N_t + PRIOR_RUNS);
    agent   = (S_a + PRIOR_RUNS·overall) / (N_a + PRIOR_RUNS) over the agent's runs of *other* types;
    mean(a) = agent + (type − overall), kept in [0.02, 0.98].
    """

    def __init__(self, agents: list[dict[str, Any]], task_type: str) -> None:
        total_s = total_n = type_s = type_n = 0
        self._agent: dict[str, list[int]] = {}
        for a in agents:
            s, f = int(a.get("successCount", 0)), int(a.get("failureCount", 0))
            total_s += s
            total_n += s + f
            if a.get("taskType") == task_type:
                type_s += s
                type_n += s + f
                continue  # the agent's own runs of this type are the evidence, not the prior
            acc = self._agent.setdefault(a.get("name", ""), [0, 0])
            acc[0] += s
            acc[1] += s + f
        self.overall = (total_s + 1) / (total_n + 2)
        self.type_rate = (type_s + PRIOR_RUNS * self.overall) / (type_n + PRIOR_RUNS)

    def mean(self, agent: str) -> float:
        s, n = self._agent.get(agent, (0, 0))
        agent_rate = (s + PRIOR_RUNS * self.overall) / (n + PRIOR_RUNS)
        return min(0.98, max(0.02, agent_rate + (self.type_rate - self.overall)))


def _similarity_weights(task: str, texts: list[str]) -> list[float]:
    """``(1 + token_set_ratio/100) / 2`` for each past text (1.0 when either text is empty)."""
    if not texts:
        return []
    if not task.strip():
        return [1.0] * len(texts)
    from rapidfuzz import fuzz, process, utils

    scores = process.cdist([task], texts, scorer=fuzz.token_set_ratio, processor=utils.default_process,
                           dtype="float32")[0]
    return [1.0 if not t.strip() else (1.0 + float(sc) / 100.0) / 2.0 for t, sc in zip(texts, scores)]
