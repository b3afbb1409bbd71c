"""``@memory-add-node``, ``@memory-add-edge``, ``@memory-tag``, ``@memory-supersede``, ``@memory-forget``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from opensage.plugins.graph_memory.graph import EDGE_TYPES, NODE_TYPES, graph_for
from opensage.types import ArgModel, Command, CommandContext, CommandResult


class AddNodeArgs(ArgModel):
    type: str = Field(description=f"node type, a lowercase word: {', '.join(NODE_TYPES[:8])}, ...")
    label: str = Field(min_length=1, description="short unique name within the type, e.g. AuthService.authenticate")
    content: str = Field("", description="free text: what it is, what we know")
    metadata: dict[str, Any] = Field(default_factory=dict, description="JSON object merged into the node's metadata")
    tags: list[str] | None = Field(None, max_length=32,
                                   description='tags, e.g. ["auth","db"]; replace the node\'s tags (omit to keep them)')
    supersedes: str | None = Field(None, description="id (n12) or exact label of a node this one replaces")


def add_node(args: AddNodeArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-add-node``: add a node, or merge it into an existing one (same type and
    label, or a near-duplicate), optionally superseding another.

    :raises UsageError: bad type, tags or metadata.
    :raises NotFoundError: ``supersedes`` names no node.
    """
    graph = graph_for(ctx.host)
    old = graph.resolve(args.supersedes, "supersedes node") if args.supersedes else None
    session = ctx.session
    node, created = graph.upsert_node(args.type, args.label, args.content, args.metadata, tags=args.tags,
                                      session_id=session.id if session else None,
                                      source=session.source if session else None,
                                      supersedes=old.id if old else None)
    if node.merged:
        text = (f"merged into {node.ref} ({node.type}) {node.label}: near-duplicate "
                f"(ratio {node.merged['ratio']:g}); {args.label!r} kept as a merged label")
    else:
        text = f"{'added' if created else 'updated'} {node.ref} ({node.type}) {node.label}"
    if node.tags:
        text += f"  tags: {', '.join(node.tags)}"
    if old is not None:
        text += f"\n{old.ref} {old.label} is now superseded by {node.ref}"
    return CommandResult(text=text, data={"id": node.ref, "created": created, "node": node.as_dict()})


class TagArgs(ArgModel):
    node: str = Field(description="node id (n12) or exact label")
    add: list[str] = Field(default_factory=list, max_length=32, description='tags to add, e.g. ["auth"]')
    remove: list[str] = Field(default_factory=list, max_length=32, description="tags to remove")
    set: list[str] | None = Field(None, max_length=32, description="replace all tags with these (before add/remove)")


