"""The Markdown mirror: export, a person's edits, import (issue 17 item 4, must-show 2)."""

from __future__ import annotations

import json
import re

import pytest

from opensage.plugins.graph_memory.graph import graph_for
from opensage.plugins.graph_memory.markdown import node_tags

from conftest import db_snapshot


def _seed(project, cli):
    """Three lasting nodes (two decisions, an error) linked, plus one code node from ingest."""
    g = {}
    for type_, label, content in [
        ("decision", "Use JWT for the API", "We sign tokens with ES256."),
        ("error", "login fails after restart", "KeyError: 'session' in auth.py"),
        ("decision", "Keep sessions in Redis", "Redis is already deployed."),
    ]:
        r = cli("--json", "@memory-add-node", f"type={type_}", f"label={label}", f"content={content}")
        assert r.returncode == 0, r.stderr
        g[label] = json.loads(r.stdout)["id"]
    r = cli("@memory-add-edge", f"fromId={g['Use JWT for the API']}", f"toId={g['login fails after restart']}",
            "type=fixes")
    assert r.returncode == 0, r.stderr
    (project / "mod.py").write_text("def helper():\n    return 1\n")
    assert cli("@memory-ingest", f"path={project / 'mod.py'}").returncode == 0
    return g


def _files(folder):
    return {p.name: p for p in folder.glob("*.md")}


def _node(project, ref):
    from opensage.host import Host
    from opensage.store import Workspace

    h = Host(Workspace(project))
    try:
        return graph_for(h).resolve(ref)
    finally:
        h.close()


def test_markdown_round_trip_applies_exactly_the_edits_and_is_idempotent(project, cli, tmp_path):
    ids = _seed(project, cli)
    mirror = tmp_path / "notes"
    r = cli("memory", "export", "--markdown", str(mirror))
    assert r.returncode == 0, r.stderr
    assert "wrote 3 node files" in r.stdout  # the code graph of @memory-ingest is not mirrored
    files = _files(mirror)
    jwt_file = next(p for n, p in files.items() if n.startswith("use-jwt-for-the-api-"))
    redis_file = next(p for n, p in files.items() if n.startswith("keep-sessions-in-redis-"))
    text = jwt_file.read_text()
    assert text.startswith("---\nid: " + ids["Use JWT for the API"] + "\ntype: decision\n")
    assert "We sign tokens with ES256." in text
    assert re.search(r"- fixes \[\[login-fails-after-restart-n\d+\|login fails after restart\]\]", text)

    # nothing edited: import changes nothing
    before = db_snapshot(project)
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("0 updated, 0 created, 3 unchanged")
    assert db_snapshot(project) == before

    # a person edits two files and writes a third by hand
    jwt_file.write_text(text.replace("We sign tokens with ES256.", "We sign tokens with EdDSA since May.")
                        .replace("tags: []", "tags: [auth, api]"))
    redis_text = redis_file.read_text().replace("tags: []", "tags: [infra]")
    redis_file.write_text(redis_text.rstrip("\n") + "\n\n## Relations\n- depends_on [[redis-outage]]\n")
    (mirror / "redis-outage.md").write_text(
        "---\ntype: error\ntags: [infra]\n---\nRedis was down for an hour on 3 May.\n")
    untouched = {p.name: p.read_text() for p in files.values() if p not in (jwt_file, redis_file)}

    before = db_snapshot(project)
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("2 updated, 1 created, 1 unchanged, 0 stale, 0 conflicts, 0 errors"), r.stdout
    jwt = _node(project, ids["Use JWT for the API"])
    assert jwt.content == "We sign tokens with EdDSA since May."
    assert node_tags(jwt) == ["api", "auth"]
    outage = _node(project, "redis-outage")
    assert outage.type == "error" and outage.content == "Redis was down for an hour on 3 May."
    assert node_tags(outage) == ["infra"]
    redis = _node(project, ids["Keep sessions in Redis"])
    assert node_tags(redis) == ["infra"] and redis.content == "Redis is already deployed."
    after = db_snapshot(project)
    # exactly those changes: one node more, one edge more, and only the two edited nodes changed
    assert len(after["nodes"]) == len(before["nodes"]) + 1
    assert len(after["edges"]) == len(before["edges"]) + 1
    changed = {json.loads(r)[0] for r in set(after["nodes"]) - set(before["nodes"])}
    assert changed == {jwt.id, redis.id, outage.id}
    new_edges = [json.loads(e) for e in set(after["edges"]) - set(before["edges"])]
    assert [(e[1], e[2], e[3]) for e in new_edges] == [(redis.id, outage.id, "depends_on")]
    assert {p.name: p.read_text() for p in files.values() if p not in (jwt_file, redis_file)} == untouched

    # the second run changes nothing
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("0 updated, 0 created, 4 unchanged"), r.stdout
    assert db_snapshot(project) == after

    # exporting again keeps the hand-written file's name (no second file for that node)
    r = cli("memory", "export", "--markdown", str(mirror))
    assert r.returncode == 0 and "wrote 4 node files" in r.stdout, r.stdout + r.stderr
    assert len(list(mirror.glob("*.md"))) == 4
    assert (mirror / "redis-outage.md").read_text().startswith(f"---\nid: {outage.ref}\ntype: error\n")
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.stdout.startswith("0 updated, 0 created, 4 unchanged"), r.stdout
    assert db_snapshot(project) == after


