""""How did we fix it?": real fixes from a project's git history, fed as sessions, asked back.

A benchmark of graph memory on real coding history written by nobody on this team:
the pallets projects, whose fix commits add a line to the changelog (``CHANGES.rst``).

Repositories (public; the bench only reads their git history, nothing is shipped):

==========  ==========  ===============================================  ==========================================
name        split       clone                                            pinned commit (history read up to here)
==========  ==========  ===============================================  ==========================================
click       dev         ``git clone https://github.com/pallets/click``     2c8cd3ac958a7eb316d67f2d316c27086c4c0369
werkzeug    held-out    ``git clone https://github.com/pallets/werkzeug``  1b00618e787f40dfb21eba29caf8f8be7c8e1d93
==========  ==========  ===============================================  ==========================================

``--repo NAME=PATH`` points at a clone (a bare ``.git`` folder works too); the pinned commit
must be in it (a full clone of the default branch made after the date of the pin has it).
Everything derived from a repository (the list of fixes, their diffs) is cached as JSON
in ``bench/.cache/fixes/`` (gitignored), keyed by repository, pin, N and extraction version.

Pairing rule (deterministic; nothing here was chosen by looking at werkzeug):

1. Walk ``git log --no-merges <pin> -- CHANGES.rst`` (newest first). A commit is a *fix*
   when its ``CHANGES.rst`` diff adds exactly one bullet (a ``-   `` line plus its
   indented continuation lines), it changes at least one ``.py`` file outside ``tests/``,
   ``docs/`` and ``examples/``, and the bullet or the commit subject uses a fix word
   (:data:`FIX_WORDS`: fix, bug, error, crash, correct(ly), broken, wrong, fail, no
   longer, does not, not, handle, raise, again, issue...). The first :data:`N_FIXES`
   fixes are used (the newest N before the pin).
2. The *question* is made from the changelog bullet only — a line written for users,
   often by someone other than the commit's author, and never fed to memory: reST roles
   and markup are reduced to their text, issue/PR/advisory references (``:issue:`123```,
   ``#123``, URLs) are removed so that no number links question and answer, and it is
   phrased as a user would ask: "how did we fix <bullet>?" (a bullet that starts with
   "Fix"/"Fixed" loses that word; any other becomes "how did we fix it so that
   <bullet>?").
3. The *gold* is the fix's session and the files the fix changed (``CHANGES.rst``
   excluded, at most :data:`MAX_FILES` files, the ones fed).

Each fix becomes one host session (id ``fix-<sha12>``, timestamps from the commit's
author date) sent through ``opensage hook`` exactly as an OpenCode host sends it
(docs/session-events.md):

* ``session-start``;
* ``user-message``: the commit subject (what the developer set out to do);
* when the new tests fail on the code before the fix (see below): ``tool-call`` ``bash``
  with the pytest command and its ``tool-result``, the real failing output;
* per diff hunk (at most :data:`MAX_HUNKS`): ``tool-call`` ``edit`` with
  ``{"filePath", "oldString", "newString"}`` (the hunk's removed and added lines, each
  at most :data:`MAX_EDIT_CHARS` characters; a new file is a ``write`` with
  ``{"filePath", "content"}``), its ``tool-result`` (OpenCode's "Edit applied
  successfully."), and a ``file-edit`` with the path; every tool event carries
  ``meta.callID`` as the OpenCode shim sends it;
* when the fix adds or changes tests: ``tool-call`` ``bash`` with ``pytest -q <files> -k
  '<test functions>'`` and, when that run passed on the fixed tree, its real output;
* ``assistant-message``: the commit body (trailers such as ``Co-authored-by`` removed),
  or, when the body is empty, "Changed <files>.";
* ``session-end`` (the final compression).

Test output is real, never invented: for a fix that adds or changes test functions
(``def test_...`` lines in its ``tests/`` hunks, or the function git names in a hunk's
header; at most :data:`MAX_TESTS`), those tests are run with this Python's pytest (the
``--test-runs`` default) twice, in a temporary folder holding only ``src``, ``tests`` and
the test configuration: with the code of ``<sha>^`` and the tests of ``<sha>`` (what a
developer sees after writing the test, before the fix), then on ``<sha>``. The failing
run is fed only when it failed (exit 1, or 2 for a collection error such as a missing
name) *and* the fixed run passed; a run that times out (:data:`TEST_TIMEOUT_S`) or needs
something this environment lacks is simply not fed. Outputs (first
:data:`MAX_OUTPUT_CHARS` characters, as the OpenCode shim keeps) are cached with the
fixes (werkzeug's conftest needs the ``bench-fixes`` extra: ``pip install -e
'.[bench-fixes]'``): the first run of a repository takes minutes (~3 s per fix with tests on the
2-core machine it was written on), later runs reuse the cache. ``--no-test-runs`` feeds
the commands without output. The tests are the projects' own public tests, run as
their CI would, with a scrubbed environment (``HOME`` in the temporary folder).

``CHANGES.rst`` is never part of the diff fed, so the question's words are not in
memory verbatim. Every other fix of the same repository is in the same memory: the
other sessions are the distractors, as in a real project's memory. The first
:data:`SUBPROCESS_EVENTS` events of the first repository go through a real ``python -m
opensage hook`` subprocess; the others through the same click command in process
(``CliRunner``), for time (as ``bench/locomo.py``).

Questions are asked with ``@memory-query mode=history query=<question> maxResults=10``:
the path a user's "how did we fix ...?" takes (the intent router's
``opensage_memory_history`` route, opensage/config/intent-routes.yaml, asks
``mode=history``; so does the UserPromptSubmit context). ``--mode similarity`` asks the
default mode instead (what a model calling the memory tool without a mode gets). Scores,
per question, averaged:

* session recall@5 / MRR (over the top 10): a result is a hit when it is an episode of
  the gold session, or a node whose sessions include it: the sessions of the episodes
  it was derived from (``node_episodes``), the session a ``session`` node stands for, a
  ``session`` in its metadata (a history chain: the first :data:`POINTS_AT` sessions it
  names, as it shows them, plus its anchor's). A node derived from more than
  :data:`POINTS_AT` sessions (``Sentinel.UNSET``, ``AssertionError``) is general
  knowledge and points at none. *strict*: a node or chain counts only when it comes
  from that one session;
* file recall@5: the fraction of gold files named in the top 5 results (a file is named
  when its path appears in the result's JSON, as a user reading the result would see it);
* the table also says which kind of result the gold session's first hit was and, when the
  gold is not first, what kind of result was (to see what crowds out the evidence).

Baseline, in the same run, over the same text: one SQLite FTS5 row per session (``porter
unicode61``; all the event text fed for that session: messages, tool names, arguments,
results, paths), ranked by ``bm25()`` for the question's words OR-ed together. A session
row names all of its files, so its file recall@5 is that of the top 5 sessions' files.

Usage::

    python bench/fixes.py --repo click=/path/to/click --repo werkzeug=/path/to/werkzeug [--n 150] [--only click]

Prints a table per repository (dev / held-out labelled), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from click.testing import CliRunner  # noqa: E402

from opensage.cli import cli  # noqa: E402
from opensage.errors import OpenSageError  # noqa: E402
from opensage.host import Host  # noqa: E402
from opensage.store import Workspace  # noqa: E402

REPOS = {
    "click": {"url": "https://github.com/pallets/click", "commit": "2c8cd3ac958a7eb316d67f2d316c27086c4c0369",
              "split": "dev"},
    "werkzeug": {"url": "https://github.com/pallets/werkzeug", "commit": "1b00618e787f40dfb21eba29caf8f8be7c8e1d93",
                 "split": "held-out"},
}
CACHE = REPO / "bench" / ".cache" / "fixes"
EXTRACT_VERSION = 3
N_FIXES = 150
MAX_FILES = 12
MAX_HUNKS = 16
MAX_EDIT_CHARS = 1500
MAX_TESTS = 8
MAX_OUTPUT_CHARS = 20_000  # what the OpenCode shim keeps of a tool result
TEST_TIMEOUT_S = 120
SUBPROCESS_EVENTS = 4
K = 5
POINTS_AT = 3
MAX_QUESTION_WORDS = 30
DEPTH = 10
CHANGELOG = "CHANGES.rst"
FIX_WORDS = re.compile(
    r"\b(fix(e[sd])?|bug|error|crash\w*|incorrect(ly)?|correct(ly)?|broken|regression|wrong|fail\w*|"
    r"no longer|does not|doesn't|do not|don't|not|handle[sd]?|raise[sd]?|again|issue)\b", re.I)
TRAILER = re.compile(r"^(co-authored-by|signed-off-by|reviewed-by|acked-by|cherry-picked from)\b.*$", re.I | re.M)
EDIT_OK = "Edit applied successfully."


@dataclass
class Hunk:
    path: str
    old: str
    new: str
    new_file: bool = False
    context: str = ""  # the enclosing definition git names in the hunk header


@dataclass
class Fix:
    sha: str
    date: float
    subject: str
    body: str
    bullet: str
    files: list[str]
    hunks: list[Hunk] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)  # pytest node ids (path::name)
    # real runs of those tests (see run_tests): output and exit code before / after the fix
    test_before: str | None = None
    test_before_rc: int | None = None
    test_after: str | None = None
    test_after_rc: int | None = None

    @property
    def session_id(self) -> str:
        return f"fix-{self.sha[:12]}"


# -- reading the history -----------------------------------------------------------------
def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, errors="replace",
                          timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args[:2])} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


def added_bullets(changelog_diff: str) -> list[str]:
    """The changelog bullets a diff adds: ``-   text`` lines plus their indented continuations."""
    bullets: list[str] = []
    for line in changelog_diff.splitlines():
        if not line.startswith("+") or line.startswith("+++"):
            if bullets and bullets[-1] is not None:
                bullets.append(None)  # a context/removed line ends the bullet
            continue
        text = line[1:]
        if text.startswith("-   "):
            bullets.append(text[4:].strip())
        elif text.startswith("    ") and bullets and bullets[-1] is not None:
            bullets[-1] += " " + text.strip()
        elif text.strip() and bullets and bullets[-1] is not None:
            bullets.append(None)
    return [b for b in bullets if b]


def parse_diff(diff: str) -> list[Hunk]:
    """``git show --unified=0`` text -> one :class:`Hunk` per hunk (binary files skipped)."""
    hunks: list[Hunk] = []
    path = None
    new_file = False
    cur: Hunk | None = None
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            path, new_file, cur = None, False, None
            m = re.match(r"diff --git a/(.+?) b/(.+)$", line)
            if m:
                path = m.group(2)
        elif line.startswith("new file mode"):
            new_file = True
        elif line.startswith("+++ "):
            if line[4:].startswith("b/"):
                path = line[6:]
        elif line.startswith("@@"):
            if path:
                cur = Hunk(path, "", "", new_file, line.split("@@", 2)[-1].strip())
                hunks.append(cur)
        elif cur is not None and line.startswith("-") and not line.startswith("---"):
            cur.old += line[1:] + "\n"
        elif cur is not None and line.startswith("+"):
            cur.new += line[1:] + "\n"
    return hunks


def clean_body(body: str) -> str:
    body = TRAILER.sub("", body)
    return re.sub(r"\n{3,}", "\n\n", body).strip()


TREE_PARTS = ("src", "tests", "pyproject.toml", "setup.cfg", "setup.py", "tox.ini", "conftest.py")


def _materialize(repo: Path, rev: str, dest: Path, parts: tuple[str, ...] = TREE_PARTS) -> None:
    """Write ``parts`` of the tree of ``rev`` (code, tests, test configuration) into ``dest``."""
    top = set(git(repo, "ls-tree", "--name-only", rev).split())
    wanted = [p for p in parts if p in top]
    raw = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev, "--", *wanted],
                         capture_output=True, timeout=120, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(dest, filter="data")  # no links or paths outside dest


def _pytest(workdir: Path, fix: Fix) -> tuple[int, str]:
    files = list(dict.fromkeys(t.split("::")[0] for t in fix.tests))
    names = " or ".join(dict.fromkeys(t.split("::")[1] for t in fix.tests))
    src = workdir / "src" if (workdir / "src").is_dir() else workdir
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "LANG": "C.UTF-8",
           "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "-k", names],
                              cwd=workdir, env=env, capture_output=True, text=True, errors="replace",
                              timeout=TEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, ""
    out = (proc.stdout + proc.stderr).replace(str(workdir) + os.sep, "").replace(str(workdir), ".")
    return proc.returncode, out[:MAX_OUTPUT_CHARS]


def run_tests(repo: Path, fix: Fix) -> None:
    """Run the fix's tests as the developer would have: the new tests against the code
    before the fix (``<sha>^`` with ``tests/`` of ``<sha>``), then the fixed tree. Sets
    ``fix.test_before*`` / ``fix.test_after*`` (exit code -1: timed out)."""
    with tempfile.TemporaryDirectory(prefix="fixes-tests-") as tmp:
        before, after = Path(tmp) / "before", Path(tmp) / "after"
        _materialize(repo, f"{fix.sha}^", before, tuple(p for p in TREE_PARTS if p != "tests"))
        _materialize(repo, fix.sha, before, ("tests",))
        _materialize(repo, fix.sha, after)
        fix.test_before_rc, fix.test_before = _pytest(before, fix)
        fix.test_after_rc, fix.test_after = _pytest(after, fix)


def extract(repo: Path, commit: str, n: int, run_test_cmds: bool = True) -> list[Fix]:
    """The newest ``n`` fixes reachable from ``commit`` (see the module docstring's rule)."""
    probe = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        raise SystemExit(f"{repo} is not a clone holding commit {commit} ({probe.stderr.strip() or 'missing'}): "
                         "clone the repository again (git clone URL) and pass its folder to --repo")
    fixes: list[Fix] = []
    for sha in git(repo, "log", "--no-merges", "--format=%H", commit, "--", CHANGELOG).split():
        bullets = added_bullets(git(repo, "show", "--format=", "--unified=0", "--no-color", sha, "--", CHANGELOG))
        if len(bullets) != 1:
            continue
        files = [f for f in git(repo, "show", "--format=", "--name-only", "--no-color", sha).splitlines()
                 if f and f != CHANGELOG]
        if not any(f.endswith(".py") and not f.startswith(("tests/", "docs/", "examples/")) for f in files):
            continue
        meta = git(repo, "show", "-s", "--format=%at%x00%s%x00%b", sha)
        at, subject, body = meta.split("\x00", 2)
        if not (FIX_WORDS.search(bullets[0]) or FIX_WORDS.search(subject)):
            continue
        files = files[:MAX_FILES]
        diff = git(repo, "show", "--format=", "--unified=0", "--no-color", "--no-ext-diff", sha, "--", *files)
        hunks = [h for h in parse_diff(diff) if h.path in files]
        tests = []
        for h in hunks:  # test functions the fix adds or changes
            if h.path.startswith("tests/") and h.path.endswith(".py"):
                names = re.findall(r"^\s*(?:async\s+)?def (test_\w+)", h.new, re.M)
                if not re.search(r"^\s*(?:async\s+)?def ", h.old + h.new, re.M):  # a change inside one function
                    names += re.findall(r"\bdef (test_\w+)", h.context)
                tests += [f"{h.path}::{name}" for name in names]
        fix = Fix(sha, float(at), subject.strip(), clean_body(body), bullets[0], files, hunks[:MAX_HUNKS],
                  list(dict.fromkeys(tests))[:MAX_TESTS])
        if run_test_cmds and fix.tests:
            run_tests(repo, fix)
        fixes.append(fix)
        if len(fixes) == n:
            break
    return fixes


def cache_path(name: str, commit: str, n: int, test_runs: bool) -> Path:
    return CACHE / f"{name}-{commit[:12]}-n{n}-v{EXTRACT_VERSION}{'-runs' if test_runs else ''}.json"


def load_fixes(name: str, repo: Path, commit: str, n: int, test_runs: bool = True) -> list[Fix]:
    """:func:`extract`, cached as JSON in :data:`CACHE`."""
    path = cache_path(name, commit, n, test_runs)
    if path.exists():
        raw = json.loads(path.read_text())
        return [Fix(**{**f, "hunks": [Hunk(**h) for h in f["hunks"]]}) for f in raw]
    fixes = extract(repo, commit, n, test_runs)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(f) for f in fixes]))
    tmp.replace(path)
    return fixes


