"""Boundary checks for text and JSON that come from outside (hook stdin, the OpenCode
stream, ``@``-command arguments, MCP requests).

* :func:`loads` parses JSON text and gives :class:`~opensage.errors.UsageError` for
  invalid JSON and for nesting deeper than :data:`MAX_DEPTH`, instead of a
  ``RecursionError`` traceback (CPython's ``json`` recurses once per level).
* :func:`scrub` replaces lone UTF-16 surrogates (``"\\ud800"`` in JSON, or undecodable
  bytes that Python smuggles in as ``surrogateescape`` code points) by U+FFFD, so text
  can be stored as UTF-8 (SQLite, files) instead of failing with ``UnicodeEncodeError``.
* :func:`decode` turns raw bytes into text, invalid UTF-8 becoming U+FFFD.
"""

from __future__ import annotations

import json
import re
from typing import Any

from opensage.errors import UsageError

__all__ = ["MAX_DEPTH", "too_deep_message", "loads", "scrub", "scrub_text", "decode", "depth_exceeds", "has_lone_surrogate"]

#: Deepest JSON nesting accepted from outside. opensage's own events and arguments
#: nest at most 5 levels; 64 leaves room for free-form ``metadata`` while staying far
#: below CPython's recursion limit (1000), which ``json``, pydantic and ``json.dumps`` hit.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")


def decode(data: bytes) -> str:
    """UTF-8 bytes as text; invalid sequences become U+FFFD (never raises)."""
    return data.decode("utf-8", errors="replace")


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a code point U+D800..U+DFFF (not encodable as UTF-8)."""
    return _SURROGATE.search(text) is not None


def scrub_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (a paired surrogate written
    as two escapes was already joined by ``json``)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when lists/dicts in ``value`` nest deeper than ``limit`` (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def scrub(value: Any) -> Any:
    """``value`` (JSON-like, at most :data:`MAX_DEPTH` deep) with lone surrogates in
    every string, key included, replaced by U+FFFD."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(k) if isinstance(k, str) else k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    return value


def too_deep_message(what: str) -> str:
    """The error text for input ``what`` nested deeper than :data:`MAX_DEPTH` levels."""
    return (f"{what} is nested more than {MAX_DEPTH} levels deep; flatten it "
            f"(opensage's events and arguments need only a few levels).")


def loads(text: str | bytes, what: str = "input") -> Any:
    """Parse JSON from outside: invalid UTF-8 and lone surrogates become U+FFFD.

    :param what: names the input in error messages (``"stdin"``, ``"argument 'metadata'"``).
    :raises UsageError: not JSON, or nested deeper than :data:`MAX_DEPTH`.
    """
    if isinstance(text, (bytes, bytearray)):
        text = decode(bytes(text))
    try:
        value = json.loads(text)
    except RecursionError:
        raise UsageError(too_deep_message(what)) from None
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc}).") from None
    if depth_exceeds(value):
        raise UsageError(too_deep_message(what))
    return scrub(value)
