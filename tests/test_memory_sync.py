"""``opensage memory push`` / ``pull`` (issue 16 item 3, must-show 4): lasting knowledge moves
between a local SQLite store and another store (the team store on PostgreSQL, or another
SQLite file) without losses, without duplicates, idempotently, and a node both sides hold in
different versions resolves by the documented rule (docs/team.md#moving-memory-between-stores).

The commands run as a user runs them (real subprocesses on real stores); the stores are
compared by identity — nodes by (type, label), edges by their end nodes' identities and
type, episodes by (session_id, seq) — never by row id, which differs between stores.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from opensage.host import Host
from opensage.plugins.graph_memory.sync import winner
from opensage.store import Database, Workspace
from opensage.types import SessionEvent

from conftest import db_snapshot, run_cli

DAY = 86400.0


# -- helpers -----------------------------------------------------------------------------------
def dump(db) -> dict:
    """Everything push/pull promises to carry, keyed by identity (any store with ``.conn``)."""
    conn = db.conn
    tags: dict[int, list[str]] = {}
    for node_id, tag in conn.execute("SELECT node_id, tag FROM node_tags").fetchall():
        tags.setdefault(node_id, []).append(tag)
    key = {}
    nodes = {}
    for r in conn.execute("SELECT id, type, label, content, metadata, created_at, updated_at, valid_from, valid_to,"
                          " superseded_by, session_id, source FROM nodes").fetchall():
        key[r[0]] = (r[1], r[2])
    for r in conn.execute("SELECT id, type, label, content, metadata, created_at, updated_at, valid_from, valid_to,"
                          " superseded_by, session_id, source FROM nodes").fetchall():
        nodes[(r[1], r[2])] = (r[3], json.loads(r[4]) if isinstance(r[4], str) else r[4], round(r[5], 3),
                               round(r[6], 3), r[7] and round(r[7], 3), r[8] and round(r[8], 3),
                               key.get(r[9]), r[10], r[11], sorted(tags.get(r[0], [])))
    edges = {(key[r[0]], r[2], key[r[1]]): (r[3], json.loads(r[4]) if isinstance(r[4], str) else r[4],
                                             round(r[5], 3), round(r[6], 3))
             for r in conn.execute("SELECT src, dst, type, weight, metadata, created_at, updated_at FROM edges").fetchall()}
    eps = {}
    ep_key = {}
    for r in conn.execute("SELECT id, session_id, seq, kind, role, tool, path, text, args, meta, timestamp,"
                          " compressed_at, provenance, modeled_at FROM episodes").fetchall():
        ep_key[r[0]] = (r[1], r[2])
        eps[(r[1], r[2])] = tuple(r[3:])
    links = sorted((key[r[0]], ep_key[r[1]]) for r in conn.execute(
        "SELECT node_id, episode_id FROM node_episodes").fetchall())
    return {"nodes": nodes, "edges": edges, "episodes": eps, "links": links}


def dump_path(path: Path) -> dict:
    db = Database(path)
    try:
        return dump(db)
    finally:
        db.close()


def store(project: Path) -> Path:
    return project / ".opencode" / "opensage.db"


def ok(r) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def counts(r) -> dict:
    """The --json report of a push/pull."""
    return json.loads(ok(r))


def build_source(project: Path) -> dict:
    """A store with every kind of row push/pull carries: decisions (one superseded by a later
    one), an error fixed by a later session (valid_to, superseded_by, a fixes edge), tags,
    edges with weights and metadata, a code graph, episodes with provenance links, session
    ids and sources."""
    host = Host(Workspace(project))
    try:
        t0 = time.time() - 3 * DAY
        s1 = host.session("s-err", source="claude")
        host.record(s1, SessionEvent(kind="user_message", role="user", text="Run the config loader tests please.",
                                     timestamp=t0))
        host.record(s1, SessionEvent(kind="tool_call", tool="bash", args={"command": "pytest -q tests/test_config.py"},
                                     timestamp=t0 + 1))
        host.record(s1, SessionEvent(kind="tool_result", tool="bash", meta={"exit_code": 1}, timestamp=t0 + 2,
                                     text="Traceback (most recent call last):\n  File \"src/config.py\", line 12\n"
                                          "KeyError: 'database_url'"))
        host.run_line("@memory-compress-session sessionId=s-err useModel=never")
        s2 = host.session("s-fix", source="cli")
        host.record(s2, SessionEvent(kind="user_message", role="user", text="Is the config loader working now?",
                                     timestamp=t0 + DAY))
        host.record(s2, SessionEvent(kind="assistant_message", role="assistant", timestamp=t0 + DAY + 1,
                                     text="I fixed the KeyError for database_url in load_config by reading a default."))
        host.run_line("@memory-compress-session sessionId=s-fix useModel=never")
        s3 = host.session("s-dec", source="opencode")
        host.run_line('@memory-add-node type=decision label="Use Postgres for the job queue"'
                      ' content="the queue lives in Postgres" tags=["db","queue"]', session=s3)
        host.run_line('@memory-add-node type=decision label="Switch the job queue to SQLite instead of Postgres"'
                      ' content="one file, no server" tags=["db"]', session=s3)
        host.run_line('@memory-add-node type=concept label="JobQueue" content="runs background jobs"'
                      ' metadata={"owner":"infra","nested":{"a":[1,2]}}')
        host.run_line('@memory-add-edge fromId="JobQueue" toId="Switch the job queue to SQLite instead of Postgres"'
                      ' type=depends_on weight=0.8 metadata={"why":"storage"}')
        (project / "pkg").mkdir()
        (project / "pkg" / "queue.py").write_text(
            "class JobQueue:\n    \"\"\"Runs background jobs.\"\"\"\n\n    def push(self, job):\n"
            "        return self.store(job)\n\n    def store(self, job):\n        return job\n")
        host.run_line("@memory-ingest path=pkg")
    finally:
        host.close()
    return dump_path(store(project))


@pytest.fixture
def source(tmp_path) -> tuple[Path, dict]:
    project = tmp_path / "alice"
    project.mkdir()
    return project, build_source(project)


def new_project(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    p.mkdir()
    return p


# -- SQLite <-> SQLite ---------------------------------------------------------------------------
def test_the_source_covers_every_kind_of_row(source):
    _project, d = source
    nodes = d["nodes"]
    assert any(v[5] is not None and v[6] is not None for v in nodes.values())  # superseded, with its replacement
    assert any(k[0] == "error" and v[5] is not None for k, v in nodes.items())  # an error fixed
    assert any(v[9] for v in nodes.values()) and any(v[7] for v in nodes.values()) and any(v[8] for v in nodes.values())
    assert any(k[0] == "method" for k in nodes) and any(t == "fixes" for _s, t, _d in d["edges"])
    assert d["episodes"] and d["links"] and len(d["edges"]) >= 5


def test_round_trip_through_another_sqlite_store_loses_and_duplicates_nothing(source, tmp_path):
    alice, before = source
    team = new_project(tmp_path, "team")
    bob = new_project(tmp_path, "bob")
    for attempt in (1, 2):
        pushed = counts(run_cli(alice, "--json", "memory", "push", "--to", str(team), "--episodes"))
        pulled = counts(run_cli(bob, "--json", "memory", "pull", "--from", f"sqlite://{store(team)}", "--episodes"))
        if attempt == 1:
            assert pushed["nodes"]["new"] == len(before["nodes"]) and pushed["edges"]["new"] == len(before["edges"])
            assert pushed["episodes"]["new"] == len(before["episodes"]) and pushed["links"] == len(before["links"])
            snapshots = (db_snapshot(team), db_snapshot(bob))
        else:  # the second run changes nothing and says so
            for c in (pushed, pulled):
                assert (c["new"], c["updated"]) == (0, 0), c
                assert c["nodes"]["unchanged"] == len(before["nodes"]) and c["edges"]["unchanged"] == len(before["edges"])
            assert (db_snapshot(team), db_snapshot(bob)) == snapshots
    assert dump_path(store(team)) == before
    assert dump_path(store(bob)) == before
    assert dump_path(store(alice)) == before  # push reads the source, never writes it
    # the copy is a working memory: found by search, its supersession and fix are honoured
    out = ok(run_cli(bob, "@memory-query", "query=job queue", "nodeType=decision", "maxResults=5"))
    assert ": 1 result" in out and "1. n" in out and "Switch the job queue to SQLite" in out.splitlines()[1]
    assert "Use Postgres for the job queue" in ok(run_cli(
        bob, "@memory-query", "query=job queue", "nodeType=decision", "includeSuperseded=true"))
    assert "KeyError" in ok(run_cli(bob, "@memory-query", "query=Run the config loader tests", "maxResults=3"))
    # a later local change goes up on the next push, and only it
    ok(run_cli(bob, "@memory-tag", "node=JobQueue", 'add=["infra"]'))
    c = counts(run_cli(bob, "--json", "memory", "push", "--to", str(team)))
    assert (c["new"], c["updated"], c["nodes"]["updated"]) == (0, 1, 1)
    assert dump_path(store(team))["nodes"][("concept", "JobQueue")][9] == ["infra"]
    c = counts(run_cli(alice, "--json", "memory", "pull", "--from", str(team)))
    assert (c["new"], c["updated"]) == (0, 1) and dump_path(store(alice)) == dump_path(store(team))


def test_second_run_says_so_in_words(source, tmp_path):
    alice, _ = source
    team = new_project(tmp_path, "team")
    first = ok(run_cli(alice, "memory", "push", "--to", str(team)))
    second = ok(run_cli(alice, "memory", "push", "--to", str(team)))
    assert first.startswith("pushed ") and " 0 new, 0 updated" not in first.splitlines()[0]
    assert second.splitlines()[0].endswith(": 0 new, 0 updated")
    assert "episodes: not copied" in second


def test_without_episodes_only_lasting_knowledge_moves(source, tmp_path):
    alice, before = source
    team = new_project(tmp_path, "team")
    c = counts(run_cli(alice, "--json", "memory", "push", "--to", str(team)))
    after = dump_path(store(team))
    assert c["episodes"] is None and after["episodes"] == {} and after["links"] == []
    assert after["nodes"] == before["nodes"] and after["edges"] == before["edges"]
    # episodes later: the provenance links that were missing are made then
    c = counts(run_cli(alice, "--json", "memory", "push", "--to", str(team), "--episodes"))
    assert (c["nodes"]["new"], c["episodes"]["new"], c["links"]) == (0, len(before["episodes"]), len(before["links"]))
    assert dump_path(store(team)) == before


def test_dry_run_writes_nothing(source, tmp_path):
    alice, before = source
    team = new_project(tmp_path, "team")
    ok(run_cli(team, "@memory-add-node", "type=concept", "label=Other"))
    snap = db_snapshot(team)
    c = counts(run_cli(alice, "--json", "memory", "push", "--to", str(team), "--episodes", "--dry-run"))
    assert c["dry_run"] and c["nodes"]["new"] == len(before["nodes"]) and c["episodes"]["new"] == len(before["episodes"])
    assert db_snapshot(team) == snap


# -- the conflict rule ---------------------------------------------------------------------------
def set_node(path: Path, label: str, **values) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for col, v in values.items():
            conn.execute(f"UPDATE nodes SET {col}=? WHERE label=?", (v, label))
    conn.close()


def two_versions(tmp_path: Path) -> tuple[Path, Path]:
    """Two stores holding the decision 'Cache in Redis' with different content and tags."""
    a, b = new_project(tmp_path, "a"), new_project(tmp_path, "b")
    ok(run_cli(a, "@memory-add-node", "type=decision", "label=Cache in Redis", "content=TTL 60 s", 'tags=["cache"]'))
    ok(run_cli(a, "@memory-add-node", "type=concept", "label=Redis"))
    ok(run_cli(a, "@memory-add-edge", "fromId=Cache in Redis", "toId=Redis", "type=uses", "weight=0.4"))
    ok(run_cli(b, "memory", "pull", "--from", str(a)))
    ok(run_cli(b, "@memory-add-node", "type=decision", "label=Cache in Redis", "content=TTL 300 s, measured",
               'tags=["cache","perf"]'))
    ok(run_cli(b, "@memory-add-edge", "fromId=Cache in Redis", "toId=Redis", "type=uses", "weight=0.9"))
    return a, b


def test_newer_version_wins_in_both_directions(tmp_path):
    a, b = two_versions(tmp_path)
    now = time.time()
    set_node(store(a), "Cache in Redis", updated_at=now - 100)
    set_node(store(b), "Cache in Redis", updated_at=now - 50)  # b's version is newer
    # pushing the older version keeps the newer one where it is
    c = counts(run_cli(a, "--json", "memory", "push", "--to", str(b)))
    assert (c["new"], c["updated"], c["nodes"]["kept"], c["edges"]["kept"]) == (0, 0, 1, 1)
    assert dump_path(store(b))["nodes"][("decision", "Cache in Redis")][0] == "TTL 300 s, measured"
    # pulling it replaces the older local version: content, tags, time; the same node (no duplicate)
    old_id = sqlite3.connect(store(a)).execute("SELECT id FROM nodes WHERE label='Cache in Redis'").fetchone()[0]
    c = counts(run_cli(a, "--json", "memory", "pull", "--from", str(b)))
    assert (c["new"], c["nodes"]["updated"], c["edges"]["updated"]) == (0, 1, 1)
    da, db_ = dump_path(store(a)), dump_path(store(b))
    assert da == db_
    assert da["nodes"][("decision", "Cache in Redis")][0] == "TTL 300 s, measured"
    assert da["nodes"][("decision", "Cache in Redis")][9] == ["cache", "perf"]
    assert da["edges"][(("decision", "Cache in Redis"), "uses", ("concept", "Redis"))][0] == 0.9
    rows = sqlite3.connect(store(a)).execute("SELECT id FROM nodes WHERE label='Cache in Redis'").fetchall()
    assert rows == [(old_id,)]
    found = ok(run_cli(a, "@memory-query", "query=measured", "maxResults=3"))  # the index follows the new content
    assert "Cache in Redis" in found
    for direction in ("push", "pull"):
        flag = "--to" if direction == "push" else "--from"
        c = counts(run_cli(a, "--json", "memory", direction, flag, str(b)))
        assert (c["new"], c["updated"], c["nodes"]["kept"]) == (0, 0, 0)


def test_a_tie_is_broken_the_same_way_whichever_side_pushes(tmp_path):
    a, b = two_versions(tmp_path)
    same = time.time() - 10
    set_node(store(a), "Cache in Redis", updated_at=same)
    set_node(store(b), "Cache in Redis", updated_at=same)
    a2, b2 = tmp_path / "a2", tmp_path / "b2"
    shutil.copytree(a, a2)
    shutil.copytree(b, b2)
    # the rule's answer for these two versions (larger SHA-256 of the compared data)
    from opensage.plugins.graph_memory.sync import _read_nodes

    da, dbb = (Database(store(p)) for p in (a2, b2))
    na = _read_nodes(da.conn)[("decision", "Cache in Redis")]
    nb = _read_nodes(dbb.conn)[("decision", "Cache in Redis")]
    da.close()
    dbb.close()
    w = winner(na.updated_at, na.data(), nb.updated_at, nb.data())
    assert w in ("source", "destination") and na.content != nb.content
    ok(run_cli(a, "memory", "push", "--to", str(b)))   # a's version offered to b
    ok(run_cli(b2, "memory", "push", "--to", str(a2)))  # b's version offered to a
    got_b = dump_path(store(b))["nodes"][("decision", "Cache in Redis")]
    got_a2 = dump_path(store(a2))["nodes"][("decision", "Cache in Redis")]
    assert got_b[0] == got_a2[0] and got_b[9] == got_a2[9]  # one winner, whoever offered it
    assert got_b[0] == (na.content if w == "source" else nb.content)


def test_winner_rule():
    assert winner(5.0, "x", 9.0, "x") == "same"
    assert winner(9.0, "x", 5.0, "y") == "source" and winner(5.0, "y", 9.0, "x") == "destination"
    assert winner(5.0, "x", 5.0004, "y") == winner(5.0, "x", 5.0, "y")  # compared to the millisecond
    tie = winner(5.0, "x", 5.0, "y")
    assert {tie, winner(5.0, "y", 5.0, "x")} == {"source", "destination"}  # symmetric


def test_pull_into_a_store_with_an_older_version(tmp_path):
    """The local store has an older version of a node the team store has since changed
    (superseded, new content and tags): pull brings the newer version into the same node."""
    team, mine = new_project(tmp_path, "team"), new_project(tmp_path, "mine")
    ok(run_cli(team, "@memory-add-node", "type=decision", "label=Deploy with Ansible", "content=playbooks in ops/"))
    ok(run_cli(mine, "memory", "pull", "--from", str(team)))
    time.sleep(0.01)  # so the team's change is later than the pulled copy (ms resolution)
    ok(run_cli(team, "@memory-add-node", "type=decision", "label=Deploy with Terraform instead of Ansible",
               "content=modules in infra/"))
    ok(run_cli(team, "@memory-supersede", "old=Deploy with Ansible", "new=Deploy with Terraform instead of Ansible"))
    ok(run_cli(team, "@memory-tag", "node=Deploy with Ansible", 'add=["legacy"]'))
    assert dump_path(store(mine))["nodes"][("decision", "Deploy with Ansible")][5] is None
    c = counts(run_cli(mine, "--json", "memory", "pull", "--from", str(team)))
    assert (c["nodes"]["new"], c["nodes"]["updated"], c["nodes"]["kept"]) == (1, 1, 0)
    got = dump_path(store(mine))
    assert got == dump_path(store(team))
    old = got["nodes"][("decision", "Deploy with Ansible")]
    assert old[5] is not None and old[6] == ("decision", "Deploy with Terraform instead of Ansible") and old[9] == ["legacy"]
    out = ok(run_cli(mine, "@memory-query", "query=deploy", "nodeType=decision"))
    assert "Terraform" in out and "Deploy with Ansible " not in out.replace("instead of Ansible", "")


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("url, why", [
    ("postgresql://alice:s3cr3t@db.example:notaport/team", "malformed"),
    ("mysql://alice:s3cr3t@db.example/team", "unknown scheme"),
    ("postgresql://alice:s3cr3t@/team", "names no server"),
    ("sqlite://alice:s3cr3t@host/x.db", "has no host"),
])
def test_a_malformed_url_is_a_usage_error_naming_it_without_the_password(source, url, why, tmp_path):
    alice, _ = source
    snap = db_snapshot(alice)
    for args in (("push", "--to", url), ("pull", "--from", url)):
        r = run_cli(alice, "memory", *args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert why in r.stderr and "alice:***@" in r.stderr and "s3cr3t" not in r.stderr + r.stdout
        assert "Traceback" not in r.stderr
    assert db_snapshot(alice) == snap


def test_no_team_store_named(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSAGE_DATABASE_URL", raising=False)
    p = new_project(tmp_path, "p")
    r = run_cli(p, "memory", "pull")
    assert r.returncode == 2 and "OPENSAGE_DATABASE_URL" in r.stderr
    assert not (p / ".opencode").exists()
    r = run_cli(p, "memory", "push", "--to", str(new_project(tmp_path, "team")))
    assert r.returncode == 2 and "nothing to push" in r.stderr
    r = run_cli(p, "memory", "pull", "--from", str(tmp_path / "missing.db"))
    assert r.returncode == 2 and "no SQLite store" in r.stderr
    assert not (p / ".opencode").exists()


def test_the_workspace_cannot_sync_with_itself(source):
    alice, _ = source
    r = run_cli(alice, "memory", "push", "--to", str(alice))
    assert r.returncode == 2 and "own local store" in r.stderr


# -- the team store on PostgreSQL ----------------------------------------------------------------
@pytest.fixture
def team_db(pg_url) -> str:
    """A fresh, empty team store, reached as the ordinary role owning it (conftest's
    ``pg_url``: a superuser would bypass row-level security, which the store refuses)."""
    return pg_url


def clone(tmp_path: Path, name: str, remote: str) -> Path:
    """A checkout whose ``origin`` is ``remote`` (its project key on the team store)."""
    p = new_project(tmp_path, name)
    (p / ".git").mkdir()
    (p / ".git" / "config").write_text(f'[remote "origin"]\n\turl = {remote}\n')
    return p


def team_dump(url: str, project: Path) -> dict:
    from opensage.pgstore import PostgresDatabase
    from opensage.store import project_key

    db = PostgresDatabase(url, project_key(Workspace(project)))
    try:
        return dump(db)
    finally:
        db.close_pool()


@pytest.fixture
def shop(tmp_path) -> tuple[Path, dict]:
    """Alice's checkout of acme/shop with a store holding every kind of row."""
    alice = clone(tmp_path, "alice", "git@github.com:acme/shop.git")
    return alice, build_source(alice)


