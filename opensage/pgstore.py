"""The team store: every plugin's tables on a PostgreSQL server (issue 16).

:class:`PostgresDatabase` has the interface of :class:`opensage.store.Database` (``conn``,
``transaction()``, ``migrate()``, ``close()``), so no plugin knows which store it writes:
plugins keep writing SQLite's SQL, translated by :mod:`opensage.pgdialect`.

* **Connections**: psycopg 3 through a :class:`psycopg_pool.ConnectionPool` (at most
  :data:`POOL_MAX` connections per process); a thread keeps one connection until
  :meth:`PostgresDatabase.close`. Connecting waits at most :data:`CONNECT_TIMEOUT_S`
  seconds; a server that cannot be reached raises :class:`opensage.errors.StoreUnavailable`
  naming the URL with its password replaced by ``***``.
* **Projects**: one database holds many projects, each in its own schema
  (:func:`opensage.pgschema.schema_for`); a connection's ``search_path`` is its project's
  schema, so queries written for one project's SQLite file run unchanged and reach that
  project only. Roles are let into projects by schema privileges (:func:`grant_project`).
* **Writers**: ``transaction()`` takes a transaction-scoped advisory lock per project, so
  writers of one project run one at a time as they do on SQLite (``BEGIN IMMEDIATE``);
  readers never wait.
* **Migrations**: the same namespaces and numbers as SQLite, from each migration's
  ``apply_pg`` (see :mod:`opensage.pgschema`).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from opensage.errors import StoreUnavailable, UsageError
from opensage.transactions import nested_transaction
from opensage.pgdialect import Translated, UnsupportedSQL, fts5_to_tsquery, translate

__all__ = ["PostgresDatabase", "redact_url", "check_url", "grant_project", "POOL_MAX", "CONNECT_TIMEOUT_S"]

#: Connections per process (psycopg_pool's ``max_size``): the MCP server runs calls on
#: threads; hooks and CLI commands use one.
POOL_MAX = 8
#: Seconds to wait for the server to answer a new connection (libpq ``connect_timeout``),
#: and for a free pooled connection. A hook must not stall its host on a dead server.
CONNECT_TIMEOUT_S = 3
#: Seconds the column statistics behind :meth:`Connection.estimate_df` are reused.
STATS_TTL_S = 300
#: Project keys: what :func:`opensage.store.project_key` derives, or the user sets.
PROJECT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.query:  # libpq also takes the password as a parameter: ?password=...
        parts = parts._replace(query=re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query))
    if parts.password is None:
        return urlunsplit(parts)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def check_url(url: str) -> str:
    """Return ``url`` if it is a ``postgresql://`` (or ``postgres://``) URL, else raise.

    :raises UsageError: another scheme or no host/database part (exit 2).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"database URL {redact_url(url)!r} is not a URL ({exc}); "
                         "use postgresql://user@host:5432/dbname") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise UsageError(f"database URL {redact_url(url)!r} must start with postgresql:// "
                         "(e.g. postgresql://user@host:5432/opensage); unset OPENSAGE_DATABASE_URL for the local SQLite store")
    return url


class Row(tuple):
    """A result row read by position or column name, like :class:`sqlite3.Row`."""

    __slots__ = ()
    _names: dict[str, int]

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """Column names, in order."""
        return list(self._names)


def _row_factory(cursor):
    desc = cursor.description or []
    names = {}
    for i, col in enumerate(desc):
        names.setdefault(col.name, i)
    cls = type("Row", (Row,), {"_names": names, "__slots__": ()})
    return lambda values: cls(values)


class Cursor:
    """The result of :meth:`Connection.execute`: ``fetchone``/``fetchall``/iteration,
    ``lastrowid`` (the id of a row inserted into a table with an ``id``) and ``rowcount``."""

    def __init__(self, cur, lastrowid: int | None) -> None:
        self._cur = cur
        self.lastrowid = lastrowid
        self.rowcount = cur.rowcount

    def fetchone(self):
        """The next row, or None."""
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list:
        """The remaining rows."""
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self):
        return iter(self.fetchall())


class _CursorFacade:
    row_factory = None

    def __init__(self, conn: "Connection") -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(sql, params)


