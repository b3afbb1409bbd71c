"""The ``opensage`` command line (also ``python -m opensage``).

``opensage @memory-query query="auth"`` runs one command; ``opensage commands`` lists
them; ``opensage chat`` is an interactive session; ``opensage hook EVENT`` is the door
real hosts use to report session events (see ``docs/session-events.md``).
"""

from __future__ import annotations

import io
import json
import os
import logging
import shutil
import sys
from typing import Any

import click

from opensage.errors import OpenSageError, UsageError
from opensage.hooks import HOOK_EVENTS, fire_hook

__all__ = ["main", "cli"]

def _host(ctx: click.Context):
    obj = ctx.find_root().obj
    if obj.get("host") is None:
        from opensage.host import Host
        from opensage.store import Workspace, find_workspace

        try:
            obj["host"] = Host(Workspace(find_workspace(obj.get("workspace"))))
        except OpenSageError as exc:  # e.g. a plugin with a misspelt hook: exit 2, no traceback
            _fail(exc)
    return obj["host"]


def _emit(ctx: click.Context, result) -> None:
    if ctx.find_root().obj.get("json"):
        click.echo(json.dumps(result.data if result.data is not None else {"text": result.text}, default=str, ensure_ascii=False))
    else:
        from opensage.termsafe import clean

        click.echo(clean(result.text))
    if getattr(result, "success", True) is False:
        sys.exit(1)


def _fail(exc: OpenSageError) -> None:
    from opensage.termsafe import clean

    click.echo(clean(f"Error: {exc}"), err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """A group whose unknown ``@name`` subcommands run ``@``-commands."""

    def get_command(self, ctx: click.Context, cmd_name: str):
        if cmd_name.startswith("@"):
            return _at_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0].startswith("@"):
            return args[0], _at_command(args[0]), args[1:]
        return super().resolve_command(ctx, args)


def _at_command(name: str) -> click.Command:
    @click.command(
        name=name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
        add_help_option=False,
    )
    @click.argument("tokens", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def run_at(ctx: click.Context, tokens: tuple[str, ...]) -> None:
        from opensage.commands import parse_tokens, usage

        try:
            host = _host(ctx)
            if tokens and tokens[0] in ("--help", "-h", "help"):
                command = host.command(name)
                click.echo(f"{usage(command)}\n\n{command.summary}")
                return
            command = host.command(name)
            arguments = parse_tokens(list(tokens))
            result = host.run(command.name, arguments)
        except OpenSageError as exc:
            _fail(exc)
        _emit(ctx, result)

    return run_at


@click.group(cls=_Group, invoke_without_command=False)
@click.option("--workspace", "-w", type=click.Path(file_okay=False), default=None,
              help="Project folder whose .opencode/ holds the state (default: git root of the cwd; or $OPENSAGE_WORKSPACE).")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.version_option(package_name="opensage")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, as_json: bool) -> None:
    """OpenSage: self-programming agents, tools and graph memory for coding assistants.

    Run an @-command:  opensage @memory-query query="auth flow"
    """
    ctx.ensure_object(dict)
    ctx.obj.update(workspace=workspace, json=as_json)
    ctx.obj.setdefault("host", None)  # embedders and tests may pass a ready Host
    logging.basicConfig(level=logging.WARNING, format="opensage: %(levelname)s: %(message)s")


@cli.command("commands")
@click.pass_context
def commands_cmd(ctx: click.Context) -> None:
    """List every @-command with its arguments."""
    from opensage.commands import argument_table

    host = _host(ctx)
    if ctx.find_root().obj.get("json"):
        click.echo(json.dumps([
            {"name": c.name, "summary": c.summary, "plugin": c.plugin, "usesLlm": c.uses_llm, "arguments": argument_table(c)}
            for c in host.commands.values()
        ], default=str))
        return
    import textwrap

    width = shutil.get_terminal_size((100, 24)).columns
    for c in host.commands.values():
        click.echo(click.style(f"@{c.name}", bold=True) + f"  {c.summary}")
        args = []
        for row in argument_table(c):
            spec = f"{row['name']}:{row['type']}"
            if not row["required"]:
                default = json.dumps(row["default"], default=str) if row["default"] is not None else "none"
                spec = f"[{spec}={default}]"
            args.append(spec)
        if args:
            click.echo(textwrap.fill("  ".join(args), width=max(60, width - 4), initial_indent="    ",
                                     subsequent_indent="    ", break_on_hyphens=False))


