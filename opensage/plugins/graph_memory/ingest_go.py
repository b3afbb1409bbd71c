"""Go files for the code graph, through tree-sitter (the ``tree-sitter-go`` wheel).

Fills the same per-file record as the Python ingest (see ingest_ts.py for the idea). A Go
package is a folder, so names are per package, not per file: definitions are
``<package>.<Name>`` where ``<package>`` is the folder below the ingested one, dotted
(``shapes/circle.go`` defines ``shapes.Circle``), and the ingested folder itself is the
last element of the ``module`` line of its ``go.mod`` (else the ``package`` clause name).
Each file's own module node is the file path dotted with its suffix (``shapes.circle.go``),
so it never collides with a function named like the file.

Extracted: structs, interfaces and other named types (``class`` nodes with
``metadata.kind`` ``struct``/``interface``/``type``), struct fields (``attribute``),
functions, methods (on the receiver's type, ``*T`` and ``T`` alike; interface methods
too), ``const``/``var`` (``variable``); imports; calls (``f()``, ``pkg.F()``,
``recv.m()``, ``x.m()``); composite literals and type names as ``references``; embedded
struct fields and embedded interfaces as ``inherits``.

``implements``: Go interfaces are implicit. After all files are read,
:func:`link_implements` adds an ``inherits`` edge T -> I (``metadata.implements``) when the
method **names** of interface I (its embedded interfaces included, when they are in the
ingested files) are a subset of the method names declared on T (both receiver kinds).
Signatures are not compared, so this is a method-set match by name only. A one-file
refresh re-reads the other files of the same package folder for method names, so
implements edges within a package survive it; across packages they are recomputed only by
a folder ingest. Resolved by name only elsewhere too: ``x.m()`` on a value whose type is
not written down links only when one method in the ingested files is named ``m``.
"""

from __future__ import annotations


import os
import re
from pathlib import Path
from typing import Any

from opensage.plugins.graph_memory import syntax

__all__ = ["EXTENSIONS", "available", "extract", "link_implements"]

EXTENSIONS = {".go": "go"}
_MODULE_RE = re.compile(rb"^\s*module\s+(\S+)", re.M)
_MAX_GOMOD_BYTES = 1 << 20
_PREDECLARED = {"error", "any", "comparable"}
#: Method names of the standard-library interfaces most often embedded (from the Go
#: standard library documentation), so an interface embedding them stays decidable.
_STD_INTERFACES = {"error": {"Error"}, "any": set(), "fmt.Stringer": {"String"}, "io.Reader": {"Read"},
                   "io.Writer": {"Write"}, "io.Closer": {"Close"}, "io.ReadWriter": {"Read", "Write"},
                   "io.ReadCloser": {"Read", "Close"}, "io.WriteCloser": {"Write", "Close"},
                   "sort.Interface": {"Len", "Less", "Swap"}}


def available() -> bool:
    """True when tree-sitter and the Go grammar import."""
    return syntax.available("tree_sitter_go")


def _parser():
    return syntax.parser("tree_sitter_go")


_text = syntax.node_text
_line = syntax.node_line
_head = syntax.signature_head


def _type_name(node) -> str:
    """``*Circle`` -> ``Circle``, ``List[T]`` -> ``List``, ``pkg.T`` -> ``pkg.T``."""
    while node is not None and node.type in ("pointer_type", "generic_type", "parenthesized_type"):
        node = node.child_by_field_name("type") or (node.named_children[0] if node.named_children else None)
    if node is None:
        return ""
    return _text(node).split("[", 1)[0]


def _root_of(mod) -> Path:
    """The ingested folder: the file's path minus its path below that folder."""
    path = Path(mod.path)
    for _ in mod.rel.split("/"):
        path = path.parent
    return path


def _go_module(root: Path) -> str:
    """The ``module`` path of ``root/go.mod`` ('' when absent or unreadable)."""
    try:
        gomod = root / "go.mod"
        if gomod.is_file() and gomod.stat().st_size <= _MAX_GOMOD_BYTES:
            m = _MODULE_RE.search(gomod.read_bytes())
            return m.group(1).decode("utf-8", "replace") if m else ""
    except OSError:
        return ""
    return ""


def package_of(mod, clause: str) -> str:
    """The package qualified name of a Go file record (see the module docstring)."""
    folder = mod.rel.rsplit("/", 1)[0] if "/" in mod.rel else ""
    if folder:
        return folder.replace("/", ".")
    gomod = _go_module(_root_of(mod))
    return gomod.rsplit("/", 1)[-1] if gomod else (clause or Path(mod.path).parent.name)


