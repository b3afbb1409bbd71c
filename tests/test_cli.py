"""The opensage CLI: entry points, workspace discovery, the chat REPL."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from opensage import hookimpl
from opensage.chat import run_chat
from opensage.host import Host
from opensage.store import find_workspace


def test_python_dash_m_and_console_script_agree(project):
    via_module = subprocess.run([sys.executable, "-m", "opensage", "-w", str(project), "--json", "commands"],
                                capture_output=True, text=True, timeout=60)
    assert via_module.returncode == 0, via_module.stderr
    names = [c["name"] for c in json.loads(via_module.stdout)]
    assert "memory-add-node" in names
    script = shutil.which("opensage")
    if script is None:
        pytest.skip("console script not installed (pip install -e . creates it)")
    via_script = subprocess.run([script, "-w", str(project), "--json", "commands"], capture_output=True, text=True, timeout=60)
    assert via_script.stdout == via_module.stdout


def test_commands_lists_arguments_with_types(cli):
    out = cli("commands")
    assert out.returncode == 0
    assert "@memory-add-edge" in out.stdout and "fromId" in out.stdout


def test_at_command_help_prints_usage(cli):
    out = cli("@memory-add-edge", "--help")
    assert out.returncode == 0
    assert "@memory-add-edge fromId=<str> toId=<str> type=<str>" in out.stdout


def test_workspace_is_the_git_root_of_the_cwd(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    deep = repo / "src" / "pkg"
    deep.mkdir(parents=True)
    monkeypatch.delenv("OPENSAGE_WORKSPACE", raising=False)
    assert find_workspace(cwd=deep) == repo.resolve()
    monkeypatch.setenv("OPENSAGE_WORKSPACE", str(deep))
    assert find_workspace(cwd=repo) == deep.resolve()
    assert find_workspace(str(repo / "src"), cwd=repo) == (repo / "src").resolve()


def test_state_goes_under_dot_opencode_of_the_git_root(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "sub").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OPENSAGE_WORKSPACE"}
    out = subprocess.run([sys.executable, "-m", "opensage", "@memory-add-node", "type=concept", "label=here"],
                         cwd=repo / "sub", capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (repo / ".opencode" / "opensage.db").exists() and not (repo / "sub" / ".opencode").exists()


def test_missing_workspace_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "opensage", "-w", str(tmp_path / "nope"), "commands"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not a directory" in out.stderr


class Recorder:
    def __init__(self):
        self.events = []
        self.lifecycle = []

    @hookimpl
    def session_start(self, session):
        self.lifecycle.append("start")

    @hookimpl
    def session_event(self, session, event):
        self.events.append((event.kind, event.text))

    @hookimpl
    def session_end(self, session):
        self.lifecycle.append("end")


def test_chat_runs_commands_and_records_every_line(workspace):
    rec = Recorder()
    host = Host(workspace, plugins=[rec])
    stdin = io.StringIO('@memory-add-node type=decision label="Use JWT" content="tokens expire in 15 min"\n'
                        "@memory-add-edge fromId=nope toId=n1 type=uses\n"
                        "exit\n")
    stdout = io.StringIO()
    run_chat(host, stdin=stdin, stdout=stdout)
    text = stdout.getvalue()
    assert "added n1 (decision) Use JWT" in text
    assert "Error: unknown fromId node 'nope'" in text
    kinds = [k for k, _ in rec.events]
    assert kinds == ["command", "tool_result", "command", "error"]
    assert rec.lifecycle == ["start", "end"]
    rows = host.db.conn.execute("SELECT type FROM nodes WHERE label='Use JWT'").fetchall()
    assert [r[0] for r in rows] == ["decision"], "the command ran once; the failed one wrote nothing"