@cli.command("hook")
@click.argument("event", type=click.Choice(sorted(HOOK_EVENTS)), required=False)
@click.option("--session-id", default=None, help="Session id (else taken from the JSON's session_id).")
@click.option("--source", default=None, help="Host name recorded with a new session (default: hook).")
@click.option("--from", "from_host", type=click.Choice(["claude", "opencode"]), default=None,
              help="claude: stdin is a Claude Code hook payload; opencode: batches from the OpenCode "
                   "plugin, one JSON object per line ({\"events\": [{\"hook\": EVENT, \"payload\": {...}}]}), "
                   "answered line by line until EOF. Give no EVENT.")
@click.option("--serve", is_flag=True,
              help="Run the workspace's hook server for Claude Code events (a unix socket in .opencode/run/; "
                   "started on demand by opensage-hook, exits after $OPENSAGE_HOOKD_IDLE_S seconds idle, default 600).")
@click.pass_context
def hook_cmd(ctx: click.Context, event: str | None, session_id: str | None, source: str | None,
             from_host: str | None, serve: bool) -> None:
    """Fire a session hook from one JSON object on stdin (the door for real hosts).

    EVENT is session-start, session-end, compact, event (the JSON gives "kind"), or an
    event kind: user-message, assistant-message, tool-call, tool-result, error,
    file-edit. With --from claude or --from opencode, give no EVENT: the JSON names it.
    See docs/session-events.md for the JSON.
    """
    if from_host and event:
        _fail(UsageError(f"with --from {from_host} give no EVENT: the JSON names its own events."))
    if serve:
        if from_host or event:
            _fail(UsageError("--serve takes no EVENT and no --from: it answers Claude Code events from opensage-hook."))
        from opensage.integrations.hookd import serve as serve_hooks_socket

        try:
            serve_hooks_socket(_host(ctx))
        except OpenSageError as exc:
            _fail(exc)
        return
    if from_host == "opencode":  # the shim's long-lived process: one batch per line until EOF
        from opensage.integrations.opencode import serve_hooks

        try:
            # invalid UTF-8 in one batch must not end the stream: decode it as U+FFFD
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace") \
                if hasattr(sys.stdin, "buffer") else sys.stdin
            serve_hooks(_host(ctx), stdin, sys.stdout)
        except OpenSageError as exc:
            _fail(exc)
        return
    if from_host == "claude":
        from opensage.integrations.claude import handle_hook
        from opensage.integrations.hookd import drain_queue

        from opensage.hook_queue import batch

        try:
            payload = _read_payload()
            host = _host(ctx)
            with batch(host) as rec:  # the team store down: queued (docs/team.md), answered {}
                drain_queue(host)  # events the queueing hooks left happened before this one
                answer = handle_hook(host, payload)
        except OpenSageError as exc:
            _fail(exc)
        click.echo(json.dumps(answer))
        if rec.note:
            click.echo(rec.note, err=True)
        return
    try:
        if event is None:
            raise UsageError(f"missing EVENT: one of {', '.join(sorted(HOOK_EVENTS))} (or --from claude).")
        out = fire_hook(_host(ctx), event, _read_payload(), session_id=session_id, source=source)
    except OpenSageError as exc:
        _fail(exc)
    click.echo(json.dumps(out))
    if out.get("queued"):
        click.echo(out["queued"], err=True)
    if not out["ok"]:
        failed = "; ".join(f"{e['plugin']}: {e['error']}" for e in out["errors"])
        click.echo(f"error: {event} was delivered, but a plugin failed on it ({failed}); "
                   "the other plugins handled it. Run with OPENSAGE_TRACE_PLUGINS=1 for the traceback.", err=True)
        sys.exit(1)


