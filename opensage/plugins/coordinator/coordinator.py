"""The coordinator: analyse a task, choose a topology, run it, integrate and record it.

1. **Analyse** — one structured model call returns a :class:`TaskAnalysis`: complexity,
   task type, separable steps, alternatives worth exploring and a verifier command.
   (The reference plugin used keyword lists for this; here the model reads the task and
   the project's file list.)
2. **Choose** — :func:`choose_plan` applies three stated rules (see its docstring) and
   writes the reason into the plan.
3. **Execute** — single agent, vertical chain or horizontal ensemble
   (the agents plugin, asked through the ``run_topology`` hook); every agent works in a scratch copy and
   its changes reach the workspace only when it succeeds.
4. **Record** — each agent run goes to the registry (``agent-metrics.json``), and the run
   to graph memory: ``task``, ``plan``, ``agent``, ``outcome`` and ``file`` nodes joined by
   ``planned_as``, ``uses``, ``produced``, ``contributed_to`` and ``touches`` edges.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, Field, field_validator

from opensage.camel import camel, camel_dict
from opensage.errors import UsageError
from opensage.ignore import walk as walk_project
from opensage.store import new_run_id
from opensage.types import MERGE_STRATEGIES, AgentResult

if TYPE_CHECKING:
    from opensage.host import Host, Session

__all__ = ["TaskAnalysis", "Plan", "RunReport", "analyse", "choose_plan", "execute", "coordinate",
           "record_run", "TOPOLOGIES"]

TOPOLOGIES = ("single", "vertical", "horizontal")
#: Project files listed to the model during analysis (so it can name real files).
ANALYSIS_FILE_LIMIT = 80


def _task_types() -> tuple[str, ...]:
    from opensage.types import TASK_TYPES

    return tuple(TASK_TYPES)


def _classify(host: "Host", task: str) -> str:
    """The model-free task type of ``task``, from the ``classify_task`` hook (the agent registry)."""
    return host.classify_task(task)


class TaskAnalysis(BaseModel):
    """The model's analysis of a task (the input of :func:`choose_plan`)."""

    complexity: Literal["low", "medium", "high"] = Field(
        description="low: one focused change; medium: several related changes; high: a multi-part feature")
    task_type: str = Field(description="the kind of work, one of the task types listed in the instructions")
    steps: list[str] = Field(default_factory=list, max_length=8, description=(
        "ordered steps that need different expertise or must happen one after another, each a "
        "self-contained instruction; [] when the task is one piece of work"))
    alternatives: list[str] = Field(default_factory=list, max_length=5, description=(
        "genuinely different approaches worth trying in parallel; [] when one approach is obvious"))
    verifier: str | None = Field(None, description=(
        "a shell command that exits 0 when the task is done, e.g. 'python -m pytest -q'; null if none"))
    reasoning: str = Field("", description="two sentences at most")

    model_config = {"defer_build": True}

    @field_validator("steps", "alternatives")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        return [s.strip() for s in v if s and s.strip()]


@camel
@dataclass
class Plan:
    """What the coordinator will do and why."""

    task: str
    topology: str
    reason: str
    task_type: str
    analysis: TaskAnalysis
    steps: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    merge_strategy: str | None = None
    verifier: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field under its camelCase name, plus the analysis's ``complexity``."""
        return {**camel_dict(self, exclude={"analysis"}), "complexity": self.analysis.complexity,
                "analysis": self.analysis.model_dump()}

    def text(self) -> str:
        """The plan as a few terminal lines: topology and why, task type and complexity, then
        the steps or strategies and the merge strategy.
        """
        lines = [f"plan: {self.topology} — {self.reason}",
                 f"task type: {self.task_type}; complexity: {self.analysis.complexity}"]
        for i, s in enumerate(self.steps, 1):
            lines.append(f"  step {i}: {s}")
        for i, s in enumerate(self.strategies, 1):
            lines.append(f"  strategy {i}: {s}")
        if self.merge_strategy:
            lines.append(f"  merge: {self.merge_strategy}" + (f" (verifier: {self.verifier})" if self.verifier else ""))
        return "\n".join(lines)