# -- questions ----------------------------------------------------------------------------
def question(bullet: str) -> str:
    """The changelog bullet as a user's question, without references that give the answer away."""
    text = re.sub(r":(issue|pr|ghsa|cve|user|commit):`[^`]*`", "", bullet)
    text = re.sub(r":\w+:`(~?)([^`<]*?)(?:\s*<[^>]*>)?`",
                  lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"`+([^`]*)`+(_\b)?", r"\1", text)
    text = re.sub(r"https?://\S+", "", text)
    text = re.sub(r"(?<!\w)#\d+\b", "", text)
    text = re.sub(r"\(\s*\)|\s+([.,;:])", r"\1", text)
    text = re.sub(r"\b(issue|pr)\s*:?\s*`?\d+`?", "", text, flags=re.I)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.split(r"(?<=[a-z0-9)])[.:] (?=[A-Z*-])", text)[0]  # the first sentence
    words = text.split()
    text = " ".join(words[:MAX_QUESTION_WORDS]).strip().rstrip(".:").strip()
    m = re.match(r"fix(?:ed|es)?\s+(.*)", text, re.I | re.S)
    if m:
        return f"how did we fix {m.group(1)}?"
    first = text.split(" ", 1)[0]
    if re.fullmatch(r"[A-Z][a-z]+", first):  # a plain capitalised word, not an identifier
        text = text[:1].lower() + text[1:]
    return f"how did we fix it so that {text}?"


