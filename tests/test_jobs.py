"""Background jobs through the real supervisor process and the real sandbox."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from opensage.errors import NotFoundError, UsageError
from tests.polling import wait_until

SLEEPER = """\
import json, subprocess, sys, time
a = json.load(sys.stdin)["arguments"]
if a.get("child"):
    subprocess.Popen(["sleep", str(a["child"])])
for i in range(int(a["seconds"] * 10)):
    if i % 10 == 0:
        print(f"tick {i // 10}", file=sys.stderr, flush=True)
    time.sleep(0.1)
print(json.dumps({"result": f"slept {a['seconds']}"}))
"""
PARAMS = {"type": "object", "properties": {"seconds": {"type": "number"}, "child": {"type": "number"}},
          "required": ["seconds"]}


@pytest.fixture
def sleeper(host, scripted):
    scripted.add(json.dumps({
        "name": "sleeper", "description": "Sleep a while.", "language": "python", "parameters": PARAMS,
        "code": SLEEPER, "examples": [{"arguments": {"seconds": 0}, "expected": "slept 0"}],
    }))
    host.run_line('@generate-tool requirement="sleep" name=sleeper')
    return host


def _wait(host, job_id, statuses, timeout=60.0, stderr_has=None):
    """Poll the job until its status is one of ``statuses`` (and its stderr holds ``stderr_has``)."""
    def reached():
        info = host.run_line(f"@poll-async-job jobId={job_id}").data
        ok = info["status"] in statuses and (stderr_has is None or stderr_has in info["stderr"])
        return info if ok else None

    return wait_until(reached, timeout, what=f"job {job_id} to reach {sorted(statuses)}"
                      + (f" with {stderr_has!r} on stderr" if stderr_has else ""))


def _procs_with(arg: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if arg in (p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_job_runs_in_background_polled_running_then_succeeded(sleeper):
    host = sleeper
    started = host.run_line("@async-tool-background toolName=sleeper parameters={\"seconds\": 3}")
    job_id = started.data["jobId"]
    assert started.data["status"] == "queued"
    # it returned at once: the 3-second job has not finished when the command is back
    assert host.run_line(f"@poll-async-job jobId={job_id}").data["status"] in ("queued", "running")
    _wait(host, job_id, {"running"})
    progress = _wait(host, job_id, {"running"}, stderr_has="tick 0")  # progress shows while it runs
    assert progress["status"] == "running" and "tick 0" in progress["stderr"], progress
    done = _wait(host, job_id, {"succeeded", "failed", "lost", "timed_out"})
    assert done["status"] == "succeeded", done
    assert done["result"] == {"result": "slept 3"} and done["level"] == "bwrap"
    assert done["elapsedS"] >= 3.0
    assert "slept 3" in host.run_line(f"@poll-async-job jobId={job_id}").text


def test_cancel_kills_the_sandboxed_processes(sleeper):
    host = sleeper
    job_id = host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": 60, "child": 4242.5}').data["jobId"]
    _wait(host, job_id, {"running"})
    wait_until(lambda: _procs_with("4242.5"), what="the tool's child to start")
    info = host.run_line(f"@cancel-async-job jobId={job_id}").data
    assert info["status"] == "cancelled"
    wait_until(lambda: _procs_with("4242.5") == [], timeout_s=10, what="the tool's processes to be gone")
    # a finished job stays as it is
    assert host.run_line(f"@cancel-async-job jobId={job_id}").data["status"] == "cancelled"


def test_killed_supervisor_makes_the_job_lost(sleeper):
    host = sleeper
    job_id = host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": 60, "child": 4343.5}').data["jobId"]
    _wait(host, job_id, {"running"})
    wait_until(lambda: _procs_with("4343.5"), what="the tool's child to start")
    row = host.db.conn.execute("SELECT supervisor_pid FROM jobs WHERE id=?", (job_id,)).fetchone()
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    info = _wait(host, job_id, {"lost"}, timeout=30)
    assert "supervisor" in info["error"]
    wait_until(lambda: _procs_with("4343.5") == [], timeout_s=10, what="the tool's processes to be gone")
    assert host.run_line(f"@poll-async-job jobId={job_id}").data["status"] == "lost"  # never running again


def test_job_keeps_running_after_the_cli_exits_and_times_out(sleeper, cli, project):
    proc = cli("--json", "@async-tool-background", "toolName=sleeper", 'parameters={"seconds": 30}', "timeoutS=2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    job_id = out.get("jobId") or out["data"]["jobId"]
    info = _wait(sleeper, job_id, {"timed_out", "succeeded", "failed", "lost"}, timeout=60)
    assert info["status"] == "timed_out", info


def test_bad_job_ids_and_arguments(sleeper):
    host = sleeper
    with pytest.raises(UsageError):
        host.run_line("@poll-async-job jobId=../../etc")
    with pytest.raises(NotFoundError):
        host.run_line("@poll-async-job jobId=job-20250101000000-deadbeef")
    with pytest.raises(UsageError):
        host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": "long"}')
    with pytest.raises(NotFoundError):
        host.run_line("@async-tool-background toolName=nope")
    assert host.db.conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_jobs_beyond_the_concurrency_limit_wait_queued(sleeper, monkeypatch):
    host = sleeper
    monkeypatch.setenv("OPENSAGE_MAX_JOBS", "1")
    first = host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": 4}').data["jobId"]
    _wait(host, first, {"running"})
    second = host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": 0}').data["jobId"]
    # the first job has been running for a second (its "tick 1" line) and the second still waits
    _wait(host, first, {"running"}, stderr_has="tick 1")
    assert host.run_line(f"@poll-async-job jobId={first}").data["status"] == "running"
    assert host.run_line(f"@poll-async-job jobId={second}").data["status"] == "queued"
    assert _wait(host, first, {"succeeded", "failed", "lost"})["status"] == "succeeded"
    done = _wait(host, second, {"succeeded", "failed", "lost"})
    assert done["status"] == "succeeded" and done["startedAt"] >= _wait(host, first, {"succeeded"})["finishedAt"] - 0.5
    third = host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": 30}').data["jobId"]
    _wait(host, third, {"running"})
    fourth = host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": 0}').data["jobId"]
    assert host.run_line(f"@cancel-async-job jobId={fourth}").data["status"] == "cancelled"  # never started
    assert host.run_line(f"@cancel-async-job jobId={third}").data["status"] == "cancelled"
    assert host.run_line(f"@poll-async-job jobId={fourth}").data["startedAt"] is None


def test_frozen_supervisor_is_killed_and_the_job_lost(sleeper, monkeypatch):
    from opensage.plugins.dynamic_tools import jobs

    host = sleeper
    job_id = host.run_line('@async-tool-background toolName=sleeper parameters={"seconds": 60, "child": 4444.5}').data["jobId"]
    _wait(host, job_id, {"running"})
    wait_until(lambda: _procs_with("4444.5"), what="the tool's child to start")
    supervisor = host.db.conn.execute("SELECT supervisor_pid FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
    os.kill(supervisor, signal.SIGSTOP)
    try:
        monkeypatch.setattr(jobs, "HEARTBEAT_STALE_S", 2.0)
        info = _wait(host, job_id, {"lost"}, timeout=30)  # once its heartbeat is 2 s old
        assert "heartbeat" in info["error"]
        assert not psutil.pid_exists(supervisor) or psutil.Process(supervisor).status() == psutil.STATUS_ZOMBIE
        wait_until(lambda: _procs_with("4444.5") == [], timeout_s=10, what="the tool's processes to be gone")
    finally:
        try:
            os.kill(supervisor, signal.SIGKILL)
        except OSError:
            pass
