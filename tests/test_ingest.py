"""@memory-ingest: the ast code graph of a small generated repository, re-ingest, bad paths."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from conftest import db_snapshot

FILES = {
    "pkg/__init__.py": '''
        """The package."""
        from .shapes import Shape
    ''',
    "pkg/shapes.py": '''
        """Geometric shapes."""
        import math


        class Shape:
            """A shape.

            This second paragraph is not kept.
            """

            def area(self) -> float:
                return 0.0

            def describe(self):
                return f"{self.name()} {self.area()}"

            def name(self):
                return type(self).__name__


        class Circle(Shape):
            def __init__(self, r):
                self.r = r

            def area(self):
                return math.pi * self.r ** 2


        def unit_circle():
            """The circle of radius 1."""
            return Circle(1)


        def show(shape: Shape):
            return shape.area()
    ''',
    "pkg/report.py": '''
        from pkg.shapes import unit_circle
        from . import shapes


        def total_area(items):
            return sum(s.area() for s in items)


        def summary():
            c = unit_circle()
            other = shapes.Circle(2)
            other.describe()
            return total_area([c, other])


        def later():
            return shapes.helper()
    ''',
    "broken.py": "def broken(:\n    pass\n",
    ".venv/lib/hidden.py": "def nope(): pass\n",
    "venv2/pyvenv.cfg": "home = /usr\n",
    "venv2/lib/site.py": "def nope2(): pass\n",
    "pkg/__pycache__/cached.py": "def nope3(): pass\n",
    "node_modules/mod.py": "def nope4(): pass\n",
}


def write_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def node(conn, type_, label):
    row = conn.execute("SELECT * FROM nodes WHERE type=? AND label=?", (type_, label)).fetchone()
    assert row is not None, f"missing {type_} {label}"
    return row


def edges(conn, etype):
    rows = conn.execute(
        "SELECT s.label AS src, d.label AS dst, e.weight AS weight, e.metadata AS meta FROM edges e "
        "JOIN nodes s ON s.id=e.src JOIN nodes d ON d.id=e.dst WHERE e.type=?", (etype,)).fetchall()
    return {(r["src"], r["dst"]): (r["weight"], json.loads(r["meta"])) for r in rows}


def test_ingest_builds_nodes_and_edges(host, project):
    write_repo(project / "repo")
    result = host.run("memory-ingest", {"path": "repo"})
    data = result.data
    assert data["files"] == 3 and data["skipped"] == 1
    assert data["classes"] == 2 and data["methods"] == 5 and data["functions"] == 5
    assert data["errors"][0]["path"] == "repo/broken.py" and "SyntaxError" in data["errors"][0]["error"]
    assert "skipped repo/broken.py" in result.text

    conn = host.db.conn
    labels = {r["label"] for r in conn.execute("SELECT label FROM nodes")}
    assert not any("nope" in label or "hidden" in label or "cached" in label for label in labels)

    node(conn, "file", "repo/pkg/shapes.py")
    node(conn, "module", "pkg.shapes")
    area = node(conn, "method", "pkg.shapes.Circle.area")
    meta = json.loads(area["metadata"])
    assert meta["name"] == "area" and meta["path"] == "repo/pkg/shapes.py" and meta["class"] == "pkg.shapes.Circle"
    lines = textwrap.dedent(FILES["pkg/shapes.py"]).lstrip("\n").splitlines()
    assert meta["line"] == lines.index("    def area(self):") + 1 and meta["end_line"] == meta["line"] + 1
    shape = node(conn, "class", "pkg.shapes.Shape")
    assert "class Shape" in shape["content"] and "A shape." in shape["content"]
    assert "second paragraph" not in shape["content"]
    assert node(conn, "method", "pkg.shapes.Shape.area")["content"].startswith("def area(self) -> float")
    assert json.loads(node(conn, "module", "math")["metadata"])["external"] is True

    contains = edges(conn, "contains")
    assert ("repo/pkg/shapes.py", "pkg.shapes") in contains
    assert ("pkg.shapes", "pkg.shapes.Circle") in contains
    assert ("pkg.shapes.Circle", "pkg.shapes.Circle.area") in contains
    assert ("pkg.shapes", "pkg.shapes.unit_circle") in contains
    circle_line = lines.index("class Circle(Shape):") + 1
    assert edges(conn, "inherits") == {("pkg.shapes.Circle", "pkg.shapes.Shape"): (0.9, {"source": "ingest", "line": circle_line})}
    imports = edges(conn, "imports")
    assert ("pkg.report", "pkg.shapes") in imports and ("pkg.shapes", "math") in imports
    assert ("pkg", "pkg.shapes") in imports

    calls = edges(conn, "calls")
    assert calls[("pkg.report.summary", "pkg.shapes.unit_circle")][1]["resolution"] == "import"
    assert ("pkg.report.summary", "pkg.shapes.Circle") in calls          # shapes.Circle(2)
    assert calls[("pkg.report.summary", "pkg.report.total_area")][0] == 0.9
    assert ("pkg.shapes.unit_circle", "pkg.shapes.Circle") in calls
    assert calls[("pkg.shapes.Shape.describe", "pkg.shapes.Shape.name")][1]["resolution"] == "self"
    # method calls on variables whose class is written down (assignment from a constructor, annotation)
    assert calls[("pkg.report.summary", "pkg.shapes.Shape.describe")][1]["resolution"] == "local-type"  # inherited
    assert calls[("pkg.shapes.show", "pkg.shapes.Shape.area")][0] == 0.7
    # s.area() is ambiguous (Shape.area and Circle.area): not linked
    assert not any(src == "pkg.report.total_area" for src, _ in calls)
    assert not any(src == "pkg.report.later" for src, _ in calls)   # shapes.helper does not exist yet

    # the short name is searchable
    hits = {r[0] for r in conn.execute("SELECT n.label FROM nodes_fts f JOIN nodes n ON n.id=f.rowid "
                                       "WHERE nodes_fts MATCH 'unit_circle'")}
    assert "pkg.shapes.unit_circle" in hits


def test_reingest_replaces_changed_files_only(host, project):
    repo = write_repo(project / "repo")
    host.run("memory-ingest", {"path": "repo"})
    conn = host.db.conn
    shape_id = node(conn, "class", "pkg.shapes.Shape")["id"]
    summary_id = node(conn, "function", "pkg.report.summary")["id"]

    again = host.run("memory-ingest", {"path": str(repo)}).data
    assert again["unchanged"] == 3 and again["changed"] == 0
    assert again["nodesAdded"] == again["nodesUpdated"] == again["edgesAdded"] == again["edgesRemoved"] == 0

    # report.py: total_area removed, grand_total added; shapes.py gains helper (called by unchanged code)
    report = repo / "pkg/report.py"
    report.write_text(report.read_text().replace(
        "def total_area(items):\n    return sum(s.area() for s in items)\n",
        "def grand_total():\n    return summary()\n").replace("return total_area([c, other])", "return [c, other]"))
    (repo / "pkg/shapes.py").write_text((repo / "pkg/shapes.py").read_text() + "\n\ndef helper():\n    return 1\n")
    (repo / "pkg/__init__.py").unlink()
    (repo / "pkg/__init__.py").write_text('"""The package."""\nfrom .shapes import Shape\n')  # same bytes
    data = host.run("memory-ingest", {"path": "repo"}).data
    assert data["changed"] == 2 and data["unchanged"] == 1

    assert conn.execute("SELECT 1 FROM nodes WHERE label='pkg.report.total_area'").fetchone() is None
    calls = edges(conn, "calls")
    assert ("pkg.report.grand_total", "pkg.report.summary") in calls
    assert ("pkg.report.summary", "pkg.report.total_area") not in calls
    assert ("pkg.report.later", "pkg.shapes.helper") in calls
    assert node(conn, "class", "pkg.shapes.Shape")["id"] == shape_id        # ids stay stable
    assert node(conn, "function", "pkg.report.summary")["id"] == summary_id

    # a removed file disappears with its nodes and edges; the now unused external module too
    (repo / "pkg/shapes.py").unlink()
    data = host.run("memory-ingest", {"path": "repo"}).data
    assert data["removedFiles"] == 1
    assert conn.execute("SELECT count(*) FROM nodes WHERE label LIKE 'pkg.shapes.%'").fetchone()[0] == 0
    assert conn.execute("SELECT 1 FROM nodes WHERE label='repo/pkg/shapes.py'").fetchone() is None
    # still imported by pkg and pkg.report, so it is now an external module
    assert json.loads(node(conn, "module", "pkg.shapes")["metadata"])["external"] is True
    assert conn.execute("SELECT 1 FROM nodes WHERE type='module' AND label='math'").fetchone() is None
    assert conn.execute("SELECT count(*) FROM edges WHERE src NOT IN (SELECT id FROM nodes) "
                        "OR dst NOT IN (SELECT id FROM nodes)").fetchone()[0] == 0


def test_ingest_single_file(host, project):
    repo = write_repo(project / "repo")
    data = host.run("memory-ingest", {"path": "repo/pkg/shapes.py"}).data
    assert data["files"] == 1 and data["classes"] == 2
    assert node(host.db.conn, "module", "pkg.shapes")

    # refresh one file of an ingested folder: its calls still resolve into the other files
    host.run("memory-ingest", {"path": "repo"})
    report = repo / "pkg/report.py"
    report.write_text(report.read_text() + "\n\ndef fresh():\n    return unit_circle()\n")
    data = host.run("memory-ingest", {"path": "repo/pkg/report.py"}).data
    assert data["files"] == 1 and data["changed"] == 1
    conn = host.db.conn
    assert ("pkg.report.fresh", "pkg.shapes.unit_circle") in edges(conn, "calls")
    assert ("pkg.report.summary", "pkg.shapes.unit_circle") in edges(conn, "calls")
    # the folder ingest still owns the file: deleting another file is noticed, report.py stays
    (repo / "pkg/__init__.py").unlink()
    (repo / "pkg/__init__.py").write_text("")
    (repo / "broken.py").unlink()
    assert host.run("memory-ingest", {"path": "repo"}).data["removedFiles"] == 0
    (repo / "pkg/report.py").rename(repo / "report_moved.py")
    data = host.run("memory-ingest", {"path": "repo"}).data
    assert data["removedFiles"] == 1
    assert conn.execute("SELECT 1 FROM nodes WHERE label='repo/pkg/report.py'").fetchone() is None
    node(conn, "function", "report_moved.fresh")


def test_ingest_missing_path_exit_2_nothing_written(cli, project):
    write_repo(project / "repo")
    ok = cli("@memory-ingest", "path=repo")
    assert ok.returncode == 0, ok.stderr
    assert "3 files" in ok.stdout
    before = db_snapshot(project)
    bad = cli("@memory-ingest", "path=no/such/dir")
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr and "path" in bad.stderr
    assert db_snapshot(project) == before
    not_py = project / "notes.txt"
    not_py.write_text("x")
    bad = cli("@memory-ingest", f"path={not_py}")
    assert bad.returncode == 2 and "not a Python file" in bad.stderr
    assert db_snapshot(project) == before


def test_ingest_missing_path_on_fresh_project_creates_no_database(cli, project):
    bad = cli("@memory-ingest", "path=missing")
    assert bad.returncode == 2
    assert not (project / ".opencode" / "opensage.db").exists()


def test_src_layout_and_duplicate_script_names(host, project):
    root = project / "proj"
    (root / "src/app").mkdir(parents=True)
    (root / "src/app/__init__.py").write_text("")
    (root / "src/app/core.py").write_text("def run():\n    return 1\n")
    (root / "tools").mkdir()
    (root / "tools/setup.py").write_text("def go():\n    pass\n")
    (root / "setup.py").write_text("def go():\n    pass\n")
    host.run("memory-ingest", {"path": "proj"})
    conn = host.db.conn
    node(conn, "function", "app.core.run")
    node(conn, "function", "setup.go")
    node(conn, "function", "tools.setup.go")


def test_calls_into_an_earlier_ingested_repository(host, project):
    lib = project / "lib" / "geo"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("from .core import distance\n")
    (lib / "core.py").write_text("def distance(a, b):\n    return abs(a - b)\n")
    app = project / "app"
    app.mkdir()
    (app / "main.py").write_text("import geo\nfrom geo.core import distance\n\n\ndef run():\n"
                                 "    return distance(1, 2) + geo.distance(3, 4)\n")
    host.run("memory-ingest", {"path": "lib"})
    data = host.run("memory-ingest", {"path": "app"}).data
    assert data["files"] == 1
    conn = host.db.conn
    calls = edges(conn, "calls")
    assert calls[("main.run", "geo.core.distance")][1]["resolution"] == "import"
    assert ("main", "geo.core") in edges(conn, "imports")
    # the library's module is not turned into an external one by the app's import
    assert json.loads(node(conn, "module", "geo.core")["metadata"])["external"] is False


def test_who_calls_through_memory_query_traversal(host, project):
    write_repo(project / "repo")
    host.run("memory-ingest", {"path": "repo"})
    result = host.run("memory-query", {"mode": "traversal", "startNode": "pkg.shapes.Circle", "direction": "in",
                                       "depth": 1, "edgeTypes": ["calls"]})
    callers = {hit["label"] for hit in result.data}
    assert callers == {"pkg.shapes.unit_circle", "pkg.report.summary"}
