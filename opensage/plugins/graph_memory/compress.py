"""Session compression: turn a session's raw episodes into lasting nodes and edges.

The memory agent of the OpenSage paper, in two passes:

1. **Rules (always, no model).** Over every episode of the session:

   * ``file`` — paths edited (``file_edit`` events, ``path``-like tool arguments:
     edge ``touches``) or mentioned in messages and tool output (``mentions``);
   * ``command`` — shell commands run (``command``/``cmd`` tool arguments, ``command``
     events): edge ``ran``;
   * ``error`` — ``error`` events and failed tool results (non-zero ``exit_code`` in
     the event's meta, ``is_error``, a traceback, ``FAILED``...), labelled by their last
     ``SomethingError: message`` line; the command that produced it gets ``produced``.
     An error counts as *fixed* when the same command (or tool) later succeeds; the
     files edited and the assistant's "fixed ..." sentences between the error and that
     success get a ``fixes`` edge to it (an assistant sentence that says it fixed the
     error by name also counts when no re-run is seen). A fixed error stops being current
     (``valid_to`` = the time of the fix, see ``Graph.mark_fixed``); an assistant "fixed ..."
     sentence of a later session that names a current error of an earlier one (see
     :func:`fix_match`) records its fix too; one that fails again becomes current again;
   * ``decision`` — sentences such as "let's use X", "we decided ...", "I'll go with
     ...", "we should use ...", "instead of ...": labelled with a short title (the
     sentence cut at :data:`TITLE_CHARS` characters), the sentence and the ones giving
     its reason ("because ...") kept as content;
   * ``query``/``answer`` — a user question (ends with ``?`` or starts with a
     wh-word) and the assistant reply that followed it (``answer -answers-> query``;
     the answer titled by its first sentence, its full text as content);
   * code symbols — ``backticked`` names, CamelCase, snake_case and dotted.names in
     messages, functions and classes an edit defines (``def``/``class`` in the new
     code) and the project frames of a traceback: linked (``mentions``/``touches``) to
     existing ``class``/``function``/``method``/``module`` nodes whose label or short
     name matches, otherwise kept as ``entity``. Tool names (and their prefixes, such as
     ``opensage_memory``), ids (``ses_...``, ``toolu_...``) and the hosts' tags
     (``task_result``) are not symbols.

   Every node is linked to the episodes it came from (``node_episodes``) and to a
   ``session`` node (label = the session id) by ``touches``/``mentions``/``ran``/
   ``contains``. Episodes that are *provenance* (opensage's own memory commands and
   their results, see :mod:`.episodes`) are no evidence: the only thing taken from
   them is the link from a node stored with ``@memory-add-node`` (or
   ``create_entities``) to the session and the call; lines of an assistant message that
   echo such a result are ignored.
2. **Model (optional).** With a model configured (``$OPENSAGE_MODEL``) and
   ``use_model`` not ``never``, the evidence episodes the model has not read yet
   (``modeled_at``) are sent to :func:`opensage.llm.structured` with the
   :class:`SessionKnowledge` schema; its facts, decisions, concepts and relations are
   merged with the rules' nodes (deduplicated by type and case-insensitive label), each
   item linked to the episodes it cites. Bounded: :data:`MODEL_MAX_TOKENS` output tokens
   per request, :data:`MAX_MODEL_ITEMS` items and :data:`MAX_MODEL_RELATIONS` relations
   per answer, :data:`MAX_MODEL_CHUNKS` requests and :data:`MAX_MODEL_TOKENS` tokens /
   :data:`MAX_MODEL_COST_USD` per compression. When the model fails (``auto``), the
   rules' result is kept and the episodes stay unread, so the next compression with a
   working model reads them. The same model also judges "same subject" for the pairs the
   rules find uncertain (a fix and an earlier error, two decisions of different
   sessions): :class:`SubjectJudge`, bounded by the ``JUDGE_*`` constants.

Idempotent: labels are deterministic, so a second run upserts the same nodes (0 new);
episodes are marked ``compressed_at`` (and ``modeled_at`` once the model read them), and
the model only ever sees episodes it has not read before.
"""

from __future__ import annotations

from opensage.store import store_exists

import builtins
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from opensage.camel import camel, camel_dict
from opensage.errors import ModelError, ModelNotConfigured, NotFoundError, UsageError
from opensage.plugins.graph_memory.episodes import (Episode, list_episodes, mark_compressed, mark_modeled,
                                                    own_tool, strip_echo)
from opensage.plugins.graph_memory.graph import Graph, graph_for, link_episodes

__all__ = ["compress_session", "CompressReport", "SessionKnowledge", "compaction_text", "extract_rules"]

log = logging.getLogger("opensage.graph_memory")

LABEL_CHARS = 200
#: Characters of one episode shown to the model, and of one model request's transcript.
MODEL_EPISODE_CHARS = 800
MODEL_CHUNK_CHARS = 16_000
#: At most this many model requests per compression; older chunks beyond it are left to the rules.
MAX_MODEL_CHUNKS = 6
#: Output tokens one model request may use (``max_tokens``); 40 items of ~40 tokens fit.
MODEL_MAX_TOKENS = 2_000
#: Items and relations kept from one model answer; the rest are dropped and counted
#: (``modelDroppedItems``): a model may not flood the graph (a 20,000-item answer adds 40).
MAX_MODEL_ITEMS = 40
MAX_MODEL_RELATIONS = 60
#: No further model request once a compression has used this many tokens (prompt +
#: completion) or cost this much (USD; ``$OPENSAGE_MEMORY_MAX_COST_USD`` overrides). Six
#: full requests are ~6 x (4,000 + 2,000) tokens, so the token bound rarely bites; it is
#: the one that holds for a model without a known price.
MAX_MODEL_TOKENS = 40_000
MAX_MODEL_COST_USD = 0.05

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_DECISION = re.compile(
    r"\b(?:let'?s|let us)\s+(?:use|go with|switch|keep|stick|try|adopt|move|replace|drop|add|remove|make|store|"
    r"put|rename|split|do|write|call|return|raise|cache|skip)\b"
    r"|\bwe(?:'ve| have)?\s+decided\b|\bdecided to\b|\bdecision\s*:|\b(?:i|we)(?:'ll| will)\s+go with\b"
    r"|\bgoing with\b|\b(?:we|i)(?:'ll| will| should| shall)\s+(?:use|switch|keep|stick)\b|\bwe chose\b"
    r"|\b(?:opt|opted) for\b|\bsettled on\b|\binstead of\b",
    re.I,
)
_FIX_WORDS = re.compile(r"\b(?:fix|fixed|fixes|resolved?|solved?|the (?:problem|issue|bug|cause) was|works now|passes now)\b", re.I)
_QUESTION_START = re.compile(r"^(?:how|what|why|where|which|who|when|whose)\b", re.I)
_EXTS = ("py|pyi|js|jsx|mjs|ts|tsx|json|ya?ml|toml|md|rst|txt|cfg|ini|sh|go|rs|java|kt|c|h|cc|cpp|hpp|cs|rb|php|"
         "html|css|scss|sql|lock|env")
_PATH = re.compile(rf"(?<![\w/.@-])((?:\.{{0,2}}/)?(?:[\w.-]+/)*[\w-][\w.-]*\.(?:{_EXTS}))(?![\w/])")
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|$)", re.S)
#: New ``entity`` nodes taken from one message at most (a pasted log is not a glossary).
MAX_ENTITIES_PER_EPISODE = 15
_BACKTICK = re.compile(r"`([^`\n]{2,100})`")
_IDENT = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*(?:\(\))?$")
_CAMEL = re.compile(r"\b[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+\b")
_SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
_DOTTED = re.compile(r"(?<![\w@/.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?![\w/(])")
_ERROR_LINE = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Failure|Interrupt|Exit))\b(?::\s*([^\n]*))?")
_FAILURE = re.compile(r"Traceback \(most recent call last\)|^FAILED\b|^E\s{2,}\w|^error(?:\[\w+\])?:|^\w+(?:Error|Exception): |"
                      r"\b\d+ failed\b|command not found|No such file or directory", re.M | re.I)
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_SHELL_TOOLS = {"bash", "shell", "sh", "terminal", "run", "run_command", "exec", "execute", "command", "cmd"}
_EDIT_TOOLS = {"edit", "write", "str_replace", "apply_patch", "patch", "multiedit", "create", "notebookedit",
               "str_replace_based_edit_tool", "write_file", "edit_file"}
