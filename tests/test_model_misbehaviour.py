"""Models that misbehave, served by a scripted OpenAI-compatible server on 127.0.0.1.

Every test points ``OPENSAGE_MODEL=openai/...`` at :class:`fake_openai.FakeOpenAI`
(through ``OPENAI_API_BASE`` or ``OPENSAGE_API_BASE``), so the real litellm → openai SDK
→ HTTP path runs: hung requests, HTTP 429 with ``Retry-After``, HTTP 500, tool calls
with ``null`` or array arguments, empty answers, prose after JSON, oversized answers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from fake_openai import FakeOpenAI, tool_messages
from opensage import llm
from opensage.errors import ModelError
from opensage.cli import cli
from scripted_agents import Brain, call, draft
from polling import wait_until

REPO = Path(__file__).resolve().parent.parent
TASK = "Write a short notes.txt describing the project"
ANALYSIS = {"complexity": "low", "task_type": "implement", "steps": [], "alternatives": [],
            "verifier": None, "reasoning": "One small change."}
MODEL = "openai/scripted-endpoint"  # not in litellm's price map: an unknown price


@pytest.fixture
def endpoint(monkeypatch):
    """``endpoint(responder, **env)`` starts a FakeOpenAI and points opensage at it."""
    servers: list[FakeOpenAI] = []

    def start(responder, **env) -> FakeOpenAI:
        srv = FakeOpenAI(responder).__enter__()
        servers.append(srv)
        monkeypatch.delenv("OPENSAGE_SCRIPT", raising=False)
        monkeypatch.setenv("OPENSAGE_MODEL", MODEL)
        monkeypatch.setenv("OPENAI_API_BASE", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENSAGE_BACKOFF_BASE_S", "0.01")
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        return srv

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def brain_of(brain: Brain):
    return lambda body: brain(body["messages"], body.get("tools"))


def invoke(project, *args):
    return CliRunner().invoke(cli, ["--workspace", str(project), *args], catch_exceptions=False)


def metrics(project) -> list[dict]:
    path = project / ".opencode" / "agent-metrics.json"
    return json.loads(path.read_text())["tasks"] if path.exists() else []


def outcomes(project) -> list[dict]:
    conn = sqlite3.connect(project / ".opencode" / "opensage.db")
    try:
        return [json.loads(m) for (m,) in conn.execute("SELECT metadata FROM nodes WHERE type='outcome'")]
    finally:
        conn.close()


# -- timeouts, attempts, Retry-After -------------------------------------------------------
@pytest.mark.timeout(90)
def test_hung_endpoint_fails_after_the_configured_timeout(endpoint):
    srv = endpoint(lambda body: {"hang": True}, OPENSAGE_MODEL_TIMEOUT="0.5", OPENSAGE_MODEL_RETRIES="1")
    with pytest.raises(ModelError) as err:
        llm.complete([{"role": "user", "content": "hello"}])
    message = str(err.value)
    assert "after 2 attempt(s)" in message and "no answer within 0.5 s" in message
    assert "OPENSAGE_MODEL_TIMEOUT" in message
    assert len(srv.requests) == 2  # the attempts the message states are the requests the server saw
    assert isinstance(err.value, llm.ModelTimedOut)


def test_default_timeout_is_at_most_a_minute(monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL_TIMEOUT", raising=False)
    assert 0 < llm.settings().timeout_s <= 60


def test_malformed_timeout_setting_is_a_usage_error(monkeypatch):
    from opensage.errors import UsageError

    monkeypatch.setenv("OPENSAGE_MODEL_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="OPENSAGE_MODEL_TIMEOUT='soon'"):
        llm.settings()


@pytest.mark.timeout(90)
def test_attempts_in_the_message_are_the_requests_the_server_received(endpoint):
    srv = endpoint(lambda body: {"status": 500}, OPENSAGE_MODEL_RETRIES="2")
    with pytest.raises(ModelError) as err:
        llm.complete([{"role": "user", "content": "hello"}])
    assert "after 3 attempt(s)" in str(err.value)
    assert len(srv.requests) == 3  # the provider client does not retry underneath
    assert isinstance(err.value, llm.ModelUnavailable)


@pytest.mark.timeout(90)
def test_retry_after_is_honoured(endpoint):
    answers = iter([{"status": 429, "headers": {"Retry-After": "1"}}, "fine"])
    srv = endpoint(lambda body: next(answers))
    assert llm.complete([{"role": "user", "content": "hello"}]).content == "fine"
    assert len(srv.requests) == 2
    assert srv.times[1] - srv.times[0] >= 0.9  # it waited as the server asked


@pytest.mark.timeout(90)
def test_retry_after_beyond_the_bound_fails_at_once_saying_rate_limited(endpoint):
    srv = endpoint(lambda body: {"status": 429, "headers": {"Retry-After": "3600"}},
                   OPENSAGE_MAX_RETRY_AFTER_S="5")
    with pytest.raises(ModelError) as err:
        llm.complete([{"role": "user", "content": "hello"}])
    message = str(err.value)
    assert len(srv.requests) == 1
    assert "rate-limited" in message and "3600 s" in message and "OPENSAGE_MAX_RETRY_AFTER_S=5" in message
    assert "after 1 attempt(s)" in message
    assert isinstance(err.value, llm.ModelRateLimited)


@pytest.mark.timeout(90)
def test_rate_limited_agent_generation_says_so_and_not_use_a_stronger_model(endpoint, project):
    srv = endpoint(lambda body: {"status": 429}, OPENSAGE_MODEL_RETRIES="1")
    result = invoke(project, "@generate-agent", "task=review SQL migrations")
    assert result.exit_code == 1
    assert "rate-limited" in result.stderr and "Wait and run the command again" in result.stderr
    assert "stronger model" not in result.stderr
    assert "after 2 attempt(s)" in result.stderr and len(srv.requests) == 2
    assert not (project / ".opencode" / "agent").exists()


def test_custom_endpoint_through_opensage_api_base(endpoint, monkeypatch):
    srv = endpoint(lambda body: "hello from the endpoint")
    monkeypatch.delenv("OPENAI_API_BASE")
    monkeypatch.setenv("OPENSAGE_API_BASE", srv.base_url)
    assert llm.complete([{"role": "user", "content": "hi"}]).content == "hello from the endpoint"
    assert len(srv.requests) == 1
    readme = (REPO / "README.md").read_text()
    assert "OPENSAGE_API_BASE" in readme and "OPENSAGE_MODEL_TIMEOUT" in readme


# -- hung endpoint under `opensage run` on a non-TTY: progress as it happens -----------------------
@pytest.mark.timeout(120)
def test_run_on_a_hung_endpoint_prints_progress_on_a_pipe_and_fails_in_time(endpoint, project, tmp_path):
    srv = endpoint(lambda body: {"hang": True})
    env = {**os.environ, "OPENSAGE_MODEL_TIMEOUT": "2", "OPENSAGE_MODEL_RETRIES": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err, open(tmp_path / "stdout.txt", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "opensage", "--workspace", str(project), "run", TASK],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        try:
            wait_until(srv.received.is_set, what="the first request")
            # while the request hangs, the progress is already on the pipe
            wait_until(lambda: "analysing the task" in log.read_text(), what="a progress line")
            assert proc.poll() is None
            wait_until(lambda: "attempt 1 of 2" in log.read_text(), what="the retry line")
            assert proc.wait(timeout=60) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert text.endswith("\n")
    error_lines = [line for line in text.splitlines() if "Error:" in line]
    assert error_lines and all(line.startswith("Error:") for line in error_lines)  # not glued to the panel
    assert "after 2 attempt(s)" in error_lines[0] and "no answer within 2 s" in error_lines[0]
    assert len([r for r in srv.requests if "coordinator" in json.dumps(r)[:3000]]) == 2


# -- tool calls with null / array arguments ------------------------------------------------
@pytest.mark.parametrize("raw", ["null", "[\"notes.txt\"]"])
@pytest.mark.timeout(120)
def test_null_or_array_tool_arguments_get_a_tool_error_and_the_run_goes_on(endpoint, project, raw):
    (project / "README.md").write_text("A tiny project.\n")

    def act(task, results):
        if not results:
            return {"tool_calls": [{"name": "read", "raw_arguments": raw}]}
        if len(results) == 1:
            assert "must be a JSON object" in results[0]
            return call("write", path="notes.txt", content="A tiny project.\n")
        return "Wrote notes.txt."

    srv = endpoint(brain_of(Brain(act, name_for=lambda t: "note-writer", analysis=ANALYSIS)))
    result = invoke(project, "run", TASK)
    assert result.exit_code == 0, result.stdout + result.stderr
    replies = [t for body in srv.requests for t in tool_messages(body)]
    assert any(t.startswith("error: read was not run") and "must be a JSON object" in t for t in replies)
    assert (project / "notes.txt").read_text() == "A tiny project.\n"
    [record] = metrics(project)
    assert record["agentName"] == "note-writer" and record["success"] is True
    assert [o["success"] for o in outcomes(project)] == [True]
    runs = project / ".opencode" / "runs"
    assert not any(p.is_dir() for p in runs.glob("*/*")) if runs.exists() else True  # scratch copy removed


# -- empty final answers -------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_an_empty_final_answer_is_a_failure(endpoint, project):
    endpoint(brain_of(Brain(lambda task, results: {"content": ""}, name_for=lambda t: "mute",
                            analysis=ANALYSIS)))
    result = invoke(project, "run", TASK)
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "final answer was empty" in result.stdout
    [record] = metrics(project)
    assert record["agentName"] == "mute" and record["success"] is False
    assert [o["success"] for o in outcomes(project)] == [False]


@pytest.mark.timeout(120)
def test_a_vertical_step_with_an_empty_answer_is_not_ok_and_the_chain_exits_1(endpoint, project):
    endpoint(brain_of(Brain(lambda task, results: {"content": "   "}, name_for=lambda t: "mute")))
    result = invoke(project, "@vertical-decompose", "task=document it", 'subtasks=["write notes"]', "replan=false")
    assert result.exit_code == 1
    assert "[FAILED] @mute" in result.stdout and "[ok]" not in result.stdout
    assert "final answer was empty" in result.stdout
    assert [r["success"] for r in metrics(project)] == [False]


# -- topologies exit non-zero when they failed ----------------------------------------------
@pytest.mark.timeout(120)
def test_vertical_chain_out_of_steps_exits_1(endpoint, project):
    endpoint(brain_of(Brain(lambda task, results: call("list", path="."), name_for=lambda t: "looper")))
    result = invoke(project, "@vertical-decompose", "task=document it", 'subtasks=["a", "b"]', "steps=2",
                    "replan=false")
    assert result.exit_code == 1
    assert "step budget exhausted" in result.stdout and "stopped at step 1" in result.stdout


@pytest.mark.timeout(120)
def test_vertical_chain_on_http_500s_exits_1(endpoint, project):
    brain = Brain(lambda task, results: {"status": 500}, name_for=lambda t: "worker")
    endpoint(brain_of(brain), OPENSAGE_MODEL_RETRIES="0")
    result = invoke(project, "@vertical-decompose", "task=document it", 'subtasks=["a"]', "replan=false")
    assert result.exit_code == 1
    assert "model error at step 1" in result.stdout and "after 1 attempt(s)" in result.stdout


@pytest.mark.timeout(120)
def test_ensemble_without_a_valid_judge_verdict_exits_1(endpoint, project):
    brain = Brain(lambda task, results: "answer", name_for=lambda t: "fast" if "fast" in t else "careful",
                  judge={"choice": 7})
    endpoint(brain_of(brain))
    result = invoke(project, "@horizontal-ensemble", "task=answer it", 'strategies=["fast", "careful"]',
                    "mergeStrategy=llm_judge")
    assert result.exit_code == 1
    assert "the judge gave no valid verdict" in result.stdout


@pytest.mark.timeout(120)
def test_ensemble_over_its_cost_budget_exits_1(endpoint, project):
    brain = Brain(lambda task, results: call("list", path="."), name_for=lambda t: "fast" if "fast" in t else "slow")
    endpoint(brain_of(brain), OPENSAGE_PRICE_PER_MTOK="1000")  # 15 tokens a call: $0.015
    result = invoke(project, "@horizontal-ensemble", "task=answer it", 'strategies=["fast", "slow"]',
                    "mergeStrategy=majority_vote", "maxCostUsd=0.02")
    assert result.exit_code == 1
    assert "cost budget exhausted" in result.stdout and "no member finished" in result.stdout


# -- cost budgets need a price ---------------------------------------------------------------
def test_max_cost_for_a_model_without_a_price_is_refused(endpoint, project):
    srv = endpoint(lambda body: "never asked")
    result = invoke(project, "run", "--max-cost", "0.5", TASK)
    assert result.exit_code == 2
    assert "--max-cost needs the model's price" in result.stderr and "OPENSAGE_PRICE_PER_MTOK" in result.stderr
    assert srv.requests == [] and not (project / ".opencode").exists()
    result = invoke(project, "@vertical-decompose", "task=x", 'subtasks=["a"]', "maxCostUsd=0.5")
    assert result.exit_code == 2 and "maxCostUsd needs the model's price" in result.stderr


def test_max_cost_for_a_priced_model_is_accepted(project, scripted):
    scripted.default = Brain(lambda task, results: "Nothing to change.", name_for=lambda t: "quick",
                             analysis=ANALYSIS)
    result = invoke(project, "run", "--max-cost", "0.5", TASK)
    assert result.exit_code == 0, result.stdout + result.stderr


def test_fallback_price_counts_tokens_for_an_unpriced_model(endpoint):
    endpoint(lambda body: "ok", OPENSAGE_PRICE_PER_MTOK="2")
    out = llm.complete([{"role": "user", "content": "hi"}])
    assert out.usage.total_tokens == 15 and out.usage.cost_usd == pytest.approx(15 * 2 / 1e6)


# -- structured answers: prose after JSON, oversized answers ------------------------------------
class Plan(BaseModel):
    steps: list[str]
    parallel: bool


def test_json_followed_by_prose_is_extracted_on_the_first_attempt(endpoint):
    srv = endpoint(lambda body: '{"steps": ["read {config}", "edit"], "parallel": false}\n\n'
                                "I hope this helps! Let me know {if} you need more.")
    result = llm.structured([{"role": "user", "content": "plan it"}], Plan)
    assert result.value == Plan(steps=["read {config}", "edit"], parallel=False)
    assert result.attempts == 1 and len(srv.requests) == 1


def test_prose_then_json_then_prose_is_extracted():
    text = 'Sure, here it is: {"steps": [], "parallel": true} and that is all }'
    assert json.loads(llm.extract_json(text)) == {"steps": [], "parallel": True}


@pytest.mark.parametrize("repeat, says", [
    (250_000, "3250"),  # ~3 MB: over the bound of one model answer
    (8_000, "prompt: String should have at most 20000 characters"),  # ~100 KB: over the agent prompt bound
])
@pytest.mark.timeout(120)
def test_an_oversized_agent_prompt_is_rejected_and_nothing_is_written(endpoint, project, repeat, says):
    huge = json.loads(draft("huge-agent"))
    huge["prompt"] = "Be thorough. " * repeat
    srv = endpoint(lambda body: json.dumps(huge))
    result = invoke(project, "@generate-agent", "task=review SQL migrations")
    assert result.exit_code == 1
    assert says in result.stderr and "Nothing was written" in result.stderr
    assert not (project / ".opencode" / "agent").exists()
    assert len(srv.requests) == 3
    # the invalid answer is not sent back to the model whole
    assert all(len(json.dumps(body)) < 100_000 for body in srv.requests)


def test_an_oversized_answer_is_cut(endpoint):
    endpoint(lambda body: "x" * (llm.MAX_CONTENT_CHARS + 5000))
    out = llm.complete([{"role": "user", "content": "hi"}])
    assert len(out.content) < llm.MAX_CONTENT_CHARS + 100 and out.content.endswith("5000 more characters]")


@pytest.mark.timeout(120)
def test_a_failed_chain_is_an_error_result_over_mcp(endpoint, host):
    from opensage.mcp_server import call_tool

    endpoint(brain_of(Brain(lambda task, results: {"content": ""}, name_for=lambda t: "mute")))
    result = call_tool(host, "vertical-decompose", {"task": "document it", "subtasks": ["write notes"],
                                                    "replan": False})
    assert result.is_error is True
    assert "[FAILED] @mute" in result.content[0].text
