"""Which folders and files a walk of a project skips: a small built-in list plus the
project's own ``.gitignore`` files (matched with pathspec's git semantics).

One place for what the agent tools (list, search, tree snapshots, scratch copies), the
coordinator's file overview and code ingest leave out. A cloned repository's
``.gitignore`` is untrusted input: it can only make a walk skip more, and each file is
read up to :data:`MAX_GITIGNORE_BYTES`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

log = logging.getLogger("opensage.ignore")

#: Folder names never walked, listed, searched, copied or diffed (tool state, VCS, caches,
#: virtualenvs, build output), whatever the project's ``.gitignore`` says.
DEFAULT_IGNORED_DIRS = frozenset({
    ".git", ".opencode", ".claude", "node_modules", ".venv", "venv", "env", "__pycache__",
    ".pytest_cache", ".benchmarks", ".mypy_cache", ".ruff_cache", ".tox", ".nox", ".eggs", "dist", "build",
    "site-packages", "__pypackages__", "htmlcov",
})
#: Bytes read of one ``.gitignore`` (git itself has no limit; a bound against a hostile
#: clone; real files are a few KiB).
MAX_GITIGNORE_BYTES = 256 * 1024
#: Patterns kept of one ``.gitignore``: GitHub's largest templates have a few hundred
#: lines; measured here, pathspec's re2 backend fails to compile a set of 2,000 and its
#: pure-Python one checks 300 paths against 1,000 patterns in about 50 ms. Later lines are
#: not applied, with a warning.
MAX_GITIGNORE_PATTERNS = 1_000


def default_ignored(name: str) -> bool:
    """Whether the folder ``name`` (one path component) is on the built-in list
    (:data:`DEFAULT_IGNORED_DIRS` or a ``*.egg-info`` folder)."""
    return name in DEFAULT_IGNORED_DIRS or name.endswith(".egg-info")


def _load(directory: str):
    path = os.path.join(directory, ".gitignore")
    if not os.path.isfile(path):  # missing, a folder, or a FIFO a hostile clone put there (open would block)
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_GITIGNORE_BYTES)
    except OSError:
        return None
    lines = [line for line in data.decode("utf-8", "replace").splitlines()
             if line.strip() and not line.startswith("#")]  # git: only a leading # comments
    if not lines:
        return None
    if len(lines) > MAX_GITIGNORE_PATTERNS:
        log.warning("%s has %d patterns; only the first %d are applied", path, len(lines), MAX_GITIGNORE_PATTERNS)
        lines = lines[:MAX_GITIGNORE_PATTERNS]
    import pathspec  # only when a project has a .gitignore

    for backend in ("best", "simple"):  # re2/hyperscan when installed; plain re if they refuse the set
        try:
            return pathspec.GitIgnoreSpec.from_lines(lines, backend=backend)
        except Exception as exc:  # an invalid pattern, or a backend's own limit
            error = exc
    log.warning("%s is not applied: %s", path, error)
    return None


class IgnoreRules:
    """The skip rules of one walk from ``root``: the built-in list, the ``.gitignore`` of
    ``root`` and of its ancestors up to the git work tree's top (the folder holding
    ``.git``), and the ``.gitignore`` of every folder the walk enters.

    :param root: the folder the walk starts from (a path; need not be a git checkout).
    :param top: stop looking for ancestors' ``.gitignore`` here (e.g. the agent's
        workspace when ``root`` is a folder inside it); a folder at or above ``root``.
    """

    def __init__(self, root: Path | str, top: Path | str | None = None) -> None:
        self.root = os.path.abspath(root)
        self._specs: dict[str, object] = {}  # folder -> its compiled .gitignore
        stop = os.path.abspath(top) if top is not None else None
        folder = self.root
        chain = [folder]
        while folder != stop and not os.path.exists(os.path.join(folder, ".git")):
            parent = os.path.dirname(folder)
            if parent == folder:
                chain = [self.root]  # not in a git work tree: only the root's own file
                break
            folder = parent
            chain.append(folder)
        for folder in reversed(chain):  # shallowest first: a deeper file's verdict comes later and wins
            spec = _load(folder)
            if spec is not None:
                self._specs[folder] = spec

    def enter(self, directory: str) -> None:
        """Read ``directory``'s own ``.gitignore`` (a walk calls this for each folder it enters)."""
        directory = os.path.abspath(directory)
        if directory not in self._specs:
            spec = _load(directory)
            if spec is not None:
                self._specs[directory] = spec

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` (absolute, or relative to the walk's root) is skipped: a folder
        on the built-in list, or a path a ``.gitignore`` above it matches (git's rules:
        the deepest file that says something wins, ``!`` re-includes)."""
        path = os.path.join(self.root, path)
        if is_dir and default_ignored(os.path.basename(path)):
            return True
        verdict = False
        for folder, spec in self._specs.items():  # shallower folders were added first
            if path == folder or not path.startswith(folder.rstrip(os.sep) + os.sep):
                continue
            rel = os.path.relpath(path, folder).replace(os.sep, "/") + ("/" if is_dir else "")
            result = spec.check_file(rel).include
            if result is not None:
                verdict = result
        return verdict


def walk(root: Path | str, *, hidden: bool = True,
         top: Path | str | None = None) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root)`` without what :class:`IgnoreRules` skips, folders and files sorted.

    :param root: the folder to walk.
    :param hidden: False also skips every folder whose name starts with a dot.
    :param top: see :class:`IgnoreRules`.
    :returns: ``(dirpath, dirnames, filenames)`` triples like :func:`os.walk`; changing
        ``dirnames`` in place prunes the walk further.
    """
    rules = IgnoreRules(root, top)
    for dirpath, dirnames, filenames in os.walk(root):
        rules.enter(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (hidden or not d.startswith("."))
                             and not rules.ignored(os.path.join(dirpath, d), True))
        if rules._specs:
            filenames = [f for f in filenames if not rules.ignored(os.path.join(dirpath, f), False)]
        yield dirpath, dirnames, sorted(filenames)
