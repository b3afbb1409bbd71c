"""``@sourcegraph/scip-python`` from npm (pinned, the version bench/codegraph.py uses),
installed into the test cache like :mod:`tests.reference_memory_env`."""

from __future__ import annotations

from filelock import FileLock

from tests.opencode_env import _npm_install, cache_root

SCIP_PYTHON_VERSION = "0.6.6"
PACKAGE = "@sourcegraph/scip-python"


def scip_python_js() -> str:
    """Path of the pinned scip-python's ``index.js`` (npm-installed when missing)."""
    folder = cache_root() / f"scip-python-{SCIP_PYTHON_VERSION}"
    script = folder / "node_modules" / "@sourcegraph" / "scip-python" / "index.js"
    cache_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root() / "scip-python.lock")):
        if not script.exists():
            _npm_install(folder, [f"{PACKAGE}@{SCIP_PYTHON_VERSION}"])
    return str(script)


SCIP_TYPESCRIPT_VERSION = "0.4.0"


def scip_typescript_js() -> str:
    """Path of the pinned scip-typescript's ``dist/src/main.js`` (npm-installed when missing)."""
    folder = cache_root() / f"scip-typescript-{SCIP_TYPESCRIPT_VERSION}"
    script = folder / "node_modules" / "@sourcegraph" / "scip-typescript" / "dist" / "src" / "main.js"
    cache_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root() / "scip-typescript.lock")):
        if not script.exists():
            _npm_install(folder, [f"@sourcegraph/scip-typescript@{SCIP_TYPESCRIPT_VERSION}"])
    return str(script)
