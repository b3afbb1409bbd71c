"""The dynamic-tools plugin end to end: scripted model -> sandbox checks -> @name, state, listing."""

from __future__ import annotations

import json

import pytest
from types import SimpleNamespace

from opensage.errors import ModelError, NotFoundError, UsageError

ADD_OK = """\
import json, sys
req = json.load(sys.stdin)
a = req["arguments"]
print(json.dumps({"result": a["a"] + a["b"]}))
"""
ADD_BUG = ADD_OK.replace('a["a"] + a["b"]', 'a["a"] - a["b"]')
ADD_SYNTAX = "import json, sys\nprint(json.dumps({'result': 1}\n"
COUNTER = """\
import json, sys
req = json.load(sys.stdin)
state = req.get("state") or {"count": 0}
state = {"count": state["count"] + req["arguments"].get("step", 1)}
print(json.dumps({"result": state["count"], "state": state}))
"""
ADD_PARAMS = {"type": "object", "properties": {"a": {"type": "integer", "description": "first"},
                                               "b": {"type": "integer", "description": "second"}},
              "required": ["a", "b"]}


def spec(code, *, name="add", language="python", params=ADD_PARAMS, examples=None, deps=()):
    return json.dumps({
        "name": name, "description": "Add two integers.", "language": language, "parameters": params,
        "code": code, "dependencies": list(deps),
        "examples": examples or [{"arguments": {"a": 2, "b": 3}, "expected": 5},
                                 {"arguments": {"a": -1, "b": 1}, "expected": 0}],
    })


def test_failing_examples_are_retried_then_rejected_and_nothing_is_registered(host, scripted, project):
    scripted.add(spec(ADD_BUG), spec(ADD_BUG), spec(ADD_SYNTAX))
    with pytest.raises(ModelError) as err:
        host.run_line('@generate-tool requirement="add a and b" name=add attempts=3')
    message = str(err.value)
    assert "rejected after 3 attempts" in message
    assert "expected result 5, got -1" in message          # the failing output is shown
    assert "syntax check failed" in message and "SyntaxError" in message
    assert len(scripted.requests) == 3
    # the second request carried the first failure back to the model
    assert "expected result 5, got -1" in scripted.requests[1]["messages"][-1]["content"]
    tools_dir = project / ".opencode" / "generated-tools"
    assert not tools_dir.exists() or list(tools_dir.iterdir()) == []
    with pytest.raises(NotFoundError):
        host.command("add")


def test_passing_tool_is_callable_at_once_and_from_a_new_process(host, scripted, project, cli):
    scripted.add(spec(ADD_SYNTAX), spec(ADD_OK))
    out = host.run_line('@generate-tool requirement="add a and b" name=add')
    assert "Registered @add" in out.text and out.data["attempts"] == 2
    assert out.data["examples"][0]["level"] == "bwrap"
    folder = project / ".opencode" / "generated-tools" / "add"
    assert sorted(p.name for p in folder.iterdir()) == ["examples.json", "spec.json", "tool.py"]
    assert host.run_line("@add a=2 b=40").text == "42"
    with pytest.raises(UsageError) as bad:
        host.run_line("@add a=2 b=notanumber")
    assert "b" in str(bad.value)
    with pytest.raises(UsageError):
        host.run_line("@add a=2")
    # survives a restart: a new process sees the stored tool as a command
    proc = cli("@add", "a=20", "b=22")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"
    listing = host.run_line("@list-generated-tools")
    assert "@add [python] Add two integers." in listing.text
    assert "a:integer, b:integer" in listing.text and "succeeded" in listing.text
    # and agents get it as a tool
    tool = host.tools()["add"]
    assert tool.parameters["required"] == ["a", "b"]
    from opensage.types import CommandContext
    assert tool.run({"a": 1, "b": 2}, CommandContext(host=host)) == "3"


