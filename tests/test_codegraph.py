"""The exact Python code graph (issue 14): one fixture project, a test per construct, and the
``@memory-query mode=code`` questions an agent asks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

FILES = {
    "app/__init__.py": '''
        """The app package: re-exports its public names."""
        from .models import User
        from .util import helper as helper
    ''',
    "app/models.py": '''
        from functools import cached_property

        MAX_USERS = 10
        _registry = {}


        class Base:
            kind: str = "base"

            def save(self):
                return None


        class Store:
            def put(self, item):
                return item


        class Cache:
            def clear(self):
                return None


        class User(Base):
            role = "user"

            def __init__(self, store: "Store"):
                self.store = store
                self.cache = Cache()

            @property
            def is_admin(self):
                return self.role == "admin"

            @cached_property
            def display(self):
                return self.role.title()

            def save(self):
                self.store.put(self)
                self.cache.clear()
                return self.display


        try:
            from ujson import dumps
        except ImportError:
            class EmailStr(str):
                pass

            def dumps(value):
                return str(value)
    ''',
    "app/util.py": '''
        from app.models import MAX_USERS, Base, User


        def helper(u: User, items: list[Base] = None) -> "User":
            if isinstance(u, Base):
                return u
            return u


        def on_event(event):
            return event


        HANDLERS = {"event": on_event}


        def register(callback=on_event):
            return callback


        class Default:
            def __init__(self, value):
                self.value = value


        def gen_id():
            return 1


        ID_FACTORY = Default(gen_id)


        def wire():
            return register(callback=on_event)


        def factory():
            def inner():
                return helper(None)

            class Local:
                def run(self):
                    return inner()

            return inner, Local


        def logged(fn):
            return fn


        @logged
        def job():
            return 1


        def check(u: User):
            return u.is_admin


        def limit():
            return MAX_USERS


        def unused_helper():
            return 2


        def shadow(on_event):
            return on_event
    ''',
    "app/main.py": '''
        from app import User, helper


        def run(store):
            user = User(store)
            user.save()
            return helper(user)
    ''',
}


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def edges(conn, etype):
    rows = conn.execute(
        "SELECT s.label AS src, d.label AS dst, e.metadata AS meta FROM edges e "
        "JOIN nodes s ON s.id=e.src JOIN nodes d ON d.id=e.dst WHERE e.type=?", (etype,)).fetchall()
    return {(r["src"], r["dst"]): json.loads(r["meta"]) for r in rows}


def node_type(conn, label):
    row = conn.execute("SELECT type FROM nodes WHERE label=?", (label,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def graph(host, project):
    write(project / "repo", FILES)
    data = host.run("memory-ingest", {"path": "repo"}).data
    assert data["files"] == 4 and not data["errors"]
    return host.db.conn


def test_type_references_in_annotations_isinstance_and_string_annotations(graph):
    refs = edges(graph, "references")
    assert ("app.util.helper", "app.models.User") in refs       # parameter annotation and "User" return
    assert ("app.util.helper", "app.models.Base") in refs       # list[Base] and isinstance(u, Base)
    assert ("app.models.User.__init__", "app.models.Store") in refs  # string annotation "Store"
    assert ("app.util.check", "app.models.User") in refs


def test_nested_functions_and_classes_are_nodes_and_traversable(graph):
    assert node_type(graph, "app.util.factory.inner") == "function"
    assert node_type(graph, "app.util.factory.Local") == "class"
    assert node_type(graph, "app.util.factory.Local.run") == "method"
    contains = edges(graph, "contains")
    assert ("app.util.factory", "app.util.factory.inner") in contains
    assert ("app.util.factory.Local", "app.util.factory.Local.run") in contains
    calls = edges(graph, "calls")
    assert ("app.util.factory.inner", "app.util.helper") in calls    # attributed to the closure
    assert ("app.util.factory.Local.run", "app.util.factory.inner") in calls  # closure resolved by scope
    assert ("app.util.factory", "app.util.helper") not in calls


def test_functions_passed_as_values(graph):
    refs = edges(graph, "references")
    assert ("app.util.HANDLERS", "app.util.on_event") in refs    # dict registration
    assert ("app.util.register", "app.util.on_event") in refs    # default value callback=on_event
    assert ("app.util.wire", "app.util.on_event") in refs        # keyword argument callback=on_event
    assert ("app.util.ID_FACTORY", "app.util.gen_id") in refs    # Default(gen_id)
    # a parameter that shadows a module function is a local variable, not a use of the function
    assert ("app.util.shadow", "app.util.on_event") not in refs


def test_property_and_cached_property_reads(graph):
    refs = edges(graph, "references")
    assert refs[("app.util.check", "app.models.User.is_admin")]["resolution"] == "property"
    assert refs[("app.models.User.save", "app.models.User.display")]["property"] is True


def test_definitions_inside_try_except_importerror(graph):
    assert node_type(graph, "app.models.EmailStr") == "class"
    assert node_type(graph, "app.models.dumps") == "function"
    assert ("app.models", "app.models.EmailStr") in edges(graph, "contains")


def test_self_attribute_method_calls(graph):
    calls = edges(graph, "calls")
    assert calls[("app.models.User.save", "app.models.Store.put")]["resolution"] == "self"   # self.store: "Store"
    assert ("app.models.User.save", "app.models.Cache.clear") in calls                     # self.cache = Cache()
    assert node_type(graph, "app.models.User.store") == "attribute"


def test_decorators_are_decorates_edges(graph):
    dec = edges(graph, "decorates")
    assert ("app.util.logged", "app.util.job") in dec
    meta = json.loads(graph.execute("SELECT metadata FROM nodes WHERE label='app.models.User.is_admin'")
                      .fetchone()[0])
    assert meta["property"] is True and meta["decorators"] == ["property"]


def test_reexports_through_package_init(graph):
    calls = edges(graph, "calls")
    # main.py imports User and helper from the package: both resolve to their definitions
    assert calls[("app.main.run", "app.models.User")]["resolution"] == "import"
    assert ("app.main.run", "app.util.helper") in calls
    assert calls[("app.main.run", "app.models.User.save")]["resolution"] == "local-type"


def test_class_attributes_and_module_constants_are_nodes(graph):
    assert node_type(graph, "app.models.User.role") == "attribute"
    assert node_type(graph, "app.models.Base.kind") == "attribute"
    assert node_type(graph, "app.models.MAX_USERS") == "variable"
    meta = json.loads(graph.execute("SELECT metadata FROM nodes WHERE label='app.models.MAX_USERS'").fetchone()[0])
    assert meta["constant"] is True
    refs = edges(graph, "references")
    assert ("app.util.limit", "app.models.MAX_USERS") in refs
    assert ("app.models.User.is_admin", "app.models.User.role") in refs   # self.role


def test_two_roots_with_the_same_qualified_names_never_share_a_node(host, project):
    for root, body in (("one", "def f():\n    return g()\n\n\ndef g():\n    return 1\n"),
                       ("two", "def f():\n    return 2\n")):
        write(project / root, {"pkg/__init__.py": "", "pkg/m.py": body})
        host.run("memory-ingest", {"path": root})
    conn = host.db.conn
    rows = conn.execute("SELECT label, metadata FROM nodes WHERE type='function' ORDER BY id").fetchall()
    owners = {r["label"]: (json.loads(r["metadata"])["root"], json.loads(r["metadata"])["path"]) for r in rows}
    assert owners == {"pkg.m.f": ("one", "one/pkg/m.py"), "pkg.m.g": ("one", "one/pkg/m.py"),
                      "two:pkg.m.f": ("two", "two/pkg/m.py")}
    assert set(edges(conn, "calls")) == {("pkg.m.f", "pkg.m.g")}
    # re-ingesting either root keeps its own nodes (no flip-flop, nothing deleted)
    again = host.run("memory-ingest", {"path": "two"}).data
    assert again["unchanged"] == 2 and again["nodesRemoved"] == 0
    assert host.run("memory-ingest", {"path": "one"}).data["nodesRemoved"] == 0


def ask(host, relation, query="", **extra):
    return host.run("memory-query", {"mode": "code", "relation": relation, "query": query, **extra})


def labels(result):
    return [h["label"] for h in result.data]


def test_query_callers_transitive_and_callees(host, graph):
    assert set(labels(ask(host, "callers", "app.util.helper"))) == {"app.util.factory.inner", "app.main.run"}
    deep = ask(host, "callers", "app.util.helper", depth=2)
    by_label = {h["label"]: h for h in deep.data}
    assert by_label["app.util.factory.Local.run"]["depth"] == 2
    assert by_label["app.util.factory.Local.run"]["via"] == "app.util.factory.inner"
    assert "depth 2 via app.util.factory.inner" in deep.text
    # a property read is a call of the property
    assert labels(ask(host, "callers", "app.models.User.is_admin")) == ["app.util.check"]
    assert set(labels(ask(host, "callees", "app.models.User.save"))) >= {"app.models.Store.put", "app.models.Cache.clear"}


def test_query_references_include_types_values_and_decorated(host, graph):
    users = set(labels(ask(host, "references", "app.models.User")))
    assert {"app.util.helper", "app.util.check", "app.main.run"} <= users
    assert set(labels(ask(host, "references", "app.util.on_event"))) == {
        "app.util.HANDLERS", "app.util.register", "app.util.wire"}
    assert labels(ask(host, "references", "app.util.logged")) == ["app.util.job"]


def test_query_members_with_inherited_and_implementors(host, graph):
    result = ask(host, "members", "app.models.User")
    members = {h["label"]: h for h in result.data}
    assert {"app.models.User.role", "app.models.User.save", "app.models.User.is_admin",
            "app.models.User.store", "app.models.Base.kind"} <= set(members)
    assert members["app.models.Base.kind"]["via"] == "app.models.Base"   # inherited, marked
    assert "app.models.Base.save" not in members                          # overridden
    assert labels(ask(host, "implementors", "app.models.Base")) == ["app.models.User"]
    over = ask(host, "implementors", "app.models.Base.save")
    assert labels(over) == ["app.models.User.save"] and "(overrides app.models.Base.save)" in over.text


def test_query_file_symbols_in_line_order(host, graph):
    got = labels(ask(host, "file-symbols", "repo/app/util.py", maxResults=100))
    assert got[:3] == ["app.util", "app.util.helper", "app.util.on_event"]
    assert "app.util.factory.inner" in got and "app.util.HANDLERS" in got
    assert labels(ask(host, "file-symbols", "repo/app/util.py", nodeType="class")) == [
        "app.util.Default", "app.util.factory.Local"]


def test_query_unused_by_kind(host, graph):
    unused = labels(ask(host, "unused", nodeType="function", maxResults=200))
    assert "app.util.unused_helper" in unused
    assert "app.util.helper" not in unused and "app.util.on_event" not in unused   # called / passed as a value
    assert "app.util.logged" not in unused                                         # used as a decorator
    assert "app.models.User.__init__" not in labels(ask(host, "unused", nodeType="method", maxResults=200))
    assert labels(ask(host, "unused", "app.util.u", nodeType="function")) == ["app.util.unused_helper"]


def test_query_exists_is_exact_and_follows_reexports(host, graph):
    yes = ask(host, "exists", "app.models.User.save")
    assert yes.data["exists"] is True and yes.text.startswith("exists 'app.models.User.save': yes, 1 definition")
    assert labels_of(ask(host, "exists", "User.save")) == ["app.models.User.save"]     # whole-segment suffix
    assert labels_of(ask(host, "exists", "app.User")) == ["app.models.User"]            # re-export
    assert labels_of(ask(host, "exists", "app.helper")) == ["app.util.helper"]
    for made_up in ("app.models.User.teleport", "User.sav", "app.models.Usr", "teleport"):
        no = ask(host, "exists", made_up)
        assert no.data == {"exists": False, "matches": []}
        assert "no such symbol" in no.text
    assert labels_of(ask(host, "exists", "save")) == ["app.models.Base.save", "app.models.User.save"]


def labels_of(result):
    return sorted(h["label"] for h in result.data["matches"])


def test_query_unknown_or_ambiguous_symbol_is_a_clear_error(cli, project):
    write(project / "repo", FILES)
    assert cli("@memory-ingest", "path=repo").returncode == 0
    bad = cli("@memory-query", "mode=code", "relation=callers", "query=app.util.halper")
    assert bad.returncode != 0 and "no symbol 'app.util.halper'" in bad.stderr and "Traceback" not in bad.stderr
    amb = cli("@memory-query", "mode=code", "relation=callers", "query=save")
    assert amb.returncode == 2 and "names 2 definitions" in amb.stderr
    ok = cli("--json", "@memory-query", "mode=code", "relation=callers", "query=app.util.helper")
    assert ok.returncode == 0, ok.stderr
    assert {h["label"] for h in json.loads(ok.stdout)} == {"app.util.factory.inner", "app.main.run"}
    no = cli("@memory-query", "mode=code", "relation=exists", "query=app.util.teleport")
    assert no.returncode == 0 and "no such symbol" in no.stdout


def test_code_questions_through_mcp(project):
    import anyio
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    import sys

    write(project / "repo", FILES)

    async def main():
        params = StdioServerParameters(command=sys.executable, args=["-m", "opensage", "--workspace", str(project), "mcp"])
        async with stdio_client(params) as (read, write_):
            async with ClientSession(read, write_) as s:
                await s.initialize()
                await s.call_tool("memory-ingest", {"path": "repo"})
                callers = await s.call_tool("memory-query", {"mode": "code", "relation": "callers",
                                                             "query": "app.util.helper"})
                missing = await s.call_tool("memory-query", {"mode": "code", "relation": "exists",
                                                             "query": "app.Task.teleport"})
                return callers, missing

    callers, missing = anyio.run(main)
    assert not callers.is_error
    text = "\n".join(c.text for c in callers.content if getattr(c, "type", "") == "text")
    assert "callers of app.util.helper" in text and "app.main.run" in text
    assert "no such symbol" in "\n".join(c.text for c in missing.content if getattr(c, "type", "") == "text")


def test_reingest_after_editing_one_file_touches_only_that_file(host, project, graph):
    conn = graph
    stamp = "SELECT label, updated_at FROM nodes WHERE json_extract(metadata, '$.path') != ? AND type != 'file'"
    before = dict(conn.execute(stamp, ("repo/app/main.py",)).fetchall())
    main = project / "repo/app/main.py"
    main.write_text(main.read_text() + "\n\ndef extra():\n    return run(None)\n")
    for path in ("repo/app/main.py", "repo"):       # a one-file refresh, then the whole folder
        data = host.run("memory-ingest", {"path": path}).data
        assert data["nodesRemoved"] == 0 and data["edgesRemoved"] == 0
        assert dict(conn.execute(stamp, ("repo/app/main.py",)).fetchall()) == before   # other files untouched
    assert data["changed"] == 0 and data["nodesUpdated"] == 0 and data["edgesAdded"] == 0
    assert ("app.main.extra", "app.main.run") in edges(conn, "calls")