def test_markdown_conflict_is_reported_and_nothing_is_lost(project, cli, tmp_path):
    ids = _seed(project, cli)
    mirror = tmp_path / "notes"
    assert cli("memory", "export", "--markdown", str(mirror)).returncode == 0
    jwt_file = next(p for p in mirror.glob("use-jwt-for-the-api-*.md"))
    jwt_file.write_text(jwt_file.read_text().replace("ES256", "RS256 (file)"))
    # the node changes in memory too
    r = cli("@memory-add-node", "type=decision", "label=Use JWT for the API", "content=ES512 (memory)")
    assert r.returncode == 0, r.stderr
    before = db_snapshot(project)
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 1
    assert "1 conflicts" in r.stdout and "changed both in memory and in the file" in r.stdout
    assert db_snapshot(project) == before
    assert _node(project, ids["Use JWT for the API"]).content == "ES512 (memory)"
    assert "RS256 (file)" in jwt_file.read_text()  # the person's edit is still there
    # export refuses to overwrite the unimported edit
    r = cli("memory", "export", "--markdown", str(mirror))
    assert r.returncode == 2 and "edits not imported yet" in r.stderr
    assert "RS256 (file)" in jwt_file.read_text()


def test_markdown_stale_file_keeps_memory(project, cli, tmp_path):
    ids = _seed(project, cli)
    mirror = tmp_path / "notes"
    assert cli("memory", "export", "--markdown", str(mirror)).returncode == 0
    assert cli("@memory-add-node", "type=decision", "label=Use JWT for the API", "content=newer").returncode == 0
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 0 and "1 stale" in r.stdout
    assert _node(project, ids["Use JWT for the API"]).content == "newer"


@pytest.mark.parametrize("body, message", [
    ("no front matter here\n", "no front matter"),
    ("---\ntype: [unclosed\n---\nx\n", "not valid YAML"),
    ("---\ntype: Bad Type\n---\nx\n", "node type"),
    ("---\ntype: note\ntags: ['has space']\n---\nx\n", "tag 'has space' is not valid"),
    ("---\ntype: note\n---\nx\n\n## Relations\n- fixes nothing\n", "is not '- <edge type> [[target]]'"),
    ("---\ntype: note\n---\nx\n\n## Relations\n- fixes [[no-such-node]]\n", "no-such-node"),
])
def test_markdown_bad_file_is_reported_and_changes_nothing(project, cli, tmp_path, body, message):
    _seed(project, cli)
    mirror = tmp_path / "notes"
    assert cli("memory", "export", "--markdown", str(mirror)).returncode == 0
    (mirror / "hand.md").write_text(body)
    before = db_snapshot(project)
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 1
    assert "1 errors" in r.stdout and message in r.stdout, r.stdout
    assert db_snapshot(project) == before


def test_markdown_usage_errors(project, cli, tmp_path):
    r = cli("memory", "import")
    assert r.returncode == 2 and "either PATH" in r.stderr
    r = cli("memory", "import", "--markdown", str(tmp_path / "missing"))
    assert r.returncode == 2 and "is not a folder" in r.stderr


def test_markdown_relation_removed_and_file_deleted(project, cli, tmp_path):
    ids = _seed(project, cli)
    mirror = tmp_path / "notes"
    assert cli("memory", "export", "--markdown", str(mirror)).returncode == 0
    jwt_file = next(mirror.glob("use-jwt-for-the-api-*.md"))
    text = jwt_file.read_text()
    jwt_file.write_text(re.sub(r"\n## Relations\n- fixes .*\n", "\n", text))
    redis_file = next(mirror.glob("keep-sessions-in-redis-*.md"))
    redis_file.unlink()
    r = cli("memory", "import", "--markdown", str(mirror))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "relations" in r.stdout and "file removed; " + ids["Keep sessions in Redis"] + " stays in memory" in r.stdout
    from opensage.host import Host
    from opensage.store import Workspace

    h = Host(Workspace(project))
    try:
        g = graph_for(h)
        assert g.edges_of(g.resolve(ids["Use JWT for the API"]).id, "out") == []
        assert g.resolve(ids["Keep sessions in Redis"]).content == "Redis is already deployed."
    finally:
        h.close()
