"""Claude Code: ``opensage install claude`` and ``opensage hook --from claude``.

Install adds, never overwriting what is there:

* ``.mcp.json``: ``mcpServers.opensage`` (stdio, ``opensage mcp``);
* ``.claude/settings.json``: one command hook per event in :data:`HOOK_EVENTS`, each
  running ``opensage-hook claude`` (a tiny client of the workspace's hook server, see
  :mod:`opensage.integrations.hookd`), and the permission rule
  :data:`PERMISSION_RULE` so headless ``claude -p`` may call opensage's tools;
* ``.gitignore``: the database (session transcripts), lock files and the socket folder;

Committed files name the commands, never a path: the hosts find ``opensage`` and
``opensage-hook`` on PATH and start them in the project.
* ``.claude/agents/<name>.md``: the generated agents in Claude Code's subagent format
  (rendered by the agents plugin);
* ``.claude/skills/opensage/SKILL.md``: the pack's meta skill.

:func:`handle_hook` maps the JSON Claude Code sends on stdin to session events
(the table is in ``docs/session-events.md``) and returns the JSON Claude reads back.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from opensage.errors import UsageError
from opensage.integrations._files import (
    Manifest,
    finish_json,
    locked,
    OPENSAGE,
    add_gitignore,
    path_warning,
    read_json,
    remove_json_keys,
    remove_gitignore,
    remove_owned,
    save_json,
    set_key,
    write_owned,
)
from opensage.store import Workspace

__all__ = ["install", "uninstall", "handle_hook", "HOOK_EVENTS", "relevant_memory"]

MCP_NAME = "opensage"
#: Claude Code hook events the installer subscribes to.
HOOK_EVENTS = (
    "SessionStart", "UserPromptSubmit", "PostToolUse", "PostToolUseFailure", "PreCompact", "Stop", "SubagentStop",
    "SessionEnd",
)
#: The permission rule install adds: every tool of our MCP server, without a prompt
#: (``claude -p`` denies an MCP tool that no rule allows).
PERMISSION_RULE = f"mcp__{MCP_NAME}__*"
#: The hook command written to .claude/settings.json for events that need an answer or
#: must be handled at once (found on PATH).
HOOK_COMMAND = "opensage-hook claude"
#: Events whose answer is always ``{}`` and that come often (every tool call, every
#: answer): their hook only appends the JSON to the workspace's queue folder with ``sh``
#: (no Python start-up); the hook server, or the next ``opensage-hook`` event, records
#: them in order before anything else (:func:`opensage.integrations.hookd.drain_queue`).
QUEUED_EVENTS = ("PostToolUse", "PostToolUseFailure", "Stop", "SubagentStop")
#: The queueing hook: a private folder, a file named by the nanosecond clock and the pid
#: (so names sort in arrival order), written then renamed (readers never see a part).
#: The workspace is found as opensage finds it: ``$OPENSAGE_WORKSPACE``, else the git
#: root above ``$CLAUDE_PROJECT_DIR`` (shell builtins only), else that folder.
QUEUE_COMMAND = ('umask 077; w="${OPENSAGE_WORKSPACE:-}"; if [ -z "$w" ]; then s="${CLAUDE_PROJECT_DIR:-$PWD}"; '
                 'w="$s"; while [ -n "$w" ] && [ ! -e "$w/.git" ]; do w="${w%/*}"; done; '
                 '[ -n "$w" ] || w="$s"; fi; d="$w/.opencode/run/queue"; { [ -d "$d" ] || mkdir -p "$d"; } && '
                 'f="$d/$(date +%s%N)-$$" && cat > "$f.tmp" && mv "$f.tmp" "$f.json"')
#: Claude Code tools whose ``tool_input.file_path`` names a file they changed.
EDIT_TOOLS = {"Edit", "Write", "MultiEdit", "NotebookEdit"}
#: Characters of a tool response kept in its episode.
MAX_RESULT_CHARS = 20_000


# -- hook mapping --------------------------------------------------------------------------
def _rel_path(path: str, workspace: Workspace, cwd: str | None) -> str:
    p = Path(path)
    if not p.is_absolute() and cwd:
        p = Path(cwd) / p
    try:
        return str(p.resolve().relative_to(workspace.root.resolve()))
    except (ValueError, OSError):
        return str(path)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _tool_text(response: Any) -> str:
    """What a tool gave back, as the text a reader wants: an MCP result's text content
    (Claude passes ``[{"type": "text", "text": ...}]``), Bash's stdout and stderr, a Read's
    file content; anything else as JSON."""
    if isinstance(response, list) and response and all(isinstance(b, dict) for b in response):
        texts = [b.get("text", "") for b in response if b.get("type") == "text" and isinstance(b.get("text"), str)]
        if len(texts) == len(response):
            return "\n".join(texts)
    if isinstance(response, dict):
        if isinstance(response.get("stdout"), str) or isinstance(response.get("stderr"), str):
            return "\n".join(x for x in (response.get("stdout"), response.get("stderr")) if isinstance(x, str) and x)
        file = response.get("file")
        if isinstance(file, dict) and isinstance(file.get("content"), str):
            return file["content"]
    return _as_text(response)


def _last_assistant_from_transcript(path: str | None) -> str:
    """The text of the last assistant entry of a Claude Code transcript (JSONL), or ''."""
    if not path:
        return ""
    try:
        # "\n" only: U+2028 inside a JSON string is text, not a line break; bad UTF-8 -> U+FFFD
        lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        message = entry.get("message") if isinstance(entry, dict) else None
        if entry.get("type") != "assistant" or not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]
        if any(texts):
            return "\n".join(t for t in texts if t)
    return ""


_WORD = re.compile(r"[A-Za-z0-9_]{3,}")


def relevant_memory(host, text: str, limit: int = 5, max_chars: int = 2000) -> str:
    """Graph-memory nodes matching ``text`` (FTS5 BM25 over label, identifier words and
    content), one line each, at most ``max_chars`` characters; '' when nothing matches."""
    from opensage.plugins.graph_memory.graph import format_id, graph_for

    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text or "")))[:24]
    if not words:
        return ""
    graph = graph_for(host)
    query = " OR ".join(f'"{w}"' for w in words)
    rows = graph.db.conn.execute(
        "SELECT n.id, n.type, n.label, n.content FROM nodes_fts f JOIN nodes n ON n.id = f.rowid"
        " WHERE nodes_fts MATCH ? ORDER BY bm25(nodes_fts) LIMIT ?", (query, limit)
    ).fetchall()
    lines = []
    for r in rows:
        content = " ".join((r["content"] or "").split())
        lines.append(f"- {r['label']} ({r['type']}, {format_id(r['id'])}): {content[:300]}".rstrip(": "))
    out = "OpenSage memory relevant to this request:\n" + "\n".join(lines) if lines else ""
    return out[:max_chars]


def _context_output(event: str, context: str | None) -> dict[str, Any]:
    if not context:
        return {}
    return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": context}}


def handle_hook(host, payload: dict[str, Any], timestamp: float | None = None) -> dict[str, Any]:
    """Turn one Claude Code hook payload into session events; return Claude's JSON answer.

    :param payload: the JSON Claude Code wrote to stdin (``session_id``,
        ``hook_event_name``, ``cwd``, and the event's own fields).
    :returns: ``{}`` or ``{"hookSpecificOutput": {"hookEventName", "additionalContext"}}``
        (SessionStart, UserPromptSubmit) with relevant memory.
    :param timestamp: when the event happened (epoch seconds; a queued event's file
        name), else now.

    With the team store unreachable, the session's operations are queued locally and
    delivered by a later hook (:mod:`opensage.hook_queue`); the answer is then ``{}``.
    :raises UsageError: ``session_id`` or ``hook_event_name`` missing. Unknown events
        are ignored (``{}``), so new Claude Code events never break a session.
    """
    from opensage.types import SessionEvent

    event = payload.get("hook_event_name")
    sid = payload.get("session_id")
    if not isinstance(event, str) or not event:
        raise UsageError('Claude hook JSON has no "hook_event_name"; run this from a Claude Code hook.')
    if not isinstance(sid, str) or not sid:
        raise UsageError('Claude hook JSON has no "session_id"; run this from a Claude Code hook.')
    if event not in HOOK_EVENTS:
        return {}
    from opensage.hook_queue import recorder

    when = {"timestamp": timestamp} if timestamp is not None else {}
    rec = recorder(host)  # the team store down: events are queued (opensage/hook_queue.py)
    session = rec.session(sid, "claude")
    workspace = host.workspace
    cwd = payload.get("cwd")
    meta = {"claude_event": event}

    if event == "SessionStart":
        if rec.start(session):
            return _context_output(event, rec.ask(lambda: host.compaction_context(session)))
        return {}
    if event == "UserPromptSubmit":
        prompt = _as_text(payload.get("prompt", ""))
        if not rec.record(session, SessionEvent(**when, kind="user_message", role="user", text=prompt, meta=meta)):
            return {}

        def context() -> str | None:
            found = host.prompt_context(session, prompt)
            if found is None:  # no plugin answers prompt_context: plain FTS5 over the graph
                found = relevant_memory(host, prompt)
            return found

        return _context_output(event, rec.ask(context))
    if event in ("PostToolUse", "PostToolUseFailure"):
        tool = str(payload.get("tool_name") or "unknown")
        tool_input = payload.get("tool_input")
        args = tool_input if isinstance(tool_input, dict) else {"input": tool_input}
        call_id = payload.get("tool_use_id") if isinstance(payload.get("tool_use_id"), str) else None
        meta = {**meta, "tool_use_id": call_id}
        rec.record(session, SessionEvent(**when, kind="tool_call", tool=tool, args=args, call_id=call_id, meta=meta))
        if event == "PostToolUseFailure":  # a failed call (a command's non-zero exit, a denied tool...)
            result = _as_text(payload.get("error", ""))[:MAX_RESULT_CHARS]
            meta = {**meta, "is_error": True}
        else:
            result = _tool_text(payload.get("tool_response", ""))[:MAX_RESULT_CHARS]
        rec.record(session, SessionEvent(**when, kind="tool_result", tool=tool, text=result, call_id=call_id, meta=meta))
        if event == "PostToolUseFailure":
            return {}
        path = args.get("file_path") or args.get("notebook_path")
        if tool in EDIT_TOOLS and isinstance(path, str):
            rec.record(session, SessionEvent(**when, kind="file_edit", tool=tool, path=_rel_path(path, workspace, cwd), meta=meta))
        return {}
    if event in ("Stop", "SubagentStop"):
        text = payload.get("last_assistant_message")
        if not isinstance(text, str) or not text.strip():
            # a subagent's own transcript; never the main one (that would record the main
            # session's last answer again under the subagent's name)
            key = "transcript_path" if event == "Stop" else "agent_transcript_path"
            text = _last_assistant_from_transcript(payload.get(key))
        if text.strip():
            role = "assistant" if event == "Stop" else f"subagent:{payload.get('agent_type') or 'unknown'}"
            rec.record(session, SessionEvent(**when, kind="assistant_message", role=role, text=text, meta=meta))
        return {}
    if event == "PreCompact":
        rec.compact(session)  # the store down: compression waits in the queue
        return {}
    # SessionEnd
    rec.end(session)
    return {}


# -- install / uninstall ----------------------------------------------------------------------
SKILL_NAME = "opensage"


def _meta_skill() -> str | None:
    """The pack's meta skill, renamed ``opensage`` (a skill's ``name`` matches its folder)."""
    try:
        text = resources.files("opensage").joinpath("skills/meta/SKILL.md").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None
    if text.startswith("---"):
        end = text.find("\n---", 3)
        head = re.sub(r"(?m)^name:.*$", f"name: {SKILL_NAME}", text[:end], count=1)
        text = head + text[end:]
    return text


def _export_agents(workspace: Workspace, manifest: Manifest, report: list[str]) -> None:
    """Write every generated agent (current version) as ``.claude/agents/<name>.md``.

    The file is rendered by the agents plugin (:func:`opensage.plugins.agents.files.render_claude`);
    a file already holding exactly that text was written by ``@generate-agent`` and is
    left as it is; a different file we did not write is kept.
    """
    from opensage.plugins.agents import files

    root = workspace.root
    for spec in files.list_agents(workspace):
        rel = f".claude/agents/{spec.name}.md"
        text = files.render_claude(spec)
        path = root / rel
        if path.exists() and rel not in manifest.files:
            same = path.read_text(encoding="utf-8") == text
            report.append(f"kept {rel} ({'already exported' if same else 'exists and was not written by install'})")
            continue
        write_owned(root, rel, text, manifest, report)


def hook_command(workspace: Workspace | None = None, event: str = "UserPromptSubmit") -> str:
    """The command the installed hook for ``event`` runs (no path: portable across a team)."""
    return QUEUE_COMMAND if event in QUEUED_EVENTS else HOOK_COMMAND


def _add_allow(settings: dict, rel: str, manifest: Manifest) -> None:
    """Add :data:`PERMISSION_RULE` to ``settings["permissions"]["allow"]`` (recorded when new)."""
    permissions = settings.setdefault("permissions", {})
    if not isinstance(permissions, dict) or not isinstance(permissions.setdefault("allow", []), list):
        raise UsageError(f"{rel}: 'permissions.allow' must be a list; fix it, then install again.")
    if PERMISSION_RULE not in permissions["allow"]:
        permissions["allow"].append(PERMISSION_RULE)
        rules = manifest.allow.setdefault(rel, [])
        if PERMISSION_RULE not in rules:
            rules.append(PERMISSION_RULE)


def _remove_allow(settings: dict, rel: str, manifest: Manifest, report: list[str]) -> None:
    """Uninstall: drop the allow rules install added to ``settings`` (and emptied parents)."""
    permissions = settings.get("permissions")
    if isinstance(permissions, dict) and isinstance(permissions.get("allow"), list):
        for rule in manifest.allow.get(rel, []):
            if rule in permissions["allow"]:
                permissions["allow"].remove(rule)
                report.append(f"removed permissions.allow {rule} from {rel}")
        if not permissions["allow"]:
            del permissions["allow"]
        if not permissions:
            del settings["permissions"]


def _drop_hook(groups: list, command: str) -> list:
    """``groups`` without hooks running ``command`` (groups left empty are dropped)."""
    kept = []
    for g in groups:
        if isinstance(g, dict) and isinstance(g.get("hooks"), list):
            g = {**g, "hooks": [h for h in g["hooks"] if not (isinstance(h, dict) and h.get("command") == command)]}
            if not g["hooks"]:
                continue
        kept.append(g)
    return kept


def install(host) -> list[str]:
    """Add the MCP entry, hooks, agents and meta skill for Claude Code.

    :returns: one line per change.
    :raises UsageError: ``.mcp.json`` or ``.claude/settings.json`` is not a JSON object,
        or ``.mcp.json`` already has a different ``opensage`` server (nothing written).
    """
    workspace: Workspace = host.workspace
    root = workspace.root
    report: list[str] = []
    with locked(workspace):
        manifest = Manifest(workspace, "claude")
        mcp_path, settings_path = root / ".mcp.json", root / ".claude" / "settings.json"
        mcp = read_json(mcp_path)
        settings = read_json(settings_path)
        entry = {"type": "stdio", "command": OPENSAGE, "args": ["mcp"], "env": {}}
        if not set_key(mcp, ["mcpServers", MCP_NAME], entry):
            if ["mcpServers", MCP_NAME] not in manifest.json_keys.get(".mcp.json", []):
                raise UsageError(".mcp.json already has a different 'opensage' server; remove it, "
                                 "then run 'opensage install claude' again.")
            mcp["mcpServers"][MCP_NAME] = entry
        hooks = settings.setdefault("hooks", {})
        if not isinstance(hooks, dict):
            raise UsageError(".claude/settings.json: 'hooks' must be an object; fix it, then install again.")
        added_hooks = dict(manifest.hooks)
        for event in HOOK_EVENTS:
            command = hook_command(workspace, event)
            groups = hooks.setdefault(event, [])
            if not isinstance(groups, list):
                raise UsageError(f".claude/settings.json: hooks.{event} must be a list; fix it, then install again.")
            old = added_hooks.get(event)
            if old and old != command:  # an earlier install's command (e.g. an absolute interpreter path)
                groups[:] = _drop_hook(groups, old)
            present = any(isinstance(g, dict) and any(isinstance(h, dict) and h.get("command") == command
                                                      for h in g.get("hooks", [])) for g in groups)
            if not present:
                groups.append({"hooks": [{"type": "command", "command": command, "timeout": 60}]})
            added_hooks[event] = command
        _add_allow(settings, ".claude/settings.json", manifest)
        verbs = {rel: "updated" if (root / rel).exists() else "wrote" for rel in (".mcp.json", ".claude/settings.json")}
        save_json(root, ".mcp.json", mcp, manifest)
        manifest.add_json_key(".mcp.json", ["mcpServers", MCP_NAME])
        report.append(f"{verbs['.mcp.json']} .mcp.json (mcpServers.opensage)")
        save_json(root, ".claude/settings.json", settings, manifest)
        manifest.hooks = added_hooks
        report.append(f"{verbs['.claude/settings.json']} .claude/settings.json (hooks: {', '.join(HOOK_EVENTS)}; "
                      f"permissions.allow: {PERMISSION_RULE})")
        # Claude Code ignores a project's own allow rules until the user trusted the workspace
        # (a cloned repository must not grant itself tools); the per-user local settings count
        # at once, and the user running install is the one consenting.
        local_rel = ".claude/settings.local.json"
        local = read_json(root / local_rel)
        local_verb = "updated" if (root / local_rel).exists() else "wrote"
        _add_allow(local, local_rel, manifest)
        # claude -p sends its first request without waiting for MCP servers still starting
        # (status "pending"), so the first turn would lack our tools; 0 makes it wait
        # (bounded by Claude Code's MCP_TIMEOUT). Measured with Claude Code 2.1.197.
        env = local.get("env")
        if env is None or (isinstance(env, dict) and "MCP_CONNECTION_NONBLOCKING" not in env):
            set_key(local, ["env", "MCP_CONNECTION_NONBLOCKING"], "0")
            manifest.add_json_key(local_rel, ["env", "MCP_CONNECTION_NONBLOCKING"])
        save_json(root, local_rel, local, manifest)
        report.append(f"{local_verb} {local_rel} (permissions.allow: {PERMISSION_RULE}, "
                      "env.MCP_CONNECTION_NONBLOCKING=0; yours, not committed)")
        add_gitignore(root, manifest, report, extra=(".claude/settings.local.json",))
        _export_agents(workspace, manifest, report)
        skill = _meta_skill()
        if skill is None:
            report.append("skipped .claude/skills/opensage/SKILL.md (the package has no skills/meta/SKILL.md)")
        else:
            write_owned(root, ".claude/skills/opensage/SKILL.md", skill, manifest, report)
        manifest.save()
    path_warning(report, OPENSAGE)
    path_warning(report, "opensage-hook")
    return report


def uninstall(host) -> list[str]:
    """Remove exactly what :func:`install` added."""
    workspace: Workspace = host.workspace
    root = workspace.root
    report: list[str] = []
    with locked(workspace):
        manifest = Manifest(workspace, "claude")
        if not manifest.installed:
            return ["nothing to remove: opensage is not installed for Claude Code here"]
        remove_json_keys(root, manifest, report)
        if manifest.hooks or manifest.allow.get(".claude/settings.json"):
            settings_path = root / ".claude" / "settings.json"
            settings = read_json(settings_path)
            hooks = settings.get("hooks") if isinstance(settings.get("hooks"), dict) else {}
            _remove_allow(settings, ".claude/settings.json", manifest, report)
            for event, command in manifest.hooks.items():
                groups = hooks.get(event)
                if not isinstance(groups, list):
                    continue
                kept = _drop_hook(groups, command)
                if kept:
                    hooks[event] = kept
                else:
                    del hooks[event]
                report.append(f"removed the {event} hook from .claude/settings.json")
            if "hooks" in settings and not settings["hooks"]:
                del settings["hooks"]
            finish_json(root, ".claude/settings.json", settings, manifest, report)
            manifest.hooks = {}
        local_rel = ".claude/settings.local.json"
        if manifest.allow.get(local_rel) and (root / local_rel).exists():
            local = read_json(root / local_rel)
            _remove_allow(local, local_rel, manifest, report)
            finish_json(root, local_rel, local, manifest, report)
        manifest.allow = {}
        remove_owned(root, manifest, report)
        remove_gitignore(root, manifest, report)
        manifest.save()
    claude_dir = root / ".claude"
    if claude_dir.is_dir() and not any(claude_dir.iterdir()):
        claude_dir.rmdir()
    return report