class _GoExtractor:
    def __init__(self, mod, root_label: str, symbol_cls) -> None:
        self.mod, self.root_label, self.Symbol = mod, root_label, symbol_cls
        self.pkg = ""
        self.gomod = ""
        self.receivers: dict[str, str] = {}  # method -> receiver variable name

    def define(self, node_type: str, node, name: str, prefix: str, parent, **extra) -> str:
        qual = f"{prefix}.{name}"
        meta = {"name": name, "qualname": qual, "path": self.mod.file, "module": self.mod.name, "line": _line(node),
                "end_line": node.end_point[0] + 1, "source": "ingest", "root": self.root_label, "language": "go",
                "package": self.pkg, **extra}
        self.mod.symbols.append(self.Symbol(node_type, qual, _head(node), meta))
        self.mod.contains.append((*parent, qual))
        if prefix == self.pkg:
            self.mod.defs.setdefault(name, qual)
        return qual

    def import_target(self, path: str) -> tuple[str, str]:
        """(package qualified name, module node to link) of an import path; external when not ingested."""
        if self.gomod and (path == self.gomod or path.startswith(self.gomod + "/")):
            rest = path[len(self.gomod):].strip("/")
            if not rest:
                return self.gomod.rsplit("/", 1)[-1], ""
            folder = _root_of(self.mod) / rest
            first = ""
            try:
                files = sorted(f for f in os.listdir(folder) if f.endswith(".go"))
                first = f"{rest}/{files[0]}".replace("/", ".") if files else ""
            except OSError:
                pass
            return rest.replace("/", "."), first
        return "", path

    def run(self, root) -> None:
        clause = next((c for c in root.named_children if c.type == "package_clause"), None)
        name = next((c for c in clause.named_children), None) if clause is not None else None
        self.gomod = _go_module(_root_of(self.mod))
        self.pkg = package_of(self.mod, _text(name))
        parent = ("module", self.mod.name)
        # the other files of this package: their names resolve like this file's own
        self.mod.star_imports.append(self.pkg)
        for item in root.named_children:
            t = item.type
            if t == "import_declaration":
                specs = [s for c in item.named_children for s in ([c] if c.type == "import_spec" else c.named_children)
                         if s.type == "import_spec"]
                for spec in specs:
                    path = _text(spec.child_by_field_name("path")).strip('"`')
                    alias = spec.child_by_field_name("name")
                    pkg, target = self.import_target(path)
                    if target:
                        self.mod.imports.append((target, _line(spec)))
                    local = _text(alias) if alias is not None else path.rsplit("/", 1)[-1]
                    if pkg and local == ".":
                        self.mod.star_imports.append(pkg)
                    elif local not in (".", "_"):
                        self.mod.aliases[local] = pkg or path  # external: the import path, never resolved
            elif t == "type_declaration":
                for spec in item.named_children:
                    if spec.type in ("type_spec", "type_alias") and spec.child_by_field_name("name") is not None:
                        self.type_spec(spec, parent)
            elif t == "function_declaration":
                self.function(item, self.pkg, parent, None, "function")
            elif t == "method_declaration":
                recv = item.child_by_field_name("receiver")
                decl = next((c for c in recv.named_children if c.type == "parameter_declaration"), None) \
                    if recv is not None else None
                tname = _type_name(decl.child_by_field_name("type")) if decl is not None else ""
                if not tname or "." in tname:
                    continue
                cls = f"{self.pkg}.{tname}"
                qual = self.function(item, cls, ("class", cls), cls, "method",
                                     receiver=_text(decl.child_by_field_name("name")))
                self.mod.local_names.setdefault(qual, set())
            elif t in ("const_declaration", "var_declaration"):
                for spec in item.named_children:
                    if spec.type not in ("const_spec", "var_spec"):
                        continue
                    for n in spec.children_by_field_name("name"):
                        qual = self.define("variable", spec, _text(n), self.pkg, parent,
                                           constant=t == "const_declaration")
                        self.uses(spec.child_by_field_name("value"), qual, None, "")
                        self.uses(spec.child_by_field_name("type"), qual, None, "")

    def qualify(self, tname: str) -> str:
        """A type name as ``=<qualified>`` (``pkg.T`` through the imports; ``T`` in this package)."""
        if not tname:
            return ""
        head, _, rest = tname.partition(".")
        if rest:
            return f"={self.mod.aliases[head]}.{rest}" if head in self.mod.aliases else ""
        return f"={tname}" if tname in _PREDECLARED else f"={self.pkg}.{tname}"

    def type_spec(self, spec, parent) -> None:
        name = _text(spec.child_by_field_name("name"))
        body = spec.child_by_field_name("type")
        kind = {"struct_type": "struct", "interface_type": "interface"}.get(body.type if body is not None else "",
                                                                          "type")
        qual = self.define("class", spec, name, self.pkg, parent, kind=kind)
        embedded: list[str] = []
        if kind == "struct":
            fields = next((c for c in body.named_children if c.type == "field_declaration_list"), None)
            for f in fields.named_children if fields is not None else ():
                if f.type != "field_declaration":
                    continue
                names = f.children_by_field_name("name")
                if not names:  # an embedded field: its methods are promoted
                    tname = self.qualify(_type_name(f.child_by_field_name("type")))
                    if tname:
                        embedded.append(tname)
                for n in names:
                    self.define("attribute", f, _text(n), qual, ("class", qual), **{"class": qual})
                self.uses(f.child_by_field_name("type"), qual, qual, "")
        elif kind == "interface":
            methods = []
            for m in body.named_children:
                if m.type in ("method_elem", "method_spec") and m.child_by_field_name("name") is not None:
                    mname = _text(m.child_by_field_name("name"))
                    mq = self.define("method", m, mname, qual, ("class", qual), **{"class": qual})
                    methods.append(mname)
                    for fld in ("parameters", "result"):
                        self.uses(m.child_by_field_name(fld), mq, qual, "")
                elif m.type == "type_elem" and "|" not in _text(m) and "~" not in _text(m):
                    for tn in m.named_children:
                        tname = self.qualify(_type_name(tn))
                        if tname:
                            embedded.append(tname)
            for s in self.mod.symbols:
                if s.label == qual:
                    s.meta["interface_methods"] = methods
        else:
            self.uses(body, qual, None, "")
        if embedded:
            self.mod.bases.append((qual, embedded, _line(spec), self.pkg))

    def function(self, node, prefix, parent, cls, kind, receiver: str = "") -> str:
        name = _text(node.child_by_field_name("name"))
        extra: dict[str, Any] = {"class": cls} if kind == "method" else {}
        qual = self.define(kind, node, name, prefix, parent, **extra)
        for field_name in ("parameters", "result", "type_parameters"):
            self.uses(node.child_by_field_name(field_name), qual, cls, receiver)
        self.uses(node.child_by_field_name("body"), qual, cls, receiver)
        return qual

    def selector(self, operand, field, caller, cls, receiver, edge, line) -> bool:
        """Record ``operand.field``; True when handled (the operand needs no further walk)."""
        head = _text(operand)
        if operand.type == "identifier" and receiver and head == receiver:
            self.mod.uses.append((caller, edge, "self", _text(field), cls, line))
            return True
        if operand.type in ("identifier", "package_identifier") and head in self.mod.aliases:
            self.mod.uses.append((caller, edge, "qual", f"{self.mod.aliases[head]}.{_text(field)}", cls, line))
            return True
        if edge == "calls":
            self.mod.uses.append((caller, "calls", "attr", _text(field), cls, line))
        return False

    def uses(self, node, caller: str, cls: str | None, receiver: str) -> None:
        if node is None:
            return
        append = self.mod.uses.append
        stack = [node]
        while stack:
            n = stack.pop()
            t = n.type
            if t == "call_expression":
                fn = n.child_by_field_name("function")
                if fn is not None and fn.type == "identifier":
                    append((caller, "calls", "name", _text(fn), cls, _line(n)))
                elif fn is not None and fn.type == "selector_expression":
                    operand, field = fn.child_by_field_name("operand"), fn.child_by_field_name("field")
                    if operand is not None and field is not None and not self.selector(
                            operand, field, caller, cls, receiver, "calls", _line(n)):
                        stack.append(operand)
                elif fn is not None:
                    stack.append(fn)
                args = n.child_by_field_name("arguments")
                if args is not None:
                    stack.extend(args.named_children)
                continue
            if t == "selector_expression":
                operand, field = n.child_by_field_name("operand"), n.child_by_field_name("field")
                if operand is not None and field is not None and self.selector(
                        operand, field, caller, cls, receiver, "references", _line(n)):
                    continue
            if t == "qualified_type":
                pkg, name = n.child_by_field_name("package"), n.child_by_field_name("name")
                if _text(pkg) in self.mod.aliases:
                    append((caller, "references", "qual", f"{self.mod.aliases[_text(pkg)]}.{_text(name)}", cls,
                            _line(n)))
                continue
            if t == "type_identifier":
                append((caller, "references", "name", _text(n), cls, _line(n)))
                continue
            if t == "func_literal":
                stack.extend(n.named_children)
                continue
            stack.extend(n.named_children)