# -- feeding -----------------------------------------------------------------------------
def session_events(fix: Fix) -> list[tuple[str, dict]]:
    """(hook EVENT, JSON body) for one fix, in the order a host sends them."""
    sid = fix.session_id
    t = fix.date
    out: list[tuple[str, dict]] = [("session-start", {"session_id": sid})]

    def add(event: str, body: dict) -> None:
        nonlocal t
        t += 1
        out.append((event, {"session_id": sid, "timestamp": t, **body}))

    add("user-message", {"text": fix.subject, "role": "user"})
    calls = iter(range(1, 10_000))
    files = list(dict.fromkeys(x.split("::")[0] for x in fix.tests))
    names = " or ".join(dict.fromkeys(x.split("::")[1] for x in fix.tests))
    test_cmd = {"command": f"pytest -q {' '.join(files)} -k '{names}'", "description": "Run the tests of this fix"}

    def tool(name: str, args: dict, result: str | None) -> None:
        meta = {"callID": f"call_{fix.sha[:8]}_{next(calls)}"}
        add("tool-call", {"tool": name, "args": args, "meta": meta})
        if result is not None:
            add("tool-result", {"tool": name, "text": result, "meta": meta})

    failed_first = fix.test_before is not None and fix.test_before_rc in (1, 2) and fix.test_after_rc == 0
    if failed_first:  # the new tests fail on the code before the fix
        tool("bash", test_cmd, fix.test_before)
    for h in fix.hunks:
        if h.new_file:
            tool("write", {"filePath": h.path, "content": h.new[:MAX_EDIT_CHARS]}, "Wrote file successfully.")
        else:
            tool("edit", {"filePath": h.path, "oldString": h.old[:MAX_EDIT_CHARS],
                          "newString": h.new[:MAX_EDIT_CHARS]}, EDIT_OK)
        add("file-edit", {"path": h.path, "tool": "write" if h.new_file else "edit"})
    if fix.tests:  # the output only when a real run passed on the fixed tree
        tool("bash", test_cmd, fix.test_after if fix.test_after_rc == 0 else None)
    answer = fix.body or f"Changed {', '.join(fix.files)}."
    add("assistant-message", {"text": answer, "role": "assistant"})
    out.append(("session-end", {"session_id": sid}))
    return out


