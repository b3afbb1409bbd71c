"""The reference memory server's tools over our graph, and its JSONL import/export.

Each case follows the documented behaviour of ``@modelcontextprotocol/server-memory``
(``src/memory/index.ts``): result shapes, skip-on-duplicate, not-found errors.
"""

from __future__ import annotations

import json

import pytest

from opensage.errors import NotFoundError, UsageError
from opensage.plugins.graph_memory.memory_compat import COMPAT_TOOLS, compat_for, export_jsonl, import_jsonl, relation_edge_type
from tests.conftest import db_snapshot


def call(host, name, **arguments):
    return COMPAT_TOOLS[name].run(compat_for(host), arguments)[1]


ALICE = {"name": "Alice", "entityType": "person", "observations": ["likes tea", "works remotely"]}
ACME = {"name": "Acme", "entityType": "organization", "observations": ["makes anvils"]}


def test_create_entities_returns_only_new_and_skips_existing_names(host):
    first = call(host, "create_entities", entities=[ALICE, ACME])
    assert first == {"entities": [ALICE, ACME]}
    again = call(host, "create_entities", entities=[{**ALICE, "entityType": "robot"},
                                                     {"name": "Bob", "entityType": "person", "observations": []},
                                                     {"name": "Bob", "entityType": "dup", "observations": []}])
    assert again == {"entities": [{"name": "Bob", "entityType": "person", "observations": []}]}
    graph = call(host, "read_graph")
    assert [e["name"] for e in graph["entities"]] == ["Alice", "Acme", "Bob"]
    assert graph["entities"][0]["entityType"] == "person"  # not overwritten by the skipped duplicate


def test_create_relations_skips_duplicates_and_accepts_missing_entities_like_the_reference(host, project):
    call(host, "create_entities", entities=[ALICE, ACME])
    rel = {"from": "Alice", "to": "Acme", "relationType": "works at"}
    assert call(host, "create_relations", relations=[rel, rel]) == {"relations": [rel]}
    assert call(host, "create_relations", relations=[rel]) == {"relations": []}
    dangling = {"from": "Alice", "to": "Nobody", "relationType": "knows"}
    assert call(host, "create_relations", relations=[dangling]) == {"relations": [dangling]}
    graph = call(host, "read_graph")
    assert [e["name"] for e in graph["entities"]] == ["Alice", "Acme"]  # Nobody is no entity...
    assert graph["relations"] == [rel, dangling]  # ...but the relation is kept, as the reference keeps it
    assert call(host, "open_nodes", names=["Nobody"]) == {"entities": [], "relations": []}
    with pytest.raises(NotFoundError, match="Entity with name Nobody not found"):
        call(host, "add_observations", observations=[{"entityName": "Nobody", "contents": ["x"]}])
    # creating Nobody later attaches the relation to it; it is the newest entity
    nobody = {"name": "Nobody", "entityType": "person", "observations": []}
    assert call(host, "create_entities", entities=[nobody]) == {"entities": [nobody]}
    assert call(host, "open_nodes", names=["Nobody"]) == {"entities": [nobody], "relations": [dangling]}
    # deleting a name no entity has removes the relations naming it, and nothing stays behind
    call(host, "create_relations", relations=[{"from": "Ghost", "to": "Acme", "relationType": "haunts"}])
    assert call(host, "delete_entities", entityNames=["Ghost"])["success"] is True
    assert call(host, "read_graph")["relations"] == [rel, dangling]
    assert host.db.conn.execute("SELECT count(*) FROM nodes WHERE label='Ghost'").fetchone()[0] == 0


def test_relation_types_round_trip_verbatim_even_when_their_edge_types_collide(host):
    call(host, "create_entities", entities=[ALICE, ACME])
    rels = [{"from": "Alice", "to": "Acme", "relationType": "worksAt"},
            {"from": "Alice", "to": "Acme", "relationType": "works at"}]
    assert call(host, "create_relations", relations=rels) == {"relations": rels}
    assert call(host, "read_graph")["relations"] == rels
    assert relation_edge_type("worksAt") == relation_edge_type("works at") == "works_at"
    edge_types = {r["type"] for r in host.db.conn.execute("SELECT type FROM edges")}
    assert len(edge_types) == 2 and "works_at" in edge_types


def test_add_observations_returns_only_added_and_fails_for_missing_entity(host, project):
    call(host, "create_entities", entities=[ALICE])
    out = call(host, "add_observations", observations=[{"entityName": "Alice", "contents": ["likes tea", "plays chess"]}])
    assert out == {"results": [{"entityName": "Alice", "addedObservations": ["plays chess"]}]}
    before = db_snapshot(project)
    with pytest.raises(NotFoundError, match="Entity with name Ghost not found"):
        call(host, "add_observations", observations=[{"entityName": "Alice", "contents": ["x"]},
                                                     {"entityName": "Ghost", "contents": ["boo"]}])
    assert db_snapshot(project) == before
    alice = call(host, "open_nodes", names=["Alice"])["entities"][0]
    assert alice["observations"] == ["likes tea", "works remotely", "plays chess"]


