"""@generate-agent / @list-generated-agents: the model writes a spec, we validate and write host files."""

from __future__ import annotations

import json
import threading

import pytest
import yaml

from opensage.errors import ModelError, UsageError
from opensage.plugins.agent_registry.registry import AgentRegistry
from opensage.plugins.agents import files
from opensage.plugins.agents.generate import generate_agent
from opensage.types import AgentSpec

OPENCODE_KEYS = {"description", "mode", "model", "temperature", "steps", "permission"}


def draft(**over) -> str:
    base = {
        "name": "sql-migration-reviewer",
        "description": "Reviews SQL migrations for long locks and unsafe schema changes.",
        "prompt": "You review SQL migration files. Read each migration, find statements that lock large "
                  "tables, and report each finding with a safer rewrite.",
        "tools": {"read": "allow", "search": "allow", "shell": "ask", "memory_query": "allow"},
        "temperature": 0.2,
        "steps": 12,
    }
    base.update(over)
    return json.dumps(base)


def frontmatter(path):
    text = path.read_text()
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def state_files(project):
    return sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() and p.name != ".lock")


def test_generate_agent_writes_the_opencode_file_and_sidecar(host, project, scripted):
    scripted.add(draft())
    result = host.run_line('@generate-agent task="review our SQL migrations" specialization=PostgreSQL')
    assert "Generated agent @sql-migration-reviewer (v1, subagent) at .opencode/agent/sql-migration-reviewer.md" \
        in result.text
    front, body = frontmatter(project / ".opencode/agent/sql-migration-reviewer.md")
    assert set(front) <= OPENCODE_KEYS  # OpenCode sends unknown keys to the provider
    assert front["description"] == "Reviews SQL migrations for long locks and unsafe schema changes."
    assert front["mode"] == "subagent" and front["steps"] == 12 and front["temperature"] == 0.2
    assert "model" not in front  # not set: the host's default
    assert list(front["permission"].items()) == [
        ("*", "deny"), ("read", "allow"), ("grep", "allow"), ("glob", "allow"), ("bash", "ask"),
        ("opensage_memory-query", "allow")]
    assert body.strip().startswith("You review SQL migration files.")
    spec = files.load_agent(host.workspace, "sql-migration-reviewer")
    assert (spec.task, spec.specialization, spec.version) == ("review our SQL migrations", "PostgreSQL", 1)
    assert not (project / ".claude").exists()
    # the model was told the task, the mode and the tools it may grant
    request = scripted.requests[0]["messages"]
    assert "review our SQL migrations" in request[-1]["content"] and "PostgreSQL" in request[-1]["content"]
    assert "subagent" in request[0]["content"] and "memory_query" in request[0]["content"]


def test_claude_code_file_when_asked(host, project, scripted):
    scripted.add(draft())
    host.run_line('@generate-agent task="review migrations" claude=true model=anthropic/claude-sonnet-4-5')
    front, body = frontmatter(project / ".claude/agents/sql-migration-reviewer.md")
    assert front == {
        "name": "sql-migration-reviewer",
        "description": "Reviews SQL migrations for long locks and unsafe schema changes.",
        "tools": "Read, Grep, Glob, Bash, mcp__opensage__memory-query",
        "model": "claude-sonnet-4-5",
        "maxTurns": 12,
    }
    assert body.strip().startswith("You review SQL migration files.")
    oc_front, _ = frontmatter(project / ".opencode/agent/sql-migration-reviewer.md")
    assert oc_front["model"] == "anthropic/claude-sonnet-4-5"


def test_claude_from_environment(host, project, scripted, monkeypatch):
    monkeypatch.setenv("OPENSAGE_CLAUDE_AGENTS", "1")
    scripted.add(draft(name="env-agent"))
    generate_agent(host, "anything")
    assert (project / ".claude/agents/env-agent.md").exists()


