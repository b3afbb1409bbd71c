"""Terminal safety: control sequences in untrusted text are made visible, never interpreted.

Tool output, agent answers, model text and memory content can carry escape sequences:
OSC 52 writes the user's clipboard, OSC 0/2 sets the window title, ``ESC [2J`` clears the
screen, ``ESC [8m`` hides text, a bare carriage return overwrites a line, and Unicode
bidi overrides reorder what is shown. rich's ``Text`` removes only a few of these (BEL,
BS, VT, FF, CR) and keeps ESC, so every such text goes through :func:`clean` before it
reaches a terminal: the CLI's text output and error messages, the REPL, and the live
display and final report of ``opensage run``. ``--json`` output is left exact for the
programs reading it (``json.dumps`` escapes C0 controls and ESC itself).
"""

from __future__ import annotations

__all__ = ["clean"]

_KEEP = {"\n", "\t"}
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]


def _table() -> dict[int, str]:
    table: dict[int, str] = {}
    for cp in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]:
        if chr(cp) not in _KEEP:
            table[cp] = f"\\x{cp:02x}"
    for cp in _BIDI:
        table[cp] = f"\\u{cp:04x}"
    return table


_TABLE = _table()


def clean(text: object) -> str:
    """``text`` (``str()`` of it) with C0/C1 controls except newline and tab, DEL and bidi
    overrides replaced by visible escapes (``\\x1b``, ``\\u202e``). ``"\\r\\n"`` becomes
    ``"\\n"``. Linear time; about 1 ms per 100 KB."""
    s = str(text)
    if "\r\n" in s:
        s = s.replace("\r\n", "\n")
    return s.translate(_TABLE)