def test_round_trip_sqlite_postgres_fresh_sqlite_twice(shop, team_db, tmp_path):
    """Must-show 4: SQLite -> PostgreSQL -> a fresh SQLite loses nothing and duplicates
    nothing, and running it all again changes nothing."""
    alice, before = shop
    bob = clone(tmp_path, "bob", "https://github.com/acme/shop")  # another URL form of the same repository
    for attempt in (1, 2):
        pushed = counts(run_cli(alice, "--json", "memory", "push", "--to", team_db, "--episodes"))
        pulled = counts(run_cli(bob, "--json", "memory", "pull", "--from", team_db, "--episodes"))
        if attempt == 1:
            assert pushed["nodes"]["new"] == len(before["nodes"]) and pushed["edges"]["new"] == len(before["edges"])
            assert pushed["episodes"]["new"] == len(before["episodes"]) and pushed["links"] == len(before["links"])
            assert (pulled["new"], pulled["updated"]) == (pushed["new"], 0)
            bob_snapshot = db_snapshot(bob)
        else:
            for c in (pushed, pulled):
                assert (c["new"], c["updated"], c["nodes"]["kept"], c["edges"]["kept"]) == (0, 0, 0, 0), c
            assert db_snapshot(bob) == bob_snapshot
        assert team_dump(team_db, alice) == before
    assert dump_path(store(bob)) == before
    out = ok(run_cli(bob, "memory", "push", "--to", team_db))
    assert out.splitlines()[0].endswith(": 0 new, 0 updated")