def test_regenerating_a_name_keeps_the_previous_version(host, project, scripted):
    scripted.add(draft(), draft(description="Second take: reviews migrations and estimates lock time."))
    first = generate_agent(host, "review migrations", claude=True)
    old_text = (project / ".opencode/agent/sql-migration-reviewer.md").read_text()
    old_claude = (project / ".claude/agents/sql-migration-reviewer.md").read_text()
    result = host.run_line('@generate-agent task="review migrations, estimate lock time"')
    assert "(v2, subagent)" in result.text and "Previous version v1 kept at" in result.text
    assert first.version == 1
    current, _ = frontmatter(project / ".opencode/agent/sql-migration-reviewer.md")
    assert current["description"].startswith("Second take")
    kept = project / ".opencode/opensage-agents"
    assert (kept / "sql-migration-reviewer.v1.md").read_text() == old_text
    assert (kept / "sql-migration-reviewer.v1.claude.md").read_text() == old_claude
    # the Claude Code file follows the new version too
    claude_front, _ = frontmatter(project / ".claude/agents/sql-migration-reviewer.md")
    assert claude_front["description"].startswith("Second take")
    # OpenCode sees exactly one file for the agent
    assert sorted(p.name for p in (project / ".opencode/agent").rglob("*.md")) == ["sql-migration-reviewer.md"]
    assert [s.version for s in files.agent_versions(host.workspace, "sql-migration-reviewer")] == [1, 2]
    assert files.load_agent(host.workspace, "sql-migration-reviewer", version=1).description == first.description
    listing = host.run_line("@list-generated-agents versions=true")
    assert "@sql-migration-reviewer (subagent, v2, versions [1, 2])" in listing.text


def test_a_hand_written_agent_is_never_replaced(host, project, scripted):
    mine = project / ".opencode/agent/sql-migration-reviewer.md"
    mine.parent.mkdir(parents=True)
    mine.write_text("---\ndescription: mine\nmode: primary\n---\nHand-written.\n")
    scripted.add(draft())
    spec = generate_agent(host, "review migrations")
    assert spec.name == "sql-migration-reviewer-2"
    assert mine.read_text() == "---\ndescription: mine\nmode: primary\n---\nHand-written.\n"
    with pytest.raises(UsageError, match="was not generated by opensage"):
        generate_agent(host, "review migrations", name="sql-migration-reviewer")
    # hand-written agents still load (for running them), from their OpenCode file
    loaded = files.load_agent(host.workspace, "sql-migration-reviewer")
    assert (loaded.description, loaded.mode, loaded.prompt) == ("mine", "primary", "Hand-written.")


def test_three_invalid_specs_give_a_clear_error_and_write_nothing(cli, project, tmp_path):
    bad = [
        "I think the agent should review migrations.",  # not JSON
        draft(name="Bad Name!"),  # not kebab-case
        draft(tools={"rm_rf": "allow"}),  # unknown tool
    ]
    script = tmp_path / "script.json"
    script.write_text(json.dumps(bad))
    before = state_files(project)
    out = cli("@generate-agent", 'task="review migrations"',
              env={"OPENSAGE_MODEL": "scripted/test", "OPENSAGE_SCRIPT": str(script)})
    assert out.returncode == 1, out.stderr
    assert "could not generate an agent" in out.stderr
    assert "invalid AgentDraft 3 times" in out.stderr and "Nothing was written" in out.stderr
    assert "rm_rf" in out.stderr  # the last error names the offending tool
    after = [f for f in state_files(project) if not f.endswith(("opensage.db", "-wal", "-shm"))]
    assert after == [f for f in before if not f.endswith(("opensage.db", "-wal", "-shm"))]
    assert not (project / ".opencode/agent").exists()
    assert not (project / ".opencode/opensage-agents").exists()


def test_an_invalid_answer_is_fed_back_and_retried(host, project, scripted):
    scripted.add(draft(tools={"telepathy": "allow"}), draft())
    spec = generate_agent(host, "review migrations")
    assert spec.name == "sql-migration-reviewer"
    assert len(scripted.requests) == 2
    feedback = scripted.requests[1]["messages"][-1]["content"]
    assert "telepathy" in feedback and "invalid" in feedback