def session_text(events: list[tuple[str, dict]]) -> str:
    """All text of a session's events, for the baseline's single row."""
    parts = []
    for _event, body in events:
        for key in ("text", "tool", "path"):
            if body.get(key):
                parts.append(str(body[key]))
        if body.get("args"):
            parts.extend(str(v) for v in body["args"].values())
    return "\n".join(parts)


def feed(root: Path, host: Host, fixes: list[Fix], via_subprocess: int) -> int:
    """Send every fix's events through ``opensage hook``; returns the number of events."""
    runner = CliRunner()
    count = 0
    for fix in fixes:
        for event, body in session_events(fix):
            cmd = ["--workspace", str(root), "hook", event, "--source", "opencode"]
            data = json.dumps(body)
            if count < via_subprocess:
                proc = subprocess.run([sys.executable, "-m", "opensage", *cmd], input=data, capture_output=True,
                                      text=True, cwd=REPO, timeout=120)
                if proc.returncode != 0:
                    raise SystemExit(f"hook subprocess failed ({proc.returncode}): {proc.stderr}")
            else:
                res = runner.invoke(cli, cmd, input=data, obj={"host": host}, catch_exceptions=False)
                if res.exit_code != 0:
                    raise SystemExit(f"hook {event} failed ({res.exit_code}): {res.output}")
            count += 1
    return count


