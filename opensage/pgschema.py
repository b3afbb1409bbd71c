"""PostgreSQL forms of the plugins' migrations, and the store's own base objects (issue 16).

Each project has its own **schema** in the team database (``p_`` + 20 hex digits of the
SHA-256 of its key, :func:`schema_for`), holding the same tables as a project's SQLite
file, the SQL functions :mod:`opensage.pgdialect` emits and the ``opensage`` text search
configuration (Snowball English stems, no stop words — like FTS5's ``porter unicode61`` —
and words split at every non-alphanumeric character as unicode61 does). A connection's
``search_path`` is its project's schema, so a query written for one project's SQLite file
reaches that project's rows only. A role is let into a project by privileges on its
schema (:func:`opensage.pgstore.grant_project`); one without them cannot read a row of it.

Schemas rather than row-level security: PostgreSQL applies a full-text match (``@@``, not
leakproof) only after the policies' checks, so under row-level security no full-text
query could use its GIN index (measured: every similarity query became a scan of the
project's nodes, 0.4-0.8 s at 100k nodes).

Namespaces and numbers of migrations are the same as on SQLite (``_migrations`` records
both alike). PostgreSQL support begins at today's schema, so each namespace's PostgreSQL
history is a *baseline*: its migration 1 creates the tables as SQLite has them after every
migration up to the namespace's current number, and the later numbers are recorded with
nothing left to do. Migrations added from now on carry both forms.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["ensure_base", "count_changes", "pg_sessions", "pg_noop", "schema_for", "c_text"]

def schema_for(project: str) -> str:
    """The schema of ``project``'s tables: ``p_`` and 20 hex digits of its key's SHA-256."""
    return "p_" + hashlib.sha256(project.encode()).hexdigest()[:20]


_BASE = """
CREATE TABLE IF NOT EXISTS _migrations (namespace TEXT NOT NULL, number INTEGER NOT NULL,
    name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (namespace, number));
CREATE TABLE IF NOT EXISTS opensage_project (key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS opensage_changes (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);
INSERT INTO opensage_changes(id, n) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION opensage_data_version() RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT n FROM opensage_changes WHERE id = 1
$$;
CREATE OR REPLACE FUNCTION opensage_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- once per transaction (a bulk load runs thousands of statements): the flag is a
    -- transaction-local setting
    IF current_setting('opensage.bumped', true) = txid_current()::text THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('opensage.bumped', txid_current()::text, true);
    UPDATE opensage_changes SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION opensage_json_text(doc TEXT, k TEXT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(j -> k) WHEN 'boolean' THEN CASE WHEN (j ->> k)::boolean THEN '1' ELSE '0' END
                ELSE j ->> k END
    FROM (SELECT CASE WHEN doc IS NULL OR doc = '' THEN NULL ELSE doc::jsonb END AS j) d
$$;
CREATE OR REPLACE FUNCTION opensage_json_int(doc TEXT, k TEXT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(j -> k) WHEN 'boolean' THEN CASE WHEN (j ->> k)::boolean THEN 1 ELSE 0 END
                WHEN 'number' THEN trunc((j ->> k)::numeric)::bigint END
    FROM (SELECT CASE WHEN doc IS NULL OR doc = '' THEN NULL ELSE doc::jsonb END AS j) d
$$;
CREATE OR REPLACE FUNCTION opensage_words(t TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(coalesce(t, ''), '[^[:alnum:]]+', ' ', 'g')
$$;
"""

_TEXT_SEARCH = """
CREATE TEXT SEARCH DICTIONARY opensage_stem (TEMPLATE = snowball, LANGUAGE = english);
CREATE TEXT SEARCH CONFIGURATION opensage (COPY = english);
ALTER TEXT SEARCH CONFIGURATION opensage
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part WITH opensage_stem;
"""


def ensure_base(raw, project: str) -> None:
    """Create ``project``'s schema and the store's own objects in it if missing:
    ``_migrations``, the project's key, the change counter, the SQL functions
    :mod:`opensage.pgdialect` emits and the text search configuration. Runs inside the
    migration transaction (``raw`` is a psycopg connection whose ``search_path`` is the
    schema)."""
    schema = schema_for(project)
    raw.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    raw.execute(_BASE)
    raw.execute("INSERT INTO opensage_project(key) VALUES (%s) ON CONFLICT DO NOTHING", (project,))
    if not raw.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = 'opensage'"
                       " AND cfgnamespace = current_schema()::regnamespace").fetchone():
        raw.execute(_TEXT_SEARCH)


def count_changes(raw, table: str) -> None:
    """Count changes to ``table`` for ``PRAGMA data_version`` (a statement trigger)."""
    raw.execute(f"CREATE TRIGGER {table}_bump AFTER INSERT OR UPDATE OR DELETE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION opensage_bump()")


def c_text(ddl: str) -> str:
    """``ddl`` with every ``TEXT`` column in the "C" collation: text compares and sorts by
    code point, as in SQLite (whatever locale the server was created with)."""
    return re.sub(r"\bTEXT\b(?!\s+(?:SEARCH|COLLATE))", 'TEXT COLLATE "C"', ddl)


def pg_sessions(raw) -> None:
    """The core ``sessions`` table (core migration 1) on PostgreSQL."""
    raw.execute(c_text("""CREATE TABLE sessions (id TEXT PRIMARY KEY, source TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION, meta TEXT NOT NULL DEFAULT '{}')"""))


def pg_noop(raw) -> None:
    """A later SQLite migration already contained in the PostgreSQL baseline."""
