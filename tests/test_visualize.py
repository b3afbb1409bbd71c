"""@memory-visualize: Mermaid text that parses (structural check), escaping, truncation, errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from opensage.errors import UsageError
from opensage.plugins.graph_memory.graph import graph_for

#: (open, close) pairs of every node shape the renderer may use.
SHAPES = {'[/"': '"/]', '[["': '"]]', '["': '"]', '("': '")', '{"': '"}', '>"': '"]', '(["': '"])',
          '[("': '")]', '[\\"': '"\\]', '(("': '"))'}
NODE = re.compile(r'^\s+(n\d+|more_nodes)(\[/"|\[\["|\(\["|\[\("|\[\\"|\(\("|\["|\("|\{"|>")(.*)$')
EDGE = re.compile(r"^\s+(n\d+) -->\|([a-z0-9_]+)\| (n\d+)$")
STYLE = re.compile(r"^\s+(class (n\d+|more_nodes) \w+|classDef \w+ [\w:#,.-]+)$")


def check_mermaid(source: str) -> dict[str, str]:
    """Structural check of a flowchart: every line is a known statement, labels are quoted and
    hold no raw syntax characters, brackets close with the shape they opened, ids are unique,
    every edge endpoint is declared. Returns {id: label text}."""
    lines = source.rstrip("\n").split("\n")
    assert lines[0] == "flowchart LR"
    declared: dict[str, str] = {}
    edges = []
    for line in lines[1:]:
        if line.lstrip().startswith("%%"):
            continue
        m = NODE.match(line)
        if m:
            node_id, opener, rest = m.groups()
            closer = SHAPES[opener]
            assert rest.endswith(closer), f"shape {opener} not closed by {closer}: {line}"
            text = rest[: -len(closer)]
            plain = re.sub(r"#(?:\d+|[a-z]+);", "", text)  # entity codes are the only ';' and '#' allowed
            assert not set(plain) & set('"[](){}|<>;#`'), f"raw syntax character in label: {line}"
            assert node_id not in declared, f"id declared twice: {node_id}"
            declared[node_id] = text
            continue
        m = EDGE.match(line)
        if m:
            edges.append((m.group(1), m.group(3)))
            continue
        assert STYLE.match(line), f"unexpected line: {line!r}"
    for src, dst in edges:
        assert src in declared and dst in declared, f"edge endpoint not declared: {src} -> {dst}"
    # outside node shapes (checked above, opener against closer) there is no bracket or quote at all
    for line in lines[1:]:
        if not NODE.match(line) and not line.lstrip().startswith("%%"):
            assert not set(line) & set('"[](){}'), f"stray bracket or quote: {line!r}"
        assert line.count('"') in (0, 2), f"unbalanced quotes: {line!r}"
    return declared


NASTY = ['say "hi"', "list[int] | None", "end", "graph", "subgraph", "<script>alert(1)</script>",
         "a;b", "#1 issue", "x --> y", "A{b}", "`tick`", "(paren)", "click", "style"]


def test_escaping_of_hostile_labels(host):
    g = graph_for(host)
    center, _ = g.upsert_node("class", "end")
    kinds = ["decision", "error", "file", "module", "function", "query", "session", "command", "concept", "end"]
    for i, label in enumerate(NASTY):
        node, _ = g.upsert_node(kinds[i % len(kinds)], label)
        g.upsert_edge(center.id, node.id, "related_to")
    result = host.run("memory-visualize", {"centerNode": center.ref, "radius": 1})
    source = result.data["mermaid"]
    labels = check_mermaid(source)
    assert result.text.startswith("```mermaid\nflowchart LR") and result.text.endswith("```")
    assert len(labels) == len(NASTY) + 1 and result.data["truncated"] is False
    quoted = g.resolve(NASTY[0])
    assert labels[f"n{quoted.id}"].endswith("say #quot;hi#quot;")
    assert "#lt;script#gt;" in source and "list#91;int#93; #124; None" in source
    assert all(re.fullmatch(r"n\d+", i) for i in labels)          # ids never come from labels
    assert {e["to"] for e in result.data["edges"]} == {n["id"] for n in result.data["nodes"]} - {center.ref}
    if shutil.which("mmdc"):  # only when mermaid-cli is already installed; never installed by tests
        path = host.workspace.root / "view.mmd"
        path.write_text(source)
        done = subprocess.run(["mmdc", "-i", str(path), "-o", str(path.with_suffix(".svg"))], capture_output=True)
        assert done.returncode == 0, done.stderr


def test_truncation_note_and_counts(host):
    g = graph_for(host)
    hub, _ = g.upsert_node("concept", "hub")
    for i in range(80):
        leaf, _ = g.upsert_node("entity", f"leaf {i}")
        g.upsert_edge(hub.id, leaf.id, "mentions", weight=0.5 + i / 200)
    data = host.run("memory-visualize", {"centerNode": "hub", "maxNodes": 10}).data
    labels = check_mermaid(data["mermaid"])
    assert data["shown"] == 10 and data["total"] == 81 and data["truncated"] is True
    assert "%% truncated: 71 more nodes" in data["mermaid"]
    assert "71 more nodes not shown" in labels["more_nodes"]
    # the heaviest edges are kept first
    shown = {n["label"] for n in data["nodes"]}
    assert "leaf 79" in shown and "leaf 0" not in shown

    # without a center: the most connected nodes, hub first
    overview = host.run("memory-visualize", {"maxNodes": 5}).data
    check_mermaid(overview["mermaid"])
    assert overview["nodes"][0]["label"] == "hub" and overview["shown"] == 5 and overview["total"] == 81


def test_direction_and_radius(host):
    g = graph_for(host)
    a, _ = g.upsert_node("function", "a")
    b, _ = g.upsert_node("function", "b")
    c, _ = g.upsert_node("function", "c")
    g.upsert_edge(a.id, b.id, "calls")
    g.upsert_edge(b.id, c.id, "calls")
    callers = host.run("memory-visualize", {"centerNode": "c", "direction": "in", "radius": 1}).data
    assert {n["label"] for n in callers["nodes"]} == {"c", "b"}
    both = host.run("memory-visualize", {"centerNode": "b", "radius": 1}).data
    assert {n["label"] for n in both["nodes"]} == {"a", "b", "c"}
    out = host.run("memory-visualize", {"centerNode": "a", "direction": "out", "radius": 2}).data
    assert [n["label"] for n in out["nodes"]] == ["a", "b", "c"]
    assert check_mermaid(out["mermaid"])


def test_unknown_center_node_exit_2(cli, project):
    done = cli("@memory-add-node", "type=concept", "label=known")
    assert done.returncode == 0, done.stderr
    bad = cli("@memory-visualize", "centerNode=n999")
    assert bad.returncode == 2 and "unknown centerNode 'n999'" in bad.stderr
    bad = cli("@memory-visualize", "radius=9")
    assert bad.returncode == 2 and "radius" in bad.stderr
    ok = cli("--json", "@memory-visualize", "centerNode=known")
    assert ok.returncode == 0
    check_mermaid(json.loads(ok.stdout)["mermaid"])


@pytest.mark.parametrize("label", NASTY)
def test_each_hostile_label_alone(host, label):
    g = graph_for(host)
    node, _ = g.upsert_node("concept", label)
    source = host.run("memory-visualize", {"centerNode": node.ref}).data["mermaid"]
    assert len(check_mermaid(source)) == 1


@pytest.mark.parametrize("broken", [
    'flowchart LR\n    n1["say "hi""]\n',                 # raw quote inside a label
    'flowchart LR\n    n1["a"]\n    n1 -->|calls| n2\n',  # undeclared endpoint
    'flowchart LR\n    n1["a")\n',                         # shape closed with the wrong bracket
    'flowchart LR\n    end["a"]\n',                        # reserved word as an id
    'flowchart LR\n    n1["a]b"]\n',                       # raw bracket inside a label
])
def test_checker_rejects_broken_diagrams(broken):
    with pytest.raises(AssertionError):
        check_mermaid(broken)


def test_edge_type_filter_who_calls(host):
    g = graph_for(host)
    target, _ = g.upsert_node("function", "target")
    caller, _ = g.upsert_node("function", "caller")
    module, _ = g.upsert_node("module", "mod")
    g.upsert_edge(caller.id, target.id, "calls")
    g.upsert_edge(module.id, target.id, "contains")
    data = host.run("memory-visualize", {"centerNode": "target", "direction": "in", "edgeTypes": ["calls"]}).data
    assert {n["label"] for n in data["nodes"]} == {"target", "caller"}
    assert [e["type"] for e in data["edges"]] == ["calls"]
    overview = host.run("memory-visualize", {"edgeTypes": ["contains"]}).data
    assert {n["label"] for n in overview["nodes"]} == {"mod", "target"} and overview["total"] == 2
    check_mermaid(overview["mermaid"])
    with pytest.raises(UsageError):
        host.run("memory-visualize", {"edgeTypes": ["Calls Me"]})
