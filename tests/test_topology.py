"""Vertical chains and horizontal ensembles, run for real (scripted model, real files, real sandbox)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import pytest

from opensage.errors import UsageError
from opensage.plugins.agents.topology import horizontal, vertical
from scripted_agents import Brain, call

CALC = "def parse_age(text):\n    return int(text)\n"
TEST = """import pytest
from calc import parse_age


def test_parses_digits():
    assert parse_age("42") == 42


def test_rejects_words():
    with pytest.raises(ValueError):
        parse_age("forty")


def test_rejects_negative():
    with pytest.raises(ValueError):
        parse_age("-3")
"""
STRICT = ("    return int(text)",
          "    if not text.strip().isdigit():\n        raise ValueError(f'not an age: {text!r}')\n    return int(text)")
LENIENT = ("    return int(text)", "    try:\n        return int(text)\n    except ValueError:\n        return None")


@pytest.fixture
def repo(project):
    (project / "calc.py").write_text(CALC)
    (project / "tests").mkdir()
    (project / "tests" / "test_calc.py").write_text(TEST)
    return project


def metrics(project):
    return json.loads((project / ".opencode" / "agent-metrics.json").read_text())


def test_best_score_applies_the_patch_whose_tests_pass(host, repo, scripted):
    def act(task, results):
        old, new = LENIENT if "return None" in task else STRICT
        if not results:
            return call("edit", path="calc.py", old_string=old, new_string=new)
        return "edited calc.py"

    brain = Brain(act, name_for=lambda t: "lenient-parser" if "return None" in t else "strict-validator")
    scripted.default = brain
    report = asyncio.run(horizontal(host, "Make parse_age reject bad input",
                                    ["return None for bad input", "raise ValueError for bad input"], "best_score"))
    lenient, strict = report.members
    assert lenient.changes.modified == strict.changes.modified == ["calc.py"]
    assert (repo / ".opencode").exists() and lenient.scratch != strict.scratch
    # two different patches; the verifier (the project's tests, in the sandbox) decides
    assert "return None" in open(f"{lenient.scratch}/calc.py").read()
    assert "raise ValueError" in open(f"{strict.scratch}/calc.py").read()
    assert lenient.score["passed_all"] is False and lenient.score["failed"] == 2
    assert strict.score == {"passed_all": True, "passed": 3, "failed": 0, "returncode": 0}
    assert report.chosen == 2 and report.success and report.verifier == "python -m pytest -q"
    assert report.applied == ["calc.py"]
    assert (repo / "calc.py").read_text() == CALC.replace(*STRICT)
    # the losing copy is kept for inspection; the workspace's tests now pass
    assert "return None" in open(f"{lenient.scratch}/calc.py").read()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=repo,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    agents = {a["name"]: a for a in metrics(repo)["agents"]}
    assert agents["strict-validator"]["successCount"] == 1 and agents["lenient-parser"]["successCount"] == 1
    assert (repo / ".opencode" / "agent" / "strict-validator.md").exists()
    assert "merge=best_score" in report.text() and " *2. @strict-validator" in report.text()


def test_best_score_with_no_passing_member_applies_nothing(host, repo, scripted):
    def act(task, results):
        return call("edit", path="calc.py", old_string=LENIENT[0], new_string=LENIENT[1]) if not results else "done"

    scripted.default = Brain(act, name_for=lambda t: "lenient-a" if "first" in t else "lenient-b")
    report = asyncio.run(horizontal(host, "Make parse_age lenient", ["first way", "second way"], "best_score"))
    assert not report.success and report.applied == []
    assert "no member passes" in report.reason
    assert (repo / "calc.py").read_text() == CALC


def test_majority_vote_picks_the_most_common_normalised_answer(host, repo, scripted):
    answers = {"count the lines": "42", "use wc": "42.", "guess": "  41 "}

    def act(task, results):
        return next(a for k, a in answers.items() if k in task)

    scripted.default = Brain(act, name_for=lambda t: "counter-" + str(len(t) % 97))
    report = asyncio.run(horizontal(host, "How many lines does calc.py have?", list(answers), "majority_vote"))
    assert report.chosen == 1 and report.success
    assert report.answer == "42" and "2 of 3" in report.reason
    assert report.applied == [] and (repo / "calc.py").read_text() == CALC


def test_llm_judge_compares_candidates_and_explains(host, repo, scripted):
    def act(task, results):
        old, new = LENIENT if "lenient" in task else STRICT
        return call("edit", path="calc.py", old_string=old, new_string=new) if not results else "patched"

    brain = Brain(act, name_for=lambda t: "lenient-one" if "lenient" in t else "strict-one",
                  judge={"choice": 2, "reason": "raising keeps bad ages from spreading"})
    scripted.default = brain
    report = asyncio.run(horizontal(host, "Handle bad ages", ["lenient", "strict"], "llm_judge"))
    assert report.chosen == 2 and report.reason == "raising keeps bad ages from spreading"
    prompt = brain.judge_prompts[0]
    assert "Candidate 1" in prompt and "return None" in prompt and "raise ValueError" in prompt
    assert "raise ValueError" in (repo / "calc.py").read_text()
    assert report.merge_tokens > 0


def test_members_run_in_parallel_in_separate_copies(host, repo, scripted):
    calls: list[tuple[str, int]] = []  # (member, its call number) in the order the model is asked

    def act(task, results):
        tag = task.split("Approach to take: ")[1].strip()
        calls.append((tag, len(results)))
        if not results:
            return {**call("write", path="notes.txt", content=tag), "delay_s": 1.0}
        return {"content": tag}

    scripted.default = Brain(act, name_for=lambda t: "writer-" + re.search(r"Approach to take: (\w+)", t).group(1))
    report = asyncio.run(horizontal(host, "Write notes", ["alpha", "beta", "gamma"], "majority_vote"))
    assert [open(f"{m.scratch}/notes.txt").read() for m in report.members] == ["alpha", "beta", "gamma"]
    # in parallel, every member asks the model before any first answer (1 s away) is back;
    # one after another, alpha would finish both its calls before beta's first
    first_round = [tag for tag, n in calls[:3]]
    assert sorted(first_round) == ["alpha", "beta", "gamma"] and all(n == 0 for _, n in calls[:3]), calls
    assert (repo / "notes.txt").read_text() == "alpha"  # no majority: the earliest member wins


def test_vertical_passes_summaries_and_a_failed_step_leaves_the_workspace_consistent(host, repo, scripted):
    def act(task, results):
        if "Validate" in task.split("Your task:")[-1]:
            if not results:
                return call("edit", path="calc.py", old_string=STRICT[0], new_string=STRICT[1])
            return "Added a ValueError for non-digit input."
        # step 2 writes half a file, then gives up
        if not results:
            return call("write", path="docs/ages.md", content="# Ages\nhalf written")
        return "FAILED: the docs folder layout is unknown"

    brain = Brain(act, name_for=lambda t: "validator" if "Validate" in t else "doc-writer")
    scripted.default = brain
    report = asyncio.run(vertical(host, "Harden parse_age", ["Validate parse_age input", "Document parse_age"],
                                  replan=False))
    assert not report.success and report.failed_step == 2
    assert "doc-writer" in report.reason and "docs folder layout is unknown" in report.reason
    assert [s.result.success for s in report.steps] == [True, False]
    # step 1's change is in, step 2's half-written file is not (it stays in its scratch copy)
    assert "raise ValueError" in (repo / "calc.py").read_text()
    assert not (repo / "docs").exists()
    assert open(f"{report.steps[1].scratch}/docs/ages.md").read().startswith("# Ages")
    # step 2 started from step 1's result and was told what it produced and changed
    step2_task = brain.agent_tasks[1]
    assert "Step 1" in step2_task and "Added a ValueError" in step2_task and "calc.py" in step2_task
    assert "raise ValueError" in open(f"{report.steps[1].scratch}/calc.py").read()
    records = {(t["agentName"], t["success"]) for t in metrics(repo)["tasks"]}
    assert records == {("validator", True), ("doc-writer", False)}
    assert "stopped at step 2" in report.text()


def test_vertical_replans_once_after_a_failure(host, repo, scripted):
    def act(task, results):
        current = task.split("Your task:")[-1]
        if "impossible" in current:
            return "FAILED: cannot do the impossible"
        if not results:
            return call("edit", path="calc.py", old_string=STRICT[0], new_string=STRICT[1])
        return "validated"

    brain = Brain(act, name_for=lambda t: "dreamer" if "impossible" in t else "fixer",
                  subtasks=[["Validate parse_age the possible way"]])
    scripted.default = brain
    report = asyncio.run(vertical(host, "Harden parse_age", ["Do the impossible"]))
    assert report.success and report.replanned
    assert [s.result.success for s in report.steps] == [False, True]
    assert report.subtasks == ["Validate parse_age the possible way"]
    assert "raise ValueError" in (repo / "calc.py").read_text()
    assert brain.seen.count("decompose") == 1


def test_vertical_proposes_subtasks_and_reuses_a_proven_agent(host, repo, scripted):
    def act(task, results):
        return "looked at it" if results else call("read", path="calc.py")

    brain = Brain(act, name_for=lambda t: "calc-reader", subtasks=[["Read calc.py and summarise parse_age"]])
    scripted.default = brain
    first = asyncio.run(vertical(host, "Summarise parse_age"))
    assert first.success and first.planned_by_model and not first.steps[0].reused
    assert brain.seen.count("generate") == 1
    second = asyncio.run(vertical(host, "Summarise parse_age", ["Read calc.py and summarise parse_age"]))
    assert second.steps[0].reused and second.steps[0].agent == "calc-reader"
    assert brain.seen.count("generate") == 1  # no new agent: the registry recommended the proven one


def test_bad_ensemble_input_is_refused_before_anything_is_written(host, project, scripted):
    (project / "calc.py").write_text(CALC)
    with pytest.raises(UsageError, match="at least 2 strategies"):
        asyncio.run(horizontal(host, "x", ["only one"]))
    with pytest.raises(UsageError, match="needs a verifier"):
        asyncio.run(horizontal(host, "x", ["a", "b"], "best_score"))
    with pytest.raises(UsageError, match="mergeStrategy 'consensus' is unknown"):
        asyncio.run(horizontal(host, "x", ["a", "b"], "consensus"))
    assert scripted.requests == [] and not (project / ".opencode" / "ensembles").exists()


def test_ensemble_command_runs_through_the_host(host, repo, scripted):
    import opensage.plugins.agents as agents_plugin

    if "horizontal-ensemble" not in host.commands:
        host.pm.register(agents_plugin, name="agents")
        host.refresh_commands()

    def act(task, results):
        old, new = LENIENT if "lenient" in task else STRICT
        return call("edit", path="calc.py", old_string=old, new_string=new) if not results else "ok"

    scripted.default = Brain(act, name_for=lambda t: "lenient-x" if "lenient" in t else "strict-x")
    result = host.run_line('@horizontal-ensemble task="Reject bad ages" strategies=["lenient","strict"] '
                           'mergeStrategy=best_score')
    assert result.data["chosen"] == 2 and result.data["applied"] == ["calc.py"]
    assert "applied to the workspace: calc.py" in result.text
    with pytest.raises(UsageError, match="strategies"):
        host.run_line('@horizontal-ensemble task="x" strategies=["one"]')


def test_a_step_whose_agent_cannot_be_generated_is_a_failed_step(host, repo, scripted):
    def act(task, results):
        return call("edit", path="calc.py", old_string=STRICT[0], new_string=STRICT[1]) if not results else "ok"

    # the model keeps writing an invalid agent name for step 2: generation gives up after 3 tries
    scripted.default = Brain(act, name_for=lambda t: "Not A Name!" if "Document" in t else "validator")
    report = asyncio.run(vertical(host, "Harden parse_age", ["Validate parse_age", "Document parse_age"],
                                  replan=False))
    assert not report.success and report.failed_step == 2
    assert "no agent for this step" in report.reason and "AgentDraft" in report.reason
    assert report.steps[0].applied == ["calc.py"] and report.steps[0].scratch == ""  # applied copy removed
    assert "raise ValueError" in (repo / "calc.py").read_text()


def test_an_ensemble_member_without_an_agent_fails_alone(host, repo, scripted):
    def act(task, results):
        return call("edit", path="calc.py", old_string=STRICT[0], new_string=STRICT[1]) if not results else "ok"

    scripted.default = Brain(act, name_for=lambda t: "Bad Name" if "broken" in t else "strict-one")
    report = asyncio.run(horizontal(host, "Reject bad ages", ["broken idea", "strict raising"], "best_score"))
    broken, strict = report.members
    assert not broken.result.success and "no agent for this strategy" in broken.result.error
    assert report.chosen == 2 and report.applied == ["calc.py"]


def test_ensemble_without_strategies_asks_the_model_for_them(host, repo, scripted):
    answers = {"by reading": "two lines", "by counting": "two lines"}

    def act(task, results):
        return next(a for k, a in answers.items() if k in task)

    brain = Brain(act, name_for=lambda t: "reader" if "by reading" in t else "counter",
                  strategies=list(answers))
    scripted.default = brain
    report = asyncio.run(horizontal(host, "How long is calc.py?", [], "majority_vote"))
    assert [m.strategy for m in report.members] == ["by reading", "by counting"]
    assert brain.seen[0] == "strategies" and report.answer == "two lines" and "2 of 2" in report.reason


def test_an_out_of_range_judge_pick_is_fed_back(host, repo, scripted):
    verdicts = iter([{"choice": 7, "reason": "the seventh"}, {"choice": 1, "reason": "it answers directly"}])

    def act(task, results):
        return "forty-two" if "first" in task else "unsure"

    brain = Brain(act, name_for=lambda t: "first-agent" if "first" in t else "second-agent")

    def judge_twice(messages, tools):
        if messages[0]["content"].startswith("You are the judge"):
            return json.dumps(next(verdicts))
        return brain(messages, tools)

    scripted.default = judge_twice
    report = asyncio.run(horizontal(host, "What is the answer?", ["first", "second"], "llm_judge"))
    assert report.chosen == 1 and report.reason == "it answers directly"
    retry = scripted.requests[-1]["messages"][-1]["content"]
    assert "only 2 candidates" in retry


def test_without_a_model_topologies_refuse_before_writing(cli, repo):
    for args in (("@vertical-decompose", "task=Harden parse_age", 'subtasks=["Validate input"]'),
                 ("@horizontal-ensemble", "task=Harden parse_age", 'strategies=["a","b"]')):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "OPENSAGE_MODEL" in proc.stderr
    assert not (repo / ".opencode").exists()
