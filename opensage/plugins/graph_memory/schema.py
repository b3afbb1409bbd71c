"""Numbered migrations of the graph-memory tables (namespace ``graph-memory``).

Migrations are self-contained: they import no live application code (only
:mod:`.migration_code`, frozen copies of the rules they need, and :mod:`opensage.store`),
so upgrading an old database gives the same result whatever the application becomes.
"""

from __future__ import annotations

import json
import re

from opensage.plugins.graph_memory.migration_code import backfill_provenance, reindex_all
from opensage.pgschema import c_text, count_changes, pg_noop
from opensage.store import Migration, execute_script


def m001_initial(conn) -> None:
    """Migration 1 of graph memory: the ``nodes``, ``edges`` and ``episodes`` tables, their indexes and the
    ``nodes_fts`` full-text index.
    """
    execute_script(
        conn,
        """
        CREATE TABLE nodes (
            id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            label TEXT NOT NULL,
            content TEXT NOT NULL DEFAULT '',
            metadata TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (type, label)
        );
        CREATE INDEX nodes_label ON nodes(label);
        CREATE TABLE edges (
            id INTEGER PRIMARY KEY,
            src INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            dst INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            type TEXT NOT NULL,
            weight REAL NOT NULL DEFAULT 0.5,
            metadata TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (src, type, dst)
        );
        CREATE INDEX edges_dst ON edges(dst, type);
        -- label, identifier words (ParseConfig -> parse config), content; rowid = nodes.id
        CREATE VIRTUAL TABLE nodes_fts USING fts5(label, terms, content, tokenize = 'porter unicode61');
        CREATE TABLE episodes (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            role TEXT,
            tool TEXT,
            path TEXT,
            text TEXT NOT NULL DEFAULT '',
            args TEXT,
            meta TEXT NOT NULL DEFAULT '{}',
            timestamp REAL NOT NULL,
            compressed_at REAL,
            UNIQUE (session_id, seq)
        );
        CREATE INDEX episodes_session ON episodes(session_id, seq);
        -- rowid = episodes.id
        CREATE VIRTUAL TABLE episodes_fts USING fts5(text, tokenize = 'porter unicode61');
        -- provenance: which episodes a node was derived from
        CREATE TABLE node_episodes (
            node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            episode_id INTEGER NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
            PRIMARY KEY (node_id, episode_id)
        );
        CREATE INDEX node_episodes_episode ON node_episodes(episode_id);
        """
    )


def m002_episode_index(conn) -> None:
    """Richer episode index: the turn's own text, its speaker, its neighbouring turns, its date.

    ``episodes_fts`` is rebuilt with four columns (``text``, ``role``, ``context``, ``date``)
    so that a turn can be found by words of the turns around it (a context window) and by
    the date it happened; inserts naming only ``text`` keep working.
    """
    execute_script(
        conn,
        """
        DROP TABLE episodes_fts;
        -- rowid = episodes.id; context = the neighbouring turns of the same session
        CREATE VIRTUAL TABLE episodes_fts USING fts5(text, role, context, date, tokenize = 'porter unicode61');
        CREATE INDEX episodes_compressed ON episodes(session_id, compressed_at);
        """,
    )
    reindex_all(conn)


def m003_embeddings(conn) -> None:
    """Vectors of the optional dense ranker (see :mod:`.embeddings`); empty unless it is used.

    One row per (kind, id, model): ``kind`` is ``node`` or ``episode``, ``id`` the row's id,
    ``model`` the model and text recipe, ``dim`` the vector length, ``stamp`` the source
    row's ``updated_at`` (nodes) or ``timestamp`` (episodes) when it was embedded, and
    ``vector`` ``dim`` little-endian float32 values.
    """
    execute_script(
        conn,
        """
        CREATE TABLE embeddings (
            kind TEXT NOT NULL CHECK (kind IN ('node', 'episode')),
            id INTEGER NOT NULL,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            stamp REAL NOT NULL,
            vector BLOB NOT NULL,
            UNIQUE (kind, id, model)
        );
        CREATE INDEX embeddings_model ON embeddings(model);
        """,
    )


