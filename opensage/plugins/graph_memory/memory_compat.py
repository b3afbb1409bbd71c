"""The MCP reference memory server's tool set, over our graph.

Users of ``@modelcontextprotocol/server-memory`` can point their client at
``opensage mcp`` and keep their prompts: the nine tools below take the same argument
names and return the same result shapes, and ``opensage memory import/export`` reads
and writes the same JSONL file format.

Mapping (it round-trips through :func:`export_jsonl` / :func:`import_jsonl`):

* an **entity** ``{name, entityType, observations[]}`` is a node of type ``entity``
  whose label is the name; ``metadata.entityType`` keeps the entity type verbatim,
  ``metadata.observations`` keeps the observation list, and the node's ``content`` is
  the observations joined by newlines, so ``@memory-query`` finds them;
* every other node of the graph is visible as an entity too: its ``entityType`` is
  its node type and its observations are ``[content]`` (or ``[]``); adding an
  observation to it turns its content into that list;
* a **relation** ``{from, to, relationType}`` is an edge whose ``metadata.relationType``
  keeps the relation type verbatim; the edge type is the relation type turned into a
  lowercase snake-case word (``worksAt`` and ``works at`` -> ``works_at``; when two
  different relation types between the same nodes map to the same word, the second
  gets a short hash suffix).

Behaviour follows the reference server (``src/memory/index.ts`` in
modelcontextprotocol/servers): ``create_entities`` skips names that exist (also within
the batch), ``create_relations`` skips duplicates and fails when an endpoint is
missing, ``add_observations`` fails for a missing entity and returns only the
observations it added, ``delete_*`` ignore what is not there, ``search_nodes`` is a
case-insensitive substring match over name, type and observations, and search/open
return every relation touching a returned entity. Unlike the reference, every batch
is one SQLite transaction: a failing batch writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opensage.errors import NotFoundError, UsageError
from opensage.store import in_chunks

__all__ = [
    "MemoryCompat", "COMPAT_TOOLS", "CompatTool", "relation_edge_type", "export_jsonl", "import_jsonl",
]

ENTITY_NODE_TYPE = "entity"
#: Node type of a name used by a relation before (or without) an entity of that name.
REF_NODE_TYPE = "entity_ref"


# -- argument models (their JSON Schemas are the MCP input schemas) ----------------------
class _Args(BaseModel):
    # unknown keys are dropped, as the reference's zod objects do
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class EntityIn(_Args):
    name: str = Field(description="The name of the entity")
    entityType: str = Field(description="The type of the entity")
    observations: list[str] = Field(description="An array of observation contents associated with the entity")


class RelationIn(_Args):
    from_: str = Field(alias="from", description="The name of the entity where the relation starts")
    to: str = Field(description="The name of the entity where the relation ends")
    relationType: str = Field(description="The type of the relation")


class ObservationAdd(_Args):
    entityName: str = Field(description="The name of the entity to add the observations to")
    contents: list[str] = Field(description="An array of observation contents to add")


class ObservationDelete(_Args):
    entityName: str = Field(description="The name of the entity containing the observations")
    observations: list[str] = Field(description="An array of observations to delete")


class CreateEntitiesArgs(_Args):
    entities: list[EntityIn]


class CreateRelationsArgs(_Args):
    relations: list[RelationIn]


class AddObservationsArgs(_Args):
    observations: list[ObservationAdd]


class DeleteEntitiesArgs(_Args):
    entityNames: list[str] = Field(description="An array of entity names to delete")


class DeleteObservationsArgs(_Args):
    deletions: list[ObservationDelete]


class DeleteRelationsArgs(_Args):
    relations: list[RelationIn] = Field(description="An array of relations to delete")


class ReadGraphArgs(_Args):
    pass


class SearchNodesArgs(_Args):
    query: str = Field(max_length=2048, description="The search query to match against entity names, types, and observation content")


class OpenNodesArgs(_Args):
    names: list[str] = Field(description="An array of entity names to retrieve")


# -- result models (their JSON Schemas are the MCP output schemas) ------------------------
class _EntitiesOut(BaseModel):
    entities: list[EntityIn]


class _RelationsOut(BaseModel):
    relations: list[RelationIn]


class _AddedObservations(BaseModel):
    entityName: str
    addedObservations: list[str]


class _ResultsOut(BaseModel):
    results: list[_AddedObservations]


class _StatusOut(BaseModel):
    success: bool
    message: str


class _GraphOut(BaseModel):
    entities: list[EntityIn]
    relations: list[RelationIn]


# -- the mapping ------------------------------------------------------------------------
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def relation_edge_type(relation_type: str) -> str:
    """The edge type (a lowercase word, at most 40 chars) for a reference ``relationType``.

    ``"worksAt"``, ``"works at"`` and ``"Works-At"`` all give ``"works_at"``; a type with
    no letters gives ``"related_to"``.
    """
    text = _CAMEL_BOUNDARY.sub("_", relation_type.strip())
    word = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not word:
        return "related_to"
    if not word[0].isalpha():
        word = "r_" + word
    return word[:40].rstrip("_")


def _hashed(base: str, relation_type: str) -> str:
    digest = hashlib.sha1(relation_type.encode("utf-8")).hexdigest()[:8]
    return f"{base[:31].rstrip('_')}_{digest}"


class MemoryCompat:
    """The reference memory server's operations over a :class:`~opensage.plugins.graph_memory.graph.Graph`.

    Every method returns exactly what the reference server's tool puts in
    ``structuredContent`` and raises :class:`NotFoundError` where the reference throws.
    Each write runs in one ``BEGIN IMMEDIATE`` transaction, its checks included, so a
    concurrent client deleting or re-creating the same entities cannot slip in between
    a check and a write; each read runs in one snapshot (a deferred transaction).
    """

    def __init__(self, graph) -> None:
        self.graph = graph
        self.db = graph.db

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """One consistent snapshot for several SELECTs (WAL: writers are not blocked)."""
        conn = self.db.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # -- reading ------------------------------------------------------------------
    @staticmethod
    def _observations(row) -> list[str]:
        meta = json.loads(row["metadata"] or "{}")
        obs = meta.get("observations")
        if isinstance(obs, list):
            return [str(o) for o in obs]
        return [row["content"]] if row["content"] else []

    def _entity(self, row) -> dict[str, Any]:
        meta = json.loads(row["metadata"] or "{}")
        etype = meta.get("entityType") if isinstance(meta.get("entityType"), str) else row["type"]
        return {"name": row["label"], "entityType": etype, "observations": self._observations(row)}

    @staticmethod
    def _relation(row) -> dict[str, Any]:
        meta = json.loads(row["metadata"] or "{}")
        rtype = meta.get("relationType") if isinstance(meta.get("relationType"), str) else row["type"]
        return {"from": row["src_label"], "to": row["dst_label"], "relationType": rtype}

    def _node_row(self, name: str, placeholders: bool = False):
        """The node named ``name``: an ``entity`` node first, else the oldest node with that
        label; a placeholder (:data:`REF_NODE_TYPE`) only when ``placeholders`` is true and
        nothing else has the name."""
        if placeholders:
            return self.db.conn.execute(
                "SELECT * FROM nodes WHERE label=? ORDER BY (type = ?), (type != ?), id LIMIT 1",
                (name, REF_NODE_TYPE, ENTITY_NODE_TYPE)).fetchone()
        return self.db.conn.execute(
            "SELECT * FROM nodes WHERE label=? AND type != ? ORDER BY (type != ?), id LIMIT 1",
            (name, REF_NODE_TYPE, ENTITY_NODE_TYPE)).fetchone()

    def _relations_sql(self, where: str = "", params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        rows = self.db.conn.execute(
            "SELECT e.*, s.label AS src_label, d.label AS dst_label FROM edges e"
            " JOIN nodes s ON s.id = e.src JOIN nodes d ON d.id = e.dst" + where + " ORDER BY e.id",
            tuple(params),
        ).fetchall()
        return [self._relation(r) for r in rows]

    def _graph_for_ids(self, ids: list[int]) -> dict[str, Any]:
        if not ids:
            return {"entities": [], "relations": []}
        rows = []
        for chunk, marks in in_chunks(ids):
            rows += self.db.conn.execute(
                f"SELECT * FROM nodes WHERE id IN ({marks}) ORDER BY id", chunk
            ).fetchall()
        rows.sort(key=lambda r: r["id"])
        relations: list[dict[str, Any]] = []
        seen: set[int] = set()
        for chunk, marks in in_chunks(ids):
            for r in self.db.conn.execute(
                "SELECT e.*, s.label AS src_label, d.label AS dst_label FROM edges e"
                " JOIN nodes s ON s.id = e.src JOIN nodes d ON d.id = e.dst"
                f" WHERE e.src IN ({marks}) OR e.dst IN ({marks}) ORDER BY e.id", (*chunk, *chunk)
            ):
                if r["id"] not in seen:
                    seen.add(r["id"])
                    relations.append((r["id"], self._relation(r)))
        relations.sort(key=lambda t: t[0])
        return {"entities": [self._entity(r) for r in rows], "relations": [rel for _, rel in relations]}

    def read_graph(self) -> dict[str, Any]:
        """``{entities: [...], relations: [...]}`` for the whole graph (placeholders are
        not entities, but relations to them are listed, as the reference lists relations
        to names it has no entity for)."""
        with self._reading() as conn:
            rows = conn.execute("SELECT * FROM nodes WHERE type != ? ORDER BY id", (REF_NODE_TYPE,)).fetchall()
            return {"entities": [self._entity(r) for r in rows], "relations": self._relations_sql()}

    def search_nodes(self, query: str) -> dict[str, Any]:
        """Entities whose name, type or an observation contains ``query`` (case-insensitive:
        both sides lowercased with Unicode's full mapping, as JavaScript's
        ``toLowerCase`` does, so ``K`` (Kelvin sign) finds ``k`` and ``İ`` finds ``i̇``),
        with every relation touching one of them. Unranked, like the reference."""
        q = query.lower()
        ids = []
        with self._reading() as conn:
            for row in conn.execute("SELECT id, type, label, content, metadata FROM nodes WHERE type != ? ORDER BY id",
                                    (REF_NODE_TYPE,)):
                # cheap pre-filter: the raw columns hold the name, the observations (content)
                # and the entity type (in the metadata JSON, verbatim unless it has escapes)
                meta = row["metadata"]
                if q not in row["label"].lower() and q not in row["content"].lower() \
                        and q not in row["type"].lower() and q not in meta.lower() and "\\" not in meta:
                    continue
                ent = self._entity(row)
                if (q in ent["name"].lower() or q in ent["entityType"].lower()
                        or any(q in o.lower() for o in ent["observations"])):
                    ids.append(row["id"])
            return self._graph_for_ids(ids)

    def open_nodes(self, names: list[str]) -> dict[str, Any]:
        """The named entities (unknown names are skipped) with every relation touching them."""
        with self._reading():
            ids = []
            for name in dict.fromkeys(names):
                row = self._node_row(name)
                if row is not None:
                    ids.append(row["id"])
            return self._graph_for_ids(ids)

    # -- writing ------------------------------------------------------------------
    def _insert_node(self, conn, type_: str, name: str, observations: list[str], metadata: dict[str, Any]) -> int:
        """A new node, written directly: the reference accepts empty and blank names,
        which :meth:`Graph.upsert_node` refuses for nodes of its own."""
        from opensage.plugins.graph_memory.graph import insert_node_row

        return insert_node_row(conn, type=type_, label=name, content="\n".join(observations), metadata=metadata,
                               dated=False)

    def _delete_node(self, conn, node_id: int) -> None:
        from opensage.plugins.graph_memory.graph import delete_node_row

        delete_node_row(conn, node_id)

    def _drop_unused_placeholders(self, conn) -> None:
        for row in conn.execute(
            "SELECT id FROM nodes WHERE type=? AND NOT EXISTS (SELECT 1 FROM edges WHERE src=nodes.id OR dst=nodes.id)",
            (REF_NODE_TYPE,),
        ).fetchall():
            self._delete_node(conn, row["id"])

    def _create_entity(self, conn, ent: dict[str, Any]) -> dict[str, Any] | None:
        """Create one entity unless its name exists; a placeholder of that name becomes it
        (its relations move to the new node, which is the newest, as in the reference)."""
        if self._node_row(ent["name"]) is not None:
            return None
        obs = [str(o) for o in ent.get("observations", [])]
        new_id = self._insert_node(conn, ENTITY_NODE_TYPE, ent["name"], obs,
                                   {"entityType": ent["entityType"], "observations": obs})
        ref = conn.execute("SELECT id FROM nodes WHERE type=? AND label=?", (REF_NODE_TYPE, ent["name"])).fetchone()
        if ref is not None:
            from opensage.plugins.graph_memory.graph import move_edges

            move_edges(conn, ref["id"], new_id)
            self._delete_node(conn, ref["id"])
        return {"name": ent["name"], "entityType": ent["entityType"], "observations": obs}

    def create_entities(self, entities: list[dict[str, Any]]) -> dict[str, Any]:
        """Create entities whose names are new; returns ``{entities: [created...]}``.

        A second entity with the same name in one call is skipped (the reference stores
        both; a deliberate difference, see docs/memory-server.md)."""
        created = []
        with self.db.transaction() as conn:
            for ent in entities:
                made = self._create_entity(conn, ent)
                if made is not None:
                    created.append(made)
        return {"entities": created}

    def _endpoint(self, conn, name: str) -> int:
        """The node id for a relation endpoint; a placeholder node when nothing has the name."""
        row = self._node_row(name, placeholders=True)
        if row is not None:
            return row["id"]
        return self._insert_node(conn, REF_NODE_TYPE, name, [], {"note": "named by a relation; no entity yet"})

    def _find_edge(self, src: int, dst: int, relation_type: str):
        for row in self.db.conn.execute("SELECT * FROM edges WHERE src=? AND dst=?", (src, dst)):
            meta = json.loads(row["metadata"] or "{}")
            rtype = meta.get("relationType") if isinstance(meta.get("relationType"), str) else row["type"]
            if rtype == relation_type:
                return row
        return None

    def create_relations(self, relations: list[dict[str, Any]]) -> dict[str, Any]:
        """Create relations that do not exist yet; returns ``{relations: [created...]}``.

        Like the reference, an endpoint needs no entity: the name is kept on a
        placeholder node (type :data:`REF_NODE_TYPE`, not listed as an entity) that an
        entity created later with that name replaces. A relation repeated within one
        call is created once (deliberate difference)."""
        created = []
        with self.db.transaction() as conn:
            for rel in relations:
                src, dst = self._endpoint(conn, rel["from"]), self._endpoint(conn, rel["to"])
                if self._find_edge(src, dst, rel["relationType"]) is not None:
                    continue
                etype = relation_edge_type(rel["relationType"])
                if conn.execute("SELECT 1 FROM edges WHERE src=? AND type=? AND dst=?", (src, etype, dst)).fetchone():
                    etype = _hashed(etype, rel["relationType"])
                self.graph.upsert_edge(src, dst, etype, 0.5, {"relationType": rel["relationType"]})
                created.append({"from": rel["from"], "to": rel["to"], "relationType": rel["relationType"]})
        return {"relations": created}

    def _set_observations(self, conn, row, observations: list[str]) -> None:
        meta = json.loads(row["metadata"] or "{}")
        meta["observations"] = observations
        content = "\n".join(observations)
        from opensage.plugins.graph_memory.graph import update_node_row

        update_node_row(conn, row["id"], label=row["label"], content=content, metadata=meta)

    def add_observations(self, observations: list[dict[str, Any]]) -> dict[str, Any]:
        """Append new observations; returns ``{results: [{entityName, addedObservations}]}``.

        :raises NotFoundError: an entity is missing (nothing is written).
        """
        results = []
        with self.db.transaction() as conn:
            for o in observations:
                row = self._node_row(o["entityName"])
                if row is None:
                    raise NotFoundError(f"Entity with name {o['entityName']} not found")
                current = self._observations(row)
                added = []
                for content in o["contents"]:
                    if content not in current and content not in added:
                        added.append(content)
                if added:
                    self._set_observations(conn, row, current + added)
                results.append({"entityName": o["entityName"], "addedObservations": added})
        return {"results": results}

    def delete_entities(self, names: list[str]) -> dict[str, Any]:
        """Delete entities and every relation touching them; returns ``{success, message}``."""
        deleted, not_found = [], []
        with self.db.transaction() as conn:
            for name in names:
                found = False
                # the reference deletes every entity with the name, and every relation naming it
                for row in conn.execute("SELECT id, type FROM nodes WHERE label=?", (name,)).fetchall():
                    self._delete_node(conn, row["id"])
                    found = found or row["type"] != REF_NODE_TYPE
                (deleted if found else not_found).append(name)
            self._drop_unused_placeholders(conn)
        if not not_found:
            message = "Entities deleted successfully"
        else:
            message = f"Deleted {len(deleted)} of {len(names)} entities. Not found: {', '.join(not_found)}"
        return {"success": True, "message": message}

    def delete_observations(self, deletions: list[dict[str, Any]]) -> dict[str, Any]:
        """Remove the given observations; missing entities are reported, not fatal."""
        deleted_count, missing, requested = 0, [], 0
        with self.db.transaction() as conn:
            for d in deletions:
                requested += len(d["observations"])
                row = self._node_row(d["entityName"])
                if row is None:
                    missing.append(d["entityName"])
                    continue
                current = self._observations(row)
                kept = [o for o in current if o not in d["observations"]]
                if len(kept) != len(current):
                    deleted_count += len(current) - len(kept)
                    self._set_observations(conn, row, kept)
        if deleted_count == requested:
            message = "Observations deleted successfully"
        else:
            message = f"Deleted {deleted_count} of {requested} observations."
            if missing:
                message += f" Entities not found: {', '.join(missing)}"
        return {"success": True, "message": message}

    def delete_relations(self, relations: list[dict[str, Any]]) -> dict[str, Any]:
        """Delete the given relations; returns ``{success, message}``."""
        from opensage.plugins.graph_memory.graph import delete_edge_row

        count = 0
        with self.db.transaction() as conn:
            for rel in relations:
                src = self._node_row(rel["from"], placeholders=True)
                dst = self._node_row(rel["to"], placeholders=True)
                if src is None or dst is None:
                    continue
                row = self._find_edge(src["id"], dst["id"], rel["relationType"])
                if row is not None:
                    delete_edge_row(conn, row["id"])
                    count += 1
            self._drop_unused_placeholders(conn)
        if count == len(relations):
            message = "Relations deleted successfully"
        else:
            message = f"Deleted {count} of {len(relations)} relations. The rest matched nothing."
        return {"success": True, "message": message}


# -- MCP tool table --------------------------------------------------------------------
_WRITE = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": False}
_DELETE = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True, "openWorldHint": False}
_READ = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}


class CompatTool:
    """One reference-server tool: name, title, description, argument and result models,
    MCP annotations (the reference's hints), how to call it."""

    def __init__(self, name: str, title: str, description: str, args: type[BaseModel], output: type[BaseModel],
                 annotations: dict[str, bool], call: Callable[[MemoryCompat, Any], dict[str, Any]],
                 text_is_message: bool = False) -> None:
        self.name = name
        self.title = title
        self.description = description
        self.args = args
        self.output = output
        self.annotations = annotations
        self.call = call
        #: delete_* tools answer with their message as text, the others with the JSON
        self.text_is_message = text_is_message

    def input_schema(self) -> dict[str, Any]:
        """The tool's arguments as JSON Schema (camelCase names, as the reference server's)."""
        return self.args.model_json_schema(by_alias=True)

    def output_schema(self) -> dict[str, Any]:
        """The tool's structured result as JSON Schema (camelCase names)."""
        return self.output.model_json_schema(by_alias=True)

    def bind(self, arguments: dict[str, Any] | None) -> BaseModel:
        """Validate arguments. Raises UsageError naming the field (e.g. ``entities[0].name``)."""
        try:
            return self.args.model_validate(arguments or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ())).lstrip(".")
            raise UsageError(f"{self.name}: argument '{loc or '?'}' is invalid: {err.get('msg')}.") from None

    def run(self, compat: MemoryCompat, arguments: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """``(text, structured)`` as the reference server returns them."""
        data = self.call(compat, self.bind(arguments))
        text = data["message"] if self.text_is_message else json.dumps(
            data if set(data) == {"entities", "relations"} else next(iter(data.values())), indent=2, ensure_ascii=False
        )
        return text, data


def _dump(items):
    return [i.model_dump(by_alias=True) for i in items]


COMPAT_TOOLS: dict[str, CompatTool] = {t.name: t for t in [
    CompatTool("create_entities", "Create Entities", "Create multiple new entities in the knowledge graph",
               CreateEntitiesArgs, _EntitiesOut, _WRITE, lambda c, a: c.create_entities(_dump(a.entities))),
    CompatTool("create_relations", "Create Relations", "Create multiple new relations between entities in the "
               "knowledge graph. Relations should be in active voice", CreateRelationsArgs, _RelationsOut, _WRITE,
               lambda c, a: c.create_relations(_dump(a.relations))),
    CompatTool("add_observations", "Add Observations", "Add new observations to existing entities in the knowledge graph",
               AddObservationsArgs, _ResultsOut, _WRITE, lambda c, a: c.add_observations(_dump(a.observations))),
    CompatTool("delete_entities", "Delete Entities", "Delete multiple entities and their associated relations from "
               "the knowledge graph", DeleteEntitiesArgs, _StatusOut, _DELETE,
               lambda c, a: c.delete_entities(a.entityNames), text_is_message=True),
    CompatTool("delete_observations", "Delete Observations", "Delete specific observations from entities in the "
               "knowledge graph", DeleteObservationsArgs, _StatusOut, _DELETE,
               lambda c, a: c.delete_observations(_dump(a.deletions)), text_is_message=True),
    CompatTool("delete_relations", "Delete Relations", "Delete multiple relations from the knowledge graph",
               DeleteRelationsArgs, _StatusOut, _DELETE,
               lambda c, a: c.delete_relations(_dump(a.relations)), text_is_message=True),
    CompatTool("read_graph", "Read Graph", "Read the entire knowledge graph", ReadGraphArgs, _GraphOut, _READ,
               lambda c, a: c.read_graph()),
    CompatTool("search_nodes", "Search Nodes", "Search for nodes in the knowledge graph based on a query",
               SearchNodesArgs, _GraphOut, _READ, lambda c, a: c.search_nodes(a.query)),
    CompatTool("open_nodes", "Open Nodes", "Open specific nodes in the knowledge graph by their names",
               OpenNodesArgs, _GraphOut, _READ, lambda c, a: c.open_nodes(a.names)),
]}


def compat_for(host) -> MemoryCompat:
    """The host's :class:`MemoryCompat` (one per host)."""
    from opensage.plugins.graph_memory.graph import graph_for

    return host.service(MemoryCompat, lambda h: MemoryCompat(graph_for(h)))


# -- JSONL import / export -------------------------------------------------------------
def export_jsonl(compat: MemoryCompat) -> str:
    """The whole graph in the reference server's ``memory.jsonl`` format (entities, then relations)."""
    graph = compat.read_graph()
    lines = [json.dumps({"type": "entity", **e}, ensure_ascii=False) for e in graph["entities"]]
    lines += [json.dumps({"type": "relation", **r}, ensure_ascii=False) for r in graph["relations"]]
    return "".join(line + "\n" for line in lines)


def import_jsonl(compat: MemoryCompat, text: str, source: str = "<stdin>") -> dict[str, int]:
    """Load a reference ``memory.jsonl``: new entities are created, observations of
    existing ones are merged, relations are added unless present.

    Read as the reference reads it: lines are split on ``\\n`` only (U+2028, U+2029 and
    U+0085 inside strings are text, not line breaks), blank lines and lines whose
    ``type`` is neither ``entity`` nor ``relation`` are skipped (counted in ``skipped``),
    unknown keys are ignored, empty names are kept, and relations may name entities
    that do not exist. Two entity lines with the same name are merged (observations of
    both, in order, without repeats; the first line's ``entityType`` wins); the
    reference would keep both.

    :returns: counts ``{entities, observations, relations, skipped}`` of what was added.
    :raises UsageError: a line is not JSON, or an entity/relation lacks a field or has
        one of the wrong type (names the line number); nothing is written then.
    """
    from opensage.untrusted import depth_exceeds, scrub

    entities: dict[str, dict[str, Any]] = {}
    relations: list[dict[str, Any]] = []
    skipped = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except RecursionError:
            raise UsageError(f"{source}:{lineno}: nested too deeply; each line must be one entity or relation.") from None
        except ValueError as exc:
            raise UsageError(f"{source}:{lineno}: not JSON ({exc.msg}); each line must be one JSON object.") from None
        if not isinstance(item, dict) or item.get("type") not in ("entity", "relation"):
            skipped += 1
            continue
        if depth_exceeds(item):
            raise UsageError(f"{source}:{lineno}: nested too deeply; each line must be one entity or relation.")
        item = scrub(item)
        model = EntityIn if item["type"] == "entity" else RelationIn
        try:
            parsed = model.model_validate({k: v for k, v in item.items() if k != "type"}).model_dump(by_alias=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err.get("loc", ()))
            raise UsageError(f"{source}:{lineno}: {item['type']} field '{field}' is invalid: {err.get('msg')}.") from None
        if item["type"] == "relation":
            relations.append(parsed)
        elif parsed["name"] in entities:
            merged = entities[parsed["name"]]["observations"]
            merged.extend(o for o in parsed["observations"] if o not in merged)
        else:
            entities[parsed["name"]] = parsed
    with compat.db.transaction():
        new = compat.create_entities(list(entities.values()))["entities"]
        new_names = {e["name"] for e in new}
        merge = [{"entityName": e["name"], "contents": e["observations"]} for e in entities.values()
                 if e["name"] not in new_names]
        added = compat.add_observations(merge)["results"] if merge else []
        rels = compat.create_relations(relations)["relations"] if relations else []
    return {
        "entities": len(new),
        "observations": sum(len(e["observations"]) for e in new) + sum(len(r["addedObservations"]) for r in added),
        "relations": len(rels),
        "skipped": skipped,
    }
