"""All-or-nothing transactions that nest as savepoints, for both stores (SQLite file and team store)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["nested_transaction"]


@contextmanager
def nested_transaction(db) -> Iterator[Any]:
    """``with db.transaction() as conn:`` — all or nothing; nests as a savepoint. Shared by
    both stores: ``db`` supplies ``conn``, ``_local`` (per thread: ``depth``), ``_begin(conn)``
    (opens the outermost level and takes the writer lock), ``_control(conn, sql)`` (runs a
    transaction-control statement) and ``_usable(conn)`` (False once the connection is lost:
    nothing left to roll back)."""
    conn = db.conn
    depth = getattr(db._local, "depth", 0)
    if depth:
        name = f"sp{depth}"
        db._control(conn, f"SAVEPOINT {name}")
        db._local.depth = depth + 1
        try:
            yield conn
        except BaseException:
            if db._usable(conn):
                db._control(conn, f"ROLLBACK TO SAVEPOINT {name}")
                db._control(conn, f"RELEASE SAVEPOINT {name}")
            raise
        else:
            db._control(conn, f"RELEASE SAVEPOINT {name}")
        finally:
            db._local.depth = depth
        return
    db._begin(conn)
    db._local.depth = 1
    try:
        yield conn
    except BaseException:
        if db._usable(conn):
            db._control(conn, "ROLLBACK")
        raise
    else:
        db._control(conn, "COMMIT")
    finally:
        db._local.depth = 0
