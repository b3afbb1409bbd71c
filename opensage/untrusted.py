"""Boundary checks for text and JSON that come from outside (hook stdin, the OpenCode
stream, ``@``-command arguments, MCP requests).

* :func:`loads` parses JSON text and gives :class:`~opensage.errors.UsageError` for
  invalid JSON and for nesting deeper than :data:`MAX_DEPTH`, instead of a
  ``RecursionError`` traceback (CPython's ``json`` recurses once per level).
* :func:`scrub` replaces lone UTF-16 surrogates (``"\\ud800"`` in JSON, or undecodable
  bytes that Python smuggles in as ``surrogateescape`` code points) by U+FFFD, so text
  can be stored as UTF-8 (SQLite, files) instead of failing with ``UnicodeEncodeError``.
* :func:`decode` turns raw bytes into text, invalid UTF-8 becoming U+FFFD.
* :func:`compile_regex` compiles a regular expression someone else wrote (a user's
  query, a generated tool's JSON-Schema ``pattern``) with RE2, whose matching time is
  linear in the text, so no pattern can make a match run for ever.
"""

from __future__ import annotations

import json
import re
from typing import Any

from opensage.errors import UsageError

__all__ = ["MAX_DEPTH", "too_deep_message", "loads", "scrub", "scrub_text", "decode", "depth_exceeds", "has_lone_surrogate",
           "MAX_REGEX_CHARS", "compile_regex"]

#: Deepest JSON nesting accepted from outside. opensage's own events and arguments
#: nest at most 5 levels; 64 leaves room for free-form ``metadata`` while staying far
#: below CPython's recursion limit (1000), which ``json``, pydantic and ``json.dumps`` hit.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")

#: Longest regular expression accepted from outside (characters). Real search and
#: validation patterns are a few dozen characters; RE2's compiled-program memory is
#: bounded separately (``max_mem`` below).
MAX_REGEX_CHARS = 1000


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


def compile_regex(pattern: str, *, case_sensitive: bool = True, what: str = "pattern", hint: str = ""):
    """Compile an untrusted regular expression with RE2 (``google-re2``).

    RE2 matches in time linear in the text (no backtracking), so a pattern such as
    ``(a+)+$`` cannot hang a search; it has no backreferences or lookaround, and such
    a pattern is rejected. The compiled program and its DFA cache are limited to 64 MiB.

    :param pattern: the expression, at most :data:`MAX_REGEX_CHARS` characters.
    :param case_sensitive: ``False`` matches letters in either case.
    :param what: names the pattern in error messages (``"query"``, ``"parameters.x.pattern"``).
    :param hint: an extra sentence for the error message (e.g. an alternative syntax).
    :returns: an ``re2`` pattern object (``search``, ``match``, ``fullmatch`` like :mod:`re`).
    :raises UsageError: too long, or not valid for RE2 (the message gives RE2's reason).
    """
    if len(pattern) > MAX_REGEX_CHARS:
        raise UsageError(f"{what} is {len(pattern):,} characters; at most {MAX_REGEX_CHARS:,} are "
                         f"accepted. Use a shorter pattern.")
    import re2  # imported here: only the paths that match untrusted regexes pay for it

    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.max_mem = 64 << 20  # bytes for the compiled program and its DFA cache
    options.log_errors = False  # the UsageError says it; RE2 would also print to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise UsageError(
            f"{what} {pattern!r} is not a valid regular expression for RE2 ({reason}); escape special "
            f"characters such as ( [ * + ? with a backslash (backreferences and lookaround are not "
            f"supported){hint}."
        ) from None
