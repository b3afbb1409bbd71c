"""Background jobs: sandboxed commands that outlive the process that started them.

Each job is a row of the ``jobs`` table in the workspace database plus a folder
``.opencode/jobs/<id>/`` holding its output files. :func:`submit` inserts the row
(``queued``) and starts a *supervisor*, ``python -m opensage.plugins.dynamic_tools.jobs <workspace> <job-id>``,
in a new session with its standard streams redirected to files, so it keeps running
when the CLI exits. The supervisor:

1. waits for a free slot (:func:`max_running` jobs per workspace run at once), then
   moves the job ``queued -> running`` (conditional UPDATE: a job cancelled meanwhile
   is never started), recording its pid and process start time;
2. runs the command through :func:`opensage.sandbox.run`, recording the sandbox pid,
   streaming stdout/stderr to ``stdout.log``/``stderr.log``, refreshing ``heartbeat_at``
   every :data:`HEARTBEAT_S` seconds;
3. writes the outcome: ``succeeded``, ``failed``, ``timed_out`` or ``cancelled``
   (SIGTERM from :func:`cancel` kills the sandbox first).

Every status change is ``UPDATE ... WHERE id=? AND status IN (...)``, so two processes
can never both move one job. :func:`poll` reports ``lost`` for a queued or running job
whose supervisor is gone (pid dead, a zombie, or reused by another process: the start
time differs) or frozen (no heartbeat for :data:`HEARTBEAT_STALE_S`), after killing the
supervisor and any sandbox process still alive.

Statuses: ``queued``, ``running``, ``succeeded``, ``failed``, ``timed_out``,
``cancelled``, ``lost``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from opensage.errors import NotFoundError
from opensage.store import Database, Migration, Workspace

__all__ = ["submit", "poll", "cancel", "list_jobs", "migrate", "STATUSES", "FINAL", "decode_output"]

STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "lost")
FINAL = ("succeeded", "failed", "timed_out", "cancelled", "lost")
#: Seconds between supervisor heartbeats.
HEARTBEAT_S = 1.0
#: A running job whose heartbeat is older than this (seconds) has a frozen supervisor
#: (stopped, or stuck): it is killed and the job reported ``lost``.
HEARTBEAT_STALE_S = 60.0
#: Characters of output returned by :func:`poll` (the tail of each stream).
TAIL_CHARS = 4000
def max_running() -> int:
    """Jobs of one workspace that may run at once: ``$OPENSAGE_MAX_JOBS``, else the
    number of CPUs (at least 2). Others wait, ``queued``, for a free slot."""
    value = os.environ.get("OPENSAGE_MAX_JOBS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(2, os.cpu_count() or 2)


#: Environment variable carrying the job id inside the sandbox: processes of a job whose
#: supervisor died before recording the sandbox pid are still found and killed by it.
JOB_MARKER = "OPENSAGE_JOB"


def _m001(conn) -> None:
    conn.execute(
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            request TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            heartbeat_at REAL,
            supervisor_pid INTEGER,
            supervisor_started REAL,
            sandbox_pid INTEGER,
            sandbox_started REAL,
            timeout_s REAL NOT NULL,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            returncode INTEGER,
            level TEXT,
            result TEXT,
            error TEXT
        )"""
    )
    conn.execute("CREATE INDEX jobs_status ON jobs(status)")


MIGRATIONS = [Migration(1, "jobs", _m001)]


def local_db(workspace: Workspace) -> Database:
    """The project's local SQLite file, where jobs live even when graph memory is on a team
    server (docs/team.md): a job is a process on this machine, its output is in this
    machine's files, and only this machine can poll, cancel or reap it."""
    workspace.ensure_state_dir()
    return Database(workspace.db_path)


def migrate(db: Database) -> Database:
    """Apply the ``jobs`` migrations to ``db`` (idempotent) and return it."""
    db.migrate("jobs", MIGRATIONS)
    return db


def job_dir(workspace: Workspace, job_id: str) -> Path:
    """``.opencode/jobs/<job_id>``: the job's spec, progress and output files."""
    return workspace.state_dir / "jobs" / job_id


