"""Shared helpers of the host installers: JSON merges, owned files, the install manifest.

Every installer records what it added in ``<state_dir>/opensage-install.json``
(``{"opencode": {"files": [...], "json": {"path": ["key", ...]}}, "claude": {...}}``)
so that uninstall removes exactly that and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from opensage.errors import UsageError
from filelock import FileLock

from opensage.store import Workspace, atomic_write_text

MARKER = "generated-by: opensage"


#: The command the installed host config runs, found on PATH when the host starts it:
#: config a team commits holds no interpreter or workspace path (the hosts start MCP
#: servers and hooks in the project, and opensage finds the workspace from there).
OPENSAGE = "opensage"
#: Lines the installers add to the project's ``.gitignore``: the database (every session
#: transcript), its WAL files, lock files, the hook server's socket folder, derived caches.
GITIGNORE_LINES = (
    ".opencode/opensage.db",
    ".opencode/opensage.db-*",
    ".opencode/*.lock",
    ".opencode/run/",
    ".opencode/cache/",
    ".opencode/hook-queue*",  # events waiting for an unreachable team store (docs/team.md)
)
GITIGNORE_HEADER = f"# opensage state: session transcripts, locks, caches ({MARKER} install)"


def path_warning(report: list[str], script: str = OPENSAGE) -> None:
    """Tell the user when ``script`` on PATH is not this installation's (the installed
    config runs it by name)."""
    found = shutil.which(script)
    mine = Path(sys.executable).parent / script
    if found is None:
        report.append(f"note: '{script}' is not on PATH; the installed config runs it by name, so start "
                      f"the host where it is ({mine.parent} on PATH, or install opensage with pipx).")
    elif mine.exists() and Path(found).resolve() != mine.resolve():
        report.append(f"note: '{script}' on PATH is {found}, not this installation ({mine}); the host will run that one.")


def public_mode(path: Path) -> None:
    """Give a written file the mode a new file gets from the umask (usually 0644):
    :func:`atomic_write_text` writes through a 0600 temporary file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def add_gitignore(root: Path, manifest: "Manifest", report: list[str], extra: tuple[str, ...] = ()) -> None:
    """Append :data:`GITIGNORE_LINES` (and ``extra``) missing from ``<root>/.gitignore``
    (recorded for uninstall)."""
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    wanted = (*GITIGNORE_LINES, *extra)
    missing = [line for line in wanted if line not in present]
    if missing:
        if not path.exists() and ".gitignore" not in manifest.created:
            manifest.created.append(".gitignore")
        block = ([GITIGNORE_HEADER] if GITIGNORE_HEADER not in present else []) + missing
        sep = "" if not text or text.endswith("\n") else "\n"
        atomic_write_text(path, text + sep + "\n".join(block) + "\n")
        public_mode(path)
        report.append(f"{'updated' if text else 'wrote'} .gitignore ({', '.join(missing)})")
    for line in wanted:
        if line in missing or line in manifest.gitignore_owned_elsewhere():
            manifest.add_gitignore(line)


def remove_gitignore(root: Path, manifest: "Manifest", report: list[str]) -> None:
    """Uninstall: remove the .gitignore lines this host's install added, unless the other
    host's install still needs them."""
    others = manifest.gitignore_owned_elsewhere()
    drop = [line for line in manifest.gitignore if line not in others]
    manifest.gitignore = []
    path = root / ".gitignore"
    if not drop or not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() not in drop]
    if not any(k.strip() in GITIGNORE_LINES for k in kept):
        kept = [line for line in kept if line.strip() != GITIGNORE_HEADER]
    if kept:
        atomic_write_text(path, "\n".join(kept) + "\n")
        public_mode(path)
    elif ".gitignore" in manifest.created:
        path.unlink()
    else:
        atomic_write_text(path, "")
        public_mode(path)
    report.append(f"removed {', '.join(drop)} from .gitignore")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when missing). Raises UsageError when it is not an object."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); fix or remove it, then run install again.") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object; fix it, then run install again.")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically, keeping the key order (users' config files stay readable),
    with the umask's mode (a team's config files are not private)."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    public_mode(path)


def locked(workspace: Workspace) -> FileLock:
    """The lock held while an installer reads, merges and writes config files."""
    workspace.ensure_state_dir()
    return FileLock(str(workspace.state_dir / "opensage-install.lock"), timeout=30)


def release_lock(workspace: Workspace) -> None:
    """Remove the lock :func:`locked` created once no installer's manifest is left, and the
    state folder if that leaves it empty (it was created for the lock)."""
    lock = workspace.state_dir / "opensage-install.lock"
    if lock.exists() and not (workspace.state_dir / "opensage-install.json").exists():
        try:
            lock.unlink()
        except OSError:
            pass
    try:
        workspace.state_dir.rmdir()  # only when empty
    except OSError:
        pass


