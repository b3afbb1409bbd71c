"""A throw-away PostgreSQL server for the tests (issue 16).

:func:`pg_server` starts one cluster per test session from the machine's PostgreSQL
binaries (Debian's ``postgresql`` package; ``.ci/run`` installs it when missing): ``initdb``
into a temporary folder, ``pg_ctl start`` on a free loopback port with fsync off, trust
authentication for the cluster's superuser ``opensage``. PostgreSQL refuses to run as
root, so when the tests run as root the cluster runs as the ``postgres`` system user
(created by the Debian package) through ``runuser``.

:meth:`PgServer.new_database` creates an empty database per test and returns its URL.
Nothing here is used by the package itself.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "opensage"


def pg_bindir() -> Path | None:
    """The folder holding ``initdb``/``pg_ctl``/``postgres``, or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running cluster: ``port`` on 127.0.0.1, data in ``data_dir``, stopped by :meth:`stop`."""

    bindir: Path
    data_dir: Path
    port: int
    run_as: list[str]

    @property
    def admin_url(self) -> str:
        """URL of the ``postgres`` maintenance database as the cluster's superuser."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, user: str = SUPERUSER, password: str | None = None) -> str:
        """URL of ``database`` as ``user`` (with ``password`` when given)."""
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        """Run one statement as the superuser (autocommit)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self) -> str:
        """Create an empty database with a fresh name, owned by a new ordinary role (the
        team store refuses superusers: they bypass row-level security); its URL as that role."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.sql(f'CREATE ROLE "{name}" LOGIN')
        self.sql(f'CREATE DATABASE "{name}" OWNER "{name}"')
        self.sql(f'GRANT ALL ON SCHEMA public TO "{name}"', database=name)
        return self.url(name, user=name)

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args],
                              capture_output=True, text=True, timeout=60, check=check)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: ``fast`` or ``immediate``, i.e. killed without a checkpoint)."""
        self._ctl("stop", "-m", mode, "-w", check=False)

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) on the same port; waits until it accepts connections."""
        log = self.data_dir.parent / "server.log"
        self._ctl("start", "-w", "-t", "60", "-l", str(log), "-o",
                  f"-p {self.port} -k {self.data_dir.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
                  " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")


def start_server() -> PgServer:
    """Initialise and start a throw-away cluster (see module docstring).

    :raises RuntimeError: PostgreSQL is not installed, or initdb/pg_ctl failed (their output included).
    """
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
    root = Path(tempfile.mkdtemp(prefix="opensage-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data = root / "data"
    init = subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER,
                           "-E", "UTF8", "--no-sync", "--locale=C"], capture_output=True, text=True, timeout=120)
    if init.returncode:
        raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
    server = PgServer(bindir, data, _free_port(), run_as)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {exc.stdout}{exc.stderr}{log}") from exc
    return server


def remove_server(server: PgServer) -> None:
    """Stop the cluster and delete its folder."""
    server.stop("immediate")
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def running_server():
    """A generator for pytest fixtures: start a cluster, yield it, remove it."""
    server = start_server()
    try:
        yield server
    finally:
        remove_server(server)