_PATH_ARGS = ("path", "file_path", "filePath", "file", "filename", "target_file", "notebook_path")
_COMMAND_ARGS = ("command", "cmd", "script")
_STOP_SYMBOLS = {"e.g", "i.e", "etc", "vs"} | {n for n in dir(builtins) if n[:1].isupper()}
#: Words of the hosts' own plumbing that look like code symbols in a message (OpenCode's
#: task tool wraps a subagent's answer in ``<task_result>``, ids are ``ses_...``/``toolu_...``).
_HOST_WORDS = {"task_result", "task_id", "tool_use_id", "tool_use", "tool_result", "tool_call", "tool_calls",
               "session_id", "call_id", "message_id", "parent_id", "subagent_type"}
_ID_LIKE = re.compile(r"^(?:ses|msg|prt|toolu|call|req|run|chatcmpl|tool)_\w+$"
                      r"|^(?=[\w-]*\d)(?=[\w-]*[a-zA-Z])[0-9a-fA-F_-]{8,}$")


def _norm(text: str, limit: int = LABEL_CHARS) -> str:
    text = " ".join(str(text).split()).strip()
    text = text.rstrip(" .;,")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


#: Characters of a decision's or an answer's label (a title; the full text is its content).
TITLE_CHARS = 90
_REASON = re.compile(r"^(?:because|since|so that|so we|as |that way|this (?:way|avoids|keeps|means|makes)|"
                     r"it (?:avoids|keeps|means|makes|is)|which|otherwise|to (?:avoid|keep|make)|the reason)", re.I)


def _title(text: str, limit: int = TITLE_CHARS) -> str:
    """A short title for a decision or an answer: its first sentence, cut at a word boundary
    to at most ``limit`` characters (with "…")."""
    first = next(iter(_sentences(text)), "") or text
    flat = " ".join(first.split()).rstrip(" .;,:")
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:") + "…"


def _with_reason(sentences: list[str], i: int) -> str:
    """Sentence ``i`` plus the sentences after it that give its reason ("because ...")."""
    out = [sentences[i]]
    for nxt in sentences[i + 1:i + 3]:
        if not _REASON.match(nxt):
            break
        out.append(nxt)
    return " ".join(out)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text or "") if s and s.strip()]


# -- extraction result ------------------------------------------------------------------------
@dataclass
class _Item:
    type: str
    label: str
    content: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    episodes: set[int] = field(default_factory=set)
    existing_id: int | None = None  # an existing node this item stands for (code symbols)


@dataclass
class Extraction:
    """Nodes keyed by (type, label) and edges between those keys."""

    items: dict[tuple[str, str], _Item] = field(default_factory=dict)
    edges: dict[tuple[tuple[str, str], str, tuple[str, str]], tuple[float, dict]] = field(default_factory=dict)

    def add(self, type: str, label: str, episode: int | None = None, content: str = "", **meta) -> tuple[str, str]:
        """Add the item ``(type, label)``, or merge into it: content is kept from the first one
        that has some, ``meta`` keys already set are kept, ``episode`` (an episode id) is added
        to its sources. Returns the key ``(type, label)``.
        """
        key = (type, label)
        item = self.items.get(key)
        if item is None:
            item = self.items[key] = _Item(type, label, content, dict(meta))
        else:
            if content and not item.content:
                item.content = content
            for k, v in meta.items():
                item.meta.setdefault(k, v)
        if episode is not None:
            item.episodes.add(episode)
        return key

    def link(self, src: tuple[str, str], type: str, dst: tuple[str, str], weight: float = 0.5, **meta) -> None:
        """Add the edge ``src -type-> dst`` (keys from :meth:`add`), keeping the higher ``weight``
        (0-1) when it exists already; a self-loop is ignored.
        """
        if src == dst:
            return
        key = (src, type, dst)
        old = self.edges.get(key)
        if old is None or old[0] < weight:
            self.edges[key] = (weight, meta)

    def find(self, type: str, label: str) -> tuple[str, str] | None:
        """The key of an item of ``type`` whose label equals ``label`` ignoring case, or None."""
        low = label.casefold()
        for key in self.items:
            if key[0] == type and key[1].casefold() == low:
                return key
        return None


# -- rules ------------------------------------------------------------------------------------
def _file_label(path: str, root: Path) -> str | None:
    path = (path or "").strip().strip("'\"")
    if not path or "\n" in path or len(path) > 400:
        return None
    p = Path(path)
    if p.is_absolute():
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            return p.as_posix()
    text = p.as_posix()
    while text.startswith("./"):
        text = text[2:]
    return text or None


_OUTPUT_KEYS = ("stdout", "stderr", "output", "error", "result")
#: Arguments of edit tools that hold the new code (Claude ``new_string``/``content``,
#: OpenCode ``newString``, ``edits`` of MultiEdit are not read).
_NEW_CODE_ARGS = ("new_string", "newString", "content", "new_str", "file_text", "patch")
_DEF = re.compile(r"^\s*(?:async\s+def|def|class|function|func|fn)\s+([A-Za-z_]\w*)", re.M)
_FRAME = re.compile(r'File "([^"\n]+)", line \d+, in (\S+)')


def _result_text(ep: Episode) -> str:
    """A tool result's text; a JSON object with ``stdout``/``stderr``/``output``... (how
    Claude Code reports a Bash result) is read as those streams, so a traceback in it is
    seen line by line, and a JSON list of MCP content blocks as their text."""
    text = ep.text or ""
    if not text.startswith(("{", "[")) or len(text) > 200_000:
        return text
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if isinstance(obj, list):  # an MCP result's content blocks: their text
        texts = [b["text"] for b in obj if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)]
        return "\n".join(texts) if texts else text
    if not isinstance(obj, dict) or not any(isinstance(obj.get(k), str) for k in _OUTPUT_KEYS):
        return text
    return "\n".join(obj[k] for k in _OUTPUT_KEYS if isinstance(obj.get(k), str) and obj[k].strip())


def _command_of(ep: Episode) -> str | None:
    if ep.kind == "command":
        return _norm(ep.text) or None
    if isinstance(ep.args, dict):
        for key in _COMMAND_ARGS:
            value = ep.args.get(key)
            if isinstance(value, str) and value.strip():
                return _norm(value)
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return _norm(" ".join(value))
    return None


def _is_failure(ep: Episode) -> bool:
    if ep.kind == "error":
        return True
    if ep.kind != "tool_result":
        return False
    meta = ep.meta or {}
    for key in ("exit_code", "exitCode", "returncode", "status_code"):
        if isinstance(meta.get(key), int) and meta[key] != 0:
            return True
    if meta.get("is_error") or meta.get("isError") or meta.get("error"):
        return True
    if any(isinstance(meta.get(k), int) and meta[k] == 0 for k in ("exit_code", "exitCode", "returncode")):
        return False
    return bool(_FAILURE.search(ep.text or ""))


def _error_label(text: str) -> str:
    matches = list(_ERROR_LINE.finditer(text or ""))
    if matches:
        m = matches[-1]
        label = m.group(1) + (f": {m.group(2).strip()}" if m.group(2) and m.group(2).strip() else "")
    else:
        label = next((line for line in (text or "").splitlines() if line.strip()), "error")
    return _norm(_HEX.sub("0x…", label), 160)


def _error_tail(text: str, limit: int = 1500) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


class _CodeIndex:
    """Looks up existing code nodes by exact label or by short-name suffix (``parse`` -> ``pkg.Parser.parse``)."""

    TYPES = ("class", "function", "method", "module")

    def __init__(self, graph: Graph) -> None:
        self.conn = graph.db.conn
        self.cache: dict[str, list[tuple[int, str, str]]] = {}

    def lookup(self, symbol: str) -> list[tuple[int, str, str]]:
        if symbol in self.cache:
            return self.cache[symbol]
        marks = ",".join("?" * len(self.TYPES))
        rows = self.conn.execute(f"SELECT id, type, label FROM nodes WHERE label=? AND type IN ({marks})",
                                 (symbol, *self.TYPES)).fetchall()
        if not rows:
            last = symbol.rsplit(".", 1)[-1]
            words = re.findall(r"[A-Za-z0-9]+", last)
            if words:
                match = "label : " + '"' + " ".join(words) + '"'
                try:
                    cand = self.conn.execute(
                        f"SELECT n.id, n.type, n.label FROM nodes_fts f JOIN nodes n ON n.id = f.rowid "
                        f"WHERE nodes_fts MATCH ? AND n.type IN ({marks}) LIMIT 200", (match, *self.TYPES)).fetchall()
                except Exception:  # an FTS syntax corner case: no suffix lookup
                    cand = []
                rows = [r for r in cand if r["label"].endswith("." + symbol)]
        found = [(r["id"], r["type"], r["label"]) for r in rows][:3]
        self.cache[symbol] = found
        return found


