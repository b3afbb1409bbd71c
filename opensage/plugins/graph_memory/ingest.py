"""Build a code graph of a Python repository with the standard :mod:`ast` module.

Nodes (``type``: ``label``):

* ``file``: the path relative to the workspace root (absolute when outside it), the
  same label session compression gives the files a session touched.
* ``module``: the dotted module name (``pkg.sub.mod``), taken from the folders above
  the file that hold an ``__init__.py``. Modules imported from outside the ingested
  files become ``module`` nodes with ``metadata.external = true`` (unless already in
  the graph from another ingest).
* ``class``, ``function``, ``method``: the qualified name (``pkg.mod.Class``,
  ``pkg.mod.func``, ``pkg.mod.Class.method``), unique within a repository. The short
  name is in ``metadata.name`` and in the full-text index.

Content is the signature plus the first paragraph of the docstring. Metadata holds
``path`` (the file label), ``line``/``end_line``, ``qualname``, ``module`` and, on
file nodes, the SHA-1 of the file's bytes.

Edges: ``contains`` (file -> module -> class/function, class -> method/nested class),
``imports`` (module -> module), ``inherits`` (class -> base class defined in the
graph) and ``calls`` (function/method/module/class -> function/method/class).

**Calls are resolved by name, not by type inference.** For a call ``f()`` or
``a.b.f()`` the name is looked up, in order: (1) definitions in the same module,
(2) names the module imports (following re-exports such as ``from .x import f`` in a
package ``__init__``; targets may be definitions stored by an earlier ingest of another
folder, so an application's calls into an ingested library are linked), (3) for ``self.f()``/``cls.f()``/``super().f()`` the methods of
the enclosing class and its in-graph base classes, (4) a function, class or method
defined exactly once in the ingested files under that short name. A method call on a
local variable whose class is written down (``x = Foo(...)`` or a ``x: Foo`` annotation,
parameters included) resolves to ``Foo``'s method or an inherited one (weight 0.7).
Steps 1–3 give weight 0.9 (0.8 for ``self``); step 4 gives 0.5 for a bare name and 0.3 for a method
on an object of unknown type, and is skipped for builtin names, dunder names and
methods of builtin types (``get``, ``append``...). Ambiguous names (defined more than
once) are not linked. Calls through variables, ``getattr`` or dynamic dispatch are
missed; this is a static, best-effort view.

Re-ingesting compares each file's SHA-1: unchanged files are not rewritten; a changed
file's nodes are updated in place (ids stay stable), symbols that disappeared are
deleted with their edges, and files that disappeared from the folder are deleted.
Edges of every parsed file are recomputed and diffed, so a call into a newly added
function of another file is linked even when the calling file did not change.
Everything is written in one transaction.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage.errors import UsageError
from opensage.plugins.graph_memory.graph import Graph, identifier_terms

__all__ = ["ingest_path", "IngestReport", "SKIP_DIRS", "file_label"]

#: Bump when the extraction changes, so unchanged files are re-extracted once.
INGEST_VERSION = 2
#: Folder names never descended into (plus every hidden folder and any folder holding ``pyvenv.cfg``).
SKIP_DIRS = frozenset({
    "__pycache__", "node_modules", "venv", "env", "site-packages", "build", "dist",
    "__pypackages__", "htmlcov",
})
CODE_TYPES = ("file", "module", "class", "function", "method")
CODE_EDGES = ("contains", "imports", "calls", "inherits")
_BUILTIN_NAMES = frozenset(dir(builtins))
_BUILTIN_METHODS = frozenset(
    name for t in (dict, list, str, bytes, set, frozenset, tuple, int, float, object) for name in dir(t)
) | {"join", "split", "read", "write", "close", "open", "send", "run", "start", "stop", "wait", "info",
     "debug", "warning", "error", "exception", "put"}
W_EXACT, W_SELF, W_LOCAL_TYPE, W_UNIQUE_NAME, W_UNIQUE_METHOD = 0.9, 0.8, 0.7, 0.5, 0.3
W_CONTAINS, W_IMPORTS, W_INHERITS = 1.0, 0.8, 0.9
_DOC_CHARS = 400
_SIG_CHARS = 300


@dataclass
class IngestReport:
    """What one ingest did. Times in milliseconds."""

    root: str
    files: int = 0
    unchanged: int = 0
    changed: int = 0
    removed_files: int = 0
    skipped: int = 0
    modules: int = 0
    classes: int = 0
    functions: int = 0
    methods: int = 0
    edges: int = 0
    nodes_added: int = 0
    nodes_updated: int = 0
    nodes_removed: int = 0
    edges_added: int = 0
    edges_removed: int = 0
    time_ms: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root, "files": self.files, "unchanged": self.unchanged, "changed": self.changed,
            "removedFiles": self.removed_files, "skipped": self.skipped, "modules": self.modules,
            "classes": self.classes, "functions": self.functions, "methods": self.methods, "edges": self.edges,
            "nodesAdded": self.nodes_added, "nodesUpdated": self.nodes_updated, "nodesRemoved": self.nodes_removed,
            "edgesAdded": self.edges_added, "edgesRemoved": self.edges_removed, "timeMs": round(self.time_ms, 1),
            "errors": self.errors,
        }


@dataclass
class _Symbol:
    type: str
    label: str
    content: str
    meta: dict[str, Any]


@dataclass
class _Module:
    name: str
    path: Path
    file: str  # file label
    sha1: str
    data_lines: int
    tree: ast.Module | None
    is_package: bool
    doc: str = ""
    defs: dict[str, str] = field(default_factory=dict)  # top-level name -> qualified label
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> dotted target
    imports: list[tuple[str, int]] = field(default_factory=list)  # (module candidates "a.b|a", line)
    calls: list[tuple[str, str, str, str | None, int]] = field(default_factory=list)
    bases: list[tuple[str, list[str], int]] = field(default_factory=list)  # (class label, base exprs, line)
    symbols: list[_Symbol] = field(default_factory=list)
    local_types: dict[str, dict[str, str]] = field(default_factory=dict)  # function -> {variable: class expr}
    contains: list[tuple[str, str, str]] = field(default_factory=list)  # (parent type, parent label, child label)


def file_label(path: Path, workspace_root: Path) -> str:
    """The ``file`` node label of ``path``: relative to the workspace root, else absolute (POSIX slashes)."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(Path(os.path.abspath(workspace_root))).as_posix()
    except ValueError:
        return path.as_posix()


