"""Numbered migrations of the graph-memory tables (namespace ``graph-memory``)."""

from __future__ import annotations

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
    from opensage.plugins.graph_memory.episodes import reindex_all

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
    from opensage.plugins.graph_memory.episodes import backfill_provenance, reindex_all

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


MIGRATIONS = [
    Migration(1, "initial", m001_initial),
    Migration(2, "episode_index", m002_episode_index),
    Migration(3, "embeddings", m003_embeddings),
    Migration(4, "provenance", m004_provenance),
    Migration(5, "curation", m005_curation),
]