def _symbols(text: str) -> list[str]:
    """Code-like names in prose: backticked, CamelCase, snake_case, dotted.names (paths removed first)."""
    found: list[str] = []
    stripped = _PATH.sub(" ", text)
    for m in _BACKTICK.finditer(stripped):
        inner = m.group(1).strip()
        if _IDENT.match(inner):
            found.append(inner.removesuffix("()"))
    stripped = _BACKTICK.sub(" ", stripped)
    found += [m.group(0) for m in _DOTTED.finditer(stripped)
              if m.group(0).lower() not in _STOP_SYMBOLS and not m.group(0)[0].isdigit()
              and (any(c.isupper() for c in m.group(0)[1:]) or "_" in m.group(0)
                   or m.group(0).count(".") >= 2)]
    stripped = _DOTTED.sub(" ", stripped)
    found += _CAMEL.findall(stripped)
    found += _SNAKE.findall(stripped)
    out, seen = [], set()
    for s in found:
        if s not in seen and s not in _STOP_SYMBOLS and 2 < len(s) <= 120:
            seen.add(s)
            out.append(s)
    return out


def extract_rules(episodes: list[Episode], session_id: str, workspace_root: Path, graph: Graph | None = None) -> Extraction:
    """The deterministic pass (see the module docstring). Pure except for code-node lookups."""
    episodes = [replace(ep, text=_result_text(ep)) if ep.kind == "tool_result" else ep for ep in episodes]
    # an assistant quoting a memory query's result back: the quoted lines are no evidence
    episodes = [replace(ep, text=strip_echo(ep.text, [p.text for p in episodes[max(0, i - 12):i]
                                                      if p.provenance == "result"]))
                if ep.kind == "assistant_message" else ep for i, ep in enumerate(episodes)]
    ex = Extraction()
    session = ("session", session_id)
    code = _CodeIndex(graph) if graph is not None else None
    command_at = _commands_by_index(episodes)
    tools = {(ep.tool or "").lower() for ep in episodes if ep.tool}

    def is_noise(sym: str, text: str) -> bool:
        """Tool names (and their prefixes: ``opensage_memory`` of ``opensage_memory-query``),
        host plumbing words, ids, and names used as XML-like tags are not code symbols."""
        low = sym.lower()
        if low in _HOST_WORDS or low.startswith(("opensage_", "mcp__")) or _ID_LIKE.match(sym):
            return True
        if any(t.startswith(low) and (len(t) == len(low) or t[len(low)] in "-_.:") for t in tools):
            return True
        return re.search(r"</?" + re.escape(sym) + r"[\s>/]", text) is not None

    def own_nodes(ep: Episode) -> None:
        """Link the nodes an own memory command added (``@memory-add-node``, ``create_entities``)
        to the session and to the call that added them."""
        if graph is None or not isinstance(ep.args, dict):
            return
        name, args, pairs = own_tool(ep.tool), ep.args, []
        if name == "memory-add-node" and isinstance(args.get("type"), str) and isinstance(args.get("label"), str):
            pairs.append((args["type"], args["label"]))
        elif name == "create_entities" and isinstance(args.get("entities"), list):
            pairs += [("entity", e["name"]) for e in args["entities"][:MAX_ENTITIES_PER_EPISODE]
                      if isinstance(e, dict) and isinstance(e.get("name"), str)]
        for type_, label in pairs:
            row = graph.db.conn.execute("SELECT id FROM nodes WHERE type=? AND label=?", (type_, label)).fetchone()
            if row is not None:
                key = ex.add(type_, label, ep.id)
                ex.items[key].existing_id = row[0]
                ex.link(session, "contains", key, 0.8)

    def symbol(name: str, ep: Episode, src: tuple[str, str], edge: str) -> None:
        hits = code.lookup(name) if code else []
        keys = []
        for nid, ntype, nlabel in hits:
            keys.append(ex.add(ntype, nlabel, ep.id))
            ex.items[keys[-1]].existing_id = nid
        if not keys:
            keys.append(ex.add("entity", name, ep.id, origin="compress"))
        for key in keys:
            ex.link(session, "touches" if edge == "contains" else "mentions", key, 0.6)
            ex.link(src, edge, key, 0.6)

    def edited_symbols(ep: Episode, file_key: tuple[str, str]) -> None:
        """Functions and classes an edit defines or changes (``def``/``class`` in the new code)."""
        code_text = "\n".join(str(ep.args.get(k)) for k in _NEW_CODE_ARGS if isinstance(ep.args.get(k), str))
        for name in list(dict.fromkeys(_DEF.findall(code_text)))[:MAX_ENTITIES_PER_EPISODE]:
            symbol(name, ep, file_key, "contains")

    def frame_symbols(text: str, ep: Episode, error_key: tuple[str, str]) -> None:
        """Functions of the project named by the traceback's frames (``File "src/a.py", line 3, in f``)."""
        for path, name in list(dict.fromkeys(_FRAME.findall(text or "")))[-5:]:
            label = _file_label(path, workspace_root)
            if label and not label.startswith("/") and name != "<module>" and name.isidentifier():
                symbol(name, ep, error_key, "mentions")

    def mention_symbols(text: str, ep: Episode, src: tuple[str, str] | None, create: bool = True,
                        limit: int = MAX_ENTITIES_PER_EPISODE) -> None:
        created = 0
        for sym in _symbols(text):
            if is_noise(sym, text):
                continue
            hits = code.lookup(sym) if code else []
            if not hits and (not create or created >= limit):
                continue
            if hits:
                for nid, ntype, nlabel in hits:
                    key = ex.add(ntype, nlabel, ep.id)
                    ex.items[key].existing_id = nid
                    ex.link(session, "mentions", key, 0.6)
                    if src:
                        ex.link(src, "mentions", key, 0.7)
            else:
                created += 1
                key = ex.add("entity", sym, ep.id, origin="compress")
                ex.link(session, "mentions", key, 0.4)
                if src:
                    ex.link(src, "mentions", key, 0.5)

    def mention_files(text: str, ep: Episode, src: tuple[str, str] | None, weight: float = 0.5,
                      limit: int = 20) -> set[str]:
        seen: set[str] = set()
        for m in _PATH.finditer(text or ""):
            label = _file_label(m.group(1), workspace_root)
            # absolute paths outside the workspace (library frames of a traceback) are not project files
            if label and not label.startswith("/") and label not in seen and len(seen) < limit:
                seen.add(label)
                key = ex.add("file", label, ep.id)
                ex.link(session, "mentions", key, weight)
                if src:
                    ex.link(src, "mentions", key, weight)
        return seen

    for idx, ep in enumerate(episodes):
        text = ep.text or ""
        if ep.provenance:  # opensage's own memory commands: provenance, not evidence
            if ep.kind == "tool_call":
                own_nodes(ep)
            continue
        # files touched
        paths = []
        if ep.kind == "file_edit" and ep.path:
            paths.append(ep.path)
        if isinstance(ep.args, dict):
            for k in _PATH_ARGS:
                if isinstance(ep.args.get(k), str):
                    paths.append(ep.args[k])
        elif ep.path and ep.kind in ("tool_call", "tool_result"):
            paths.append(ep.path)
        for p in paths:
            label = _file_label(p, workspace_root)
            if label:
                op = "edit" if ep.kind == "file_edit" or (ep.tool or "").lower() in _EDIT_TOOLS else (ep.tool or ep.kind)
                key = ex.add("file", label, ep.id)
                ex.link(session, "touches", key, 0.8 if op == "edit" else 0.6, op=op)
                if op == "edit" and ep.kind == "tool_call":
                    edited_symbols(ep, key)
        # commands
        cmd = command_at.get(idx)
        if cmd:
            key = ex.add("command", cmd, ep.id, content="shell command" + (f" run with {ep.tool}" if ep.tool else ""))
            ex.link(session, "ran", key, 0.6)
        # errors
        if _is_failure(ep):
            label = _error_label(text or json.dumps(ep.meta))
            key = ex.add("error", label, ep.id, content=_error_tail(text), origin="compress", session=session_id,
                         seq=ep.seq)
            ex.link(session, "contains", key, 0.7)
            source_cmd = command_at.get(idx)
            if source_cmd is None:
                for back in range(idx - 1, max(-1, idx - 4), -1):
                    if back in command_at:
                        source_cmd = command_at[back]
                        break
            if source_cmd:
                ex.link(("command", source_cmd), "produced", key, 0.7)
                ex.items[key].meta.setdefault("command", source_cmd)
            mention_files(text, ep, key, 0.4)
            frame_symbols(text, ep, key)
            _find_fix(ex, episodes, idx, key, source_cmd, command_at, workspace_root, session_id,
                      lambda sentence, e, k: mention_symbols(sentence, e, k))
        # messages: decisions, questions, answers, mentions
        if ep.kind in ("user_message", "assistant_message"):
            sentences = _sentences(_FENCE.sub(" ", text))  # decisions and questions come from prose
            for n_s, s in enumerate(sentences):
                if _DECISION.search(s) and len(s) >= 12:
                    dkey = ex.add("decision", _title(s), ep.id, content=_norm(_with_reason(sentences, n_s), 1000),
                                  origin="compress", session=session_id, seq=ep.seq,
                                  role=ep.role or ep.kind.split("_")[0])
                    ex.link(session, "contains", dkey, 0.8)
                    mention_symbols(s, ep, dkey)
                    if not mention_files(s, ep, dkey):
                        # a decision in a message about a file is about that file too (weaker link)
                        for m in _PATH.finditer(text):
                            label = _file_label(m.group(1), workspace_root)
                            if label and not label.startswith("/"):
                                ex.link(dkey, "mentions", ex.add("file", label, ep.id), 0.3)
            if ep.kind == "user_message":
                for s in sentences:
                    if (s.endswith("?") or (_QUESTION_START.match(s) and s[-1] not in ".!:")) and len(s.split()) >= 3:
                        qkey = ex.add("query", _norm(s), ep.id, content=_norm(text, 2000), origin="compress",
                                      session=session_id, seq=ep.seq)
                        ex.link(session, "contains", qkey, 0.6)
                        mention_symbols(s, ep, qkey)
                        mention_files(s, ep, qkey)
                        answer = _next_reply(episodes, idx)
                        if answer is not None:
                            akey = ex.add("answer", _title(answer.text), answer.id,
                                          content=_norm(answer.text, 4000), origin="compress",
                                          session=session_id, seq=answer.seq)
                            ex.link(akey, "answers", qkey, 0.8)
                            ex.link(session, "contains", akey, 0.5)
            prose = _FENCE.sub(" ", text)
            mention_symbols(prose, ep, None)
            for block in _FENCE.findall(text):  # names in code blocks: only those that exist as code nodes
                mention_symbols(block, ep, None, create=False)
            mention_files(text, ep, None)
        elif ep.kind == "tool_result" and not _is_failure(ep):
            mention_files(text[:4000], ep, None, 0.3, limit=5)  # listings (ls, grep) are not all worth a node
    return ex


