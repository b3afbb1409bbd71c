"""``@memory-ingest scip=``: a real index written by scip-python (npm, pinned) imported into
the code graph and asked the code questions; malformed indexes change nothing."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import pytest

needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="node/npm not installed (scip-python is an npm package)")

ZOO = {
    "zoo/__init__.py": "",
    "zoo/animals.py": '''
        """Animals."""


        class Animal:
            def speak(self) -> str:
                raise NotImplementedError

            def greet(self) -> str:
                return "I say " + self.speak()


        class Dog(Animal):
            def speak(self) -> str:
                return "woof"


        def make(kind: str) -> Animal:
            return Dog() if kind == "dog" else Animal()
    ''',
    "zoo/keeper.py": '''
        from zoo.animals import Animal, make


        def feed(a: Animal) -> str:
            return a.greet()


        def run() -> str:
            return feed(make("dog"))
    ''',
}


def ask(host, relation, query):
    result = host.run("memory-query", {"mode": "code", "relation": relation, "query": query, "maxResults": 50})
    return [h["label"] for h in result.data]


def count_nodes(host):
    from opensage.plugins.graph_memory.graph import graph_for

    return graph_for(host).db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]


@needs_node
def test_scip_python_index(host, project):
    from tests.scip_env import scip_python_js

    for rel, text in ZOO.items():
        p = project / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    subprocess.run(["node", scip_python_js(), "index", ".", "--project-name", "zoo", "--project-version", "0.1",
                    "--output", "index.scip"], cwd=project, check=True, capture_output=True, timeout=300)
    data = host.run("memory-ingest", {"scip": "index.scip"}).data
    assert data["files"] == 3 and data["classes"] == 2 and data["methods"] == 3 and data["functions"] == 3
    # callers: a.greet() is resolved through the annotation by the type checker, not by a unique name
    assert ask(host, "callers", "zoo.animals.Animal.greet") == ["zoo.keeper.feed"]
    assert ask(host, "callers", "zoo.animals.make") == ["zoo.keeper.run"]  # the import line is not a use
    assert ask(host, "callers", "zoo.animals.Animal.speak") == ["zoo.animals.Animal.greet"]
    assert ask(host, "references", "zoo.animals.Animal") == ["zoo.animals.Dog", "zoo.animals.make", "zoo.keeper.feed"]
    # implementors from SCIP's is_implementation relationships
    assert ask(host, "implementors", "zoo.animals.Animal") == ["zoo.animals.Dog"]
    assert ask(host, "implementors", "zoo.animals.Animal.speak") == ["zoo.animals.Dog.speak"]
    assert ask(host, "members", "zoo.animals.Dog") == ["zoo.animals.Dog.speak", "zoo.animals.Animal.greet"]
    assert ask(host, "file-symbols", "zoo/keeper.py") == ["zoo.keeper", "zoo.keeper.feed", "zoo.keeper.run"]
    # importing the same index again changes nothing
    again = host.run("memory-ingest", {"scip": "index.scip"}).data
    assert again["unchanged"] == 3 and again["edgesAdded"] == 0 and again["edgesRemoved"] == 0


SHAPES = {
    "src/shapes.ts": """
        export interface Shape {
          area(): number;
        }

        export class Circle implements Shape {
          constructor(public r: number) {}
          area(): number {
            return Math.PI * this.square();
          }
          private square(): number {
            return this.r * this.r;
          }
        }
    """,
    "src/index.ts": """
        import { Circle, Shape } from "./shapes";

        export function total(all: Shape[]): number {
          return all.reduce((s, x) => s + x.area(), 0);
        }

        export function unit(): number {
          return total([new Circle(1)]);
        }
    """,
}


@needs_node
def test_scip_typescript_index(host, project):
    from tests.scip_env import scip_typescript_js

    for rel, text in SHAPES.items():
        p = project / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    subprocess.run(["node", scip_typescript_js(), "index", "--infer-tsconfig", "--output", "index.scip"], cwd=project,
                   check=True, capture_output=True, timeout=300)
    data = host.run("memory-ingest", {"scip": "index.scip"}).data
    assert data["files"] == 2 and data["classes"] == 2 and data["methods"] == 4
    # x.area() on a Shape: the type checker's answer, which name matching cannot give (two area methods)
    assert ask(host, "callers", "src.shapes.Shape.area") == ["src.total"]
    assert ask(host, "callers", "src.shapes.Circle.square") == ["src.shapes.Circle.area"]
    assert ask(host, "callers", "src.total") == ["src.unit"]
    assert ask(host, "implementors", "src.shapes.Shape") == ["src.shapes.Circle"]
    assert ask(host, "implementors", "src.shapes.Shape.area") == ["src.shapes.Circle.area"]
    assert ask(host, "members", "src.shapes.Circle") == [
        "src.shapes.Circle.constructor", "src.shapes.Circle.area", "src.shapes.Circle.square"]
    assert ask(host, "file-symbols", "src/index.ts") == ["src", "src.total", "src.unit"]


def test_scip_malformed(host, project, capsys):
    from opensage.errors import UsageError

    host.run("memory-add-node", {"type": "concept", "label": "keep me"})
    before = count_nodes(host)
    (project / "junk.scip").write_bytes(b"\xff\xff\xff\xff not a protobuf at all")
    (project / "empty.scip").write_bytes(b"")
    for name, text in [("junk.scip", "not a readable SCIP index"), ("empty.scip", "not a SCIP index"),
                       ("missing.scip", "is not a file")]:
        with pytest.raises(UsageError, match=text):
            host.run("memory-ingest", {"scip": name})
    with pytest.raises(UsageError, match="exactly one of path"):
        host.run("memory-ingest", {"scip": "junk.scip", "path": "."})
    assert count_nodes(host) == before


def test_scip_truncated_and_huge(host, project, monkeypatch):
    """A real index cut short, and one over the size bound: clear errors, nothing written."""
    from opensage.errors import UsageError
    from opensage.plugins.graph_memory import scip_import, scip_pb2

    index = scip_pb2.Index()
    index.metadata.tool_info.name = "scip-python"
    index.metadata.project_root = project.as_uri()
    doc = index.documents.add()
    doc.relative_path = "a.py"
    doc.language = "python"
    for i in range(50):
        occ = doc.occurrences.add()
        occ.range.extend([i, 0, 3])
        occ.symbol = f"scip-python python a 0.1 `a`/f{i}()."
        occ.symbol_roles = 1
    blob = index.SerializeToString()
    (project / "whole.scip").write_bytes(blob)
    (project / "cut.scip").write_bytes(blob[: len(blob) // 2])
    before = count_nodes(host)
    with pytest.raises(UsageError, match="truncated"):
        host.run("memory-ingest", {"scip": "cut.scip"})
    monkeypatch.setattr(scip_import, "MAX_SCIP_BYTES", len(blob) - 1)
    with pytest.raises(UsageError, match="over the 0 MB limit"):
        host.run("memory-ingest", {"scip": "whole.scip"})
    monkeypatch.setattr(scip_import, "MAX_SCIP_BYTES", 1 << 20)
    bad = scip_pb2.Index()
    bad.CopyFrom(index)
    bad.documents[0].relative_path = "../outside.py"
    (project / "escape.scip").write_bytes(bad.SerializeToString())
    with pytest.raises(UsageError, match="not a relative path inside the project"):
        host.run("memory-ingest", {"scip": "escape.scip"})
    assert count_nodes(host) == before
    assert host.run("memory-ingest", {"scip": "whole.scip"}).data["functions"] == 50
