"""``opensage install opencode`` / ``opensage uninstall opencode``.

Install adds to a project, never overwriting what is there:

* ``opencode.json``: ``mcp.opensage`` = a local MCP server running ``opensage mcp``
  (``type: local``, ``command`` array; ``opensage`` is found on PATH, no path is written);
* ``.opencode/plugin/opensage.js``: the shim that forwards session events to
  ``opensage hook`` and adds graph memory to the compaction context
  (``experimental.session.compacting``);
* ``.opencode/command/<name>.md``: one slash command per ``@``-command
  (``/memory-query auth flow``), which asks the model to call the matching MCP tool;
* ``.gitignore``: the database (session transcripts), lock files and the socket folder.

Generated agents need nothing: they are written to ``.opencode/agent/`` (the
workspace's agent folder), where OpenCode loads them as subagents.

What was added is recorded in ``.opencode/opensage-install.json``; uninstall removes
exactly that.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, TextIO

from opensage.errors import UsageError
from opensage.untrusted import loads
from opensage.integrations._files import (
    MARKER,
    Manifest,
    locked,
    OPENSAGE,
    add_gitignore,
    path_warning,
    read_json,
    release_lock,
    remove_gitignore,
    remove_json_keys,
    remove_owned,
    save_json,
    set_key,
    write_owned,
)
from opensage.store import Workspace

__all__ = ["install", "uninstall", "plugin_source", "command_markdown", "handle_hook", "MCP_NAME"]

MCP_NAME = "opensage"
PLUGIN_REL = ".opencode/plugin/opensage.js"
COMMAND_DIR = ".opencode/command"
CONFIG_NAME = "opencode.json"


def plugin_source(workspace: Workspace) -> str:
    """The shim's JavaScript. It runs ``opensage`` from PATH in the project folder OpenCode
    gives it (``$OPENSAGE_COMMAND``, a JSON array or one path, overrides that per user), so
    the file holds no path and a team can commit it."""
    template = resources.files("opensage.integrations").joinpath("opencode_plugin.js").read_text(encoding="utf-8")
    config = {"command": [OPENSAGE], "marker": MARKER}
    return template.replace("__OPENSAGE_CONFIG__", json.dumps(config))


def mcp_entry(workspace: Workspace) -> dict[str, Any]:
    """The ``mcp.opensage`` entry of ``opencode.json``: a local server started as
    ``opensage mcp`` (found on PATH, so the file is portable between machines).
    """
    return {"type": "local", "command": [OPENSAGE, "mcp"], "enabled": True}


def command_markdown(command) -> str:
    """An OpenCode command file for one ``@``-command (frontmatter + template)."""
    from opensage.commands import argument_table

    rows = argument_table(command)
    lines = []
    for row in rows:
        need = "required" if row["required"] else f"optional, default {json.dumps(row['default'])}"
        desc = f": {row['description']}" if row["description"] else ""
        lines.append(f"- `{row['name']}` ({row['type']}, {need}){desc}")
    first = next((r["name"] for r in rows if r["required"]), None)
    hint = f" When the request is plain text, it is the `{first}` argument." if first else ""
    summary = command.summary.replace("\n", " ").replace('"', "'")
    return (
        "---\n"
        f'description: "{summary}"\n'
        "---\n"
        f"<!-- {MARKER} -->\n"
        f"Call the `{MCP_NAME}_{command.name}` tool (OpenSage MCP server) once, with arguments taken "
        f"from this request: $ARGUMENTS\n\n"
        f"Its arguments:{hint}\n" + ("\n".join(lines) or "- none") + "\n\n"
        "Then report the tool's result to the user as it is.\n"
    )


def _project_relative(path: str, root: Path) -> str:
    """``path`` relative to the project when it lies inside it (OpenCode passes absolute paths)."""
    if not Path(path).is_absolute():
        return path
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return path


class SessionEnds:
    """Which sessions this process must still end, so each ends once per stretch of work.

    A session is *open* here once an event for it arrived; ``session-end`` closes it. A
    ``session-end`` for a session that is not open here and already has ``ended_at`` (the
    shim's idle timer, dispose and end of input can all ask) is skipped: nothing new to
    compress. A session resumed later (``opencode run -s ID``, the TUI) is open again
    with its first new event, and its next end compresses what came since.
    """

    def __init__(self, host) -> None:
        self.host = host
        self.open: set[str] = set()

    def note(self, hook: str, session_id: str | None) -> bool:
        """Record one event; False when it is a ``session-end`` to skip."""
        if not session_id:
            return True
        if hook != "session-end":
            self.open.add(session_id)
            return True
        if session_id in self.open:
            self.open.discard(session_id)
            return True
        from opensage.hook_queue import recorder

        # the team store down: None, and the end is queued (opensage/hook_queue.py)
        row = recorder(self.host).ask(
            lambda: self.host.db.conn.execute("SELECT ended_at FROM sessions WHERE id=?", (session_id,)).fetchone())
        return not (row and row[0] is not None)

    def end_all(self) -> list[str]:
        """End every session still open here (end of input: the OpenCode process is gone)."""
        from opensage.hook_queue import batch
        from opensage.hooks import fire_hook
        from opensage.errors import OpenSageError

        ended = []
        with batch(self.host):
            for sid in sorted(self.open):
                try:
                    fire_hook(self.host, "session-end", {"session_id": sid, "source": "opencode"})
                    ended.append(sid)
                except OpenSageError:
                    pass
        self.open.clear()
        return ended


def serve_hooks(host, lines: Iterable[str], out: TextIO) -> int:
    """``opensage hook --from opencode``: answer one batch per input line until EOF.

    The shim starts this once per OpenCode process and writes one batch (a JSON object
    on one line) whenever events piled up; each answer is one JSON line, in order. A line
    that is not a valid batch is answered with ``{"error": "..."}`` and the loop goes on.
    At end of input (OpenCode exited, however it exited) every session that had events
    since its last ``session-end`` is ended, so it is compressed (:class:`SessionEnds`).

    :returns: how many batches were answered.
    """
    count = 0
    ends = SessionEnds(host)
    try:
        count = _serve_lines(host, lines, out, ends)
    finally:
        ends.end_all()
    return count


def _serve_lines(host, lines: Iterable[str], out: TextIO, ends: "SessionEnds") -> int:
    count = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            try:
                payload = loads(line, "batch")
            except UsageError as exc:
                raise UsageError(f"{exc} Send one batch per line.") from None
            if not isinstance(payload, dict):
                raise UsageError('each line must be one JSON object: {"events": [...]}.')
            answer = handle_hook(host, payload, ends)
        except UsageError as exc:
            answer = {"error": str(exc)}
        except (ValueError, RecursionError) as exc:  # one bad batch must not end the stream
            answer = {"error": f"batch rejected: {type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
        count += 1
    return count


def handle_hook(host, payload: dict[str, Any], ends: SessionEnds | None = None) -> dict[str, Any]:
    """Fire one batch of hook events sent by the plugin shim.

    The shim queues events while a batch is being recorded and sends what piled up as
    the next batch, to one long-lived ``opensage hook --from opencode`` process (see
    :func:`serve_hooks`), so events cost no Python start-up each.

    :param payload: ``{"events": [{"hook": EVENT, "payload": {...}}, ...]}`` where EVENT
        and payload are those of ``opensage hook EVENT`` (``docs/session-events.md``);
        the session source defaults to ``opencode``.
    :returns: ``{"results": [...]}``, one per event, in order: the ``opensage hook``
        answer (for ``user-message`` with ``"context"``: memory relevant to the prompt,
        from the ``prompt_context`` hook, when there is any), or ``{"ok": false, "error": "..."}`` for an event that was rejected (the
        others are still recorded).
    :param ends: the process's :class:`SessionEnds` (a ``session-end`` with nothing new
        since the last one answers ``{"ok": true, ..., "skipped": "already ended"}``).
    :raises UsageError: the batch itself is malformed.
    """
    from opensage.hook_queue import batch

    events = payload.get("events")
    if not isinstance(events, list):
        raise UsageError('--from opencode expects {"events": [{"hook": EVENT, "payload": {...}}]} on stdin.')
    with batch(host) as rec:  # one wait for a dead team store per batch; order kept
        return {"results": [_handle_one(host, rec, i, item, ends) for i, item in enumerate(events)]}


def _handle_one(host, rec, i: int, item: Any, ends: SessionEnds | None) -> dict[str, Any]:
    """One event of a batch (see :func:`handle_hook`): its answer."""
    from opensage.hooks import fire_hook
    from opensage.errors import OpenSageError

    if not isinstance(item, dict) or not isinstance(item.get("hook"), str) or not isinstance(item.get("payload", {}), dict):
        return {"ok": False, "error": f"events[{i}]: expected {{\"hook\": EVENT, \"payload\": {{...}}}}"}
    body = dict(item.get("payload") or {})
    body.setdefault("source", "opencode")
    if item["hook"] == "file-edit" and isinstance(body.get("path"), str):
        body["path"] = _project_relative(body["path"], host.workspace.root)
    sid = body.get("session_id") if isinstance(body.get("session_id"), str) else None
    if ends is not None and not ends.note(item["hook"], sid):
        return {"ok": True, "session_id": sid, "hook": item["hook"], "skipped": "already ended"}
    try:
        answer = fire_hook(host, item["hook"], body)
        if (item["hook"] == "user-message" and answer.get("ok") and not answer.get("queued")
                and isinstance(body.get("text"), str)):
            context = rec.ask(lambda: host.prompt_context(host.session(answer["session_id"], source="opencode"),
                                                          body["text"]))
            if context:  # the shim adds it to this session's system prompt
                answer["context"] = context
        return answer
    except OpenSageError as exc:
        return {"ok": False, "error": f"events[{i}] ({item['hook']}): {exc}"}


def install(host) -> list[str]:
    """Add the MCP server, plugin shim and command files to the host's project.

    :returns: one line per change (``wrote ...``, ``kept ...``).
    :raises UsageError: ``opencode.json`` is not a JSON object, or already has a
        different ``mcp.opensage`` entry (nothing is written then).
    """
    workspace: Workspace = host.workspace
    root = workspace.root
    report: list[str] = []
    config_path = root / CONFIG_NAME
    if not config_path.exists() and (root / "opencode.jsonc").exists():
        raise UsageError("this project uses opencode.jsonc; add the mcp entry by hand "
                         "(see docs/opencode.md) or rename it to opencode.json.")
    with locked(workspace):
        manifest = Manifest(workspace, "opencode")
        config = read_json(config_path)
        created = not config_path.exists()
        if created:
            config["$schema"] = "https://opencode.ai/config.json"
        entry = mcp_entry(workspace)
        if not set_key(config, ["mcp", MCP_NAME], entry):
            if ["mcp", MCP_NAME] not in manifest.json_keys.get(CONFIG_NAME, []):
                raise UsageError(f"{CONFIG_NAME} already has a different mcp.{MCP_NAME} entry; "
                                 f"remove it, then run 'opensage install opencode' again.")
            config["mcp"][MCP_NAME] = entry  # ours, from an earlier install: refresh it
        save_json(root, CONFIG_NAME, config, manifest)
        if created:
            manifest.add_json_key(CONFIG_NAME, ["$schema"])
        manifest.add_json_key(CONFIG_NAME, ["mcp", MCP_NAME])
        report.append(f"{'wrote' if created else 'updated'} {CONFIG_NAME} (mcp.{MCP_NAME})")
        write_owned(root, PLUGIN_REL, plugin_source(workspace), manifest, report)
        written: list[str] = []
        for command in host.commands.values():
            lines: list[str] = []
            write_owned(root, f"{COMMAND_DIR}/{command.name}.md", command_markdown(command), manifest, lines)
            for line in lines:
                if line.startswith("wrote "):
                    written.append(f"/{command.name}")
                else:
                    report.append(line)
        if written:
            report.append(f"wrote {len(written)} commands in {COMMAND_DIR}/: {' '.join(written)}")
        add_gitignore(root, manifest, report)
        manifest.save()
    path_warning(report, OPENSAGE)
    return report


def uninstall(host) -> list[str]:
    """Remove exactly what :func:`install` added (recorded in the install manifest)."""
    workspace: Workspace = host.workspace
    root = workspace.root
    report: list[str] = []
    with locked(workspace):
        manifest = Manifest(workspace, "opencode")
        if not manifest.installed:
            return ["nothing to remove: opensage is not installed for OpenCode here"]
        remove_json_keys(root, manifest, report)
        removed: list[str] = []
        remove_owned(root, manifest, removed)
        commands = [line for line in removed if line.startswith(f"removed {COMMAND_DIR}/")]
        report += [line for line in removed if line not in commands]
        if commands:
            report.append(f"removed {len(commands)} commands from {COMMAND_DIR}/")
        remove_gitignore(root, manifest, report)
        manifest.save()
    release_lock(workspace)
    return report