def _first_paragraph(node) -> str:
    try:
        doc = ast.get_docstring(node)
    except Exception:  # a non-string first statement in odd code
        doc = None
    if not doc:
        return ""
    para = doc.strip().split("\n\n", 1)[0]
    para = " ".join(para.split())
    return para if len(para) <= _DOC_CHARS else para[: _DOC_CHARS - 1] + "…"


def _cap(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _signature(node) -> str:
    if isinstance(node, ast.ClassDef):
        parts = [ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords]
        return _cap(f"class {node.name}({', '.join(parts)})" if parts else f"class {node.name}", _SIG_CHARS)
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    ret = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return _cap(f"{prefix} {node.name}({ast.unparse(node.args)}){ret}", _SIG_CHARS)


def _dotted(expr) -> str | None:
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        parts.append(expr.id)
        return ".".join(reversed(parts))
    return None


def _call_target(func) -> tuple[str, str] | None:
    """Classify a call's callee: (kind, name) with kind name/dotted/self/super/attr."""
    if isinstance(func, ast.Name):
        return "name", func.id
    if isinstance(func, ast.Attribute):
        value = func.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            return "self", func.attr
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"):
            return "super", func.attr
        dotted = _dotted(func)
        if dotted is not None:
            return "dotted", dotted
        return "attr", func.attr
    return None


def _local_types(fn) -> dict[str, str]:
    """Variables of a function whose class is written down: ``x: Foo`` (parameter or annotated
    assignment) or ``x = Foo(...)`` / ``x = mod.Foo(...)``. Names assigned twice with different
    classes are dropped (no flow analysis)."""
    found: dict[str, str | None] = {}

    def note(name: str, expr) -> None:
        dotted = _dotted(expr) if expr is not None else None
        if dotted is None:
            return
        found[name] = dotted if found.get(name, dotted) == dotted else None

    args = fn.args
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        if a.annotation is not None:
            note(a.arg, a.annotation)
    for node in _statements(fn):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    note(target.id, node.value.func)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            note(node.target.id, node.annotation)
    return {k: v for k, v in found.items() if v}


def _statements(tree):
    """Every statement of a tree, nested ones included, without walking expressions."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, name, ()) or ():
                if isinstance(child, ast.stmt):
                    stack.append(child)
                else:  # except handlers and match cases hold statements
                    stack.extend(getattr(child, "body", ()))


#: Node types that never contain a call, and fields that never hold one (contexts, operators).
_LEAVES = (ast.Name, ast.Constant, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.alias)
_SKIP_FIELDS = {"ctx", "op", "ops", "type_comment"}
_FIELDS: dict[type, tuple[str, ...]] = {}


def _walk_calls(node):
    """Every ``ast.Call`` under ``node`` (a leaner :func:`ast.walk`: this loop dominates ingest time)."""
    stack = [node]
    pop, push, extend = stack.pop, stack.append, stack.extend
    call, leaves, ast_type = ast.Call, _LEAVES, ast.AST
    while stack:
        n = pop()
        t = type(n)
        if t is call:
            yield n
        fields = _FIELDS.get(t)
        if fields is None:
            fields = _FIELDS[t] = () if issubclass(t, leaves) else tuple(
                f for f in t._fields if f not in _SKIP_FIELDS)
        for f in fields:
            v = getattr(n, f, None)
            if v is None:
                continue
            if type(v) is list:
                extend(x for x in v if isinstance(x, ast_type))
            elif isinstance(v, ast_type):
                push(v)


class _Extractor:
    """Walk one module's tree: symbols, containment, imports, raw calls and bases."""

    def __init__(self, mod: _Module, root_label: str) -> None:
        self.mod = mod
        self.root_label = root_label

    def run(self) -> None:
        mod = self.mod
        self._imports()
        self._body(mod.tree.body, prefix=mod.name, parent=("module", mod.name), caller=mod.name, cls=None, top=True)

    def _meta(self, node, qual: str, **extra) -> dict[str, Any]:
        return {"name": node.name, "qualname": qual, "path": self.mod.file, "module": self.mod.name,
                "line": node.lineno, "end_line": getattr(node, "end_lineno", node.lineno),
                "source": "ingest", "root": self.root_label, **extra}

    def _imports(self) -> None:
        mod = self.mod
        package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
        for node in _statements(mod.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    mod.imports.append((alias.name, node.lineno))
                    if alias.asname:
                        mod.aliases[alias.asname] = alias.name
                    else:
                        head = alias.name.split(".")[0]
                        mod.aliases.setdefault(head, head)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".") if package else []
                    up = node.level - 1
                    if up > len(base_parts):
                        continue  # relative import beyond the top-level package
                    base_parts = base_parts[: len(base_parts) - up] if up else base_parts
                    base = ".".join(p for p in [*base_parts, node.module or ""] if p)
                else:
                    base = node.module or ""
                if not base:
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        mod.imports.append((base, node.lineno))
                        continue
                    mod.aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                    mod.imports.append((f"{base}.{alias.name}|{base}", node.lineno))

    def _body(self, body, prefix: str, parent: tuple[str, str], caller: str, cls: str | None, top: bool) -> None:
        mod = self.mod
        for stmt in body:
            if isinstance(stmt, ast.ClassDef):
                qual = f"{prefix}.{stmt.name}"
                mod.symbols.append(_Symbol("class", qual, self._content(stmt),
                                           self._meta(stmt, qual, bases=[ast.unparse(b) for b in stmt.bases])))
                mod.contains.append((*parent, qual))
                if top:
                    mod.defs.setdefault(stmt.name, qual)
                mod.bases.append((qual, [d for d in map(_dotted, stmt.bases) if d], stmt.lineno))
                for expr in [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords)]:
                    self._calls(expr, caller)
                self._body(stmt.body, prefix=qual, parent=("class", qual), caller=qual, cls=qual, top=False)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                kind = "method" if parent[0] == "class" else "function"
                qual = f"{prefix}.{stmt.name}"
                extra = {"class": cls} if kind == "method" else {}
                if isinstance(stmt, ast.AsyncFunctionDef):
                    extra["async"] = True
                mod.symbols.append(_Symbol(kind, qual, self._content(stmt), self._meta(stmt, qual, **extra)))
                mod.contains.append((*parent, qual))
                if top:
                    mod.defs.setdefault(stmt.name, qual)
                # everything inside (decorators, defaults, nested defs) is attributed to this function
                for child in ast.iter_child_nodes(stmt):
                    self._calls(child, qual, cls)
                local = _local_types(stmt)
                if local:
                    mod.local_types[qual] = local
            else:
                for child in ast.iter_child_nodes(stmt):
                    if isinstance(child, ast.stmt):
                        self._body([child], prefix, parent, caller, cls, top)
                    else:
                        self._calls(child, caller, cls)

    def _calls(self, node, caller: str, cls: str | None = None) -> None:
        append = self.mod.calls.append
        for sub in _walk_calls(node):
            target = _call_target(sub.func)
            if target is not None:
                append((caller, target[0], target[1], cls, sub.lineno))

    @staticmethod
    def _content(node) -> str:
        doc = _first_paragraph(node)
        sig = _signature(node)
        return f"{sig}\n\n{doc}" if doc else sig


