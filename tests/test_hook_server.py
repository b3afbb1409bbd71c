"""The Claude hook client (``opensage-hook claude``) and the workspace's hook server
(``opensage hook --serve``): no event lost when no server runs, events kept in order,
answers identical to the direct path, a private socket, bounded input, idle exit."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.stores import store_conn

from tests.polling import wait_until

DATA = Path(__file__).parent / "data" / "claude"
SID = "0f3c9a52-7d1e-4c55-9a0b-2f6f1b2d9e41"


def _hook(project: Path, body: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "CLAUDE_PROJECT_DIR": str(project), **env}
    return subprocess.run(["opensage-hook", "claude"], input=body, capture_output=True, text=True, timeout=60, env=full)


def _event(i: int) -> str:
    return json.dumps({"session_id": SID, "hook_event_name": "UserPromptSubmit", "cwd": "/",
                       "prompt": f"message number {i}"})


def _messages(project: Path) -> list[str]:
    db = store_conn(project)
    try:
        return [r[0] for r in db.execute("SELECT text FROM episodes WHERE session_id=? ORDER BY seq", (SID,))]
    finally:
        db.close()


def test_no_event_is_lost_while_the_server_starts_and_events_keep_their_order(project):
    from opensage.integrations.hookd import wait_for_server
    from opensage_hook import socket_path

    env = {"OPENSAGE_HOOKD_IDLE_S": "20"}
    try:
        for i in range(8):  # the first finds no server: direct path, and it starts one
            r = _hook(project, _event(i), **env)
            assert r.returncode == 0, r.stderr
        assert _messages(project) == [f"message number {i}" for i in range(8)]
        assert wait_for_server(str(project), 30)
        sock = Path(socket_path(str(project)))
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        # through the server: the same answer as the direct path, in order after the others
        via_server = _hook(project, (DATA / "notification.json").read_text())
        direct = _hook(project, (DATA / "notification.json").read_text(), OPENSAGE_HOOK_SERVER="0")
        assert via_server.stdout == direct.stdout == "{}\n"
        assert _hook(project, _event(8)).returncode == 0
        assert _messages(project)[-1] == "message number 8"
        bad = _hook(project, json.dumps({"session_id": "s"}))
        assert bad.returncode == 2 and "hook_event_name" in bad.stderr  # the direct path's error, kept
    finally:
        _stop_server(project)


def _stop_server(project: Path) -> None:
    """Stop the server this test started (found by its socket's peer pid)."""
    from opensage_hook import socket_path

    path = socket_path(str(project))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return
        pid = __import__("struct").unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    os.kill(pid, 15)
    wait_until(lambda: not os.path.exists(path), 10, "the stopped server to remove its socket")


def test_server_rejects_bad_and_oversized_events_and_lives_on(project, monkeypatch):
    import opensage_hook
    from opensage.host import Host
    from opensage.integrations import hookd
    from opensage.store import Workspace

    monkeypatch.setattr(opensage_hook, "MAX_BYTES", 2000)
    host = Host(Workspace(project))
    served = []
    thread = threading.Thread(target=lambda: served.append(hookd.serve(host, idle_s=1.0)), daemon=True)
    thread.start()
    try:
        assert hookd.wait_for_server(str(project), 10)
        path = opensage_hook.socket_path(str(project))
        big = opensage_hook._ask(path, _event(0)[:-1].encode() + b', "pad": "' + b"x" * 5000 + b'"}')
        assert big[0] == 2 and b"larger than 2000 bytes" in big[2]
        deep = opensage_hook._ask(path, b"[" * 1900)  # deeper than the JSON parser goes
        assert deep[0] == 2 and b"not valid JSON" in deep[2]
        ok = opensage_hook._ask(path, _event(1).encode())
        assert ok[0] == 0 and ok[1] == b"{}\n"
        assert _messages(project) == ["message number 1"]  # nothing from the rejected ones
        thread.join(10)  # idle for 1 s: the server exits and removes its socket
        assert not thread.is_alive() and served == [3]
        assert not os.path.exists(path)
    finally:
        host.close()


def test_a_second_server_for_the_same_workspace_exits_at_once(project):
    from opensage.integrations.hookd import wait_for_server

    cmd = [sys.executable, "-m", "opensage", "--workspace", str(project), "hook", "--serve"]
    env = {**os.environ, "OPENSAGE_HOOKD_IDLE_S": "2"}
    first = subprocess.Popen(cmd, env=env)
    try:
        assert wait_for_server(str(project), 30)
        second = subprocess.run(cmd, env=env, timeout=60, capture_output=True, text=True)
        assert second.returncode == 0  # it found the lock held and left
        assert first.wait(timeout=30) == 0  # idle: the first one exits by itself
    finally:
        if first.poll() is None:
            first.kill()


def test_a_long_workspace_path_gets_its_socket_in_a_private_runtime_folder(tmp_path):
    from opensage_hook import socket_path

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path(str(deep))
    assert len(path.encode()) <= 100 and not path.startswith(str(deep))
    assert socket_path(str(deep)) == path  # stable: client and server agree
    assert socket_path(str(tmp_path / "short")) == str(tmp_path / "short" / ".opencode" / "run" / "hookd.sock") \
        or len(str(tmp_path)) > 60


@pytest.mark.parametrize("args", [["opencode"], ["claude", "extra"]])
def test_client_usage_errors_exit_2(project, args):
    r = subprocess.run(["opensage-hook", *args], input="{}", capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage: opensage-hook claude" in r.stderr
