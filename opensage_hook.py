"""``opensage-hook claude``: the command Claude Code's hooks run, cheap per event.

Claude Code starts one process per hook event. Importing opensage costs over 100 ms
(pydantic, pluggy, the plugins), so this client imports only ``os``, ``sys`` and the C
socket module ``_socket`` (``socket`` itself pulls in enum and selectors, ~10 ms); it is
a top-level module so that not even ``opensage/__init__`` is imported. It hands the event's JSON to the workspace's hook server (``opensage hook --serve``,
:mod:`opensage.integrations.hookd`) over a unix socket and relays the answer (stdout,
stderr, exit code) exactly as ``opensage hook --from claude`` would give it.

When no server answers, the event is never lost: the client starts a server in the
background for the next events and handles this one itself, in process, through the
direct path (``opensage hook --from claude``). Payloads over :data:`MAX_BYTES` take the
direct path too.

The workspace is ``$OPENSAGE_WORKSPACE``, else the git root above ``$CLAUDE_PROJECT_DIR``
(set by Claude Code for hooks; as opensage finds it, so hooks and the MCP server share
one database); without either the direct path finds it from the current directory.
"""

import os
import sys

import _socket

#: Largest event accepted over the socket (bytes); bigger ones take the direct path.
MAX_BYTES = 16 * 1024 * 1024
#: How long the client waits for the server's answer (s); Claude's hook timeout is 60 s.
ANSWER_TIMEOUT_S = 55.0
#: Unix socket paths are limited to 107 bytes on Linux (``sun_path``).
_MAX_SOCKET_PATH = 100


def socket_path(root):
    """Where the hook server of workspace ``root`` listens.

    ``<root>/.opencode/run/hookd.sock`` (the folder is 0700), or, when that path is too
    long for a unix socket, ``$XDG_RUNTIME_DIR`` / ``/tmp/opensage-<uid>/`` plus a name
    derived from the root (also a 0700 folder).
    """
    path = os.path.join(root, ".opencode", "run", "hookd.sock")
    if len(path.encode()) <= _MAX_SOCKET_PATH:
        return path
    import hashlib

    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/opensage-{os.getuid()}"
    digest = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:20]
    return os.path.join(base, "opensage", f"hookd-{digest}.sock")


def _git_root(start):
    """The workspace opensage would pick for ``start``: the nearest folder upwards holding
    ``.git``, else ``start`` itself (``opensage.store.find_workspace``); None without one."""
    if not start:
        return None
    start = os.path.abspath(start)
    folder = start
    while True:
        if os.path.exists(os.path.join(folder, ".git")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return start
        folder = parent


def _ask(path, data):
    """Send one event (bytes) to the server at ``path``; its ``(exit code, stdout bytes,
    stderr bytes)``, or None when no server took it (nothing listening, or it failed
    before answering)."""
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(ANSWER_TIMEOUT_S)
            sock.connect(path)
            sock.sendall(data)
            sock.shutdown(_socket.SHUT_WR)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            sock.close()
    except OSError:
        return None
    reply = b"".join(chunks)
    head, sep, rest = reply.partition(b"\n")
    if not sep or not head.isdigit():
        return None
    out, _, err = rest.partition(b"\0")
    return int(head), out, err


def _start_server(root):
    """Start ``opensage hook --serve`` for ``root`` in the background (for the next events)."""
    import subprocess

    try:
        subprocess.Popen([sys.executable, "-m", "opensage", "--workspace", root, "hook", "--serve"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:
        pass  # the direct path still records this event


def _direct(root, host_name, data):
    """Handle the event in this process: ``opensage [--workspace ROOT] hook --from HOST``."""
    import io

    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
    from opensage.cli import main as cli_main

    argv = (["--workspace", root] if root else []) + ["hook", "--from", host_name]
    try:
        cli_main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    host_name = args[0] if args else "claude"
    if host_name != "claude" or len(args) > 1:
        sys.stderr.write("usage: opensage-hook claude  (the Claude Code hook event JSON on stdin)\n")
        return 2
    root = os.environ.get("OPENSAGE_WORKSPACE") or _git_root(os.environ.get("CLAUDE_PROJECT_DIR"))
    data = sys.stdin.buffer.read(MAX_BYTES + 1)
    if root and len(data) <= MAX_BYTES and os.environ.get("OPENSAGE_HOOK_SERVER", "1") != "0":
        path = socket_path(root)
        answer = _ask(path, data)
        if answer is not None:
            code, out, err = answer
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
            if err:
                sys.stderr.buffer.write(err)
                sys.stderr.flush()
            return code
        _start_server(root)
    if len(data) > MAX_BYTES:  # read the rest: the direct path takes any size
        data += sys.stdin.buffer.read()
    return _direct(root, host_name, data)


if __name__ == "__main__":
    sys.exit(main())