def _module_name(path: Path, cache: dict[Path, bool]) -> tuple[str, bool]:
    def is_pkg(d: Path) -> bool:
        if d not in cache:
            cache[d] = (d / "__init__.py").is_file()
        return cache[d]

    parts = [] if path.stem == "__init__" else [path.stem]
    d = path.parent
    while is_pkg(d):
        parts.insert(0, d.name)
        if d.parent == d:
            break
        d = d.parent
    return ".".join(parts) or path.parent.name or path.stem, path.stem == "__init__"


def _python_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in dirnames:
            if d.startswith(".") or d in SKIP_DIRS or d.endswith(".egg-info"):
                continue
            if os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg")):
                continue  # a virtualenv under any name
            keep.append(d)
        dirnames[:] = sorted(keep)
        found.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py") and not f.startswith("."))
    return found


def check_ingest_path(path: str, workspace_root: Path) -> Path:
    """Resolve ``path`` (relative paths are taken from the workspace root). Raises UsageError."""
    if not path or not path.strip():
        raise UsageError("argument 'path' is empty: give a folder or a .py file, e.g. path=src.")
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(workspace_root) / p
    p = Path(os.path.abspath(p))
    if not p.exists():
        raise UsageError(f"argument 'path': {str(p)!r} does not exist; give an existing folder or .py file "
                         f"(relative paths are taken from the workspace root {str(workspace_root)!r}).")
    if p.is_file() and p.suffix != ".py":
        raise UsageError(f"argument 'path': {str(p)!r} is not a Python file; give a folder or a .py file.")
    if not p.is_file() and not p.is_dir():
        raise UsageError(f"argument 'path': {str(p)!r} is neither a folder nor a file.")
    return p


