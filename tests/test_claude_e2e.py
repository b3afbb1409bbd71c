"""The real Claude Code CLI (npm ``@anthropic-ai/claude-code``, pinned) with ``opensage
install claude``, headless (``claude -p``), against a scripted Anthropic Messages API on
127.0.0.1 (tests/fake_anthropic.py).

One story, three Claude Code runs:

1. a session stores a decision (our MCP tool, allowed by the rule install added, no
   ``--allowedTools`` for it), looks memory up, runs a check that fails with
   ``KeyError: 'exp'``, reads and edits the file, re-runs the check green, and answers;
2. ``/compact`` on that session (PreCompact, then SessionStart with source ``compact``:
   the memory comes back into the next request);
3. a NEW session asks how it was fixed: the model's first request carries the decision
   and the fix (UserPromptSubmit context), and a memory query made by the model
   reaches it as the query's text (not the JSON of structured content, and no larger
   than the text), with neither earlier query results nor tool-name stubs among its
   top results.

Hermetic: temporary HOME, no network (proxies point at a closed port). Skipped only
when node/npm are missing.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.claude_env import claude_bin, hermetic_env, run_claude
from tests.fake_anthropic import FakeAnthropic, all_text, tool_names, tool_results
from tests.memory_results import echoes_and_stubs
from tests.polling import wait_until

needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="needs node and npm for the real Claude Code CLI")

ADD = "mcp__opensage__memory-add-node"
QUERY = "mcp__opensage__memory-query"
CHECK = "python3 check_tokens.py"
DECISION_LABEL = "Sign JWT access tokens with RS256"
DECISION = ("We decided to sign JWT access tokens with RS256 instead of HS256, so other services "
            "verify them with the public key only.")
FIX_SENTENCE = ("Fixed the KeyError: 'exp' in src/tokens.py: expiry() now reads claims.get(\"exp\"), "
                "so tokens without an exp claim no longer crash the check.")
QUESTION = "How did we fix the KeyError exp in the token check?"
SECOND_QUERY = {"query": "KeyError exp token expiry RS256"}


def _project(tmp_path: Path) -> tuple[Path, Path]:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    (project / "src").mkdir(parents=True)
    (project / "src" / "__init__.py").write_text("")
    (project / "src" / "tokens.py").write_text('def expiry(claims):\n    return claims["exp"]\n')
    (project / "check_tokens.py").write_text(
        "from src.tokens import expiry\n\nassert expiry({}) is None\nprint('token check passed')\n")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return home, project


class Story:
    """The scripted model for the three runs (main-agent requests carry our MCP tools)."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.session2_first: dict | None = None
        self.model_saw_query: list[str] = []

    def __call__(self, body):
        text = all_text(body)
        last_user = ""
        for m in reversed(body.get("messages", [])):
            if m.get("role") == "user":
                c = m.get("content")
                last_user = c if isinstance(c, str) else " ".join(b.get("text", "") for b in c or []
                                                                   if isinstance(b, dict) and b.get("type") == "text")
                break
        if QUERY not in tool_names(body):  # helper agents (titles, the /compact summariser...)
            if "summar" in last_user.lower() or "summar" in text.lower()[:20000]:
                return {"content": "Summary: decided RS256 for JWTs; fixed KeyError 'exp' in src/tokens.py."}
            return {"content": "ok"}
        results = tool_results(body)
        if QUESTION in text:  # run 3: the new session
            if not results:
                self.session2_first = body
                return {"tool_calls": [{"name": QUERY, "arguments": SECOND_QUERY}]}
            self.model_saw_query.append(results[-1])
            return {"content": "From memory: " + results[-1][:400]}
        steps = [
            {"tool_calls": [{"name": ADD, "arguments": {"type": "decision", "label": DECISION_LABEL,
                                                         "content": DECISION}}]},
            {"tool_calls": [{"name": QUERY, "arguments": {"query": "JWT signing"}}]},
            {"tool_calls": [{"name": "Bash", "arguments": {"command": CHECK, "description": "Run the token check"}}]},
            {"tool_calls": [{"name": "Read", "arguments": {"file_path": str(self.project / "src" / "tokens.py")}}]},
            {"tool_calls": [{"name": "Edit", "arguments": {"file_path": str(self.project / "src" / "tokens.py"),
                                                            "old_string": 'return claims["exp"]',
                                                            "new_string": 'return claims.get("exp")'}}]},
            {"tool_calls": [{"name": "Bash", "arguments": {"command": CHECK, "description": "Run the token check"}}]},
            {"content": FIX_SENTENCE},
        ]
        return steps[min(len(results), len(steps) - 1)]