def decode_output(stdout: str) -> dict[str, Any]:
    """Parse a tool's standard output by the execution protocol (``docs/sandbox.md``).

    :returns: the JSON object, which has a ``result`` key.
    :raises ValueError: not a single JSON object with a ``result`` key (the message says why).
    """
    text = stdout.strip()
    if not text:
        raise ValueError("the tool printed nothing; it must print one JSON object {\"result\": ...}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"output is not JSON ({exc.msg} at line {exc.lineno}): {text[:200]!r}") from None
    if not isinstance(value, dict) or "result" not in value:
        raise ValueError(f"output must be a JSON object with a 'result' key, got: {text[:200]!r}")
    return value


# -- submitting -------------------------------------------------------------------------

def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _supervisor_env() -> dict[str, str]:
    """The caller's environment, with this copy of opensage first on ``PYTHONPATH`` (the
    supervisor must run the same code as the process that submitted the job)."""
    import opensage

    package_root = str(Path(opensage.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


def submit(
    workspace: Workspace,
    db: Database,
    *,
    kind: str,
    name: str,
    argv: list[str],
    stdin: str = "",
    readable: list[str] = (),
    limits: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    """Queue a sandboxed command and start its supervisor; returns the job id at once.

    :param kind: what the job runs, e.g. ``tool``.
    :param name: the tool (or other object) name, shown by :func:`poll`.
    :param argv: command to run in the sandbox (see :func:`opensage.sandbox.run`).
    :param stdin: text fed to the command.
    :param readable: host paths made visible read-only.
    :param limits: fields of :class:`opensage.sandbox.Limits`; ``wall_s`` is the job timeout.
    :param meta: free JSON kept with the job (e.g. the tool arguments).
    """
    from opensage.sandbox import Limits

    lim = Limits(**(limits or {}))
    migrate(db)
    job_id = f"job-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder = job_dir(workspace, job_id)
    folder.mkdir(parents=True, exist_ok=False)
    request = {"argv": argv, "stdin": stdin, "readable": list(map(str, readable)), "limits": asdict(lim), "meta": meta or {}}
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO jobs(id, kind, name, request, status, created_at, timeout_s) VALUES (?,?,?,?,?,?,?)",
            (job_id, kind, name, json.dumps(request), "queued", time.time(), lim.wall_s),
        )
    log = open(folder / "supervisor.log", "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opensage.plugins.dynamic_tools.jobs", str(workspace.root), job_id],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=str(workspace.root),
            env=_supervisor_env(),
        )
    finally:
        log.close()
    # reap it if it ends while we live (else a zombie would look alive to poll)
    threading.Thread(target=proc.wait, daemon=True).start()
    started = _process_started(proc.pid)
    with db.transaction() as conn:
        conn.execute(
            "UPDATE jobs SET supervisor_pid=?, supervisor_started=? WHERE id=? AND supervisor_pid IS NULL",
            (proc.pid, started, job_id),
        )
    return job_id


# -- polling ----------------------------------------------------------------------------

def _alive(pid: int | None, started: float | None) -> bool:
    """The process ``pid`` exists, is not a zombie, and started at ``started``."""
    import psutil

    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(p.create_time() - started) < 0.05
    except psutil.Error:
        return False


def _kill_marked(job_id: str) -> None:
    """SIGKILL every process whose environment carries ``OPENSAGE_JOB=<job_id>``."""
    import psutil

    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(JOB_MARKER) == job_id:
                p.kill()
        except (psutil.Error, OSError):
            continue


def _kill_tree(pid: int | None, started: float | None) -> None:
    """SIGKILL a sandbox leader (if it is still the same process) and its descendants."""
    import psutil

    if not _alive(pid, started):
        return
    try:
        leader = psutil.Process(pid)
        procs = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=3)


def _row(db: Database, job_id: str):
    row = db.conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id!r}; list jobs with @poll-async-job on an id returned by @async-tool-background")
    return row


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_CHARS))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _check_lost(db: Database, row) -> bool:
    """Mark a queued/running job whose supervisor is gone as ``lost``; True if it did."""
    if row["status"] not in ("queued", "running"):
        return False
    reason = "the job's supervisor process died; its sandbox was killed"
    if row["supervisor_pid"] is None:
        # submit() has not recorded the supervisor yet (a few ms); give it time
        if time.time() - row["created_at"] < 30:
            return False
    elif _alive(row["supervisor_pid"], row["supervisor_started"]):
        beat = row["heartbeat_at"]
        if row["status"] != "running" or beat is None or time.time() - beat < HEARTBEAT_STALE_S:
            return False
        reason = f"the job's supervisor stopped answering (no heartbeat for {time.time() - beat:.0f} s); it was killed"
        _kill_tree(row["supervisor_pid"], row["supervisor_started"])
    _kill_tree(row["sandbox_pid"], row["sandbox_started"])
    _kill_marked(row["id"])
    with db.transaction() as conn:
        cur = conn.execute(
            "UPDATE jobs SET status='lost', finished_at=?, error=? WHERE id=? AND status IN ('queued','running')",
            (time.time(), reason, row["id"]),
        )
    return cur.rowcount == 1


