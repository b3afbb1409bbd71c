"""``@generate-agent`` and ``@list-generated-agents``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from opensage.types import ArgModel, Command, CommandContext, CommandResult


class GenerateAgentArgs(ArgModel):
    task: str = Field(min_length=1, description="what the agent is for, e.g. \"review SQL migrations for locking\"")
    mode: Literal["primary", "subagent", "all"] = Field(
        "subagent", description="subagent (called by another agent), primary (the user talks to it) or all")
    specialization: str = Field("", description="optional focus, e.g. \"PostgreSQL\"")
    name: str | None = Field(None, description="use this kebab-case name instead of the model's")
    model: str | None = Field(None, description="provider/model the agent runs on in the host (default: the host's)")
    claude: bool | None = Field(
        None, description="also write .claude/agents/<name>.md (default: $OPENSAGE_CLAUDE_AGENTS)")


def generate(args: GenerateAgentArgs, ctx: CommandContext) -> CommandResult:
    """``@generate-agent``: have the model write an agent for ``task`` and write it for
    OpenCode (and Claude Code when asked).

    :raises UsageError: bad arguments (nothing written).
    :raises ModelNotConfigured: no model configured.
    :raises ModelError: no valid spec within the attempts (nothing written).
    """
    from opensage.plugins.agents.generate import generate_agent_files

    written = generate_agent_files(
        ctx.host, args.task, args.mode, args.specialization, name=args.name, model=args.model,
        claude=args.claude, session=ctx.session,
    )
    spec, root = written.spec, ctx.workspace.root
    data = written.as_dict(root)
    lines = [f"Generated agent @{spec.name} (v{spec.version}, {spec.mode}) at {data['opencode']}"]
    if written.claude:
        lines.append(f"Claude Code agent: {data['claude']}")
    if written.archived:
        lines.append(f"Previous version v{spec.version - 1} kept at {data['archived'][0]}")
    granted = ", ".join(f"{t}={p}" for t, p in spec.tools.items())
    lines.append(f"{spec.description}\nTools: {granted}. Invoke with @{spec.name} (restart the host to load it).")
    return CommandResult(text="\n".join(lines), data=data)


class ListAgentsArgs(ArgModel):
    versions: bool = Field(False, description="also list earlier versions of each agent")


def list_generated(args: ListAgentsArgs, ctx: CommandContext) -> CommandResult:
    """``@list-agents``: every generated agent with its versions and registry totals (runs,
    successes, cost in USD, latency in ms).
    """
    from opensage.plugins.agents.files import agent_versions, list_agents

    agents = list_agents(ctx.workspace)
    if not agents:
        return CommandResult(text="No generated agents yet. Create one with @generate-agent task=\"...\".",
                             data={"agents": []})
    totals: dict[str, dict] = {}
    for row in ctx.host.agent_stats():
        t = totals.setdefault(row["name"], {"runs": 0, "successes": 0, "costUsd": 0.0, "latencyMs": 0.0})
        t["runs"] += row["totalTasks"]
        t["successes"] += row["successCount"]
        t["costUsd"] += row["totalCost"]
        t["latencyMs"] += row["avgLatency"] * row["totalTasks"]
    rows, lines = [], []
    for spec in agents:
        t = totals.get(spec.name, {"runs": 0, "successes": 0, "costUsd": 0.0, "latencyMs": 0.0})
        runs = t["runs"]
        stats = {
            "runs": runs,
            "successes": t["successes"],
            "successRate": t["successes"] / runs if runs else None,
            "avgCostUsd": t["costUsd"] / runs if runs else None,
            "avgLatencyMs": t["latencyMs"] / runs if runs else None,
        }
        row = {"name": spec.name, "mode": spec.mode, "description": spec.description, "version": spec.version,
               "task": spec.task, "stats": stats}
        if args.versions:
            row["versions"] = [v.version for v in agent_versions(ctx.workspace, spec.name)]
        rows.append(row)
        perf = (f"{runs} runs, {stats['successRate']:.0%} success, ${stats['avgCostUsd']:.4f}/run, "
                f"{stats['avgLatencyMs'] / 1000:.1f} s/run") if runs else "no runs yet"
        extra = f", versions {row['versions']}" if args.versions else ""
        lines.append(f"- @{spec.name} ({spec.mode}, v{spec.version}{extra}): {spec.description} [{perf}]")
    return CommandResult(text="\n".join(lines), data={"agents": rows})


COMMANDS = [
    Command("generate-agent", GenerateAgentArgs, generate,
            "Have the model write a specialised agent for a task; saved in OpenCode (and Claude Code) format.",
            uses_llm=True),
    Command("list-generated-agents", ListAgentsArgs, list_generated,
            "List generated agents: name, mode, description, version and their run statistics."),
]