def test_pull_from_postgres_into_a_store_with_an_older_version(shop, team_db, tmp_path):
    alice, _ = shop
    bob = clone(tmp_path, "bob", "git@github.com:acme/shop.git")
    ok(run_cli(alice, "memory", "push", "--to", team_db))
    ok(run_cli(bob, "memory", "pull", "--from", team_db))
    bob_id = sqlite3.connect(store(bob)).execute("SELECT id FROM nodes WHERE label='JobQueue'").fetchone()[0]
    time.sleep(0.01)
    ok(run_cli(alice, "@memory-add-node", "type=concept", "label=JobQueue", "content=runs jobs with retries",
               'metadata={"owner":"platform"}'))
    ok(run_cli(alice, "@memory-tag", "node=JobQueue", 'set=["core"]'))
    c = counts(run_cli(alice, "--json", "memory", "push", "--to", team_db))
    assert (c["new"], c["updated"]) == (0, 1)
    c = counts(run_cli(bob, "--json", "memory", "pull", "--from", team_db))
    assert (c["new"], c["updated"], c["nodes"]["updated"]) == (0, 1, 1)
    got = dump_path(store(bob))["nodes"][("concept", "JobQueue")]
    assert got[0] == "runs jobs with retries" and got[1]["owner"] == "platform" and got[9] == ["core"]
    assert sqlite3.connect(store(bob)).execute("SELECT id FROM nodes WHERE label='JobQueue'").fetchall() == [(bob_id,)]
    assert dump_path(store(bob)) == team_dump(team_db, alice)
    mine, theirs = dump_path(store(bob)), dump_path(store(alice))  # alice has episodes besides
    assert (mine["nodes"], mine["edges"]) == (theirs["nodes"], theirs["edges"])


