"""PostgreSQL forms of the plugins' migrations, and the store's own base objects (issue 16).

Namespaces and numbers are the same as on SQLite (``_migrations`` records both alike).
PostgreSQL support begins at today's schema, so each namespace's PostgreSQL history is a
*baseline*: its migration 1 creates the tables as SQLite has them after every migration
up to the namespace's current number, and the later numbers are recorded with nothing
left to do. Migrations added from now on carry both forms.

Every table gets a ``project`` column (default: the connection's ``opensage.project``
setting) and a ``FORCE``d row-level-security policy: a row is visible and writable only
when its project is the connection's project *and* the session's role may use that
project (it owns the store, or :func:`opensage.pgstore.grant_project` named one of its
roles). Full text: a ``tsvector`` column per indexed table, built with the ``opensage``
text search configuration (Snowball English stems, no stop words — like FTS5's ``porter
unicode61``, and words split at every non-alphanumeric character as unicode61 does).
"""

from __future__ import annotations

__all__ = ["ensure_base", "enable_project_rls", "pg_sessions", "pg_noop", "PROJECT", "PROJECT_TABLES"]

#: Tables whose rows belong to a project (row-level security on each).
PROJECT_TABLES = (
    "nodes", "edges", "episodes", "episodes_fts", "node_episodes", "node_tags", "embeddings",
    "memory_upkeep", "sessions", "tool_state", "tool_runs",
)

_BASE = """
CREATE TABLE IF NOT EXISTS _migrations (namespace TEXT NOT NULL, number INTEGER NOT NULL,
    name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (namespace, number));
CREATE TABLE IF NOT EXISTS opensage_owner (role NAME PRIMARY KEY);
INSERT INTO opensage_owner(role) SELECT current_user WHERE NOT EXISTS (SELECT 1 FROM opensage_owner);
CREATE TABLE IF NOT EXISTS opensage_project_roles (project TEXT NOT NULL, role NAME NOT NULL,
    PRIMARY KEY (project, role));
CREATE TABLE IF NOT EXISTS opensage_changes (project TEXT PRIMARY KEY, n BIGINT NOT NULL);
CREATE OR REPLACE FUNCTION opensage_may_use(p TEXT) RETURNS BOOLEAN
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p IS NOT NULL AND (
        EXISTS (SELECT 1 FROM @schema@.opensage_owner o WHERE pg_has_role(session_user, o.role, 'MEMBER'))
        OR EXISTS (SELECT 1 FROM @schema@.opensage_project_roles r
                   WHERE r.project = p AND pg_has_role(session_user, r.role, 'MEMBER')))
$$;
CREATE OR REPLACE FUNCTION opensage_data_version() RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT n FROM opensage_changes WHERE project = current_setting('opensage.project', true)), 0)
$$;
CREATE OR REPLACE FUNCTION opensage_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- once per transaction (a bulk load runs thousands of statements): the flag is a
    -- transaction-local setting
    IF current_setting('opensage.bumped', true) = txid_current()::text THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('opensage.bumped', txid_current()::text, true);
    INSERT INTO opensage_changes(project, n) VALUES (current_setting('opensage.project'), 1)
        ON CONFLICT (project) DO UPDATE SET n = opensage_changes.n + 1;
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


def ensure_base(raw) -> None:
    """Create the store's own objects if missing: ``_migrations``, the owner and project-role
    tables, the change counter and the SQL functions :mod:`opensage.pgdialect` emits.
    Runs inside the migration transaction (``raw`` is a psycopg connection)."""
    schema = raw.execute("SELECT current_schema()").fetchone()[0]
    raw.execute(_BASE.replace("@schema@", '"' + schema.replace('"', '""') + '"'))
    if not raw.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = 'opensage'"
                       " AND cfgnamespace = current_schema()::regnamespace").fetchone():
        raw.execute(_TEXT_SEARCH)


def enable_project_rls(raw, table: str, bump: bool = False) -> None:
    """Give ``table`` (created with a ``project`` column) its project policy; ``bump``:
    count its changes for ``PRAGMA data_version``."""
    raw.execute(f"""
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY {table}_project ON {table}
            USING (project = current_setting('opensage.project', true)
                   AND (SELECT opensage_may_use(current_setting('opensage.project', true))))
            WITH CHECK (project = current_setting('opensage.project', true)
                   AND (SELECT opensage_may_use(current_setting('opensage.project', true))));
        CREATE INDEX {table}_project_idx ON {table}(project);
    """)
    if bump:
        raw.execute(f"CREATE TRIGGER {table}_bump AFTER INSERT OR UPDATE OR DELETE ON {table}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION opensage_bump()")


PROJECT = "project TEXT NOT NULL DEFAULT current_setting('opensage.project')"


def c_text(ddl: str) -> str:
    """``ddl`` with every ``TEXT`` column in the "C" collation: text compares and sorts by
    code point, as in SQLite (whatever locale the server was created with)."""
    import re

    return re.sub(r"\bTEXT\b(?!\s+(?:SEARCH|COLLATE))", 'TEXT COLLATE "C"', ddl)


def pg_sessions(raw) -> None:
    """The core ``sessions`` table (core migration 1) on PostgreSQL."""
    raw.execute(c_text(f"""CREATE TABLE sessions ({PROJECT}, id TEXT NOT NULL, source TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION, meta TEXT NOT NULL DEFAULT '{{}}',
        PRIMARY KEY (project, id))"""))
    enable_project_rls(raw, "sessions")


def pg_noop(raw) -> None:
    """A later SQLite migration already contained in the PostgreSQL baseline."""
