"""The agent registry: seed-compatible metrics file, locking, ranking, history, @agent-stats."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from opensage.errors import ConfigError, UsageError
from opensage.plugins.agent_registry.registry import (
    TASK_TYPES,
    AgentRegistry,
    classify_task,
    wilson_lower_bound,
)


def _runs(reg: AgentRegistry, agent: str, task_type: str, successes: int, failures: int, task: str = "",
          cost: float = 0.01, latency: float = 1000.0) -> None:
    reg.record_many(
        [{"agent": agent, "task": task, "task_type": task_type, "success": True, "cost_usd": cost,
          "latency_ms": latency} for _ in range(successes)]
        + [{"agent": agent, "task": task, "task_type": task_type, "success": False, "cost_usd": cost,
            "latency_ms": latency} for _ in range(failures)]
    )


def test_record_writes_the_seed_format_plus_ours(workspace):
    reg = AgentRegistry(workspace)
    reg.record("csv-fixer", "Fix the CSV import crash", "fix", True, cost_usd=0.02, tokens=1200, latency_ms=3000)
    reg.record("csv-fixer", "Fix the CSV export", "fix", False, cost_usd=0.04, tokens=800, latency_ms=1000,
               context={"error": "tests failed"})
    data = json.loads(workspace.metrics_path.read_text())
    (agent,) = data["agents"]
    # the seed's AgentMetrics fields, same names
    assert {"name", "taskType", "successCount", "failureCount", "totalCost", "avgLatency", "lastUsed"} <= set(agent)
    assert (agent["successCount"], agent["failureCount"]) == (1, 1)
    assert agent["totalCost"] == pytest.approx(0.06)
    assert agent["avgLatency"] == pytest.approx(2000.0)  # failures count too (the seed averaged successes only)
    assert agent["totalTokens"] == 2000
    # the seed's TaskRecord fields; each run stored once (the seed stored failures twice)
    assert len(data["tasks"]) == 2
    rec = data["tasks"][1]
    assert {"taskId", "agentName", "taskType", "timestamp", "duration", "cost", "success"} <= set(rec)
    assert rec["success"] is False and rec["context"] == {"error": "tests failed"}
    assert rec["task"] == "Fix the CSV export" and rec["tokens"] == 800 and rec["duration"] == 1000.0


def test_reads_a_file_written_by_the_seed(workspace):
    workspace.ensure_state_dir()
    seed = {
        "agents": [{"name": "old-agent", "taskType": "test", "successCount": 3, "failureCount": 1, "totalCost": 0.4,
                    "avgLatency": 900, "lastUsed": "2026-01-01T00:00:00.000Z"}],
        "tasks": [{"taskId": "t1", "agentName": "old-agent", "taskType": "test", "timestamp": 1, "duration": 900,
                   "cost": 0.1, "success": True}],
    }
    workspace.metrics_path.write_text(json.dumps(seed))
    reg = AgentRegistry(workspace)
    reg.record("old-agent", "Write tests for the parser", "test", True, latency_ms=100)
    (row,) = reg.stats()
    assert (row["successCount"], row["failureCount"], row["totalTasks"]) == (4, 1, 5)
    assert row["avgLatency"] == pytest.approx((900 * 4 + 100) / 5)
    assert reg.recommend_agent("Write tests for the lexer", "test") == "old-agent"


def test_bad_values_are_rejected_before_anything_is_written(workspace):
    reg = AgentRegistry(workspace)
    with pytest.raises(UsageError, match="task_type 'deploy' is unknown"):
        reg.record("a", "x", "deploy", True)
    with pytest.raises(UsageError, match="cost_usd must be a number >= 0"):
        reg.record("a", "x", "fix", True, cost_usd=-1)
    with pytest.raises(UsageError, match="not a valid agent name"):
        reg.record("", "x", "fix", True)
    with pytest.raises(UsageError, match="unknown"):
        reg.recommend_agent("x", "deploy")
    assert not workspace.metrics_path.exists()


def test_a_corrupt_file_is_reported_and_never_overwritten(workspace):
    workspace.ensure_state_dir()
    workspace.metrics_path.write_text("{not json")
    reg = AgentRegistry(workspace)
    with pytest.raises(ConfigError, match="agent-metrics.json is not valid JSON"):
        reg.record("a", "x", "fix", True)
    with pytest.raises(ConfigError):
        reg.recommend_agent("x", "fix")
    assert workspace.metrics_path.read_text() == "{not json"


def test_two_processes_recording_at_once_lose_nothing(project, workspace):
    script = textwrap.dedent(
        """
        import sys
        from opensage.plugins.agent_registry.registry import AgentRegistry
        reg = AgentRegistry(sys.argv[1])
        for i in range(40):
            reg.record(sys.argv[2], f"task {i}", "implement", i % 2 == 0, cost_usd=0.001, latency_ms=i)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(project), name]) for name in ("alpha", "beta")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    reg = AgentRegistry(workspace)
    assert len(reg.get_task_history(limit=None)) == 80
    rows = {r["name"]: r for r in reg.stats()}
    assert {n: (rows[n]["successCount"], rows[n]["failureCount"]) for n in rows} == {"alpha": (20, 20),
                                                                                     "beta": (20, 20)}


