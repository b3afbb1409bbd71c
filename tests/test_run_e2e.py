"""``opensage run``: a task goes in; a planned, executed, recorded result comes out.

The scripted model answers every request (analysis, agent generation, the agent's tool
calls) from its content; everything else is real: litellm's code path, the files, the
sandboxed pytest run, the registry file and the SQLite graph.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from opensage.cli import cli
from scripted_agents import Brain, call

TASK = "Add input validation to parse_age and a test for it"
CALC = '''def parse_age(text):
    """Parse an age in years from text."""
    return int(text)
'''
EXISTING_TEST = '''from calc import parse_age


def test_parses_digits():
    assert parse_age("42") == 42
'''
NEW_TEST = '''import pytest

from calc import parse_age


@pytest.mark.parametrize("bad", ["", "abc", "-3", "200"])
def test_rejects_invalid_ages(bad):
    with pytest.raises(ValueError):
        parse_age(bad)
'''
VALIDATED = '''    text = text.strip()
    if not text.isdigit() or not 0 <= int(text) <= 150:
        raise ValueError(f"not an age: {text!r}")
    return int(text)'''
ANALYSIS = {
    "complexity": "low", "task_type": "implement",
    "steps": ["Add validation to parse_age", "Add a test for the validation"],
    "alternatives": [], "verifier": "python -m pytest -q", "reasoning": "One small change plus its test.",
}


@pytest.fixture
def repo(project):
    (project / "calc.py").write_text(CALC)
    (project / "tests").mkdir()
    (project / "tests" / "test_calc.py").write_text(EXISTING_TEST)
    return project


def developer(task, results):
    """The agent: read, edit, write a test, run the tests, report."""
    step = len(results)
    if step == 0:
        return call("read", path="calc.py")
    if step == 1:
        assert "def parse_age" in results[0]
        return call("edit", path="calc.py", old_string="    return int(text)", new_string=VALIDATED)
    if step == 2:
        return call("write", path="tests/test_parse_age_validation.py", content=NEW_TEST)
    if step == 3:
        return call("shell", command="python -m pytest -q")
    if "exit code: 0" in results[-1] and "5 passed" in results[-1]:
        return "Added validation to parse_age (digits only, 0-150) and tests/test_parse_age_validation.py; 5 passed."
    return f"FAILED: the tests did not pass: {results[-1][:500]}"


def invoke(project, *args):
    return CliRunner().invoke(cli, ["--workspace", str(project), "run", *args], catch_exceptions=False)


def test_run_plans_generates_edits_tests_and_records(repo, scripted):
    brain = Brain(developer, name_for=lambda t: "input-validator", analysis=ANALYSIS)
    scripted.default = brain
    result = invoke(repo, TASK)
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    # the plan, with its stated reason; the live display showed the step, the agent, tokens and cost
    assert "single — one coherent piece of work (low complexity" in out
    progress = result.stderr
    assert "opensage run" in progress and "phase: finished" in progress and "5/12" in progress
    assert "@input-valid" in progress and "total:" in progress and "$0.0" in progress
    assert "success" in out and "@input-validator" in out
    assert brain.seen[:7] == ["analysis", "generate"] + ["agent"] * 5
    # the generated agent, in OpenCode's format
    agent_md = repo / ".opencode" / "agent" / "input-validator.md"
    assert agent_md.exists() and "description:" in agent_md.read_text()
    # tool calls really changed the files
    assert "raise ValueError" in (repo / "calc.py").read_text()
    assert (repo / "tests" / "test_parse_age_validation.py").read_text() == NEW_TEST
    assert "calc.py" in out and "tests/test_parse_age_validation.py" in out
    # the agent's own test run (in the sandbox) passed, and so does a fresh one
    last_agent_call = [r for r in scripted.requests if r["tools"]][-1]
    shell_reply = [m for m in last_agent_call["messages"] if m["role"] == "tool"][-1]["content"]
    assert "exit code: 0" in shell_reply and "5 passed" in shell_reply
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=repo,
                         capture_output=True, text=True)
    assert run.returncode == 0 and "5 passed" in run.stdout, run.stdout
    # registry record
    metrics = json.loads((repo / ".opencode" / "agent-metrics.json").read_text())
    [record] = metrics["tasks"]
    assert record["agentName"] == "input-validator" and record["success"] is True
    assert record["taskType"] == "implement" and record["cost"] > 0
    # graph memory: task, plan, agent, outcome, files, linked
    conn = sqlite3.connect(repo / ".opencode" / "opensage.db")
    nodes = {(t, l): i for i, t, l in conn.execute("SELECT id, type, label FROM nodes")}
    assert ("task", TASK) in nodes and ("agent", "input-validator") in nodes
    assert ("file", "calc.py") in nodes and ("file", "tests/test_parse_age_validation.py") in nodes
    plan_id = next(i for (t, _), i in nodes.items() if t == "plan")
    outcome_id = next(i for (t, _), i in nodes.items() if t == "outcome")
    edges = {(s, d, t) for s, d, t in conn.execute("SELECT src, dst, type FROM edges")}
    assert (nodes[("task", TASK)], plan_id, "planned_as") in edges
    assert (plan_id, nodes[("agent", "input-validator")], "uses") in edges
    assert (nodes[("agent", "input-validator")], outcome_id, "contributed_to") in edges
    assert (outcome_id, nodes[("file", "calc.py")], "touches") in edges
    plan_meta = json.loads(conn.execute("SELECT metadata FROM nodes WHERE id=?", (plan_id,)).fetchone()[0])
    assert plan_meta["topology"] == "single"
    outcome = json.loads(conn.execute("SELECT metadata FROM nodes WHERE id=?", (outcome_id,)).fetchone()[0])
    assert outcome["success"] is True
    # the run's session recorded the task, the tool results and the agent's answer as episodes
    episodes = [r[0] for r in conn.execute("SELECT text FROM episodes")]
    assert TASK in episodes and any("5 passed" in e for e in episodes)
    assert any(e.startswith("Added validation to parse_age") for e in episodes)


def test_plan_only_prints_the_plan_and_runs_nothing(repo, scripted):
    brain = Brain(developer, analysis={**ANALYSIS, "complexity": "medium"})
    scripted.default = brain
    result = invoke(repo, "--plan-only", TASK)
    assert result.exit_code == 0, result.output
    assert "vertical — 2 separable steps" in result.stdout
    assert "1. Add validation to parse_age" in result.stdout and "plan only" in result.stdout
    assert "agent" not in brain.seen and "generate" not in brain.seen
    assert (repo / "calc.py").read_text() == CALC
    assert not (repo / ".opencode").exists()  # a plan-only run writes nothing


def test_json_report(repo, scripted):
    scripted.default = Brain(developer, name_for=lambda t: "input-validator", analysis=ANALYSIS)
    result = invoke(repo, "--json", TASK)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["success"] and data["plan"]["topology"] == "single"
    assert data["filesChanged"] == ["calc.py", "tests/test_parse_age_validation.py"]
    assert data["agents"] == ["input-validator"] and data["tokens"] > 0 and data["costUsd"] > 0
    assert data["memory"]["task"].startswith("n")


def test_runaway_agent_stops_at_its_budget_and_is_recorded_as_a_failure(repo, scripted):
    scripted.default = Brain(lambda task, results: call("list", path="."), name_for=lambda t: "looper",
                             analysis=ANALYSIS)
    result = invoke(repo, "--max-steps", "3", TASK)
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "step budget exhausted: 3 model calls" in result.stdout
    [record] = json.loads((repo / ".opencode" / "agent-metrics.json").read_text())["tasks"]
    assert record["agentName"] == "looper" and record["success"] is False
    assert "step budget" in record["context"]["error"]
    assert (repo / "calc.py").read_text() == CALC
    conn = sqlite3.connect(repo / ".opencode" / "opensage.db")
    meta = json.loads(conn.execute("SELECT metadata FROM nodes WHERE type='outcome'").fetchone()[0])
    assert meta["success"] is False


def test_provider_errors_are_retried_then_reported(repo, scripted):
    brain = Brain(lambda task, results: {"error": "rate_limit"}, name_for=lambda t: "unlucky", analysis=ANALYSIS)
    scripted.default = brain
    result = invoke(repo, TASK)
    assert result.exit_code == 1
    assert "RateLimitError" in result.stdout and "after 4 attempt(s)" in result.stdout
    assert brain.seen.count("agent") == 4  # first try + 3 retries with backoff
    [record] = json.loads((repo / ".opencode" / "agent-metrics.json").read_text())["tasks"]
    assert record["success"] is False


def test_horizontal_run_from_the_cli(repo, scripted):
    def act(task, results):
        lenient = "lenient" in task
        new = "    try:\n        return int(text)\n    except ValueError:\n        return None" if lenient else VALIDATED
        if not results:
            return call("edit", path="calc.py", old_string="    return int(text)", new_string=new)
        if len(results) == 1:
            return call("write", path="tests/test_parse_age_validation.py", content=NEW_TEST)
        return "done"

    scripted.default = Brain(act, name_for=lambda t: "lenient-dev" if "lenient" in t else "strict-dev",
                             analysis={**ANALYSIS, "steps": [], "alternatives": ["lenient parsing", "strict raising"]})
    result = invoke(repo, TASK)
    assert result.exit_code == 0, result.stdout
    assert "horizontal — 2 different approaches" in result.stdout
    assert "best_score (verifier: python -m pytest -q)" in result.stdout
    assert "raise ValueError" in (repo / "calc.py").read_text()


def test_no_model_configured_explains_how_to_set_one(cli, project):
    proc = cli("run", TASK)
    assert proc.returncode == 2
    assert "OPENSAGE_MODEL" in proc.stderr and "export OPENSAGE_MODEL=" in proc.stderr
    assert not (project / ".opencode").exists()


def test_steps_given_on_the_command_line_run_as_a_vertical_chain(repo, scripted):
    def act(task, results):
        current = task.split("Your task:")[-1]
        if "Add input validation" in current:
            if not results:
                return call("edit", path="calc.py", old_string="    return int(text)", new_string=VALIDATED)
            return "parse_age now raises ValueError for bad input."
        if not results:
            assert "Step 1" in task and "calc.py" in task  # step 2 knows what step 1 changed
            return call("write", path="tests/test_parse_age_validation.py", content=NEW_TEST)
        if len(results) == 1:
            return call("shell", command="python -m pytest -q")
        return "tests pass" if "5 passed" in results[-1] else f"FAILED: {results[-1][:300]}"

    brain = Brain(act, name_for=lambda t: "validator" if "Add input validation" in t.split("Specialization")[0]
                  else "test-writer",
                  analysis=ANALYSIS)
    scripted.default = brain
    result = invoke(repo, "--step", "Add input validation to parse_age", "--step", "Test parse_age's bad-input handling with pytest", TASK)
    assert result.exit_code == 0, result.stdout
    assert "vertical — 2 steps were given" in result.stdout
    assert "@validator" in result.stdout and "@test-writer" in result.stdout
    assert "raise ValueError" in (repo / "calc.py").read_text()
    assert (repo / "tests" / "test_parse_age_validation.py").exists()
    tasks = json.loads((repo / ".opencode" / "agent-metrics.json").read_text())["tasks"]
    assert [(t["agentName"], t["success"]) for t in tasks] == [("validator", True), ("test-writer", True)]


def test_coordinate_command_plans_through_the_host(host, repo, scripted):
    scripted.default = Brain(developer, analysis={**ANALYSIS, "alternatives": ["lenient", "strict"]})
    result = host.run_line(f'@coordinate task="{TASK}" planOnly=true')
    assert result.data["executed"] is False and result.data["plan"]["topology"] == "horizontal"
    assert result.data["plan"]["mergeStrategy"] == "best_score"
    assert "plan: horizontal" in result.text and "(plan only: nothing was run)" in result.text


def test_run_in_a_real_process_with_a_script_file(cli, repo, tmp_path):
    from scripted_agents import draft

    script = [
        json.dumps(ANALYSIS),
        draft("input-validator"),
        call("read", path="calc.py"),
        call("edit", path="calc.py", old_string="    return int(text)", new_string=VALIDATED),
        call("write", path="tests/test_parse_age_validation.py", content=NEW_TEST),
        call("shell", command="python -m pytest -q"),
        "Validated parse_age and added a test.",
        json.dumps({"items": [], "relations": []}),  # session compression at the end of the run
    ]
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    proc = cli("run", TASK, env={"OPENSAGE_MODEL": "scripted/e2e", "OPENSAGE_SCRIPT": str(path),
                                 "OPENSAGE_BACKOFF_BASE_S": "0.01"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plan" in proc.stdout and "single" in proc.stdout and "success" in proc.stdout
    assert "opensage run" in proc.stderr  # the progress panel
    assert "raise ValueError" in (repo / "calc.py").read_text()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=repo,
                         capture_output=True, text=True)
    assert run.returncode == 0 and "5 passed" in run.stdout
