"""One chunked ``IN (...)`` helper (opensage.store.in_chunks) serves lookups of more ids
than SQLite binds in one query, on real SQLite."""

from __future__ import annotations

import pytest

from opensage.store import IN_CHUNK, in_chunks


def test_chunks_cover_every_id_in_order_with_matching_marks():
    ids = list(range(IN_CHUNK * 2 + 7))
    parts = list(in_chunks(ids))
    assert [x for chunk, _ in parts for x in chunk] == ids
    assert [len(chunk) for chunk, _ in parts] == [IN_CHUNK, IN_CHUNK, 7]
    assert all(marks.count("?") == len(chunk) for chunk, marks in parts)
    assert list(in_chunks([])) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(in_chunks(ids, 0))


def test_graph_reads_2000_nodes_and_their_tags_in_chunks(host):
    from opensage.plugins.graph_memory.graph import graph_for

    graph = graph_for(host)
    n = 2_000  # more than SQLite's 999 parameters of one query before 3.32
    ids = graph.bulk_load([("concept", f"c{i}", "", {}) for i in range(n)], [], tags=[["bulk"]] * n)
    nodes = graph.get_many(ids)
    assert sorted(nodes) == sorted(ids) and {nodes[i].label for i in ids} == {f"c{i}" for i in range(n)}
    assert all(node.tags == ["bulk"] for node in nodes.values())
