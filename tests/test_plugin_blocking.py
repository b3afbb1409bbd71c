"""Each of the pack's plugins blocked in turn (``pm.set_blocked``): the others keep working.

Plugins talk through hooks only (docs/plugin-hooks.md), so blocking one removes its
commands and its answers to hooks, nothing else. A blocked plugin's command is an
unknown command: a clear message and exit 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from opensage.cli import cli
from opensage.host import DEFAULT_PLUGINS, Host
from opensage.plugins.agents.runner import AgentRunner
from opensage.store import Workspace
from opensage.types import AgentSpec
from scripted_agents import Brain, call

PLUGINS = [name for name, _ in DEFAULT_PLUGINS]

# A command of each plugin that needs no model, with arguments, and text its answer contains.
PROBES = {
    "graph-memory": ("memory-add-node", {"type": "concept", "label": "token rotation"}, "token rotation"),
    "dynamic-tools": ("list-generated-tools", {}, "tool"),
    "agents": ("list-generated-agents", {}, "agent"),
    "agent-registry": ("agent-stats", {}, ""),
    "intent-router": None,  # answers route_intent only: no command of its own
    "coordinator": None,  # its only command needs a model (covered below)
}

# Run ``opensage`` in a real subprocess with some plugins blocked (the test's own driver: a
# Host built with ``blocked=`` handed to the real click CLI, exactly as embedders do).
DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from opensage.cli import cli
    from opensage.host import Host
    from opensage.store import Workspace
    blocked, root, *args = sys.argv[1:]
    host = Host(Workspace(Path(root)), blocked=[b for b in blocked.split(",") if b])
    cli.main(args=["--workspace", root, *args], obj={"host": host}, prog_name="opensage")
""")


def run_blocked(project, blocked, *args, env=None):
    full_env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__", **(env or {})}
    if not env or "OPENSAGE_MODEL" not in env:
        full_env.pop("OPENSAGE_MODEL", None)
    return subprocess.run([sys.executable, "-c", DRIVER, blocked, str(project), *args],
                          capture_output=True, text=True, env=full_env, timeout=120)


def plugin_commands(workspace) -> dict[str, set[str]]:
    by_plugin: dict[str, set[str]] = {}
    for command in Host(workspace).commands.values():
        by_plugin.setdefault(command.plugin, set()).add(command.name)
    return by_plugin


def test_every_default_plugin_is_probed():
    assert set(PROBES) == set(PLUGINS)


@pytest.mark.parametrize("blocked", PLUGINS)
def test_blocking_one_plugin_leaves_the_others_working(workspace, blocked):
    everyone = plugin_commands(workspace)
    host = Host(workspace, blocked=[blocked])
    assert host.pm.is_blocked(blocked) and host.pm.get_plugin(blocked) is None
    expected = set().union(*(names for plugin, names in everyone.items() if plugin != blocked))
    assert set(host.commands) == expected
    for plugin, probe in PROBES.items():
        if plugin == blocked or probe is None:
            continue
        name, arguments, needle = probe
        result = host.run(name, arguments)
        assert result.success and needle in result.text.lower(), (plugin, result.text)
    for name in everyone.get(blocked, ()):
        with pytest.raises(Exception, match="unknown command"):
            host.command(name)
    assert ("memory_add" in host.tools()) is (blocked != "graph-memory")


@pytest.mark.parametrize("blocked, command, others", [
    ("agent-registry", "@agent-stats", ["@list-generated-agents"]),
    ("coordinator", "@coordinate", ["@memory-add-node", "type=concept", "label=retry policy"]),
    ("graph-memory", "@memory-query", ["@list-generated-tools"]),
])
def test_real_cli_reports_a_blocked_plugins_command_as_unknown(project, blocked, command, others):
    out = run_blocked(project, blocked, command, "task=x" if command == "@coordinate" else "query=x")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "unknown command" in out.stderr.lower() and "Traceback" not in out.stderr
    ok = run_blocked(project, blocked, *others)
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stdout + ok.stderr


def test_coordinator_blocked_memory_commands_work_through_the_cli(project):
    added = run_blocked(project, "coordinator", "@memory-add-node", "type=decision", "label=use RS256")
    assert added.returncode == 0, added.stderr
    found = run_blocked(project, "coordinator", "@memory-query", "query=RS256")
    assert found.returncode == 0 and "use RS256" in found.stdout, found.stdout + found.stderr


