"""Where generated tools live: files under ``.opencode/generated-tools/<name>/`` and SQLite rows.

Folder of a tool: ``spec.json`` (the :class:`~opensage.types.ToolSpec` without its code),
``tool.py`` / ``tool.sh`` / ``tool.js`` (the code), ``examples.json`` (each example call
with the result it gave when the tool was checked). A tool is written to a hidden
temporary folder first and renamed into place, so a half-written tool is never seen.

Tables (namespace ``dynamic-tools``): ``tool_state`` (current state per tool and
state id), ``tool_runs`` (one row per run, for "last run").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.errors import NotFoundError, UsageError
from opensage.pgschema import PROJECT, c_text, enable_project_rls
from opensage.store import Database, Migration, Workspace, atomic_write_json, check_name
from opensage.types import TOOL_FILES, ToolSpec

SPEC_FILE = "spec.json"
EXAMPLES_FILE = "examples.json"


def _m001(conn) -> None:
    conn.execute(
        "CREATE TABLE tool_state (tool TEXT NOT NULL, state_id TEXT NOT NULL, state TEXT NOT NULL,"
        " updated_at REAL NOT NULL, PRIMARY KEY (tool, state_id))"
    )
    conn.execute(
        "CREATE TABLE tool_runs (id INTEGER PRIMARY KEY, tool TEXT NOT NULL, started_at REAL NOT NULL,"
        " duration_ms REAL NOT NULL, level TEXT NOT NULL, status TEXT NOT NULL, error TEXT)"
    )
    conn.execute("CREATE INDEX tool_runs_tool ON tool_runs(tool, started_at)")


def pg_tool_tables(raw) -> None:
    """dynamic-tools migration 1 (``tool_state``, ``tool_runs``) on PostgreSQL."""
    raw.execute(c_text(f"""
        CREATE TABLE tool_state ({PROJECT}, tool TEXT NOT NULL, state_id TEXT NOT NULL, state TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (project, tool, state_id));
        CREATE TABLE tool_runs (id BIGSERIAL PRIMARY KEY, {PROJECT}, tool TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL, duration_ms DOUBLE PRECISION NOT NULL, level TEXT NOT NULL,
            status TEXT NOT NULL, error TEXT);
        CREATE INDEX tool_runs_tool ON tool_runs(tool, started_at);
    """))
    enable_project_rls(raw, "tool_state")
    enable_project_rls(raw, "tool_runs")


MIGRATIONS = [Migration(1, "tool state and runs", _m001, apply_pg=pg_tool_tables)]


def db_for(host) -> Database:
    """The host's database with the dynamic-tools migrations applied (idempotent)."""
    db = host.db
    db.migrate("dynamic-tools", MIGRATIONS)
    return db


@dataclass(frozen=True)
class StoredTool:
    spec: ToolSpec
    folder: Path

    @property
    def name(self) -> str:
        """The tool's name (its spec's ``name``)."""
        return self.spec.name

    @property
    def code_path(self) -> Path:
        """The tool's code file in its folder (``tool.py``/``tool.sh``... by language)."""
        return self.folder / TOOL_FILES[self.spec.language]


def tool_folder(workspace: Workspace, name: str) -> Path:
    """``<workspace>/.opencode/generated-tools/<name>``, the tool's folder.

    :raises UsageError: ``name`` is not a safe name (lowercase, digits, ``_``/``-``, at most 64).
    """
    return workspace.tools_dir / check_name(name, "tool name")


def load(workspace: Workspace, name: str) -> StoredTool:
    """The stored tool ``name``. Raises NotFoundError (listing the stored names)."""
    folder = tool_folder(workspace, name)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        known = ", ".join(t.name for t in load_all(workspace)) or "none yet; create one with @generate-tool"
        raise NotFoundError(f"no generated tool {name!r} (stored tools: {known})")
    return _read(folder)


def _read(folder: Path) -> StoredTool:
    data = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    lang = data.get("language")
    data["code"] = (folder / TOOL_FILES.get(lang, "tool.py")).read_text(encoding="utf-8")
    return StoredTool(ToolSpec.model_validate(data), folder)