def _session_id(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            if obj.get("type") == "system" and obj.get("subtype") == "init":
                return obj["session_id"]
    raise AssertionError(f"no init line in Claude Code's output: {stdout[-2000:]}")


def _top_results(text: str, n: int = 5) -> list[str]:
    """The first ``n`` numbered result lines of a memory-query text."""
    return [line for line in text.splitlines() if re.match(r"^\d+\. ", line)][:n]


def _transcript(stdout: str) -> str:
    """Tool calls and results of a stream-json run, one line each (for failure messages)."""
    out = []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        for block in (obj.get("message") or {}).get("content") or []:
            if isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result"):
                out.append(json.dumps(block)[:300])
    return "\n".join(out)


def _label(line: str) -> str:
    """``1. n4 KeyError: 'exp' (error)  score 0.03`` -> ``n4``."""
    return line.split()[1]


@pytest.fixture(scope="module")
def claude():
    try:
        return claude_bin()
    except subprocess.CalledProcessError as exc:  # no registry: say so instead of a bare traceback
        pytest.fail(f"could not npm-install @anthropic-ai/claude-code: {exc.stderr[-800:]}")


@pytest.mark.claude
@needs_node
def test_claude_session_decides_fails_fixes_compacts_and_a_new_session_learns_how_it_was_fixed(claude, tmp_path):
    home, project = _project(tmp_path)
    inst = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "install", "claude"],
                          capture_output=True, text=True, timeout=120, cwd=project)
    assert inst.returncode == 0, inst.stderr
    story = Story(project)
    allowed = ["--allowedTools", "Read", "Edit", f"Bash({CHECK})"]  # the user's own tools; ours come from install
    stream = ["--output-format", "stream-json", "--verbose"]
    with FakeAnthropic(story) as api:
        env = hermetic_env(home, project, api.base_url)
        t0 = time.monotonic()
        first = run_claude(claude, ["-p", "Record the JWT decision, then make the token check pass.", *stream, *allowed],
                           env, project)
        assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
        sid = _session_id(first.stdout)
        t1 = time.monotonic()
        compact = run_claude(claude, ["-p", "/compact", "--resume", sid, *stream], env, project)
        assert compact.returncode == 0, compact.stderr[-3000:]
        t2 = time.monotonic()
        second = run_claude(claude, ["-p", QUESTION, *stream], env, project)
        assert second.returncode == 0, second.stderr[-3000:]
        t3 = time.monotonic()
    print(f"claude runs: session {t1 - t0:.1f} s, /compact {t2 - t1:.1f} s, new session {t3 - t2:.1f} s")
    assert not api.errors, api.errors
    assert (project / "src" / "tokens.py").read_text() == 'def expiry(claims):\n    return claims.get("exp")\n', \
        _transcript(first.stdout) + first.stdout[:3000]

    # headless use works: our MCP tools were allowed by the installed rule, never denied
    for run in (first, second):
        result = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
        assert result.get("permission_denials") == [], result.get("permission_denials")
    db = sqlite3.connect(project / ".opencode" / "opensage.db")
    assert db.execute("SELECT type, content FROM nodes WHERE type='decision' AND content=?",
                      (DECISION,)).fetchone() is not None

    # the hook server acknowledges SessionEnd before it compresses: wait for the state
    wait_until(lambda: not db.execute("SELECT ended_at IS NULL FROM sessions WHERE id=?", (sid,)).fetchone()[0],
               60, "the hook server to end the session")
    # the hooks recorded the session: the failing check, the edit, the green re-run, the answer;
    # tool calls carry their arguments
    rows = db.execute("SELECT kind, tool, text, args, compressed_at FROM episodes WHERE session_id=? ORDER BY seq",
                      (sid,)).fetchall()
    kinds = [(r[0], r[1]) for r in rows]
    assert ("tool_call", "Bash") in kinds and ("file_edit", "Edit") in kinds and ("assistant_message", None) in kinds
    bash_args = [json.loads(r[3]) for r in rows if r[0] == "tool_call" and r[1] == "Bash"]
    assert bash_args and all(a.get("command") == CHECK for a in bash_args)
    assert any("KeyError" in (r[2] or "") for r in rows if r[0] == "tool_result" and r[1] == "Bash")
    # compaction and the end of the run compressed everything the session recorded
    assert all(r[4] is not None for r in rows), [r[:2] for r in rows if r[4] is None]
    assert db.execute("SELECT ended_at FROM sessions WHERE id=?", (sid,)).fetchone()[0] is not None

    # run 3: the new session's first request carries the decision and the fix
    first_request = all_text(story.session2_first or {})
    assert "RS256" in first_request, "the decision did not reach the new session's model"
    assert "src/tokens.py" in first_request and "KeyError" in first_request, "the fix did not reach the model"

    # must-show 3: the model got the memory query's text form, no larger than it
    assert story.model_saw_query, "the model never saw the memory query's result"
    seen = story.model_saw_query[-1]
    from opensage.host import Host
    from opensage.mcp_server import call_tool
    from opensage.store import Workspace

    host = Host(Workspace(project))
    try:
        text_form = call_tool(host, "memory-query", SECOND_QUERY).content[0].text
    finally:
        host.close()
    assert not seen.lstrip().startswith("{"), seen[:300]
    assert len(seen) <= len(text_form), (len(seen), len(text_form))
    print("--- what the model saw ---\n" + seen + "\n--- the text form now ---\n" + text_form)
    # the same results (the second session's own episodes, recorded since, may reorder ties)
    assert {_label(line) for line in _top_results(seen)} <= {_label(line) for line in _top_results(text_form, 10)}
    assert _top_results(seen), seen
    # neither earlier query results nor tool-name stubs among the top results
    assert echoes_and_stubs(seen) == [], echoes_and_stubs(seen)
