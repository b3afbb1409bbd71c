"""Where the user's own opensage config lives (read by the sandbox and the store)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from opensage.errors import ConfigError

__all__ = ["user_config_path", "read_section"]


def user_config_path() -> Path:
    """``$OPENSAGE_CONFIG``, else ``$XDG_CONFIG_HOME/opensage/config.yaml`` (``~/.config/...``)."""
    if os.environ.get("OPENSAGE_CONFIG"):
        return Path(os.environ["OPENSAGE_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opensage" / "config.yaml"


def read_section(path: Path, name: str, example: str) -> dict[str, Any] | None:
    """The ``name`` mapping of the YAML file ``path``; None when the file or the section is absent.

    :param example: a one-line example of the section, for the error message.
    :raises ConfigError: the file is not readable YAML, or the section is not a mapping (exit 2).
    """
    if not path.is_file():
        return None
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if name not in doc:
        return None
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: '{name}' must be a mapping, e.g. '{example}'")
    return section