def _commands_by_index(episodes: list[Episode]) -> dict[int, str]:
    """The shell command of each episode: its own (tool arguments, ``command`` events), or for a
    tool result the command of the call of the same tool at most 3 episodes before it."""
    out: dict[int, str] = {}
    last: dict[str, tuple[str, int]] = {}
    for idx, ep in enumerate(episodes):
        if ep.provenance:
            continue
        cmd = _command_of(ep)
        if cmd is None and ep.kind == "tool_call" and (ep.tool or "").lower() in _SHELL_TOOLS and (ep.text or "").strip():
            cmd = _norm(ep.text)
        if cmd is None and ep.kind == "tool_result" and ep.tool in last and idx - last[ep.tool][1] <= 3:
            cmd = last[ep.tool][0]
        if cmd:
            out[idx] = cmd
            if ep.kind in ("tool_call", "command"):
                last[ep.tool or ep.kind] = (cmd, idx)
    return out


def _next_reply(episodes: list[Episode], idx: int) -> Episode | None:
    for ep in episodes[idx + 1:]:
        if ep.kind == "user_message":
            return None
        if ep.kind == "assistant_message" and (ep.text or "").strip():
            return ep
    return None


def _find_fix(ex: Extraction, episodes: list[Episode], idx: int, error_key, command: str | None,
              command_at: dict[int, str], root: Path, session_id: str, mention=None) -> None:
    """Link what fixed the error at ``episodes[idx]`` (see the module docstring).

    :param mention: ``mention(sentence, episode, key)`` links the code symbols a fix sentence names."""
    error_ep = episodes[idx]
    err_name = error_key[1].split(":", 1)[0]
    tool = error_ep.tool
    start = idx
    resolved_at = None
    for j in range(idx + 1, len(episodes)):
        ep = episodes[j]
        if ep.provenance:
            continue
        if _is_failure(ep) and _error_label(ep.text or json.dumps(ep.meta)) == error_key[1]:
            start = j  # it came back: whatever happened before did not fix it
            continue
        if ep.kind in ("tool_result", "command") and not _is_failure(ep):
            same = (command is not None and command_at.get(j) == command) or (command is None and tool and ep.tool == tool)
            if same:
                resolved_at = j
                break
    window = episodes[start + 1: resolved_at] if resolved_at is not None else episodes[idx + 1:]
    fixers: list[tuple[tuple[str, str], int, float]] = []

    def fix_decisions(ep, names_fix) -> None:
        # an assistant sentence with fix words that ``names_fix`` accepts becomes a decision
        sentences = _sentences(ep.text)
        for n_s, s in enumerate(sentences):
            if _FIX_WORDS.search(s) and names_fix(s):
                key = ex.add("decision", _title(s), ep.id, content=_norm(_with_reason(sentences, n_s), 1000),
                             origin="compress", seq=ep.seq, role="assistant", session=session_id)
                ex.link(("session", session_id), "contains", key, 0.7)
                fixers.append((key, ep.id, 0.8))
                if mention is not None:
                    mention(s, ep, key)

    for ep in window:
        if ep.provenance:
            continue
        if resolved_at is not None and (ep.kind == "file_edit" or (
                ep.kind == "tool_call" and (ep.tool or "").lower() in _EDIT_TOOLS)):
            path = ep.path if ep.kind == "file_edit" else next(
                (ep.args[k] for k in _PATH_ARGS if isinstance(ep.args, dict) and isinstance(ep.args.get(k), str)), None)
            label = _file_label(path or "", root)
            if label:
                fixers.append((ex.add("file", label, ep.id), ep.id, 0.6))
        if ep.kind == "assistant_message":
            fix_decisions(ep, lambda s: resolved_at is not None or err_name in s)
    if resolved_at is not None:
        # the assistant often says what fixed it after the green re-run, at the end of its turn
        edited = {Path(ex.items[k].label).name for k, _, _ in fixers if k[0] == "file"}
        for ep in episodes[resolved_at + 1:]:
            if ep.kind == "user_message" or _is_failure(ep):
                break
            if ep.kind != "assistant_message" or ep.provenance:
                continue
            fix_decisions(ep, lambda s: err_name in s or any(name in s for name in edited))
    item = ex.items[error_key]
    stamps = {ep.id: ep.timestamp for ep in episodes}
    fixed_at = episodes[resolved_at].timestamp if resolved_at is not None else None
    if resolved_at is not None or fixers:
        item.meta["resolved"] = True
        item.meta["fixedAt"] = fixed_at if fixed_at is not None else max(stamps[e] for _, e, _ in fixers)
        if resolved_at is not None:
            item.meta["resolved_seq"] = episodes[resolved_at].seq
            item.episodes.add(episodes[resolved_at].id)
    else:
        item.meta.setdefault("resolved", False)
    for key, ep_id, weight in sorted(fixers, key=lambda f: -f[2]):  # the first (a decision) becomes supersededBy
        # the fix time ends the error's validity (Graph.mark_fixed, called when the edge is written)
        ex.link(key, "fixes", error_key, weight, fixedAt=fixed_at if fixed_at is not None else stamps[ep_id])


# -- fixes of errors recorded in earlier sessions ----------------------------------------------
#: Earlier current errors compared with each "fixed ..." sentence (FTS5 best matches).
FIX_CANDIDATES = 5


def _error_name(label: str) -> str:
    return label.split(":", 1)[0].strip()


def _words(text: str) -> set[str]:
    from .graph import _subject_words
    return _subject_words(text)


def fix_match(sentence: str, error_label: str, error_content: str = "") -> str:
    """Deterministic "same subject" rule for a fix sentence and an earlier error.

    ``same``: the sentence names the error (its ``SomethingError`` name, at least 4
    characters) and shares at least :data:`~.graph.SUBJECT_MIN_SHARED` subject words with
    the error's label (the name counts); ``uncertain``: only one of the two holds (the
    name without enough shared words, or two shared words without the name); else ``no``.
    """
    from .graph import SUBJECT_MIN_SHARED
    name = _error_name(error_label)
    named = len(name) >= 4 and re.search(r"\b" + re.escape(name) + r"\b", sentence, re.I) is not None
    shared = len(_words(sentence) & _words(error_label))
    if named and shared >= SUBJECT_MIN_SHARED:
        return "same"
    if named or shared >= SUBJECT_MIN_SHARED:
        return "uncertain"
    return "no"


