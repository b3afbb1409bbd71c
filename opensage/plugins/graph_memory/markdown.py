"""The Markdown mirror of graph memory: one file per lasting node, edited by people, imported back.

``export_markdown`` writes, into a folder, one ``<slug>-n<id>.md`` file per lasting node
(every node except the code graph of ``@memory-ingest``, whose nodes carry
``metadata.source = "ingest"`` and are rebuilt from the code anyway)::

    ---
    id: n12
    type: decision
    label: Use JWT for the API
    tags: [auth, api]
    ---
    We sign tokens with ES256 because ...

    ## Relations
    - fixes [[login-fails-after-restart-n9|login fails after restart]]

The YAML front matter holds id, type, label, tags and, when the node has them, its
validity fields (read-only here); the body is the node's content; the last
``## Relations`` section lists the node's outgoing edges as ``- <edge type> [[target]]``
(a target is another file's name without ``.md``, a node id such as ``n42``, or a node's
exact label; ``|text`` after it is only what editors show). The folder also gets
``.opensage-mirror.json``: what each file held at export/import (a hash per node), so
that import can tell who changed what.

``import_markdown`` applies a person's edits back: content, tags and outgoing relations
(added or removed) of existing nodes, and new nodes from files written by hand (front
matter ``type`` required; ``label`` defaults to the file name). For each file it
compares three states, the file, the database and the recorded base:

* file == database: nothing to do (this is why a second import changes nothing);
* file == base, database differs: the node changed in memory since export; the file is
  stale and reported as such (re-export to refresh it), memory is kept;
* database == base, file differs: the person's edit is applied;
* all three differ: a **conflict**; nothing is written for that file and it is reported.

Every file is parsed and every link resolved before anything is written; a file with an
error is reported and skipped. Files of the base that are gone are reported, not deleted
from memory (``@memory-forget`` removes nodes). All writes go through :class:`.graph.Graph`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opensage.errors import UsageError
from opensage.plugins.graph_memory.graph import Graph, Node, check_type, format_id, normalize_tags, parse_id

__all__ = ["export_markdown", "import_markdown", "node_tags", "set_node_tags", "is_lasting", "MIRROR_FILE"]

MIRROR_FILE = ".opensage-mirror.json"
RELATIONS_HEADING = "## Relations"
#: Bounds on what import reads (a person's notes folder, not a dump): files and bytes per file.
MAX_FILES = 20_000
MAX_FILE_BYTES = 1_000_000
_LINK_LINE = re.compile(r"^\s*[-*]\s+([a-z][a-z0-9_]{0,39})\s+\[\[([^\]\|]+)(?:\|[^\]]*)?\]\]\s*$")


# -- tags and lasting nodes ----------------------------------------------------------------
def node_tags(node: Node) -> list[str]:
    """The node's tags, sorted."""
    return sorted(node.tags)


def check_tags(tags: Any) -> list[str]:
    """Validate a tag list (a list, or one comma/space separated string): see :func:`.graph.normalize_tags`.

    :raises UsageError: not a list of words, or an invalid tag.
    """
    if tags is None:
        return []
    if not isinstance(tags, (list, str)):
        raise UsageError(f"tags must be a list of words, e.g. [auth, api]; got {type(tags).__name__}.")
    return normalize_tags([str(t) for t in tags] if isinstance(tags, list) else tags)


def set_node_tags(graph: Graph, node: Node, tags: list[str]) -> Node:
    """Replace the node's tags (validated); returns the node as stored."""
    graph.edit_tags(node.id, replace=check_tags(tags))
    return graph.get(node.id) or node


def is_lasting(node: Node) -> bool:
    """True for nodes a person curates: everything but the code graph built by ``@memory-ingest``."""
    return node.metadata.get("source") != "ingest"


# -- file format --------------------------------------------------------------------------
def slug(label: str, limit: int = 60) -> str:
    """A lowercase file-name slug of ``label`` (runs of non-word characters become ``-``), at
    most ``limit`` characters; ``"node"`` when nothing is left.
    """
    s = re.sub(r"[^\w]+", "-", label.lower(), flags=re.UNICODE).strip("-_")
    return (s[:limit].rstrip("-_") or "node")