def test_name_collision_with_a_command_is_refused_before_the_model_is_called(host, scripted, project):
    with pytest.raises(UsageError) as err:
        host.run_line('@generate-tool requirement="x" name=list-generated-tools')
    assert "collides" in str(err.value)
    for bad in ("My_Tool", "../x", "a" * 60, "memory-query"):
        with pytest.raises(UsageError):
            host.run_line(f'@generate-tool requirement="x" name={bad}')
    assert scripted.requests == []
    assert not (project / ".opencode" / "generated-tools").exists()


def test_missing_dependency_is_a_rejection_reason(host, scripted, project):
    bad = spec(ADD_OK, deps=["surely_not_a_module_xyz"])
    scripted.add(bad)
    with pytest.raises(ModelError) as err:
        host.run_line('@generate-tool requirement="add" name=add attempts=1')
    assert "surely_not_a_module_xyz" in str(err.value)
    assert not (project / ".opencode" / "generated-tools" / "add").exists()


@pytest.mark.parametrize("language,code", [
    ("bash", 'read -r line; python3 -c \'import json,sys; a=json.loads(sys.argv[1])["arguments"]; '
             'print(json.dumps({"result": a["a"]+a["b"]}))\' "$line"\n'),
    ("node", 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const a=JSON.parse(s).arguments;'
             'console.log(JSON.stringify({result:a.a+a.b}))});\n'),
])
def test_bash_and_node_tools(host, scripted, language, code):
    scripted.add(spec(code, language=language))
    host.run_line(f'@generate-tool requirement="add" name=add language={language}')
    assert host.run_line("@add a=1 b=2").text == "3"


def _make_counter(host, scripted):
    params = {"type": "object", "properties": {"step": {"type": "integer"}}, "required": []}
    scripted.add(spec(COUNTER, name="counter", params=params,
                      examples=[{"arguments": {}, "expected": 1}, {"arguments": {"step": 2}, "state": {"count": 5}, "expected": 7}]))
    host.run_line('@generate-tool requirement="a counter" name=counter')


def test_stateful_counter_reset_and_independent_state_ids(host, scripted):
    _make_counter(host, scripted)
    run = "@execute-tool-stateful toolName=counter action=run"
    assert [host.run_line(run).text for _ in range(3)] == ["1", "2", "3"]
    assert host.run_line("@execute-tool-stateful toolName=counter action=load-state").data["state"] == {"count": 3}
    assert host.run_line(run + " stateId=other").text == "1"
    assert host.run_line(run).text == "4"
    assert "reset" in host.run_line("@execute-tool-stateful toolName=counter action=reset").text
    assert host.run_line(run).text == "1"
    assert host.run_line(run + " stateId=other").text == "2"
    host.run_line('@execute-tool-stateful toolName=counter action=save-state stateId=other state={"count": 10}')
    assert host.run_line(run + ' stateId=other args={"step": 5}').text == "15"


def test_stateful_bad_input(host, scripted):
    _make_counter(host, scripted)
    with pytest.raises(UsageError):
        host.run_line("@execute-tool-stateful toolName=counter action=save-state")
    with pytest.raises(UsageError):
        host.run_line('@execute-tool-stateful toolName=counter action=run args={"step": "many"}')
    with pytest.raises(NotFoundError):
        host.run_line("@execute-tool-stateful toolName=nope action=run")
    with pytest.raises(UsageError):
        host.run_line("@execute-tool-stateful toolName=../etc action=run")


