"""Reading a workspace's store from a test, whichever store it is (issue 16)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class _PgReader:
    def __init__(self, project: Path) -> None:
        from opensage.store import Workspace, open_database

        self.db = open_database(Workspace(project))
        self.conn = self.db.conn

    def execute(self, sql, params=()):
        return self.conn.execute(sql, params)

    def close(self) -> None:
        self.db.close_pool()


def store_conn(project: Path):
    """A connection to ``project``'s store for assertions: ``sqlite3`` on the SQLite file
    (rows are plain tuples), or the team store of ``$OPENSAGE_DATABASE_URL`` (rows are
    tuples too, SQLite's SQL accepted). Call ``close()`` when done."""
    if os.environ.get("OPENSAGE_DATABASE_URL"):
        return _PgReader(project)
    return sqlite3.connect(project / ".opencode" / "opensage.db")


def on_postgresql() -> bool:
    """True when the test runs against the team store."""
    return bool(os.environ.get("OPENSAGE_DATABASE_URL"))