def file_name(node: Node) -> str:
    """The Markdown file name of ``node``: ``<slug of its label>-n<id>.md``."""
    return f"{slug(node.label)}-{node.ref}.md"


@dataclass
class State:
    """What a file and the database are compared on: content, tags, outgoing relations."""

    content: str
    tags: list[str]
    relations: list[tuple[str, int]]

    def key(self) -> str:
        """A 32-hex-digit sha256 of the content, tags and relations (order-independent), to tell
        whether a file or the database changed since the last sync.
        """
        blob = json.dumps([self.content.strip(), sorted(self.tags), sorted(self.relations)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def db_state(graph: Graph, node: Node) -> State:
    """The :class:`State` of ``node`` as the database holds it (content, tags, outgoing edges)."""
    rels = [(e.type, e.dst) for e in graph.edges_of(node.id, "out")]
    return State(node.content, node_tags(node), rels)


def _iso(ts: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(graph: Graph, node: Node, names: dict[int, str]) -> str:
    """The Markdown text of one node (``names``: node id -> file stem of exported nodes)."""
    front: dict[str, Any] = {"id": node.ref, "type": node.type, "label": node.label, "tags": node_tags(node)}
    if node.valid_from is not None:
        front["valid_from"] = _iso(node.valid_from)
    if node.valid_to is not None:
        front["valid_to"] = _iso(node.valid_to)
    if node.superseded_by is not None:
        front["superseded_by"] = format_id(node.superseded_by)
    body = node.content.rstrip("\n")
    edges = sorted(graph.edges_of(node.id, "out"), key=lambda e: (e.type, e.dst))
    lines = []
    if edges:
        labels = graph.get_many(e.dst for e in edges)
        for e in edges:
            target = names.get(e.dst, format_id(e.dst))
            shown = labels[e.dst].label if e.dst in labels else target
            shown = re.sub(r"[\[\]\|\n]", " ", shown)[:80]
            lines.append(f"- {e.type} [[{target}|{shown}]]")
    text = "---\n" + yaml.safe_dump(front, allow_unicode=True, sort_keys=False, width=10_000) + "---\n"
    text += body + "\n"
    if lines:
        text += "\n" + RELATIONS_HEADING + "\n" + "\n".join(lines) + "\n"
    return text


@dataclass
class Parsed:
    path: Path
    front: dict[str, Any]
    content: str
    links: list[tuple[str, str]]  # (edge type, target text)
    tags: list[str] = field(default_factory=list)


def parse(path: Path, text: str) -> Parsed:
    """Split a mirror file into front matter, content and relation links.

    :raises UsageError: no front matter, invalid YAML, a bad tag or a malformed relation line.
    """
    m = re.match(r"\A---\r?\n(.*?)\r?\n---\r?\n?", text, re.S)
    if not m:
        raise UsageError(f"{path.name}: no front matter; start the file with a '---' block holding at least 'type:'.")
    try:
        front = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path.name}: front matter is not valid YAML ({str(exc).splitlines()[0]}).") from None
    if not isinstance(front, dict):
        raise UsageError(f"{path.name}: front matter must be key: value lines.")
    body = text[m.end():].replace("\r\n", "\n")
    links: list[tuple[str, str]] = []
    lines = body.split("\n")
    heads = [i for i, line in enumerate(lines) if line.strip() == RELATIONS_HEADING]
    if heads:
        start = heads[-1]
        for n, line in enumerate(lines[start + 1:], start + 2):
            if not line.strip():
                continue
            lm = _LINK_LINE.match(line)
            if not lm:
                raise UsageError(f"{path.name}: relation line {line.strip()!r} is not '- <edge type> [[target]]'.")
            links.append((lm.group(1), lm.group(2).strip()))
        body = "\n".join(lines[:start])
    try:
        tags = check_tags(front.get("tags"))
    except UsageError as exc:
        raise UsageError(f"{path.name}: {exc}") from None
    return Parsed(path, front, body.strip("\n"), links, tags)


# -- mirror base ----------------------------------------------------------------------------
def _load_base(folder: Path) -> dict[str, Any]:
    p = folder / MIRROR_FILE
    if not p.exists():
        return {"version": 1, "nodes": {}, "files": {}}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{p} is unreadable; re-export the folder (opensage memory export --markdown).") from None
    data.setdefault("nodes", {})
    data.setdefault("files", {})
    return data


def _save_base(folder: Path, base: dict[str, Any]) -> None:
    from opensage.store import atomic_write_text

    atomic_write_text(folder / MIRROR_FILE, json.dumps(base, indent=1, sort_keys=True) + "\n")


def _md_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.md") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    if len(files) > MAX_FILES:
        raise UsageError(f"{folder} holds {len(files)} Markdown files; at most {MAX_FILES} are imported.")
    return files


# -- export ---------------------------------------------------------------------------------
def export_markdown(graph: Graph, folder: Path, force: bool = False) -> dict[str, Any]:
    """Write one file per lasting node into ``folder`` (created) and the mirror base.

    :param force: overwrite files edited since the last export/import (otherwise refused).
    :returns: ``{"written": n, "removed": n, "folder": str}`` (removed = files of nodes no longer in memory).
    :raises UsageError: ``folder`` is a file, or holds edits not imported yet (without ``force``).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file; give a folder for the Markdown mirror.")
    base = _load_base(folder) if folder.exists() else {"version": 1, "nodes": {}, "files": {}}
    if folder.exists() and not force:
        pending = pending_edits(graph, folder, base)
        if pending:
            raise UsageError(
                f"{folder} has edits not imported yet ({', '.join(pending[:5])}); run "
                f"'opensage memory import --markdown {folder}' first, or pass --force to overwrite them.")
    rows = graph.db.conn.execute("SELECT id FROM nodes ORDER BY id").fetchall()
    nodes = [n for n in graph.get_many(r[0] for r in rows).values() if is_lasting(n)]
    nodes.sort(key=lambda n: n.id)
    # a node keeps the file it already has in this folder (also a file a person created)
    files = {}
    for n in nodes:
        old = base["nodes"].get(n.ref)
        files[n.id] = old["file"] if old and (folder / old["file"]).is_file() else file_name(n)
    names = {nid: Path(f).stem for nid, f in files.items()}
    from opensage.store import atomic_write_text

    new_base: dict[str, Any] = {"version": 1, "nodes": {}, "files": {
        f: ref for f, ref in base["files"].items() if parse_id(ref) in files and files[parse_id(ref)] == f}}
    for node in nodes:
        name = files[node.id]
        atomic_write_text(folder / name, render(graph, node, names))
        new_base["nodes"][node.ref] = {"file": name, "hash": db_state(graph, node).key()}
    removed = 0
    for ref, entry in base["nodes"].items():
        if ref not in new_base["nodes"]:
            p = folder / entry["file"]
            if p.exists():
                p.unlink()
                removed += 1
    folder.mkdir(parents=True, exist_ok=True)
    _save_base(folder, new_base)
    return {"written": len(nodes), "removed": removed, "folder": str(folder)}


def pending_edits(graph: Graph, folder: Path, base: dict[str, Any]) -> list[str]:
    """Names of mirror files whose content differs from what was last exported/imported."""
    out = []
    names = {entry["file"][:-3]: parse_id(ref) for ref, entry in base["nodes"].items()}
    for ref, entry in base["nodes"].items():
        p = folder / entry["file"]
        if not p.exists():
            continue
        try:
            parsed = parse(p, p.read_text(encoding="utf-8", errors="replace"))
            state = _file_state(graph, parsed, names, {})
        except UsageError:
            out.append(entry["file"])
            continue
        if state.key() != entry["hash"]:
            out.append(entry["file"])
    known = {e["file"] for e in base["nodes"].values()} | set(base["files"])
    out += [p.relative_to(folder).as_posix() for p in _md_files(folder) if p.relative_to(folder).as_posix() not in known]
    return out


# -- import ---------------------------------------------------------------------------------
def _resolve_link(graph: Graph, target: str, names: dict[str, int | None], fresh: dict[str, int]) -> int:
    if target in fresh:
        return fresh[target]
    if target in names and names[target] is not None:
        return names[target]  # type: ignore[return-value]
    return graph.resolve(target, "relation target").id


def _file_state(graph: Graph, parsed: Parsed, names, fresh) -> State:
    rels = []
    for etype, target in parsed.links:
        try:
            rels.append((etype, _resolve_link(graph, target, names, fresh)))
        except UsageError as exc:
            raise UsageError(f"{parsed.path.name}: [[{target}]]: {exc}") from None
    return State(parsed.content, parsed.tags, sorted(set(rels)))


def import_markdown(graph: Graph, folder: Path) -> dict[str, Any]:
    """Apply a person's edits in a mirror folder back to memory (see the module docstring).

    :returns: ``{"updated": [...], "created": [...], "unchanged": n, "stale": [...],
        "conflicts": [...], "errors": [...], "missing": [...]}`` — lists of ``"file: why"`` texts.
    :raises UsageError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give the folder written by 'opensage memory export --markdown'.")
    base = _load_base(folder)
    report: dict[str, Any] = {"updated": [], "created": [], "unchanged": 0, "stale": [], "conflicts": [],
                              "errors": [], "missing": []}
    parsed: list[Parsed] = []
    for p in _md_files(folder):
        rel = p.relative_to(folder).as_posix()
        try:
            if p.stat().st_size > MAX_FILE_BYTES:
                raise UsageError(f"{rel}: larger than {MAX_FILE_BYTES} bytes; split it.")
            parsed.append(parse(p, p.read_text(encoding="utf-8", errors="replace")))
        except UsageError as exc:
            report["errors"].append(str(exc))
    # file stem -> node id, for links between files (new files get theirs below)
    by_file = {entry["file"]: parse_id(ref) for ref, entry in base["nodes"].items()}
    by_file.update({f: parse_id(ref) for f, ref in base["files"].items()})
    names: dict[str, int | None] = {}
    for item in parsed:
        rel = item.path.relative_to(folder).as_posix()
        nid = parse_id(str(item.front.get("id") or "")) or by_file.get(rel)
        names[item.path.stem] = nid
    present = {p.path.relative_to(folder).as_posix() for p in parsed}
    for ref, entry in sorted(base["nodes"].items()):
        if entry["file"] not in present and not (folder / entry["file"]).exists():
            report["missing"].append(f"{entry['file']}: file removed; {ref} stays in memory (use @memory-forget to remove it)")

    # phase 1: plan every file (no writes)
    plans: list[tuple[str, Parsed, Node | None, str]] = []  # (action, parsed, node, why)
    new_files: list[Parsed] = []
    for item in parsed:
        rel = item.path.relative_to(folder).as_posix()
        nid = names[item.path.stem]
        try:
            if nid is None:
                ntype = check_type(str(item.front.get("type") or ""), f"{rel}: node type")
                label = str(item.front.get("label") or item.path.stem).strip()
                if not label:
                    raise UsageError(f"{rel}: empty label.")
                item.front["type"], item.front["label"] = ntype, label
                new_files.append(item)
                continue
            node = graph.get(nid)
            if node is None:
                report["conflicts"].append(f"{rel}: {format_id(nid)} was removed from memory since export; "
                                           "the file is kept (delete its 'id:' line to add it again)")
                continue
            for key in ("type", "label"):
                if key in item.front and str(item.front[key]) != getattr(node, key):
                    raise UsageError(f"{rel}: {key} changed to {item.front[key]!r} (is {getattr(node, key)!r}); "
                                     f"{key} cannot be changed from the mirror, undo it")
            plans.append(("existing", item, node, rel))
        except UsageError as exc:
            report["errors"].append(str(exc))
    fresh_ids: dict[str, int] = {}
    taken = {(n.front["type"], n.front["label"]) for n in new_files}
    if len(taken) != len(new_files):
        report["errors"].append("two new files name the same type and label; give one of them another label")
        new_files = []
    ok_new: list[Parsed] = []
    for item in new_files:
        row = graph.db.conn.execute("SELECT id FROM nodes WHERE type=? AND label=?",
                                    (item.front["type"], item.front["label"])).fetchone()
        if row is not None:
            report["conflicts"].append(f"{item.path.name}: a {item.front['type']} node {item.front['label']!r} "
                                       f"already exists ({format_id(row[0])}); give the file another label")
            continue
        ok_new.append(item)
    # links of every file must resolve (new files may link to each other); placeholder ids for new files
    placeholder = {item.path.stem: -(i + 1) for i, item in enumerate(ok_new)}
    states: dict[Path, State] = {}
    for kind, item, _node, _rel in plans:
        try:
            states[item.path] = _file_state(graph, item, names, placeholder)
        except UsageError as exc:
            report["errors"].append(str(exc))
    for item in ok_new:
        try:
            states[item.path] = _file_state(graph, item, names, placeholder)
        except UsageError as exc:
            report["errors"].append(str(exc))

    # phase 2: apply
    def real(state: State) -> State:
        inv = {v: k for k, v in placeholder.items()}
        return State(state.content, state.tags,
                     sorted({(t, fresh_ids[inv[d]] if d < 0 else d) for t, d in state.relations}))

    for item in ok_new:
        if item.path not in states:
            continue
        # dedupe=False: a file a person wrote is its own node, not folded into a look-alike
        node, _created = graph.upsert_node(item.front["type"], item.front["label"], item.content,
                                           {"source": "markdown"}, tags=item.tags, source="markdown", dedupe=False)
        fresh_ids[item.path.stem] = node.id
        rel = item.path.relative_to(folder).as_posix()
        base["files"][rel] = node.ref
        report["created"].append(f"{rel}: {node.ref} ({node.type}) {node.label}")
    for item in ok_new:
        if item.path.stem not in fresh_ids:
            continue
        node = graph.get(fresh_ids[item.path.stem])
        _apply_relations(graph, node, real(states[item.path]).relations)
        base["nodes"][node.ref] = {"file": item.path.relative_to(folder).as_posix(),
                                   "hash": db_state(graph, graph.get(node.id)).key()}
    for _kind, item, node, rel in plans:
        if item.path not in states:
            continue
        want = real(states[item.path])
        have = db_state(graph, node)
        entry = base["nodes"].get(node.ref)
        if want.key() == have.key():
            report["unchanged"] += 1
            if entry is None or entry["hash"] != have.key():
                base["nodes"][node.ref] = {"file": rel, "hash": have.key()}
            continue
        if entry is not None and want.key() == entry["hash"]:
            report["stale"].append(f"{rel}: {node.ref} changed in memory since export; memory kept "
                                   "(re-export to refresh the file)")
            continue
        if entry is None or have.key() != entry["hash"]:
            report["conflicts"].append(f"{rel}: {node.ref} changed both in memory and in the file; nothing applied. "
                                       "Merge by hand: re-export into another folder, copy your edit over, import")
            continue
        changed = []
        if want.content.strip() != have.content.strip():
            node = graph.update_node(node.id, content=want.content)
            changed.append("content")
        if sorted(want.tags) != sorted(have.tags):
            node = set_node_tags(graph, node, want.tags)
            changed.append("tags")
        if sorted(want.relations) != sorted(have.relations):
            _apply_relations(graph, node, want.relations)
            changed.append("relations")
        base["nodes"][node.ref] = {"file": rel, "hash": db_state(graph, graph.get(node.id)).key()}
        report["updated"].append(f"{rel}: {node.ref} {', '.join(changed)}")
    _save_base(folder, base)
    return report


def _apply_relations(graph: Graph, node: Node, want: list[tuple[str, int]]) -> None:
    have = {(e.type, e.dst) for e in graph.edges_of(node.id, "out")}
    target = set(want)
    for etype, dst in sorted(target - have):
        graph.upsert_edge(node.id, dst, etype, 0.5, {"source": "markdown"})
    for etype, dst in sorted(have - target):
        graph.delete_edge(node.id, dst, etype)