@camel
@dataclass
class RunReport:
    """The outcome of :func:`coordinate`."""

    run_id: str
    plan: Plan
    success: bool
    output: str = ""
    files_changed: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    results: list[AgentResult] = field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    error: str | None = None
    failed_step: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, str] = field(default_factory=dict)
    executed: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Every field under its camelCase name; ``plan`` as :meth:`Plan.as_dict`."""
        return {**camel_dict(self, exclude={"plan"}), "plan": self.plan.as_dict()}


def _project_files(root) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in walk_project(root, hidden=False):
        for name in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
            if len(out) >= ANALYSIS_FILE_LIMIT:
                return out
    return out


async def analyse(host: "Host", task: str, model: str | None = None,
                  on_retry: Callable[[dict], None] | None = None) -> tuple[TaskAnalysis, Any]:
    """One structured model call: the :class:`TaskAnalysis` of ``task`` and its usage.

    :param on_retry: progress callback for provider retries (see :func:`opensage.llm.complete`).

    An unknown ``task_type`` is replaced by the registry's own classification.
    :raises ModelNotConfigured: no model. :raises ModelError: no valid analysis after retries.
    """
    from opensage import llm

    types = _task_types()
    files = await asyncio.to_thread(_project_files, host.workspace.root)
    system = (
        "You are the coordinator of a team of generated coding agents. Analyse the task before any work "
        "starts: how complex it is, what kind of work it is, whether it splits into ordered steps that "
        "different specialists should do one after another, and whether several genuinely different "
        "approaches are worth trying in parallel. Be conservative: most small changes are one piece of work.\n"
        f"Task types: {', '.join(types)}."
    )
    listing = "\n".join(files) if files else "(empty project)"
    user = f"Task: {task}\n\nProject files:\n{listing}"
    res = await llm.astructured([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                TaskAnalysis, model=model, on_retry=on_retry)
    analysis = res.value
    if analysis.task_type not in types:
        analysis.task_type = _classify(host, task)
    return analysis, res.usage


def choose_plan(
    task: str,
    analysis: TaskAnalysis,
    *,
    topology: str | None = None,
    steps: list[str] | None = None,
    strategies: list[str] | None = None,
    merge_strategy: str | None = None,
    verifier: str | None = None,
) -> Plan:
    """Pick single, vertical or horizontal, with the reason.

    Rules, in order (the paper's split: vertical for distinct sub-tasks, horizontal for
    one task worth several attempts):

    1. ``topology`` given → that one ("requested"); explicit ``steps`` → vertical,
       explicit ``strategies`` → horizontal.
    2. At least 2 separable steps and complexity above ``low`` → **vertical**.
    3. At least 2 alternatives → **horizontal**, merged by ``best_score`` when a
       verifier is known, else ``llm_judge``.
    4. Otherwise → **single**.

    :raises UsageError: unknown topology, or horizontal with fewer than 2 strategies.
    """
    if topology not in (None, "auto", *TOPOLOGIES):
        raise UsageError(f"topology {topology!r} is unknown; use auto, single, vertical or horizontal.")
    explicit_steps, explicit_strategies = bool(steps), bool(strategies)
    if explicit_steps and explicit_strategies:
        raise UsageError("give steps (a vertical chain) or strategies (an ensemble), not both.")
    steps = list(steps or analysis.steps)
    strategies = list(strategies or analysis.alternatives)
    verifier = verifier or analysis.verifier
    a = analysis
    if topology in TOPOLOGIES:
        chosen, reason = topology, f"{topology} was requested"
    elif explicit_steps:
        chosen, reason = "vertical", f"{len(steps)} steps were given"
    elif explicit_strategies:
        chosen, reason = "horizontal", f"{len(strategies)} strategies were given"
    elif len(steps) >= 2 and a.complexity != "low":
        chosen = "vertical"
        reason = (f"{len(steps)} separable steps that build on each other ({a.complexity} complexity): "
                  "one specialised agent per step, each starting from what the previous ones changed")
    elif len(strategies) >= 2:
        chosen = "horizontal"
        reason = (f"{len(strategies)} different approaches are worth trying: run them in parallel in "
                  "separate copies and keep the best")
    else:
        chosen = "single"
        extra = f"; its {len(steps)} steps are small enough for one agent" if len(steps) >= 2 else ""
        reason = f"one coherent piece of work ({a.complexity} complexity, no alternatives worth exploring{extra})"
    plan = Plan(task, chosen, reason, a.task_type, a, verifier=verifier)
    if chosen == "vertical":
        plan.steps = steps or []
    elif chosen == "horizontal":
        if strategies and len(strategies) < 2:
            raise UsageError("a horizontal run needs at least 2 strategies; pass two or more --strategy options.")
        plan.strategies = strategies
        plan.merge_strategy = merge_strategy or ("best_score" if verifier else "llm_judge")
    return plan


Emit = Callable[[dict], None]


async def execute(
    host: "Host",
    plan: Plan,
    *,
    run_id: str,
    session: "Session | None" = None,
    budget: Any = None,
    model: str | None = None,
    ask_policy: Literal["allow", "deny"] = "deny",
    on_event: Emit | None = None,
) -> RunReport:
    """Run ``plan`` through the agents plugin (``run_topology`` hook); every agent run is recorded
    in the registry (``agent_run_finished``).

    :raises ModelError: a plan (subtasks, strategies) could not be produced.
    :raises UsageError: no plugin runs agents (the agents plugin is blocked).
    """
    emit = on_event or (lambda e: None)
    started = time.perf_counter()
    report = RunReport(run_id, plan, False)
    out = await host.run_topology(
        plan.topology, plan.task, task_type=plan.task_type, subtasks=plan.steps, strategies=plan.strategies,
        merge_strategy=plan.merge_strategy, verifier=plan.verifier, run_id=run_id, session=session,
        budget=budget, model=model, ask_policy=ask_policy, on_event=emit)
    report.success, report.error, report.failed_step = out["success"], out["error"], out["failed_step"]
    report.results, report.agents = out["results"], out["agents"]
    report.files_changed, report.output, report.detail = out["files_changed"], out["output"], out["detail"]
    report.tokens += out["tokens"]
    report.cost_usd += out["cost_usd"]
    if plan.topology == "vertical":
        plan.steps = out["subtasks"]
    elif plan.topology == "horizontal":
        plan.strategies, plan.merge_strategy = out["strategies"], out["merge_strategy"]
    report.tokens += sum(r.tokens for r in report.results)
    report.cost_usd += sum(r.cost_usd for r in report.results)
    report.latency_ms = (time.perf_counter() - started) * 1000
    return report


def record_run(host: "Host", report: RunReport) -> dict[str, str]:
    """Hand the finished run to graph memory (``remember_run`` hook); returns ``{role: node id}``
    (empty when no plugin keeps memory)."""
    return host.remember_run(report)


async def coordinate(
    host: "Host",
    task: str,
    *,
    plan_only: bool = False,
    topology: str | None = None,
    steps: list[str] | None = None,
    strategies: list[str] | None = None,
    merge_strategy: str | None = None,
    verifier: str | None = None,
    session: "Session | None" = None,
    budget: Any = None,
    model: str | None = None,
    ask_policy: Literal["allow", "deny"] = "deny",
    on_event: Emit | None = None,
) -> RunReport:
    """Analyse, plan, (unless ``plan_only``) execute, and record ``task``.

    :returns: :class:`RunReport` (``executed`` False for ``plan_only``; nothing is written then).
    :raises UsageError: empty task, bad topology/strategy options, no model configured.
    :raises ModelError: the analysis, a plan or an agent could not be produced.
    """
    from opensage import llm

    if not task or not task.strip():
        raise UsageError('the task is empty; say what to do, e.g. opensage run "add a --verbose flag".')
    if merge_strategy is not None and merge_strategy not in MERGE_STRATEGIES:
        raise UsageError(f"merge strategy {merge_strategy!r} is unknown; use one of {', '.join(MERGE_STRATEGIES)}.")
    llm.model_name(model)  # ModelNotConfigured before anything else
    emit = on_event or (lambda e: None)
    run_id = new_run_id()
    started = time.perf_counter()
    emit({"kind": "analysing", "task": task})
    analysis, usage = await analyse(host, task, model, on_retry=emit)
    plan = choose_plan(task, analysis, topology=topology, steps=steps, strategies=strategies,
                       merge_strategy=merge_strategy, verifier=verifier)
    emit({"kind": "planned", "plan": plan, "tokens": usage.total_tokens, "cost_usd": usage.cost_usd})
    if plan_only:
        return RunReport(run_id, plan, True, tokens=usage.total_tokens, cost_usd=usage.cost_usd,
                         latency_ms=(time.perf_counter() - started) * 1000, executed=False)
    report = await execute(host, plan, run_id=run_id, session=session, budget=budget, model=model,
                           ask_policy=ask_policy, on_event=emit)
    report.tokens += usage.total_tokens
    report.cost_usd += usage.cost_usd
    report.latency_ms = (time.perf_counter() - started) * 1000
    report.memory = await asyncio.to_thread(record_run, host, report)
    emit({"kind": "finished", "success": report.success})
    return report
