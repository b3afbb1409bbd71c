"""The standalone agent runner: real tool loop through litellm (scripted provider), real files, real sandbox."""

from __future__ import annotations

import json

import pytest

from opensage.hookspecs import hookimpl
from opensage.plugins.agents.runner import AgentRunner, Budget
from opensage.types import AgentSpec, Tool

CALC = '''def parse_age(text):
    return int(text)
'''


def call(name, **arguments):
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def spec(**tools):
    perms = tools or {t: "allow" for t in ("read", "write", "edit", "list", "search", "shell")}
    return AgentSpec(name="tester", description="test agent", prompt="You are careful.", tools=perms, steps=10)


def tool_messages(script, request_index):
    return [m for m in script.requests[request_index]["messages"] if m.get("role") == "tool"]


@pytest.fixture
def repo(project):
    (project / "calc.py").write_text(CALC)
    return project


def test_tool_calls_really_change_files_and_result_is_accounted(host, repo, scripted):
    scripted.add(
        call("read", path="calc.py"),
        call("edit", path="calc.py", old_string="    return int(text)",
             new_string="    if not text.strip().isdigit():\n        raise ValueError(text)\n    return int(text)"),
        call("write", path="tests/test_calc.py",
             content="import pytest\nfrom calc import parse_age\n\ndef test_bad():\n    with pytest.raises(ValueError):\n        parse_age('x')\n"),
        call("shell", command="python -m pytest -q"),
        "Added validation and a test; tests pass.",
    )
    result = AgentRunner(host, spec(), root=repo).run("validate parse_age")
    assert result.success and result.error is None
    assert result.output == "Added validation and a test; tests pass."
    assert result.files_changed == ["calc.py", "tests/test_calc.py"]
    assert "raise ValueError" in (repo / "calc.py").read_text()
    assert result.steps == 5 and result.tokens > 0 and result.cost_usd > 0 and result.latency_ms > 0
    # the model saw what each tool returned
    assert "def parse_age" in tool_messages(scripted, 1)[0]["content"]
    shell_out = tool_messages(scripted, 4)[-1]["content"]
    assert "exit code: 0" in shell_out and "1 passed" in shell_out
    offered = {t["function"]["name"] for t in scripted.requests[0]["tools"]}
    assert offered == {"read", "write", "edit", "list", "search", "shell"}


def test_paths_outside_the_root_are_refused(host, repo, scripted, tmp_path):
    scripted.add(
        {"tool_calls": [
            {"name": "write", "arguments": {"path": "../escape.txt", "content": "x"}},
            {"name": "write", "arguments": {"path": str(tmp_path / "abs.txt"), "content": "x"}},
            {"name": "read", "arguments": {"path": "/etc/passwd"}},
            {"name": "write", "arguments": {"path": ".git/config", "content": "x"}},
        ]},
        "done",
    )
    result = AgentRunner(host, spec(), root=repo).run("try to escape")
    replies = [m["content"] for m in tool_messages(scripted, 1)]
    assert all(r.startswith("error:") for r in replies), replies
    assert "outside the working directory" in replies[0] and "read-only" in replies[3]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "abs.txt").exists()
    assert not (repo / ".git").exists()
    assert result.files_changed == []


def test_permission_map_limits_offered_and_callable_tools(host, repo, scripted):
    scripted.add(call("write", path="x.txt", content="no"), "ok")
    result = AgentRunner(host, spec(read="allow", write="deny", shell="ask"), root=repo).run("write")
    assert {t["function"]["name"] for t in scripted.requests[0]["tools"]} == {"read"}
    assert "not available" in tool_messages(scripted, 1)[0]["content"]
    assert not (repo / "x.txt").exists() and result.files_changed == []
    # 'ask' becomes allow when the caller says so (opensage run does)
    scripted.add("ok")
    AgentRunner(host, spec(read="allow", shell="ask"), root=repo, ask_policy="allow").run("x")
    assert {t["function"]["name"] for t in scripted.requests[-1]["tools"]} == {"read", "shell"}


def test_runaway_agent_stops_at_its_step_budget(host, repo, scripted):
    scripted.default = call("list", path=".")
    result = AgentRunner(host, spec(), root=repo, budget=Budget(steps=4)).run("loop forever")
    assert not result.success
    assert "step budget exhausted" in result.error and result.steps == 4
    assert len(scripted.requests) == 4


def test_cost_budget_stops_the_run(host, repo, scripted):
    scripted.default = {"tool_calls": [{"name": "list", "arguments": {}}], "prompt_tokens": 5000}
    result = AgentRunner(host, spec(), root=repo, budget=Budget(steps=50, max_cost_usd=0.012)).run("spend")
    assert not result.success and "cost budget exhausted" in result.error
    assert result.steps == 3  # 5000 tokens at 1e-6 USD each: the third call crosses $0.012


