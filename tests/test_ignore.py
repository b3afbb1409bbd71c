"""What a walk of the project skips: the built-in folders plus the project's .gitignore,
the same for code ingest, the agent's tree snapshot, its list tool and scratch copies."""

from __future__ import annotations

import sqlite3
import os
from pathlib import Path

from opensage.ignore import IgnoreRules
from opensage.plugins.agents.topology import ScratchCopy
from opensage.plugins.agents.runner import AgentRunner, tree_snapshot
from opensage.types import AgentSpec


def _tree(project: Path) -> None:
    files = {
        ".gitignore": "# generated output\ngenerated/\n*.log\n!keep.log\n/top_only.py\n",
        "app/main.py": "def main():\n    return 1\n",
        "app/top_only.py": "X = 1\n",  # '/top_only.py' is anchored at the root: this one stays
        "top_only.py": "Y = 1\n",
        "generated/huge.py": "def generated_function():\n    pass\n",
        "app/generated/more.py": "def also_generated():\n    pass\n",
        "app/run.log": "noise\n",
        "app/keep.log": "kept\n",
        "node_modules/dep/index.py": "def dependency():\n    pass\n",  # built-in list, no .gitignore line
        "app/sub/.gitignore": "local.py\n",  # a nested .gitignore counts below its folder
        "app/sub/local.py": "Z = 1\n",
        "app/sub/shared.py": "W = 1\n",
    }
    for rel, text in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


KEPT = {".gitignore", "app/main.py", "app/top_only.py", "app/keep.log", "app/sub/.gitignore", "app/sub/shared.py"}


def test_tree_snapshot_skips_gitignored_and_builtin_folders(tmp_path):
    _tree(tmp_path)
    assert set(tree_snapshot(tmp_path)) == KEPT


def test_rules_without_a_gitignore_are_the_builtin_list(tmp_path):
    (tmp_path / "build").mkdir()
    (tmp_path / "x.egg-info").mkdir()
    rules = IgnoreRules(tmp_path)
    assert rules.ignored("build", True) and rules.ignored("x.egg-info", True)
    assert not rules.ignored("src", True) and not rules.ignored("build", False)  # a file named build stays


def test_an_ancestor_gitignore_counts_up_to_the_git_work_tree(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("secret/\n")
    (tmp_path / "pkg" / "secret").mkdir(parents=True)
    (tmp_path / "pkg" / "secret" / "a.py").write_text("A = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("B = 1\n")
    assert set(tree_snapshot(tmp_path / "pkg")) == {"b.py"}


def test_ingest_skips_a_gitignored_folder(host, project):
    _tree(project)
    data = host.run("memory-ingest", {"path": "."}).data
    assert not data["errors"]
    db = sqlite3.connect(host.workspace.db_path)  # read what ingest wrote, through SQLite itself
    try:
        labels = {r[0] for r in db.execute("SELECT label FROM nodes WHERE type='file'")}
        functions = {r[0] for r in db.execute("SELECT label FROM nodes WHERE type='function'")}
    finally:
        db.close()
    assert data["files"] == 3, labels  # app/main.py, app/top_only.py, app/sub/shared.py
    assert not [label for label in labels if "generated" in label or "local" in label or "node_modules" in label]
    assert not {"generated_function", "also_generated", "dependency"} & {f.rsplit(".", 1)[-1] for f in functions}


def test_the_agent_list_tool_and_a_scratch_copy_skip_gitignored_paths(host, project, tmp_path):
    _tree(project)
    runner = AgentRunner(host, AgentSpec(name="lister", description="lists", prompt="list"), root=project)
    listed = set(runner._tool_list(".").splitlines())  # the agent's built-in list tool
    assert "app/main.py" in listed and "app/keep.log" in listed
    assert not [p for p in listed if "generated" in p or p.endswith("run.log") or "local.py" in p]
    copy = ScratchCopy.create(project, tmp_path / "scratch")
    copied = {p.relative_to(copy.path).as_posix() for p in copy.path.rglob("*") if p.is_file()}
    assert copied == KEPT, copied  # .opencode (the workspace state) is on the built-in list


def test_a_hostile_gitignore_cannot_stall_or_break_a_walk(tmp_path, caplog):
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / ".gitignore").write_text("skipped.py\n" + "\n".join(f"pat{i}_*.tmp" for i in range(20_000)))
    (huge / "skipped.py").write_text("")
    (huge / "kept.py").write_text("")
    assert set(tree_snapshot(huge)) == {".gitignore", "kept.py"}  # the first patterns still apply
    assert "only the first 1000 are applied" in caplog.text
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".gitignore")  # reading it would block forever
    (fifo / "a.py").write_text("")
    assert set(tree_snapshot(fifo)) == {"a.py"}