def test_bad_arguments_fail_before_any_model_call(cli, project, scripted, host):
    out = cli("@generate-agent", 'task="x"', "mode=boss")
    assert out.returncode == 2 and "mode" in out.stderr
    with pytest.raises(UsageError, match="not kebab-case"):
        generate_agent(host, "review", name="Bad Name")
    with pytest.raises(UsageError, match="task must describe"):
        generate_agent(host, "   ")
    assert scripted.requests == []
    assert not (project / ".opencode/agent").exists()


def test_model_error_is_a_model_error(host, scripted):
    scripted.add("no", "still no", "never")
    with pytest.raises(ModelError, match="3 times"):
        generate_agent(host, "review migrations")


def test_concurrent_generation_of_one_name_keeps_both(workspace):
    spec = AgentSpec(name="racer", description="A racing agent.", prompt="Run fast and report.")
    errors = []

    def write(i):
        try:
            files.write_agent(workspace, spec.model_copy(update={"description": f"Racer number {i}."}))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = files.agent_versions(workspace, "racer")
    assert [v.version for v in versions] == [1, 2, 3, 4]
    assert sorted(v.description for v in versions) == [f"Racer number {i}." for i in range(4)]


def test_list_generated_agents_shows_registry_stats(host, workspace, scripted, cli):
    scripted.add(draft(), draft(name="doc-writer", description="Writes user documentation for a module."))
    generate_agent(host, "review migrations")
    generate_agent(host, "document the API", mode="primary")
    reg = AgentRegistry(workspace)
    reg.record("sql-migration-reviewer", "review migration 12", "analyze", True, cost_usd=0.02, latency_ms=3000)
    reg.record("sql-migration-reviewer", "review migration 13", "analyze", False, cost_usd=0.04, latency_ms=5000)
    out = cli("@list-generated-agents")
    assert out.returncode == 0, out.stderr
    assert "- @doc-writer (primary, v1): Writes user documentation for a module. [no runs yet]" in out.stdout
    assert ("- @sql-migration-reviewer (subagent, v1): Reviews SQL migrations for long locks and unsafe schema "
            "changes. [2 runs, 50% success, $0.0300/run, 4.0 s/run]") in out.stdout
    data = json.loads(cli("--json", "@list-generated-agents").stdout)
    rows = {r["name"]: r for r in data["agents"]}
    assert rows["sql-migration-reviewer"]["stats"]["runs"] == 2
    assert rows["doc-writer"]["mode"] == "primary" and rows["doc-writer"]["version"] == 1


def test_opencode_file_parses_back_to_the_same_permissions():
    spec = AgentSpec(name="round-trip", description="Round trip.", prompt="Do it.",
                     tools={"read": "allow", "write": "ask", "edit": "ask", "shell": "deny", "webfetch": "allow"},
                     temperature=0.3, steps=7, mode="all")
    back = files.parse_opencode(files.render_opencode(spec), "round-trip")
    assert (back.description, back.mode, back.prompt, back.temperature, back.steps) == (
        "Round trip.", "all", "Do it.", 0.3, 7)
    assert {k: back.tools[k] for k in spec.tools} == spec.tools


def test_descriptions_with_yaml_specials_are_escaped(host, project, scripted):
    tricky = 'Checks "quotes", colons: and # hashes\n---\nmode: primary'
    scripted.add(draft(description=tricky))
    generate_agent(host, "x")
    front, _ = frontmatter(project / ".opencode/agent/sql-migration-reviewer.md")
    assert front["description"] == tricky.strip() and front["mode"] == "subagent"


def test_without_a_model_it_says_how_to_configure_one_and_writes_nothing(cli, project):
    out = cli("@generate-agent", 'task="review migrations"')
    assert out.returncode == 2
    assert "OPENSAGE_MODEL" in out.stderr
    assert not (project / ".opencode/agent").exists() and not (project / ".opencode/opensage-agents").exists()
