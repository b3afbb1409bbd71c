"""Episodes: every session event recorded through the real hook door, numbered, searchable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from opensage.host import Host
from opensage.plugins.graph_memory.episodes import list_episodes, mark_compressed, search_episodes
from opensage.store import Workspace
from opensage.types import SessionEvent

from conftest import REPO, db_snapshot


def episodes_of(project, session_id):
    host = Host(Workspace(project))
    try:
        host.db  # noqa: B018 - open (and migrate) the database
        from opensage.plugins.graph_memory.graph import graph_for

        return list_episodes(graph_for(host).db, session_id)
    finally:
        host.close()


def test_hook_subprocess_records_episodes_in_order(cli, project):
    first = {"session_id": "s1", "role": "user", "text": "Why does the token refresh fail after an hour?",
             "meta": {"turn": "T1"}, "timestamp": 1700000000.0}
    r = cli("hook", "user-message", input=json.dumps(first))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    second = {"session_id": "s1", "text": "The expiry is hard-coded to 3600 seconds.", "role": "assistant"}
    assert cli("hook", "assistant-message", input=json.dumps(second)).returncode == 0
    call = {"session_id": "s1", "tool": "edit", "args": {"file": "auth/tokens.py"}, "text": ""}
    assert cli("hook", "tool-call", input=json.dumps(call)).returncode == 0

    eps = episodes_of(project, "s1")
    assert [(e.seq, e.kind, e.role) for e in eps] == [
        (1, "user_message", "user"), (2, "assistant_message", "assistant"), (3, "tool_call", None)]
    assert eps[0].meta == {"turn": "T1"} and eps[0].timestamp == 1700000000.0
    assert eps[2].tool == "edit" and eps[2].args == {"file": "auth/tokens.py"}

    # and @memory-query finds the turns, with their session, seq, kind and meta
    r = cli("--json", "@memory-query", "query=token refresh expiry", "nodeType=episode")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data[0]["kind"] == "episode" and data[0]["sessionId"] == "s1"
    by_seq = {d["seq"]: d for d in data}
    assert by_seq[1]["meta"] == {"turn": "T1"} and by_seq[1]["eventKind"] == "user_message"
    # tool arguments are indexed too
    r = cli("--json", "@memory-query", "query=tokens.py")
    assert any(d.get("seq") == 3 for d in json.loads(r.stdout))


def test_bad_hook_payload_exits_2_and_records_nothing(cli, project):
    assert cli("hook", "user-message", input=json.dumps({"session_id": "s1", "text": "hello"})).returncode == 0
    before = db_snapshot(project)
    r = cli("hook", "user-message", input='{"session_id": "s1", "text": ')
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = cli("hook", "user-message", input=json.dumps({"session_id": "s1", "text": "x", "colour": "red"}))
    assert r.returncode == 2 and "colour" in r.stderr
    assert db_snapshot(project) == before


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from opensage.host import Host
    from opensage.store import Workspace
    from opensage.types import SessionEvent

    project, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    host = Host(Workspace(project))
    session = host.session("shared", source="test")
    for i in range(n):
        host.record(session, SessionEvent(kind="user_message", role=name, text=f"{name} message {i}"))
    host.close()
    """
)


