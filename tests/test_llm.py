"""opensage.llm through the real litellm code path, with the scripted provider."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel

from opensage import llm
from opensage.errors import ModelError, ModelNotConfigured


class Plan(BaseModel):
    steps: list[str]
    parallel: bool


def test_structured_feeds_validation_error_back_and_retries(scripted):
    scripted.add('{"steps": "not a list"}', 'Sure! ```json\n{"steps": ["read", "edit"], "parallel": false}\n```')
    result = llm.structured([{"role": "user", "content": "plan it"}], Plan)
    assert result.value == Plan(steps=["read", "edit"], parallel=False)
    assert result.attempts == 2 and result.usage.calls == 2
    retry_prompt = scripted.requests[1]["messages"][-1]["content"]
    assert "invalid" in retry_prompt and "steps" in retry_prompt
    assert "JSON Schema" in scripted.requests[0]["messages"][0]["content"]


def test_structured_gives_up_after_bounded_attempts(scripted):
    scripted.add("nope", "{}", '{"steps": []}')
    with pytest.raises(ModelError, match="invalid Plan 3 times"):
        llm.structured([{"role": "user", "content": "plan"}], Plan)
    assert len(scripted.requests) == 3


def test_rate_limit_is_retried_with_backoff_then_succeeds(scripted):
    scripted.add({"error": "rate_limit"}, {"error": "timeout"}, "done")
    out = llm.complete([{"role": "user", "content": "x"}])
    assert out.content == "done" and len(scripted.requests) == 3


def test_persistent_provider_error_is_reported(scripted):
    scripted.add(*[{"error": "rate_limit"}] * 4)
    with pytest.raises(ModelError, match=r"after 4 attempt\(s\).*RateLimitError"):
        llm.complete([{"role": "user", "content": "x"}])


def test_usage_tokens_and_cost_are_returned(scripted):
    scripted.add({"content": "ok", "prompt_tokens": 100, "completion_tokens": 20})
    out = llm.complete([{"role": "user", "content": "x"}])
    assert out.usage.total_tokens == 120
    assert out.usage.cost_usd == pytest.approx(120e-6)
    assert out.usage.latency_ms > 0


def test_tool_calls_round_trip(scripted):
    scripted.add({"tool_calls": [{"name": "read", "arguments": {"path": "a.py"}}]})
    out = llm.complete([{"role": "user", "content": "x"}],
                       tools=[{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}])
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("read", {"path": "a.py"})]
    assert out.as_message()["tool_calls"][0]["function"]["name"] == "read"
    assert scripted.requests[0]["tools"][0]["function"]["name"] == "read"


def test_no_model_configured_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("OPENSAGE_MODEL", raising=False)
    with pytest.raises(ModelNotConfigured, match="OPENSAGE_MODEL"):
        llm.complete([{"role": "user", "content": "x"}])


def test_llm_module_does_not_import_litellm_until_used():
    code = "import opensage.llm, opensage.cli, opensage.host, sys; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("argv", [["@memory-query", "query=x"], ["@memory-add-node", "type=code", "label=x"], ["commands"]])
def test_commands_without_a_model_never_import_litellm(project, argv):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "opensage", "-w", str(project), *argv],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert "litellm" not in imported and "openai" not in imported


class _Err(Exception):
    def __init__(self, headers):
        super().__init__("http error")
        self.litellm_response_headers = headers


@pytest.mark.parametrize("headers, wait", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: no wait
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_retry_after_header_forms(headers, wait):
    assert llm.retry_after_s(_Err(headers)) == wait


@pytest.mark.parametrize("text", [
    '{"a": 1} trailing prose with a } brace',
    'Here: ```json\n{"a": 1}\n``` done',
    'noise [not json { "a": 1 } more',
])
def test_extract_json_finds_the_object(text):
    import json

    assert json.loads(llm.extract_json(text)) == {"a": 1}


def test_extract_json_survives_deep_nesting():
    assert llm.extract_json("[" * 100_000) == "[" * 100_000  # no RecursionError; the caller reports invalid JSON