def _read_stdin_text() -> str:
    """All of stdin as text; invalid UTF-8 becomes U+FFFD instead of failing (hosts send
    whatever their tools printed)."""
    from opensage.untrusted import decode

    buffer = getattr(sys.stdin, "buffer", None)
    return decode(buffer.read()) if buffer is not None else sys.stdin.read()


def _read_payload() -> dict[str, Any]:
    from opensage.untrusted import loads

    raw = _read_stdin_text()
    if not raw.strip():
        return {}
    try:
        payload = loads(raw, "stdin")
    except UsageError as exc:
        raise UsageError(f"{exc} Send one JSON object per hook call.") from None
    if not isinstance(payload, dict):
        raise UsageError("stdin must hold one JSON object, e.g. {\"session_id\": \"s1\", \"text\": \"hi\"}.")
    return payload


@cli.command("route")
@click.argument("text", nargs=-1, required=True)
@click.option("--json", "route_json", is_flag=True, help='Print one object {"route", "confidence", "command", "arguments"}.')
@click.option("--explain", is_flag=True,
              help="Also show why: what decided (classifier, template, pattern, meaning), the classifier's "
                   "top classes with probabilities and thresholds, the nearest example sentences with their "
                   "similarity, each route's similarity.")
@click.pass_context
def route_cmd(ctx: click.Context, text: tuple[str, ...], route_json: bool, explain: bool) -> None:
    """Show where free TEXT would be routed (route, confidence, command, arguments); runs nothing.

    Uses the route_intent hook: the packaged routes (opensage/config/intent-routes.yaml)
    merged with the project's .opencode/intent-routes.yaml, unless another plugin answers.
    --explain asks the packaged router itself (with the project's routes).
    """
    from opensage.chat import preview_route

    joined = " ".join(text)
    try:
        host = _host(ctx)
        if explain:
            from opensage.plugins.routing.routing import router_for

            router, warning = router_for(host.workspace)
            if warning:
                click.echo(f"opensage: WARNING: {warning}", err=True)
            decision = router.decide(joined, explain=True).explain()
        else:
            decision = preview_route(host, joined)
    except OpenSageError as exc:
        _fail(exc)
    if route_json or ctx.find_root().obj.get("json"):
        click.echo(json.dumps(decision, ensure_ascii=False))
        return
    from opensage.plugins.routing.routing import format_call

    click.echo(f"route       {decision['route']}")
    click.echo(f"confidence  {decision['confidence']:.2f}")
    if decision["command"]:
        click.echo(f"command     {format_call(decision['command'], decision['arguments'])}")
    else:
        click.echo("command     (none: an ordinary request, no OpenSage command fits)")
    click.echo(f"arguments   {json.dumps(decision['arguments'], ensure_ascii=False)}")
    if explain:
        how = {"classifier": "the learned classifier", "template": "a template matched",
               "pattern": "a pattern matched", "meaning": "nearest examples in meaning",
               "model": "the model's tie-break (uncertain band)", "none": "no route fired"}[decision["how"]]
        click.echo(f"decided by  {how}" + (f" (threshold {decision['threshold']:g})" if decision["threshold"] else ""))
        if decision["matched"]:
            click.echo(f"matched     {decision['matched']}")
        if decision["probabilities"]:
            click.echo("classifier (probability, threshold to fire; docs/routing.md):")
            for p in decision["probabilities"][:5]:
                thr = decision["probability_thresholds"].get(p["class"])
                click.echo((f"  {p['probability']:.3f}  {p['class']:<26}" + (f" {thr:.2f}" if thr is not None else "")).rstrip())
        if decision["nearest"]:
            click.echo("nearest examples (similarity: cosine + word overlap, see docs/routing.md):")
            for n in decision["nearest"]:
                click.echo(f"  {n['similarity']:.3f}  {n['route']:<26} {n['example']}")
        if decision["similarities"]:
            click.echo("route similarity (mean of the 3 nearest examples):")
            for s in decision["similarities"][:5]:
                click.echo(f"  {s['similarity']:.3f}  {s['route']}")
        else:
            click.echo("route similarity: unavailable (route vectors not loaded; lexical evidence only)")
        if decision["candidates"]:
            click.echo("template matches: " + ", ".join(f"{c['route']} {c['confidence']:.2f}" for c in decision["candidates"]))


