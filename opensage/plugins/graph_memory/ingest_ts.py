"""TypeScript and JavaScript files for the code graph, through tree-sitter.

The ``tree-sitter`` package with the ``tree-sitter-typescript`` and
``tree-sitter-javascript`` grammar wheels (core dependencies: small binary wheels, no
download at run time) parses each file; this
module fills the same per-file record the Python ingest fills (symbols, containment,
imports, raw uses, base classes), so nodes, edges, namespaces, incremental re-ingest and
``@memory-query mode=code`` are shared with Python (see docs/code-graph.md).

What is extracted: classes (``class``, ``abstract class``), interfaces (``class`` nodes
with ``metadata.kind = "interface"``), functions (declarations and ``const f = () =>``
/ ``function`` expressions), methods (class methods, interface method signatures),
``import`` statements, calls (``f()``, ``new C()``, ``this.m()``, ``o.m()``), class
``extends`` and ``implements`` (both ``inherits`` edges; ``metadata.implements`` lists
the interfaces).

Resolved **by name only** (no type checker): a bare name through the file's own
definitions and its ``import``s of relative paths (``./models`` -> the ingested file),
``this.m()`` through the class and its bases, ``o.m()`` only when exactly one method in
the ingested files has that name; package imports (``react``) become external modules.
"""

from __future__ import annotations

import posixpath
from typing import Any

__all__ = ["EXTENSIONS", "available", "extract"]

