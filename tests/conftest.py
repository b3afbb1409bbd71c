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


def db_snapshot(project: Path) -> dict:
    """Every row of every table of the workspace database (for 'nothing changed' checks)."""
    import sqlite3

    path = project / ".opencode" / "opensage.db"
    if not path.exists():
        return {}
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE '%fts%'")]
        return {t: sorted(map(json.dumps, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}
    finally:
        conn.close()