# -- scoring -----------------------------------------------------------------------------
def node_sessions(host: Host, results: list[dict]) -> dict[str, set[str]]:
    """Node ref (``n12``) -> its sessions: those of the episodes it was derived from
    (``node_episodes``), the session a ``session`` node stands for (its label), and a
    ``session`` named in its metadata."""
    ids = {r["id"]: int(r["id"][1:]) for r in results if re.fullmatch(r"n\d+", str(r.get("id")))}
    if not ids:
        return {}
    rows = host.db.conn.execute(
        "SELECT ne.node_id, e.session_id FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id "
        f"WHERE ne.node_id IN ({','.join('?' * len(ids))})", list(ids.values())).fetchall()
    out: dict[str, set[str]] = {r: set() for r in ids}
    back = {v: k for k, v in ids.items()}
    for nid, sid in rows:
        out[back[nid]].add(sid)
    for r in results:
        if r.get("id") not in out:
            continue
        if r.get("type") == "session":
            out[r["id"]].add(r.get("label"))
        meta_session = (r.get("metadata") or {}).get("session")
        if isinstance(meta_session, str):
            out[r["id"]].add(meta_session)
    return out


def files_named(blob: str, candidates: set[str]) -> set[str]:
    return {f for f in candidates if f in blob}


def score_lists(sessions: list[set[str]], files: list[set[str]], fix: Fix) -> tuple[float, float, float]:
    gold = fix.session_id
    rank = next((i for i, s in enumerate(sessions[:DEPTH], start=1) if gold in s), None)
    got: set[str] = set().union(*files[:K]) if files[:K] else set()
    return (1.0 if rank and rank <= K else 0.0), (1.0 / rank if rank else 0.0), \
        len(got & set(fix.files)) / len(fix.files)


