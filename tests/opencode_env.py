"""Find or install the pinned OpenCode CLI and build a hermetic environment to run it.

* The binary: ``$OPENSAGE_OPENCODE_BIN``, else ``opencode`` on PATH if it is the pinned
  version, else the pinned npm package installed in the test cache (``$OPENSAGE_TEST_CACHE``, default ``~/.cache/opensage-tests``;
  ``scripts/test.sh`` fills it in CI), else it is npm-installed there now.
* The plugin seed: OpenCode installs ``@opencode-ai/plugin`` into every config folder
  at start-up and stalls about 70 s when the registry is unreachable; a folder seeded
  with ``package.json``, lockfile and ``node_modules`` from the cache starts at once.
* The environment: a temporary HOME and XDG folders, the config inline
  (``OPENCODE_CONFIG_CONTENT``) with a provider pointing at a 127.0.0.1 server,
  autoupdate / models fetch / LSP download / default plugins off, and every proxy
  variable pointing at a closed local port so nothing can reach the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

OPENCODE_VERSION = "1.18.33"


def cache_root() -> Path:
    return Path(os.environ.get("OPENSAGE_TEST_CACHE") or Path.home() / ".cache" / "opensage-tests")


def _npm_install(folder: Path, packages: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "package.json").exists():
        (folder / "package.json").write_text('{"private": true}\n')
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--save-exact", *packages],
        cwd=folder, check=True, capture_output=True, text=True, timeout=600,
    )


def opencode_bin() -> str:
    """Path of the pinned ``opencode`` binary (installed into the cache when missing)."""
    explicit = os.environ.get("OPENSAGE_OPENCODE_BIN")
    if explicit:
        return explicit
    on_path = shutil.which("opencode")
    if on_path:
        try:
            version = subprocess.run([on_path, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            version = ""
        if version == OPENCODE_VERSION:
            return on_path
    folder = cache_root() / f"opencode-{OPENCODE_VERSION}"
    binary = folder / "node_modules" / ".bin" / "opencode"
    with FileLock(str(cache_root() / "opencode.lock")):
        if not binary.exists():
            _npm_install(folder, [f"opencode-ai@{OPENCODE_VERSION}"])
    return str(binary)


def plugin_seed() -> Path:
    """A folder holding ``package.json`` + lockfile + ``node_modules/@opencode-ai/plugin``."""
    folder = cache_root() / f"opencode-plugin-seed-{OPENCODE_VERSION}"
    with FileLock(str(cache_root() / "opencode.lock")):
        if not (folder / "node_modules" / "@opencode-ai" / "plugin").exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            # the exact package.json OpenCode writes into a config folder
            (folder / "package.json").write_text(json.dumps({"dependencies": {"@opencode-ai/plugin": OPENCODE_VERSION}}))
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                           check=True, capture_output=True, text=True, timeout=600)
    return folder


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def seed_config_dir(config_dir: Path) -> None:
    """Copy the plugin seed into an OpenCode config folder (hard links when possible)."""
    seed = plugin_seed()
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        if (seed / name).exists():
            shutil.copy2(seed / name, config_dir / name)
    shutil.copytree(seed / "node_modules", config_dir / "node_modules", copy_function=_link_or_copy,
                    symlinks=True, dirs_exist_ok=True)


def opencode_config(base_url: str) -> dict:
    """Inline OpenCode config: one scripted OpenAI-compatible provider, nothing shared."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "share": "disabled",
        "autoupdate": False,
        "provider": {
            "scripted": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted",
                "options": {"baseURL": base_url, "apiKey": "test-key"},
                "models": {"model": {"name": "Scripted model", "tool_call": True,
                                     "limit": {"context": 100000, "output": 4000}}},
            }
        },
        "model": "scripted/model",
        "small_model": "scripted/model",
        "permission": {"*": "allow"},
    }


def hermetic_env(home: Path, project: Path, base_url: str) -> dict[str, str]:
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port: any network use fails fast
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE_", "OPENSAGE_"))}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "PWD": str(project),
        "OPENCODE_CONFIG_CONTENT": json.dumps(opencode_config(base_url)),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "npm_config_offline": "true", "npm_config_audit": "false", "npm_config_fund": "false",
        "npm_config_update_notifier": "false",
    })
    return env