def ingest_path(graph: Graph, path: Path, workspace_root: Path) -> IngestReport:
    """Ingest the Python files under ``path`` (a folder or one ``.py`` file) into ``graph``.

    :param path: an existing folder or ``.py`` file (see :func:`check_ingest_path`).
    :param workspace_root: file labels are relative to it when the file is inside it.
    :returns: an :class:`IngestReport` (counts of the files parsed now and of the writes).
    :raises UsageError: ``path`` does not exist.
    """
    started = time.perf_counter()
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise UsageError(f"argument 'path': {str(path)!r} does not exist.")
    root_label = file_label(path, workspace_root)
    report = IngestReport(root=root_label)

    # -- parse and extract, one file at a time (trees of a large repo do not fit in memory together)
    pkg_cache: dict[Path, bool] = {}
    candidates: list[_Module] = []
    for f in _python_files(path):
        name, is_pkg = _module_name(f, pkg_cache)
        candidates.append(_Module(name, f, file_label(f, workspace_root), "", 0, None, is_pkg))
    _dedupe_module_names(candidates, path)
    modules: list[_Module] = []
    failed_files: set[str] = set()
    for mod in candidates:
        try:
            data = mod.path.read_bytes()
            mod.tree = ast.parse(data, filename=str(mod.path))
            mod.sha1, mod.data_lines = hashlib.sha1(data).hexdigest(), data.count(b"\n") + 1
            mod.doc = _first_paragraph(mod.tree)
            _Extractor(mod, root_label).run()
        except (SyntaxError, ValueError, RecursionError, OSError, TypeError, AttributeError) as exc:
            report.skipped += 1
            failed_files.add(mod.file)
            msg = f"{type(exc).__name__}: {getattr(exc, 'msg', None) or exc}"
            if getattr(exc, "lineno", None):
                msg += f" (line {exc.lineno})"
            report.errors.append({"path": mod.file, "error": msg})
            continue
        finally:
            mod.tree = None
        modules.append(mod)
    report.files = len(modules)

    with graph.db.transaction() as conn:
        existing = _load_code_nodes(conn, [m.file for m in modules] + sorted(failed_files), root_label)
        by_key: dict[tuple[str, str], dict | None] = {(n["type"], n["label"]): n for n in existing}

        def lookup(key: tuple[str, str]) -> dict | None:
            """The stored node (type, label), from the files in scope or else the database."""
            if key not in by_key:
                row = conn.execute("SELECT id, type, label, metadata FROM nodes WHERE type=? AND label=?", key).fetchone()
                by_key[key] = None if row is None else {
                    "id": row["id"], "type": row["type"], "label": row["label"], "meta": json.loads(row["metadata"] or "{}")}
            return by_key[key]
        by_file: dict[str, list[dict]] = {}
        for n in existing:
            p = n["meta"].get("path")
            if p and n["type"] != "file" and n["meta"].get("source") == "ingest":
                by_file.setdefault(p, []).append(n)

        # -- nodes --------------------------------------------------------------------------
        now = time.time()
        ids: dict[tuple[str, str], int] = {}
        scope_ids: set[int] = set()  # nodes whose outgoing code edges are recomputed now
        deleted: set[int] = set()
        parsed_names = {m.name for m in modules}
        for mod in modules:
            old_file = lookup(("file", mod.file))
            file_root = root_label
            if path.is_file() and old_file is not None and old_file["meta"].get("root"):
                file_root = old_file["meta"]["root"]  # a one-file refresh keeps the file in its folder's ingest
            file_meta = {"path": mod.file, "sha1": mod.sha1, "ingest_version": INGEST_VERSION, "module": mod.name,
                         "lines": mod.data_lines, "source": "ingest", "root": file_root}
            desired = [
                _Symbol("module", mod.name, f"module {mod.name}" + (" (package)" if mod.is_package else "")
                        + (f"\n\n{mod.doc}" if mod.doc else ""),
                        {"name": mod.name.rpartition(".")[2], "qualname": mod.name, "path": mod.file,
                         "package": mod.is_package, "source": "ingest", "root": root_label, "external": False}),
                *_unique_symbols(mod.symbols),
            ]
            for sym in desired:
                if sym.type == "class":
                    report.classes += 1
                elif sym.type == "function":
                    report.functions += 1
                elif sym.type == "method":
                    report.methods += 1
            report.modules += 1
            old_syms = by_file.get(mod.file, [])
            same = (
                old_file is not None
                and old_file["meta"].get("sha1") == mod.sha1
                and old_file["meta"].get("ingest_version") == INGEST_VERSION
                and {(n["type"], n["label"]) for n in old_syms} == {(s.type, s.label) for s in desired}
            )
            if same:
                report.unchanged += 1
                ids[("file", mod.file)] = old_file["id"]
                scope_ids.add(old_file["id"])
                for n in old_syms:
                    ids[(n["type"], n["label"])] = n["id"]
                    scope_ids.add(n["id"])
                continue
            report.changed += 1
            file_sym = _Symbol("file", mod.file, f"{mod.file} ({mod.data_lines} lines)", file_meta)
            for sym in [file_sym, *desired]:
                nid = _write_node(conn, lookup((sym.type, sym.label)), sym, now, report)
                ids[(sym.type, sym.label)] = nid
                scope_ids.add(nid)
            keep = {(s.type, s.label) for s in desired}
            for n in old_syms:
                if (n["type"], n["label"]) not in keep:
                    _delete_node(conn, n["id"])
                    deleted.add(n["id"])
                    report.nodes_removed += 1

        # files that disappeared from an ingested folder
        if path.is_dir():
            current = {m.file for m in modules} | failed_files
            for n in existing:
                if (n["type"] == "file" and n["meta"].get("source") == "ingest" and n["meta"].get("root") == root_label
                        and n["label"] not in current):
                    for sym in by_file.get(n["label"], []):
                        _delete_node(conn, sym["id"])
                        deleted.add(sym["id"])
                        report.nodes_removed += 1
                    _delete_node(conn, n["id"])
                    deleted.add(n["id"])
                    report.nodes_removed += 1
                    report.removed_files += 1

        # -- edges --------------------------------------------------------------------------
        by_key = {k: v for k, v in by_key.items() if v is not None and v["id"] not in deleted}
        resolver = _Resolver(modules, conn)
        desired_edges: dict[tuple[int, str, int], tuple[float, dict]] = {}

        def node_id(key):
            if key in ids:
                return ids[key]
            old = lookup(key)
            return old["id"] if old else None

        def want(src_key, etype, dst_key, weight, meta):
            src, dst = node_id(src_key), node_id(dst_key)
            if src is None or dst is None or src == dst and etype != "calls":
                return
            key = (src, etype, dst)
            old = desired_edges.get(key)
            if old is not None and (old[0], -old[1].get("line", 0)) >= (weight, -meta.get("line", 0)):
                return  # keep the strongest resolution, then the first line
            desired_edges[key] = (weight, {"source": "ingest", **meta})

        for mod in modules:
            want(("file", mod.file), "contains", ("module", mod.name), W_CONTAINS, {})
            for ptype, plabel, child in mod.contains:
                ctype = resolver.type_of(child)
                if ctype:
                    want((ptype, plabel), "contains", (ctype, child), W_CONTAINS, {})
            seen_imports: set[str] = set()
            for spec, line in mod.imports:
                target = None
                for cand in spec.split("|"):
                    known = lookup(("module", cand))
                    if cand in parsed_names or (known and not known["meta"].get("external")):
                        target = cand
                        break
                if target is None:
                    target = spec.split("|")[-1]
                if target == mod.name or target in seen_imports:
                    continue
                seen_imports.add(target)
                if node_id(("module", target)) is None:
                    sym = _Symbol("module", target, f"module {target} (external)",
                                  {"name": target.rpartition(".")[2], "qualname": target, "external": True,
                                   "source": "ingest"})
                    ids[("module", target)] = _write_node(conn, None, sym, now, report)
                want(("module", mod.name), "imports", ("module", target), W_IMPORTS, {"line": line})
            for cls_label, base_exprs, line in mod.bases:
                for expr in base_exprs:
                    base = resolver.resolve_dotted(expr, mod)
                    if base and resolver.type_of(base) == "class":
                        want(("class", cls_label), "inherits", ("class", base), W_INHERITS, {"line": line})
            for caller, kind, name, cls, line in mod.calls:
                hit = resolver.resolve_call(mod, kind, name, cls, caller)
                if hit is None:
                    continue
                target, weight, how = hit
                ttype = resolver.type_of(target)
                ctype = resolver.type_of(caller) or ("module" if caller == mod.name else None)
                if ttype and ctype:
                    want((ctype, caller), "calls", (ttype, target), weight, {"line": line, "resolution": how})
        report.edges = len(desired_edges)

        old_edges = _load_edges(conn, scope_ids)
        for key, (eid, weight, meta) in old_edges.items():
            if key not in desired_edges:
                conn.execute("DELETE FROM edges WHERE id=?", (eid,))
                report.edges_removed += 1
        for key, (weight, meta) in desired_edges.items():
            old = old_edges.get(key)
            if old is None:
                conn.execute(
                    "INSERT INTO edges(src, dst, type, weight, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT(src, type, dst) DO UPDATE SET weight=excluded.weight, metadata=excluded.metadata,"
                    " updated_at=excluded.updated_at",
                    (key[0], key[2], key[1], weight, json.dumps(meta), now, now))
                report.edges_added += 1
            elif old[1] != weight or old[2] != meta:
                conn.execute("UPDATE edges SET weight=?, metadata=?, updated_at=? WHERE id=?",
                             (weight, json.dumps(meta), now, old[0]))
        # external modules nothing imports any more (after edge diffs and cascaded node deletes)
        orphans = conn.execute(
            "SELECT id FROM nodes n WHERE type='module' AND json_extract(metadata, '$.external') = 1"
            " AND json_extract(metadata, '$.source') = 'ingest'"
            " AND NOT EXISTS (SELECT 1 FROM edges WHERE src=n.id) AND NOT EXISTS (SELECT 1 FROM edges WHERE dst=n.id)"
        ).fetchall()
        for (nid,) in orphans:
            _delete_node(conn, nid)
            report.nodes_removed += 1
    report.time_ms = (time.perf_counter() - started) * 1000
    return report