class Manifest:
    """What one host's installer added, kept in ``<state_dir>/opensage-install.json``."""

    def __init__(self, workspace: Workspace, host_name: str) -> None:
        self.path = workspace.state_dir / "opensage-install.json"
        self.root = workspace.root
        self.host_name = host_name
        self.all = read_json(self.path)
        entry = self.all.get(host_name) or {}
        self.files: list[str] = list(entry.get("files", []))
        self.json_keys: dict[str, list[list[str]]] = {k: [list(p) for p in v] for k, v in entry.get("json", {}).items()}
        self.hooks: dict[str, Any] = dict(entry.get("hooks", {}))
        #: JSON files install created (uninstall deletes them when nothing else is left in them)
        self.created: list[str] = list(entry.get("created", []))
        #: .gitignore lines this host's install stands for
        self.gitignore: list[str] = list(entry.get("gitignore", []))
        #: ``permissions.allow`` rules install added, per settings file (Claude Code)
        allow = entry.get("allow", {})
        self.allow: dict[str, list[str]] = {k: list(v) for k, v in allow.items()} if isinstance(allow, dict) else {}

    @property
    def installed(self) -> bool:
        """True when this host's install added anything (files, JSON keys or hooks)."""
        return bool(self.files or self.json_keys or self.hooks)

    def add_gitignore(self, line: str) -> None:
        """Record a ``.gitignore`` line the install added (each once)."""
        if line not in self.gitignore:
            self.gitignore.append(line)

    def gitignore_owned_elsewhere(self) -> set[str]:
        """.gitignore lines another host's install added."""
        return {line for name, entry in self.all.items() if name != self.host_name and isinstance(entry, dict)
                for line in entry.get("gitignore", [])}

    def add_file(self, rel: str) -> None:
        """Record a file the install created (path relative to the project root; each once)."""
        if rel not in self.files:
            self.files.append(rel)

    def add_json_key(self, rel: str, key_path: list[str]) -> None:
        """Record a key the install added to a JSON file: ``rel`` is the file (relative to the
        project root), ``key_path`` the keys from the top (e.g. ``["mcp", "opensage"]``).
        """
        keys = self.json_keys.setdefault(rel, [])
        if key_path not in keys:
            keys.append(key_path)

    def save(self) -> None:
        """Write the manifest file (atomically); drop this host's entry when nothing is installed,
        and the file when no host is left.

        :raises OSError: the file cannot be written.
        """
        if self.installed:
            self.all[self.host_name] = {"files": self.files, "json": self.json_keys, "hooks": self.hooks,
                                        "created": self.created, "gitignore": self.gitignore, "allow": self.allow}
        else:
            self.all.pop(self.host_name, None)
        if self.all:
            write_json(self.path, self.all)
        elif self.path.exists():
            self.path.unlink()


def write_owned(root: Path, rel: str, text: str, manifest: Manifest, report: list[str]) -> None:
    """Write a file we own; an existing file we did not write is left alone (reported)."""
    path = root / rel
    if path.exists() and rel not in manifest.files and MARKER not in path.read_text(encoding="utf-8", errors="replace"):
        report.append(f"kept {rel} (exists and was not written by opensage)")
        return
    atomic_write_text(path, text)
    public_mode(path)
    manifest.add_file(rel)
    report.append(f"wrote {rel}")


def remove_owned(root: Path, manifest: Manifest, report: list[str]) -> None:
    """Delete the files the manifest lists, then the folders that became empty."""
    for rel in list(manifest.files):
        path = root / rel
        if path.exists():
            path.unlink()
            report.append(f"removed {rel}")
        manifest.files.remove(rel)
        parent = path.parent
        while parent != root and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def save_json(root: Path, rel: str, data: dict[str, Any], manifest: Manifest) -> None:
    """Write a host config file, remembering whether install created it."""
    path = root / rel
    if not path.exists() and rel not in manifest.created:
        manifest.created.append(rel)
    write_json(path, data)


def finish_json(root: Path, rel: str, data: dict[str, Any], manifest: Manifest, report: list[str]) -> None:
    """After uninstall removed our keys: write the file back, or delete it if install
    created it and nothing else is left."""
    path = root / rel
    if not path.exists():
        return
    if not data and rel in manifest.created:
        path.unlink()
        report.append(f"removed {rel} (install created it; nothing else is in it)")
    else:
        write_json(path, data)
    if rel in manifest.created and not path.exists():
        manifest.created.remove(rel)


def remove_json_keys(root: Path, manifest: Manifest, report: list[str]) -> None:
    """Uninstall: delete every key install added to a host config file (as the manifest lists)."""
    for rel, keys in list(manifest.json_keys.items()):
        data = read_json(root / rel)
        for key_path in keys:
            if del_key(data, key_path):
                report.append(f"removed {'.'.join(key_path)} from {rel}")
        finish_json(root, rel, data, manifest, report)
        del manifest.json_keys[rel]


def set_key(data: dict[str, Any], key_path: list[str], value: Any) -> bool:
    """Set ``data[k1][k2]... = value`` unless a different value is there. Returns True if set."""
    node = data
    for key in key_path[:-1]:
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise UsageError(f"cannot add {'.'.join(key_path)}: '{key}' is not an object in the existing file.")
        node = nxt
    last = key_path[-1]
    if last in node and node[last] != value:
        return False
    node[last] = value
    return True


def del_key(data: dict[str, Any], key_path: list[str]) -> bool:
    """Delete ``data[k1][k2]...`` and parents left empty by it. Returns True if deleted."""
    trail = []
    node: Any = data
    for key in key_path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return False
        trail.append((node, key))
        node = node[key]
    if not isinstance(node, dict) or key_path[-1] not in node:
        return False
    del node[key_path[-1]]
    for parent, key in reversed(trail):
        if parent[key] == {}:
            del parent[key]
    return True