@cli.command("chat")
@click.option("--session-id", default=None, help="Resume this session id (default: a new one).")
@click.option("--yes", "-y", "assume_yes", is_flag=True,
              help="Run routed commands that call a model without asking (they may spend money).")
@click.pass_context
def chat_cmd(ctx: click.Context, session_id: str | None, assume_yes: bool) -> None:
    """Interactive session: @-commands run as typed, free text is routed to a command
    (asking before one that calls a model); every line is recorded as a session event."""
    from opensage.chat import run_chat

    try:
        host = _host(ctx)
        run_chat(host, session_id=session_id, assume_yes=assume_yes)
    except OpenSageError as exc:
        _fail(exc)


@cli.command("mcp")
@click.pass_context
def mcp_cmd(ctx: click.Context) -> None:
    """Serve every @-command (and the reference memory-server tools) as MCP tools over stdio."""
    from opensage.mcp_server import serve_stdio

    try:
        host = _host(ctx)
    except OpenSageError as exc:
        _fail(exc)
    serve_stdio(host)


def _integration(name: str):
    import importlib

    return importlib.import_module(f"opensage.integrations.{name}")


@cli.command("install")
@click.argument("target", type=click.Choice(["opencode", "claude"]))
@click.pass_context
def install_cmd(ctx: click.Context, target: str) -> None:
    """Add opensage to this project's OpenCode or Claude Code setup (nothing is overwritten)."""
    try:
        lines = _integration(target).install(_host(ctx))
    except OpenSageError as exc:
        _fail(exc)
    click.echo("\n".join(lines))


@cli.command("uninstall")
@click.argument("target", type=click.Choice(["opencode", "claude"]))
@click.pass_context
def uninstall_cmd(ctx: click.Context, target: str) -> None:
    """Remove exactly what 'opensage install TARGET' added."""
    try:
        lines = _integration(target).uninstall(_host(ctx))
    except OpenSageError as exc:
        _fail(exc)
    click.echo("\n".join(lines))


@cli.group("memory")
def memory_group() -> None:
    """Move graph memory: JSONL import/export (the MCP reference memory server's format),
    a Markdown mirror, push/pull between the local store and the team store, and delivery
    of hook events queued while the team store was down."""


@memory_group.command("flush-queue")
@click.pass_context
def memory_flush_queue_cmd(ctx: click.Context) -> None:
    """Deliver the hook events queued while the team store was unreachable, in order.

    Hooks queue events in .opencode/hook-queue.jsonl when the PostgreSQL server cannot be
    reached and deliver them with the next hook; this delivers them now (docs/team.md).
    Exits 1, keeping the queue, when the server is still unreachable.
    """
    from filelock import Timeout

    from opensage.hook_queue import deliver, pending, queue_path

    host = _host(ctx)
    if not pending(host.workspace):
        counts = {"delivered": 0, "remaining": 0, "rejected": 0, "dropped": 0}
    else:
        try:
            done = deliver(host)
        except OpenSageError as exc:
            _fail(exc)
        except Timeout:
            _fail(OpenSageError(f"{queue_path(host.workspace)} is being delivered by another process; try again."))
        counts = {"delivered": done.delivered, "remaining": done.remaining, "rejected": done.rejected,
                  "dropped": done.dropped}
    if ctx.find_root().obj.get("json"):
        click.echo(json.dumps(counts))
        return
    if not counts["delivered"] and not counts["rejected"]:
        click.echo("the hook queue is empty")
        return
    line = f"delivered {counts['delivered']} queued hook events"
    if counts["rejected"]:
        line += (f"; {counts['rejected']} unreadable entries set aside in "
                 f"{host.workspace.state_dir / 'hook-queue.rejected.jsonl'}")
    if counts["dropped"]:
        line += f"; {counts['dropped']} events were dropped while the queue was full"
    click.echo(line)