class Connection:
    """One pooled psycopg connection speaking the SQLite dialect (see :mod:`opensage.pgdialect`)."""

    backend = "postgresql"

    def __init__(self, raw, db: "PostgresDatabase") -> None:
        self.raw = raw
        self.db = db
        self.total_changes = 0

    def _params(self, t: Translated, params: Sequence[Any]) -> list:
        out = []
        for p in t.plan:
            if not isinstance(p, tuple):
                out.append(params[p])
            elif p[0] == "array":
                out.append(list(params[p[1]:p[1] + p[2]]))
            else:
                out.append(fts5_to_tsquery(params[p[1]], p[2]))
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one SQLite-dialect statement with ``?`` parameters.

        :raises UnsupportedSQL: a construct :mod:`opensage.pgdialect` does not translate.
        :raises StoreUnavailable: the connection to the server was lost.
        :raises psycopg.Error: the statement failed on the server (constraint, syntax).
        """
        import psycopg

        t = translate(sql)
        params = tuple(params) if params is not None else ()
        args = self._params(t, params)
        cur = self.raw.cursor()
        try:
            # psycopg prepares a statement on the server once it has run it a few times
            cur.execute(t.sql, args if t.plan else None)
        except psycopg.OperationalError as exc:
            if self.raw.closed or self.raw.broken:
                self.db._drop_broken()
                raise StoreUnavailable(f"lost the connection to {self.db.describe()}: {exc}".strip()) from None
            raise
        lastrowid = None
        if t.returning_id:
            row = cur.fetchone()
            lastrowid = row[0] if row else None
        if cur.rowcount and cur.rowcount > 0 and not cur.description:
            self.total_changes += cur.rowcount
        elif t.returning_id and lastrowid is not None:
            self.total_changes += 1
        return Cursor(cur, lastrowid)

    def executemany(self, sql: str, seq_of_params) -> Cursor:
        """:meth:`execute` for each parameter tuple (in one server round trip per batch)."""
        t = translate(sql)
        rows = [self._params(t, tuple(p)) for p in seq_of_params]
        cur = self.raw.cursor()
        text = t.sql
        if t.returning_id:
            text = text[: text.rfind(" RETURNING id")]
        if rows:
            cur.executemany(text, rows)
            if cur.rowcount and cur.rowcount > 0:
                self.total_changes += cur.rowcount
        return Cursor(cur, None)

    def estimate_df(self, table: str, terms: Sequence[str]) -> dict[str, int] | None:
        """Estimated document frequencies of the common ``terms`` in ``table``'s full-text
        index (``nodes`` or ``episodes``), from PostgreSQL's column statistics (the most
        common lexemes of the ``tsvector`` and their frequencies, kept by ANALYZE /
        autovacuum; cached :data:`STATS_TTL_S` seconds). A term absent from the result is
        rarer than every listed lexeme. None when there are no statistics yet (count instead).
        """
        key = {"nodes": "nodes", "episodes": "episodes_fts"}.get(table)
        if key is None or not terms:
            return None
        now = time.monotonic()
        cached = self.db._stats.get(key)
        if cached is None or now - cached[0] > STATS_TTL_S:
            row = self.raw.execute(
                "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples"
                " FROM pg_stats s JOIN pg_class c ON c.relname = s.tablename"
                " AND c.relnamespace = current_schema()::regnamespace"
                " WHERE s.schemaname = current_schema() AND s.tablename = %s AND s.attname = 'tsv'",
                (key,)).fetchone()
            common = dict(zip(row[0], row[1])) if row and row[0] else None
            cached = (now, common, float(row[2]) if row else 0.0)
            self.db._stats[key] = cached
        _, common, rows = cached
        if not common or rows <= 0:
            return None
        stems = self.raw.execute(
            "SELECT t, array(SELECT lexeme FROM unnest(to_tsvector('opensage', opensage_words(t))))"
            " FROM unnest(%s::text[]) AS t", (list(terms),)).fetchall()
        out = {}
        for term, lexemes in stems:
            freqs = [common[x] for x in lexemes or () if x in common]
            if freqs and len(freqs) == len(lexemes):
                out[term] = int(round(min(freqs) * rows))
        return out

    def cursor(self) -> "_CursorFacade":
        """A cursor as ``sqlite3.Connection.cursor()`` gives (``execute``, ``row_factory``
        accepted and ignored: rows are always :class:`Row`)."""
        return _CursorFacade(self)

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`PostgresDatabase.transaction`."""
        return getattr(self.db._local, "depth", 0) > 0

    def commit(self) -> None:
        """Nothing to do outside :meth:`PostgresDatabase.transaction` (autocommit)."""

    def close(self) -> None:
        """Return the connection to its pool (done by :meth:`PostgresDatabase.close`)."""


