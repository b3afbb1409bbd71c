"""Hooks never lose an event when the team store (PostgreSQL) is down (issue 16, must-show 5).

A real PostgreSQL server of this module's own (tests/pg_env.py; killed and restarted here,
so no other test shares it). The real hook entry points run as subprocesses:
``opensage-hook claude`` with Claude Code's JSON on stdin (and the hook server it starts),
and the OpenCode bridge ``opensage hook --from opencode``. The server is killed
(``pg_ctl stop -m immediate``) mid-session, the hooks keep answering, the server comes
back, one more event is sent, and every event is in the ``episodes`` table exactly once,
in order. Delivery interrupted (the server dies again, the delivering process is killed)
still loses and duplicates nothing.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.polling import wait_until

#: A hook must answer its host well within Claude Code's 60 s hook timeout even with the
#: server dead: one connection attempt (opensage.pgstore.CONNECT_TIMEOUT_S) plus a Python
#: start-up, with room for a loaded 2-core machine.
HOOK_BOUND_S = 20.0


@pytest.fixture(scope="module")
def pg():
    """A PostgreSQL cluster for this module only (its tests stop and start it)."""
    from tests.pg_env import running_server

    yield from running_server()


@pytest.fixture
def team(pg, monkeypatch, project):
    """A fresh database on :func:`pg`, named by ``OPENSAGE_DATABASE_URL`` for this test
    and its subprocesses; the server is running again when the test ends."""
    # pg_env runs the cluster with synchronous_commit off, which loses the last commits when
    # the server is killed; a team server keeps the default (on), and so do these connections
    url = pg.new_database() + "?options=-c%20synchronous_commit%3Don"
    monkeypatch.setenv("OPENSAGE_DATABASE_URL", url)
    monkeypatch.setenv("OPENSAGE_PROJECT", "test/hook-queue")
    monkeypatch.setenv("OPENSAGE_HOOKD_IDLE_S", "30")
    try:
        yield url
    finally:
        if not _accepts(pg):
            pg.start()
        _stop_hook_server(project)


def _accepts(pg) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", pg.port)) == 0


def _episodes(project: Path, session_id: str) -> list[tuple[str, str]]:
    """``(kind, text)`` of the session's episodes in ``seq`` order, read through opensage's store."""
    from opensage.host import Host
    from opensage.store import Workspace

    from opensage.plugins.graph_memory.graph import graph_for

    host = Host(Workspace(project))
    try:
        rows = graph_for(host).db.conn.execute("SELECT kind, text, seq FROM episodes WHERE session_id=? ORDER BY seq",
                                    (session_id,)).fetchall()
        seqs = [r["seq"] for r in rows]
        assert seqs == list(range(1, len(rows) + 1)), seqs  # numbered without gaps or repeats
        return [(r["kind"], r["text"]) for r in rows]
    finally:
        host.db.close()
        host.close()


def _queue(project: Path) -> list[dict]:
    path = project / ".opencode" / "hook-queue.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stop_hook_server(project: Path) -> None:
    """Stop the Claude hook server a test started (found by its socket's peer pid)."""
    from opensage_hook import socket_path

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(socket_path(str(project)))
        except OSError:
            return
        pid = __import__("struct").unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    os.kill(pid, signal.SIGTERM)


# -- Claude Code: opensage-hook ----------------------------------------------------------------
SID = "5b1f6c0e-claude-queue"


def _claude(project: Path, payload: dict, **env) -> tuple[subprocess.CompletedProcess, float]:
    full = {**os.environ, "CLAUDE_PROJECT_DIR": str(project), **env}
    start = time.monotonic()
    r = subprocess.run(["opensage-hook", "claude"], input=json.dumps(payload), capture_output=True, text=True,
                       timeout=60, env=full)
    return r, time.monotonic() - start


def _prompt(i: int) -> dict:
    return {"session_id": SID, "hook_event_name": "UserPromptSubmit", "cwd": "/", "prompt": f"message number {i}"}


def _tool(i: int) -> dict:
    return {"session_id": SID, "hook_event_name": "PostToolUse", "cwd": "/", "tool_name": "Bash",
            "tool_use_id": f"toolu_{i}", "tool_input": {"command": f"echo {i}"},
            "tool_response": {"stdout": f"output {i}", "stderr": ""}}


def _expected(i: int, kind: str) -> list[tuple[str, str]]:
    if kind == "prompt":
        return [("user_message", f"message number {i}")]
    return [("tool_call", ""), ("tool_result", f"output {i}")]


@pytest.mark.parametrize("server", ["hook server", "direct"])
def test_claude_hooks_answer_while_the_server_is_down_and_nothing_is_lost(pg, team, project, server):
    """opensage-hook (through its hook server, or the direct path in its own process):
    events before, during and after an outage are all recorded once, in order; compaction
    during the outage waits and runs after the server is back."""
    env = {"OPENSAGE_HOOK_SERVER": "0"} if server == "direct" else {}
    sent: list[tuple[str, str]] = []
    plan = [(0, "prompt"), (1, "tool"), (2, "prompt")]
    for i, kind in plan:
        r, _ = _claude(project, _prompt(i) if kind == "prompt" else _tool(i), **env)
        assert r.returncode == 0, r.stderr
        sent += _expected(i, kind)
    assert _episodes(project, SID) == sent

    pg.stop("immediate")  # the server dies mid-session
    took = []
    for i, kind in [(3, "prompt"), (4, "sh"), (5, "prompt"), (6, "tool")]:
        if kind == "sh":  # as installed: PostToolUse only queues its JSON with sh, no Python
            from opensage.integrations.claude import QUEUE_COMMAND

            r = subprocess.run(["sh", "-c", QUEUE_COMMAND], input=json.dumps(_tool(i)), capture_output=True,
                               text=True, timeout=30, env={**os.environ, "CLAUDE_PROJECT_DIR": str(project)})
            assert r.returncode == 0, r.stderr
            sent += _expected(i, "tool")
            continue
        r, seconds = _claude(project, _prompt(i) if kind == "prompt" else _tool(i), **env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {}  # a normal answer (no memory context without the store)
        took.append(seconds)
        sent += _expected(i, kind)
    r, seconds = _claude(project, {"session_id": SID, "hook_event_name": "PreCompact", "cwd": "/",
                                   "trigger": "auto"}, **env)
    assert r.returncode == 0 and json.loads(r.stdout) == {}, r.stderr
    took.append(seconds)
    assert max(took) < HOOK_BOUND_S, took
    # every operation is waiting on disk, in order (the hook server answers tool results first
    # and records them right after, so poll)
    wait_until(lambda: [e["op"] for e in _queue(project)] == ["record"] * 6 + ["compact"], 30, "the queue")

    pg.start()
    r, _ = _claude(project, _prompt(7), **env)
    assert r.returncode == 0, r.stderr
    assert "queued" not in r.stderr, r.stderr
    sent += _expected(7, "prompt")
    assert _episodes(project, SID) == sent
    assert _queue(project) == []
    # the compaction queued during the outage ran once the server was back
    from opensage.host import Host
    from opensage.store import Workspace

    host = Host(Workspace(project))
    try:
        compressed = host.db.conn.execute(
            "SELECT count(*) FROM episodes WHERE session_id=? AND compressed_at IS NOT NULL", (SID,)).fetchone()[0]
    finally:
        host.close()
    assert compressed >= len(sent) - 1  # everything up to the compaction (the last prompt came after)


# -- OpenCode: the bridge ----------------------------------------------------------------------
OC_SID = "ses_opencode_queue"


class Bridge:
    """``opensage hook --from opencode`` as the OpenCode shim runs it: one long-lived
    process, one JSON batch per line, one answer line per batch."""

    def __init__(self, project: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "opensage", "--workspace", str(project), "hook",
                                      "--from", "opencode"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def send(self, events: list[dict], timeout: float = 60) -> tuple[list[dict], float]:
        start = time.monotonic()
        self.proc.stdin.write(json.dumps({"events": events}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no answer within {timeout} s; stderr: {''.join(self.stderr)}"
        line = self.proc.stdout.readline()
        return json.loads(line)["results"], time.monotonic() - start

    def close(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=120)


def _oc(hook: str, **payload) -> dict:
    return {"hook": hook, "payload": {"session_id": OC_SID, **payload}}


def test_opencode_bridge_answers_while_the_server_is_down_and_nothing_is_lost(pg, team, project):
    bridge = Bridge(project)
    try:
        results, _ = bridge.send([_oc("session-start"), _oc("user-message", text="first question"),
                                  _oc("assistant-message", text="first answer")])
        assert [r["ok"] for r in results] == [True] * 3 and not any(r.get("queued") for r in results)

        pg.stop("immediate")  # its pooled connection is now broken
        took = []
        for i in range(3):
            results, seconds = bridge.send([_oc("user-message", text=f"question {i} in the outage"),
                                            _oc("tool-call", tool="bash", args={"command": f"ls {i}"}),
                                            _oc("assistant-message", text=f"answer {i} in the outage")])
            took.append(seconds)
            assert [r["ok"] for r in results] == [True] * 3, results
            assert all(f"127.0.0.1:{pg.port}" in r.get("queued", "") for r in results), results
        results, seconds = bridge.send([_oc("compact")])
        took.append(seconds)
        assert results[0]["ok"] and "context" not in results[0] and results[0].get("queued")
        assert max(took) < HOOK_BOUND_S, took
        assert len(_queue(project)) == 10

        pg.start()
        results, _ = bridge.send([_oc("user-message", text="back online")])
        assert results[0]["ok"] and not results[0].get("queued"), results
        assert _queue(project) == []
    finally:
        assert bridge.close() == 0, "".join(bridge.stderr)
    expected = [("user_message", "first question"), ("assistant_message", "first answer")]
    for i in range(3):
        expected += [("user_message", f"question {i} in the outage"), ("tool_call", ""),
                     ("assistant_message", f"answer {i} in the outage")]
    expected.append(("user_message", "back online"))
    assert _episodes(project, OC_SID) == expected


# -- interrupted delivery ----------------------------------------------------------------------
def _fill_queue(project: Path, pg, n: int, session_id: str) -> list[tuple[str, str]]:
    """Stop the server and send ``n`` user messages through ``fire_hook`` as one batch
    (the OpenCode bridge's path): all spooled. The server is left stopped."""
    from opensage.hook_queue import batch
    from opensage.hooks import fire_hook
    from opensage.host import Host
    from opensage.store import Workspace

    pg.stop("immediate")
    host = Host(Workspace(project))
    try:
        with batch(host):
            for i in range(n):
                out = fire_hook(host, "user-message", {"session_id": session_id, "text": f"queued message {i}"})
                assert out["ok"] and out.get("queued"), out
    finally:
        host.close()
    assert len(_queue(project)) == n
    return [("user_message", f"queued message {i}") for i in range(n)]


def test_delivery_interrupted_by_the_server_dying_again_loses_and_duplicates_nothing(pg, team, project,
                                                                                    monkeypatch):
    from opensage import hook_queue
    from opensage.errors import StoreUnavailable
    from opensage.host import Host
    from opensage.store import Workspace

    sid = "ses_dies_again"
    expected = _fill_queue(project, pg, 40, sid)
    pg.start()
    real_replay = hook_queue.replay
    delivered = []

    def replay_then_die(host, item):
        real_replay(host, item)
        delivered.append(item["id"])
        if len(delivered) == 13:  # the server dies right after the 13th event was committed
            pg.stop("immediate")

    monkeypatch.setattr(hook_queue, "replay", replay_then_die)
    host = Host(Workspace(project))
    try:
        with pytest.raises(StoreUnavailable):
            hook_queue.deliver(host)
    finally:
        host.close()
    assert len(_queue(project)) == 40  # kept whole until everything is committed
    pg.start()
    monkeypatch.setattr(hook_queue, "replay", real_replay)
    r = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "memory", "flush-queue"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "delivered 27 queued hook events" in r.stdout  # the 13 delivered before are not sent again
    assert _episodes(project, sid) == expected
    assert _queue(project) == []


def test_delivery_killed_midway_is_resumed_without_duplicates(pg, team, project):
    """The process delivering the queue is killed (SIGKILL) between commits: events it
    committed after its last saved offset are in the queue still; the next delivery skips
    them by their queue id."""
    from opensage.hook_queue import SAVE_EVERY

    sid = "ses_killed"
    n = 4 * SAVE_EVERY
    expected = _fill_queue(project, pg, n, sid)
    pg.start()
    flush = subprocess.Popen([sys.executable, "-m", "opensage", "--workspace", str(project), "memory",
                              "flush-queue"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def count() -> int:
        return len(_episodes(project, sid)) if flush.poll() is None else -1

    wait_until(lambda: count() > SAVE_EVERY + 5 or flush.poll() is not None, 120, "delivery under way")
    flush.kill()
    flush.wait(timeout=30)
    partial = len(_episodes(project, sid))
    assert 0 < partial < n, f"delivery was not interrupted ({partial} of {n}); the test needs it midway"
    assert len(_queue(project)) == n
    saved = json.loads((project / ".opencode" / "hook-queue.state.json").read_text())["offset"]
    raw = (project / ".opencode" / "hook-queue.jsonl").read_bytes()
    lines_saved = raw[:saved].count(b"\n")
    print(f"killed after {partial} committed; offset saved after {lines_saved}")
    r = subprocess.run([sys.executable, "-m", "opensage", "--json", "--workspace", str(project), "memory",
                        "flush-queue"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["delivered"] <= n - SAVE_EVERY  # resumed from the saved offset
    assert _episodes(project, sid) == expected  # each exactly once, in order
    assert _queue(project) == []


# -- bounds --------------------------------------------------------------------------------------
def test_flush_queue_with_the_server_down_exits_1_naming_the_url_and_keeps_the_queue(pg, team, project):
    sid = "ses_flush_down"
    _fill_queue(project, pg, 3, sid)
    r = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "memory", "flush-queue"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"127.0.0.1:{pg.port}" in r.stderr and "Traceback" not in r.stderr
    assert len(_queue(project)) == 3


def test_a_full_queue_keeps_the_oldest_events_and_says_so(pg, team, project, monkeypatch):
    from opensage import hook_queue
    from opensage.hooks import fire_hook
    from opensage.host import Host
    from opensage.store import Workspace

    monkeypatch.setattr(hook_queue, "MAX_QUEUE_EVENTS", 5)
    pg.stop("immediate")
    host = Host(Workspace(project))
    try:
        with hook_queue.batch(host):
            answers = [fire_hook(host, "user-message", {"session_id": "ses_full", "text": f"m{i}"}) for i in range(7)]
    finally:
        host.close()
    assert all(a["ok"] for a in answers)
    assert "dropped" in answers[-1]["queued"] and "dropped" not in answers[0]["queued"]
    assert [e["event"]["text"] for e in _queue(project)] == [f"m{i}" for i in range(5)]
    pg.start()
    host = Host(Workspace(project))
    try:
        done = hook_queue.deliver(host)
    finally:
        host.close()
    assert (done.delivered, done.dropped) == (5, 2)
    assert _episodes(project, "ses_full") == [("user_message", f"m{i}") for i in range(5)]


def test_a_server_that_accepts_but_never_answers_holds_a_hook_only_for_the_connect_timeout(project, monkeypatch):
    """A black hole (the TCP connection opens, the server never speaks): the hook waits for
    the connect timeout, queues the event and answers."""
    from opensage.pgstore import CONNECT_TIMEOUT_S

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # never accepted: the kernel completes the handshake, nobody answers
    try:
        monkeypatch.setenv("OPENSAGE_DATABASE_URL", f"postgresql://u@127.0.0.1:{hole.getsockname()[1]}/db")
        monkeypatch.setenv("OPENSAGE_PROJECT", "test/black-hole")
        r, seconds = _claude(project, _prompt(0), OPENSAGE_HOOK_SERVER="0")
    finally:
        hole.close()
    assert r.returncode == 0 and json.loads(r.stdout) == {}, r.stderr
    assert "queued" in r.stderr
    assert CONNECT_TIMEOUT_S <= seconds < CONNECT_TIMEOUT_S + 10, seconds
    assert [e["event"]["text"] for e in _queue(project)] == ["message number 0"]


def test_a_delivery_that_lost_its_offset_stores_nothing_twice(pg, team, project, monkeypatch):
    """What a kill between a commit and the next saved offset leaves, made certain: the
    delivered part of the queue is delivered again, and each queued event is stored once."""
    from opensage import hook_queue
    from opensage.host import Host
    from opensage.store import Workspace

    sid = "ses_offset_lost"
    expected = _fill_queue(project, pg, 20, sid)
    pg.start()
    real_replay, calls = hook_queue.replay, []

    def replay_then_crash(host, item):
        if len(calls) == 7:
            raise KeyboardInterrupt  # the process is interrupted after 7 commits
        real_replay(host, item)
        calls.append(item["id"])

    monkeypatch.setattr(hook_queue, "replay", replay_then_crash)
    host = Host(Workspace(project))
    try:
        with pytest.raises(KeyboardInterrupt):
            hook_queue.deliver(host)
        assert len(_episodes(project, sid)) == 7
        state = project / ".opencode" / "hook-queue.state.json"
        state.write_text(json.dumps({**json.loads(state.read_text()), "offset": 0}))  # never saved
        monkeypatch.setattr(hook_queue, "replay", real_replay)
        done = hook_queue.deliver(host)
    finally:
        host.close()
    assert done.delivered == 20  # the first 7 replayed and recognised by their queue id
    assert _episodes(project, sid) == expected
    assert _queue(project) == []


def test_events_queued_for_the_team_store_never_go_to_another_store(pg, team, project, monkeypatch):
    """OPENSAGE_DATABASE_URL unset while events wait: new events go to the SQLite file,
    the queued ones stay queued (flush-queue says where they belong) until the URL is back."""
    sid = "ses_switch"
    expected = _fill_queue(project, pg, 3, sid)
    pg.start()
    r, _ = _claude(project, {**_prompt(0), "session_id": "ses_local"}, OPENSAGE_HOOK_SERVER="0",
                   OPENSAGE_DATABASE_URL="")
    assert r.returncode == 0 and "holds hook events for" in r.stderr, r.stderr
    assert len(_queue(project)) == 3
    flush = [sys.executable, "-m", "opensage", "--workspace", str(project), "memory", "flush-queue"]
    r = subprocess.run(flush, capture_output=True, text=True, timeout=60, env={**os.environ, "OPENSAGE_DATABASE_URL": ""})
    assert r.returncode == 1 and f"127.0.0.1:{pg.port}" in r.stderr and "OPENSAGE_DATABASE_URL" in r.stderr
    import sqlite3

    local = sqlite3.connect(project / ".opencode" / "opensage.db")
    try:
        assert local.execute("SELECT session_id, text FROM episodes").fetchall() == [("ses_local", "message number 0")]
    finally:
        local.close()
    r = subprocess.run(flush, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _episodes(project, sid) == expected and _queue(project) == []


def test_opensage_hook_event_answers_0_with_a_note_and_the_idle_hook_server_delivers_by_itself(pg, team, project):
    """``opensage hook EVENT`` with the server down: exit 0, ``"queued"`` in its JSON, one
    short note on stderr. And a queue left by the Claude hook server is delivered by that
    server while idle once the store is back, without another event."""
    pg.stop("immediate")
    r = subprocess.run([sys.executable, "-m", "opensage", "--workspace", str(project), "hook", "user-message"],
                       input=json.dumps({"session_id": "ses_cli", "text": "from the command line"}),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["queued"] and len(r.stderr.strip().splitlines()) == 1, r.stderr
    from opensage.integrations.hookd import wait_for_server

    r, _ = _claude(project, _prompt(0))  # no hook server yet: direct path, starts one
    assert r.returncode == 0, r.stderr
    assert wait_for_server(str(project), 30)
    r, _ = _claude(project, _prompt(1))  # through the hook server
    assert r.returncode == 0 and json.loads(r.stdout) == {}, r.stderr
    assert len(_queue(project)) == 3
    pg.start()
    wait_until(lambda: _queue(project) == [], 60, "the idle hook server to deliver the queue")
    assert _episodes(project, SID) == _expected(0, "prompt") + _expected(1, "prompt")
    assert _episodes(project, "ses_cli") == [("user_message", "from the command line")]


def test_a_line_torn_by_a_crash_is_set_aside_and_the_rest_delivered_in_order(host, project):
    """The queue's own rules, on the SQLite store (no server needed): an append after a
    crash mid-write starts on a new line; the torn fragment is set aside with its error;
    the queue is removed once everything in it is done."""
    from opensage import hook_queue

    host.db  # noqa: B018 - the store the entries are meant for
    store = hook_queue.store_name(host)

    def message(text: str) -> dict:
        return hook_queue.entry("record", "ses_torn", "test", {"kind": "user_message", "text": text,
                                                               "timestamp": time.time()}, store)

    assert hook_queue.append(host.workspace, message("before the crash"))
    path = hook_queue.queue_path(host.workspace)
    with open(path, "ab") as fh:
        fh.write(b'{"id": "torn", "op": "rec')  # the process died mid-write
    assert hook_queue.append(host.workspace, message("after the crash"))
    assert hook_queue.append(host.workspace, {**message("bad kind"), "event": {"kind": "no-such-kind"}})
    done = hook_queue.deliver(host)
    assert (done.delivered, done.rejected, done.remaining) == (2, 2, 0)
    rows = host.db.conn.execute("SELECT text, meta FROM episodes WHERE session_id='ses_torn' ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == ["before the crash", "after the crash"]
    assert all(json.loads(r[1])["queue_id"] for r in rows)
    rejected = [json.loads(line) for line in
                (project / ".opencode" / "hook-queue.rejected.jsonl").read_text().splitlines()]
    assert [r["line"][:20] for r in rejected] == ['{"id": "torn", "op":', rejected[1]["line"][:20]]
    assert "no-such-kind" in rejected[1]["line"] and rejected[1]["error"]
    assert not path.exists() and not hook_queue.pending(host.workspace)


def test_store_unavailable_passes_the_plugin_guard_and_the_hook_queues_then_delivers_in_order(workspace):
    """A plugin whose store access raises StoreUnavailable is not "a failing plugin": the
    error reaches the hook, which queues the event; a later event delivers the queue first.
    (A plugin raising anything else is still logged and skipped.) SQLite store, no server."""
    from opensage import hookimpl
    from opensage.errors import StoreUnavailable
    from opensage.hooks import fire_hook
    from opensage.host import Host

    class Outage:
        down = True
        seen: list[str] = []

        @hookimpl
        def session_event(self, session, event):
            if self.down:
                raise StoreUnavailable("cannot reach the team store at postgresql://u:***@db.example/x")
            self.seen.append(event.text)

    class Broken:
        @hookimpl
        def session_event(self, session, event):
            raise RuntimeError("a plugin bug")

    outage = Outage()
    host = Host(workspace, plugins=[outage, Broken()])
    try:
        first = fire_hook(host, "user-message", {"session_id": "ses_guard", "text": "one"})
        assert first["queued"] and "postgresql://u:***@db.example/x" in first["queued"]
        fire_hook(host, "user-message", {"session_id": "ses_guard", "text": "two"})
        outage.down = False
        third = fire_hook(host, "user-message", {"session_id": "ses_guard", "text": "three"})
        assert "queued" not in third
        assert third["ok"] is False and "a plugin bug" in json.dumps(third["errors"])  # still isolated, logged
        assert outage.seen == ["one", "two", "three"]  # the queue first, in order, then the new event
        assert not hook_queue_pending(workspace)
    finally:
        host.close()


def hook_queue_pending(workspace) -> bool:
    from opensage.hook_queue import pending

    return pending(workspace)
