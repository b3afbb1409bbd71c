"""The commands of the ``dynamic-tools`` plugin, and one command per stored tool."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any, Literal

from pydantic import Field, create_model

from opensage.errors import UsageError
from opensage.plugins.dynamic_tools import store
from opensage.plugins.dynamic_tools.schema import check_arguments, parameters_validator  # noqa: F401 (public here too)
from opensage.types import ArgModel, Command, CommandContext, CommandResult, Tool
from opensage.types._tools import TOOL_NAME

JOB_ID = re.compile(r"^job-\d{14}-[0-9a-f]{8}$")
_PY_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": int | float, "boolean": bool,
                             "array": list, "object": dict}


# -- @generate-tool ---------------------------------------------------------------------

class GenerateToolArgs(ArgModel):
    requirement: str = Field(min_length=1, description="what the tool must do, in plain words")
    language: Literal["python", "bash", "node"] = Field("python", description="language of the tool's code")
    name: str = Field(pattern=TOOL_NAME, max_length=48,
                      description="tool name, kebab-case (becomes @<name>), e.g. csv-summary")
    attempts: int = Field(3, ge=1, le=6, description="candidates the model may write before giving up")
    replace: bool = Field(False, description="regenerate an existing generated tool of that name")



def _jobs_db(ctx):
    """Where jobs are kept: the host's store when it is the local file, else the local file
    (one per host, see :func:`.jobs.local_db`)."""
    from opensage.plugins.dynamic_tools import jobs

    if ctx.host.db.backend == "sqlite":
        return ctx.host.db
    return ctx.host.service("dynamic-tools:jobs-db", lambda host: jobs.local_db(host.workspace))

def generate_tool(args: GenerateToolArgs, ctx: CommandContext) -> CommandResult:
    """``@generate-tool``: have the model write a tool, test it in the sandbox on its own
    examples, and register it.

    :raises UsageError: bad arguments, or the name is taken without ``replace``.
    :raises ModelNotConfigured: no model configured.
    :raises ModelError: no attempt produced a tool that passed its examples.
    """
    from opensage.plugins.dynamic_tools.generate import generate

    done = generate(ctx.host, args.requirement, args.language, args.name, attempts=args.attempts, replace=args.replace)
    spec = done.tool.spec
    example = spec.examples[0].arguments
    call = " ".join(f"{k}={json.dumps(v)}" for k, v in example.items())
    lines = [f"Registered @{spec.name} ({spec.language}): {spec.description}",
             f"Passed {len(done.checked)} example call(s) in the sandbox (level {done.checked[0]['level']}) "
             f"after {done.attempts} attempt(s).",
             f"Try: @{spec.name} {call}".rstrip()]
    if done.failures:
        lines.append("Rejected candidates:\n" + "\n".join(done.failures))
    return CommandResult(text="\n".join(lines), data={
        "name": spec.name, "language": spec.language, "attempts": done.attempts, "examples": done.checked,
        "failures": done.failures, "folder": str(done.tool.folder)})


# -- @list-generated-tools --------------------------------------------------------------

class ListToolsArgs(ArgModel):
    pass


def _params_text(spec) -> str:
    props = spec.parameters.get("properties", {})
    req = set(spec.parameters.get("required", []))
    return ", ".join(f"{n}{'' if n in req else '?'}:{p.get('type', 'json')}" for n, p in props.items()) or "none"


def list_tools(args: ListToolsArgs, ctx: CommandContext) -> CommandResult:
    """``@list-tools``: every generated tool with its parameters (JSON Schema) and last run
    (``started_at`` epoch s, ``duration_ms``, sandbox level, status).
    """
    tools = store.load_all(ctx.workspace)
    if not tools:
        return CommandResult(text="No generated tools yet. Create one with @generate-tool.", data={"tools": []})
    db = store.db_for(ctx.host)
    rows, lines = [], []
    for t in tools:
        last = store.last_run(db, t.name)
        rows.append({"name": t.name, "language": t.spec.language, "description": t.spec.description,
                     "parameters": t.spec.parameters, "lastRun": last})
        when = (f"last run {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last['started_at']))} "
                f"{last['status']} ({last['duration_ms']:.0f} ms, {last['level']})") if last else "never run"
        lines.append(f"@{t.name} [{t.spec.language}] {t.spec.description}\n    parameters: {_params_text(t.spec)}; {when}")
    return CommandResult(text="\n".join(lines), data={"tools": rows})


# -- running stored tools ---------------------------------------------------------------

def _run_recorded(ctx: CommandContext, tool: store.StoredTool, arguments: dict, state: Any = None):
    from opensage import sandbox
    from opensage.plugins.dynamic_tools.runner import ToolRunError, run_tool

    config = sandbox.load_config(ctx.workspace.root)
    db = store.db_for(ctx.host)
    started = time.time()
    try:
        out = run_tool(tool.spec, tool.code_path, arguments, state, config=config)
    except ToolRunError as exc:
        res = exc.run
        store.record_run(db, tool.name, started, res.duration_ms if res else 0.0, res.level if res else "none",
                         "failed", str(exc)[:2000])
        raise
    store.record_run(db, tool.name, started, out.run.duration_ms, out.run.level, "succeeded")
    return out


def _result_text(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


def args_model(spec) -> type[ArgModel]:
    """A pydantic model of the tool's JSON-Schema parameters (types, required vs optional, enums).

    It gives the CLI, the REPL and MCP their argument parsing, coercion and usage text;
    the other JSON-Schema keywords are enforced by :func:`check_arguments`.
    """
    props = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", []))
    fields: dict[str, Any] = {}
    for i, (pname, prop) in enumerate(props.items()):
        kind: Any = _PY_TYPES.get(prop.get("type"), Any)
        if isinstance(prop.get("enum"), list) and prop["enum"]:
            kind = Literal[tuple(prop["enum"])]
        desc = prop.get("description", "")
        if pname in required:
            fields[f"p{i}"] = (kind, Field(alias=pname, description=desc))
        else:
            fields[f"p{i}"] = (kind | None, Field(prop.get("default"), alias=pname, description=desc))
    model_name = "".join(part.capitalize() for part in spec.name.split("-")) + "Args"
    return create_model(model_name, __base__=ArgModel, **fields)


def validate_arguments(spec, arguments: dict) -> dict:
    """Check ``arguments`` against the tool's parameters; returns them as the tool will get them.

    Types are coerced by the pydantic model of :func:`args_model`, then every JSON-Schema
    constraint is checked by :func:`check_arguments`.

    :raises UsageError: naming the bad argument.
    """
    from opensage.commands import bind_arguments

    probe = Command(spec.name, args_model(spec), lambda a, c: None, spec.description)
    bound = bind_arguments(probe, dict(arguments))
    return check_arguments(spec, bound.model_dump(by_alias=True, exclude_unset=True))


def tool_command(tool: store.StoredTool) -> Command:
    """The ``@<name>`` command of a generated tool: its arguments are checked against the
    tool's JSON Schema (exit 2 on a violation, before the sandbox starts), then it runs
    sandboxed; data holds ``result``, ``level`` and ``durationMs`` (ms).
    """
    model = args_model(tool.spec)

    def handler(args, ctx: CommandContext) -> CommandResult:
        current = store.load(ctx.workspace, tool.name)
        arguments = check_arguments(current.spec, args.model_dump(by_alias=True, exclude_unset=True))
        out = _run_recorded(ctx, current, arguments)
        return CommandResult(text=_result_text(out.result), data={
            "result": out.result, "level": out.run.level, "durationMs": round(out.run.duration_ms, 1)})

    return Command(tool.name, model, handler, f"[generated {tool.spec.language} tool] {tool.spec.description}")


def agent_tool(tool: store.StoredTool) -> Tool:
    """The generated tool as an agent :class:`~opensage.types.Tool` (same validation and
    sandbox as :func:`tool_command`); the result goes back to the model as text.
    """
    def run(arguments: dict, ctx: CommandContext) -> str:
        checked = validate_arguments(tool.spec, arguments)
        return _result_text(_run_recorded(ctx, store.load(ctx.workspace, tool.name), checked).result)

    return Tool(tool.name, tool.spec.description, tool.spec.parameters, run,
                meta={"generated": True, "language": tool.spec.language})


# -- @execute-tool-stateful -------------------------------------------------------------

class StatefulArgs(ArgModel):
    tool_name: str = Field(description="a generated tool (see @list-generated-tools)")
    action: Literal["run", "save-state", "load-state", "reset"] = Field(
        "run", description="run: call the tool with its state and keep the new one; save-state: set the state "
                           "to `state`; load-state: show it; reset: forget it")
    state_id: str = Field("default", description="which state: each (tool, stateId) keeps its own")
    args: dict[str, Any] = Field(default_factory=dict, description="arguments for action=run (JSON object)")
    state: Any = Field(None, description="the JSON state to store, for action=save-state")


def _state_lock(ctx: CommandContext, tool: str, state_id: str):
    from filelock import FileLock

    folder = ctx.workspace.state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(state_id.encode()).hexdigest()[:16]
    return FileLock(str(folder / f"tool-state-{tool}-{digest}.lock"))


def execute_stateful(args: StatefulArgs, ctx: CommandContext) -> CommandResult:
    """``@execute-stateful``: run a tool with a saved JSON state, or show, save or reset
    that state (one lock per tool and state id, so two runs never interleave).

    :raises UsageError: bad state id, ``args`` without ``action=run``, ``save-state``
        without ``state``, or arguments the tool's schema rejects.
    :raises NotFoundError: no such tool.
    """
    tool = store.load(ctx.workspace, args.tool_name)
    state_id = store.check_state_id(args.state_id)
    if args.action != "run" and args.args:
        raise UsageError(f"args is only used with action=run, not action={args.action}")
    if args.action == "save-state" and "state" not in args.model_fields_set:
        raise UsageError('action=save-state needs state=<JSON>, e.g. state={"count": 0}')
    arguments = validate_arguments(tool.spec, args.args) if args.action == "run" else {}
    db = store.db_for(ctx.host)
    data: dict[str, Any] = {"tool": tool.name, "stateId": state_id, "action": args.action}
    with _state_lock(ctx, tool.name, state_id):
        if args.action == "run":
            before = store.get_state(db, tool.name, state_id)
            out = _run_recorded(ctx, tool, arguments, before)
            after = out.state if out.has_state else before
            if out.has_state:
                store.set_state(db, tool.name, state_id, after)
            data.update(result=out.result, state=after, level=out.run.level, durationMs=round(out.run.duration_ms, 1))
            return CommandResult(text=_result_text(out.result), data=data)
        if args.action == "save-state":
            store.set_state(db, tool.name, state_id, args.state)
            data["state"] = args.state
            return CommandResult(text=f"saved state {state_id!r} of @{tool.name}: {json.dumps(args.state)}", data=data)
        if args.action == "load-state":
            state = store.get_state(db, tool.name, state_id)
            data["state"] = state
            return CommandResult(text=json.dumps(state), data=data)
        existed = store.reset_state(db, tool.name, state_id)
        data["existed"] = existed
        return CommandResult(text=f"reset state {state_id!r} of @{tool.name}" + ("" if existed else " (it was empty)"), data=data)


# -- background jobs --------------------------------------------------------------------

class AsyncArgs(ArgModel):
    tool_name: str = Field(description="a generated tool (see @list-generated-tools)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="the tool's arguments (JSON object)")
    timeout_s: float = Field(300.0, gt=0, le=86_400, description="wall-clock seconds before the job is killed")


def async_background(args: AsyncArgs, ctx: CommandContext) -> CommandResult:
    """``@async-background``: start a generated tool as a background job (sandboxed, wall
    limit ``timeout_s`` seconds) and return its job id at once.

    :raises UsageError: arguments the tool's schema rejects, or no sandbox available.
    :raises NotFoundError: no such tool.
    """
    from dataclasses import asdict

    from opensage import sandbox
    from opensage.plugins.dynamic_tools import jobs
    from opensage.plugins.dynamic_tools.runner import RUN_LIMITS, command_for

    tool = store.load(ctx.workspace, args.tool_name)
    arguments = validate_arguments(tool.spec, args.parameters)
    sandbox.available_level(sandbox.load_config(ctx.workspace.root))  # refuse now, not in the background
    limits = {**asdict(RUN_LIMITS), "wall_s": args.timeout_s, "cpu_s": max(RUN_LIMITS.cpu_s, int(args.timeout_s) + 1)}
    job_id = jobs.submit(
        ctx.workspace, _jobs_db(ctx), kind="tool", name=tool.name, argv=command_for(tool.spec, tool.code_path),
        stdin=json.dumps({"arguments": arguments, "state": None}), readable=[str(tool.folder)],
        limits=limits, meta={"arguments": arguments},
    )
    return CommandResult(
        text=f"started {job_id} (@{tool.name}); poll with: @poll-async-job jobId={job_id}",
        data={"jobId": job_id, "status": "queued", "pollCommand": f"@poll-async-job jobId={job_id}",
              "cancelCommand": f"@cancel-async-job jobId={job_id}"},
    )


class JobArgs(ArgModel):
    job_id: str = Field(description="the id returned by @async-tool-background")


def _job_id(value: str) -> str:
    if not JOB_ID.match(value):
        raise UsageError(f"jobId {value!r} is not a job id (like job-20250101120000-1a2b3c4d)")
    return value


def _job_text(info: dict) -> str:
    lines = [f"{info['jobId']} @{info['name']}: {info['status']} ({info['elapsedS']:.1f} s)"]
    if info["result"] is not None:
        lines.append("result: " + _result_text(info["result"].get("result")))
    if info["error"]:
        lines.append("error: " + info["error"])
    if info["stderr"].strip() and info["status"] in ("queued", "running"):
        lines.append("progress:\n" + info["stderr"].strip()[-1500:])
    return "\n".join(lines)


def poll_job(args: JobArgs, ctx: CommandContext) -> CommandResult:
    """``@poll-job``: a background job's status, progress lines and (when done) result.

    :raises NotFoundError: no such job.
    """
    from opensage.plugins.dynamic_tools import jobs

    info = jobs.poll(ctx.workspace, _jobs_db(ctx), _job_id(args.job_id))
    return CommandResult(text=_job_text(info), data=info)


def cancel_job(args: JobArgs, ctx: CommandContext) -> CommandResult:
    """``@cancel-job``: stop a background job (its sandbox is killed) and return its status.

    :raises NotFoundError: no such job.
    """
    from opensage.plugins.dynamic_tools import jobs

    info = jobs.cancel(ctx.workspace, _jobs_db(ctx), _job_id(args.job_id))
    return CommandResult(text=_job_text(info), data=info)


COMMANDS = [
    Command("generate-tool", GenerateToolArgs, generate_tool,
            "Have the model write a tool; it is registered as @<name> only after its examples pass in the sandbox.",
            uses_llm=True),
    Command("list-generated-tools", ListToolsArgs, list_tools,
            "List generated tools: name, language, description, parameters, last run."),
    Command("execute-tool-stateful", StatefulArgs, execute_stateful,
            "Run a generated tool with persistent state per (tool, stateId), or save/load/reset that state."),
    Command("async-tool-background", AsyncArgs, async_background,
            "Start a generated tool as a background job (survives the CLI); returns a job id at once."),
    Command("poll-async-job", JobArgs, poll_job,
            "Status (queued/running/succeeded/failed/timed_out/cancelled/lost), output so far and result of a job."),
    Command("cancel-async-job", JobArgs, cancel_job,
            "Cancel a background job: its sandboxed processes are killed; status becomes cancelled."),
]