def test_provider_errors_are_retried_then_reported(host, repo, scripted):
    scripted.add({"error": "rate_limit"}, "recovered")
    ok = AgentRunner(host, spec(), root=repo).run("x")
    assert ok.success and ok.output == "recovered" and len(scripted.requests) == 2
    scripted.add(*[{"error": "rate_limit"}] * 4)
    bad = AgentRunner(host, spec(), root=repo).run("x")
    assert not bad.success
    assert "after 4 attempt(s)" in bad.error and "RateLimitError" in bad.error


def test_agent_reporting_failure_is_a_failure(host, repo, scripted):
    scripted.add("FAILED: calc.py has no parse_age to change")
    result = AgentRunner(host, spec(), root=repo).run("x")
    assert not result.success and result.error == "calc.py has no parse_age to change"


def test_shell_runs_in_the_sandbox(host, repo, scripted, tmp_path):
    outside = tmp_path / "outside-marker.txt"
    scripted.add(call("shell", command=f"echo hi > {outside}; echo in > inside.txt; echo $OPENAI_API_KEY; pwd"),
                 "done")
    import os
    os.environ["OPENAI_API_KEY"] = "sk-secret-test"
    try:
        result = AgentRunner(host, spec(), root=repo).run("x")
    finally:
        del os.environ["OPENAI_API_KEY"]
    out = tool_messages(scripted, 1)[0]["content"]
    assert "sk-secret-test" not in out and str(repo) in out
    assert not outside.exists()
    assert (repo / "inside.txt").read_text() == "in\n"
    assert result.files_changed == ["inside.txt"]


class _ToolPlugin:
    def __init__(self):
        self.calls = []

    @hookimpl
    def register_tools(self, register, session):
        def run(args, ctx):
            self.calls.append(args)
            return json.dumps({"sum": args["a"] + args["b"]})

        register(Tool("adder", "Add two numbers.", {"type": "object", "properties": {
            "a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}, run))


def test_generated_tools_are_offered_when_permitted(workspace, repo, scripted):
    from opensage.host import Host

    plugin = _ToolPlugin()
    h = Host(workspace, plugins=[plugin])
    try:
        scripted.add(call("adder", a=2, b=3), "5")
        result = AgentRunner(h, spec(read="allow", adder="allow"), root=repo).run("add")
        assert plugin.calls == [{"a": 2, "b": 3}]
        assert json.loads(tool_messages(scripted, 1)[0]["content"]) == {"sum": 5}
        assert result.success
        scripted.add("no tool")
        AgentRunner(h, spec(read="allow"), root=repo).run("add")
        assert "adder" not in {t["function"]["name"] for t in scripted.requests[-1]["tools"]}
    finally:
        h.close()


def test_memory_tools_write_and_read_graph_memory(host, repo, scripted):
    scripted.add(
        call("memory_add", type="decision", label="ages are validated", content="parse_age rejects non-digits"),
        call("memory_query", query="parse_age validated"),
        "remembered",
    )
    result = AgentRunner(host, spec(memory_add="allow", memory_query="allow"), root=repo).run("remember")
    assert result.success
    assert "added" in tool_messages(scripted, 1)[0]["content"]
    assert "ages are validated" in tool_messages(scripted, 2)[-1]["content"]
    row = host.db.conn.execute("SELECT content FROM nodes WHERE type='decision'").fetchone()
    assert row["content"] == "parse_age rejects non-digits"


def test_edit_requires_a_unique_match(host, repo, scripted):
    (repo / "dup.py").write_text("x = 1\nx = 1\n")
    scripted.add(call("edit", path="dup.py", old_string="x = 1", new_string="x = 2"),
                 call("edit", path="dup.py", old_string="x = 1", new_string="x = 2", replace_all=True), "ok")
    AgentRunner(host, spec(), root=repo).run("edit")
    assert "occurs 2 times" in tool_messages(scripted, 1)[0]["content"]
    assert (repo / "dup.py").read_text() == "x = 2\nx = 2\n"


def test_token_budget_stops_the_run(host, repo, scripted):
    scripted.default = {"tool_calls": [{"name": "list", "arguments": {}}], "prompt_tokens": 700}
    result = AgentRunner(host, spec(), root=repo, budget=Budget(steps=50, max_tokens=2000)).run("read a lot")
    assert not result.success and "token budget exhausted" in result.error
    assert result.steps == 3 and result.tokens > 2000