def ask_opensage(host: Host, fix: Fix, q: str, all_files: set[str], mode: str = "similarity") -> tuple[tuple, dict]:
    """Ask ``q`` with ``@memory-query`` and score it: ((recall@5, rr, file recall@5,
    strict recall@5, strict rr), info about the first hit)."""
    args = {"query": q, "maxResults": DEPTH}
    if mode != "similarity":
        args["mode"] = mode
    result = host.run("memory-query", args)
    data = [r for r in result.data or [] if isinstance(r, dict)]
    # a history chain is scored through its anchor node plus the sessions it names
    anchors = [r.get("anchor") for r in data if r.get("kind") == "chain" and isinstance(r.get("anchor"), dict)]
    provenance = node_sessions(host, [r for r in data if r.get("kind") not in ("episode", "chain")] + anchors)
    sessions, files, kinds = [], [], []
    for r in data:
        if r.get("kind") == "episode":
            sessions.append({r.get("sessionId")})
            kinds.append("episode")
        elif r.get("kind") == "chain":
            # the sessions it shows (a chain lists its sessions, the first POINTS_AT are rendered)
            named = {x.get("id") for x in (r.get("sessions") or [])[:POINTS_AT] if isinstance(x, dict)}
            anchor = r.get("anchor") if isinstance(r.get("anchor"), dict) else {}
            sessions.append(named | provenance.get(anchor.get("id"), set()))
            kinds.append(f"chain:{anchor.get('type')}")
        else:
            sessions.append(provenance.get(r.get("id"), set()))
            kinds.append(f"node:{r.get('type')}")
        files.append(files_named(json.dumps(r), all_files))
    # a result derived from more than POINTS_AT sessions is general knowledge, not a pointer to one fix
    pointing = [s if len(s) <= POINTS_AT else set() for s in sessions]
    scores = score_lists(pointing, files, fix)
    # strict: a node or chain counts only when it comes from the gold session alone
    strict = [s if len(s) == 1 else set() for s in sessions]
    scores += score_lists(strict, files, fix)[:2]
    rank = next((i for i, s in enumerate(pointing[:DEPTH]) if fix.session_id in s), None)
    info = {"hit_kind": kinds[rank] if rank is not None else None,
            "hit_sessions": len(sessions[rank]) if rank is not None else None,
            "first_kind": kinds[0] if kinds and rank != 0 else None}
    return scores, info


