"""The ``coordinator`` plugin: analyse a task, choose single / vertical / horizontal, run, record.

``@coordinate task="..."`` (and ``opensage run "..."``) go through
:func:`opensage.plugins.coordinator.coordinator.coordinate`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from opensage.hookspecs import hookimpl
from opensage.types import ArgModel, Command, CommandContext, CommandResult


class CoordinateArgs(ArgModel):
    task: str = Field(min_length=1, description="what to do, in plain words")
    plan_only: bool = Field(False, description="analyse and print the plan without running it")
    topology: Literal["auto", "single", "vertical", "horizontal"] = Field(
        "auto", description="force a topology instead of letting the analysis choose")
    steps: int | None = Field(None, ge=1, le=500, description="step budget per agent (model calls)")
    max_cost_usd: float | None = Field(None, gt=0, description="cost budget per agent, USD")


def coordinate_cmd(args: CoordinateArgs, ctx: CommandContext) -> CommandResult:
    """``@coordinate``: analyse ``task``, choose a topology (or take the one given), run it
    unless ``planOnly``, and record every agent run.

    :raises UsageError: bad arguments or budget.
    :raises ModelNotConfigured: no model configured.
    :raises ModelError: the analysis failed.
    """
    from opensage.commands import run_async
    from opensage.plugins.coordinator.coordinator import coordinate

    budget = {"steps": args.steps}  # the agents plugin's Budget fields (run_topology hook)
    if args.max_cost_usd is not None:
        from opensage import llm

        llm.require_price(None, "maxCostUsd")  # UsageError before any model call, as the topology commands
        budget["max_cost_usd"] = args.max_cost_usd
    report = run_async(coordinate(
        ctx.host, args.task, plan_only=args.plan_only,
        topology=None if args.topology == "auto" else args.topology,
        budget=budget, session=ctx.session, ask_policy="allow",
    ))
    return CommandResult(text=report_text(report), data=report.as_dict(),
                         success=report.success or not report.executed)


def report_text(report) -> str:
    """Plain-text final report of a coordinated run."""
    lines = [report.plan.text()]
    if not report.executed:
        lines.append("(plan only: nothing was run)")
        return "\n".join(lines)
    lines.append(f"result: {'success' if report.success else 'FAILED'} (run {report.run_id})")
    if report.error:
        lines.append(f"why: {report.error}")
    lines.append(f"agents: {', '.join('@' + a for a in report.agents) or 'none'}")
    lines.append(f"files changed: {', '.join(report.files_changed) or 'none'}")
    lines.append(f"tokens: {report.tokens}; cost: ${report.cost_usd:.4f}; time: {report.latency_ms / 1000:.1f} s")
    if report.output:
        lines.append(f"output: {report.output.strip()}")
    return "\n".join(lines)


COMMANDS = [
    Command("coordinate", CoordinateArgs, coordinate_cmd,
            "Analyse a task, choose single/vertical/horizontal agents with a reason, run it and record it.",
            uses_llm=True),
]


@hookimpl
def register_commands(register):
    """hookimpl: the coordinator's ``@``-commands (``@coordinate``)."""
    for command in COMMANDS:
        register(command)
