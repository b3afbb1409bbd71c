"""Protected paths: project files a sandboxed command or an agent's changes must never write.

Each of these is read or executed by a program that runs on the host, outside the
sandbox, the next time the user works in the project: git (``.git/config`` with
``core.fsmonitor``, hooks), Claude Code (``.claude/settings.json`` hooks), OpenCode and
MCP clients (``opencode.json``, ``.mcp.json``: local server commands), editors
(``.vscode/tasks.json``, ``.idea``), direnv (``.envrc``), npm (``package.json`` scripts
run on ``npm install``; ``.npmrc`` ``script-shell``), CI (``.github/workflows``) and
shells (rc files, when the project is a home folder).

Two enforcement points use this list (see ``docs/sandbox.md``):

* the sandbox mounts (:func:`opensage.sandbox.run`): every *top-level* name of
  :data:`MOUNT_NAMES` inside a writable path is bound read-only, and one that does not
  exist yet gets an empty placeholder (removed after the run) bound read-only, so it
  cannot be created either;
* the apply step (:meth:`opensage.plugins.agents.topology.ScratchCopy.apply`) and the
  agent's ``write``/``edit`` tools refuse every path :func:`match` reports, at any depth.

The list can be extended by the user (``sandbox.protected_paths`` in the user
configuration, see :func:`opensage.sandbox.load_config`), never shrunk, and never by a
file inside the project.
"""

from __future__ import annotations

import fnmatch
from pathlib import PurePosixPath
from typing import Iterable

__all__ = ["DEFAULT_PROTECTED", "MOUNT_NAMES", "match", "patterns"]

#: Default deny-write patterns. ``name/`` = a directory and everything in it; a pattern
#: without ``/`` (other than a trailing one) matches that name at any depth; one with a
#: ``/`` inside is anchored at the project root. fnmatch wildcards allowed.
DEFAULT_PROTECTED: tuple[str, ...] = (
    # version control: config (core.fsmonitor, core.hooksPath...) and hooks run on the host
    ".git/", ".gitmodules", ".pre-commit-config.yaml",
    # coding assistants and editors: hooks, MCP servers, tasks
    ".claude/", ".opencode/", "opencode.json", "opencode.jsonc", ".mcp.json", ".codex/", ".cursor/",
    ".gemini/", ".vscode/", ".idea/", ".devcontainer/",
    # environment loaders: direnv, dotenv
    ".envrc", ".env", ".env.*",
    # package managers whose files run code on install
    "package.json", ".npmrc", ".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs",
    # CI configuration
    ".github/workflows/", ".github/actions/", ".gitlab-ci.yml", ".circleci/",
    # shell start-up files (the project might be a home folder; HOME is the cwd in the sandbox)
    ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".zshrc", ".zshenv",
    ".zprofile", ".zlogin", ".inputrc", ".gitconfig",
)

#: Top-level names protected by the sandbox mounts, as (name, is_directory). A pattern
#: anchored below the top level (``.github/workflows/``) is covered by protecting its
#: first component: a folder inside a writable path can be renamed away together with a
#: read-only mount below it, the mount point itself cannot.
MOUNT_NAMES: tuple[tuple[str, bool], ...] = tuple(
    dict.fromkeys(
        (p.split("/")[0], p.endswith("/") or "/" in p.rstrip("/"))
        for p in DEFAULT_PROTECTED if not any(c in p for c in "*?[")
    )
)


def patterns(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The defaults plus the user's ``extra`` patterns (duplicates dropped, order kept)."""
    return tuple(dict.fromkeys([*DEFAULT_PROTECTED, *(e.strip() for e in extra if e and e.strip())]))


def match(rel: str, extra: Iterable[str] = ()) -> str | None:
    """The pattern protecting project-relative path ``rel`` (posix), or None.

    ``rel`` is normalised first (``a/./b`` and ``a//b`` are ``a/b``); a path with ``..``
    is reported as protected by ``..`` (it names nothing inside the project).
    """
    parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".")]
    if not parts:
        return None
    if ".." in parts or parts[0] == "/":
        return ".."
    for pat in patterns(extra):
        is_dir = pat.endswith("/")
        body = pat.rstrip("/")
        if "/" in body:  # anchored at the root: compare the leading components
            segs = body.split("/")
            n = len(segs)
            if len(parts) >= n and all(fnmatch.fnmatchcase(parts[i], segs[i]) for i in range(n)):
                if is_dir or len(parts) == n:
                    return pat
            continue
        # a name pattern matches any component: a directory pattern covers everything
        # under it, and a folder named like a protected file is refused with its contents
        if any(fnmatch.fnmatchcase(part, body) for part in parts):
            return pat
    return None