def _link_earlier_errors(ex: Extraction, episodes: list[Episode], graph: Graph, session_id: str,
                         judge: "SubjectJudge | None") -> None:
    """A later session records the fix of an error of an earlier one: an assistant sentence
    with a fix word (:data:`_FIX_WORDS`) and a current ``error`` node (not from this session)
    judged the same subject (:func:`fix_match`; ``uncertain`` pairs asked to ``judge`` when
    a model is configured, else left unlinked) get a ``decision`` node for the sentence
    and an edge ``decision -[fixes]-> error`` (which ends the error's validity)."""
    in_session = {k[1] for k in ex.items if k[0] == "error"}
    conn = graph.db.conn
    for ep in episodes:
        if ep.provenance or ep.kind != "assistant_message" or not (ep.text or "").strip() or ep.compressed_at:
            continue  # episodes compressed before were judged then (a re-run asks no model again)
        sentences = _sentences(_FENCE.sub(" ", ep.text))
        for n_s, s in enumerate(sentences):
            if not _FIX_WORDS.search(s):
                continue
            words = _words(s)
            if not words:
                continue
            match = " OR ".join('"' + w + '"' for w in sorted(words)[:30])
            try:
                rows = conn.execute(
                    "SELECT n.id, n.label, n.content, n.valid_from FROM nodes_fts f JOIN nodes n ON n.id = f.rowid"
                    " WHERE nodes_fts MATCH ? AND n.type='error' AND n.valid_to IS NULL"
                    " AND coalesce(n.session_id, '') != ? ORDER BY bm25(nodes_fts) LIMIT ?",
                    (match, session_id, FIX_CANDIDATES)).fetchall()
            except Exception:  # an FTS syntax corner case: no candidates
                rows = []
            for r in rows:
                if r["label"] in in_session or (r["valid_from"] or 0) > ep.timestamp:
                    continue
                verdict = fix_match(s, r["label"], r["content"])
                judged_by = "rules"
                if verdict == "uncertain" and judge is not None:
                    same = judge.same_subject(s, f"error: {r['label']}\n{_cut(r['content'], 600)}")
                    if same is not None:
                        verdict, judged_by = ("same" if same else "no"), "model"
                if verdict != "same":
                    continue
                key = ex.add("decision", _title(s), ep.id, content=_norm(_with_reason(sentences, n_s), 1000),
                             origin="compress", seq=ep.seq, role="assistant", session=session_id)
                ex.link(("session", session_id), "contains", key, 0.7)
                err = ex.add("error", r["label"], ep.id)
                ex.items[err].existing_id = r["id"]
                ex.link(("session", session_id), "contains", err, 0.5)
                ex.link(key, "fixes", err, 0.7, fixedAt=ep.timestamp, judgedBy=judged_by)


# -- "same subject" judged by the model ---------------------------------------------------------
#: Bounds of the optional model judge (:class:`SubjectJudge`): requests per compression,
#: output tokens and seconds per request, characters of each text sent, cached verdicts.
JUDGE_MAX_CALLS = 8
JUDGE_MAX_TOKENS = 60
JUDGE_TIMEOUT_S = 20.0
JUDGE_TEXT_CHARS = 800
JUDGE_CACHE_SIZE = 2048
_JUDGE_CACHE: dict[tuple[str, str, str], bool] = {}


class SameSubject(BaseModel):
    """The judge's answer."""

    same_subject: bool = Field(description="true when the new statement is about the same subject as the earlier one "
                                           "(it fixes that error / replaces that decision)")