def test_delete_entities_removes_their_relations(host):
    call(host, "create_entities", entities=[ALICE, ACME, {"name": "Bob", "entityType": "person", "observations": []}])
    call(host, "create_relations", relations=[{"from": "Alice", "to": "Acme", "relationType": "works at"},
                                              {"from": "Bob", "to": "Alice", "relationType": "knows"}])
    out = call(host, "delete_entities", entityNames=["Alice", "Zed"])
    assert out == {"success": True, "message": "Deleted 1 of 2 entities. Not found: Zed"}
    graph = call(host, "read_graph")
    assert [e["name"] for e in graph["entities"]] == ["Acme", "Bob"]
    assert graph["relations"] == []
    assert call(host, "delete_entities", entityNames=["Bob"])["message"] == "Entities deleted successfully"


def test_delete_observations_and_relations_report_like_the_reference(host):
    call(host, "create_entities", entities=[ALICE, ACME])
    call(host, "create_relations", relations=[{"from": "Alice", "to": "Acme", "relationType": "works at"}])
    out = call(host, "delete_observations", deletions=[{"entityName": "Alice", "observations": ["likes tea"]}])
    assert out == {"success": True, "message": "Observations deleted successfully"}
    out = call(host, "delete_observations", deletions=[{"entityName": "Ghost", "observations": ["x"]}])
    assert out["message"] == "Deleted 0 of 1 observations. Entities not found: Ghost"
    assert call(host, "open_nodes", names=["Alice"])["entities"][0]["observations"] == ["works remotely"]
    out = call(host, "delete_relations", relations=[{"from": "Alice", "to": "Acme", "relationType": "works at"},
                                                    {"from": "Alice", "to": "Acme", "relationType": "owns"}])
    assert out == {"success": True, "message": "Deleted 1 of 2 relations. The rest matched nothing."}
    assert call(host, "read_graph")["relations"] == []


def test_search_nodes_is_case_insensitive_substring_over_name_type_and_observations(host):
    call(host, "create_entities", entities=[ALICE, ACME, {"name": "Bob", "entityType": "person", "observations": []}])
    call(host, "create_relations", relations=[{"from": "Alice", "to": "Acme", "relationType": "works at"},
                                              {"from": "Bob", "to": "Alice", "relationType": "knows"}])
    by_obs = call(host, "search_nodes", query="ANVIL")
    assert [e["name"] for e in by_obs["entities"]] == ["Acme"]
    # every relation touching a returned entity comes back
    assert by_obs["relations"] == [{"from": "Alice", "to": "Acme", "relationType": "works at"}]
    by_type = call(host, "search_nodes", query="Person")
    assert [e["name"] for e in by_type["entities"]] == ["Alice", "Bob"]
    assert len(by_type["relations"]) == 2
    assert call(host, "search_nodes", query="nothing-like-this") == {"entities": [], "relations": []}


def test_open_nodes_skips_unknown_names(host):
    call(host, "create_entities", entities=[ALICE, ACME])
    call(host, "create_relations", relations=[{"from": "Alice", "to": "Acme", "relationType": "works at"}])
    out = call(host, "open_nodes", names=["Acme", "Nope"])
    assert out == {"entities": [ACME], "relations": [{"from": "Alice", "to": "Acme", "relationType": "works at"}]}


def test_nodes_added_by_commands_are_visible_as_entities(host):
    host.run("memory-add-node", {"type": "decision", "label": "UseJWT", "content": "tokens are RS256 JWTs"})
    graph = call(host, "read_graph")
    assert graph["entities"] == [{"name": "UseJWT", "entityType": "decision", "observations": ["tokens are RS256 JWTs"]}]
    call(host, "add_observations", observations=[{"entityName": "UseJWT", "contents": ["rotated weekly"]}])
    node = host.db.conn.execute("SELECT content FROM nodes WHERE label='UseJWT'").fetchone()
    assert node["content"] == "tokens are RS256 JWTs\nrotated weekly"


def test_entities_are_found_by_memory_query(host):
    call(host, "create_entities", entities=[ALICE])
    out = host.run("memory-query", {"query": "remotely"})
    assert "Alice" in out.text


def test_bad_arguments_name_the_field(host):
    with pytest.raises(UsageError, match=r"entities\[0\]\.entityType"):
        call(host, "create_entities", entities=[{"name": "X", "observations": []}])
    with pytest.raises(UsageError, match="relations"):
        call(host, "create_relations")


