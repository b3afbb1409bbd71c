"""``@``-command parsing, argument binding and usage text.

A command line is ``@name key=value key="quoted value" key=[json] ...``:

* bare values are strings, coerced by the command's pydantic model (``maxResults=5``,
  ``dryRun=true``);
* ``"double"`` or ``'single'`` quoted values are strings (``\\"`` escapes a quote);
* values starting with ``[`` or ``{`` are JSON (``subtasks=["a","b"]``,
  ``metadata={"owner": "auth"}``); a quoted JSON text is also accepted for fields that
  are not strings.
"""

from __future__ import annotations

import json
import types as _pytypes
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from opensage.errors import UsageError
from opensage.types import ArgModel, Command
from opensage.untrusted import depth_exceeds, scrub, too_deep_message

__all__ = ["parse_line", "parse_tokens", "bind_arguments", "usage", "argument_table", "Quoted", "run_async"]


class Quoted(str):
    """A value the user quoted: always a string, never JSON-decoded."""


@dataclass
class ParsedCall:
    name: str
    arguments: dict[str, Any]


def _read_quoted(line: str, i: int) -> tuple[str, int]:
    quote = line[i]
    out = []
    i += 1
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] in (quote, "\\"):
            out.append(line[i + 1])
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise UsageError(f"unterminated {quote} quote in: {line.strip()}  — close the quote or escape it with \\{quote}.")


def _read_json(line: str, i: int, key: str) -> tuple[Any, int]:
    try:
        value, end = json.JSONDecoder().raw_decode(line, i)
    except RecursionError:
        raise UsageError(too_deep_message(f"argument {key!r}")) from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"argument '{key}': invalid JSON ({exc.msg} at column {exc.colno}); write it as JSON, "
            f'e.g. {key}=["first step","second step"] or {key}={{"key": "value"}}.'
        ) from None
    return value, end


def parse_line(line: str) -> ParsedCall:
    """Parse one ``@name key=value ...`` line (REPL, routing, hosts). Raises UsageError."""
    text = line.strip()
    if not text.startswith("@"):
        raise UsageError(f"not a command: {text[:60]!r}; commands start with '@', e.g. @memory-query query=\"auth\".")
    i = 1
    while i < len(text) and not text[i].isspace():
        i += 1
    name = text[1:i]
    args: dict[str, Any] = {}
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        if i >= n or text[i] != "=" or not key:
            raise UsageError(
                f"@{name}: expected key=value but found {text[start:i] or text[start:start + 20]!r}; "
                f'quote values with spaces, e.g. label="Auth service".'
            )
        if key in args:
            raise UsageError(f"@{name}: argument '{key}' given twice; give it once.")
        i += 1
        if i < n and text[i] in "\"'":
            value, i = _read_quoted(text, i)
            args[key] = Quoted(value)
        elif i < n and text[i] in "[{":
            args[key], i = _read_json(text, i, key)
        else:
            vstart = i
            while i < n and not text[i].isspace():
                i += 1
            args[key] = text[vstart:i]
    return ParsedCall(name, args)


def parse_tokens(tokens: list[str]) -> dict[str, Any]:
    """Parse shell-split ``key=value`` tokens (the CLI's argv). Raises UsageError."""
    args: dict[str, Any] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep or not key:
            raise UsageError(
                f"expected key=value but found {tok!r}; quote values with spaces for your shell, "
                f"e.g. label='Auth service'."
            )
        if key in args:
            raise UsageError(f"argument '{key}' given twice; give it once.")
        if value[:1] in ("[", "{"):
            args[key], _ = _read_json(value, 0, key)
        else:
            args[key] = value
    return args


