"""The interactive session behind ``opensage chat``, and the route preview of ``opensage route``."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from opensage.errors import OpenSageError
from opensage.termsafe import clean
from opensage.types import SessionEvent

__all__ = ["run_chat", "preview_route"]

PROMPT = "opensage> "


def preview_route(host, text: str) -> dict[str, Any]:
    """Route ``text`` through the ``route_intent`` hook without running anything.

    The hook receives a preview session (the host's workspace, an empty id, nothing
    written to the database), so the project's ``.opencode/intent-routes.yaml`` applies.

    :returns: ``{"route", "confidence", "command", "arguments"}`` with ``command`` as
        ``"@name"``, or ``None`` (and ``route == "none"``) when nothing should fire.
    """
    from opensage.host import Session

    route = host.route(text, session=Session(id="", source="preview", host=host))
    if route is None or not route.command:
        confidence = route.confidence if route is not None else 1.0
        return {"route": route.route if route is not None else "none", "confidence": round(confidence, 4),
                "command": None, "arguments": {}}
    return {"route": route.route, "confidence": round(route.confidence, 4), "command": "@" + route.command,
            "arguments": dict(route.arguments)}


def _run_and_record(host, session, name: str, arguments: dict | None, line: str | None, stdout: TextIO) -> None:
    """Run a command (a parsed ``line`` or ``name`` + ``arguments``), print and record the outcome."""
    try:
        result = host.run_line(line, session=session) if line is not None else host.run(name, arguments, session=session)
    except OpenSageError as exc:
        print(clean(f"Error: {exc}"), file=stdout)
        host.record(session, SessionEvent(kind="error", text=str(exc), tool=name))
        return
    print(clean(result.text), file=stdout)
    host.record(session, SessionEvent(kind="tool_result", text=result.text, tool=name, role="opensage"))


def _confirm(stdin: TextIO, stdout: TextIO, question: str) -> bool:
    print(question, end="", file=stdout, flush=True)
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def run_chat(host, session_id: str | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None,
             assume_yes: bool = False) -> str:
    """Read lines until EOF or ``exit``; run ``@``-commands; route free text; record every line.

    * A line starting with ``@`` runs that command.
    * Any other line is routed (``route_intent`` hook). When a route fires, the
      command line it stands for is printed and run. A command that calls a model
      (``uses_llm``) is run only after a "y" (interactive) or with ``assume_yes``; on
      non-interactive stdin without ``assume_yes`` it is not run and the line to run it
      explicitly is printed. When nothing fires, the chat says so (the host's own
      assistant handles ordinary requests).

    Each line is recorded as a session event (``command`` for ``@``-lines,
    ``user_message`` otherwise), each result as ``tool_result`` (``error`` on failure).
    The session is started at the beginning and ended (compressed) at the end.

    :returns: the session id.
    """
    from opensage.plugins.routing.routing import format_call

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    session = host.session(session_id, source="cli")
    host.start_session(session)
    print(f"session {session.id} - type @-commands or plain requests, 'help' to list commands, 'exit' to leave.",
          file=stdout)
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
                print("Plain text is routed to a command (see 'opensage route TEXT').", file=stdout)
                continue
            is_command = line.startswith("@")
            host.record(session, SessionEvent(kind="command" if is_command else "user_message", text=line, role="user"))
            if is_command:
                _run_and_record(host, session, line.split()[0][1:], None, line, stdout)
                continue
            try:
                route = host.route(line, session=session)
            except OpenSageError as exc:
                print(clean(f"Error: {exc}"), file=stdout)
                host.record(session, SessionEvent(kind="error", text=str(exc)))
                continue
            if route is None or not route.command:
                confidence = f", confidence {route.confidence:.2f}" if route is not None else ""
                print(f"(no OpenSage command for this: route none{confidence}; "
                      f"type an @-command or 'help')", file=stdout)
                continue
            call = format_call(route.command, route.arguments)
            print(clean(f"-> {call}   [route {route.route}, confidence {route.confidence:.2f}]"), file=stdout)
            try:
                command = host.command(route.command)
            except OpenSageError as exc:
                print(clean(f"Error: {exc}"), file=stdout)
                host.record(session, SessionEvent(kind="error", text=str(exc), tool=route.command))
                continue
            if command.uses_llm and not assume_yes:
                if not interactive:
                    print(f"not run: @{command.name} calls a model and may spend money. Run it explicitly "
                          f"with the line above, or start 'opensage chat --yes'.", file=stdout)
                    continue
                if not _confirm(stdin, stdout, f"@{command.name} calls a model and may spend money. Run it? [y/N] "):
                    print("not run.", file=stdout)
                    continue
            _run_and_record(host, session, command.name, route.arguments, None, stdout)
    finally:
        host.end_session(session)
    return session.id
