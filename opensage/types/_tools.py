from __future__ import annotations

import keyword
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TOOL_NAME = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: JSON-Schema ``type`` values a generated tool's parameters may use.
JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object")
#: Top-level keys of a tool's ``parameters`` kept besides type/properties/required.
_KEPT_SCHEMA_KEYS = ("$schema", "$defs", "definitions", "additionalProperties")

ToolLanguage = Literal["python", "bash", "node"]
#: Source file name of a generated tool, by language.
TOOL_FILES = {"python": "tool.py", "bash": "tool.sh", "node": "tool.js"}


class ToolExample(BaseModel):
    """One example call of a generated tool and the result it must give.

    :param arguments: the arguments (an object matching the tool's ``parameters``).
    :param expected: the exact JSON value the tool must return as ``result`` (numbers are
        compared with a relative tolerance of 1e-9).
    :param state: the state handed to the tool for this call (stateful tools), else null.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    arguments: dict[str, Any] = Field(default_factory=dict)
    expected: Any = None
    state: Any = None


class ToolDraft(BaseModel):
    """A generated tool as the model writes it (the structured-output schema).

    The code follows the execution protocol of ``docs/sandbox.md``: it reads one JSON
    object ``{"arguments": {...}, "state": <json|null>}`` on standard input and prints one
    JSON object ``{"result": <json>, "state": <json, optional>}`` on standard output.

    :param name: kebab-case, at most 48 characters; becomes ``@<name>`` and the folder name.
    :param description: what the tool does (shown to users and models).
    :param language: ``python``, ``bash`` or ``node``.
    :param parameters: JSON Schema of the arguments: ``{"type": "object", "properties":
        {name: {"type": ..., "description": ...}}, "required": [...]}``.
    :param code: the whole program.
    :param dependencies: modules (python, node) or commands (bash) the code needs; they
        must already be available in the sandbox, nothing is installed.
    :param examples: at least one example call with its expected result.
    """


    model_config = ConfigDict(extra="ignore", defer_build=True)

    name: str = Field("", max_length=200)  # the user's name and language win (see ToolSpec)
    description: str = Field(min_length=1, max_length=1024)
    language: str = Field("", max_length=40)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    code: str = Field(min_length=1, max_length=200_000)
    dependencies: list[str] = Field(default_factory=list, max_length=32)
    examples: list[ToolExample] = Field(min_length=1, max_length=20)

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, v):
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("dependencies")
    @classmethod
    def _deps(cls, v: list[str]) -> list[str]:
        for dep in v:
            if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/@]{0,99}$", dep):
                raise ValueError(f"dependency {dep!r} is not a plain module or command name")
        return v

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type", "object") != "object":
            raise ValueError("parameters must be a JSON Schema with type 'object'")
        props = v.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError("parameters.properties must be an object")
        for name, prop in props.items():
            if not PARAM_NAME.match(name) or keyword.iskeyword(name):
                raise ValueError(f"parameter name {name!r} must be an identifier (letters, digits, _)")
            if not isinstance(prop, dict):
                raise ValueError(f"parameters.properties.{name} must be an object")
            kind = prop.get("type")
            if kind is not None and kind not in JSON_TYPES:
                raise ValueError(f"parameters.properties.{name}.type {kind!r} must be one of {', '.join(JSON_TYPES)}")
        required = v.get("required", [])
        if not isinstance(required, list) or any(r not in props for r in required):
            raise ValueError("parameters.required must list names from parameters.properties")
        kept = {k: v[k] for k in _KEPT_SCHEMA_KEYS if k in v}  # dialect, $ref targets, extra-argument rule
        return {**kept, "type": "object", "properties": props, "required": list(required)}

    @model_validator(mode="after")
    def _examples_match(self) -> "ToolSpec":
        props = self.parameters.get("properties", {})
        for i, ex in enumerate(self.examples):
            unknown = set(ex.arguments) - set(props)
            if unknown:
                raise ValueError(f"examples[{i}] uses unknown arguments {sorted(unknown)}")
            missing = [r for r in self.parameters.get("required", []) if r not in ex.arguments]
            if missing:
                raise ValueError(f"examples[{i}] lacks required arguments {missing}")
        return self

class ToolSpec(ToolDraft):
    """A generated tool as stored in ``spec.json`` (code in its own file): the model's
    :class:`ToolDraft` plus the user's requirement and the creation time (epoch seconds).
    """

    name: str = Field(pattern=TOOL_NAME, max_length=48)
    language: ToolLanguage
    requirement: str = ""
    created_at: float = Field(default_factory=time.time)

    @property
    def file_name(self) -> str:
        """The code file of this tool's language (e.g. ``tool.py``)."""
        return TOOL_FILES[self.language]
