"""JSON-Schema checks of a generated tool's ``parameters`` and of a call's arguments
(:mod:`jsonschema`). Used by the ``@``-commands and by generation, which both import it, so
neither imports the other.
"""

from __future__ import annotations

import json
from typing import Any

from opensage.errors import UsageError

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
    return cls(parameters, registry=Registry())


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
