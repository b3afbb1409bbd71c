"""Generated agents load in the real OpenCode CLI (npm package ``opencode-ai``).

The pinned CLI comes from ``tests/opencode_env.py`` (``$OPENSAGE_OPENCODE_BIN``, else
the test cache that ``scripts/test.sh`` fills, else npm-installed there now); the test
is skipped only where node is missing. OpenCode runs hermetically (temporary HOME and
XDG folders, a ``git init``-ed project, auto-update / model fetch / LSP download /
default plugins off, network proxied to a closed port) with its config folders seeded
with ``@opencode-ai/plugin`` so it does not stall trying to install it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from opensage.plugins.agents import files
from opensage.plugins.agents.generate import generate_agent

#: Each OpenCode call must finish within this many seconds; the offline
#: dependency-install stall described in the OpenCode notes (~70 s) would break it.
#: Measured: about 3 s per call on a quiet 2-core machine, 6-7 s under load.
TIME_BUDGET_S = 20.0

pytestmark = pytest.mark.opencode


@pytest.fixture(scope="module")
def opencode_bin() -> str:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: cannot run the OpenCode CLI")
    from tests.opencode_env import opencode_bin as find

    return find()


def run_opencode(binary: str, project: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    from tests.opencode_env import hermetic_env

    env = hermetic_env(home, project, "http://127.0.0.1:9/v1")  # no model call is made
    return subprocess.run([binary, *args], cwd=project, env=env, capture_output=True, text=True, timeout=180)


def draft(name: str, description: str, tools: dict) -> str:
    return json.dumps({
        "name": name,
        "description": description,
        "prompt": f"You are {name}. Work step by step, then report what you found and what you changed.",
        "tools": tools,
        "temperature": 0.1,
        "steps": 9,
    })


def test_generated_agents_load_in_opencode(opencode_bin, host, project, tmp_path, scripted):
    from tests.opencode_env import seed_config_dir

    subprocess.run(["git", "init", "-q", str(project)], check=True)
    home = tmp_path / "home"
    home.mkdir()
    seed_config_dir(home / ".config" / "opencode")
    seed_config_dir(project / ".opencode")
    scripted.add(
        draft("migration-reviewer", "Reviews SQL migrations for long locks.",
              {"read": "allow", "search": "allow", "shell": "ask", "memory_query": "allow"}),
        draft("docs-writer", "Writes and updates user documentation.",
              {"read": "allow", "write": "allow", "edit": "allow"}),
        draft("migration-reviewer", "Reviews SQL migrations for long locks and table rewrites (v2).",
              {"read": "allow", "search": "allow", "shell": "ask", "memory_query": "allow"}),
    )
    generate_agent(host, "review SQL migrations")
    writer = generate_agent(host, "keep the docs current", mode="primary", model="anthropic/claude-sonnet-4-5")
    reviewer = generate_agent(host, "review SQL migrations, also table rewrites")
    assert reviewer.version == 2 and (files.meta_dir(host.workspace) / "migration-reviewer.v1.md").exists()

    started = time.perf_counter()
    listed = run_opencode(opencode_bin, project, home, "agent", "list")
    list_s = time.perf_counter() - started
    assert listed.returncode == 0, listed.stderr[-2000:]
    modes = dict(re.findall(r"^(\S+) \((primary|subagent|all)\)\s*$", listed.stdout, re.M))
    assert modes.get("migration-reviewer") == "subagent"
    assert modes.get("docs-writer") == "primary"
    assert "build" in modes  # OpenCode's own agents are listed too: this is the real list
    assert not [n for n in modes if "opensage-agents" in n or ".v1" in n]  # old versions are not loaded

    started = time.perf_counter()
    config = run_opencode(opencode_bin, project, home, "debug", "config")
    config_s = time.perf_counter() - started
    assert config.returncode == 0, config.stderr[-2000:]
    agents = json.loads(config.stdout)["agent"]
    print(f"\nopencode agent list: {list_s:.1f} s; opencode debug config: {config_s:.1f} s")
    assert list_s < TIME_BUDGET_S and config_s < TIME_BUDGET_S

    rev = agents["migration-reviewer"]
    assert rev["description"] == "Reviews SQL migrations for long locks and table rewrites (v2)."
    assert rev["mode"] == "subagent" and rev["steps"] == 9 and rev["temperature"] == 0.1
    assert rev["prompt"].strip() == reviewer.prompt
    assert rev.get("options", {}) == {}  # no unknown frontmatter key leaked into provider options
    assert rev["permission"] == {"*": "deny", "read": "allow", "grep": "allow", "glob": "allow", "bash": "ask",
                                 "opensage_memory-query": "allow"}
    doc = agents["docs-writer"]
    assert doc["description"] == "Writes and updates user documentation." and doc["mode"] == "primary"
    assert doc["model"] == "anthropic/claude-sonnet-4-5"
    assert doc.get("options", {}) == {}
    assert doc["permission"] == {"*": "deny", "read": "allow", "edit": "allow"}