class SubjectJudge:
    """Asks the configured model (through :func:`opensage.llm.structured`) whether two texts
    are about the same subject, for pairs the deterministic rules find uncertain.

    Bounded: at most :data:`JUDGE_MAX_CALLS` requests per instance (one compression), each
    with :data:`JUDGE_MAX_TOKENS` output tokens, :data:`JUDGE_TIMEOUT_S` seconds (or less
    when ``$OPENSAGE_MODEL_TIMEOUT`` is lower), no provider retries, one attempt (an
    invalid answer is not asked again), texts cut at :data:`JUDGE_TEXT_CHARS` characters.
    Verdicts are cached per (model, new text, earlier text) in the process. Any failure
    (timeout, provider error, garbage) gives ``None``: the caller keeps the deterministic
    result. The thresholds are chosen for cost, not measured against a labelled set.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.calls = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self.errors: list[str] = []

    def same_subject(self, new: str, old: str) -> bool | None:
        """Whether ``new`` (a fix or decision sentence) is about the same subject as ``old``
        (an earlier error or decision); both are cut at :data:`JUDGE_TEXT_CHARS` characters.

        :returns: the model's verdict (cached), or ``None`` when the call budget is spent or
            the model failed (timeout, provider error, an answer that is not the schema);
            never raises for a model failure.
        """
        key = (self.model, new[:JUDGE_TEXT_CHARS], old[:JUDGE_TEXT_CHARS])
        if key in _JUDGE_CACHE:
            return _JUDGE_CACHE[key]
        if self.calls >= JUDGE_MAX_CALLS:
            return None
        self.calls += 1
        from opensage import llm  # lazy: importing litellm costs seconds
        messages = [
            {"role": "system", "content": "You compare two notes from a software project's memory. Answer whether "
             "the NEW note is about the same subject as the EARLIER one: it fixes that error, or it replaces "
             "that decision. Different components, files or errors are different subjects."},
            {"role": "user", "content": f"EARLIER:\n{key[2]}\n\nNEW:\n{key[1]}"},
        ]
        try:
            timeout = min(JUDGE_TIMEOUT_S, llm.settings().timeout_s)
            out = llm.structured(messages, SameSubject, model=self.model, max_attempts=1,
                                 max_tokens=JUDGE_MAX_TOKENS, timeout_s=timeout, retries=0)
        except Exception as exc:  # noqa: BLE001 - a model failure never fails the compression
            self.errors.append(str(exc)[:300])
            log.warning("same-subject judge failed, keeping the deterministic result: %s", exc)
            return None
        self.tokens += out.usage.prompt_tokens + out.usage.completion_tokens
        self.cost_usd += out.usage.cost_usd
        if len(_JUDGE_CACHE) >= JUDGE_CACHE_SIZE:
            _JUDGE_CACHE.pop(next(iter(_JUDGE_CACHE)))
        _JUDGE_CACHE[key] = out.value.same_subject
        return out.value.same_subject


def _judge_decisions(graph: Graph, decision_ids: list[int], judge: SubjectJudge) -> list[tuple[int, int]]:
    """For new decisions the deterministic rule did not connect: earlier current decisions
    the rule finds uncertain (see :meth:`Graph.subject_candidates`) are asked to ``judge``;
    a ``true`` supersedes the earlier one. Returns the (old, new) pairs superseded."""
    done = []
    for nid in decision_ids:
        node = graph.get(nid)
        if node is None or node.type != "decision":
            continue
        for cand in graph.subject_candidates(nid, limit=FIX_CANDIDATES):
            if judge.same_subject(f"decision: {node.label}\n{node.content}",
                                  f"decision: {cand.label}\n{cand.content}"):
                graph.supersede(cand.id, nid)
                graph.upsert_edge(nid, cand.id, "supersedes", 1.0, {"judgedBy": "model"})
                done.append((cand.id, nid))
    return done


# -- model pass -------------------------------------------------------------------------------
NodeKind = Literal["fact", "decision", "concept", "entity", "error", "task", "query", "answer", "file", "command"]


class MemoryItem(BaseModel):
    """One piece of lasting knowledge found in the transcript. Unknown types are kept as ``concept``."""

    type: NodeKind = Field(description="fact | decision | concept | entity | error | task | query | answer | file | command")
    label: str = Field(min_length=1, description="short unique name, e.g. 'use SQLite WAL for the store'")
    content: str = Field("", description="one or two sentences: what it is, why it matters")
    episodes: list[int] = Field(default_factory=list, description="seq numbers of the transcript lines it comes from")

    @field_validator("label", "content", mode="before")
    @classmethod
    def _bounded(cls, value, info):  # a too-long string is cut, not a reason to fail the whole answer
        text = " ".join(str(value or "").split())
        limit = LABEL_CHARS if info.field_name == "label" else 2000
        return text if len(text) <= limit else text[: limit - 1] + "…"

    @field_validator("episodes", mode="before")
    @classmethod
    def _few_seqs(cls, value):
        return [v for v in value if isinstance(v, int)][:50] if isinstance(value, list) else []

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value):
        value = str(value or "").strip().lower()
        return value if value in NodeKind.__args__ else "concept"  # a model's own categories are concepts


class MemoryRelation(BaseModel):
    """A typed relation between two labels (items above or names already known)."""

    source: str = Field(min_length=1)
    type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="e.g. uses, depends_on, fixes, related_to, implements")
    target: str = Field(min_length=1)

    @field_validator("type", mode="before")
    @classmethod
    def _snake(cls, value):  # "Depends on" -> depends_on
        return re.sub(r"[^a-z0-9]+", "_", str(value or "").strip().lower()).strip("_")[:40]


class SessionKnowledge(BaseModel):
    """What a memory agent keeps from part of a coding session."""

    items: list[MemoryItem] = Field(default_factory=list)
    relations: list[MemoryRelation] = Field(default_factory=list)

    model_config = {"defer_build": True}


_SYSTEM = (
    "You are the memory agent of a coding assistant. From the session transcript, extract lasting knowledge: "
    "facts worth remembering (type 'fact': one self-contained statement each, e.g. 'refresh tokens carry no exp "
    "claim'), decisions taken (and why), concepts and components discussed, errors and what fixed them, open "
    "tasks, and typed relations between them. Skip chit-chat and anything already in the 'known' list unless you "
    f"add a relation to it. At most {MAX_MODEL_ITEMS} items. Labels must be short and specific. Cite the "
    "transcript seq numbers each item comes from in 'episodes'."
)


def _transcript_lines(episodes: list[Episode]) -> list[str]:
    lines = []
    for ep in episodes:
        head = f"[{ep.seq}] {ep.kind}" + (f" {ep.role}" if ep.role else "") + (f" {ep.tool}" if ep.tool else "")
        body = ep.text or ""
        if ep.args:
            body = (body + " " + json.dumps(ep.args, default=str)).strip()
        if ep.path:
            body = f"{ep.path}: {body}"
        body = " ".join(body.split())
        if len(body) > MODEL_EPISODE_CHARS:
            body = body[: MODEL_EPISODE_CHARS - 1] + "…"
        lines.append(f"{head}: {body}")
    return lines


def extract_with_model(episodes: list[Episode], known: Extraction, model: str | None = None):
    """Ask the configured model for :class:`SessionKnowledge`, one request per ≤16,000-character chunk.

    At most :data:`MAX_MODEL_CHUNKS` requests, latest chunk first, each with
    ``max_tokens`` = :data:`MODEL_MAX_TOKENS`, and none once :data:`MAX_MODEL_TOKENS`
    tokens or :data:`MAX_MODEL_COST_USD` have been used: the older part of a long
    transcript is then left to the rules (which cover every episode).

    :returns: (list of SessionKnowledge, Usage, number of episodes not sent).
    :raises ModelNotConfigured: no model configured. :raises ModelError: invalid output after retries.
    """
    from opensage import llm  # lazy: importing litellm costs seconds

    known_labels = [f"{t}: {l}" for (t, l) in list(known.items)[:80]]
    chunks: list[list[str]] = [[]]
    size = 0
    for line in _transcript_lines(episodes):
        if size + len(line) > MODEL_CHUNK_CHARS and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line) + 1
    skipped = sum(len(c) for c in chunks[:-MAX_MODEL_CHUNKS])
    chunks = chunks[-MAX_MODEL_CHUNKS:]  # the latest part of the session, where conclusions are
    results, usage = [], llm.Usage()
    max_cost = _max_cost()
    chunks.reverse()  # latest first: when a bound stops the pass, the older part is left to the rules
    for n, chunk in enumerate(chunks):
        if n and (usage.prompt_tokens + usage.completion_tokens >= MAX_MODEL_TOKENS or usage.cost_usd >= max_cost):
            skipped += sum(len(c) for c in chunks[n:])
            break
        messages = [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": "Known already:\n" + ("\n".join(known_labels) or "(nothing)")
             + "\n\nTranscript:\n" + "\n".join(chunk)},
        ]
        out = llm.structured(messages, SessionKnowledge, model=model, max_tokens=MODEL_MAX_TOKENS)
        usage.add(out.usage)
        results.append(out.value)
    return results, usage, skipped


def _max_cost() -> float:
    raw = os.environ.get("OPENSAGE_MEMORY_MAX_COST_USD", "")
    try:
        return float(raw) if raw.strip() else MAX_MODEL_COST_USD
    except ValueError:
        raise UsageError(f"OPENSAGE_MEMORY_MAX_COST_USD must be a number of US dollars (e.g. 0.05), not {raw!r}.") from None


def _merge_model(ex: Extraction, answers: list[SessionKnowledge], episodes: list[Episode], session_id: str,
                 graph: Graph) -> tuple[int, int]:
    """Merge model answers into ``ex`` (at most :data:`MAX_MODEL_ITEMS` items and
    :data:`MAX_MODEL_RELATIONS` relations per answer).

    Each item keeps its provenance: the episodes whose seq numbers it cites (only seqs of
    this session count). :returns: (relations dropped for unknown endpoints, items and
    relations dropped over the bounds)."""
    by_seq = {ep.seq: ep.id for ep in episodes}
    session = ("session", session_id)
    dropped = over = 0
    for answer in answers:
        over += max(0, len(answer.items) - MAX_MODEL_ITEMS) + max(0, len(answer.relations) - MAX_MODEL_RELATIONS)
        answer = SessionKnowledge(items=answer.items[:MAX_MODEL_ITEMS], relations=answer.relations[:MAX_MODEL_RELATIONS])
        for it in answer.items:
            label = _norm(it.label)
            if not label:
                continue
            key = ex.find(it.type, label) or (it.type, label)
            eps = [by_seq[s] for s in it.episodes if s in by_seq]
            ex.add(key[0], key[1], None, content=it.content, origin="model", session=session_id)
            ex.items[key].episodes.update(eps)
            ex.link(session, "touches" if it.type == "file" else "contains", key, 0.6)
        for rel in answer.relations:
            ends = []
            for name in (rel.source, rel.target):
                name = _norm(name)
                hit = next((k for k in ex.items if k[1].casefold() == name.casefold()), None)
                if hit is None:
                    row = graph.db.conn.execute("SELECT id, type, label FROM nodes WHERE label=? LIMIT 1", (name,)).fetchone()
                    if row is not None:
                        hit = ex.add(row["type"], row["label"])
                        ex.items[hit].existing_id = row["id"]
                ends.append(hit)
            if ends[0] is None or ends[1] is None:
                dropped += 1
                continue
            ex.link(ends[0], rel.type, ends[1], 0.6, origin="model")
    return dropped, over


# -- the command's core -----------------------------------------------------------------------
@camel
@dataclass
class CompressReport:
    """Counts of one compression run. ``new`` counts nodes created by type; costs in USD."""

    session_id: str
    episodes: int = 0
    new_episodes: int = 0
    new: dict[str, int] = field(default_factory=dict)
    updated: int = 0
    new_edges: int = 0
    provenance_links: int = 0
    model: str | None = None
    model_items: int = 0
    model_skipped_episodes: int = 0
    dropped_relations: int = 0
    model_dropped_items: int = 0
    model_error: str | None = None
    judge_calls: int = 0
    judge_error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    time_ms: float = 0.0
    nodes: list[dict] = field(default_factory=list)

    @property
    def new_total(self) -> int:
        """Nodes created by the run, all types together."""
        return sum(self.new.values())

    def as_dict(self) -> dict[str, Any]:
        """Every field under its camelCase name, ``new`` sorted by type, ``newTotal`` added,
        ``timeMs`` rounded to 0.1 ms."""
        return {**camel_dict(self), "new": dict(sorted(self.new.items())), "newTotal": self.new_total,
                "timeMs": round(self.time_ms, 1)}


def session_exists(host, session_id: str) -> bool:
    """True when the session is known (a ``sessions`` row or recorded episodes). Never creates the database."""
    if not store_exists(host.workspace):
        return False
    conn = host.db.conn
    if conn.execute("SELECT 1 FROM sessions WHERE id=?", (session_id,)).fetchone():
        return True
    try:
        return conn.execute("SELECT 1 FROM episodes WHERE session_id=? LIMIT 1", (session_id,)).fetchone() is not None
    except Exception:  # the graph tables do not exist yet
        return False


def compress_session(host, session_id: str, use_model: str = "auto") -> CompressReport:
    """Compress session ``session_id`` into graph nodes (see the module docstring).

    :param use_model: ``auto`` (use the model when ``$OPENSAGE_MODEL`` is set; on a model
        failure keep the rules' result and report ``model_error``), ``always`` (fail
        without a model) or ``never``.
    :raises NotFoundError: unknown session. :raises ModelNotConfigured: ``always`` without
        a model. :raises ModelError: ``always`` and the model failed.
    """
    started = time.perf_counter()
    if use_model not in ("auto", "always", "never"):
        raise UsageError(f"argument 'useModel' must be auto, always or never, not {use_model!r}.")
    if not session_exists(host, session_id):
        raise NotFoundError(
            f"unknown session {session_id!r}: no session with that id and no recorded episodes. "
            "Sessions are created by 'opensage hook' / 'opensage chat'; check the id the host reported."
        )
    if use_model == "always" and not os.environ.get("OPENSAGE_MODEL"):
        raise ModelNotConfigured("useModel=always needs a model: set OPENSAGE_MODEL (e.g. openai/gpt-4o-mini).")
    graph = graph_for(host)
    db = graph.db
    report = CompressReport(session_id)
    episodes = list_episodes(db, session_id)
    report.episodes = len(episodes)
    fresh = [ep for ep in episodes if ep.compressed_at is None]
    report.new_episodes = len(fresh)
    if not episodes:  # a session that recorded nothing leaves no trace in the graph
        report.time_ms = (time.perf_counter() - started) * 1000
        return report
    ex = extract_rules(episodes, session_id, host.workspace.root, graph)
    judge = (SubjectJudge(os.environ["OPENSAGE_MODEL"])
             if use_model != "never" and os.environ.get("OPENSAGE_MODEL") else None)
    _link_earlier_errors(ex, episodes, graph, session_id, judge)

    # the model reads the evidence it has not read yet: a failed pass is retried next time
    unread = [ep for ep in episodes if ep.modeled_at is None and not ep.provenance]
    modeled: list[int] = []
    if unread and use_model != "never" and os.environ.get("OPENSAGE_MODEL"):
        try:
            answers, usage, report.model_skipped_episodes = extract_with_model(unread, ex)
            report.model = os.environ.get("OPENSAGE_MODEL")
            report.tokens = usage.prompt_tokens + usage.completion_tokens
            report.cost_usd = usage.cost_usd
            report.model_items = sum(len(a.items) for a in answers)
            report.dropped_relations, report.model_dropped_items = _merge_model(ex, answers, episodes, session_id, graph)
            modeled = [ep.id for ep in unread]
        except (ModelError, ModelNotConfigured) as exc:
            if use_model == "always":
                raise
            report.model_error = str(exc)
            log.warning("session %s: model extraction failed, keeping the rule-based result: %s", session_id, exc)

    source_row = db.conn.execute("SELECT source, started_at FROM sessions WHERE id=?", (session_id,)).fetchone()
    with db.transaction() as conn:
        ids: dict[tuple[str, str], int] = {}
        new_decisions: list[int] = []
        first, last = episodes[0], episodes[-1]
        content = (f"session {session_id}" + (f" ({source_row['source']})" if source_row else "")
                   + f": {len(episodes)} episodes, "
                   + time.strftime("%Y-%m-%d %H:%M", time.localtime(first.timestamp)) + " to "
                   + time.strftime("%Y-%m-%d %H:%M", time.localtime(last.timestamp)))
        src_name = source_row["source"] if source_row else None
        node, created = graph.upsert_node("session", session_id, content,
                                          {"source": src_name, "episodes": len(episodes)},
                                          session_id=session_id, source=src_name, valid_from=first.timestamp)
        ids[("session", session_id)] = node.id
        if created:
            report.new["session"] = report.new.get("session", 0) + 1
        for key, item in ex.items.items():
            if key == ("session", session_id):
                continue
            if item.existing_id is not None:
                nid = item.existing_id
                report.provenance_links += link_episodes(conn, nid, item.episodes)
                ids[key] = nid
                continue
            before = conn.execute("SELECT count(*) FROM node_episodes WHERE node_id IN "
                                  "(SELECT id FROM nodes WHERE type=? AND label=?)", key).fetchone()[0]
            node, created = graph.upsert_node(item.type, item.label, item.content, item.meta,
                                              episode_ids=sorted(item.episodes), session_id=session_id,
                                              source=src_name)
            after = conn.execute("SELECT count(*) FROM node_episodes WHERE node_id=?", (node.id,)).fetchone()[0]
            report.provenance_links += after - before
            ids[key] = node.id
            if created:
                report.new[item.type] = report.new.get(item.type, 0) + 1
                report.nodes.append({"id": node.ref, "type": node.type, "label": node.label})
                if item.type == "decision":
                    new_decisions.append(node.id)
            else:
                report.updated += 1
        for (src, etype, dst), (weight, meta) in ex.edges.items():
            if src not in ids or dst not in ids:
                continue
            meta = {**meta, "session": session_id} if etype != "contains" else meta
            _, created = graph.upsert_edge(ids[src], ids[dst], etype, weight, meta)
            report.new_edges += int(created)
        for key, item in ex.items.items():
            if item.type != "error" or key not in ids:
                continue
            if item.meta.get("resolved") and isinstance(item.meta.get("fixedAt"), (int, float)):
                graph.mark_fixed(ids[key], None, item.meta["fixedAt"])  # no-op when a fixes edge did it
            elif item.meta.get("resolved") is False:
                # the error happened again and nothing fixed it this time: an open problem again
                node = graph.get(ids[key])
                if node is not None and node.valid_to is not None and any(
                        ep.timestamp > node.valid_to for ep in episodes if ep.id in item.episodes):
                    graph.reopen(node.id)
        mark_compressed(db, [ep.id for ep in fresh])
        if modeled:
            mark_modeled(db, modeled)
    # outside the write transaction: a slow model must not hold the database
    if judge is not None and new_decisions:
        _judge_decisions(graph, new_decisions, judge)
    if judge is not None:
        report.judge_calls = judge.calls
        report.judge_error = judge.errors[-1] if judge.errors else None
        report.tokens += judge.tokens
        report.cost_usd += judge.cost_usd
    report.time_ms = (time.perf_counter() - started) * 1000
    return report


# -- compaction and prompt context -------------------------------------------------------------
#: Lines per section of the compaction context, and characters per line.
SECTION_LINES = {"decisions": 10, "errors": 8, "questions": 5, "recorded": 6, "earlier": 6}
LINE_CHARS = 260
#: Node types worth bringing back from earlier sessions.
LASTING_TYPES = ("decision", "fact", "error", "concept", "answer", "task")
_CODE_SYMBOL_TYPES = ("class", "function", "method", "module")


def _cut(text: str, limit: int = LINE_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _with_content(label: str, content: str, limit: int = LINE_CHARS) -> str:
    """``label: content`` when the content says more than the label (a decision's reason)."""
    flat = " ".join((content or "").split())
    if not flat or flat.rstrip(" .").casefold().startswith(label.rstrip(" .…").casefold()) and len(flat) <= len(label) + 3:
        return _cut(label, limit)
    if flat.casefold().startswith(label.rstrip("…").casefold()):
        return _cut(flat, limit)
    return _cut(f"{label}: {flat}", limit)


def _fit(title: str, sections: list[tuple[str, list[str]]], max_chars: int) -> str:
    """Title plus as many section lines as fit in ``max_chars``, taken round-robin (one line
    of each section per round, in priority order) so no section is crowded out by the first."""
    take = [0] * len(sections)

    def size() -> int:
        total = len(title)
        for (head, lines), k in zip(sections, take):
            if k:
                total += 1 + len(head) + sum(1 + len(line) for line in lines[:k])
        return total

    grew = True
    while grew:
        grew = False
        for i, (_, lines) in enumerate(sections):
            if take[i] < len(lines):
                take[i] += 1
                if size() > max_chars:
                    take[i] -= 1
                else:
                    grew = True
    out = [title]
    for (head, lines), k in zip(sections, take):
        if k == 1 and not lines[0].startswith("- "):  # a one-line section: "Files touched: a, b"
            out.append(f"{head} {lines[0]}")
        elif k:
            out.append(head)
            out += lines[:k]
    return "\n".join(out)[:max_chars]


def _earlier_knowledge(conn, session_id: str, own: set[int], query: str, files: list[tuple[int, str]],
                       limit: int) -> list[str]:
    """Lasting nodes of other sessions for what this session is doing: decisions and errors
    about the files it touched first, then nodes of :data:`LASTING_TYPES` matching its
    words (BM25 over nodes)."""
    from opensage.plugins.graph_memory.ranking import match_expression

    lines: list[str] = []
    seen = set(own)
    for file_id, file_label in files:
        for r in conn.execute(
            "SELECT n.id, n.type, n.label, n.content FROM edges e JOIN nodes n ON n.id = (CASE WHEN e.src=? THEN e.dst ELSE e.src END)"
            " WHERE (e.src=? OR e.dst=?) AND n.type IN ('decision', 'error', 'fact') ORDER BY n.updated_at DESC LIMIT 5",
            (file_id, file_id, file_id),
        ):
            if r["id"] not in seen and len(lines) < limit:
                seen.add(r["id"])
                lines.append(f"- {r['type']} about {file_label}: {_with_content(r['label'], r['content'], 200)} [n{r['id']}]")
    match, scored = match_expression(conn, "nodes", query) if query.strip() else ("", 0)
    if match and len(lines) < limit:
        marks = ",".join("?" * len(LASTING_TYPES))
        rows = conn.execute(
            f"SELECT id FROM (SELECT f.rowid AS id, bm25(nodes_fts, 4.0, 2.0, 1.0) AS s FROM nodes_fts f JOIN nodes n"
            f" ON n.id = f.rowid WHERE nodes_fts MATCH ? AND n.type IN ({marks}) LIMIT {int(scored)}) ORDER BY s LIMIT ?",
            (match, *LASTING_TYPES, limit * 4)).fetchall()
        for (nid,) in rows:
            if nid in seen or len(lines) >= limit:
                continue
            r = conn.execute("SELECT id, type, label, content, metadata FROM nodes WHERE id=?", (nid,)).fetchone()
            meta = json.loads(r["metadata"] or "{}")
            if meta.get("session") == session_id:
                continue
            seen.add(nid)
            lines.append(f"- {r['type']}: {_with_content(r['label'], r['content'], 200)} [n{nid}]")
    return lines


def compaction_text(graph: Graph, session_id: str, max_chars: int = 4000) -> str | None:
    """What a developer wants back after a compaction, at most ``max_chars`` characters.

    Sections, in priority order: the session's decisions (with their reasons, including
    nodes added with ``@memory-add-node`` during it), errors (open, or what fixed them),
    open questions (queries without an answer), other knowledge recorded during the
    session, files touched, symbols touched or discussed, then lasting knowledge of
    earlier sessions for what this one is doing (decisions and errors about the same
    files, then the nodes most similar to the session's own words). Lines are capped at
    :data:`LINE_CHARS` characters and sections at :data:`SECTION_LINES` lines; when the
    budget is short, lines are taken round-robin so every section keeps its most recent
    items. ``None`` when the session has no node yet (not compressed).
    """
    conn = graph.db.conn
    row = conn.execute("SELECT id FROM nodes WHERE type='session' AND label=?", (session_id,)).fetchone()
    if row is None or max_chars <= 0:
        return None
    sid = row["id"]
    linked = conn.execute(
        "SELECT n.id, n.type, n.label, n.content, n.metadata, e.type AS etype, n.updated_at FROM edges e"
        " JOIN nodes n ON n.id = e.dst WHERE e.src=? ORDER BY n.updated_at DESC, n.id DESC", (sid,)).fetchall()
    decisions, errors, questions, recorded, files, symbols = [], [], [], [], [], []
    # when in the session each node came up last (its latest episode there): most recent first
    last_seq = dict(conn.execute(
        "SELECT ne.node_id, max(e.seq) FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id"
        " WHERE e.session_id=? GROUP BY ne.node_id", (session_id,)).fetchall())
    for r in linked:
        meta = json.loads(r["metadata"] or "{}")
        order = (last_seq.get(r["id"]) or meta.get("seq") or 0, r["updated_at"])
        if r["type"] == "decision":
            decisions.append((order, f"- {_with_content(r['label'], r['content'])} [n{r['id']}]"))
        elif r["type"] == "error":
            fixers = conn.execute(
                "SELECT n.type, n.label FROM edges e JOIN nodes n ON n.id=e.src WHERE e.dst=? AND e.type='fixes'"
                " ORDER BY e.weight DESC, e.id", (r["id"],)).fetchall()
            if fixers:
                status = "fixed by " + "; ".join(f"{f['type']} {_cut(f['label'], 90)}" for f in fixers[:3])
            else:
                status = "fixed" if meta.get("resolved") else "open"
            cmd = f" (from: {_cut(meta['command'], 60)})" if isinstance(meta.get("command"), str) else ""
            errors.append((order, f"- {_cut(r['label'], 120)}{cmd} — {status} [n{r['id']}]"))
        elif r["type"] == "query":
            if not conn.execute("SELECT 1 FROM edges WHERE dst=? AND type='answers' LIMIT 1", (r["id"],)).fetchone():
                questions.append((order, f"- {_cut(r['label'])} [n{r['id']}]"))
        elif r["type"] == "file":
            if r["etype"] == "touches":
                files.append((r["id"], r["label"]))
        elif r["type"] in _CODE_SYMBOL_TYPES or r["type"] == "entity":
            n_eps = conn.execute("SELECT count(*) FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id"
                                 " WHERE ne.node_id=? AND e.session_id=?", (r["id"], session_id)).fetchone()[0]
            symbols.append((r["type"] in _CODE_SYMBOL_TYPES, n_eps, r["label"]))
        elif r["type"] not in ("answer", "command", "session") and r["etype"] == "contains":
            recorded.append((order, f"- {r['type']} {_with_content(r['label'], r['content'])} [n{r['id']}]"))
    sections: list[tuple[str, list[str]]] = []

    def section(head: str, key: str, items: list) -> None:
        if items:
            sections.append((head, [line for _, line in sorted(items, key=lambda x: x[0], reverse=True)][:SECTION_LINES[key]]))

    section("Decisions:", "decisions", decisions)
    section("Errors:", "errors", errors)
    section("Open questions:", "questions", questions)
    section("Recorded in memory:", "recorded", recorded)
    if files:
        sections.append(("Files touched:", [_cut(", ".join(sorted({label for _, label in files})), 600)]))
    if symbols:
        ranked = [label for _, _, label in sorted(symbols, key=lambda x: (not x[0], -x[1], x[2]))][:15]
        sections.append(("Symbols:", [_cut(", ".join(ranked), 600)]))
    words = " ".join([r["label"] for r in linked if r["type"] in ("decision", "error", "query")]
                     + [label for _, label in files]
                     + [e["text"][:300] for e in conn.execute(
                         "SELECT text FROM episodes WHERE session_id=? AND kind='user_message' ORDER BY seq DESC LIMIT 3",
                         (session_id,))])
    earlier = _earlier_knowledge(conn, session_id, {r["id"] for r in linked}, words, files, SECTION_LINES["earlier"])
    if earlier:
        sections.append(("From earlier sessions:", earlier))
    if not sections:
        return None
    text = _fit(f"Memory of session {session_id} (graph-memory):", sections, max_chars)
    return text or None


#: Nodes shown in a prompt's context when it is not a question about past work.
PROMPT_NODES = 5


def prompt_text(graph: Graph, text: str, max_chars: int = 2000) -> str | None:
    """Memory for a prompt the user just sent, at most ``max_chars`` characters, or None.

    A question about past work ("how did we fix ...", see
    :func:`.history.is_past_work_question`) gets the matching chains (error, fix,
    decision, session and when); any other prompt the :data:`PROMPT_NODES` nodes most
    similar to it by BM25 (sessions, commands and files left out: they are not knowledge).
    """
    from opensage.plugins.graph_memory.history import chains, is_past_work_question, render_chains
    from opensage.plugins.graph_memory.ranking import match_expression

    if not (text or "").strip() or max_chars <= 0:
        return None
    if is_past_work_question(text):
        found = chains(graph, text, 3)
        if found:
            body = render_chains(text[:120], found)
            return _cut_block("OpenSage memory of past work:\n" + body.split("\n", 1)[-1], max_chars)
    conn = graph.db.conn
    match, scored = match_expression(conn, "nodes", text)
    if not match:
        return None
    rows = conn.execute(
        f"SELECT n.id, n.type, n.label, n.content FROM (SELECT f.rowid AS id, bm25(nodes_fts, 4.0, 2.0, 1.0) AS s"
        f" FROM nodes_fts f JOIN nodes n ON n.id = f.rowid WHERE nodes_fts MATCH ?"
        f" AND n.type NOT IN ('session', 'command', 'file') LIMIT {int(scored)}) x JOIN nodes n ON n.id = x.id"
        " ORDER BY x.s LIMIT ?", (match, PROMPT_NODES)).fetchall()
    if not rows:
        return None
    lines = [f"- {r['label']} ({r['type']}, n{r['id']})" + (f": {_cut(r['content'], 300)}" if r["content"] else "")
             for r in rows]
    return _cut_block("OpenSage memory relevant to this request:\n" + "\n".join(lines), max_chars)


def _cut_block(text: str, max_chars: int) -> str:
    """Whole lines of ``text`` that fit in ``max_chars`` (the first one cut if it alone does not)."""
    if len(text) <= max_chars:
        return text
    out, size = [], 0
    for line in text.split("\n"):
        if size + len(line) + (1 if out else 0) > max_chars:
            break
        size += len(line) + (1 if out else 0)
        out.append(line)
    return "\n".join(out) if out else text[: max_chars - 1] + "…"