def _dedupe_module_names(modules: list[_Module], root: Path) -> None:
    """Give files that map to the same module name (scripts in different folders) path-based names."""
    seen: dict[str, list[_Module]] = {}
    for m in modules:
        seen.setdefault(m.name, []).append(m)
    base = root if root.is_dir() else root.parent
    for name, group in seen.items():
        if len(group) < 2:
            continue
        for m in group:
            rel = m.path.relative_to(base).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            m.name = ".".join(parts) or name


def _unique_symbols(symbols: list[_Symbol]) -> list[_Symbol]:
    """First definition wins when a name is defined twice (property setters, conditional defs)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for s in symbols:
        if (s.type, s.label) in seen or any((t, s.label) in seen for t in ("class", "function", "method")):
            continue
        seen.add((s.type, s.label))
        out.append(s)
    return out


def _load_code_nodes(conn, files: list[str], root_label: str) -> list[dict]:
    """Code nodes of the given files (by ``metadata.path``) and of earlier ingests of the same root."""
    rows = conn.execute(
        f"SELECT id, type, label, metadata FROM nodes WHERE type IN ({','.join('?' * len(CODE_TYPES))})"
        " AND (json_extract(metadata, '$.path') IN (SELECT value FROM json_each(?))"
        " OR json_extract(metadata, '$.root') = ?)",
        (*CODE_TYPES, json.dumps(files), root_label),
    ).fetchall()
    return [{"id": r["id"], "type": r["type"], "label": r["label"], "meta": json.loads(r["metadata"] or "{}")}
            for r in rows]


def _load_edges(conn, src_ids: set[int]) -> dict[tuple[int, str, int], tuple[int, float, dict]]:
    out = {}
    ids = sorted(src_ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        q = (f"SELECT id, src, dst, type, weight, metadata FROM edges WHERE src IN ({','.join('?' * len(chunk))})"
             f" AND type IN ({','.join('?' * len(CODE_EDGES))})")
        for r in conn.execute(q, (*chunk, *CODE_EDGES)):
            meta = json.loads(r["metadata"] or "{}")
            if meta.get("source") == "ingest":
                out[(r["src"], r["type"], r["dst"])] = (r["id"], r["weight"], meta)
    return out


def _write_node(conn, old: dict | None, sym: _Symbol, now: float, report: IngestReport) -> int:
    terms = f"{identifier_terms(sym.label)} {sym.meta.get('name', '')}".strip()
    if old is None:
        cur = conn.execute(
            "INSERT INTO nodes(type, label, content, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (sym.type, sym.label, sym.content, json.dumps(sym.meta), now, now))
        node_id = cur.lastrowid
        report.nodes_added += 1
    else:
        node_id = old["id"]
        meta = {**old["meta"], **sym.meta}
        conn.execute("UPDATE nodes SET content=?, metadata=?, updated_at=? WHERE id=?",
                     (sym.content, json.dumps(meta), now, node_id))
        conn.execute("DELETE FROM nodes_fts WHERE rowid=?", (node_id,))
        report.nodes_updated += 1
    conn.execute("INSERT INTO nodes_fts(rowid, label, terms, content) VALUES (?,?,?,?)",
                 (node_id, sym.label, terms, sym.content))
    return node_id


def _delete_node(conn, node_id: int) -> None:
    conn.execute("DELETE FROM nodes_fts WHERE rowid=?", (node_id,))
    conn.execute("DELETE FROM nodes WHERE id=?", (node_id,))


class _Resolver:
    """Name-based resolution of calls and base classes (see the module docstring)."""

    def __init__(self, modules: list[_Module], conn) -> None:
        self.conn = conn
        self.modules = {m.name: m for m in modules}
        self.types: dict[str, str] = {}
        self.stored: dict[str, str | None] = {}  # labels looked up in the database (other ingests)
        self.by_short: dict[str, list[str]] = {}
        self.methods_by_short: dict[str, list[str]] = {}
        self.bases: dict[str, list[str]] = {}
        for m in modules:
            for s in _unique_symbols(m.symbols):
                self.types.setdefault(s.label, s.type)
                short = s.meta["name"]
                if s.type == "method":
                    self.methods_by_short.setdefault(short, []).append(s.label)
                else:
                    self.by_short.setdefault(short, []).append(s.label)
        for m in modules:
            for cls, exprs, _ in m.bases:
                self.bases[cls] = [b for b in (self.resolve_dotted(e, m) for e in exprs) if b]

    def known(self, label: str) -> str | None:
        """The type of a class/function/method label parsed now or stored by an earlier ingest."""
        if label in self.types:
            return self.types[label]
        if label not in self.stored:
            row = self.conn.execute(
                "SELECT type FROM nodes WHERE label=? AND type IN ('class', 'function', 'method') LIMIT 1", (label,)
            ).fetchone()
            self.stored[label] = row[0] if row else None
        return self.stored[label]

    def type_of(self, label: str) -> str | None:
        if label in self.modules and label not in self.types:
            return "module"
        return self.known(label)

    def resolve_global(self, qual: str, depth: int = 0) -> str | None:
        if self.known(qual):
            return qual
        if depth > 5:
            return None
        parts = qual.split(".")
        for i in range(len(parts) - 1, 0, -1):
            mod = self.modules.get(".".join(parts[:i]))
            if mod is None:
                continue
            name, rest = parts[i], parts[i + 1:]
            if name in mod.aliases:
                return self.resolve_global(".".join([mod.aliases[name], *rest]), depth + 1)
            return None
        return None

    def resolve_dotted(self, dotted: str, mod: _Module) -> str | None:
        head, _, rest = dotted.partition(".")
        if head in mod.defs:
            base = mod.defs[head]
        elif head in mod.aliases:
            base = mod.aliases[head]
        else:
            return None
        return self.resolve_global(f"{base}.{rest}" if rest else base)

    def find_method(self, cls: str, name: str, seen: set[str] | None = None) -> str | None:
        seen = seen if seen is not None else set()
        if cls in seen:
            return None
        seen.add(cls)
        qual = f"{cls}.{name}"
        if self.known(qual) == "method":
            return qual
        for base in self.bases.get(cls, []):
            hit = self.find_method(base, name, seen)
            if hit:
                return hit
        return None

    def resolve_call(self, mod: _Module, kind: str, name: str, cls: str | None,
                     caller: str | None = None) -> tuple[str, float, str] | None:
        if kind == "name":
            if name in mod.defs:
                return self._found(mod.defs[name], W_EXACT, "module")
            if name in mod.aliases:
                hit = self.resolve_global(mod.aliases[name])
                return (hit, W_EXACT, "import") if hit else None
            if name in _BUILTIN_NAMES:
                return None
            cands = self.by_short.get(name, [])
            return (cands[0], W_UNIQUE_NAME, "unique-name") if len(cands) == 1 else None
        if kind == "dotted":
            head, _, attr = name.partition(".")
            local = mod.local_types.get(caller or "", {})
            if head in local and "." not in attr:  # x = Foo(...); x.meth()  or  def f(x: Foo): x.meth()
                owner = self.resolve_dotted(local[head], mod)
                if owner and self.known(owner) == "class":
                    hit = self.find_method(owner, attr)
                    return (hit, W_LOCAL_TYPE, "local-type") if hit else None
            if head in mod.defs or head in mod.aliases:
                hit = self.resolve_dotted(name, mod)
                return (hit, W_EXACT, "import") if hit else None
            return self._unique_method(name.rsplit(".", 1)[-1])
        if kind == "self" and cls:
            hit = self.find_method(cls, name)
            if hit:
                return hit, W_SELF, "self"
            return None
        if kind == "super" and cls:
            for base in self.bases.get(cls, []):
                hit = self.find_method(base, name)
                if hit:
                    return hit, W_SELF, "super"
            return None
        if kind == "attr":
            return self._unique_method(name)
        return None

    def _found(self, label: str, weight: float, how: str):
        return (label, weight, how) if self.known(label) else None

    def _unique_method(self, name: str):
        if name.startswith("__") or name in _BUILTIN_METHODS:
            return None
        cands = self.methods_by_short.get(name, [])
        return (cands[0], W_UNIQUE_METHOD, "unique-method") if len(cands) == 1 else None
