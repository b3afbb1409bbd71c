"""Claude Code hooks: payloads for each event fed to ``opensage hook --from claude``
(a real subprocess, as Claude Code runs it), and ``opensage install/uninstall claude``."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.stores import store_conn

from tests.conftest import db_snapshot

DATA = Path(__file__).parent / "data" / "claude"
SID = "0f3c9a52-7d1e-4c55-9a0b-2f6f1b2d9e41"


def payload(name: str, project: Path) -> str:
    return (DATA / name).read_text().replace("$PROJECT", str(project))


def episodes(project: Path) -> list[tuple]:
    conn = store_conn(project)
    try:
        return conn.execute(
            "SELECT kind, role, tool, path, text, compressed_at FROM episodes WHERE session_id=? ORDER BY seq", (SID,)
        ).fetchall()
    finally:
        conn.close()


def hook(cli, project, name):
    r = cli("hook", "--from", "claude", input=payload(name, project))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_claude_session_becomes_episodes_and_compaction_compresses_it(cli, project):
    r = cli("@memory-add-node", "type=class", "label=AuthService", "content=issues and refreshes JWT tokens")
    assert r.returncode == 0, r.stderr

    start = hook(cli, project, "session_start.json")
    assert start == {} or start["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    conn = store_conn(project)
    assert conn.execute("SELECT source FROM sessions WHERE id=?", (SID,)).fetchone() == ("claude",)

    answer = hook(cli, project, "user_prompt_submit.json")
    ctx = answer["hookSpecificOutput"]
    assert ctx["hookEventName"] == "UserPromptSubmit"
    assert "AuthService" in ctx["additionalContext"]  # relevant memory goes back to Claude

    assert hook(cli, project, "post_tool_use_bash.json") == {}
    assert hook(cli, project, "post_tool_use_edit.json") == {}
    assert hook(cli, project, "stop.json") == {}

    eps = episodes(project)
    kinds = [e[0] for e in eps]
    assert kinds == ["user_message", "tool_call", "tool_result", "tool_call", "tool_result", "file_edit",
                     "assistant_message"]
    assert "refresh tokens" in eps[0][4]
    assert eps[1][2] == "Bash" and "KeyError" in eps[2][4]
    assert eps[5][2] == "Edit" and eps[5][3] == "src/auth.py"  # made relative to the project
    assert eps[6][1] == "assistant" and "claims.get" in eps[6][4]
    assert all(e[5] is None for e in eps)

    assert hook(cli, project, "pre_compact.json") == {}
    after = episodes(project)
    assert all(e[5] is not None for e in after), "PreCompact must compress the session's episodes"
    files = [r[0] for r in conn.execute("SELECT label FROM nodes WHERE type='file'")]
    assert "src/auth.py" in files  # lasting knowledge derived from the episodes

    # after compaction Claude starts a new context: SessionStart(source=compact) brings memory back
    restart = json.loads(payload("session_start.json", project))
    restart["source"] = "compact"
    r = cli("hook", "--from", "claude", input=json.dumps(restart))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "src/auth.py" in out["hookSpecificOutput"]["additionalContext"]

    assert hook(cli, project, "session_end.json") == {}
    assert conn.execute("SELECT ended_at FROM sessions WHERE id=?", (SID,)).fetchone()[0] is not None
    conn.close()


def test_stop_without_last_message_reads_the_transcript(cli, project):
    transcript = project / ".claude-transcript.jsonl"
    transcript.write_text("\n".join(json.dumps(e) for e in [
        {"type": "user", "message": {"role": "user", "content": "hi"}},
        {"type": "assistant", "message": {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {}},
            {"type": "text", "text": "The config lives in settings.toml."}]}},
    ]) + "\n")
    stop = json.loads(payload("stop.json", project))
    del stop["last_assistant_message"]
    r = cli("hook", "--from", "claude", input=json.dumps(stop))
    assert r.returncode == 0, r.stderr
    assert [(e[0], e[4]) for e in episodes(project)] == [("assistant_message", "The config lives in settings.toml.")]


def test_unknown_events_are_ignored_and_bad_payloads_fail_cleanly(cli, project):
    assert hook(cli, project, "notification.json") == {}
    before = db_snapshot(project)
    assert all(not rows for table, rows in before.items() if table == "episodes")

    r = cli("hook", "--from", "claude", input=json.dumps({"session_id": "s"}))
    assert r.returncode == 2 and "hook_event_name" in r.stderr
    r = cli("hook", "--from", "claude", input="{not json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = cli("hook", "--from", "claude", "user-message", input=payload("stop.json", project))
    assert r.returncode == 2 and "give no EVENT" in r.stderr
    assert db_snapshot(project) == before


def test_install_claude_adds_everything_and_uninstall_removes_exactly_that(cli, project):
    (project / ".claude").mkdir()
    user_settings = {"permissions": {"allow": ["Bash(npm test)"]},
                     "hooks": {"PostToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "echo mine"}]}]}}
    (project / ".claude" / "settings.json").write_text(json.dumps(user_settings, indent=2))
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": {"type": "stdio", "command": "other-mcp"}}}))
    from opensage.plugins.agents import files
    from opensage.store import Workspace
    from opensage.types import AgentSpec

    spec = AgentSpec(name="sql-reviewer", description="Reviews SQL migrations for locking problems",
                     prompt="You review SQL migrations.", tools={"read": "allow", "edit": "deny"})
    files.write_agent(Workspace(project), spec)  # what @generate-agent writes
    assert not (project / ".claude" / "agents").exists()

    r = cli("install", "claude")
    assert r.returncode == 0, r.stderr
    mcp = json.loads((project / ".mcp.json").read_text())
    assert mcp["mcpServers"]["other"] == {"type": "stdio", "command": "other-mcp"}
    server = mcp["mcpServers"]["opensage"]
    assert server["type"] == "stdio" and server["args"][-1] == "mcp"
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    # headless claude -p denies MCP tools no rule allows: install adds one, keeps the user's
    assert settings["permissions"] == {"allow": ["Bash(npm test)", "mcp__opensage__*"]}
    # ... which Claude Code honours only once the workspace is trusted; the user's own
    # (uncommitted) local settings count at once
    local = json.loads((project / ".claude" / "settings.local.json").read_text())
    assert local == {"permissions": {"allow": ["mcp__opensage__*"]}, "env": {"MCP_CONNECTION_NONBLOCKING": "0"}}
    from opensage.integrations.claude import QUEUE_COMMAND

    for event in ("SessionStart", "UserPromptSubmit", "PreCompact", "SessionEnd"):
        commands = [h["command"] for g in settings["hooks"][event] for h in g["hooks"]]
        assert "opensage-hook claude" in commands, event
    for event in ("PostToolUse", "PostToolUseFailure", "Stop", "SubagentStop"):  # frequent, answer {}: queued by sh
        commands = [h["command"] for g in settings["hooks"][event] for h in g["hooks"]]
        assert QUEUE_COMMAND in commands, event
    assert settings["hooks"]["PostToolUse"][0]["hooks"][0]["command"] == "echo mine"
    agent = (project / ".claude" / "agents" / "sql-reviewer.md").read_text()
    assert agent == files.render_claude(files.load_agent(Workspace(project), "sql-reviewer"))
    assert "name: sql-reviewer" in agent and "You review SQL migrations." in agent
    import opensage

    skill_src = Path(opensage.__file__).parent / "skills" / "meta" / "SKILL.md"
    if skill_src.exists():
        installed = (project / ".claude" / "skills" / "opensage" / "SKILL.md").read_text()
        assert installed.splitlines()[1] == "name: opensage"  # a skill's name matches its folder
        original = skill_src.read_text()
        assert installed.replace("name: opensage", "", 1) == re.sub(r"(?m)^name:.*$", "", original, count=1)
    else:
        assert "skipped .claude/skills/opensage/SKILL.md" in r.stdout

    # the installed hook command works as Claude Code would run it (through a shell)
    import shlex
    import subprocess

    import os

    command = next(h["command"] for g in settings["hooks"]["UserPromptSubmit"] for h in g["hooks"])
    run = subprocess.run(command, shell=True, input=payload("user_prompt_submit.json", project),
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CLAUDE_PROJECT_DIR": str(project), "OPENSAGE_HOOK_SERVER": "0"})
    assert run.returncode == 0, run.stderr
    assert [e[0] for e in episodes(project)] == ["user_message"]
    assert shlex.split(command) == ["opensage-hook", "claude"]

    r = cli("install", "claude")  # idempotent: no duplicate hooks
    settings2 = json.loads((project / ".claude" / "settings.json").read_text())
    assert settings2 == settings

    r = cli("uninstall", "claude")
    assert r.returncode == 0, r.stderr
    assert json.loads((project / ".mcp.json").read_text()) == {"mcpServers": {"other": {"type": "stdio", "command": "other-mcp"}}}
    assert json.loads((project / ".claude" / "settings.json").read_text()) == user_settings
    assert not (project / ".claude" / "settings.local.json").exists()
    assert not (project / ".claude" / "agents").exists()
    assert not (project / ".claude" / "skills").exists()


def test_install_refuses_to_replace_a_foreign_opensage_server(cli, project):
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"opensage": {"command": "somewhere-else"}}}))
    r = cli("install", "claude")
    assert r.returncode == 2 and "already has a different 'opensage' server" in r.stderr
    assert json.loads((project / ".mcp.json").read_text()) == {"mcpServers": {"opensage": {"command": "somewhere-else"}}}
    assert not (project / ".claude").exists()


def test_subagent_stop_records_the_subagents_answer(cli, project):
    assert hook(cli, project, "subagent_stop.json") == {}
    assert [(e[0], e[1], e[4]) for e in episodes(project)] == [
        ("assistant_message", "subagent:Explore", "The token refresh logic lives in src/auth.py:refresh_tokens.")]


def test_installed_config_is_portable_shareable_and_keeps_transcripts_out_of_git(cli, project):
    """Files a team commits name commands, not this machine's paths; they are not private
    (0600); .gitignore keeps the database (session transcripts) and lock files out."""
    import subprocess
    import sys

    (project / ".gitignore").write_text("node_modules/\n")
    for host_name in ("claude", "opencode"):
        r = cli("install", host_name)
        assert r.returncode == 0, r.stderr
    for rel in (".mcp.json", ".claude/settings.json", "opencode.json", ".opencode/plugin/opensage.js"):
        text = (project / rel).read_text()
        assert str(project) not in text and sys.executable not in text and str(Path(sys.executable).parent) not in text, rel
        assert (project / rel).stat().st_mode & 0o777 == 0o666 & ~_umask(), rel
    assert json.loads((project / ".mcp.json").read_text())["mcpServers"]["opensage"]["command"] == "opensage"
    assert json.loads((project / "opencode.json").read_text())["mcp"]["opensage"]["command"] == ["opensage", "mcp"]
    gitignore = (project / ".gitignore").read_text()
    assert gitignore.startswith("node_modules/\n") and gitignore.count(".opencode/opensage.db\n") == 1

    # git agrees: after a session, the database, its WAL and the locks are ignored
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert cli("@memory-add-node", "type=decision", "label=UseRS256", "content=RS256 JWTs").returncode == 0
    (project / ".opencode" / "agent-metrics.json.lock").write_text("")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    assert "opensage.db" not in status and ".lock" not in status and "settings.local" not in status, status
    assert ".mcp.json" in status and "opencode.json" in status  # the shareable config is not ignored

    # uninstalling one host keeps the lines the other still needs; the second removes them
    assert cli("uninstall", "claude").returncode == 0
    assert ".opencode/opensage.db" in (project / ".gitignore").read_text()
    assert cli("uninstall", "opencode").returncode == 0
    assert (project / ".gitignore").read_text() == "node_modules/\n"


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_queued_events_are_recorded_in_order_before_the_next_event(cli, project):
    """The installed PostToolUse/Stop hooks only queue the JSON with sh (no Python); the
    next hook that runs opensage (here the direct path, no server) records them first,
    in order, with the time they were queued."""
    import os
    import subprocess
    import time

    assert cli("install", "claude").returncode == 0
    settings = json.loads((project / ".claude" / "settings.json").read_text())

    def run(event, name):
        command = next(h["command"] for g in settings["hooks"][event] for h in g["hooks"])
        r = subprocess.run(command, shell=True, input=payload(name, project), capture_output=True, text=True,
                           timeout=60, cwd="/", env={**os.environ, "CLAUDE_PROJECT_DIR": str(project),
                                                     "OPENSAGE_HOOK_SERVER": "0"})
        assert r.returncode == 0 and r.stdout.strip() in ("", "{}") or "hookSpecificOutput" in r.stdout, r.stderr
        return r

    before = time.time()
    run("PostToolUse", "post_tool_use_bash.json")
    run("Stop", "stop.json")
    queue = project / ".opencode" / "run" / "queue"
    assert len(list(queue.glob("*.json"))) == 2
    assert (queue.stat().st_mode & 0o777) == 0o700 and all((f.stat().st_mode & 0o777) == 0o600 for f in queue.iterdir())
    assert not (project / ".opencode" / "opensage.db").exists() or episodes(project) == []  # nothing recorded yet
    run("UserPromptSubmit", "user_prompt_submit.json")
    eps = episodes(project)
    assert [e[0] for e in eps] == ["tool_call", "tool_result", "assistant_message", "user_message"]
    assert list(queue.glob("*")) == []
    conn = store_conn(project)
    stamps = [r[0] for r in conn.execute("SELECT timestamp FROM episodes WHERE session_id=? ORDER BY seq", (SID,))]
    conn.close()
    assert before - 1 < stamps[0] <= stamps[2] <= stamps[3]  # the queued time, not the recording time


def test_hooks_started_in_a_subfolder_use_the_projects_database(cli, project):
    """Claude Code started in a subfolder: CLAUDE_PROJECT_DIR is that folder, but the
    queueing hook and opensage-hook find the git root, as the MCP server does."""
    import os
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    sub = project / "services" / "auth"
    sub.mkdir(parents=True)
    assert cli("install", "claude").returncode == 0
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    env = {**os.environ, "CLAUDE_PROJECT_DIR": str(sub), "OPENSAGE_HOOK_SERVER": "0"}
    for event, name in (("PostToolUse", "post_tool_use_bash.json"), ("UserPromptSubmit", "user_prompt_submit.json")):
        command = next(h["command"] for g in settings["hooks"][event] for h in g["hooks"])
        r = subprocess.run(command, shell=True, input=payload(name, project), capture_output=True, text=True,
                           timeout=60, cwd=sub, env=env)
        assert r.returncode == 0, r.stderr
    assert [e[0] for e in episodes(project)] == ["tool_call", "tool_result", "user_message"]
    assert not (sub / ".opencode").exists()
