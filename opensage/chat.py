"""The interactive session behind ``opensage chat``."""

from __future__ import annotations

import sys
from typing import TextIO

from opensage.errors import OpenSageError
from opensage.types import SessionEvent

__all__ = ["run_chat"]

PROMPT = "opensage> "


def run_chat(host, session_id: str | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> str:
    """Read lines until EOF or ``exit``; run ``@``-commands; record every line.

    Each line is recorded as a session event (``command`` for ``@``-lines,
    ``user_message`` otherwise), each result as an ``assistant_message``. The session
    is started at the beginning and ended (compressed) at the end.

    :returns: the session id.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    session = host.session(session_id, source="cli")
    host.start_session(session)
    print(f"session {session.id} - type @-commands, 'help' to list them, 'exit' to leave.", file=stdout)
    try:
        while True:
            if interactive:
                print(PROMPT, end="", file=stdout, flush=True)
            line = stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line in ("exit", "quit"):
                break
            if line == "help":
                for c in host.commands.values():
                    print(f"@{c.name:<26} {c.summary}", file=stdout)
                continue
            is_command = line.startswith("@")
            host.record(session, SessionEvent(kind="command" if is_command else "user_message", text=line, role="user"))
            if not is_command:
                reply = "not a command: start a line with '@' (type 'help' to list commands)."
                print(reply, file=stdout)
                continue
            try:
                result = host.run_line(line, session=session)
            except OpenSageError as exc:
                print(f"Error: {exc}", file=stdout)
                host.record(session, SessionEvent(kind="error", text=str(exc), tool=line.split()[0][1:]))
                continue
            print(result.text, file=stdout)
            host.record(
                session,
                SessionEvent(kind="tool_result", text=result.text, tool=line.split()[0][1:], role="opensage"),
            )
    finally:
        host.end_session(session)
    return session.id