def test_jsonl_round_trip(host, tmp_path):
    call(host, "create_entities", entities=[ALICE, ACME])
    call(host, "create_relations", relations=[{"from": "Alice", "to": "Acme", "relationType": "worksAt"}])
    text = export_jsonl(compat_for(host))
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines == [{"type": "entity", **ALICE}, {"type": "entity", **ACME},
                     {"type": "relation", "from": "Alice", "to": "Acme", "relationType": "worksAt"}]
    from opensage.host import Host
    from opensage.store import Workspace

    other_root = tmp_path / "other"
    other_root.mkdir()
    other = Host(Workspace(other_root))
    try:
        counts = import_jsonl(compat_for(other), text)
        assert counts == {"entities": 2, "observations": 3, "relations": 1, "skipped": 0}
        assert export_jsonl(compat_for(other)) == text
        assert import_jsonl(compat_for(other), text) == {"entities": 0, "observations": 0, "relations": 0, "skipped": 0}
    finally:
        other.close()


def test_cli_import_export_and_bad_line(cli, project, tmp_path):
    src = tmp_path / "memory.jsonl"
    src.write_text(
        json.dumps({"type": "entity", **ALICE}) + "\n" + json.dumps({"type": "entity", **ACME}) + "\n"
        + json.dumps({"type": "relation", "from": "Alice", "to": "Acme", "relationType": "works at"}) + "\n"
    )
    r = cli("memory", "import", str(src))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "imported 2 entities, 3 observations, 1 relations"
    r = cli("memory", "export")
    assert r.returncode == 0
    assert r.stdout == src.read_text()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"type": "entity", "name": "Zed", "entityType": "x", "observations": []}) + "\n{oops\n")
    before = db_snapshot(project)
    r = cli("memory", "import", str(bad))
    assert r.returncode == 2
    assert "bad.jsonl:2" in r.stderr
    assert db_snapshot(project) == before


def test_search_nodes_matches_quotes_and_non_ascii_case_insensitively(host):
    call(host, "create_entities", entities=[
        {"name": "Zoë", "entityType": "Personne", "observations": ['says "Héllo" at standup']},
        {"name": "Other", "entityType": "thing", "observations": ["plain"]},
    ])
    assert [e["name"] for e in call(host, "search_nodes", query='"HÉLLO"')["entities"]] == ["Zoë"]
    assert [e["name"] for e in call(host, "search_nodes", query="ZOË")["entities"]] == ["Zoë"]
    assert [e["name"] for e in call(host, "search_nodes", query="personne")["entities"]] == ["Zoë"]
    assert call(host, "search_nodes", query="entity")["entities"] == []  # our node type is not their entityType


def test_search_nodes_lowercases_escaped_entity_types_like_javascript(host):
    """K (Kelvin sign) lowercases to k and İ to i + combining dot, in names, types and
    observations alike (JavaScript's toLowerCase); the entity type sits escaped in the
    stored JSON, which a raw-text shortcut used to miss."""
    call(host, "create_entities", entities=[
        {"name": "temp", "entityType": "\u212aelvin", "observations": []},
        {"name": "city", "entityType": "\u0130l", "observations": []},
        {"name": "plain", "entityType": "other", "observations": ["nothing"]},
    ])
    assert [e["name"] for e in call(host, "search_nodes", query="kel")["entities"]] == ["temp"]
    assert [e["name"] for e in call(host, "search_nodes", query="i\u0307l")["entities"]] == ["city"]
    assert [e["name"] for e in call(host, "search_nodes", query="\u212aEL")["entities"]] == ["temp"]


def test_import_reads_files_the_way_the_reference_does(host):
    """No node needed: line separators inside strings, unknown keys, empty names, a
    relation to a missing entity, two lines with one name (merged), another type (skipped)."""
    lines = [
        {"type": "entity", "name": "a\u2028b", "entityType": "x\u2029y", "observations": ["one\u0085two"], "id": 3},
        {"type": "entity", "name": "", "entityType": "", "observations": [""]},
        {"type": "entity", "name": "Ann", "entityType": "person", "observations": ["likes tea"]},
        {"type": "entity", "name": "Ann", "entityType": "robot", "observations": ["likes tea", "plays go"]},
        {"type": "relation", "from": "Ann", "to": "Ghost", "relationType": "", "weight": 1},
        {"type": "note", "text": "not a graph item"},
    ]
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)  # no final newline, like the reference
    assert import_jsonl(compat_for(host), text) == {"entities": 3, "observations": 4, "relations": 1, "skipped": 1}
    graph = call(host, "read_graph")
    assert graph["entities"] == [
        {"name": "a\u2028b", "entityType": "x\u2029y", "observations": ["one\u0085two"]},
        {"name": "", "entityType": "", "observations": [""]},
        {"name": "Ann", "entityType": "person", "observations": ["likes tea", "plays go"]},
    ]
    assert graph["relations"] == [{"from": "Ann", "to": "Ghost", "relationType": ""}]
    # arguments with unknown keys are taken like the reference's (zod strips them)
    assert call(host, "open_nodes", names=["Ann"], extra=True)["entities"][0]["name"] == "Ann"
