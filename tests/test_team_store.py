"""The team store itself (issue 16): choosing it, projects, concurrent writers, translation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opensage.errors import UsageError
from opensage.pgdialect import UnsupportedSQL, fts5_to_tsquery, translate
from opensage.store import Workspace, database_url, open_database, project_key

REPO = Path(__file__).resolve().parent.parent


def test_project_key_follows_the_origin_remote_whatever_its_form(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSAGE_PROJECT", raising=False)
    keys = []
    for n, url in enumerate(["git@github.com:Acme/api.git", "https://github.com/Acme/api",
                             "ssh://git@github.com:22/Acme/api.git/"]):
        root = tmp_path / f"clone{n}"
        (root / ".git").mkdir(parents=True)
        (root / ".git" / "config").write_text(f'[remote "origin"]\n\turl = {url}\n')
        keys.append(project_key(Workspace(root)))
    assert keys == ["github.com/Acme/api"] * 3
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    assert project_key(Workspace(lonely)).startswith("local:") and str(lonely) in project_key(Workspace(lonely))
    monkeypatch.setenv("OPENSAGE_PROJECT", "team/explicit")
    assert project_key(Workspace(lonely)) == "team/explicit"


def test_a_cloned_projects_config_cannot_choose_the_server(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSAGE_DATABASE_URL", raising=False)
    root = tmp_path / "cloned"
    (root / ".opencode").mkdir(parents=True)
    (root / ".opencode" / "opensage.yaml").write_text("team:\n  database_url: postgresql://evil.example:5432/loot\n")
    ws = Workspace(root)
    with pytest.raises(UsageError, match="not trusted|have not trusted"):
        database_url(ws)
    with pytest.raises(UsageError):
        open_database(ws)
    assert not (root / ".opencode" / "opensage.db").exists()  # nothing opened, nothing written
    user = tmp_path / "user.yaml"
    user.write_text("team:\n  trusted_databases: ['evil.example:5432/loot']\n")
    monkeypatch.setenv("OPENSAGE_CONFIG", str(user))
    assert database_url(ws) == "postgresql://evil.example:5432/loot"
    (root / ".opencode" / "opensage.yaml").write_text("team:\n  database_url: postgresql://u:pw@evil.example:5432/loot\n")
    with pytest.raises(UsageError, match="password"):
        database_url(ws)


def test_cli_says_which_server_is_down_without_its_password(project, cli):
    r = cli("@memory-query", "query=anything",
            env={"OPENSAGE_DATABASE_URL": "postgresql://alice:s3cret@127.0.0.1:1/team"})
    assert r.returncode == 1
    assert "postgresql://alice:***@127.0.0.1:1/team" in r.stderr and "s3cret" not in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    r = cli("@memory-query", "query=anything", env={"OPENSAGE_DATABASE_URL": "mysql://x@h/db"})
    assert r.returncode == 2 and "postgresql://" in r.stderr


def test_translation_of_the_sqlite_dialect():
    t = translate("INSERT OR IGNORE INTO node_tags(tag, node_id) VALUES (?,?)")
    assert t.sql.endswith("ON CONFLICT DO NOTHING") and "%s" in t.sql
    t = translate("SELECT id FROM nodes WHERE label LIKE ? ESCAPE '\\' AND source IS NOT 'ingest' ORDER BY label")
    assert "ILIKE" in t.sql and "IS DISTINCT FROM 'ingest'" in t.sql and "NULLS FIRST" in t.sql
    t = translate("INSERT INTO nodes(type, label, content, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?)")
    assert t.returning_id and t.sql.endswith("RETURNING id")
    t = translate("SELECT rowid, bm25(nodes_fts, 4.0, 2.0, 1.0) FROM nodes_fts WHERE nodes_fts MATCH ? LIMIT 5")
    assert "ts_rank('{0, 0.25, 0.5, 1}'" in t.sql and t.plan == (("tsquery", 0, "nodes_fts"),) * 2
    assert translate("SELECT '100%' FROM nodes WHERE id = ?").sql == "SELECT '100%%' FROM nodes WHERE id = %s"
    for bad in ("PRAGMA journal_mode=WAL", "INSERT OR REPLACE INTO nodes(type, label) VALUES (?, ?)",
                "SELECT 1 FROM nodes WHERE nodes MATCH ?"):
        with pytest.raises(UnsupportedSQL):
            translate(bad)
    assert fts5_to_tsquery('"retry" OR "budget"') == "retry | budget"
    assert fts5_to_tsquery('label : "parse config"', "nodes_fts") == "(parse:A <-> config:A)"
    assert fts5_to_tsquery("'); DROP TABLE nodes; --") == "DROP & TABLE & nodes"


def test_eight_writers_on_two_projects_lose_nothing_and_stay_apart(pg_server):
    """bench/team_concurrency.py at a small size: every node and event once, and a role
    granted one project is refused the other's rows."""
    r = subprocess.run([sys.executable, str(REPO / "bench" / "team_concurrency.py"), "--admin-url",
                        pg_server.admin_url, "--procs", "8", "--nodes", "25", "--events", "25"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["all_present_no_duplicates"] is True and result["isolation"] is True
    assert "refused / refused / refused" in r.stdout


def test_any_match_expression_becomes_a_valid_tsquery(pg_url):
    """Whatever text reaches MATCH (a user's query words, operators, stray quotes and
    parentheses), PostgreSQL accepts the tsquery it becomes: a search never fails on syntax."""
    import random

    import psycopg

    tokens = ['"retry"', "budget", "OR", "AND", "NOT", "(", ")", '"parse config"', "conf*", '"', "'", ":", "*",
              "label :", "x:y", "a-b", "don't", "%", "\\", "é"]
    rng = random.Random(5)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for _ in range(300):
            expr = " ".join(rng.choice(tokens) for _ in range(rng.randint(1, 7)))
            conn.execute("SELECT to_tsquery('english', %s)", (fts5_to_tsquery(expr, "nodes_fts"),))


def test_a_session_records_who_ran_it(host):
    """Episodes on a shared store say whose session they came from (user, machine, host program)."""
    import getpass
    import socket

    host.session("s-who", source="claude")
    row = host.db.conn.execute("SELECT source, meta FROM sessions WHERE id=?", ("s-who",)).fetchone()
    meta = json.loads(row[1])
    assert row[0] == "claude" and meta == {"user": getpass.getuser(), "machine": socket.gethostname()}