def extract(mod, root_label: str, symbol_cls, data: bytes) -> None:
    """Fill ``mod`` (the Python ingest's per-file record) from a Go file.

    :raises ImportError: tree-sitter or the Go grammar is not installed.
    """
    tree = _parser().parse(data)
    _GoExtractor(mod, root_label, symbol_cls).run(tree.root_node)


def _rename_duplicates(go: list) -> None:
    """A package may define one name in several files (``func init()`` in each, build-tagged
    variants ``open_linux.go``/``open_windows.go``): the second and later get ``@<file>``."""
    seen: set[tuple[str, str]] = set()
    for m in go:
        renamed: dict[str, str] = {}
        for sym in m.symbols:
            key = (sym.type, sym.label)
            if key in seen or sym.label in renamed:
                new = f"{sym.label}@{Path(m.path).name}"
                renamed[sym.label] = new
            else:
                seen.add(key)
        if not renamed:
            continue

        def fix(q: str) -> str:
            head = q
            while head and head not in renamed:
                head = head.rpartition(".")[0]
            return renamed[head] + q[len(head):] if head else q

        for sym in m.symbols:
            sym.label = fix(sym.label)
            sym.meta["qualname"] = fix(sym.meta["qualname"])
            if sym.meta.get("class"):
                sym.meta["class"] = fix(sym.meta["class"])
        m.contains[:] = [(t, fix(p), fix(c)) for t, p, c in m.contains]
        m.defs.update({k: fix(v) for k, v in m.defs.items()})
        m.uses[:] = [(fix(u), *rest) for u, *rest in m.uses]
        m.bases[:] = [(fix(c), b, ln, sc) for c, b, ln, sc in m.bases]
        m.local_names = {fix(k): v for k, v in m.local_names.items()}


