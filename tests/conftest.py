"""Shared fixtures: a temp workspace, a host on it, the scripted model, CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opensage.host import Host
from opensage.store import Workspace

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # entry-point plugins are not loaded under tests (see opensage.host.Host)
    sys._called_from_test = True


@pytest.fixture(autouse=True)
def _lexical_search_only(monkeypatch):
    """Similarity search without the optional dense ranker (the default install), also in
    subprocesses, even where the ``embeddings`` extra happens to be installed; its own
    tests (tests/test_embeddings.py) switch it on."""
    monkeypatch.setenv("OPENSAGE_EMBEDDINGS", "0")


@pytest.fixture(autouse=True)
def _opensage_on_path(monkeypatch):
    """Installed host config runs ``opensage`` / ``opensage-hook`` by name from PATH: put
    this interpreter's scripts first, as an activated virtual environment does."""
    bindir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture(autouse=True)
def _no_user_sandbox_config(monkeypatch, tmp_path_factory):
    """The developer's own ~/.config/opensage/config.yaml never changes a test's sandbox."""
    monkeypatch.setenv("OPENSAGE_CONFIG", str(tmp_path_factory.getbasetemp() / "no-user-config.yaml"))


#: Suites run on both stores (issue 16): the local SQLite file and the team store on a
#: throw-away PostgreSQL server (tests/pg_env.py).
BOTH_STORES = {
    "test_memory_query", "test_memory_sessions", "test_memory_curation", "test_memory_markdown",
    "test_memory_compat", "test_episodes", "test_compress", "test_graph_writer", "test_ingest",
    "test_codegraph", "test_codegraph_ts", "test_codegraph_go", "test_codegraph_rust", "test_codegraph_scip",
    "test_visualize", "test_hooks", "test_claude_hooks", "test_hook_server", "test_mcp",
    "test_memory_reference_diff", "test_memory_ui", "test_embeddings",
}


def pytest_generate_tests(metafunc):
    if "store_backend" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_STORES:
        metafunc.parametrize("store_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def pg_server():
    """One throw-away PostgreSQL cluster per test process (tests/pg_env.py)."""
    from tests.pg_env import running_server

    yield from running_server()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a new, empty database on :func:`pg_server` (superuser)."""
    return pg_server.new_database()


@pytest.fixture(autouse=True)
def store_backend(request, monkeypatch) -> str:
    """Which store graph memory and the other plugins use: ``sqlite`` (the default), or
    ``postgresql`` for the suites in :data:`BOTH_STORES` (a fresh database per test,
    through ``OPENSAGE_DATABASE_URL``, also in subprocesses)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("OPENSAGE_DATABASE_URL", url)
    else:
        monkeypatch.delenv("OPENSAGE_DATABASE_URL", raising=False)
    return backend


@pytest.fixture
def project(tmp_path) -> Path:
    """An empty project folder (the workspace root)."""
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def workspace(project) -> Workspace:
    return Workspace(project)


@pytest.fixture
def host(workspace):
    h = Host(workspace)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def scripted(monkeypatch):
    """The scripted model: ``scripted.add(answer, ...)``; ``scripted.requests`` logs calls."""
    from opensage import testing

    monkeypatch.setenv("OPENSAGE_MODEL", "scripted/test")
    monkeypatch.setenv("OPENSAGE_BACKOFF_BASE_S", "0.01")
    script = testing.install([])
    yield script
    testing.install([])


def run_cli(project: Path, *args: str, input: str | None = None, env: dict | None = None, timeout: float = 120):
    """Run ``python -m opensage --workspace PROJECT ARGS`` in a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("OPENSAGE_MODEL", None) if env is None or "OPENSAGE_MODEL" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "opensage", "--workspace", str(project), *args],
        input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


@pytest.fixture
def cli(project):
    """``cli("@memory-query", "query=x")`` -> CompletedProcess (real subprocess)."""
    def _run(*args, **kw):
        return run_cli(project, *args, **kw)
    return _run


def _pg_snapshot() -> dict:
    """:func:`db_snapshot` of the team store (every project's rows, as the superuser)."""
    import psycopg

    from urllib.parse import urlsplit

    from tests.pg_env import SUPERUSER

    parts = urlsplit(os.environ["OPENSAGE_DATABASE_URL"])
    admin = parts._replace(netloc=f"{SUPERUSER}@{parts.hostname}:{parts.port}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        # every project's schema (p_...); rows of one table name from all of them together
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE 'p\\_%'"
            " AND table_type = 'BASE TABLE' AND table_name NOT LIKE '%fts%' AND table_name NOT LIKE 'opensage\\_%'"
        ).fetchall()
        out: dict = {}
        for schema, t in tables:
            # columns in SQLite's order (no tsvector)
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                " AND table_name = %s AND column_name <> 'tsv' ORDER BY ordinal_position", (schema, t))]
            rows = conn.execute(f'SELECT {", ".join(cols)} FROM "{schema}".{t}').fetchall()
            out[t] = sorted(out.get(t, []) + [
                json.dumps([v.hex() if isinstance(v, (bytes, memoryview)) else v for v in r]) for r in rows])
        return out


def db_snapshot(project: Path) -> dict:
    """Every row of every table of the workspace database (for 'nothing changed' checks)."""
    import sqlite3

    if os.environ.get("OPENSAGE_DATABASE_URL"):
        return _pg_snapshot()
    path = project / ".opencode" / "opensage.db"
    if not path.exists():
        return {}
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE '%fts%'")]
        return {t: sorted(map(json.dumps, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}
    finally:
        conn.close()
