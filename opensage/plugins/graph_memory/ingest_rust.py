"""Rust files for the code graph, through tree-sitter (the ``tree-sitter-rust`` wheel).

Fills the same per-file record as the Python ingest (see ingest_ts.py for the idea).
Module names follow the file path below the ingested folder (``src/shapes.rs`` and
``src/shapes/mod.rs`` are ``src.shapes``; ``src/lib.rs`` and ``src/main.rs`` are the
crate root ``src``), so ``crate::shapes::Shape`` is ``src.shapes.Shape``.

Extracted: structs, enums, unions, traits and type aliases (``class`` nodes with
``metadata.kind``), functions, methods (``impl`` blocks and trait items), struct fields
(``attribute``), ``const``/``static`` items (``variable``); ``use`` and ``mod`` as
imports; calls (``f()``, ``Type::new()``, ``module::f()``, ``self.m()``, ``x.m()``);
``impl Trait for Type`` as an ``inherits`` edge Type -> Trait (``metadata.implements``).
Resolved by name only: no type checker, so ``x.m()`` links only when one method in the
ingested files is named ``m``; macros are not expanded.
"""

from __future__ import annotations


from typing import Any

from opensage.plugins.graph_memory import syntax

__all__ = ["EXTENSIONS", "available", "extract"]

EXTENSIONS = {".rs": "rust"}
_TYPES = {"struct_item": "struct", "enum_item": "enum", "union_item": "union", "trait_item": "trait",
          "type_item": "type"}


def available() -> bool:
    """True when the tree-sitter Rust grammar can be loaded (the optional wheel is installed)."""
    return syntax.available("tree_sitter_rust")


def _parser():
    return syntax.parser("tree_sitter_rust")


_text = syntax.node_text
_line = syntax.node_line
_head = syntax.signature_head


def _type_name(node) -> str:
    """``Circle``, ``Vec<T>`` -> ``Vec``, ``&mut Foo`` -> ``Foo``."""
    while node is not None and node.type in ("reference_type", "pointer_type", "generic_type"):
        node = node.child_by_field_name("type")
    return _text(node).split("<", 1)[0].rsplit("::", 1)[-1] if node is not None else ""


