"""Workspace paths, the SQLite database and atomic JSON files.

State lives under ``<project>/.opencode/``. The project is, in order: the ``--workspace``
option, ``$OPENSAGE_WORKSPACE``, the nearest parent of the current directory holding
``.git``, else the current directory.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from opensage.errors import UsageError
from opensage.transactions import nested_transaction

__all__ = [
    "Workspace",
    "Database",
    "Migration",
    "find_workspace",
    "atomic_write_json",
    "atomic_write_text",
    "check_name",
    "execute_script",
    "insert_rows",
    "open_database",
    "project_key",
    "database_url",
    "store_exists",
]

STATE_DIR = ".opencode"


def new_run_id() -> str:
    """The id of an agent run (a folder name under ``.opencode/runs``): ``YYYYmmdd-HHMMSS-<6 hex>``,
    sortable and unique."""
    import uuid

    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is safe to use as a file name, else raise :class:`UsageError`.

    Safe: 1–64 characters of lowercase letters, digits, ``-`` and ``_``, starting with a
    letter or digit (so no ``..``, ``/`` or hidden files).
    """
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise UsageError(
            f"{what} {name!r} is not allowed: use 1-64 lowercase letters, digits, '-' or '_', "
            f"starting with a letter or digit (e.g. 'csv-summary')."
        )
    return name