@memory_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True), required=False)
@click.option("--markdown", "markdown_dir", type=click.Path(file_okay=False), default=None,
              help="Apply edits made in a Markdown mirror folder (written by export --markdown) instead.")
@click.pass_context
def memory_import_cmd(ctx: click.Context, path: str | None, markdown_dir: str | None) -> None:
    """Load a memory.jsonl (PATH, or - for stdin); existing entities get new observations merged.

    With --markdown DIR: apply a person's edits in a Markdown mirror (content, tags,
    relations, new files); conflicts and errors are listed and exit with status 1.
    """
    if markdown_dir is not None or path is None:
        if path is not None or markdown_dir is None:
            _fail(UsageError("give either PATH (a memory.jsonl) or --markdown DIR, not both or neither."))
        return _markdown_import(ctx, markdown_dir)
    from opensage.plugins.graph_memory.memory_compat import compat_for, import_jsonl

    try:
        if path == "-":
            text, source = _read_stdin_text(), "<stdin>"
        else:
            try:
                # like the reference server (Node's readFile "utf-8"): invalid UTF-8 -> U+FFFD
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text, source = fh.read(), path
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}; give the path of a memory.jsonl file.") from None
        counts = import_jsonl(compat_for(_host(ctx)), text, source)
    except OpenSageError as exc:
        _fail(exc)
    if ctx.find_root().obj.get("json"):
        click.echo(json.dumps(counts))
    else:
        click.echo(f"imported {counts['entities']} entities, {counts['observations']} observations, "
                   f"{counts['relations']} relations"
                   + (f"; skipped {counts['skipped']} lines of another type" if counts.get("skipped") else ""))


@memory_group.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write to this file (default: stdout).")
@click.option("--markdown", "markdown_dir", type=click.Path(file_okay=False), default=None,
              help="Instead: write one Markdown file per lasting node into this folder (docs/memory.md).")
@click.option("--force", is_flag=True, help="With --markdown: overwrite files edited since the last export/import.")
@click.pass_context
def memory_export_cmd(ctx: click.Context, output: str | None, markdown_dir: str | None, force: bool) -> None:
    """Write the whole graph as reference memory-server JSONL (entities, then relations)."""
    if markdown_dir is not None:
        if output:
            _fail(UsageError("give either --output (JSONL) or --markdown DIR, not both."))
        from pathlib import Path

        from opensage.plugins.graph_memory.graph import graph_for
        from opensage.plugins.graph_memory.markdown import export_markdown

        try:
            counts = export_markdown(graph_for(_host(ctx)), Path(markdown_dir), force=force)
        except OpenSageError as exc:
            _fail(exc)
        if ctx.find_root().obj.get("json"):
            click.echo(json.dumps(counts))
        else:
            click.echo(f"wrote {counts['written']} node files to {counts['folder']}"
                       + (f"; removed {counts['removed']} files of nodes no longer in memory" if counts["removed"] else ""))
        return
    from opensage.plugins.graph_memory.memory_compat import compat_for, export_jsonl

    try:
        text = export_jsonl(compat_for(_host(ctx)))
    except OpenSageError as exc:
        _fail(exc)
    if output:
        from pathlib import Path

        from opensage.store import atomic_write_text

        atomic_write_text(Path(output), text)
    else:
        click.echo(text, nl=False)