class PostgresDatabase:
    """The team store (see the module docstring).

    :param url: ``postgresql://user[:password]@host[:port]/dbname`` (libpq's URL form;
        ``PGPASSWORD``/``~/.pgpass`` work too).
    :param project: the project key every row is written under (see
        :func:`opensage.store.project_key`).
    :raises UsageError: ``url`` is not a PostgreSQL URL, or ``project`` is not a valid key.
    """

    backend = "postgresql"

    def __init__(self, url: str, project: str, cache_dir: Path | None = None) -> None:
        self.url = check_url(url)
        if not PROJECT_KEY.match(project or ""):
            raise UsageError(f"project key {project!r} is not allowed: use 1-200 letters, digits and . _ : / @ + -")
        self.project = project
        from opensage.pgschema import schema_for

        #: the schema holding this project's tables
        self.schema = schema_for(project)
        self.path = None
        #: where plugins keep derived data they may rebuild (the label index), on this machine
        self.cache_dir = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "opensage" / "team"
        self._local = threading.local()
        self._migrated: set[str] = set()
        self._lock = threading.Lock()
        self._pool = None
        self._pool_lock = threading.Lock()
        self._stats: dict = {}
        #: applied migration numbers per namespace, read once (None: not read yet)
        self._applied: dict[str, set[int]] | None = None
        # advisory lock key of this project's writers: 63 bits of its SHA-256
        self._lock_key = int.from_bytes(hashlib.sha256(project.encode()).digest()[:8], "big") >> 1

    def describe(self) -> str:
        """The URL with its password redacted (for messages)."""
        return redact_url(self.url)

    def _configure(self, raw) -> None:
        raw.execute("SELECT set_config('search_path', %s, false)", (f'"{self.schema}"',))

    def _get_pool(self):
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    self._pool = ConnectionPool(
                        self.url, min_size=0, max_size=POOL_MAX, open=True, timeout=CONNECT_TIMEOUT_S,
                        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S,
                                "row_factory": _row_factory, "application_name": "opensage"},
                        configure=self._configure, reconnect_timeout=CONNECT_TIMEOUT_S,
                        name="opensage")
        return self._pool

    @property
    def conn(self) -> Connection:
        """This thread's connection (taken from the pool on first use).

        :raises StoreUnavailable: the server did not answer within :data:`CONNECT_TIMEOUT_S`
            seconds (the message names the URL, password redacted).
        """
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.raw.closed:
            import psycopg
            from psycopg_pool import PoolTimeout

            if self._pool is None:
                self._probe()
            try:
                raw = self._get_pool().getconn(timeout=CONNECT_TIMEOUT_S)
            except (PoolTimeout, psycopg.OperationalError) as exc:
                raise StoreUnavailable(
                    f"cannot reach the team store at {self.describe()} within {CONNECT_TIMEOUT_S} s "
                    f"({type(exc).__name__}); check that the server runs and the URL in OPENSAGE_DATABASE_URL") from None
            conn = Connection(raw, self)
            self._local.conn = conn
        return conn

    def _probe(self) -> None:
        """Before the pool's first connection: is anything listening? A refused TCP port or a
        missing Unix socket fails at once here, instead of after the pool's whole wait (a
        hook during an outage then costs milliseconds, not :data:`CONNECT_TIMEOUT_S`).

        :raises StoreUnavailable: nothing listens where the URL points.
        """
        import os
        import socket

        from psycopg.conninfo import conninfo_to_dict

        try:
            info = conninfo_to_dict(self.url)
        except Exception:  # noqa: BLE001 - a malformed URL: let psycopg say what is wrong
            return
        host = str(info.get("host") or os.environ.get("PGHOST") or "/var/run/postgresql")
        port = int(str(info.get("port") or os.environ.get("PGPORT") or 5432).split(",")[0])
        if "," in host or info.get("hostaddr"):
            return  # several hosts: libpq tries them in turn
        try:
            if host.startswith("/"):
                if not os.path.exists(os.path.join(host, f".s.PGSQL.{port}")):
                    raise ConnectionRefusedError(f"no socket {host}/.s.PGSQL.{port}")
            else:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot reach the team store at {self.describe()} ({exc.strerror or exc}); check that the server "
                "runs and the URL in OPENSAGE_DATABASE_URL") from None

    def _drop_broken(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._pool is not None:
            try:
                self._pool.putconn(conn.raw)
            except Exception:  # noqa: BLE001 - the pool discards a broken connection itself
                pass
        self._local.conn = None
        self._local.depth = 0

    def _control(self, conn: Connection, sql: str) -> None:
        conn.raw.execute(sql)

    def _begin(self, conn: Connection) -> None:
        """Open the outermost transaction holding this project's writer lock
        (``pg_advisory_xact_lock``; writers of one project run one at a time, as on SQLite).

        :raises StoreUnavailable: the connection was lost.
        """
        import psycopg

        try:
            conn.raw.execute("BEGIN")
            conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
        except psycopg.OperationalError as exc:
            self._drop_broken()
            raise StoreUnavailable(f"lost the connection to {self.describe()}: {exc}".strip()) from None

    def _usable(self, conn: Connection) -> bool:
        return not conn.raw.closed and not conn.raw.broken

    #: ``with db.transaction() as conn:`` — all or nothing, nests as a savepoint
    #: (:func:`opensage.store.nested_transaction`); the outermost level holds the project's
    #: writer lock. Raises :class:`StoreUnavailable` when the server cannot be reached.
    transaction = nested_transaction

    def migrate(self, namespace: str, migrations: Sequence) -> None:
        """Apply the namespace's migrations not applied yet (their ``apply_pg``), in number
        order, in one transaction under a database-wide advisory lock (idempotent, safe
        when several processes start at once); when all are applied, one read and no lock.

        :raises UnsupportedSQL: a migration has no PostgreSQL form.
        """
        if namespace in self._migrated:
            return
        with self._lock:
            if namespace in self._migrated:
                return
            from opensage.pgschema import ensure_base

            raw = self.conn.raw
            wanted = {m.number for m in migrations}
            # the common case, every migration applied: one read of _migrations per process
            # (for all namespaces), no lock
            if self._applied is None:
                self._applied = {}
                if raw.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()[0]:
                    for ns, number in raw.execute("SELECT namespace, number FROM _migrations").fetchall():
                        self._applied.setdefault(ns, set()).add(number)
            if wanted <= self._applied.get(namespace, set()):
                self._migrated.add(namespace)
                return
            raw.execute("BEGIN")
            try:
                raw.execute("SELECT pg_advisory_xact_lock(7355608)")
                ensure_base(raw, self.project)
                done = {r[0] for r in raw.execute(
                    "SELECT number FROM _migrations WHERE namespace=%s", (namespace,)).fetchall()}
                for m in sorted(migrations, key=lambda m: m.number):
                    if m.number in done:
                        continue
                    apply_pg = getattr(m, "apply_pg", None)
                    if apply_pg is None:
                        raise UnsupportedSQL(f"migration {namespace} {m.number} ({m.name}) has no PostgreSQL form")
                    apply_pg(raw)
                    raw.execute("INSERT INTO _migrations(namespace, number, name, applied_at) VALUES (%s,%s,%s,%s)",
                                (namespace, m.number, m.name, time.time()))
                raw.execute("COMMIT")
            except BaseException:
                if not raw.closed and not raw.broken:
                    raw.execute("ROLLBACK")
                raise
            self._migrated.add(namespace)

    def close(self) -> None:
        """Return this thread's connection to the pool (other threads keep theirs)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._pool is not None:
            try:
                self._pool.putconn(conn.raw)
            except Exception:  # noqa: BLE001 - a connection of a closed pool
                pass
        self._local.conn = None

    def close_pool(self) -> None:
        """Close every pooled connection (end of process)."""
        self.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def grant_project(conn, project: str, role: str) -> None:
    """Let database ``role`` (and its members) read and write ``project``'s memory: usage of
    the project's schema and rights on its tables and sequences. A role without them
    cannot read any of the project's rows (permission denied).

    :param conn: a psycopg connection of the store's owner (who ran the migrations).
    :raises UsageError: ``project`` or ``role`` is not a valid name.
    """
    from psycopg import sql

    from opensage.pgschema import schema_for

    if not PROJECT_KEY.match(project or "") or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role or ""):
        raise UsageError(f"cannot grant project {project!r} to role {role!r}: invalid name")
    schema, who = sql.Identifier(schema_for(project)), sql.Identifier(role)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, who))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(schema, who))
    conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, who))
    conn.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(schema, who))