def test_two_processes_record_into_one_session_concurrently(project):
    n = 25
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(project), name, str(n)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("alpha", "beta")
    ]
    # and two real `opensage hook` processes at the same time
    hooks = [
        subprocess.Popen([sys.executable, "-m", "opensage", "--workspace", str(project), "hook", "user-message"],
                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for i, h in enumerate(hooks):
        h.stdin.write(json.dumps({"session_id": "shared", "role": "hook", "text": f"hook message {i}"}))
        h.stdin.close()
    for p in procs + hooks:
        p.wait(timeout=120)
        assert p.returncode == 0, p.stderr.read()
    eps = episodes_of(project, "shared")
    assert len(eps) == 2 * n + 2
    assert [e.seq for e in eps] == list(range(1, 2 * n + 3))  # distinct, gap-free
    texts = {e.text for e in eps}
    for name in ("alpha", "beta"):
        assert {f"{name} message {i}" for i in range(n)} <= texts
        # each process's own events stay in its order
        own = [int(e.text.rsplit(" ", 1)[1]) for e in eps if e.role == name]
        assert own == list(range(n))
    assert {"hook message 0", "hook message 1"} <= texts


def test_list_mark_compressed_and_search(host):
    session = host.session("s2", source="test")
    host.record(session, SessionEvent(kind="user_message", role="user", text="Which database should we use?"))
    host.record(session, SessionEvent(kind="assistant_message", role="assistant", text="Postgres, for the JSONB columns."))
    host.record(session, SessionEvent(kind="file_edit", path="db/schema.sql", text="added users table"))
    other = host.session("s3", source="test")
    host.record(other, SessionEvent(kind="user_message", role="user", text="Unrelated database chat"))
    db = host.db
    eps = list_episodes(db, "s2")
    assert [e.seq for e in eps] == [1, 2, 3] and eps[2].path == "db/schema.sql"
    assert mark_compressed(db, [eps[0].id, eps[1].id]) == 2
    assert mark_compressed(db, [eps[0].id]) == 0  # already marked
    assert [e.seq for e in list_episodes(db, "s2", uncompressed=True)] == [3]
    assert [e.seq for e in list_episodes(db, "s2", after_seq=1, limit=1)] == [2]
    # the reply is found by the words of the question it answers (context window)
    found = search_episodes(db, "which database", session_id="s2")
    assert [e.seq for e, _ in found][:2] == [1, 2]
    assert all(e.session_id == "s2" for e, _ in found)
    assert search_episodes(db, "JSONB")[0][0].text.startswith("Postgres")
    # the date of an event is searchable text
    dated = host.session("s4", source="test")
    import time as _t

    ts = _t.mktime((2023, 5, 8, 13, 56, 0, 0, 0, -1))
    host.record(dated, SessionEvent(kind="user_message", role="user", text="went hiking", timestamp=ts))
    assert search_episodes(db, "hiking May 2023")[0][0].session_id == "s4"


def test_a_named_speaker_own_turns_come_first(host):
    session = host.session("talk", source="test")
    turns = [
        ("Bob", "Alice, how is the new cat doing? Tell me about the cat!"),
        ("Alice", "Miso is great, we adopted her from the shelter last week."),
        ("Bob", "Alice, I love cats too, the cat pictures you sent were lovely."),
        ("Alice", "Thanks! She sleeps all day."),
    ]
    for role, text in turns:
        host.record(session, SessionEvent(kind="user_message", role=role, text=text))
    found = search_episodes(host.db, "Which cat did Alice adopt?", limit=3)
    assert found[0][0].role == "Alice" and "adopted" in found[0][0].text


def test_a_long_turn_with_every_word_beats_a_short_one_with_fewer(host, monkeypatch):
    """BM25+ (Lv & Zhai 2011): plain BM25 shrinks a word's weight towards zero in a long
    turn, so a one-line turn holding two of the question's words outranked a long turn
    holding all three."""
    from opensage.plugins.graph_memory import episodes as ep

    filler = ["lunch was good today", "the weather is nice", "see you on monday", "thanks for the review",
              "the build is green again", "I will be out tomorrow"]
    for n, text in enumerate(filler):
        host.record(host.session(f"f{n}", source="test"), SessionEvent(kind="user_message", role="user", text=text))
    long_turn = ("I spent the whole afternoon going through the logs from last night, and after a lot of "
                 "digging through the scheduler output, the retries, the queue depth graphs and the alerts we "
                 "got from the monitoring side, it turns out the deploy job hit the timeout because the "
                 "migration step waited on a lock held by the nightly report, so I moved the report an hour "
                 "later and the script now finishes in four minutes")
    host.record(host.session("long", source="test"), SessionEvent(kind="user_message", role="user", text=long_turn))
    host.record(host.session("short", source="test"),
                SessionEvent(kind="user_message", role="user", text="deploy script"))
    question = "why did the deploy script hit the timeout?"
    assert search_episodes(host.db, question)[0][0].session_id == "long"
    if host.db.backend == "sqlite":  # the contrast is FTS5's own BM25 (PostgreSQL ranks with ts_rank)
        monkeypatch.setattr(ep, "BM25_PLUS_DELTA", 0.0)  # plain FTS5 BM25, for contrast
        assert search_episodes(host.db, question)[0][0].session_id == "short"
