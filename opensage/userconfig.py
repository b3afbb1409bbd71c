"""Where the user's own opensage config lives (read by the sandbox and the store)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_config_path"]


def user_config_path() -> Path:
    """``$OPENSAGE_CONFIG``, else ``$XDG_CONFIG_HOME/opensage/config.yaml`` (``~/.config/...``)."""
    if os.environ.get("OPENSAGE_CONFIG"):
        return Path(os.environ["OPENSAGE_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opensage" / "config.yaml"
