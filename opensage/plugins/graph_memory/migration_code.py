"""Frozen copies of the episode-index and provenance rules as they were when migrations m002
and m004 of graph memory were written (copied from ``episodes.py`` at that time).

A migration must give the same result whatever the application code becomes later, so it
never imports live modules; :mod:`.schema` imports this module only, which imports nothing
of opensage. Never edit these to follow ``episodes.py``: a new rule needs a new migration.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

WINDOW = 2
CONTEXT_CHARS = 600
MEMORY_TOOLS = frozenset({
    "memory-query", "memory-add-node", "memory-add-edge", "memory-visualize", "memory-ingest",
    "memory-compress-session", "create_entities", "create_relations", "add_observations", "delete_entities",
    "delete_observations", "delete_relations", "read_graph", "search_nodes", "open_nodes",
})
_TOOL_PREFIXES = ("mcp__opensage__", "opensage_", "opensage__", "opensage.", "@")
_SHELL_OWN = re.compile(r"\bopensage\b[^\n]*?\s@(memory-[a-z-]+)")
_SLASH_OWN = re.compile(r"^\s*[/@](memory-[a-z-]+)\b")
_TEMPLATE_OWN = re.compile(r"^\s*Call the `(?:opensage_|mcp__opensage__)(memory-[a-z-]+)` tool")
CALL_ID_KEYS = ("call_id", "callID", "tool_use_id", "toolUseId", "tool_call_id")
_CALL_LOOKBACK = 8
_ECHO_LOOKBACK = 12


def own_tool(tool: str | None) -> str | None:
    """The opensage memory command a host's tool name stands for, or None.

    ``opensage_memory-query`` (OpenCode), ``mcp__opensage__memory-query`` (Claude Code),
    ``memory-query``, ``opensage_search_nodes`` -> ``memory-query`` / ``search_nodes``.
    """
    name = (tool or "").strip()
    for prefix in _TOOL_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = name.replace("memory_", "memory-", 1) if name.startswith("memory_") else name
    if name.startswith("memory-"):
        name = name.replace("_", "-")
    return name if name in MEMORY_TOOLS else None


def _shell_text(args: Any, text: str) -> str:
    if isinstance(args, dict):
        for key in ("command", "cmd", "script"):
            value = args.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return " ".join(value)
    return text or ""


def provenance_of(kind: str, tool: str | None, args: Any, text: str, call_provenance: str | None = None) -> str | None:
    """``call``, ``result`` or None (evidence) for one event (see the module docstring).

    :param call_provenance: for a ``tool_result``, the provenance of the call it answers.
    """
    if kind == "tool_call":
        if own_tool(tool) or _SHELL_OWN.search(_shell_text(args, "")):
            return "call"
    elif kind == "tool_result":
        if own_tool(tool) or call_provenance == "call":
            return "result"
    elif kind == "command":
        if _SLASH_OWN.match(text or "") or _SHELL_OWN.search(_shell_text(args, text)):
            return "call"
    elif kind == "user_message":
        if _TEMPLATE_OWN.match(text or ""):
            return "call"
    return None


def call_id(meta: dict | None) -> str | None:
    """The id pairing a tool result with its call (``meta`` keys :data:`CALL_ID_KEYS`)."""
    for key in CALL_ID_KEYS:
        value = (meta or {}).get(key)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return None


def _call_provenance(conn, session_id: str, seq: int, tool: str | None, meta: dict) -> str | None:
    """Provenance of the tool call a result at ``seq`` answers: same call id, else the
    latest call of the same tool among the :data:`_CALL_LOOKBACK` episodes before it."""
    cid = call_id(meta)
    rows = conn.execute(
        "SELECT tool, meta, provenance FROM episodes WHERE session_id=? AND seq < ? AND seq >= ? AND kind='tool_call'"
        " ORDER BY seq DESC", (session_id, seq, seq - _CALL_LOOKBACK)).fetchall()
    for row in rows:
        row_meta = json.loads(row["meta"] or "{}")
        if cid is not None and call_id(row_meta) is not None:
            if call_id(row_meta) == cid:
                return row["provenance"]
        elif row["tool"] == tool:
            return row["provenance"]
    return None


def backfill_provenance(conn) -> None:
    """Set ``provenance`` of every episode recorded before migration m004 (session by session, in order)."""
    rows = conn.execute("SELECT id, session_id, seq, kind, tool, args, text, meta FROM episodes "
                        "WHERE kind IN ('tool_call', 'tool_result', 'command', 'user_message') "
                        "ORDER BY session_id, seq").fetchall()
    for row in rows:
        args = json.loads(row["args"]) if row["args"] else None
        call = (_call_provenance(conn, row["session_id"], row["seq"], row["tool"], json.loads(row["meta"] or "{}"))
                if row["kind"] == "tool_result" else None)
        prov = provenance_of(row["kind"], row["tool"], args, row["text"] or "", call)
        if prov:
            conn.execute("UPDATE episodes SET provenance=? WHERE id=?", (prov, row["id"]))


def _own_text(row) -> str:
    parts = [row["text"] or ""]
    for key in ("tool", "path"):
        if row[key]:
            parts.append(row[key])
    if row["args"]:
        try:
            args = json.loads(row["args"])
        except ValueError:
            args = {}
        if isinstance(args, dict):
            parts.extend(str(v)[:300] for v in args.values() if isinstance(v, (str, int, float)))
    return "\n".join(p for p in parts if p)


def _date_text(ts: float) -> str:
    tm = time.localtime(ts)
    return f"{time.strftime('%A', tm)} {tm.tm_mday} {time.strftime('%B', tm)} {tm.tm_year}"


def _reindex(conn, episode_id: int) -> None:
    """(Re)write the FTS row of one episode from the table (its text, role, neighbours, date)."""
    row = conn.execute("SELECT * FROM episodes WHERE id=?", (episode_id,)).fetchone()
    conn.execute("DELETE FROM episodes_fts WHERE rowid=?", (episode_id,))
    if row is None or _is_provenance(row):
        return
    prov = " AND provenance IS NULL" if "provenance" in row.keys() else ""
    neighbours = conn.execute(
        f"SELECT * FROM episodes WHERE session_id=? AND seq BETWEEN ? AND ? AND seq != ?{prov} ORDER BY seq",
        (row["session_id"], row["seq"] - WINDOW, row["seq"] + WINDOW, row["seq"]),
    ).fetchall()
    context = "\n".join(
        f"{n['role'] or ''}: "
        + ((_without_echo(conn, n, n["text"] or "") if prov and n["kind"] == "assistant_message" else n["text"] or "")
           [:CONTEXT_CHARS])
        for n in neighbours)
    own = _own_text(row)
    if row["kind"] == "assistant_message" and prov:
        own = _without_echo(conn, row, own)
    conn.execute(
        "INSERT INTO episodes_fts(rowid, text, role, context, date) VALUES (?,?,?,?,?)",
        (episode_id, own, row["role"] or "", context, _date_text(row["timestamp"])),
    )


def _is_provenance(row) -> bool:
    return "provenance" in row.keys() and bool(row["provenance"])


def _flat(line: str) -> str:
    return " ".join(line.split()).strip(" -*>`|")


def _without_echo(conn, row, text: str) -> str:
    """``text`` without the lines that repeat a provenance result of the :data:`_ECHO_LOOKBACK`
    episodes before it (an assistant quoting a memory query's answer back to the user)."""
    results = conn.execute(
        "SELECT text FROM episodes WHERE session_id=? AND seq < ? AND seq >= ? AND provenance='result'",
        (row["session_id"], row["seq"], row["seq"] - _ECHO_LOOKBACK)).fetchall()
    return strip_echo(text, [r["text"] or "" for r in results])


def strip_echo(text: str, results: list[str]) -> str:
    """``text`` without its lines that repeat one of ``results`` (whole lines, or a piece
    of at least 24 characters found in one)."""
    if not results or not text:
        return text
    echoed = {_flat(line) for r in results for line in (r or "").splitlines()}
    echoed.discard("")
    joined = "\n".join(_flat(r or "") for r in results)
    kept = []
    for line in text.splitlines():
        flat = _flat(line)
        if flat and (flat in echoed or (len(flat) >= 24 and flat in joined)):
            continue
        kept.append(line)
    return "\n".join(kept)


def reindex_all(conn) -> None:
    """Rebuild every episode's FTS row (used by migrations m002 and m004)."""
    for (episode_id,) in conn.execute("SELECT id FROM episodes ORDER BY id").fetchall():
        _reindex(conn, episode_id)