def test_refused_without_bwrap_unless_fallback_allowed(host, scripted, monkeypatch, project):
    from opensage.errors import SandboxError

    monkeypatch.setenv("OPENSAGE_BWRAP", "/nonexistent/bwrap")
    monkeypatch.delenv("OPENSAGE_SANDBOX_FALLBACK", raising=False)
    with pytest.raises(SandboxError) as err:
        host.run_line('@generate-tool requirement="add" name=add')
    assert "allow_fallback" in str(err.value) and "OPENSAGE_SANDBOX_FALLBACK=allow" in str(err.value)
    assert scripted.requests == []
    user = project.parent / "user-config.yaml"  # the user's file, not the project's
    user.write_text("sandbox:\n  allow_fallback: true\n")
    monkeypatch.setenv("OPENSAGE_CONFIG", str(user))
    scripted.add(spec(ADD_OK))
    out = host.run_line('@generate-tool requirement="add" name=add')
    assert out.data["examples"][0]["level"] == "rlimit"


def test_declared_site_package_dependency_is_importable(host, scripted):
    code = ADD_OK.replace("import json, sys", "import json, sys\nimport yaml").replace(
        'a["a"] + a["b"]', 'a["a"] + a["b"] + yaml.safe_load("k: 0")["k"]')
    scripted.add(spec(code, deps=["yaml"]))
    host.run_line('@generate-tool requirement="add" name=add')
    assert host.run_line("@add a=4 b=5").text == "9"


def test_non_json_output_and_crashing_tools_are_rejected(host, scripted, project):
    scripted.add(spec('print("five")\n'), spec("import sys\nsys.exit(3)\n"))
    with pytest.raises(ModelError) as err:
        host.run_line('@generate-tool requirement="add" name=add attempts=2')
    assert "output is not JSON" in str(err.value) and "'five" in str(err.value)
    assert "exit code 3" in str(err.value)
    assert not (project / ".opencode" / "generated-tools").exists() or not any((project / ".opencode" / "generated-tools").iterdir())


def test_cli_rejection_shows_the_failure_and_exits_non_zero(cli, project, tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([spec(ADD_BUG)]))
    proc = cli("@generate-tool", "requirement=add", "name=add", "attempts=1",
               env={"OPENSAGE_MODEL": "scripted/test", "OPENSAGE_SCRIPT": str(script)})
    assert proc.returncode == 1
    assert "expected result 5, got -1" in proc.stderr + proc.stdout
    assert not (project / ".opencode" / "generated-tools" / "add").exists()
    assert cli("@add", "a=1", "b=2").returncode == 2  # unknown command


CLAMP = """\
import json, sys
print(json.dumps({"result": json.load(sys.stdin)["arguments"]["n"] * 2}))
"""
CLAMP_PARAMS = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 5},
                                                 "tag": {"type": "string", "pattern": "^[a-z]+$"}},
                "required": ["n"]}


def test_schema_constraints_are_enforced_before_the_sandbox_starts(host, scripted, cli):
    scripted.add(spec(CLAMP, name="double", params=CLAMP_PARAMS,
                      examples=[{"arguments": {"n": 2}, "expected": 4}]))
    host.run_line('@generate-tool requirement="double n (0..5)" name=double')
    proc = cli("@double", "n=999")
    assert proc.returncode == 2, proc.stderr
    assert "argument 'n': 999 is greater than the maximum of 5" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("@double", "n=3", "tag=Not-Lower")
    assert proc.returncode == 2 and "'tag'" in proc.stderr and "does not match" in proc.stderr
    assert "never run" in cli("@list-generated-tools").stdout, "a rejected call must not reach the sandbox"
    assert cli("@double", "n=5").stdout.strip() == "10"
    from opensage.types import CommandContext
    with pytest.raises(UsageError, match="less than the minimum of 0"):  # the agents' path too
        host.tools()["double"].run({"n": -1}, CommandContext(host=host))
    with pytest.raises(UsageError, match="maximum"):
        host.run_line('@async-tool-background toolName=double parameters={"n": 6}')


