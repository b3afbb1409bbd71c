"""``@vertical-decompose`` and ``@horizontal-ensemble``: run agent topologies for real."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from opensage.commands import run_async
from opensage.types import ArgModel, Command, CommandContext, CommandResult


def _budget(steps: int | None, max_cost_usd: float | None, model: str | None = None):
    """The :class:`~opensage.plugins.agents.runner.Budget` of a topology command.

    :raises UsageError: ``max_cost_usd`` given for a model without a known price
        (see :func:`opensage.llm.require_price`).
    """
    from opensage.plugins.agents.runner import Budget

    budget = Budget(steps=steps)
    if max_cost_usd is not None:
        from opensage import llm

        llm.require_price(model, "maxCostUsd")
        budget.max_cost_usd = max_cost_usd
    return budget


class VerticalArgs(ArgModel):
    task: str = Field(min_length=1, description="the overall task")
    subtasks: list[str] = Field(default_factory=list, max_length=8,
                                description="ordered subtasks, one agent each; empty: the model proposes them")
    replan: bool = Field(True, description="on a failed step, re-plan the remaining work once")
    steps: int | None = Field(None, ge=1, le=500, description="step budget per agent (model calls); default: the agent's")
    max_cost_usd: float | None = Field(None, gt=0, description="cost budget per agent, USD")


def vertical_decompose(args: VerticalArgs, ctx: CommandContext) -> CommandResult:
    """``@vertical-decompose``: run ``task`` as a chain of subtasks, one agent each, each
    in a scratch copy applied when it succeeds; stops at the first failed step.

    :raises UsageError: bad arguments or budget.
    :raises ModelNotConfigured: no model configured.
    """
    from opensage.plugins.agents.topology import vertical

    report = run_async(vertical(
        ctx.host, args.task, args.subtasks, session=ctx.session, budget=_budget(args.steps, args.max_cost_usd),
        ask_policy="allow", replan=args.replan,
    ))
    return CommandResult(text=report.text(), data=report.as_dict(), success=report.success)


class EnsembleArgs(ArgModel):
    task: str = Field(min_length=1, description="the task every member attempts")
    strategies: list[str] = Field(default_factory=list, max_length=5,
                                  description="2-5 approaches, one agent each; empty: the model proposes them")
    merge_strategy: Literal["majority_vote", "llm_judge", "best_score"] | None = Field(
        None, description="majority_vote | llm_judge | best_score; default best_score when the project has tests, else llm_judge")
    verifier: str | None = Field(None, description="command deciding best_score, e.g. \"python -m pytest -q\"")
    steps: int | None = Field(None, ge=1, le=500, description="step budget per agent (model calls)")
    max_cost_usd: float | None = Field(None, gt=0, description="cost budget per agent, USD")


def horizontal_ensemble(args: EnsembleArgs, ctx: CommandContext) -> CommandResult:
    """``@horizontal-ensemble``: run 2+ strategies in parallel scratch copies and apply the
    one the merge strategy picks (verifier, judge or vote).

    :raises UsageError: exactly one strategy, or bad arguments.
    :raises ModelNotConfigured: no model configured.
    """
    from opensage.errors import UsageError
    from opensage.plugins.agents.topology import horizontal

    if len(args.strategies) == 1:
        raise UsageError("argument 'strategies': give at least 2 strategies (or none to let the model propose them).")
    report = run_async(horizontal(
        ctx.host, args.task, args.strategies, args.merge_strategy, verifier=args.verifier, session=ctx.session,
        budget=_budget(args.steps, args.max_cost_usd), ask_policy="allow",
    ))
    return CommandResult(text=report.text(), data=report.as_dict(), success=report.success)


COMMANDS = [
    Command("vertical-decompose", VerticalArgs, vertical_decompose,
            "Run a task as a chain of agents (one per subtask, in order); a failed step stops or re-plans.",
            uses_llm=True),
    Command("horizontal-ensemble", EnsembleArgs, horizontal_ensemble,
            "Run one agent per strategy in parallel in separate copies; merge by vote, judge or tests.",
            uses_llm=True),
]