def poll(workspace: Workspace, db: Database, job_id: str) -> dict[str, Any]:
    """The job's status, output so far and result (a JSON-able dict).

    :raises NotFoundError: unknown job id.
    """
    migrate(db)
    row = _row(db, job_id)
    if _check_lost(db, row):
        row = _row(db, job_id)
    folder = job_dir(workspace, job_id)
    now = time.time()
    end = row["finished_at"] or now
    return {
        "jobId": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "status": row["status"],
        "createdAt": row["created_at"],
        "startedAt": row["started_at"],
        "finishedAt": row["finished_at"],
        "elapsedS": round(end - (row["started_at"] or row["created_at"]), 3),
        "heartbeatAgeS": round(now - row["heartbeat_at"], 3) if row["heartbeat_at"] else None,
        "timeoutS": row["timeout_s"],
        "level": row["level"],
        "returncode": row["returncode"],
        "stdout": _tail(folder / "stdout.log"),
        "stderr": _tail(folder / "stderr.log"),
        "result": json.loads(row["result"]) if row["result"] is not None else None,
        "error": row["error"],
        "meta": json.loads(row["request"]).get("meta", {}),
    }


def list_jobs(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """The latest ``limit`` jobs, newest first: ``{id, name, status, created_at, finished_at}``
    (epoch seconds; ``finished_at`` None while running).
    """
    migrate(db)
    rows = db.conn.execute(
        "SELECT id, name, status, created_at, finished_at FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)
    ).fetchall()
    return [dict(r) for r in rows]


def cancel(workspace: Workspace, db: Database, job_id: str, wait_s: float = 10.0) -> dict[str, Any]:
    """Cancel a job: a queued job never starts; a running one has its sandbox killed.

    Waits up to ``wait_s`` seconds for the supervisor to record ``cancelled``; a job
    already finished is returned unchanged.

    :raises NotFoundError: unknown job id.
    """
    migrate(db)
    row = _row(db, job_id)
    if row["status"] in FINAL:
        return poll(workspace, db, job_id)
    with db.transaction() as conn:
        conn.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
        conn.execute(
            "UPDATE jobs SET status='cancelled', finished_at=?, error='cancelled before it started'"
            " WHERE id=? AND status='queued'",
            (time.time(), job_id),
        )
    row = _row(db, job_id)
    if row["status"] == "running" and _alive(row["supervisor_pid"], row["supervisor_started"]):
        try:
            os.kill(row["supervisor_pid"], signal.SIGTERM)
        except OSError:
            pass
    elif row["status"] == "cancelled" and _alive(row["supervisor_pid"], row["supervisor_started"]):
        # cancelled while queued: the supervisor sees it and exits without starting
        pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        row = _row(db, job_id)
        if row["status"] in FINAL:
            break
        _check_lost(db, row)
        time.sleep(0.05)
    else:
        # the supervisor did not react: kill the sandbox ourselves
        row = _row(db, job_id)
        _kill_tree(row["sandbox_pid"], row["sandbox_started"])
        _kill_marked(job_id)
        with db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status='cancelled', finished_at=?, error='cancelled (supervisor unresponsive)'"
                " WHERE id=? AND status IN ('queued','running')",
                (time.time(), job_id),
            )
    return poll(workspace, db, job_id)


# -- the supervisor ---------------------------------------------------------------------