_SYNC_EPISODES_HELP = "Also copy raw episodes (session turns), and with them every provenance link."
_SYNC_DRY_RUN_HELP = "Count what would change and write nothing."


@memory_group.command("push")
@click.option("--to", "url", metavar="URL", default=None,
              help="The team store: postgresql://user[:password]@host:5432/dbname (default: $OPENSAGE_DATABASE_URL), "
                   "or sqlite:///path/opensage.db or a workspace folder.")
@click.option("--episodes", is_flag=True, help=_SYNC_EPISODES_HELP)
@click.option("--dry-run", is_flag=True, help=_SYNC_DRY_RUN_HELP)
@click.pass_context
def memory_push_cmd(ctx: click.Context, url: str | None, episodes: bool, dry_run: bool) -> None:
    """Copy this workspace's local memory (.opencode/opensage.db) to the team store.

    Nodes, edges, tags and provenance links; identical rows are skipped, so running it
    again copies nothing; a node or edge both stores have in different versions keeps
    the newer one (docs/team.md#moving-memory-between-stores). Nothing is deleted.
    """
    _memory_sync(ctx, "push", url, episodes, dry_run)


@memory_group.command("pull")
@click.option("--from", "url", metavar="URL", default=None,
              help="The team store: postgresql://user[:password]@host:5432/dbname (default: $OPENSAGE_DATABASE_URL), "
                   "or sqlite:///path/opensage.db or a workspace folder.")
@click.option("--episodes", is_flag=True, help=_SYNC_EPISODES_HELP)
@click.option("--dry-run", is_flag=True, help=_SYNC_DRY_RUN_HELP)
@click.pass_context
def memory_pull_cmd(ctx: click.Context, url: str | None, episodes: bool, dry_run: bool) -> None:
    """Copy the team store's memory of this project into the local store (.opencode/opensage.db).

    The same rules as push, the other way round; the local store is created if missing.
    """
    _memory_sync(ctx, "pull", url, episodes, dry_run)


def _memory_sync(ctx: click.Context, direction: str, url: str | None, episodes: bool, dry_run: bool) -> None:
    from pathlib import Path

    from opensage.plugins.graph_memory.sync import close_store, local_store, open_store, sync, team_url
    from opensage.store import find_workspace

    opened = []
    try:
        root = find_workspace(ctx.find_root().obj.get("workspace"))
        # the team store first: an unreachable server or a bad URL fails before a local file is made
        team, team_name = open_store(team_url(url, root), root)
        opened.append(team)
        local = local_store(root, must_exist=direction == "push")
        opened.append(local)
        if getattr(team, "path", None) is not None and Path(team.path).resolve() == Path(local.path).resolve():
            raise UsageError(f"the team store {team_name!r} is this workspace's own local store; "
                             "name another store with --to/--from.")
        local_name = str(local.path)
        if direction == "push":
            report = sync(local, team, episodes=episodes, dry_run=dry_run, source_name=local_name, dest_name=team_name)
        else:
            report = sync(team, local, episodes=episodes, dry_run=dry_run, source_name=team_name, dest_name=local_name)
    except OpenSageError as exc:
        _fail(exc)
    finally:
        for db in opened:
            close_store(db)
    if ctx.find_root().obj.get("json"):
        click.echo(json.dumps(report.as_dict()))
    else:
        from opensage.termsafe import clean

        click.echo(clean(report.text("pushed" if direction == "push" else "pulled")))


def _markdown_import(ctx: click.Context, folder: str) -> None:
    from pathlib import Path

    from opensage.plugins.graph_memory.graph import graph_for
    from opensage.plugins.graph_memory.markdown import import_markdown
    from opensage.termsafe import clean

    try:
        report = import_markdown(graph_for(_host(ctx)), Path(folder))
    except OpenSageError as exc:
        _fail(exc)
    if ctx.find_root().obj.get("json"):
        click.echo(json.dumps(report))
    else:
        click.echo(f"{len(report['updated'])} updated, {len(report['created'])} created, {report['unchanged']} unchanged, "
                   f"{len(report['stale'])} stale, {len(report['conflicts'])} conflicts, {len(report['errors'])} errors")
        for key in ("updated", "created", "stale", "missing", "conflicts", "errors"):
            for line in report[key]:
                click.echo(clean(f"  {key[:-1] if key.endswith('s') else key}: {line}"))
    if report["conflicts"] or report["errors"]:
        ctx.exit(1)


