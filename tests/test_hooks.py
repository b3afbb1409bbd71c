"""Every hook in hookspecs.py: documented with its exact signature, and exercised here."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from opensage import Command, CommandResult, Route, SessionEvent, Tool, hookimpl, hookspecs
from opensage.cli import cli
from opensage.errors import PluginError
from opensage.host import Host
from opensage.types import ArgModel

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "plugin-hooks.md").read_text()


def hook_names() -> list[str]:
    return [n for n, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, "opensage_spec")]


def test_every_hook_documented_with_exact_signature():
    names = hook_names()
    assert len(names) >= 7
    for name in names:
        sig = f"{name}{inspect.signature(getattr(hookspecs, name))}"
        assert re.search(rf"^## {re.escape(sig)}$", DOC, re.M), f"docs/plugin-hooks.md lacks '## {sig}'"


def test_every_hook_has_a_test():
    missing = [n for n in hook_names() if f"test_hook_{n}" not in globals()]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


class Recorder:
    """A throwaway plugin recording the broadcast hooks it receives."""

    def __init__(self):
        self.calls: list[tuple] = []

    @hookimpl
    def session_start(self, session):
        self.calls.append(("start", session.id, session.source))

    @hookimpl
    def session_event(self, session, event):
        self.calls.append(("event", session.id, event.kind, event.text))

    @hookimpl
    def session_compact(self, session):
        self.calls.append(("compact", session.id))

    @hookimpl
    def session_end(self, session):
        self.calls.append(("end", session.id))


class Broken:
    @hookimpl
    def session_event(self, session, event):
        raise RuntimeError("plugin bug")

    @hookimpl
    def session_start(self, session):
        raise RuntimeError("plugin bug at start")


def invoke(host, *args, input=None):
    return CliRunner().invoke(cli, ["--workspace", str(host.workspace.root), *args], input=input,
                              obj={"host": host}, catch_exceptions=False)


def test_hook_register_commands(workspace):
    class EchoArgs(ArgModel):
        text: str
        times: int = 1

    class EchoPlugin:
        @hookimpl
        def register_commands(self, register):
            register(Command("echo", EchoArgs, lambda a, ctx: CommandResult(" ".join([a.text] * a.times)), "Echo."))

    host = Host(workspace, plugins=[EchoPlugin()])
    result = invoke(host, "@echo", "text=hi", "times=3")
    assert result.exit_code == 0 and result.output.strip() == "hi hi hi"
    assert host.command("echo").plugin != "" and host.commands["memory-add-node"].plugin == "graph-memory"
    bad = invoke(host, "@echo", "times=x", "text=a")
    assert bad.exit_code == 2 and "times" in bad.output


def test_hook_register_tools(workspace):
    asked = []

    class ToolPlugin:
        @hookimpl
        def register_tools(self, register, session):
            asked.append(session)
            register(Tool("word_count", "Count words.", {"type": "object", "properties": {"text": {"type": "string"}}},
                          lambda args, ctx: str(len(args["text"].split()))))

    host = Host(workspace, plugins=[ToolPlugin()])
    tools = host.tools()
    assert tools["word_count"].run({"text": "a b c"}, None) == "3"
    host.tools()
    assert len(asked) == 2, "tools must be asked anew on every call, never cached"


def test_hook_session_start(workspace):
    rec = Recorder()
    host = Host(workspace, plugins=[rec, Broken()])
    out = invoke(host, "hook", "session-start", input=json.dumps({"session_id": "s1", "source": "opencode"}))
    assert ("start", "s1", "opencode") in rec.calls, "a failing plugin must not stop the others"
    assert out.exit_code == 1, "the host must learn that a plugin failed on its event"
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["ok"] is False and line["errors"][0]["hook"] == "session_start"
    assert "plugin bug" in line["errors"][0]["error"]
    assert "a plugin failed" in out.stderr


def test_hook_exits_zero_when_every_plugin_handles_it(workspace):
    rec = Recorder()
    host = Host(workspace, plugins=[rec])
    out = invoke(host, "hook", "session-start", input=json.dumps({"session_id": "s1"}))
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"ok": True, "session_id": "s1", "hook": "session-start"}


def test_hook_session_event(workspace, caplog):
    rec = Recorder()
    host = Host(workspace, plugins=[Broken(), rec])
    with caplog.at_level(logging.ERROR, logger="opensage"):
        out = invoke(host, "hook", "user-message", input=json.dumps({"session_id": "s1", "text": "fix the login bug"}))
    assert out.exit_code == 1, out.output
    assert ("event", "s1", "user_message", "fix the login bug") in rec.calls, "a failing plugin must not stop the others"
    assert any("plugin bug" in r.getMessage() for r in caplog.records)


def test_wrapper_hookimpl_on_session_event_runs_before_and_after_the_others(workspace):
    order = []

    class Around:
        @hookimpl(wrapper=True)
        def session_event(self, session, event):
            order.append("before")
            result = yield
            order.append(("after", len(result)))
            return result

    class Inner:
        @hookimpl
        def session_event(self, session, event):
            order.append(("inner", event.text))

    broken = Broken()
    host = Host(workspace, plugins=[Inner(), Around(), broken])
    host.record(host.session("w1"), SessionEvent(kind="user_message", text="hi"))
    assert order == ["before", ("inner", "hi"), ("after", 0)], order
    assert [(f["plugin"], f["hook"]) for f in host.last_failures] == [(host.pm.get_name(broken), "session_event")]


def test_a_raising_wrapper_is_isolated_and_named(workspace, caplog):
    class BadWrapper:
        @hookimpl(wrapper=True)
        def session_start(self, session):
            raise RuntimeError("wrapper bug")
            yield  # pragma: no cover

    class BadTeardown:
        @hookimpl(wrapper=True)
        def session_end(self, session):
            yield
            raise RuntimeError("teardown bug")

    rec, bad = Recorder(), BadWrapper()
    host = Host(workspace, plugins=[rec, bad, BadTeardown()])
    session = host.session("w2")
    with caplog.at_level(logging.ERROR, logger="opensage"):
        host.start_session(session)
        assert ("start", "w2", "cli") in rec.calls, "the other implementations must still run"
        assert [f["error"] for f in host.last_failures] == ["RuntimeError: wrapper bug"]
        host.end_session(session)
    assert ("end", "w2") in rec.calls
    assert [f["error"] for f in host.last_failures] == ["RuntimeError: teardown bug"]
    assert any(f"plugin {host.pm.get_name(bad)} failed in session_start: RuntimeError: wrapper bug" in r.getMessage()
               for r in caplog.records)


def test_misspelt_hookimpl_fails_at_start_up_naming_the_plugin(workspace):
    class Typo:
        @hookimpl
        def session_evnt(self, session, event):  # misspelt on purpose
            pass

    with pytest.raises(PluginError) as err:
        Host(workspace, plugins=[Typo()])
    assert "session_evnt" in str(err.value) and "did you mean 'session_event'" in str(err.value)
    assert err.value.exit_code == 2

    class WrongArgument:
        @hookimpl
        def session_event(self, sesion, event):  # an argument the hook does not have
            pass

    with pytest.raises(PluginError, match="sesion"):
        Host(workspace, plugins=[WrongArgument()])


def test_a_plugin_failing_to_register_commands_leaves_the_others(workspace, caplog):
    class BadCommands:
        @hookimpl
        def register_commands(self, register):
            register("not a command")

    bad = BadCommands()
    with caplog.at_level(logging.ERROR, logger="opensage"):
        host = Host(workspace, plugins=[bad])
        assert "memory-add-node" in host.commands and host.commands["memory-add-node"].plugin == "graph-memory"
    assert any(f"plugin {host.pm.get_name(bad)} failed in register_commands: TypeError" in r.getMessage()
               for r in caplog.records)


def test_misspelt_entry_point_plugin_exits_2_with_its_name(tmp_path, project):
    site = tmp_path / "site"
    (site / "typo_plugin").mkdir(parents=True)
    (site / "typo_plugin" / "__init__.py").write_text(textwrap.dedent('''
        from opensage import hookimpl
        @hookimpl
        def session_evnt(session, event):
            pass
    '''))
    dist = site / "typo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: typo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[opensage]\ntypo = typo_plugin\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "opensage", "-w", str(project), "@memory-query", "query=x"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "plugin 'typo'" in out.stderr and "session_evnt" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (project / ".opencode" / "opensage.db").exists(), "a start-up failure must write nothing"


def test_hook_session_compact(workspace):
    rec = Recorder()
    host = Host(workspace, plugins=[rec])
    out = invoke(host, "hook", "compact", input=json.dumps({"session_id": "s2"}))
    assert out.exit_code == 0 and ("compact", "s2") in rec.calls
    assert json.loads(out.output.strip().splitlines()[-1])["ok"] is True


def test_hook_session_end(workspace):
    rec = Recorder()
    host = Host(workspace, plugins=[rec])
    invoke(host, "hook", "session-start", input=json.dumps({"session_id": "s3"}))
    out = invoke(host, "hook", "session-end", input=json.dumps({"session_id": "s3"}))
    assert out.exit_code == 0 and ("end", "s3") in rec.calls
    row = host.db.conn.execute("SELECT ended_at FROM sessions WHERE id='s3'").fetchone()
    assert row["ended_at"] is not None


def test_hook_route_intent(workspace):
    class Remember:
        @hookimpl(tryfirst=True)
        def route_intent(self, session, text):
            if text.startswith("remember "):
                return Route(route="remember", confidence=1.0, command="memory-add-node",
                             arguments={"type": "concept", "label": text[9:]})
            return None

    host = Host(workspace, plugins=[Remember()])
    decision = host.route("remember JWT rotation")
    assert decision.route == "remember" and decision.arguments["label"] == "JWT rotation"
    host.run(decision.command, decision.arguments)
    assert host.run_line('@memory-add-node type=concept label="JWT rotation"').data["created"] is False


def test_hook_compaction_context(workspace):
    class Keep:
        @hookimpl(tryfirst=True)
        def compaction_context(self, session, max_chars):
            return ("Decision: use JWT. " * 50)[:max_chars]

    host = Host(workspace, plugins=[Keep()])
    out = invoke(host, "hook", "compact", input=json.dumps({"session_id": "s4"}))
    payload = json.loads(out.output.strip().splitlines()[-1])
    assert payload["context"].startswith("Decision: use JWT.") and len(payload["context"]) <= 4000


def test_hook_prompt_context(workspace):
    class Deploys:
        @hookimpl(tryfirst=True)
        def prompt_context(self, session, text, max_chars):
            return "Deploys go through make release."[:max_chars] if "deploy" in text else None

    host = Host(workspace, plugins=[Deploys()])
    session = host.session("p1")
    assert host.prompt_context(session, "how do we deploy?") == "Deploys go through make release."
    assert host.prompt_context(session, "how do we deploy?", max_chars=7) == "Deploys"
    # not about deploys: graph-memory answers next, from what the graph holds
    host.run("memory-add-node", {"type": "decision", "label": "UseRS256JWT",
                                 "content": "auth signs JWT access tokens with RS256"})
    answer = host.prompt_context(session, "which algorithm signs the JWT tokens?")
    assert "UseRS256JWT (decision, n1): auth signs JWT access tokens with RS256" in answer


def test_hook_cli_rejects_bad_event_json(project, cli):
    out = cli("hook", "user-message", input="{not json")
    assert out.returncode == 2 and "not valid JSON" in out.stderr
    out = cli("hook", "user-message", input=json.dumps({"text": "no session"}))
    assert out.returncode == 2 and "session id" in out.stderr
    out = cli("hook", "event", input=json.dumps({"session_id": "s", "kind": "telepathy"}))
    assert out.returncode == 2 and "kind" in out.stderr
    assert not (project / ".opencode" / "opensage.db").exists(), "bad input must write nothing"


def test_trace_plugins_env_shows_hook_calls(project, cli):
    out = cli("hook", "user-message", input=json.dumps({"session_id": "t1", "text": "hello"}),
              env={"OPENSAGE_TRACE_PLUGINS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("[opensage trace] session_event(session, event) -> [") == 1, out.stderr
    assert out.stderr.count("[opensage trace] session_event ok") == 1, "one tracing path: pluggy's monitoring"


def test_third_party_plugin_loads_from_entry_point(tmp_path, project):
    site = tmp_path / "site"
    (site / "hello_plugin").mkdir(parents=True)
    (site / "hello_plugin" / "__init__.py").write_text(textwrap.dedent('''
        from opensage import ArgModel, Command, CommandResult, hookimpl
        class Args(ArgModel):
            name: str = "world"
        @hookimpl
        def register_commands(register):
            register(Command("hello", Args, lambda a, ctx: CommandResult("hello " + a.name), "Say hello."))
    '''))
    dist = site / "hello_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[opensage]\nhello = hello_plugin\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "opensage", "-w", str(project), "@hello", "name=sage"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello sage"


def test_hook_classify_task(workspace):
    assert Host(workspace).classify_task("Fix the flaky login test") == "fix"  # the agent registry answers

    class Docs:
        @hookimpl(tryfirst=True)
        def classify_task(self, task):
            return "document" if task.startswith("docs:") else None

    host = Host(workspace, plugins=[Docs()])
    assert host.classify_task("docs: fix the typo in the README") == "document"
    assert host.classify_task("Fix the flaky login test") == "fix"
    assert Host(workspace, blocked=["agent-registry"]).classify_task("Fix the flaky login test") == "implement"


def test_hook_recommend_agent(workspace):
    from opensage.types import AgentResult

    host = Host(workspace)
    assert host.recommend_agent("fix the parser crash", "fix", ["fixer"]) is None  # no run yet: generate
    host.agent_run_finished("fixer", "fix", AgentResult(agent="fixer", task="fix the parser crash", success=True))
    assert host.recommend_agent("fix the parser crash", "fix", ["fixer"]) == "fixer"
    assert host.recommend_agent("fix the parser crash", "fix", ["other"]) is None

    class Prefer:
        @hookimpl(tryfirst=True)
        def recommend_agent(self, host, task, task_type, candidates):
            return "reviewer" if "reviewer" in candidates else None

    assert Host(workspace, plugins=[Prefer()]).recommend_agent("fix it", "fix", ["fixer", "reviewer"]) == "reviewer"
    assert Host(workspace, blocked=["agent-registry"]).recommend_agent("fix the parser crash", "fix", ["fixer"]) is None


def test_hook_agent_run_finished(workspace, caplog):
    from opensage.types import AgentResult

    seen = []

    class Listener:
        @hookimpl
        def agent_run_finished(self, host, agent, task_type, result):
            seen.append((agent, task_type, result.success, result.latency_ms))

    class Broken:
        @hookimpl
        def agent_run_finished(self, host, agent, task_type, result):
            raise RuntimeError("listener bug")

    host = Host(workspace, plugins=[Listener(), Broken()])
    result = AgentResult(agent="tester", task="write tests", success=False, latency_ms=12.5, error="boom")
    with caplog.at_level(logging.ERROR):
        host.agent_run_finished("tester", "test", result)
    assert seen == [("tester", "test", False, 12.5)]
    assert "listener bug" in caplog.text
    rows = [r for r in host.agent_stats() if r["name"] == "tester"]  # the registry recorded it too
    assert rows and rows[0]["totalTasks"] == 1 and rows[0]["successCount"] == 0


def test_hook_agent_stats(workspace):
    from opensage.types import AgentResult

    host = Host(workspace)
    assert host.agent_stats() == []
    host.agent_run_finished("fixer", "fix", AgentResult(agent="fixer", task="fix x", success=True, cost_usd=0.5))
    [row] = host.agent_stats()
    assert row["name"] == "fixer" and row["totalTasks"] == 1 and row["totalCost"] == 0.5

    class Fixed:
        @hookimpl(tryfirst=True)
        def agent_stats(self, host):
            return [{"name": "ghost", "taskType": "fix", "totalTasks": 7, "successCount": 7,
                     "totalCost": 0.0, "avgLatency": 1.0}]

    assert Host(workspace, plugins=[Fixed()]).agent_stats()[0]["name"] == "ghost"
    assert Host(workspace, blocked=["agent-registry"]).agent_stats() == []


def test_hook_run_topology(workspace):
    from opensage.commands import run_async
    from opensage.errors import UsageError

    seen = []

    class DryRun:
        @hookimpl(tryfirst=True)
        def run_topology(self, host, topology, task, subtasks, budget):
            seen.append((topology, task, subtasks, budget))

            async def outcome():
                return {"success": True, "output": f"would run {task!r} as {topology}"}
            return outcome()

    host = Host(workspace, plugins=[DryRun()])
    out = run_async(host.run_topology("vertical", "split the parser", subtasks=["lex", "parse"],
                                      budget={"steps": 3}))
    assert out == {"success": True, "output": "would run 'split the parser' as vertical"}
    assert seen == [("vertical", "split the parser", ["lex", "parse"], {"steps": 3})]
    # the agents plugin answers by default (a coroutine); blocked, nobody runs agents: a clear UsageError
    coro = Host(workspace).run_topology("single", "x")
    assert hasattr(coro, "__await__")
    coro.close()
    with pytest.raises(UsageError, match="no plugin runs agents"):
        Host(workspace, blocked=["agents"]).run_topology("single", "fix the bug")


def test_hook_remember_run(workspace):
    from types import SimpleNamespace

    from opensage.types import NO_AGENT, AgentResult

    plan = SimpleNamespace(task="Add a --verbose flag", task_type="implement", topology="single", steps=[],
                           strategies=[], merge_strategy=None, analysis=SimpleNamespace(complexity="low"),
                           text=lambda: "single: one small change")
    report = SimpleNamespace(run_id="20260101-000000-abcdef", plan=plan, success=True, output="done",
                             error=None, tokens=10, cost_usd=0.0, latency_ms=5.0, files_changed=["cli.py"],
                             failed_step=None, agents=["flagger", NO_AGENT],
                             results=[AgentResult(agent="flagger", task="t", success=True),
                                      AgentResult(agent=NO_AGENT, task="t")])
    host = Host(workspace)
    ids = host.remember_run(report)  # graph memory answers
    assert set(ids) == {"task", "plan", "outcome", "agent:flagger", "file:cli.py"}
    assert "Add a --verbose flag" in host.run("memory-query", {"query": "verbose flag"}).text

    class Elsewhere:
        @hookimpl(tryfirst=True)
        def remember_run(self, host, report):
            return {"task": "ext-1"}

    assert Host(workspace, plugins=[Elsewhere()]).remember_run(report) == {"task": "ext-1"}
    assert Host(workspace, blocked=["graph-memory"]).remember_run(report) == {}
