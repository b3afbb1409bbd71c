"""camelCase JSON views of result dataclasses, by pydantic's alias generator instead of
a hand-written ``{"sessionId": self.session_id, ...}`` per class.

A dataclass decorated with :data:`camel` dumps through :func:`camel_dict`: every field,
in definition order, under its camelCase name (``removed_files`` -> ``removedFiles``);
the class's ``as_dict`` then adds or rounds only what is not a plain field.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import ConfigDict, TypeAdapter, with_config
from pydantic.alias_generators import to_camel

__all__ = ["camel", "camel_dict"]

#: Class decorator (outside ``@dataclass``): the fields' JSON names are camelCase.
camel = with_config(ConfigDict(alias_generator=to_camel))


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def camel_dict(obj: Any, *, exclude: set[str] | None = None) -> dict[str, Any]:
    """``obj``'s fields as a dict keyed by camelCase names (nested dataclasses and pydantic
    models dumped the same way), in field order.

    :param obj: an instance of a dataclass decorated with :data:`camel`.
    :param exclude: field names (snake_case, as declared) to leave out.
    :raises pydantic.PydanticSchemaGenerationError: a field type pydantic cannot serialise.
    """
    return _adapter(type(obj)).dump_python(obj, by_alias=True, exclude=exclude)