def tag_node(args: TagArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-tag``: show, add, remove or set a node's tags.

    :raises UsageError: a bad tag name or too many tags.
    :raises NotFoundError: no such node.
    """
    graph = graph_for(ctx.host)
    node = graph.resolve(args.node)
    if not args.add and not args.remove and args.set is None:
        return CommandResult(text=f"{node.ref} {node.label} tags: {', '.join(node.tags) or '(none)'}",
                             data={"id": node.ref, "tags": node.tags})
    tags = graph.edit_tags(node.id, args.add, args.remove, args.set)
    return CommandResult(text=f"{node.ref} {node.label} tags: {', '.join(tags) or '(none)'}",
                         data={"id": node.ref, "tags": tags})


class SupersedeArgs(ArgModel):
    old: str = Field(description="the node that no longer holds: id (n12) or exact label")
    new: str = Field(description="the node that replaces it: id (n13) or exact label")


def supersede(args: SupersedeArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-supersede``: mark node ``old`` as replaced by ``new`` (kept for ``asOf`` queries).

    :raises NotFoundError: either node does not exist.
    :raises UsageError: ``old`` and ``new`` are the same node, a cycle, or an ambiguous label.
    """
    graph = graph_for(ctx.host)
    old = graph.resolve(args.old, "old node")
    new = graph.resolve(args.new, "new node")
    graph.supersede(old.id, new.id)
    old = graph.get(old.id)
    return CommandResult(
        text=(f"{old.ref} {old.label} is superseded by {new.ref} {new.label}; queries show it only with "
              "includeSuperseded=true or asOf=<an earlier time>"),
        data={"old": old.as_dict(), "new": new.ref})


class ForgetArgs(ArgModel):
    node: str | None = Field(None, description="forget this node: id (n12) or exact label")
    session: str | None = Field(None, max_length=200, description="forget this session: its episodes, its session "
                                                                 "node and the nodes that came only from it")
    keep_nodes: bool = Field(False, description="session: delete only the episodes, keep the nodes")


def forget(args: ForgetArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-forget``: delete one node (with its edges and links) or a whole session
    (episodes and the nodes only it produced).

    :raises UsageError: not exactly one of ``node``/``session``.
    :raises NotFoundError: no such node or session.
    """
    from opensage.errors import UsageError

    if bool(args.node) == bool(args.session):
        raise UsageError("@memory-forget takes exactly one of node=<id or label> or session=<session id>.")
    graph = graph_for(ctx.host)
    if args.node:
        node = graph.resolve(args.node)
        gone = graph.forget_node(node.id)
        text = f"forgot {node.ref} ({node.type}) {node.label}: {gone['edges']} edges, {gone['provenanceLinks']} provenance links"
        if gone["restored"]:
            text += f"; current again: {', '.join(gone['restored'])}"
        return CommandResult(text=text, data=gone)
    gone = graph.forget_session(args.session, keep_nodes=args.keep_nodes)
    lines = [f"forgot session {args.session}: {gone['episodes']} episodes, {len(gone['nodes'])} nodes, "
             f"{gone['edges']} edges"]
    lines += [f"  {n['id']} ({n['type']}) {n['label']}" for n in gone["nodes"][:30]]
    if len(gone["nodes"]) > 30:
        lines.append(f"  ... and {len(gone['nodes']) - 30} more")
    return CommandResult(text="\n".join(lines), data=gone)


class AddEdgeArgs(ArgModel):
    from_id: str = Field(description="source node: id (n12) or exact label")
    to_id: str = Field(description="target node: id (n12) or exact label")
    type: str = Field(description=f"relation, a lowercase word: {', '.join(EDGE_TYPES[:7])}, ...")
    weight: float = Field(0.5, ge=0.0, le=1.0, description="strength in [0, 1]")
    metadata: dict[str, Any] = Field(default_factory=dict, description="JSON object kept on the edge")


def add_edge(args: AddEdgeArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-add-edge``: add an edge between two nodes, or merge it into the existing one
    (``weight`` 0-1).

    :raises NotFoundError: either node does not exist.
    :raises UsageError: a bad edge type or weight.
    """
    graph = graph_for(ctx.host)
    src = graph.resolve(args.from_id, "fromId node")
    dst = graph.resolve(args.to_id, "toId node")
    edge, created = graph.upsert_edge(src.id, dst.id, args.type, args.weight, args.metadata)
    verb = "added" if created else "merged into existing"
    return CommandResult(
        text=f"{verb} edge {src.label} -[{edge.type} {edge.weight:g}]-> {dst.label}",
        data={"edge": edge.as_dict(), "created": created},
    )


COMMANDS = [
    Command("memory-add-node", AddNodeArgs, add_node,
            "Add a node to graph memory (same type+label updates it); returns its id."),
    Command("memory-add-edge", AddEdgeArgs, add_edge,
            "Link two nodes (id or exact label) with a typed, weighted edge; duplicates merge."),
    Command("memory-tag", TagArgs, tag_node, "Show, add, remove or set the tags of a node."),
    Command("memory-supersede", SupersedeArgs, supersede,
            "Mark a node as replaced by a newer one: hidden from queries unless includeSuperseded/asOf."),
    Command("memory-forget", ForgetArgs, forget,
            "Delete a node, or a session with its episodes and the nodes only it produced; says what it removed."),
]
