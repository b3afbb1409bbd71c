"""``@memory-add-node`` and ``@memory-add-edge``."""

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


def add_node(args: AddNodeArgs, ctx: CommandContext) -> CommandResult:
    node, created = graph_for(ctx.host).upsert_node(args.type, args.label, args.content, args.metadata)
    verb = "added" if created else "updated"
    return CommandResult(
        text=f"{verb} {node.ref} ({node.type}) {node.label}",
        data={"id": node.ref, "created": created, "node": node.as_dict()},
    )


class AddEdgeArgs(ArgModel):
    from_id: str = Field(description="source node: id (n12) or exact label")
    to_id: str = Field(description="target node: id (n12) or exact label")
    type: str = Field(description=f"relation, a lowercase word: {', '.join(EDGE_TYPES[:7])}, ...")
    weight: float = Field(0.5, ge=0.0, le=1.0, description="strength in [0, 1]")
    metadata: dict[str, Any] = Field(default_factory=dict, description="JSON object kept on the edge")


def add_edge(args: AddEdgeArgs, ctx: CommandContext) -> CommandResult:
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
]