def link_implements(modules: list, root_label: str, symbol_cls, module_cls) -> None:
    """Add ``T -> I`` bases (implicit interface satisfaction, by method names) to the Go records.

    :param modules: the file records parsed now (non-Go ones are ignored).
    Other ``.go`` files of the same package folders (a one-file refresh) are read for their
    method names only; files larger than 4 MB are skipped there.
    """
    go = [m for m in modules if Path(m.path).suffix == ".go"]
    if not go:
        return
    _rename_duplicates(go)
    seen = {Path(m.path).resolve() for m in go}
    extra: list = []
    for m in go:
        folder = Path(m.path).parent
        try:
            siblings = sorted(folder.glob("*.go"))
        except OSError:
            continue
        for f in siblings:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            try:
                if f.stat().st_size > 4 << 20:
                    continue
                data = f.read_bytes()
            except OSError:
                continue
            rel = (m.rel.rsplit("/", 1)[0] + "/" if "/" in m.rel else "") + f.name
            other = module_cls(rel.replace("/", "."), f, "", "", 0, None, False)
            other.rel = rel
            extract(other, root_label, symbol_cls, data)
            extra.append(other)
    methods: dict[str, set[str]] = {}
    interfaces: dict[str, tuple[list[str], list[str]]] = {}  # qual -> (methods, embedded names resolved)
    structs: dict[str, Any] = {}
    for m in [*go, *extra]:
        for s in m.symbols:
            if s.type == "method" and s.meta.get("class"):
                methods.setdefault(s.meta["class"], set()).add(s.meta["name"])
            elif s.type == "class" and s.meta.get("kind") == "interface":
                interfaces[s.label] = (s.meta.get("interface_methods") or [], [])
            elif s.type == "class":
                structs[s.label] = m
        for cls, embedded, _, _ in m.bases:
            if cls in interfaces:
                interfaces[cls][1].extend(e[1:] for e in embedded)

    def method_set(iface: str, depth: int = 0) -> set[str] | None:
        own, emb = interfaces[iface]
        names = set(own)
        for e in emb:
            if e in _STD_INTERFACES:
                names |= _STD_INTERFACES[e]
                continue
            if e not in interfaces or depth > 10:
                return None  # an embedded interface outside the ingested files: not decidable
            sub = method_set(e, depth + 1)
            if sub is None:
                return None
            names |= sub
        return names

    sets = {i: method_set(i) for i in interfaces}
    for typ, mod in structs.items():
        if mod not in go:
            continue
        have = methods.get(typ, set())
        impl = sorted(i for i, need in sets.items() if need and need <= have)
        if impl:
            mod.bases.append((typ, [f"={i}" for i in impl], 0, typ.rpartition(".")[0]))
            for s in mod.symbols:
                if s.label == typ:
                    s.meta["implements"] = impl