@cli.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Also open the page in the default browser.")
@click.pass_context
def ui_cmd(ctx: click.Context, port: int, open_browser: bool) -> None:
    """Serve a local web view of graph memory: search, nodes with relations and provenance, edits.

    Listens on 127.0.0.1 only; the printed URL holds a one-time token (docs/memory.md#web-view).
    """
    from opensage.plugins.graph_memory.webui import serve

    def ready(url: str) -> None:
        click.echo(f"opensage ui: open {url}  (Ctrl-C stops)")
        sys.stdout.flush()
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        serve(_host(ctx), port=port, on_ready=ready)
    except OSError as exc:
        _fail(UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; pick another --port or 0."))
    except OpenSageError as exc:
        _fail(exc)


@cli.command("run")
@click.argument("task")
@click.option("--plan-only", is_flag=True, help="Analyse and print the plan; run nothing.")
@click.option("--topology", type=click.Choice(["auto", "single", "vertical", "horizontal"]), default="auto",
              show_default=True, help="Force a topology instead of the coordinator's choice.")
@click.option("--step", "steps", multiple=True, help="A subtask for a vertical chain (repeat, in order).")
@click.option("--strategy", "strategies", multiple=True, help="A strategy for a horizontal ensemble (repeat).")
@click.option("--merge", type=click.Choice(["majority_vote", "llm_judge", "best_score"]), default=None,
              help="How an ensemble picks its result (default: best_score with tests, else llm_judge).")
@click.option("--verifier", default=None, help='Command that decides best_score, e.g. "python -m pytest -q".')
@click.option("--max-steps", type=click.IntRange(1, 500), default=None, help="Model calls per agent.")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Tokens per agent.")
@click.option("--max-cost", type=click.FloatRange(0, min_open=True), default=None, help="USD per agent.")
@click.option("--model", default=None, help="litellm model string (default: $OPENSAGE_MODEL).")
@click.option("--strict", is_flag=True, help="Deny tools an agent file marks 'ask' (default: allow them).")
@click.option("--json", "run_json", is_flag=True, help="Print the report as JSON (no live display).")
@click.option("--show-diff", is_flag=True, help="Print the full diff of the agent's changes before applying them.")
@click.option("--review", is_flag=True, help="Ask before applying the agent's changes (needs a terminal).")
@click.option("--no-apply", is_flag=True, help="Apply nothing; keep the agent's copy and print its path.")
@click.pass_context
def run_cmd(ctx: click.Context, task: str, plan_only: bool, topology: str, steps: tuple[str, ...],
            strategies: tuple[str, ...], merge: str | None, verifier: str | None, max_steps: int | None,
            max_tokens: int | None, max_cost: float | None, model: str | None, strict: bool, run_json: bool,
            show_diff: bool, review: bool, no_apply: bool) -> None:
    """Plan, run and record TASK with generated agents (single, vertical or horizontal).

    Shows a live display (plan, current step, agent, tokens, cost), a summary of each
    agent's changes before they are applied (protected paths are refused) and a final
    report; exit code 0 when the run succeeded, 1 when it failed, 2 for bad input or no
    model.
    """
    import asyncio

    from opensage import llm
    from opensage.plugins.agents.runner import Budget

    as_json = run_json or ctx.find_root().obj.get("json")
    if review and no_apply:
        _fail(UsageError("--review and --no-apply exclude each other; pick one."))
    try:
        llm.model_name(model)
        from opensage.plugins.agents.topology import REVIEW
        from opensage.plugins.coordinator.coordinator import coordinate
        from opensage.plugins.coordinator.progress import RunProgress, report_table

        host = _host(ctx)
        budget = Budget(steps=max_steps)
        if max_tokens:
            budget.max_tokens = max_tokens
        if max_cost:
            llm.require_price(model, "--max-cost")  # a USD budget must be able to trigger
            budget.max_cost_usd = max_cost
        session = None if plan_only else host.session(source="run")  # a plan-only run writes nothing
        if session is not None:
            host.start_session(session)
        kwargs = dict(plan_only=plan_only, topology=None if topology == "auto" else topology,
                      steps=list(steps), strategies=list(strategies), merge_strategy=merge, verifier=verifier,
                      session=session, budget=budget, model=model, ask_policy="deny" if strict else "allow")
        live_box: list = []
        mode = "no-apply" if no_apply else "review" if review else "apply"
        token = REVIEW.set(_change_review(mode, show_diff, quiet=as_json, live_box=live_box))
        try:
            if as_json:
                report = asyncio.run(coordinate(host, task, **kwargs))
            else:
                from rich.console import Console
                from rich.live import Live

                err = Console(stderr=True)
                if err.is_terminal:
                    progress = RunProgress(task)
                    with Live(progress.render(), console=err, refresh_per_second=8) as live:
                        progress.live = live
                        live_box.append(live)
                        report = asyncio.run(coordinate(host, task, on_event=progress, **kwargs))
                else:  # a pipe or a log file: one line per event as it happens, the panel at the end
                    progress = RunProgress(task, lines=err)
                    try:
                        report = asyncio.run(coordinate(host, task, on_event=progress, **kwargs))
                    finally:
                        err.print(progress.render())
        finally:
            REVIEW.reset(token)
            if session is not None:
                host.end_session(session)
    except OpenSageError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report.as_dict(), default=str, ensure_ascii=False))
    else:
        from rich.console import Console

        Console(soft_wrap=True).print(report_table(report))
    if report.executed and not report.success:
        sys.exit(1)


