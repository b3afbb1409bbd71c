"""bench/fixes.py on a tiny git repository made here: which commits pair, what is fed, how it scores."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fixes():
    spec = importlib.util.spec_from_file_location("bench_fixes", ROOT / "bench" / "fixes.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_fixes"] = mod  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_fixes", None)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _commit(repo: Path, files: dict[str, str], message: str, when: int) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(repo, "add", "-A")
    env = f"{when} +0000"
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message], check=True,
                   env={**os.environ, "GIT_AUTHOR_DATE": env, "GIT_COMMITTER_DATE": env, "GIT_AUTHOR_NAME": "t",
                        "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(repo),
                        "GIT_CONFIG_NOSYSTEM": "1"})
    return _git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    repo = tmp_path_factory.mktemp("proj")
    _git(repo, "init", "-q")
    head = "Version 1.0\n-----------\n\n"
    cl = head
    _commit(repo, {"CHANGES.rst": cl, "src/pkg/pager.py": "def page(text):\n    return text\n",
                   "src/pkg/colors.py": "RED = 1\n"}, "initial", 1_600_000_000)
    cl = head + "-   Fix closed file error with :func:`~pkg.pager.page`. :issue:`77`\n"
    fix1 = _commit(repo, {"CHANGES.rst": cl,
                          "src/pkg/pager.py": "def page(text):\n    stream_keep_open = True\n    return text\n",
                          "tests/test_pager.py": "def test_page_keeps_stream_open():\n    assert True\n"},
                   "pager must not close the std streams\n\nKeep stdout open after paging.\n\n"
                   "Co-authored-by: x <x@example.org>", 1_600_000_100)
    cl += "-   Add a ``GREEN`` colour.\n"  # a feature: no fix word
    _commit(repo, {"CHANGES.rst": cl, "src/pkg/colors.py": "RED = 1\nGREEN = 2\n"}, "green", 1_600_000_200)
    cl += "-   Colour names are not case sensitive\n    any more. #12\n-   Two bullets at once.\n"
    _commit(repo, {"CHANGES.rst": cl, "src/pkg/colors.py": "RED = 1\nGREEN = 2\nBLUE = 3\n"}, "two", 1_600_000_300)
    cl += "-   Unknown colour names raise ``ValueError`` again.\n"
    fix2 = _commit(repo, {"CHANGES.rst": cl, "src/pkg/colors.py": "RED = 1\nGREEN = 2\nBLUE = 3\n"
                          "def lookup(name):\n    raise ValueError(name)\n",
                          "tests/test_pager.py": "import pytest\n\nfrom pkg.colors import lookup\n\n\n"
                          "def test_page_keeps_stream_open():\n    assert True\n\n\n"
                          "def test_unknown_colour():\n    with pytest.raises(ValueError):\n"
                          "        lookup('mauve')\n"},
                   "lookup raises", 1_600_000_400)
    cl += "-   Fix a typo in the docs.\n"
    _commit(repo, {"CHANGES.rst": cl, "docs/index.rst": "typo fixed\n"}, "docs typo", 1_600_000_500)
    return repo, _git(repo, "rev-parse", "HEAD").strip(), fix1, fix2


def test_pairing_keeps_only_single_bullet_code_fixes_newest_first(fixes, history):
    repo, pin, fix1, fix2 = history
    found = fixes.extract(repo, pin, 10, run_test_cmds=False)
    assert [f.sha for f in found] == [fix2, fix1]  # the feature, the two-bullet and the docs-only commits are out
    assert found[1].files == ["src/pkg/pager.py", "tests/test_pager.py"]  # CHANGES.rst is never gold nor fed
    assert found[1].tests == ["tests/test_pager.py::test_page_keeps_stream_open"]
    assert found[1].body == "Keep stdout open after paging."  # trailers dropped
    assert [f.sha for f in fixes.extract(repo, pin, 1, run_test_cmds=False)] == [fix2]
    assert found[0].tests == ["tests/test_pager.py::test_unknown_colour"]


def test_question_comes_from_the_changelog_without_references(fixes, history):
    repo, pin, fix1, fix2 = history
    found = {f.sha: f for f in fixes.extract(repo, pin, 10, run_test_cmds=False)}
    assert fixes.question(found[fix1].bullet) == "how did we fix closed file error with page?"
    assert fixes.question(found[fix2].bullet) == "how did we fix it so that unknown colour names raise ValueError again?"
    assert fixes.question("Names are not case sensitive any more. #12 See https://x.org/1") == \
        "how did we fix it so that names are not case sensitive any more?"


def test_session_events_are_host_events_without_the_changelog(fixes, history):
    repo, pin, fix1, _fix2 = history
    fix = next(f for f in fixes.extract(repo, pin, 10, run_test_cmds=False) if f.sha == fix1)
    events = fixes.session_events(fix)
    names = [e for e, _ in events]
    assert names[0] == "session-start" and names[-1] == "session-end"
    assert names[1:3] == ["user-message", "tool-call"]
    edits = [b for e, b in events if e == "tool-call" and b["tool"] == "edit"]
    assert edits[0]["args"]["filePath"] == "src/pkg/pager.py"
    assert "stream_keep_open = True" in edits[0]["args"]["newString"]
    assert {"tool": "bash"}.items() <= next(b for e, b in events if e == "tool-call" and b["tool"] == "bash").items()
    assert "tool-result" not in [e for e, b in events if b.get("tool") == "bash"]  # no run, no output invented
    assert "closed file error" not in json.dumps(events)  # the question's source is never fed
    assert all(b["session_id"] == fix.session_id for _, b in events)


def test_tests_run_before_and_after_the_fix_and_their_real_output_is_fed(fixes, history):
    repo, pin, _fix1, fix2 = history
    fix = fixes.extract(repo, pin, 1)[0]
    assert fix.sha == fix2
    assert fix.test_before_rc == 2 and "cannot import name 'lookup'" in fix.test_before  # the test came first
    assert fix.test_after_rc == 0 and "1 passed" in fix.test_after
    events = fixes.session_events(fix)
    bash = [(e, b) for e, b in events if b.get("tool") == "bash"]
    assert [e for e, _ in bash] == ["tool-call", "tool-result", "tool-call", "tool-result"]
    assert bash[0][1]["args"]["command"] == "pytest -q tests/test_pager.py -k 'test_unknown_colour'"
    assert bash[1][1]["text"] == fix.test_before and bash[3][1]["text"] == fix.test_after
    assert bash[1][1]["meta"] == bash[0][1]["meta"]  # result and call share the callID
    kinds = [e for e, b in events]
    assert kinds.index("file-edit") > events.index(bash[1])  # failing run, then the edits, then the green run
    assert str(repo) not in json.dumps(events) and "fixes-tests-" not in json.dumps(events)


def test_run_feeds_through_opensage_hook_and_scores_both_systems(fixes, history, monkeypatch, capsys):
    repo, pin, _fix1, _fix2 = history
    monkeypatch.setitem(fixes.REPOS, "tiny", {"url": "-", "commit": pin, "split": "dev"})
    found = fixes.extract(repo, pin, 10, run_test_cmds=False)
    row = fixes.run_repo("tiny", found, via_subprocess=2, show_misses=0)
    assert row["fixes"] == 2 and row["events"] == sum(len(fixes.session_events(f)) for f in found)
    for system in ("opensage", "fts5"):
        assert 0.0 <= row[system]["recall@5"] <= 1.0
        assert row[system]["recall@5"] == 1.0  # two sessions: the gold one is always in the top 5
    assert row["fts5"]["file_recall@5"] == 1.0