def _accepts_str(annotation: Any) -> bool:
    if annotation is str or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if origin in (typing.Union, _pytypes.UnionType):
        return any(_accepts_str(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        return _accepts_str(typing.get_args(annotation)[0])
    return False


def _field_by_name(model: type[ArgModel], key: str):
    for fname, field in model.model_fields.items():
        if key == fname or key == field.alias:
            return fname, field
    return None, None


def describe_type(annotation: Any) -> str:
    """A short human form of a type: ``str``, ``int``, ``list[str]``, ``a|b|c``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return describe_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, _pytypes.UnionType):
        parts = [describe_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        return "|".join(parts)
    if origin in (list, tuple, set):
        inner = typing.get_args(annotation)
        return f"list[{describe_type(inner[0])}]" if inner else "list"
    if origin is dict:
        return "object"
    if annotation is dict:
        return "object"
    if annotation is Any:
        return "json"
    return getattr(annotation, "__name__", str(annotation))


def argument_table(command: Command) -> list[dict[str, Any]]:
    """One row per argument: name (camelCase), type, required, default, description."""
    rows = []
    for fname, field in command.args.model_fields.items():
        rows.append(
            {
                "name": field.alias or fname,
                "type": describe_type(field.annotation),
                "required": field.is_required(),
                "default": None if field.is_required() else field.get_default(call_default_factory=True),
                "description": field.description or "",
            }
        )
    return rows


def usage(command: Command) -> str:
    """``@name req=<type> [opt=<type>=default] ...``"""
    parts = [f"@{command.name}"]
    for row in argument_table(command):
        if row["required"]:
            parts.append(f"{row['name']}=<{row['type']}>")
        else:
            default = json.dumps(row["default"]) if row["default"] is not None else "none"
            parts.append(f"[{row['name']}=<{row['type']}>, default {default}]")
    return " ".join(parts)


def bind_arguments(command: Command, raw: dict[str, Any]) -> ArgModel:
    """Validate raw arguments against the command's model. Raises UsageError naming the argument."""
    model = command.args
    prepared: dict[str, Any] = {}
    for key, value in raw.items():
        fname, field = _field_by_name(model, key)
        if fname is None:
            known = ", ".join(r["name"] for r in argument_table(command)) or "none"
            raise UsageError(
                f"@{command.name}: unknown argument '{key}'. It takes: {known}. Usage: {usage(command)}"
            )
        if fname in prepared:
            raise UsageError(f"@{command.name}: argument '{field.alias or fname}' given twice; give it once.")
        shown = field.alias or fname
        if isinstance(value, str) and not _accepts_str(field.annotation):
            try:
                value = json.loads(value)
            except ValueError:
                pass
            except RecursionError:
                raise UsageError(f"@{command.name}: {too_deep_message(f'argument {shown!r}')}") from None
        if depth_exceeds(value):
            raise UsageError(f"@{command.name}: {too_deep_message(f'argument {shown!r}')}")
        # lone surrogates (a split emoji, undecodable bytes in argv) cannot be stored as UTF-8
        prepared[fname] = scrub(str(value) if isinstance(value, Quoted) else value)
    try:
        return model.model_validate(prepared)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc") or ("?",)
        fname = str(loc[0])
        _, field = _field_by_name(model, fname)
        display = (field.alias if field is not None and field.alias else fname)
        if len(loc) > 1:
            display += "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        expected = describe_type(field.annotation) if field is not None else "?"
        if err.get("type") == "missing":
            msg = f"@{command.name}: missing required argument '{display}' ({expected})."
        else:
            got = err.get("input")
            got_text = json.dumps(got, default=str)[:80] if got is not None else "nothing"
            msg = (
                f"@{command.name}: argument '{display}' is invalid: {err.get('msg', 'invalid value')} "
                f"(expected {expected}, got {got_text})."
            )
        raise UsageError(f"{msg} Usage: {usage(command)}") from None


def run_async(coro: typing.Any) -> typing.Any:
    """Run ``coro`` to completion from sync code, also when an event loop is already running
    (an MCP server): then it runs on a fresh loop in a worker thread."""
    import asyncio  # imported here: asyncio costs tens of ms and most commands never need it
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