def _change_review(mode: str, show_diff: bool, quiet: bool, live_box: list):
    """The review step of ``opensage run`` (see ``ScratchCopy.apply``): show the agent's
    changes (summary; full diff with ``--show-diff``) on stderr, then apply (``apply``),
    ask (``review``) or keep the copy (``no-apply``). Returns ``review(scratch) -> bool``."""

    def decide(scratch) -> bool:
        from rich.console import Console

        from opensage.plugins.coordinator.progress import changes_table
        from opensage.termsafe import clean

        live = live_box[0] if live_box else None
        if live is not None:
            live.stop()
        try:
            err = Console(stderr=True, soft_wrap=True)
            if not quiet:
                err.print(changes_table(scratch.summary(), str(scratch.path)))
                if show_diff:
                    err.print(clean(scratch.diff(max_chars=500_000)), markup=False, highlight=False)
            if mode == "no-apply":
                if not quiet:
                    err.print(clean(f"not applied (--no-apply); the agent's copy is kept at {scratch.path}"),
                              markup=False)
                return False
            if mode == "review":
                try:
                    ok = click.confirm("Apply these changes to the project?", default=False, err=True)
                except click.Abort:
                    ok = False
                if not ok:
                    err.print(clean(f"not applied; the agent's copy is kept at {scratch.path}"), markup=False)
                return ok
            return True
        finally:
            if live is not None:
                live.start()

    return decide


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``opensage`` script."""
    # pydantic scans every installed distribution for pydantic plugins on the first model
    # build (~50 ms); the CLI uses none. Respect a user's explicit setting.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from opensage import cleanup

    cleanup.install_signal_handlers()  # SIGTERM/SIGHUP/SIGINT: sandboxed runs killed, scratch removed
    try:
        cli.main(args=argv, prog_name="opensage", standalone_mode=True)
    except OpenSageError as exc:  # pragma: no cover - commands handle their own
        _fail(exc)
