"""``@agent-stats``: what the registry knows about agents, and whom it would pick."""

from __future__ import annotations

from pydantic import Field

from opensage.types import ArgModel, Command, CommandContext, CommandResult


class AgentStatsArgs(ArgModel):
    agent: str | None = Field(None, description="only this agent")
    task_type: str | None = Field(None, description="only this task type (implement, fix, test, refactor, "
                                                     "document, analyze, research)")
    task: str | None = Field(None, description="also rank the agents for this task, as recommend_agent would")
    history: int = Field(5, ge=0, le=1000, description="recent runs to show (0: none)")


def agent_stats(args: AgentStatsArgs, ctx: CommandContext) -> CommandResult:
    """``@agent-stats``: per agent and task type, runs, success rate, its Wilson lower bound
    (one-sided 95 %), mean cost (USD) and latency (s).

    :raises UsageError: an unknown ``taskType``.
    """
    from opensage.errors import UsageError
    from opensage.plugins.agent_registry.registry import TASK_TYPES, AgentRegistry, classify_task

    if args.task_type is not None and args.task_type not in TASK_TYPES:
        raise UsageError(f"taskType {args.task_type!r} is unknown; use one of: {', '.join(TASK_TYPES)}.")
    registry = AgentRegistry(ctx.workspace)
    rows = registry.stats(agent=args.agent, task_type=args.task_type)
    lines = []
    if rows:
        lines.append(f"{'agent':<28} {'type':<10} {'runs':>5} {'success':>8} {'lower95':>8} {'$/run':>9} {'s/run':>7}")
        for r in rows:
            lines.append(f"{r['name'][:28]:<28} {r['taskType']:<10} {r['totalTasks']:>5} {r['successRate']:>8.0%} "
                         f"{r['lowerBound']:>8.2f} {r['avgCost']:>9.4f} {r['avgLatency'] / 1000:>7.1f}")
    else:
        lines.append("No agent runs recorded yet." if args.agent is None else f"No runs recorded for {args.agent!r}.")
    data = {"stats": rows}
    if args.task:
        ranking = registry.rank(args.task, args.task_type)
        best = ranking[0].agent if ranking and ranking[0].eligible else None
        chosen_type = args.task_type or classify_task(args.task)
        lines.append(f"\nFor this task ({chosen_type}): " + (f"recommend @{best}" if best else
                     "no agent has succeeded at such a task yet (generate one)"))
        for r in ranking[:10]:
            lines.append(f"  {r.agent:<28} score {r.score:.2f}  weighted {r.successes:.1f}/{r.trials:.1f}"
                         f"{'' if r.eligible else '  (no success yet: not eligible)'}")
        data["taskType"] = chosen_type
        data["recommendation"] = best
        data["ranking"] = [r.as_dict() for r in ranking]
    if args.history:
        history = registry.get_task_history(agent=args.agent, task_type=args.task_type, limit=args.history)
        data["history"] = history
        if history:
            lines.append("\nRecent runs:")
            for h in history:
                mark = "ok  " if h["success"] else "FAIL"
                lines.append(f"  {mark} {h['agentName']:<24} {h['taskType']:<10} ${h['cost']:.4f} "
                             f"{h['duration'] / 1000:.1f} s  {h.get('task', '')[:60]}")
    return CommandResult(text="\n".join(lines), data=data)


COMMANDS = [
    Command("agent-stats", AgentStatsArgs, agent_stats,
            "Show the agent registry: per-agent success, cost and latency by task type, recent runs, "
            "and the ranking for a task."),
]
