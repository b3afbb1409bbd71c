"""Small helpers shared by the tree-sitter ingesters (:mod:`.ingest_go`, :mod:`.ingest_rust`).

A parser per grammar wheel (``tree_sitter_go``, ``tree_sitter_rust``), loaded on first
use and kept for the process, and the node accessors every ingester needs.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

__all__ = ["available", "parser", "node_text", "node_line", "signature_head"]

_PARSERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def parser(grammar_module: str):
    """A ``tree_sitter.Parser`` for the grammar wheel ``grammar_module`` (e.g.
    ``"tree_sitter_go"``), created once per process.

    :raises ImportError: tree-sitter or that grammar wheel is not installed.
    """
    with _LOCK:
        if grammar_module not in _PARSERS:
            import tree_sitter

            grammar = importlib.import_module(grammar_module)
            _PARSERS[grammar_module] = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
        return _PARSERS[grammar_module]


def available(grammar_module: str) -> bool:
    """True when tree-sitter and the grammar wheel ``grammar_module`` import (the optional
    language wheels may be missing)."""
    try:
        parser(grammar_module)
    except ImportError:
        return False
    return True


def node_text(node) -> str:
    """The source text of ``node`` (``""`` for ``None``); invalid UTF-8 becomes U+FFFD."""
    return node.text.decode("utf-8", "replace") if node is not None else ""


def node_line(node) -> int:
    """The 1-based line where ``node`` starts."""
    return node.start_point[0] + 1


def signature_head(node, limit: int = 200) -> str:
    """``node``'s text up to its body's ``{``, whitespace collapsed, at most ``limit``
    characters (cut with ``…``): the one-line signature stored as a symbol's content."""
    text = " ".join(node_text(node).split("{", 1)[0].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
