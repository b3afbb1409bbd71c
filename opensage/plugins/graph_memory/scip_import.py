"""``@memory-ingest scip=index.scip``: definitions and references from a SCIP index.

A SCIP index (https://github.com/sourcegraph/scip) is what compiler-grade indexers write:
``scip-python`` and ``scip-typescript`` (npm), ``scip-go``, ``rust-analyzer scip``, and
others. It is read with the ``protobuf`` runtime and the bindings generated from upstream
``scip.proto`` (scip_pb2.py, see scripts/gen_scip_pb2.py), turned into the same per-file
records the tree-sitter and Python ingests fill, and written by the same writer, so the
node/edge vocabulary, namespaces, one-file refresh and ``@memory-query mode=code`` are shared.

Mapping (docs/code-graph.md has the table):

* each ``Document`` -> a ``file`` node and a ``module`` node (its path, suffix dropped,
  ``/`` -> ``.``; ``__init__`` and ``index`` name their folder);
* a global symbol's definition occurrence -> a node named from its descriptors
  (namespaces dotted, file suffixes dropped): type ``#`` -> ``class``
  (``metadata.kind`` from ``SymbolInformation.kind``), method ``().`` -> ``method``
  under a type, else ``function``; term ``.`` -> ``attribute`` under a type, else
  ``variable``. Locals, parameters, type parameters, macros and meta descriptors are not nodes;
* ``contains``: the definition's parent descriptor when it is defined in the same
  document, else the module;
* every other occurrence of a symbol defined in the imported documents (or stored from an
  earlier ingest) -> ``calls`` when the target is a function or method, else
  ``references``, from the innermost class/function/method whose range holds the
  occurrence (``enclosing_range`` when the indexer writes it; else from the definition's
  line to the next definition outside it), or from the module. SCIP has no call role, so
  a function passed as a value also counts as a call here;
* ``Import`` occurrences -> ``imports`` of the symbol's namespace module;
* ``Relationship.is_implementation`` between types -> ``inherits`` (the type's
  ``metadata.implements`` lists the targets; SCIP uses it for base classes and interfaces alike);
  ``is_type_definition`` -> ``references`` from the symbol to its type.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from opensage.errors import UsageError

__all__ = ["MAX_SCIP_BYTES", "MAX_DOCUMENTS", "MAX_OCCURRENCES", "read_index", "modules_from_index"]

#: Largest index read (bytes). The protobuf runtime holds the whole message in memory, a few
#: times its size; 256 MB covers a million-line project (scip-python on networkx: ~25 MB).
MAX_SCIP_BYTES = 256 << 20
MAX_DOCUMENTS = 200_000
MAX_OCCURRENCES = 20_000_000
_SUFFIX = re.compile(r"\.(py|pyi|ts|tsx|mts|cts|js|jsx|mjs|cjs|go|rs|java|kt|scala|rb|cs|c|cc|cpp|h|hpp)$")
_IDENT = re.compile(r"[A-Za-z0-9_+\-$]+")
_DEFINITION, _IMPORT = 1, 2


def read_index(path: Path):
    """Parse a SCIP index file.

    :returns: a ``scip_pb2.Index``.
    :raises UsageError: missing, larger than :data:`MAX_SCIP_BYTES`, not a SCIP index
        (undecodable, truncated, or without metadata and documents), or over the document /
        occurrence bounds.
    """
    from google.protobuf.message import DecodeError

    from opensage.plugins.graph_memory import scip_pb2

    if not path.is_file():
        raise UsageError(f"argument 'scip': {str(path)!r} is not a file; give the path of an index.scip written by a "
                         "SCIP indexer (e.g. scip-python index . --output index.scip).")
    size = path.stat().st_size
    if size > MAX_SCIP_BYTES:
        raise UsageError(f"argument 'scip': {str(path)!r} is {size / 2**20:.0f} MB, over the {MAX_SCIP_BYTES >> 20} MB "
                         "limit; index a smaller part of the project (indexers take a folder or tsconfig).")
    index = scip_pb2.Index()
    try:
        index.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"argument 'scip': {str(path)!r} is not a readable SCIP index (protobuf: {exc}); it may be "
                         "truncated or another kind of file. Re-run the indexer.") from None
    if not index.HasField("metadata") or not index.metadata.tool_info.name and not index.documents:
        raise UsageError(f"argument 'scip': {str(path)!r} is not a SCIP index (no metadata and no documents); "
                         "give the file a SCIP indexer wrote.")
    if len(index.documents) > MAX_DOCUMENTS:
        raise UsageError(f"argument 'scip': {len(index.documents)} documents, over the {MAX_DOCUMENTS} limit.")
    total = sum(len(d.occurrences) for d in index.documents)
    if total > MAX_OCCURRENCES:
        raise UsageError(f"argument 'scip': {total} occurrences, over the {MAX_OCCURRENCES} limit.")
    for d in index.documents:
        rel = d.relative_path
        if not rel or rel.startswith("/") or "\\" in rel or ".." in rel.split("/"):
            raise UsageError(f"argument 'scip': document path {rel!r} is not a relative path inside the project; "
                             "the index is malformed.")
    return index


def _descriptors(symbol: str) -> list[tuple[str, str]] | None:
    """[(name, suffix)] of a global SCIP symbol; suffix is one of ``/ # . : ! ( [ m``
    (``m`` a method ``name(disambiguator).``); None for locals or a malformed symbol."""
    if not symbol or symbol.startswith("local "):
        return None
    # scheme, manager, package name, version: four space-separated fields ("  " escapes a space)
    pos, fields = 0, 0
    while fields < 4:
        nxt = symbol.find(" ", pos)
        while nxt != -1 and nxt + 1 < len(symbol) and symbol[nxt + 1] == " ":
            nxt = symbol.find(" ", nxt + 2)
        if nxt == -1:
            return None
        pos, fields = nxt + 1, fields + 1
    desc, out, i = symbol[pos:], [], 0
    while i < len(desc):
        c = desc[i]
        if c in "([":  # parameter (name) or type parameter [name]
            close = desc.find(")" if c == "(" else "]", i)
            if close == -1:
                return None
            out.append((desc[i + 1:close], c))
            i = close + 1
            continue
        if c == "`":
            j, name = i + 1, []
            while j < len(desc):
                if desc[j] == "`":
                    if j + 1 < len(desc) and desc[j + 1] == "`":
                        name.append("`")
                        j += 2
                        continue
                    break
                name.append(desc[j])
                j += 1
            name_s, i = "".join(name), j + 1
        else:
            m = _IDENT.match(desc, i)
            if m is None:
                return None
            name_s, i = m.group(0), m.end()
        if i >= len(desc):
            return None
        suffix = desc[i]
        if suffix == "(":  # method: name(disambiguator).
            close = desc.find(").", i)
            if close == -1:
                return None
            out.append((name_s, "m"))
            i = close + 2
            continue
        if suffix not in "/#.:!":
            return None
        out.append((name_s, suffix))
        i += 1
    return out


def _module_parts(name: str) -> list[str]:
    parts = [p for p in _SUFFIX.sub("", name).replace("/", ".").split(".") if p]
    while parts and parts[-1] in ("__init__", "index"):
        parts.pop()
    return parts


def qualify(symbol: str) -> tuple[str, str, str] | None:
    """(qualified name, node type, parent qualified name) of a global SCIP symbol; None for
    locals, parameters, type parameters, macros and meta descriptors (and namespaces:
    (module name, ``module``, ''))."""
    desc = _descriptors(symbol)
    if not desc:
        return None
    names: list[str] = []
    kinds: list[str] = []
    for i, (name, suffix) in enumerate(desc):
        if suffix == ":" and name == "__init__" and i == len(desc) - 1 and names:
            return ".".join(names), "module", ""  # scip-python's module symbol: `pkg.mod`/__init__:
        if suffix in "([:!":
            return None
        if suffix == "/":
            names.extend(_module_parts(name))
            kinds.extend("/" * len(_module_parts(name)))
        else:
            names.append(name.replace("<constructor>", "constructor"))
            kinds.append(suffix)
    if not names:
        return None
    last = kinds[-1]
    parent_kind = kinds[-2] if len(kinds) > 1 else "/"
    qual, parent = ".".join(names), ".".join(names[:-1])
    if last == "/":
        return qual, "module", ""
    if last == "#":
        return qual, "class", parent
    if last == "m":
        return qual, "method" if parent_kind == "#" else "function", parent
    return qual, "attribute" if parent_kind == "#" else "variable", parent


def _file_label(project_root: str, rel: str, workspace_root: Path, index_dir: Path) -> str:
    """The file label of a document: under the index's ``project_root``; when that is outside
    the workspace (an index built elsewhere) but the file sits next to the index, there."""
    root = project_root
    if root.startswith("file:"):
        root = unquote(urlparse(root).path)
    ws = Path(os.path.abspath(workspace_root))
    for base in (Path(root or index_dir), index_dir):
        full = Path(os.path.abspath(base / rel))
        try:
            return full.relative_to(ws).as_posix()
        except ValueError:
            continue
    return Path(os.path.abspath(Path(root or index_dir) / rel)).as_posix()


def modules_from_index(index, root_label: str, workspace_root: Path, module_cls, symbol_cls,
                       index_dir: Path | None = None) -> list:
    """The per-file records (``ingest._Module``) of a parsed index; see the module docstring."""
    from opensage.plugins.graph_memory import scip_pb2

    Kind = scip_pb2.SymbolInformation.Kind
    project_root = index.metadata.project_root
    tool = index.metadata.tool_info.name or "scip"
    mods = []
    for doc in index.documents:
        rel = doc.relative_path
        label = _file_label(project_root, rel, workspace_root, index_dir or Path(workspace_root))
        name = ".".join(_module_parts(rel)) or rel
        mod = module_cls(name, Path(rel), label, "", 0, None, rel.endswith(("__init__.py", "/index.ts", "/index.js")))
        mod.rel = rel
        mod.sha1 = hashlib.sha1(doc.SerializeToString(deterministic=True)).hexdigest()
        info = {s.symbol: s for s in doc.symbols}
        defs: dict[str, tuple[str, str, str]] = {}  # symbol -> (qual, type, parent)
        spans: list[tuple[int, int, str, str]] = []  # (start line, end line or -1, qual, class)
        max_line = 0
        for occ in doc.occurrences:
            if not occ.range:
                continue
            line = occ.range[0] + 1
            max_line = max(max_line, line)
            if not occ.symbol_roles & _DEFINITION or occ.symbol in defs:
                continue
            q = qualify(occ.symbol)
            if q is None or q[1] == "module":
                continue
            qual, ntype, parent = q
            defs[occ.symbol] = q
            si = info.get(occ.symbol)
            meta: dict[str, Any] = {"name": qual.rpartition(".")[2], "qualname": qual, "path": label, "module": name,
                                    "line": line, "end_line": (occ.enclosing_range[2] + 1 if len(occ.enclosing_range) == 4
                                                              else occ.enclosing_range[0] + 1 if occ.enclosing_range
                                                              else line),
                                    "source": "ingest", "root": root_label, "language": doc.language or "",
                                    "scip_symbol": occ.symbol, "resolution_source": tool}
            if si is not None and si.kind:
                meta["kind"] = Kind.Name(si.kind).lower()
            if ntype in ("method", "attribute"):
                meta["class"] = parent
            head = (si.display_name if si is not None and si.display_name else meta["name"])
            mod.symbols.append(symbol_cls(ntype, qual, f"{ntype} {head}", meta))
            if ntype in ("class", "function", "method"):
                end = occ.enclosing_range[2] + 1 if len(occ.enclosing_range) == 4 else (
                    occ.enclosing_range[0] + 1 if occ.enclosing_range else -1)
                spans.append((line, end, qual, parent if ntype == "method" else (qual if ntype == "class" else "")))
        # containment: the parent definition when it is in this document, else the module
        local = {q[0]: q[1] for q in defs.values()}
        for qual, ntype, parent in defs.values():
            ptype = local.get(parent)
            mod.contains.append((ptype, parent, qual) if ptype in ("class", "function", "method")
                                else ("module", name, qual))
            if parent == name or ptype is None:
                mod.defs.setdefault(qual.rpartition(".")[2], qual)
        # spans without enclosing_range end before the next definition outside them
        spans.sort()
        fixed = []
        for i, (start, end, qual, cls) in enumerate(spans):
            if end < 0:
                end = max_line + 1
                for start2, _e, q2, _c in spans[i + 1:]:
                    if start2 > start and not q2.startswith(qual + "."):
                        end = start2 - 1
                        break
            fixed.append((start, end, qual, cls))
        mod.data_lines = max_line
        # lines of import statements (scip-python marks them only by naming the module there)
        import_lines = {o.range[0] + 1 for o in doc.occurrences if o.range and not o.symbol_roles & _DEFINITION and (
            o.symbol_roles & _IMPORT or (qualify(o.symbol) or ("", ""))[1] == "module")}
        for occ in doc.occurrences:
            if not occ.range or occ.symbol_roles & _DEFINITION or occ.symbol.startswith("local "):
                continue
            q = qualify(occ.symbol)
            if q is None:
                continue
            line = occ.range[0] + 1
            if q[1] == "module" or occ.symbol_roles & _IMPORT:  # a module named (scip-python) or imported
                target = q[0] if q[1] == "module" else q[2]
                if target and target != name:
                    mod.imports.append((target, line))
                if q[1] == "module":
                    continue
            holder = [s for s in fixed if s[0] <= line <= s[1]]
            user, cls = (holder[-1][2], holder[-1][3] or None) if holder else (name, None)
            if user == name and line in import_lines:
                continue  # the names an import statement brings in are not uses

            edge = "calls" if q[1] in ("function", "method") else "references"
            mod.uses.append((user, edge, "qual", q[0], cls, line))
        for sym, si in info.items():
            q = defs.get(sym) or qualify(sym)
            if q is None or q[1] == "module":
                continue
            impl = []
            for r in si.relationships:
                other = qualify(r.symbol)
                if other is None or other[1] == "module":
                    continue
                if r.is_implementation and q[1] == "class" and other[1] == "class":
                    impl.append(f"={other[0]}")
                if r.is_type_definition:
                    mod.uses.append((q[0], "references", "qual", other[0], None, 0))
            if impl:
                mod.bases.append((q[0], impl, 0, name))
                for s in mod.symbols:
                    if s.label == q[0]:
                        s.meta["implements"] = [b[1:] for b in impl]
        mods.append(mod)
    return mods
