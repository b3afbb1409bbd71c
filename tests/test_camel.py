"""Result objects reach JSON through pydantic's camelCase aliases (opensage/camel.py):
every declared field appears under its camelCase name, none is forgotten."""

from __future__ import annotations

from dataclasses import fields

from pydantic.alias_generators import to_camel

from opensage.plugins.graph_memory.compress import CompressReport
from opensage.plugins.graph_memory.episodes import Episode
from opensage.plugins.graph_memory.graph import Node
from opensage.plugins.graph_memory.history import Chain
from opensage.plugins.graph_memory.ingest import IngestReport


def _keys(cls) -> set[str]:
    return {to_camel(f.name) for f in fields(cls)}


def test_every_field_of_a_report_is_in_its_json():
    assert set(IngestReport("root").as_dict()) == _keys(IngestReport)
    assert set(CompressReport("s1").as_dict()) == _keys(CompressReport) | {"newTotal"}
    assert set(Chain({"id": "n1"}).as_dict()) == _keys(Chain) | {"kind"}


def test_node_and_episode_json_keep_their_public_ids_and_leave_out_internal_fields():
    node = Node(3, "concept", "JWT", superseded_by=7, tags=["auth"])
    out = node.as_dict()
    assert out["id"] == "n3" and out["supersededBy"] == "n7" and out["tags"] == ["auth"]
    assert set(out) == _keys(Node) - {"merged"}  # mergedDuplicate only when a write was merged
    episode = Episode(12, "s1", 1, "user_message", "hi", modeled_at=5.0)
    assert episode.as_dict()["id"] == "e12" and set(episode.as_dict()) == _keys(Episode) - {"modeledAt"}
