"""``@memory-ingest``, ``@memory-compress-session`` and ``@memory-visualize``: building and viewing the graph."""

from __future__ import annotations

from opensage.store import store_exists

from typing import Literal

from pydantic import Field

from opensage.errors import NotFoundError, UsageError
from opensage.types import ArgModel, Command, CommandContext, CommandResult


class IngestArgs(ArgModel):
    path: str = Field("", description="folder or .py/.ts/.js/.rs/.go file to ingest; relative paths are taken from the "
                                      "workspace root")
    scip: str = Field("", description="a SCIP index (index.scip from scip-python, scip-typescript, scip-go, "
                                      "rust-analyzer...) to import instead of parsing; relative to the workspace root")


def ingest(args: IngestArgs, ctx: CommandContext) -> CommandResult:
    """Build or refresh the code graph of ``path``. Raises UsageError (nothing written) if it does not exist."""
    from opensage.plugins.graph_memory.graph import graph_for
    from opensage.plugins.graph_memory.ingest import check_ingest_path, ingest_path

    root = ctx.workspace.root
    if bool(args.path.strip()) == bool(args.scip.strip()):
        raise UsageError("give exactly one of path=<folder or file> (parse the source) or scip=<index.scip> "
                         "(import a SCIP index), e.g. path=src or scip=index.scip.")
    if args.scip.strip():
        from pathlib import Path

        from opensage.plugins.graph_memory.ingest import ingest_scip

        scip = Path(args.scip).expanduser()
        report = ingest_scip(graph_for(ctx.host), scip if scip.is_absolute() else root / scip, root)
    else:
        path = check_ingest_path(args.path, root)  # before the database is touched
        report = ingest_path(graph_for(ctx.host), path, root)
    text = (
        f"ingested {report.root}: {report.files} files ({report.changed} changed, {report.unchanged} unchanged, "
        f"{report.removed_files} removed, {report.skipped} skipped), {report.modules} modules, {report.classes} classes, "
        f"{report.functions} functions, {report.methods} methods, {report.variables} variables, "
        f"{report.attributes} attributes, {report.edges} edges "
        f"(+{report.edges_added}/-{report.edges_removed}); nodes +{report.nodes_added} ~{report.nodes_updated} "
        f"-{report.nodes_removed}; {report.time_ms:.0f} ms"
    )
    for err in report.errors[:10]:
        text += f"\nskipped {err['path']}: {err['error']}"
    if len(report.errors) > 10:
        text += f"\n... and {len(report.errors) - 10} more skipped files (see --json)"
    return CommandResult(text=text, data=report.as_dict())


class CompressArgs(ArgModel):
    session_id: str | None = Field(
        None, min_length=1, description="the session to compress (as recorded by the host); default: the current one")
    use_model: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: use the model when OPENSAGE_MODEL is set; always: require it; never: rules only")


def compress(args: CompressArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-compress``: turn a session's episodes into nodes and edges (errors, fixes,
    decisions, files), with the model pass when ``useModel`` and a model is configured;
    tokens and cost (USD) are reported.

    :raises UsageError: no ``sessionId`` outside a session, or a bad ``useModel``.
    :raises NotFoundError: unknown session.
    :raises ModelNotConfigured: ``useModel=always`` without a model.
    :raises ModelError: ``useModel=always`` and the model failed.
    """
    from opensage.plugins.graph_memory.compress import compress_session

    session_id = args.session_id or (ctx.session.id if ctx.session is not None else None)
    if not session_id:
        raise UsageError("argument 'sessionId' is required outside a session: give the host's session id, "
                         "e.g. sessionId=ses_123.")
    report = compress_session(ctx.host, session_id, args.use_model)
    by_type = ", ".join(f"{n} {t}" for t, n in sorted(report.new.items())) or "nothing new"
    text = (f"compressed session {report.session_id}: {report.episodes} episodes ({report.new_episodes} new); "
            f"new nodes: {by_type}; {report.updated} updated; {report.new_edges} new edges; "
            f"{report.provenance_links} provenance links")
    if report.model:
        text += (f"; model {report.model}: {report.model_items} items, {report.tokens} tokens, "
                 f"${report.cost_usd:.4f}")
    if report.model_error:
        text += f"\nmodel extraction failed, rules only: {report.model_error}"
    return CommandResult(text=text, data=report.as_dict())


class VisualizeArgs(ArgModel):
    center_node: str | None = Field(None, description="node id (n12) or exact label; omit for the most connected nodes")
    radius: int = Field(2, ge=0, le=6, description="hops from the center node")
    max_nodes: int = Field(60, ge=1, le=500, description="most nodes drawn; the rest is counted in a note")
    direction: Literal["in", "out", "both"] = Field("both", description="follow edges out of, into, or both ways")
    edge_types: list[str] | None = Field(
        None, description='only these edge types, e.g. ["calls"] (with direction=in: who calls the center node)')


def visualize(args: VisualizeArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-visualize``: a Mermaid flowchart of a node's neighbourhood (``centerNode``,
    ``radius``) or of the most connected nodes, at most ``maxNodes``; an empty graph creates
    no database.

    :raises UsageError: a bad edge type.
    :raises NotFoundError: ``centerNode`` names no node.
    """
    from opensage.plugins.graph_memory.graph import check_type, graph_for
    from opensage.plugins.graph_memory.mermaid import most_connected, neighbourhood, node_summaries, render

    for t in args.edge_types or ():
        check_type(t, "edgeTypes entry")
    if not store_exists(ctx.workspace):  # nothing recorded yet: do not create a database to say so
        if args.center_node:
            raise NotFoundError(f"unknown centerNode {args.center_node!r}: the graph is empty "
                                "(add nodes with @memory-add-node or @memory-ingest first).")
        source = "flowchart LR\n%% graph-memory: the graph is empty\n"
        return CommandResult(text=f"```mermaid\n{source}```", data={
            "mermaid": source, "nodes": [], "edges": [], "shown": 0, "total": 0, "truncated": False, "center": None})
    graph = graph_for(ctx.host)
    if args.center_node:
        center = graph.resolve(args.center_node, "centerNode")
        sub = neighbourhood(graph, center, args.radius, args.max_nodes, args.direction, edge_types=args.edge_types)
    else:
        sub = most_connected(graph, args.max_nodes, args.edge_types)
    source = render(sub)
    data = {
        "mermaid": source,
        "nodes": node_summaries(sub.nodes),
        "edges": [{"from": f"n{e.src}", "to": f"n{e.dst}", "type": e.type, "weight": e.weight} for e in sub.edges],
        "shown": len(sub.nodes),
        "total": sub.total,
        "truncated": sub.hidden > 0,
        "center": sub.center.ref if sub.center else None,
    }
    return CommandResult(text=f"```mermaid\n{source}```", data=data)


COMMANDS = [
    Command("memory-ingest", IngestArgs, ingest,
            "Build/refresh the code graph of a folder or file (Python via ast; TypeScript/JavaScript, Rust, Go via "
            "tree-sitter) or import a SCIP index (scip=index.scip): "
            "files, modules, classes, functions, methods, variables, attributes; contains/imports/calls/references/"
            "inherits/decorates edges."),
    Command("memory-compress-session", CompressArgs, compress,
            "Turn a session's episodes into lasting nodes (files, commands, errors+fixes, decisions, questions, "
            "symbols) with provenance; idempotent.", uses_llm=True),
    Command("memory-visualize", VisualizeArgs, visualize,
            "Mermaid flowchart of a node's neighbourhood (or of the most connected nodes), truncated with a note."),
]