def m004_provenance(conn) -> None:
    """Episodes that are provenance, not evidence; the model pass tracked on its own.

    * ``provenance``: ``call`` for a tool call of opensage's own memory commands (and the
      ``command`` event of a ``/memory-...`` slash command), ``result`` for its result,
      NULL for evidence. Provenance episodes are kept but not indexed for search (see
      :func:`.episodes.provenance_of`).
    * ``modeled_at``: when the model pass of compression read the episode (epoch seconds);
      episodes compressed before this migration count as read (no surprise model cost).
    """
    execute_script(
        conn,
        """
        ALTER TABLE episodes ADD COLUMN provenance TEXT;
        ALTER TABLE episodes ADD COLUMN modeled_at REAL;
        UPDATE episodes SET modeled_at = compressed_at;
        """,
    )
    backfill_provenance(conn)
    reindex_all(conn)


def m005_curation(conn) -> None:
    """Filters, validity and upkeep of lasting nodes (issue 17, "curation" migration).

    New ``nodes`` columns:

    * ``valid_from`` (epoch seconds): when the knowledge became true / was first recorded;
      the time the ``since``/``until`` filters look at. Back-filled from the earliest
      provenance episode, else ``created_at``.
    * ``valid_to`` (epoch seconds, NULL while current): when it was superseded.
    * ``superseded_by`` (node id, NULL while current): the node that replaced it.
    * ``session_id``: the session it was derived from (NULL when added by hand outside one).
    * ``source``: who recorded it (the session's source: ``opencode``, ``claude``, ``cli``...).

    New tables: ``node_tags(node_id, tag)`` (lowercase tags, many per node) and
    ``memory_upkeep(key, value)`` (when retention last ran, for its rate limit).
    """
    execute_script(
        conn,
        """
        ALTER TABLE nodes ADD COLUMN valid_from REAL;
        ALTER TABLE nodes ADD COLUMN valid_to REAL;
        ALTER TABLE nodes ADD COLUMN superseded_by INTEGER;
        ALTER TABLE nodes ADD COLUMN session_id TEXT;
        ALTER TABLE nodes ADD COLUMN source TEXT;
        UPDATE nodes SET session_id = CASE WHEN type = 'session' THEN label ELSE (
            SELECT e.session_id FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id
            WHERE ne.node_id = nodes.id ORDER BY e.timestamp, e.id LIMIT 1) END;
        UPDATE nodes SET valid_from = coalesce((
            SELECT min(e.timestamp) FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id
            WHERE ne.node_id = nodes.id), created_at);
        CREATE INDEX nodes_valid_from ON nodes(valid_from);
        -- superseded nodes only (few): lets a current-only query exclude them cheaply
        CREATE INDEX nodes_superseded ON nodes(valid_to) WHERE valid_to IS NOT NULL;
        CREATE INDEX nodes_session ON nodes(session_id);
        CREATE INDEX nodes_source ON nodes(source);
        CREATE TABLE node_tags (
            tag TEXT NOT NULL,
            node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            PRIMARY KEY (tag, node_id)
        ) WITHOUT ROWID;
        CREATE INDEX node_tags_node ON node_tags(node_id, tag);
        CREATE TABLE memory_upkeep (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    )
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sessions'").fetchone():
        conn.execute("UPDATE nodes SET source = (SELECT s.source FROM sessions s WHERE s.id = nodes.session_id)"
                     " WHERE session_id IS NOT NULL")


# -- frozen for m006: the index form of a node's identifier words at the time of m006 ------------
# (a migration never calls live application code; graph.node_terms must keep giving the same
# text for new rows, which tests/test_graph_writer.py checks against this copy)
_M006_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _m006_terms(label: str, metadata: str | None) -> str:
    words = []
    for token in re.findall(r"[A-Za-z0-9]+", label or ""):
        parts = _M006_CAMEL.findall(token)
        if len(parts) > 1:
            words.extend(p.lower() for p in parts)
    try:
        meta = json.loads(metadata or "{}")
    except ValueError:
        meta = {}
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{' '.join(words)} {name if isinstance(name, str) else ''}".strip()


def m006_node_index(conn) -> None:
    """The node index is kept in step by SQLite itself (issue 12, "one writer per graph table").

    * ``nodes.terms``: the identifier words of the label (``ParseConfig`` -> ``parse config``)
      and, for code symbols, their short name; written with the row by the graph writer
      (:mod:`.graph`), back-filled here with a frozen copy of that rule.
    * ``nodes_fts`` becomes an external-content FTS5 table over ``nodes(label, terms,
      content)`` (https://sqlite.org/fts5.html#external_content_tables), kept in step by
      three triggers; its contents are rebuilt once, so every existing node gets the same
      index form as a new one.
    * Deleting an episode deletes its ``episodes_fts`` row by trigger too.
    """
    execute_script(
        conn,
        """
        ALTER TABLE nodes ADD COLUMN terms TEXT NOT NULL DEFAULT '';
        """,
    )
    rows = conn.execute("SELECT id, label, metadata FROM nodes").fetchall()
    conn.executemany("UPDATE nodes SET terms=? WHERE id=?", ((_m006_terms(r[1], r[2]), r[0]) for r in rows))
    execute_script(
        conn,
        """
        DROP TABLE nodes_fts;
        -- rowid = nodes.id; columns read from nodes (external content)
        CREATE VIRTUAL TABLE nodes_fts USING fts5(label, terms, content, content = 'nodes',
            content_rowid = 'id', tokenize = 'porter unicode61');
        CREATE TRIGGER nodes_fts_insert AFTER INSERT ON nodes BEGIN
            INSERT INTO nodes_fts(rowid, label, terms, content) VALUES (new.id, new.label, new.terms, new.content);
        END;
        CREATE TRIGGER nodes_fts_delete AFTER DELETE ON nodes BEGIN
            INSERT INTO nodes_fts(nodes_fts, rowid, label, terms, content)
                VALUES ('delete', old.id, old.label, old.terms, old.content);
        END;
        CREATE TRIGGER nodes_fts_update AFTER UPDATE OF label, terms, content ON nodes BEGIN
            INSERT INTO nodes_fts(nodes_fts, rowid, label, terms, content)
                VALUES ('delete', old.id, old.label, old.terms, old.content);
            INSERT INTO nodes_fts(rowid, label, terms, content) VALUES (new.id, new.label, new.terms, new.content);
        END;
        INSERT INTO nodes_fts(nodes_fts) VALUES ('rebuild');
        CREATE TRIGGER episodes_fts_delete AFTER DELETE ON episodes BEGIN
            DELETE FROM episodes_fts WHERE rowid = old.id;
        END;
        """,
    )


def pg_graph_memory(raw) -> None:
    """Graph memory's tables as of SQLite migration 6 (``node_index``), on PostgreSQL."""
    raw.execute(c_text(f"""
        CREATE TABLE nodes (
            id BIGSERIAL PRIMARY KEY,
            type TEXT NOT NULL,
            label TEXT NOT NULL,
            content TEXT NOT NULL DEFAULT '',
            metadata TEXT NOT NULL DEFAULT '{{}}',
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            valid_from DOUBLE PRECISION,
            valid_to DOUBLE PRECISION,
            superseded_by BIGINT,
            session_id TEXT,
            source TEXT,
            terms TEXT NOT NULL DEFAULT '',
            tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('opensage', opensage_words(label)), 'A')
                || setweight(to_tsvector('opensage', opensage_words(terms)), 'B')
                || setweight(to_tsvector('opensage', opensage_words(content)), 'C')) STORED,
            UNIQUE (type, label)
        );
        CREATE INDEX nodes_label ON nodes(label);
        CREATE INDEX nodes_valid_from ON nodes(valid_from);
        CREATE INDEX nodes_superseded ON nodes(valid_to) WHERE valid_to IS NOT NULL;
        CREATE INDEX nodes_session ON nodes(session_id);
        CREATE INDEX nodes_source ON nodes(source);
        CREATE INDEX nodes_tsv ON nodes USING gin(tsv) WITH (fastupdate = off);
        CREATE VIEW nodes_fts WITH (security_invoker = true) AS
            SELECT id AS rowid, label, terms, content, tsv FROM nodes;
        CREATE TABLE edges (
            id BIGSERIAL PRIMARY KEY,
            src BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            dst BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            type TEXT NOT NULL,
            weight DOUBLE PRECISION NOT NULL DEFAULT 0.5,
            metadata TEXT NOT NULL DEFAULT '{{}}',
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            UNIQUE (src, type, dst)
        );
        CREATE INDEX edges_dst ON edges(dst, type);
        CREATE TABLE episodes (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            kind TEXT NOT NULL,
            role TEXT,
            tool TEXT,
            path TEXT,
            text TEXT NOT NULL DEFAULT '',
            args TEXT,
            meta TEXT NOT NULL DEFAULT '{{}}',
            timestamp DOUBLE PRECISION NOT NULL,
            compressed_at DOUBLE PRECISION,
            provenance TEXT,
            modeled_at DOUBLE PRECISION,
            UNIQUE (session_id, seq)
        );
        CREATE INDEX episodes_session ON episodes(session_id, seq);
        CREATE INDEX episodes_compressed ON episodes(session_id, compressed_at);
        CREATE TABLE episodes_fts (
            rowid BIGINT PRIMARY KEY REFERENCES episodes(id) ON DELETE CASCADE,
            text TEXT NOT NULL DEFAULT '',
            role TEXT,
            context TEXT,
            date TEXT,
            tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('opensage', opensage_words(text)), 'A')
                || setweight(to_tsvector('opensage', opensage_words(role)), 'B')
                || setweight(to_tsvector('opensage', opensage_words(context)), 'C')
                || setweight(to_tsvector('opensage', opensage_words(date)), 'D')) STORED
        );
        CREATE INDEX episodes_fts_tsv ON episodes_fts USING gin(tsv) WITH (fastupdate = off);
        CREATE TABLE node_episodes (
            node_id BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            episode_id BIGINT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
            PRIMARY KEY (node_id, episode_id)
        );
        CREATE INDEX node_episodes_episode ON node_episodes(episode_id);
        CREATE TABLE embeddings (
            rowid BIGSERIAL,
            kind TEXT NOT NULL CHECK (kind IN ('node', 'episode')),
            id BIGINT NOT NULL,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            stamp DOUBLE PRECISION NOT NULL,
            vector BYTEA NOT NULL,
            UNIQUE (kind, id, model)
        );
        CREATE INDEX embeddings_model ON embeddings(model);
        CREATE TABLE node_tags (
            tag TEXT NOT NULL,
            node_id BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            PRIMARY KEY (tag, node_id)
        );
        CREATE INDEX node_tags_node ON node_tags(node_id, tag);
        CREATE TABLE memory_upkeep (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """))
    try:
        raw.execute("SAVEPOINT trgm")
        raw.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        raw.execute("CREATE INDEX nodes_label_trgm ON nodes USING gin(label public.gin_trgm_ops)")
        raw.execute("RELEASE SAVEPOINT trgm")
    except Exception:  # noqa: BLE001 - pg_trgm missing or not allowed: fuzzy lookups scan instead
        raw.execute("ROLLBACK TO SAVEPOINT trgm")
    for table in ("nodes", "edges", "episodes", "node_tags", "embeddings"):
        count_changes(raw, table)


MIGRATIONS = [
    Migration(1, "initial", m001_initial, apply_pg=pg_graph_memory),
    Migration(2, "episode_index", m002_episode_index, apply_pg=pg_noop),
    Migration(3, "embeddings", m003_embeddings, apply_pg=pg_noop),
    Migration(4, "provenance", m004_provenance, apply_pg=pg_noop),
    Migration(5, "curation", m005_curation, apply_pg=pg_noop),
    Migration(6, "node_index", m006_node_index, apply_pg=pg_noop),
]