#: File suffix -> grammar.
EXTENSIONS = {".ts": "typescript", ".tsx": "tsx", ".mts": "typescript", ".cts": "typescript",
              ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript"}
_PARSERS: dict[str, Any] = {}
_CLASS_TYPES = {"class_declaration", "abstract_class_declaration", "class"}
_FUNCTION_TYPES = {"function_declaration", "generator_function_declaration"}
_FUNCTION_VALUES = {"arrow_function", "function_expression", "function", "generator_function"}
_SCOPE_SKIP = _CLASS_TYPES | _FUNCTION_TYPES | {"method_definition", "interface_declaration"}


def available() -> bool:
    """True when tree-sitter and both grammars import."""
    try:
        _parser("typescript")
        _parser("javascript")
    except ImportError:
        return False
    return True


def _parser(grammar: str):
    if grammar not in _PARSERS:
        import tree_sitter

        if grammar == "javascript":
            import tree_sitter_javascript as lang

            language = lang.language()
        else:
            import tree_sitter_typescript as lang

            language = lang.language_tsx() if grammar == "tsx" else lang.language_typescript()
        _PARSERS[grammar] = tree_sitter.Parser(tree_sitter.Language(language))
    return _PARSERS[grammar]


def _text(node) -> str:
    return node.text.decode("utf-8", "replace") if node is not None else ""


def _base_name(text: str) -> str:
    """``Observable<T>`` -> ``Observable``."""
    return text.split("<", 1)[0].strip()


def _line(node) -> int:
    return node.start_point[0] + 1


def _first_line(node, limit: int = 200) -> str:
    text = _text(node).split("{", 1)[0].strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _TsExtractor:
    def __init__(self, mod, root_label: str, symbol_cls, grammar: str) -> None:
        self.mod = mod
        self.root_label = root_label
        self.Symbol = symbol_cls
        self.grammar = grammar

    def meta(self, node, qual: str, name: str, **extra) -> dict[str, Any]:
        return {"name": name, "qualname": qual, "path": self.mod.file, "module": self.mod.name,
                "line": _line(node), "end_line": node.end_point[0] + 1, "source": "ingest",
                "root": self.root_label, "language": "javascript" if self.grammar == "javascript" else "typescript",
                **extra}

    def define(self, node_type: str, node, name: str, prefix: str, parent: tuple[str, str], scope: str,
               **extra) -> str:
        qual = f"{prefix}.{name}"
        self.mod.symbols.append(self.Symbol(node_type, qual, _first_line(node), self.meta(node, qual, name, **extra)))
        self.mod.contains.append((*parent, qual))
        if scope == "module":
            self.mod.defs.setdefault(name, qual)
        return qual

    # -- imports -------------------------------------------------------------------------
    def module_of(self, spec: str) -> str:
        """The module name an import path names: relative paths against this file, else the package."""
        if not spec.startswith("."):
            return spec
        here = posixpath.dirname(self.mod.rel)
        target = posixpath.normpath(posixpath.join(here, spec))
        for ext in (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts"):
            if target.endswith(ext):
                target = target[: -len(ext)]
                break
        if target.endswith("/index"):
            target = target[: -len("/index")]
        return ".".join(p for p in target.split("/") if p not in ("", "."))

    def imports(self, node) -> None:
        source = node.child_by_field_name("source")
        if source is None:
            return
        base = self.module_of(_text(source).strip("'\"`"))
        self.mod.imports.append((base, _line(node)))
        for clause in node.children:
            if clause.type != "import_clause":
                continue
            for part in clause.children:
                if part.type == "identifier":  # default import
                    self.mod.aliases[_text(part)] = f"{base}.default"
                elif part.type == "namespace_import":
                    ident = next((c for c in part.children if c.type == "identifier"), None)
                    if ident is not None:
                        self.mod.aliases[_text(ident)] = base
                elif part.type == "named_imports":
                    for spec in part.children:
                        if spec.type != "import_specifier":
                            continue
                        name = spec.child_by_field_name("name")
                        alias = spec.child_by_field_name("alias") or name
                        self.mod.aliases[_text(alias)] = f"{base}.{_text(name)}"

    # -- walk ----------------------------------------------------------------------------
    def run(self, root) -> None:
        self.body(root, self.mod.name, ("module", self.mod.name), self.mod.name, None, "module")

    def body(self, node, prefix: str, parent, caller: str, cls: str | None, scope: str) -> None:
        for child in node.named_children:
            self.statement(child, prefix, parent, caller, cls, scope)

    def statement(self, node, prefix, parent, caller, cls, scope) -> None:
        t = node.type
        if t == "import_statement":
            self.imports(node)
            return
        if t == "export_statement":
            decl = node.child_by_field_name("declaration")
            default = any(c.type == "default" for c in node.children)
            target = decl or next((c for c in node.named_children if c.type in _CLASS_TYPES | _FUNCTION_TYPES), None)
            if target is not None:
                qual = self.statement(target, prefix, parent, caller, cls, scope)
                if default and qual and scope == "module":
                    self.mod.defs.setdefault("default", qual)
            else:
                self.uses(node, caller, cls)
            return
        if t in _CLASS_TYPES and node.child_by_field_name("name") is not None:
            return self.klass(node, prefix, parent, caller, scope)
        if t == "interface_declaration":
            name = _text(node.child_by_field_name("name"))
            qual = self.define("class", node, name, prefix, parent, scope, kind="interface")
            bases = []
            for c in node.children:
                if c.type == "extends_type_clause":
                    bases += [_base_name(_text(x)) for x in c.named_children]
            if bases:
                self.mod.bases.append((qual, bases, _line(node), caller))
            body = node.child_by_field_name("body")
            for member in body.named_children if body is not None else ():
                if member.type == "method_signature":
                    mname = _text(member.child_by_field_name("name"))
                    self.define("method", member, mname, qual, ("class", qual), "class", **{"class": qual})
                elif member.type == "property_signature" and member.child_by_field_name("name") is not None:
                    self.define("attribute", member, _text(member.child_by_field_name("name")), qual,
                                ("class", qual), "class", **{"class": qual})
                    self.uses(member, qual, qual)
            return qual
        if t in ("type_alias_declaration", "enum_declaration") and node.child_by_field_name("name") is not None:
            kind = "type" if t == "type_alias_declaration" else "enum"
            qual = self.define("class", node, _text(node.child_by_field_name("name")), prefix, parent, scope, kind=kind)
            value = node.child_by_field_name("value")
            if value is not None:
                self.uses(value, qual, None)
            return qual
        if t in _FUNCTION_TYPES:
            name = _text(node.child_by_field_name("name"))
            return self.function(node, name, "method" if scope == "class" else "function", prefix, parent, caller,
                                 cls, scope)
        if t in ("lexical_declaration", "variable_declaration"):
            last = None
            for decl in node.named_children:
                if decl.type != "variable_declarator":
                    continue
                name_node, value = decl.child_by_field_name("name"), decl.child_by_field_name("value")
                if value is not None and value.type in _FUNCTION_VALUES and name_node is not None \
                        and name_node.type == "identifier":
                    last = self.function(value, _text(name_node), "function", prefix, parent, caller, cls, scope,
                                         decl_node=decl)
                elif value is not None and value.type == "class" and name_node is not None:
                    last = self.klass(value, prefix, parent, caller, scope, name=_text(name_node))
                elif scope == "module" and name_node is not None and name_node.type == "identifier":
                    last = self.define("variable", decl, _text(name_node), prefix, parent, scope,
                                       **({"constant": True} if _text(node).startswith("const") else {}))
                    if value is not None:
                        self.uses(value, last, cls)
                elif value is not None:
                    self.uses(value, caller, cls)
            return last
        if scope == "function":
            # statements inside a function: nested declarations are symbols, everything else is uses
            if t in ("statement_block", "if_statement", "for_statement", "for_in_statement", "while_statement",
                     "try_statement", "catch_clause", "finally_clause", "else_clause", "switch_statement",
                     "switch_body", "switch_case", "do_statement"):
                for c in node.named_children:
                    self.statement(c, prefix, parent, caller, cls, scope)
                return
        self.uses(node, caller, cls)

    def klass(self, node, prefix, parent, caller, scope, name: str | None = None) -> str:
        name = name or _text(node.child_by_field_name("name"))
        bases, implements = [], []
        for c in node.children:
            if c.type == "class_heritage":
                for clause in c.children:
                    if clause.type == "extends_clause":
                        value = clause.child_by_field_name("value")
                        if value is not None:
                            bases.append(_base_name(_text(value)))
                    elif clause.type == "implements_clause":
                        implements += [_base_name(_text(x)) for x in clause.named_children]
                    elif clause.type not in (",",) and clause.is_named:  # JavaScript: class A extends B
                        bases.append(_base_name(_text(clause)))
        extra = {"implements": implements} if implements else {}
        if node.type == "abstract_class_declaration":
            extra["abstract"] = True
        qual = self.define("class", node, name, prefix, parent, scope, **extra)
        if bases or implements:
            self.mod.bases.append((qual, [b for b in bases + implements if b.replace(".", "").isidentifier()],
                                   _line(node), caller))
        body = node.child_by_field_name("body")
        for member in body.named_children if body is not None else ():
            if member.type in ("method_definition", "method_signature", "abstract_method_signature"):
                mname = _text(member.child_by_field_name("name"))
                self.function(member, mname, "method", qual, ("class", qual), qual, qual, "class")
            elif member.type in ("public_field_definition", "field_definition"):
                fname = member.child_by_field_name("name") or member.child_by_field_name("property")
                if fname is not None:
                    self.define("attribute", member, _text(fname), qual, ("class", qual), "class", **{"class": qual})
                value = member.child_by_field_name("value")
                if value is not None:
                    self.uses(value, qual, qual)
        return qual

    def function(self, node, name, kind, prefix, parent, caller, cls, scope, decl_node=None) -> str:
        extra = {"class": cls} if kind == "method" else {}
        if scope == "function":
            extra["nested"] = True
        qual = self.define(kind, decl_node or node, name, prefix, parent, scope, **extra)
        if scope == "function":
            self.mod.enclosing[qual] = caller
            self.mod.local_defs.setdefault(caller, {}).setdefault(name, qual)
        self.mod.local_names.setdefault(qual, set())
        for field_name in ("parameters", "return_type"):
            sub = node.child_by_field_name(field_name)
            if sub is not None:
                self.uses(sub, qual, cls)
        body = node.child_by_field_name("body")
        if body is not None:
            if body.type == "statement_block":
                for c in body.named_children:
                    self.statement(c, qual, (kind, qual), qual, cls, "function")
            else:
                self.uses(body, qual, cls)
        return qual

    def uses(self, node, caller: str, cls: str | None) -> None:
        """Calls (``f()``, ``new C()``, ``this.m()``, ``o.m()``) under ``node``; nested
        function values and classes become symbols of their own."""
        append = self.mod.uses.append
        stack = [node]
        while stack:
            n = stack.pop()
            t = n.type
            if t in ("call_expression", "new_expression"):
                fn = n.child_by_field_name("function") or n.child_by_field_name("constructor")
                if fn is not None:
                    if fn.type == "identifier":
                        append((caller, "calls", "name", _text(fn), cls, _line(n)))
                    elif fn.type == "member_expression":
                        obj, prop = fn.child_by_field_name("object"), fn.child_by_field_name("property")
                        if obj is not None and prop is not None:
                            if obj.type == "this":
                                append((caller, "calls", "self", _text(prop), cls, _line(n)))
                            elif obj.type == "identifier":
                                append((caller, "calls", "dotted", f"{_text(obj)}.{_text(prop)}", cls, _line(n)))
                            else:
                                append((caller, "calls", "attr", _text(prop), cls, _line(n)))
                                stack.append(obj)
                    else:
                        stack.append(fn)
                args = n.child_by_field_name("arguments")
                if args is not None:
                    stack.extend(args.named_children)
                continue
            if t in ("type_identifier",):
                append((caller, "references", "name", _text(n), cls, _line(n)))
                continue
            if t == "member_expression":  # a read such as this.closed or config.onError
                obj, prop = n.child_by_field_name("object"), n.child_by_field_name("property")
                if obj is not None and prop is not None:
                    if obj.type == "this":
                        append((caller, "references", "self", _text(prop), cls, _line(n)))
                        continue
                    if obj.type == "identifier":
                        append((caller, "references", "dotted", f"{_text(obj)}.{_text(prop)}", cls, _line(n)))
                        continue
            if t == "identifier" and n.parent is not None and n.parent.type in ("arguments", "array", "pair",
                                                                                 "return_statement"):
                append((caller, "references", "name", _text(n), cls, _line(n)))  # a function passed as a value
                continue
            stack.extend(reversed(n.named_children))


def extract(mod, root_label: str, symbol_cls, data: bytes) -> None:
    """Fill ``mod`` (the Python ingest's per-file record) from a TypeScript/JavaScript file.

    :raises ValueError: the file's suffix has no grammar.
    :raises ImportError: tree-sitter or the grammar is not installed.
    """
    grammar = EXTENSIONS.get(mod.path.suffix)
    if grammar is None:
        raise ValueError(f"no grammar for {mod.path.suffix} files")
    tree = _parser(grammar).parse(data)
    _TsExtractor(mod, root_label, symbol_cls, grammar).run(tree.root_node)