class Baseline:
    """Plain SQLite FTS5 BM25: one row per session, the question's words OR-ed."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.execute("CREATE VIRTUAL TABLE s USING fts5(sid UNINDEXED, text, tokenize='porter unicode61')")
        self.files: dict[str, set[str]] = {}

    def add(self, fix: Fix, events: list[tuple[str, dict]]) -> None:
        self.conn.execute("INSERT INTO s(sid, text) VALUES (?, ?)", (fix.session_id, session_text(events)))
        self.files[fix.session_id] = set(fix.files)

    def ask(self, fix: Fix, q: str) -> tuple:
        words = list(dict.fromkeys(re.findall(r"\w+", q.lower())))
        if not words:
            return 0.0, 0.0, 0.0
        match = " OR ".join('"' + w + '"' for w in words)
        sids = [r[0] for r in self.conn.execute(
            "SELECT sid FROM s WHERE s MATCH ? ORDER BY bm25(s) LIMIT ?", (match, DEPTH))]
        return score_lists([{s} for s in sids], [self.files[s] for s in sids], fix)


def run_repo(name: str, fixes: list[Fix], via_subprocess: int, show_misses: int, mode: str = "similarity") -> dict:
    all_files = {f for fix in fixes for f in fix.files}
    base = Baseline()
    with tempfile.TemporaryDirectory(prefix=f"fixes-{name}-") as tmp:
        root = Path(tmp)
        host = Host(Workspace(root), load_entrypoints=False)
        try:
            t0 = time.perf_counter()
            events = feed(root, host, fixes, via_subprocess)
            ingest_s = time.perf_counter() - t0
            for fix in fixes:
                base.add(fix, session_events(fix))
            stored = host.db.conn.execute("SELECT count(DISTINCT session_id) FROM episodes").fetchone()[0]
            if stored != len(fixes):
                raise SystemExit(f"{name}: fed {len(fixes)} sessions but episodes of {stored} were recorded")
            t0 = time.perf_counter()
            ours, theirs, infos, lat = [], [], [], []
            for fix in fixes:
                q = question(fix.bullet)
                t1 = time.perf_counter()
                s, info = ask_opensage(host, fix, q, all_files, mode)
                lat.append((time.perf_counter() - t1) * 1000)
                ours.append(s)
                infos.append((fix, q, info, s))
                theirs.append(base.ask(fix, q))
            eval_s = time.perf_counter() - t0
            nodes = host.db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
        finally:
            host.close()
    n = len(fixes)

    def mean(rows, i):
        return sum(r[i] for r in rows) / n

    node_hits = [i["hit_sessions"] for _f, _q, i, _s in infos if i["hit_kind"] and i["hit_kind"] != "episode"]
    for fix, q, info, s in [x for x in infos if x[3][0] == 0][:show_misses if REPOS[name]["split"] == "dev" else 0]:
        print(f"  miss {fix.sha[:8]} {q!r} (rank {round(1 / s[1]) if s[1] else '>10'}; subject {fix.subject!r})")
    lat.sort()
    return {
        "repo": name, "split": REPOS[name]["split"], "fixes": n, "events": events, "nodes": nodes,
        "ingest_s": round(ingest_s, 1), "eval_s": round(eval_s, 1), "q_p50_ms": round(lat[n // 2], 1),
        "opensage": {"recall@5": mean(ours, 0), "mrr": mean(ours, 1), "file_recall@5": mean(ours, 2),
                     "strict_recall@5": mean(ours, 3), "strict_mrr": mean(ours, 4)},
        "fts5": {"recall@5": mean(theirs, 0), "mrr": mean(theirs, 1), "file_recall@5": mean(theirs, 2)},
        "node_hits": len(node_hits), "nodes_per_hit": (sum(node_hits) / len(node_hits)) if node_hits else 0.0,
        "beaten_by": dict(sorted(Counter(i["first_kind"] for _f, _q, i, _s in infos if i["first_kind"]).items(),
                                 key=lambda kv: -kv[1])),
        "hit_kinds": {k: sum(1 for _f, _q, i, _s in infos if i["hit_kind"] == k)
                      for k in sorted({i["hit_kind"] for _f, _q, i, _s in infos if i["hit_kind"]})},
    }


def parse_repo_args(values: list[str]) -> dict[str, Path]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or name not in REPOS:
            raise ValueError(f"--repo NAME=PATH with NAME one of {', '.join(REPOS)} (got {v!r})")
        out[name] = Path(path).expanduser()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", action="append", default=[], metavar="NAME=PATH",
                    help="a clone of a repository (" + ", ".join(f"{k}: {v['url']}" for k, v in REPOS.items()) + ")")
    ap.add_argument("--n", type=int, default=N_FIXES, help="fixes per repository (the newest before the pin)")
    ap.add_argument("--only", default="", help="comma-separated repository names to run")
    ap.add_argument("--misses", type=int, default=0, help="print this many opensage misses per dev repository")
    ap.add_argument("--test-runs", action=argparse.BooleanOptionalAction, default=True,
                    help="run each fix's tests before and after it (real output in the sessions; first run only, "
                         "then cached)")
    ap.add_argument("--mode", default="history", choices=("history", "similarity"),
                    help="@memory-query mode to ask with: history (the default, where the intent router sends "
                         "'how did we fix ...') or similarity")
    args = ap.parse_args(argv)
    if not 1 <= args.n <= 1000:
        ap.error("--n must be 1-1000")
    try:
        paths = parse_repo_args(args.repo)
    except ValueError as exc:
        ap.error(str(exc))
    unknown = set(filter(None, args.only.split(","))) - set(REPOS)
    if unknown:
        ap.error(f"--only: unknown repository {', '.join(sorted(unknown))}; use {', '.join(REPOS)}")
    names = [n for n in REPOS if not args.only or n in args.only.split(",")]
    started = time.perf_counter()
    rows = []
    for i, name in enumerate(names):
        spec = REPOS[name]
        cached = cache_path(name, spec["commit"], args.n, args.test_runs)
        if name not in paths and not cached.exists():
            raise SystemExit(f"{name}: give --repo {name}=PATH to a clone of {spec['url']} "
                             f"(containing commit {spec['commit']})")
        fixes = load_fixes(name, paths.get(name, Path(".")), spec["commit"], args.n, args.test_runs)
        if not fixes:
            raise SystemExit(f"{name}: no fixes found before {spec['commit'][:12]}")
        with_tests = [f for f in fixes if f.tests]
        pairs = sum(1 for f in with_tests if f.test_before_rc in (1, 2) and f.test_after_rc == 0)
        green = sum(1 for f in with_tests if f.test_after_rc == 0)
        print(f"{name} ({spec['split']}): {len(fixes)} fixes, "
              f"{time.strftime('%Y-%m-%d', time.gmtime(fixes[-1].date))} .. "
              f"{time.strftime('%Y-%m-%d', time.gmtime(fixes[0].date))}; {len(with_tests)} with tests"
              + (f", {green} green after the fix, {pairs} red before it" if args.test_runs else ""), flush=True)
        broken = [f.test_after for f in with_tests if f.test_after_rc not in (0, 1, None)]
        if args.test_runs and with_tests and len(broken) == len(with_tests):
            print(f"  warning: no test of {name} could run here ({broken[0].strip().splitlines()[-1][:120]}); "
                  "pip install -e '.[bench-fixes]' and delete its cache in bench/.cache/fixes/", flush=True)
        try:
            rows.append(run_repo(name, fixes, SUBPROCESS_EVENTS if i == 0 else 0, args.misses, args.mode))
        except OpenSageError as exc:
            raise SystemExit(f"{name}: {exc}") from None
    print(f"{'repo':<9} {'split':<9} {'fixes':>5} {'events':>6} {'ingest s':>8} {'system':<8} {'R@5':>6} {'MRR':>6}"
          f" {'fileR@5':>7} {'q p50 ms':>8}")
    for r in rows:
        for system in ("opensage", "fts5"):
            m = r[system]
            extra = (f"{r['events']:>6} {r['ingest_s']:>8.1f}" if system == "opensage" else f"{'':>6} {'':>8}")
            p50 = f"{r['q_p50_ms']:>8.1f}" if system == "opensage" else ""
            print(f"{r['repo']:<9} {r['split']:<9} {r['fixes']:>5} {extra} {system:<8} {m['recall@5']:>6.3f} "
                  f"{m['mrr']:>6.3f} {m['file_recall@5']:>7.3f} {p50}")
        print(f"{'':<9} opensage strict (nodes of the gold session only): R@5 {r['opensage']['strict_recall@5']:.3f}"
              f" MRR {r['opensage']['strict_mrr']:.3f}; first hits by kind: {r['hit_kinds']}; node hits derived"
              f" from {r['nodes_per_hit']:.2f} sessions on average")
        print(f"{'':<9} opensage gold not first ({sum(r['beaten_by'].values())}): the first result was {r['beaten_by']}")
    print(f"total {time.perf_counter() - started:.1f} s")
    out = {r["repo"]: {"split": r["split"], "fixes": r["fixes"], "mode": args.mode,
                       **{f"{s}_{k}": round(v, 4) for s in ("opensage", "fts5") for k, v in r[s].items()}}
           for r in rows}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