def test_a_lucky_single_run_does_not_outrank_a_proven_record():
    reg = AgentRegistry()
    _runs(reg, "lucky", "fix", 1, 0, "fix the parser crash", cost=0.001)
    _runs(reg, "proven", "fix", 45, 5, "fix the parser crash", cost=0.05)
    # the seed's rule ranks 1/1 = 100% over 45/50 = 90%; the conservative ranking does not
    assert reg.recommend_agent("fix the parser crash", "fix", explore=False) == "proven"
    ranking = reg.rank("fix the parser crash", "fix", explore=False)
    assert [r.agent for r in ranking] == ["proven", "lucky"]
    assert ranking[1].lower_bound == pytest.approx(wilson_lower_bound(1, 1))


def test_an_agent_that_only_failed_never_ranks_first():
    reg = AgentRegistry()
    _runs(reg, "cheap-failer", "test", 0, 3, "write tests", cost=0.0, latency=1)
    assert reg.recommend_agent("write tests", "test") is None  # nothing has worked yet: generate one
    _runs(reg, "slow-worker", "test", 1, 4, "write tests", cost=1.0, latency=60_000)
    for explore in (True, False):
        ranking = reg.rank("write tests", "test", explore=explore)
        assert ranking[0].agent == "slow-worker"
        assert not ranking[1].eligible
        assert reg.recommend_agent("write tests", "test", explore=explore) == "slow-worker"


def test_ties_go_to_the_cheaper_then_the_faster_agent():
    reg = AgentRegistry()
    _runs(reg, "pricey", "document", 8, 2, "document the API", cost=0.10, latency=1000)
    _runs(reg, "cheap-slow", "document", 8, 2, "document the API", cost=0.01, latency=9000)
    _runs(reg, "cheap-fast", "document", 8, 2, "document the API", cost=0.01, latency=2000)
    for explore in (True, False):
        assert [r.agent for r in reg.rank("document the API", "document", explore=explore)] == [
            "cheap-fast", "cheap-slow", "pricey"]


def test_only_runs_of_the_task_type_count_and_candidates_restrict():
    reg = AgentRegistry()
    _runs(reg, "tester", "test", 9, 1, "write tests for the parser")
    _runs(reg, "fixer", "fix", 9, 1, "fix the parser")
    _runs(reg, "fixer", "test", 1, 4, "write tests for the lexer")
    assert reg.recommend_agent("write tests for the cache", "test") == "tester"
    assert reg.recommend_agent("fix the cache", "fix") == "fixer"
    assert reg.recommend_agent("write tests for the cache", "test", candidates=["fixer"]) == "fixer"
    assert reg.recommend_agent("write tests", "test", candidates=["nobody"]) is None