def test_other_projects_on_the_same_server_stay_apart(shop, team_db, tmp_path):
    alice, before = shop
    carol = clone(tmp_path, "carol", "git@github.com:acme/billing.git")
    ok(run_cli(carol, "@memory-add-node", "type=decision", "label=Invoices in EUR"))
    ok(run_cli(alice, "memory", "push", "--to", team_db))
    ok(run_cli(carol, "memory", "push", "--to", team_db))
    c = counts(run_cli(carol, "--json", "memory", "pull", "--from", team_db))
    assert (c["new"], c["updated"]) == (0, 0)
    assert set(dump_path(store(carol))["nodes"]) == {("decision", "Invoices in EUR")}
    assert team_dump(team_db, alice)["nodes"] == before["nodes"]


def test_an_unreachable_server_exits_1_naming_it_and_writes_nothing(source, tmp_path):
    import socket

    alice, _ = source
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://alice:s3cr3t@127.0.0.1:{port}/team"
    fresh = new_project(tmp_path, "fresh")
    snap = db_snapshot(alice)
    for project, args in ((alice, ("push", "--to", url)), (fresh, ("pull", "--from", url))):
        r = run_cli(project, "memory", *args, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"postgresql://alice:***@127.0.0.1:{port}/team" in r.stderr and "s3cr3t" not in r.stderr + r.stdout
        assert "Traceback" not in r.stderr
    assert db_snapshot(alice) == snap and not (fresh / ".opencode" / "opensage.db").exists()
    # the same through OPENSAGE_DATABASE_URL, with the password as libpq's URL parameter
    r = run_cli(fresh, "memory", "pull", env={"OPENSAGE_DATABASE_URL": f"postgresql://alice@127.0.0.1:{port}/team"
                                                                      "?password=s3cr3t"}, timeout=60)
    assert r.returncode == 1 and "password=***" in r.stderr and "s3cr3t" not in r.stderr + r.stdout
    assert not (fresh / ".opencode" / "opensage.db").exists()


def test_jsonl_export_and_import_work_on_postgres(team_db, tmp_path):
    """``opensage memory import/export`` give the same JSONL on the team store as on SQLite."""
    lines = [
        {"type": "entity", "name": "Alice_Smith", "entityType": "person", "observations": ["owns billing", "on call"]},
        {"type": "entity", "name": "BillingService", "entityType": "service", "observations": ["charges cards"]},
        {"type": "relation", "from": "Alice_Smith", "to": "BillingService", "relationType": "worksOn"},
    ]
    src = tmp_path / "memory.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    local = new_project(tmp_path, "local")
    team = clone(tmp_path, "team", "git@github.com:acme/crm.git")
    env = {"OPENSAGE_DATABASE_URL": team_db}
    assert "imported 2 entities" in ok(run_cli(local, "memory", "import", str(src)))
    assert "imported 2 entities" in ok(run_cli(team, "memory", "import", str(src), env=env))
    on_sqlite = ok(run_cli(local, "memory", "export"))
    on_pg = ok(run_cli(team, "memory", "export", env=env))
    assert on_pg == on_sqlite and [json.loads(x) for x in on_pg.splitlines()] == lines
    # the rows are on the server, none in a local file
    assert {("entity", "Alice_Smith"), ("entity", "BillingService")} <= set(team_dump(team_db, team)["nodes"])
    assert not store(team).exists() or dump_path(store(team))["nodes"] == {}
    # importing again merges into the same entities (no duplicates) on both
    ok(run_cli(team, "memory", "import", str(src), env=env))
    assert ok(run_cli(team, "memory", "export", env=env)) == on_pg
    # and what JSONL put on the team store pulls into a fresh local store
    fresh = clone(tmp_path, "fresh", "https://github.com/acme/crm.git")
    ok(run_cli(fresh, "memory", "pull", "--from", team_db))
    assert ok(run_cli(fresh, "memory", "export")) == on_sqlite


def test_a_row_the_team_store_refuses_writes_nothing(tmp_path, team_db):
    """All or nothing: text PostgreSQL cannot hold (a NUL character) stops the whole push
    with a clear error, exit 1, and the team store stays empty."""
    alice = clone(tmp_path, "alice", "git@github.com:acme/nul.git")
    host = Host(Workspace(alice))
    try:
        for i in range(30):
            host.run("memory-add-node", {"type": "concept", "label": f"Fine{i}", "content": "plain text"})
    finally:
        host.close()
    set_node(store(alice), "Fine17", content="before\x00after")
    r = run_cli(alice, "memory", "push", "--to", team_db)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nothing was written" in r.stderr and "Traceback" not in r.stderr
    assert team_dump(team_db, alice)["nodes"] == {}


def test_episodes_are_a_log_never_rewritten(tmp_path):
    """The same (session_id, seq) with another text stays as the receiving store has it
    (counted as conflicting, its provenance links not copied); one only compressed on the
    sending side gets the compression marks."""
    a, b = new_project(tmp_path, "a"), new_project(tmp_path, "b")
    for project, text in ((a, "We decided to use Terraform for deploys."), (b, "Something else entirely.")):
        host = Host(Workspace(project))
        try:
            s = host.session("shared-id", source="cli")
            host.record(s, SessionEvent(kind="user_message", role="user", text=text, timestamp=1_700_000_000.0))
            host.record(s, SessionEvent(kind="user_message", role="user", text="Thanks, that is all for today.",
                                        timestamp=1_700_000_001.0))
            if project == a:
                host.run_line("@memory-compress-session sessionId=shared-id useModel=never")
        finally:
            host.close()
    before_b = dump_path(store(b))
    c = counts(run_cli(a, "--json", "memory", "push", "--to", str(b), "--episodes"))
    assert c["episodes"] == {"new": 0, "updated": 1, "unchanged": 0, "kept": 1}
    after = dump_path(store(b))
    assert after["episodes"][("shared-id", 1)] == before_b["episodes"][("shared-id", 1)]  # not rewritten
    seq2 = after["episodes"][("shared-id", 2)]
    assert seq2[8] is not None and before_b["episodes"][("shared-id", 2)][8] is None  # compressed_at filled
    linked = {ep for _node, ep in after["links"]}
    assert ("shared-id", 1) in {ep for _node, ep in dump_path(store(a))["links"]}  # the decision's provenance
    assert ("shared-id", 1) not in linked  # links to the conflicting episode are not copied
    assert any(k[0] == "decision" for k in after["nodes"])  # the node itself moved
    c = counts(run_cli(a, "--json", "memory", "push", "--to", str(b), "--episodes"))
    assert (c["new"], c["updated"], c["episodes"]["kept"]) == (0, 0, 1)


def test_two_clones_pushing_at_once_leave_one_copy_of_each_node(tmp_path, team_db):
    """Two machines push overlapping memory at the same moment: the team store's writer lock
    runs the copies one after the other, so both succeed, nothing is duplicated, and the
    node both pushed holds the newer version."""
    import subprocess
    import sys

    alice = clone(tmp_path, "alice", "git@github.com:acme/duo.git")
    bob = clone(tmp_path, "bob", "https://github.com/acme/duo")
    for who in (alice, bob):
        host = Host(Workspace(who))
        try:
            for i in range(40):
                host.run("memory-add-node", {"type": "concept", "label": f"Shared{i}", "content": f"from {who.name}"})
            host.run("memory-add-node", {"type": "concept", "label": f"Only{who.name}"})
        finally:
            host.close()
    set_node(store(alice), "Shared7", updated_at=time.time() + 60)  # alice's Shared7 is the newest version
    procs = [subprocess.Popen([sys.executable, "-m", "opensage", "--workspace", str(p), "--json", "memory", "push",
                               "--to", team_db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in (alice, bob)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reports = [json.loads(out) for out, _err in outs]
    assert sorted(r["nodes"]["new"] for r in reports) == [1, 41]  # whoever came second added only its own node
    got = team_dump(team_db, alice)["nodes"]
    assert len(got) == 42 and {("concept", "Onlyalice"), ("concept", "Onlybob")} <= set(got)
    assert got[("concept", "Shared7")][0] == "from alice"
    rows = sqlite3.connect(store(alice)).execute("SELECT count(*) FROM nodes").fetchone()[0]
    assert rows == 41  # pushing never writes the pushing side