def load_all(workspace: Workspace) -> list[StoredTool]:
    """Every stored tool, by name; unreadable folders are skipped."""
    root = workspace.tools_dir
    if not root.is_dir():
        return []
    tools = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not (folder / SPEC_FILE).is_file():
            continue
        try:
            tools.append(_read(folder))
        except (OSError, ValueError):
            continue
    return tools


def save(workspace: Workspace, spec: ToolSpec, checked: list[dict[str, Any]]) -> StoredTool:
    """Write the tool's folder atomically (temp folder + rename); replaces an older version."""
    root = workspace.tools_dir
    root.mkdir(parents=True, exist_ok=True)
    final = tool_folder(workspace, spec.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=root))
    try:
        os.chmod(tmp, 0o755)
        (tmp / spec.file_name).write_text(spec.code, encoding="utf-8")
        atomic_write_json(tmp / SPEC_FILE, spec.model_dump(mode="json", exclude={"code"}))
        atomic_write_json(tmp / EXAMPLES_FILE, checked)
        old = None
        if final.exists():
            old = root / f".{spec.name}.old-{time.time_ns()}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StoredTool(spec, final)


# -- state ------------------------------------------------------------------------------

def get_state(db: Database, tool: str, state_id: str) -> Any:
    """The JSON state a tool saved under ``state_id``, or None when it saved none."""
    row = db.conn.execute("SELECT state FROM tool_state WHERE tool=? AND state_id=?", (tool, state_id)).fetchone()
    return json.loads(row["state"]) if row else None


def set_state(db: Database, tool: str, state_id: str, state: Any) -> None:
    """Save ``state`` (any JSON-serialisable value) for ``tool`` under ``state_id``, replacing
    the old one.

    :raises TypeError: ``state`` is not JSON-serialisable.
    """
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO tool_state(tool, state_id, state, updated_at) VALUES (?,?,?,?)"
            " ON CONFLICT(tool, state_id) DO UPDATE SET state=excluded.state, updated_at=excluded.updated_at",
            (tool, state_id, json.dumps(state), time.time()),
        )


def reset_state(db: Database, tool: str, state_id: str) -> bool:
    """Delete ``tool``'s state under ``state_id``; returns whether there was one."""
    with db.transaction() as conn:
        return conn.execute("DELETE FROM tool_state WHERE tool=? AND state_id=?", (tool, state_id)).rowcount > 0


def record_run(db: Database, tool: str, started_at: float, duration_ms: float, level: str, status: str,
               error: str | None = None) -> None:
    """Record one run of ``tool``.

    :param started_at: epoch seconds.
    :param duration_ms: wall time in milliseconds.
    :param level: the sandbox level it ran at (``bwrap``, ``rlimit``).
    :param status: ``ok``, ``error``, ``timeout``...
    :param error: why it failed, if it did.
    """
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO tool_runs(tool, started_at, duration_ms, level, status, error) VALUES (?,?,?,?,?,?)",
            (tool, started_at, duration_ms, level, status, error),
        )


def last_run(db: Database, tool: str) -> dict[str, Any] | None:
    """The latest run of ``tool`` as ``{started_at (epoch s), duration_ms, level, status,
    error}``, or None when it never ran.
    """
    row = db.conn.execute(
        "SELECT started_at, duration_ms, level, status, error FROM tool_runs WHERE tool=?"
        " ORDER BY started_at DESC, id DESC LIMIT 1", (tool,)
    ).fetchone()
    return dict(row) if row else None


def check_state_id(state_id: str) -> str:
    """``state_id`` when it is 1-128 characters on one line (no NUL).

    :raises UsageError: otherwise, with an example (``stateId=default``).
    """
    if not isinstance(state_id, str) or not (1 <= len(state_id) <= 128) or any(c in state_id for c in "\0\n"):
        raise UsageError(f"stateId {state_id!r} must be 1-128 characters on one line, e.g. stateId=default")
    return state_id