def test_similar_past_tasks_weigh_more():
    reg = AgentRegistry()
    _runs(reg, "csv-agent", "implement", 6, 0, "parse uploaded CSV files into rows")
    _runs(reg, "csv-agent", "implement", 0, 6, "render an SVG bar chart of sales")
    _runs(reg, "chart-agent", "implement", 0, 6, "parse uploaded CSV files into rows")
    _runs(reg, "chart-agent", "implement", 6, 0, "render an SVG bar chart of sales")
    for explore in (True, False):
        assert reg.recommend_agent("parse the CSV files users upload", "implement", explore=explore) == "csv-agent"
        assert reg.recommend_agent("render a bar chart of monthly sales", "implement",
                                   explore=explore) == "chart-agent"


def test_task_type_defaults_to_the_classifier():
    reg = AgentRegistry()
    reg.record("doc-writer", "Document the public API in the README", success=True)
    assert reg.get_task_history()[0]["taskType"] == "document"
    assert reg.recommend_agent("Document the CLI options") == "doc-writer"


@pytest.mark.parametrize("text, expected", [
    ("Fix the flaky login test", "fix"),
    ("Write tests for the config parser", "test"),
    ("Add unit tests covering the retry logic", "test"),
    ("Refactor the cache module into smaller functions", "refactor"),
    ("Document the REST API in the README", "document"),
    ("Why is the search endpoint slow? Profile it", "analyze"),
    ("Review this pull request for security problems", "analyze"),
    ("Compare SQLAlchemy and Peewee for our use case", "research"),
    ("Add pagination to the users endpoint", "implement"),
    ("Implement OAuth login", "implement"),
    ("", "implement"),
])
def test_classify_task(text, expected):
    assert classify_task(text) == expected
    assert classify_task(text) in TASK_TYPES


def test_history_is_newest_first_and_filtered():
    reg = AgentRegistry()
    for i in range(6):
        reg.record("a" if i % 2 else "b", f"task {i}", "fix", i % 3 == 0, timestamp_ms=1000 + i)
    assert [h["task"] for h in reg.get_task_history(limit=3)] == ["task 5", "task 4", "task 3"]
    assert [h["task"] for h in reg.get_task_history(agent="a", limit=None)] == ["task 5", "task 3", "task 1"]
    assert [h["task"] for h in reg.get_task_history(success=True, limit=None)] == ["task 3", "task 0"]
    assert reg.get_task_history(task_type="test") == []


def test_task_records_are_capped_but_totals_keep_counting(workspace):
    reg = AgentRegistry(workspace, max_tasks=5)
    for i in range(8):
        reg.record("a", f"task {i}", "fix", True)
    assert [h["task"] for h in reg.get_task_history(limit=None)] == [f"task {i}" for i in (7, 6, 5, 4, 3)]
    assert reg.stats()[0]["successCount"] == 8


def test_agent_stats_command_shows_stats_history_and_ranking(cli, project, workspace):
    reg = AgentRegistry(workspace)
    _runs(reg, "parser-fixer", "fix", 4, 1, "fix the parser crash", cost=0.02, latency=4000)
    _runs(reg, "flaky-agent", "fix", 0, 2, "fix the parser crash")
    out = cli("@agent-stats", 'task="fix the parser crash on empty input"')
    assert out.returncode == 0, out.stderr
    assert "parser-fixer" in out.stdout and "fix" in out.stdout and "80%" in out.stdout
    assert "recommend @parser-fixer" in out.stdout
    assert "not eligible" in out.stdout  # flaky-agent only failed
    assert "Recent runs:" in out.stdout
    as_json = cli("--json", "@agent-stats", "agent=parser-fixer", "history=2")
    data = json.loads(as_json.stdout)
    assert [r["name"] for r in data["stats"]] == ["parser-fixer"]
    assert len(data["history"]) == 2 and all(h["agentName"] == "parser-fixer" for h in data["history"])
    bad = cli("@agent-stats", "taskType=deploy")
    assert bad.returncode == 2 and "taskType 'deploy' is unknown" in bad.stderr