class _RustExtractor:
    def __init__(self, mod, root_label: str, symbol_cls) -> None:
        self.mod, self.root_label, self.Symbol = mod, root_label, symbol_cls
        parts = mod.name.split(".")
        self.crate = parts[0] if parts else mod.name

    def define(self, node_type: str, node, name: str, prefix: str, parent, scope: str, **extra) -> str:
        qual = f"{prefix}.{name}"
        meta = {"name": name, "qualname": qual, "path": self.mod.file, "module": self.mod.name, "line": _line(node),
                "end_line": node.end_point[0] + 1, "source": "ingest", "root": self.root_label, "language": "rust",
                **extra}
        self.mod.symbols.append(self.Symbol(node_type, qual, _head(node), meta))
        self.mod.contains.append((*parent, qual))
        if scope == "module":
            self.mod.defs.setdefault(name, qual)
        return qual

    def path_of(self, text: str) -> str:
        """A Rust path (``crate::a::B``, ``super::x``, ``self::y``) as a dotted module path."""
        parts = [p for p in text.split("::") if p]
        if not parts:
            return ""
        here = self.mod.name.split(".")
        if parts[0] == "crate":
            parts = [self.crate, *parts[1:]]
        elif parts[0] == "self":
            parts = [*here, *parts[1:]]
        elif parts[0] == "super":
            parts = [*here[:-1], *parts[1:]]
        return ".".join(parts)

    def use(self, node, base: str = "") -> None:
        t = node.type
        if t == "use_declaration":
            arg = node.child_by_field_name("argument")
            if arg is not None:
                self.use(arg, "")
            return
        if t in ("scoped_identifier", "identifier", "crate", "self", "super"):
            target = self.path_of(f"{base}::{_text(node)}" if base else _text(node))
            self.mod.aliases[target.rsplit(".", 1)[-1]] = target
            self.mod.imports.append((f"{target}|{target.rpartition('.')[0]}", _line(node)))
        elif t == "use_as_clause":
            path, alias = node.child_by_field_name("path"), node.child_by_field_name("alias")
            target = self.path_of(f"{base}::{_text(path)}" if base else _text(path))
            self.mod.aliases[_text(alias)] = target
            self.mod.imports.append((f"{target}|{target.rpartition('.')[0]}", _line(node)))
        elif t == "scoped_use_list":
            path = node.child_by_field_name("path")
            inner = f"{base}::{_text(path)}" if base and path is not None else _text(path)
            lst = node.child_by_field_name("list")
            for c in lst.named_children if lst is not None else ():
                self.use(c, inner)
        elif t == "use_list":
            for c in node.named_children:
                self.use(c, base)
        elif t == "use_wildcard":
            target = self.path_of(_text(node).removesuffix("::*"))
            self.mod.star_imports.append(target)
            self.mod.imports.append((target, _line(node)))

    def run(self, root) -> None:
        self.items(root, self.mod.name, ("module", self.mod.name), self.mod.name, "module")

    def items(self, node, prefix, parent, caller, scope) -> None:
        for item in node.named_children:
            t = item.type
            if t == "use_declaration":
                self.use(item)
            elif t == "mod_item":
                name = _text(item.child_by_field_name("name"))
                body = item.child_by_field_name("body")
                if body is None:  # mod util; -> the file util.rs next to this one
                    target = f"{self.mod.name}.{name}"
                    self.mod.aliases[name] = target
                    self.mod.imports.append((target, _line(item)))
                else:
                    self.items(body, f"{prefix}.{name}", parent, caller, scope)
            elif t in _TYPES and item.child_by_field_name("name") is not None:
                name = _text(item.child_by_field_name("name"))
                qual = self.define("class", item, name, prefix, parent, scope, kind=_TYPES[t])
                body = item.child_by_field_name("body")
                for member in body.named_children if body is not None else ():
                    if member.type == "field_declaration" and member.child_by_field_name("name") is not None:
                        self.define("attribute", member, _text(member.child_by_field_name("name")), qual,
                                    ("class", qual), "class", **{"class": qual})
                        self.uses(member.child_by_field_name("type"), qual, qual)
                    elif member.type in ("function_item", "function_signature_item"):
                        self.function(member, qual, ("class", qual), qual, "method")
                if t == "trait_item":
                    bounds = item.child_by_field_name("bounds")
                    supers = [_type_name(b) for b in bounds.named_children] if bounds is not None else []
                    if supers:
                        self.mod.bases.append((qual, supers, _line(item), caller))
            elif t == "impl_item":
                type_name = _type_name(item.child_by_field_name("type"))
                if not type_name:
                    continue
                cls = self.mod.defs.get(type_name) or f"{prefix}.{type_name}"
                trait = item.child_by_field_name("trait")
                if trait is not None:
                    self.mod.bases.append((cls, [_type_name(trait)], _line(item), caller))
                body = item.child_by_field_name("body")
                for member in body.named_children if body is not None else ():
                    if member.type == "function_item":
                        self.function(member, cls, ("class", cls), cls, "method")
            elif t == "function_item":
                self.function(item, prefix, parent, None, "function", caller=caller, scope=scope)
            elif t in ("const_item", "static_item") and item.child_by_field_name("name") is not None:
                qual = self.define("variable", item, _text(item.child_by_field_name("name")), prefix, parent, scope,
                                   constant=True)
                self.uses(item.child_by_field_name("value"), qual, None)

    def function(self, node, prefix, parent, cls, kind, caller=None, scope="class") -> str:
        name = _text(node.child_by_field_name("name"))
        extra: dict[str, Any] = {"class": cls} if kind == "method" else {}
        qual = self.define(kind, node, name, prefix, parent, scope if kind == "function" else "class", **extra)
        self.mod.local_names.setdefault(qual, set())
        for field_name in ("parameters", "return_type"):
            self.uses(node.child_by_field_name(field_name), qual, cls)
        body = node.child_by_field_name("body")
        if body is not None:
            self.uses(body, qual, cls)
        return qual

    def uses(self, node, caller: str, cls: str | None) -> None:
        if node is None:
            return
        append = self.mod.uses.append
        stack = [node]
        while stack:
            n = stack.pop()
            t = n.type
            if t == "call_expression":
                fn = n.child_by_field_name("function")
                if fn is not None:
                    if fn.type == "identifier":
                        append((caller, "calls", "name", _text(fn), cls, _line(n)))
                    elif fn.type == "scoped_identifier":
                        dotted = self.path_of(_text(fn)) if _text(fn).startswith(("crate::", "self::", "super::")) \
                            else _text(fn).replace("::", ".")
                        if "<" not in dotted:
                            append((caller, "calls", "dotted", dotted, cls, _line(n)))
                    elif fn.type == "field_expression":
                        value, field = fn.child_by_field_name("value"), fn.child_by_field_name("field")
                        if value is not None and field is not None:
                            if value.type == "self":
                                append((caller, "calls", "self", _text(field), cls, _line(n)))
                            else:
                                append((caller, "calls", "attr", _text(field), cls, _line(n)))
                                stack.append(value)
                    else:
                        stack.append(fn)
                args = n.child_by_field_name("arguments")
                if args is not None:
                    stack.extend(args.named_children)
                continue
            if t == "field_expression":
                value, field = n.child_by_field_name("value"), n.child_by_field_name("field")
                if value is not None and value.type == "self" and field is not None:
                    append((caller, "references", "self", _text(field), cls, _line(n)))
                    continue
            if t == "type_identifier":
                append((caller, "references", "name", _text(n), cls, _line(n)))
                continue
            if t in ("function_item", "closure_expression") and n is not node:
                if t == "closure_expression":
                    stack.extend(n.named_children)
                continue
            stack.extend(n.named_children)


def extract(mod, root_label: str, symbol_cls, data: bytes) -> None:
    """Fill ``mod`` (the Python ingest's per-file record) from a Rust file.

    :raises ImportError: tree-sitter or the Rust grammar is not installed.
    """
    tree = _parser().parse(data)
    _RustExtractor(mod, root_label, symbol_cls).run(tree.root_node)