class _Supervisor:
    def __init__(self, root: Path, job_id: str) -> None:
        self.workspace = Workspace(root)
        self.db = migrate(local_db(self.workspace))
        self.job_id = job_id
        self.folder = job_dir(self.workspace, job_id)
        self.proc: subprocess.Popen | None = None
        self.cancelled = threading.Event()
        self.stop = threading.Event()

    def _update(self, sql: str, params: tuple) -> int:
        with self.db.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def on_sigterm(self, signum, frame) -> None:
        self.cancelled.set()
        proc = self.proc
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def heartbeat(self) -> None:
        db = local_db(self.workspace)
        try:
            while not self.stop.wait(HEARTBEAT_S):
                with db.transaction() as conn:
                    conn.execute("UPDATE jobs SET heartbeat_at=? WHERE id=? AND status='running'", (time.time(), self.job_id))
        finally:
            db.close()

    def claim(self) -> bool:
        """Move the job queued -> running once fewer than :func:`max_running` jobs run.

        Returns False if the job was cancelled (or taken) while it waited. Running jobs
        whose supervisor died are marked lost on the way, so they do not hold a slot.
        """
        me = os.getpid()
        started = _process_started(me)
        limit = max_running()
        while True:
            with self.db.transaction() as conn:
                row = conn.execute("SELECT status, cancel_requested FROM jobs WHERE id=?", (self.job_id,)).fetchone()
                if row is None or row["status"] != "queued" or row["cancel_requested"] or self.cancelled.is_set():
                    return False
                running = conn.execute("SELECT count(*) FROM jobs WHERE status='running'").fetchone()[0]
                if running < limit:
                    now = time.time()
                    return conn.execute(
                        "UPDATE jobs SET status='running', started_at=?, heartbeat_at=?, supervisor_pid=?,"
                        " supervisor_started=? WHERE id=? AND status='queued' AND cancel_requested=0",
                        (now, now, me, started, self.job_id),
                    ).rowcount == 1
            for other in self.db.conn.execute("SELECT * FROM jobs WHERE status='running'").fetchall():
                _check_lost(self.db, other)
            time.sleep(0.25)

    def main(self) -> int:
        from opensage import sandbox
        from opensage.errors import OpenSageError

        signal.signal(signal.SIGTERM, self.on_sigterm)
        if not self.claim():
            return 0  # cancelled (or taken) before it started
        request = json.loads(self.db.conn.execute("SELECT request FROM jobs WHERE id=?", (self.job_id,)).fetchone()[0])
        limits = sandbox.Limits(**request["limits"])
        beat = threading.Thread(target=self.heartbeat, daemon=True)
        beat.start()
        files = {"stdout": open(self.folder / "stdout.log", "ab"), "stderr": open(self.folder / "stderr.log", "ab")}

        def on_start(proc: subprocess.Popen) -> None:
            self.proc = proc
            self._update(
                "UPDATE jobs SET sandbox_pid=?, sandbox_started=? WHERE id=?",
                (proc.pid, _process_started(proc.pid), self.job_id),
            )
            if self.cancelled.is_set():
                self.on_sigterm(signal.SIGTERM, None)

        def on_output(stream: str, chunk: bytes) -> None:
            files[stream].write(chunk)
            files[stream].flush()

        status, result, error, rc, level = "failed", None, None, None, None
        try:
            res = sandbox.run(
                request["argv"], stdin=request["stdin"], readable=[Path(p) for p in request["readable"]],
                limits=limits, config=self.workspace.root, on_start=on_start, on_output=on_output,
                env={JOB_MARKER: self.job_id},
            )
            rc, level = res.returncode, res.level
            if self.cancelled.is_set():
                status, error = "cancelled", "cancelled while running; the sandbox was killed"
            elif res.timed_out:
                status, error = "timed_out", f"killed after the {limits.wall_s:g} s timeout"
            elif res.truncated:
                error = f"output exceeded {limits.output_bytes} bytes; killed"
            elif res.returncode != 0:
                error = f"{res.describe()}: {res.stderr.strip()[-1000:]}"
            else:
                try:
                    result = decode_output(res.stdout)
                    status = "succeeded"
                except ValueError as exc:
                    error = str(exc)
        except OpenSageError as exc:
            error = str(exc)
        finally:
            self.stop.set()
            for fh in files.values():
                fh.close()
        self._update(
            "UPDATE jobs SET status=?, finished_at=?, returncode=?, level=?, result=?, error=?"
            " WHERE id=? AND status='running'",
            (status, time.time(), rc, level, json.dumps(result) if result is not None else None, error, self.job_id),
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m opensage.plugins.dynamic_tools.jobs WORKSPACE JOB_ID``: supervise one job (started by :func:`submit`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m opensage.plugins.dynamic_tools.jobs WORKSPACE JOB_ID", file=sys.stderr)
        return 2
    return _Supervisor(Path(args[0]), args[1]).main()


if __name__ == "__main__":
    raise SystemExit(main())