def agent_draft(name="doc-writer"):
    return json.dumps({"name": name, "description": "Writes user documentation for one module of the project.",
                       "prompt": "You write documentation. Read the module, then write a short, accurate "
                                 "guide to its public functions with one example each.",
                       "tools": {"read": "allow", "search": "allow"}, "temperature": 0.2, "steps": 12})


def test_registry_blocked_generate_agent_still_works_through_the_cli(project, tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([agent_draft()]))
    out = run_blocked(project, "agent-registry", "@generate-agent", "task=Document the CLI",
                      env={"OPENSAGE_MODEL": "scripted/test", "OPENSAGE_SCRIPT": str(script),
                           "OPENSAGE_BACKOFF_BASE_S": "0.01"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert (project / ".opencode" / "agent" / "doc-writer.md").exists()
    listed = run_blocked(project, "agent-registry", "@list-generated-agents")
    assert listed.returncode == 0 and "doc-writer" in listed.stdout, listed.stdout + listed.stderr


@pytest.mark.parametrize("blocked", ["agent-registry", "graph-memory"])
def test_opensage_run_still_works_without(project, scripted, blocked):
    (project / "notes.txt").write_text("hello\n")

    def worker(task, results):
        if not results:
            return call("write", path="notes.txt", content="hello, world\n")
        return "Wrote notes.txt."

    scripted.default = Brain(worker, name_for=lambda t: "note-writer", analysis={
        "complexity": "low", "task_type": "implement", "steps": ["Edit notes.txt"], "alternatives": [],
        "verifier": "", "reasoning": "One small edit."})
    host = Host(Workspace(project), blocked=[blocked])
    result = CliRunner().invoke(cli, ["--workspace", str(project), "run", "Say hello world in notes.txt"],
                                obj={"host": host}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (project / "notes.txt").read_text() == "hello, world\n"
    # the blocked plugin's part alone is missing: no registry record / no graph nodes of the run
    assert (project / ".opencode" / "agent-metrics.json").exists() is (blocked != "agent-registry")
    import sqlite3

    conn = sqlite3.connect(project / ".opencode" / "opensage.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    runs = conn.execute("SELECT count(*) FROM nodes WHERE type='plan'").fetchone()[0] if "nodes" in tables else 0
    assert (runs == 1) is (blocked != "graph-memory")


def test_agents_blocked_opensage_run_is_a_clear_usage_error(project, scripted):
    scripted.default = Brain(lambda t, r: "done", analysis={
        "complexity": "low", "task_type": "implement", "steps": ["x"], "alternatives": [],
        "verifier": "", "reasoning": "One small edit."})
    host = Host(Workspace(project), blocked=["agents"])
    result = CliRunner().invoke(cli, ["--workspace", str(project), "run", "Say hello"], obj={"host": host})
    assert result.exit_code == 2 and "no plugin runs agents" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_graph_memory_blocked_agents_run_without_memory_tools(host, workspace, project, scripted):
    spec = AgentSpec(name="rememberer", description="Remembers facts.", prompt="Remember things.",
                     tools={"read": "allow", "memory_add": "allow", "memory_query": "allow"})
    blocked = Host(workspace, blocked=["graph-memory"])
    runner = AgentRunner(blocked, spec, root=project)
    assert runner.allowed_tools() == ["read"]
    scripted.add(call("memory_add", type="decision", label="x"), "done")
    result = runner.run("remember x")
    assert result.success
    tool_reply = [m for m in scripted.requests[-1]["messages"] if m["role"] == "tool"][-1]["content"]
    assert "not available to this agent" in tool_reply
    # with graph memory present the same agent gets both memory tools, recorded as its own
    assert AgentRunner(host, spec, root=project).allowed_tools() == ["read", "memory_query", "memory_add"]
    scripted.add(call("memory_add", type="decision", label="use RS256"), "done")
    assert AgentRunner(host, spec, root=project).run("remember").success
    meta = host.db.conn.execute("SELECT metadata FROM nodes WHERE label='use RS256'").fetchone()[0]
    assert json.loads(meta)["source"] == "agent:rememberer"
