"""The MCP reference memory server (``@modelcontextprotocol/server-memory`` from npm,
pinned), installed into the test cache (``$OPENSAGE_TEST_CACHE``, default
``~/.cache/opensage-tests``; ``scripts/test.sh`` fills it in CI) the way
:mod:`tests.opencode_env` installs OpenCode.
"""

from __future__ import annotations

import shutil

from filelock import FileLock

from tests.opencode_env import _npm_install, cache_root

REFERENCE_VERSION = "2026.8.31"
PACKAGE = "@modelcontextprotocol/server-memory"


def reference_server_js() -> str:
    """Path of the pinned reference server's ``dist/index.js`` (npm-installed when missing)."""
    folder = cache_root() / f"server-memory-{REFERENCE_VERSION}"
    script = folder / "node_modules" / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"
    cache_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root() / "server-memory.lock")):
        if not script.exists():
            _npm_install(folder, [f"{PACKAGE}@{REFERENCE_VERSION}"])
    return str(script)


def node_bin() -> str | None:
    return shutil.which("node")
