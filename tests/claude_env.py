"""Find or install the pinned Claude Code CLI and build a hermetic environment to run it.

* The binary: ``$OPENSAGE_CLAUDE_BIN``, else the pinned npm package
  ``@anthropic-ai/claude-code`` installed in the test cache (``$OPENSAGE_TEST_CACHE``,
  default ``~/.cache/opensage-tests``; ``scripts/test.sh`` fills it in CI), else it is
  npm-installed there now. (npm skips its postinstall; the ``claude`` bin works anyway.)
* The environment: a temporary HOME, ``ANTHROPIC_BASE_URL`` at a scripted Messages API
  on 127.0.0.1 (tests/fake_anthropic.py), auto-update, telemetry, error reporting and
  non-essential traffic off, and every proxy variable pointing at a closed local port so
  nothing can reach the network.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from filelock import FileLock

from tests.opencode_env import _npm_install, cache_root

CLAUDE_CODE_VERSION = "2.1.197"


def claude_bin() -> str:
    """Path of the pinned ``claude`` binary (installed into the cache when missing)."""
    explicit = os.environ.get("OPENSAGE_CLAUDE_BIN")
    if explicit:
        return explicit
    folder = cache_root() / f"claude-code-{CLAUDE_CODE_VERSION}"
    binary = folder / "node_modules" / ".bin" / "claude"
    cache_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root() / "claude-code.lock")):
        if not binary.exists():
            _npm_install(folder, [f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"])
    return str(binary)


def hermetic_env(home: Path, project: Path, base_url: str) -> dict[str, str]:
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port: any network use fails fast
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_", "OPENSAGE_", "OPENCODE_"))}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "PWD": str(project),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-ant-scripted",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "OPENSAGE_HOOKD_IDLE_S": "30",  # the hook server a test starts goes away soon after
        "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })
    return env


def run_claude(binary: str, args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120):
    """``claude -p ... --output-format stream-json --verbose ARGS`` -> CompletedProcess."""
    return subprocess.run([binary, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