def test_malformed_schema_or_examples_breaking_it_are_rejected_at_generation(host, scripted, project):
    bad_schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": "five"}}, "required": ["n"]}
    breaking = spec(CLAMP, name="double", params=CLAMP_PARAMS, examples=[{"arguments": {"n": 9}, "expected": 18}])
    scripted.add(spec(CLAMP, name="double", params=bad_schema, examples=[{"arguments": {"n": 2}, "expected": 4}]),
                 breaking)
    with pytest.raises(ModelError) as err:
        host.run_line('@generate-tool requirement="double n" name=double attempts=2')
    message = str(err.value)
    assert "parameters is not a valid JSON Schema" in message and "'five' is not of type 'number'" in message
    assert "example 1" in message and "greater than the maximum of 5" in message
    assert "not a valid JSON Schema" in scripted.requests[1]["messages"][-1]["content"], "the model is told why"
    assert not (project / ".opencode" / "generated-tools" / "double").exists()


HOSTILE_PARAMS = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
                  "patternProperties": {"^(x+)+$": {"type": "integer"}}, "required": ["s"]}


def test_schema_patterns_are_matched_by_re2_so_a_hostile_pattern_cannot_hang_a_call(host, scripted, cli):
    # Python's re needs ~2**n steps for ^(a+)+$ against "a"*n + "!"; RE2 is linear. With re,
    # this call would not finish within the subprocess timeout below.
    code = 'import json, sys\nprint(json.dumps({"result": len(json.load(sys.stdin)["arguments"]["s"])}))\n'
    scripted.add(spec(code, name="measure", params=HOSTILE_PARAMS, examples=[{"arguments": {"s": "aaa"}, "expected": 3}]))
    host.run_line('@generate-tool requirement="length of s" name=measure')
    proc = cli("@measure", "s=" + "a" * 5000 + "!", timeout=60)
    assert proc.returncode == 2 and "does not match '^(a+)+$'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert cli("@measure", "s=aaaa").stdout.strip() == "4"
    from opensage.plugins.dynamic_tools.commands import check_arguments, parameters_validator
    with pytest.raises(UsageError, match="'xxxx': 'no' is not of type 'integer'"):
        check_arguments(SimpleNamespace(name="measure", parameters=HOSTILE_PARAMS), {"s": "a", "xxxx": "no"})
    with pytest.raises(UsageError, match=r"parameters\.properties\.s\.pattern .*not a valid regular expression for RE2"):
        parameters_validator({"type": "object", "properties": {"s": {"type": "string", "pattern": "(a)\\1"}}})


def test_draft_7_schemas_are_read_as_draft_7(host, scripted):
    # a tuple-form "items" list is Draft 7 (it is no valid schema in Draft 2020-12)
    params = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"pair": {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]}},
              "required": ["pair"]}
    code = 'import json, sys\nprint(json.dumps({"result": len(json.load(sys.stdin)["arguments"]["pair"])}))\n'
    scripted.add(spec(code, name="pair", params=params, examples=[{"arguments": {"pair": [1, "a"]}, "expected": 2}]))
    host.run_line('@generate-tool requirement="count" name=pair')
    assert host.run_line('@pair pair=[3,"x"]').text == "2"
    with pytest.raises(UsageError, match="2 is not of type 'string'"):
        host.run_line("@pair pair=[1,2]")
    from opensage.plugins.dynamic_tools.commands import parameters_validator
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        parameters_validator({k: v for k, v in params.items() if k != "$schema"})
    with pytest.raises(UsageError, match="not supported"):
        parameters_validator({**params, "$schema": "http://example.com/my-dialect"})


def test_a_remote_ref_is_never_fetched(host, scripted, project):
    params = {"type": "object", "properties": {"n": {"$ref": "http://127.0.0.1:9/evil.json"}}, "required": ["n"]}
    scripted.add(spec(CLAMP, name="double", params=params, examples=[{"arguments": {"n": 2}, "expected": 4}]))
    with pytest.raises(ModelError, match="does not resolve inside the schema"):
        host.run_line('@generate-tool requirement="double n" name=double attempts=1')
    assert not (project / ".opencode" / "generated-tools" / "double").exists()
