"""A generated tool's parameters: its JSON Schema checked, and arguments validated against it.

Validation uses :mod:`jsonschema` (Draft 2020-12, or Draft 7 when the schema says so),
with ``pattern`` and ``patternProperties`` matched by RE2 because the schema is
untrusted (written by a model). Used when a tool is generated (its schema and examples)
and before every call (the arguments), so a rejected call never reaches the sandbox.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from opensage.errors import UsageError
from opensage.untrusted import compile_regex

__all__ = ["parameters_validator", "check_arguments"]

#: ``$schema`` values a generated tool's ``parameters`` may declare; without one the
#: schema is read as Draft 2020-12 (the dialect of MCP tool input schemas).
_DIALECTS = {"https://json-schema.org/draft/2020-12/schema": "Draft202012Validator",
             "http://json-schema.org/draft-07/schema": "Draft7Validator"}


def parameters_validator(parameters: dict[str, Any]):
    """A :mod:`jsonschema` validator for a tool's JSON-Schema ``parameters``.

    The dialect is the schema's ``$schema`` (Draft 2020-12 or Draft 7; none: 2020-12).
    ``$ref`` resolves only inside the schema (an empty ``referencing.Registry``): an
    untrusted tool spec cannot make opensage fetch a URL.

    :param parameters: the ``parameters`` object of a :class:`~opensage.types.ToolSpec`.
    :returns: a ``jsonschema`` validator instance.
    :raises UsageError: an unsupported ``$schema`` or a schema that is not valid in its
        dialect (e.g. ``"maximum": "five"``), with the offending keyword's path.
    """
    import jsonschema
    from referencing import Registry

    dialect = parameters.get("$schema")
    name = "Draft202012Validator" if dialect is None else _DIALECTS.get(str(dialect).rstrip("#"))
    if name is None:
        raise UsageError(f"parameters.$schema {dialect!r} is not supported: use "
                         f"{' or '.join(sorted(_DIALECTS))} (or leave it out for Draft 2020-12)")
    cls = getattr(jsonschema, name)
    try:
        cls.check_schema(parameters)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise UsageError(f"parameters is not a valid JSON Schema ({name[:-9]}): at {where}: {_clip(exc.message)}") from None
    for where, regex in _schema_regexes(parameters):
        compile_regex(regex, what=f"parameters{where}")  # RE2 must accept it, or the tool is rejected now
    return _re2_validator_class(cls)(parameters, registry=Registry())


def _schema_regexes(schema: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``pattern`` value and ``patternProperties`` key in ``schema``, with its path."""
    found: list[tuple[str, str]] = []
    stack = [(schema, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.append((f"{path}.pattern", node["pattern"]))
            if isinstance(node.get("patternProperties"), dict):
                found.extend((f"{path}.patternProperties", key) for key in node["patternProperties"])
            stack.extend((value, f"{path}.{key}") for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(node))
    return found


@functools.lru_cache(maxsize=4)
def _re2_validator_class(cls):
    """``cls`` with ``pattern`` and ``patternProperties`` matched by RE2 instead of :mod:`re`.

    jsonschema matches both with Python's backtracking ``re``; a generated tool's schema
    is untrusted, and a pattern such as ``^(a+)+$`` against a long argument would hang
    the call. RE2 (:func:`opensage.untrusted.compile_regex`) matches in linear time.
    """
    import jsonschema

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string") and not _regex(patrn).search(instance):
            yield jsonschema.ValidationError(f"{_clip(instance, 80)!r} does not match {patrn!r}")

    def pattern_properties(validator, patterns, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        for regex, subschema in patterns.items():
            compiled = _regex(regex)
            for key, value in instance.items():
                if compiled.search(key):
                    yield from validator.descend(value, subschema, path=key, schema_path=regex)

    return jsonschema.validators.extend(cls, {"pattern": pattern, "patternProperties": pattern_properties})


@functools.lru_cache(maxsize=256)
def _regex(pattern: str):
    return compile_regex(pattern, what="schema pattern")


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_arguments(spec, arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate ``arguments`` with :mod:`jsonschema` against the tool's full ``parameters``.

    The pydantic model of :func:`args_model` only coerces types (CLI text to numbers...)
    and checks ``enum``; this enforces every keyword (``minimum``, ``maximum``,
    ``pattern``, ``items``, ``required``, ``minLength``...). Called before the sandbox
    starts, so a rejected call runs and records nothing.

    :returns: ``arguments`` unchanged.
    :raises UsageError: naming the argument and the broken constraint, e.g.
        ``@clamp: argument 'n': 999 is greater than the maximum of 5``; or a ``$ref``
        that points outside the schema (never fetched).
    """
    import jsonschema
    from referencing.exceptions import Unresolvable

    try:
        error = jsonschema.exceptions.best_match(parameters_validator(spec.parameters).iter_errors(arguments))
    except Unresolvable as exc:
        raise UsageError(f"@{spec.name}: its parameters use a $ref that does not resolve inside the schema "
                         f"({_clip(str(exc), 200)}); only local references like '#/$defs/name' are followed") from None
    if error is None:
        return arguments
    path = "/".join(str(p) for p in error.absolute_path)
    what = f"argument {path!r}" if path else "arguments"
    prop = spec.parameters.get("properties", {}).get(error.absolute_path[0]) if error.absolute_path else None
    hint = f"; its schema: {_clip(json.dumps(prop), 200)}" if prop else f"; see @{spec.name} --help"
    raise UsageError(f"@{spec.name}: {what}: {_clip(error.message)}{hint}")