def find_workspace(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> Path:
    """Find the project root (see module docstring). Raises UsageError if ``explicit`` is not a directory."""
    chosen = explicit or os.environ.get("OPENSAGE_WORKSPACE")
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"workspace {str(path)!r} is not a directory; pass an existing project folder.")
        return path
    start = (cwd or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return start


@dataclass(frozen=True)
class Workspace:
    """A project and the paths of its state (nothing is created until written)."""

    root: Path

    @property
    def state_dir(self) -> Path:
        """``<root>/.opencode``: where opensage keeps its state (database, agents, tools, metrics)."""
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        """``<root>/.opencode/opensage.db``, the SQLite database every plugin shares."""
        return self.state_dir / "opensage.db"

    @property
    def metrics_path(self) -> Path:
        """``<root>/.opencode/agent-metrics.json``, the agent registry's runs."""
        return self.state_dir / "agent-metrics.json"

    @property
    def agents_dir(self) -> Path:
        """``<root>/.opencode/agent``: generated agents, where OpenCode reads them."""
        return self.state_dir / "agent"

    @property
    def tools_dir(self) -> Path:
        """``<root>/.opencode/generated-tools``: one folder per generated tool."""
        return self.state_dir / "generated-tools"

    def ensure_state_dir(self) -> Path:
        """Create :attr:`state_dir` (and parents) if missing and return it.

        :raises OSError: it cannot be created (read-only or full disk).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir


@dataclass(frozen=True)
class Migration:
    """A numbered schema change: ``apply(conn)`` runs inside the migration's transaction."""

    number: int
    name: str
    apply: Callable[[sqlite3.Connection], None]
    #: the same step on PostgreSQL (a psycopg connection; :mod:`opensage.pgschema`), None
    #: when the namespace does not support the team store yet
    apply_pg: Callable[[Any], None] | None = None


class Database:
    """One SQLite file in WAL mode, shared by all plugins (the default store; the team
    store on PostgreSQL, :class:`opensage.pgstore.PostgresDatabase`, has the same interface).

    Each plugin owns a *namespace* of numbered migrations (``migrate("graph-memory",
    [...])``); applied numbers are kept in ``_migrations``. Connections are per thread.
    Writes go through :meth:`transaction` (``BEGIN IMMEDIATE``; waits up to
    ``busy_timeout_ms`` for another writer).
    """

    backend = "sqlite"

    def __init__(self, path: Path, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._migrated: set[str] = set()
        self._lock = threading.Lock()

    def describe(self) -> str:
        """The database file's path (for messages)."""
        return str(self.path)

    @property
    def cache_dir(self) -> Path:
        """``cache/`` next to the database file: derived data plugins may rebuild (label index)."""
        return self.path.parent / "cache"

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use: WAL mode, ``busy_timeout_ms``,
        foreign keys on, rows as ``sqlite3.Row``, autocommit outside :meth:`transaction`).

        :raises sqlite3.OperationalError: the file cannot be opened or switched to WAL.
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            self._ensure_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def _ensure_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment of exclusive access; SQLite answers "locked" at
        # once (no busy handler) when another process is creating the same file, so retry.
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _control(self, conn, sql: str) -> None:
        conn.execute(sql)

    def _begin(self, conn) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _usable(self, conn) -> bool:
        return True

    transaction = nested_transaction

    def migrate(self, namespace: str, migrations: Sequence[Migration]) -> None:
        """Apply the namespace's migrations not applied yet, in number order (idempotent)."""
        if namespace in self._migrated:
            return
        with self._lock:
            if namespace in self._migrated:
                return
            conn = self.conn
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (namespace TEXT NOT NULL, number INTEGER NOT NULL,"
                " name TEXT NOT NULL, applied_at REAL NOT NULL,"
                " PRIMARY KEY (namespace, number))"
            )
            done = {r[0] for r in conn.execute("SELECT number FROM _migrations WHERE namespace=?", (namespace,))}
            for m in sorted(migrations, key=lambda m: m.number):
                if m.number in done:
                    continue
                with self.transaction() as tx:
                    # another process may have applied it while we waited for the write lock
                    if tx.execute(
                        "SELECT 1 FROM _migrations WHERE namespace=? AND number=?", (namespace, m.number)
                    ).fetchone():
                        continue
                    m.apply(tx)
                    tx.execute(
                        "INSERT INTO _migrations(namespace, number, name, applied_at) VALUES (?,?,?,?)",
                        (namespace, m.number, m.name, time.time()),
                    )
            self._migrated.add(namespace)

    def close(self) -> None:
        """Close this thread's connection, if open (other threads keep theirs)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _config_doc(path: Path) -> dict:
    """The ``team`` mapping of a YAML config file ({} when absent)."""
    from opensage.userconfig import read_section

    return read_section(path, "team", "team: {database_url: postgresql://host/db}") or {}


def _server_of(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or 5432}{parts.path or '/'}"


def database_url(workspace: Workspace) -> str | None:
    """The team store's URL for ``workspace``, or None for the local SQLite file.

    In order: ``$OPENSAGE_DATABASE_URL`` (empty means SQLite); else ``team.database_url``
    of the project file ``.opencode/opensage.yaml`` — honoured only when the user's own
    config (``~/.config/opensage/config.yaml``, ``team.trusted_databases``: a list of
    ``host:port/dbname``) lists that server, because a cloned repository's config must not
    be able to send a developer's memory to a server of its choosing.

    :raises UsageError: the project file names an untrusted server, carries a password,
        or is not valid YAML (exit 2).
    """
    env = os.environ.get("OPENSAGE_DATABASE_URL")
    if env is not None:
        return env.strip() or None
    project_file = workspace.state_dir / "opensage.yaml"
    url = _config_doc(project_file).get("database_url")
    if not url:
        return None
    if not isinstance(url, str):
        raise UsageError(f"{project_file}: team.database_url must be a postgresql:// URL string")
    from urllib.parse import urlsplit

    if urlsplit(url).password is not None:
        raise UsageError(f"{project_file}: team.database_url must not hold a password (it is shared with "
                         "everyone who clones the project); use ~/.pgpass or PGPASSWORD")
    from opensage.userconfig import user_config_path

    trusted = _config_doc(user_config_path()).get("trusted_databases") or []
    if _server_of(url) not in [str(t) for t in trusted]:
        raise UsageError(
            f"{project_file} points graph memory at {url!r}, a server you have not trusted. A cloned "
            f"project must not choose where your memory goes: add '{_server_of(url)}' to team.trusted_databases "
            f"in {user_config_path()}, or set OPENSAGE_DATABASE_URL yourself.")
    return url


def project_key(workspace: Workspace) -> str:
    """The key of ``workspace``'s rows in the team store.

    In order: ``$OPENSAGE_PROJECT``; ``team.project`` of ``.opencode/opensage.yaml``; the
    repository's ``origin`` remote from ``.git/config``, normalised to ``host/owner/name``
    (so every clone of one repository shares its memory, whatever the URL form);
    else ``local:<hostname>:<absolute path>`` (a folder with no remote is private to
    its machine).
    """
    import configparser
    import socket

    explicit = os.environ.get("OPENSAGE_PROJECT") or _config_doc(workspace.state_dir / "opensage.yaml").get("project")
    if explicit:
        return str(explicit)
    config = workspace.root / ".git" / "config"
    if config.is_file():
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(config.read_text(encoding="utf-8", errors="replace")[:200_000])
            remote = parser.get('remote "origin"', "url", fallback=None)
        except configparser.Error:
            remote = None
        if remote:
            m = re.match(r"^(?:[a-z+]+://)?(?:[^@/]+@)?([^:/]+)(?::\d+)?[:/](.+?)(?:\.git)?/*$", remote.strip())
            if m:
                return f"{m.group(1).lower()}/{m.group(2)}"
    return f"local:{socket.gethostname()}:{workspace.root}"


def open_database(workspace: Workspace):
    """The store of ``workspace``: the team store when :func:`database_url` names one
    (:class:`opensage.pgstore.PostgresDatabase`, rows under :func:`project_key`), else the
    project's SQLite file (:class:`Database`). Nothing connects until first use.

    :raises UsageError: a malformed URL or project key, or an untrusted project config (exit 2).
    """
    url = database_url(workspace)
    if not url:
        workspace.ensure_state_dir()
        return Database(workspace.db_path)
    from opensage.pgstore import PostgresDatabase

    return PostgresDatabase(url, project_key(workspace), cache_dir=workspace.state_dir / "cache" / "team")


def store_exists(workspace: Workspace) -> bool:
    """True when ``workspace`` has a store to read: the team store always, else the SQLite
    file once written. Lets a read-only hook answer "nothing yet" without creating a file.

    :raises UsageError: as :func:`database_url`.
    """
    return bool(database_url(workspace)) or workspace.db_path.exists()


#: Ids bound by one chunked ``IN (...)`` query: under SQLite's default limit of 999 host
#: parameters before 3.32 (SQLITE_MAX_VARIABLE_NUMBER, https://sqlite.org/limits.html),
#: with room for a second copy of the list or a few other parameters in the same query.
IN_CHUNK = 400


def in_chunks(ids: Sequence[Any], size: int = IN_CHUNK) -> Iterator[tuple[list[Any], str]]:
    """Split ``ids`` for ``... WHERE x IN (?,?,...)`` queries: yields ``(chunk, marks)``
    where ``chunk`` is at most ``size`` consecutive ids (order kept) and ``marks`` is
    ``"?,?,..."`` with one ``?`` per id, to put in the query text and bind ``chunk`` to.

    :param ids: the values (any sequence; an empty one yields nothing).
    :param size: ids per chunk, at least 1 (default :data:`IN_CHUNK`).
    :raises ValueError: ``size`` below 1.
    """
    if size < 1:
        raise ValueError(f"in_chunks: size must be at least 1, got {size}")
    ids = list(ids)
    for i in range(0, len(ids), size):
        chunk = ids[i:i + size]
        yield chunk, ",".join("?" * len(chunk))


def insert_rows(conn, head: str, rows: Sequence[Sequence[Any]], tail: str = "", max_params: int = 999) -> None:
    """Run ``{head} VALUES (?,..),(?,..){tail}`` over ``rows`` with as many rows per
    statement as ``max_params`` bound parameters allow (default 999, SQLite's oldest limit,
    see :data:`IN_CHUNK`): one statement per chunk, not per row — on the team store every
    statement also costs a row-level-security check and the change-counter trigger.

    :param head: ``INSERT [OR IGNORE] INTO t(col, ...)``.
    :param rows: tuples of equal length, one value per column (an empty list runs nothing).
    :param tail: e.g. ``ON CONFLICT(...) DO UPDATE SET ...``; each conflict key at most once
        per call (PostgreSQL refuses to update one row twice in a statement).
    """
    if not rows:
        return
    width = len(rows[0])
    per = max(1, max_params // width)
    one = "(" + ",".join("?" * width) + ")"
    for i in range(0, len(rows), per):
        chunk = rows[i:i + per]
        conn.execute(f"{head} VALUES {','.join([one] * len(chunk))}{tail}", [v for row in chunk for v in row])


def execute_script(conn: sqlite3.Connection, sql: str) -> None:
    """Run several SQL statements inside the current transaction.

    ``sqlite3.Connection.executescript`` commits first, which would break the
    all-or-nothing guarantee of a migration; this splits complete statements instead.
    """
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                conn.execute(buffer)
            buffer = ""
    if buffer.strip():
        conn.execute(buffer)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``).

    Readers see the old file or the new one, never a part. Callers doing read-modify-write
    must hold a :class:`filelock.FileLock` on ``path.with_suffix(path.suffix + '.lock')``
    around the whole cycle.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """:func:`atomic_write_text` of ``data`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
