from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Route(BaseModel):
    """A routing decision for free text.

    :param route: route name (``none`` when nothing should fire).
    :param confidence: in [0, 1].
    :param command: the ``@``-command to run (without ``@``), or ``None``.
    :param arguments: arguments filled from the text.
    """

    route: str
    confidence: float = Field(ge=0.0, le=1.0)
    command: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)

    model_config = {"defer_build": True}
