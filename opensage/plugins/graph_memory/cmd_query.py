"""``@memory-query``: similarity, pattern and traversal queries over graph memory."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from opensage.errors import UsageError
from opensage.plugins.graph_memory.graph import TYPE_NAME
from opensage.plugins.graph_memory.query import MAX_DEPTH, MAX_QUERY_CHARS, engine_for
from opensage.types import ArgModel, Command, CommandContext, CommandResult


class QueryArgs(ArgModel):
    query: str = Field(
        "",
        description="similarity: free text or identifiers (at most 4,000 characters); pattern: the regex "
                    "(RE2 syntax: no lookaround or backreferences, \\w is ASCII, \\pL any letter) or glob; "
                    "traversal: the start node when startNode is not given; "
                    "history: a question about past work, e.g. 'how did we fix the refresh token crash'",
    )
    mode: Literal["similarity", "pattern", "traversal", "history", "code"] = Field(
        "similarity", description="similarity (ranked hybrid search), pattern (regex/glob), traversal (walk edges), "
                                  "history (how did we fix / why did we pick: error, fix, decision, session and when), "
                                  "code (exact code-graph questions, see relation)")
    node_type: str | None = Field(
        None, description="only nodes of this type (e.g. code, decision); 'episode' searches only session episodes")
    max_results: int = Field(10, ge=1, le=200, description="at most this many results")
    field: Literal["label", "content", "type", "metadata", "any"] = Field(
        "any", description="pattern: which node field to match (metadata = keys and values)")
    syntax: Literal["regex", "glob"] = Field(
        "regex", description="pattern: regex (found anywhere in the field) or glob (whole field, e.g. Auth*)")
    case_sensitive: bool = Field(False, description="pattern: match case exactly")
    start_node: str | None = Field(None, description="traversal: start node id (n12) or exact label")
    depth: int = Field(2, ge=1, le=MAX_DEPTH, description=f"traversal: hops to walk, 1-{MAX_DEPTH}")
    direction: Literal["out", "in", "both"] = Field(
        "out", description="traversal: out follows edges, in walks them backwards (who depends on X), both")
    edge_types: list[str] | None = Field(None, description='traversal: only these edge types, e.g. ["calls","imports"]')
    relation: Literal["exists", "callers", "callees", "references", "members", "implementors", "file-symbols",
                      "unused"] = Field(
        "exists", description="code: what to ask about the exact symbol in query (docs/code-graph.md); depth = hops "
                              "(default 1; implementors 6); nodeType = kind filter (unused: function,method,class)")
    node_types: list[str] | None = Field(
        None, max_length=20, description='only nodes of these types, e.g. ["decision","error"] ("episode" admits episodes)')
    since: str | None = Field(
        None, max_length=100, description="only knowledge recorded at or after: ISO date (2026-11-30), age (7d, 12h), "
                                          "or words (yesterday, last week)")
    until: str | None = Field(None, max_length=100, description="only knowledge recorded at or before (same forms as since)")
    tags: list[str] | None = Field(None, max_length=32, description='only nodes with these tags, e.g. ["auth"]')
    tags_mode: Literal["any", "all"] = Field("any", description="tags: any (at least one) or all of them")
    session: str | None = Field(None, max_length=200, description="only what came from this session id")
    source: str | None = Field(None, max_length=40, description="only what came from this host: opencode, claude, cli, ...")
    as_of: str | None = Field(
        None, max_length=100, description="what was current at that time (same forms as since): history of decisions")
    include_superseded: bool = Field(
        False, description="also superseded knowledge (replaced decisions); default: current knowledge only "
                           "(mode=history always includes it unless asOf is given)")


def _empty_hint(args: QueryArgs) -> str:
    if args.mode == "similarity":
        tips = "try fewer or different words, an identifier (ParseConfig), or mode=pattern"
        if args.node_type:
            tips = f"drop nodeType={args.node_type} or " + tips
        return f"No results for {args.query!r}: {tips}. Add knowledge with @memory-add-node or @memory-ingest."
    if args.mode == "history":
        return (f"No past work matches {args.query!r}: sessions are compressed into errors, fixes and decisions at "
                "compaction and session end; try other words, or mode=similarity to search the raw episodes.")
    if args.mode == "pattern":
        return (f"No node matches {args.syntax} {args.query!r} in field {args.field}: try field=any, "
                f"{'syntax=glob with *' if args.syntax == 'regex' else 'syntax=regex'}, or a shorter pattern.")
    return ("No nodes reached: try direction=both, a larger depth, or drop edgeTypes "
            "(edges of the start node are listed by @memory-query mode=similarity).")


def _filter(args: QueryArgs):
    from opensage.plugins.graph_memory.filters import MemoryFilter

    types = list(args.node_types or [])
    if args.node_type:
        types.append(args.node_type)
    return MemoryFilter.build(since=args.since, until=args.until, tags=args.tags, tags_mode=args.tags_mode,
                              session=args.session, source=args.source, node_types=types, as_of=args.as_of,
                              include_superseded=args.include_superseded)


def memory_query(args: QueryArgs, ctx: CommandContext) -> CommandResult:
    """``@memory-query``: similarity, pattern, traversal, history or code queries over the
    graph and the episodes, with the filters (types, tags, time, session, source).

    :raises UsageError: a bad mode/argument combination, node type, filter or pattern, or a
        query longer than :data:`MAX_QUERY_CHARS` characters (similarity, history).
    :raises NotFoundError: a traversal ``startNode`` that names no node.
    """
    if args.mode == "code":
        return _code_query(args, ctx)
    if args.node_type is not None and not TYPE_NAME.match(args.node_type):
        raise UsageError(f"nodeType {args.node_type!r} is not a node type; use a lowercase word such as code or decision.")
    if args.mode != "traversal" and not args.query.strip():
        raise UsageError(f"mode={args.mode} needs query=<text>, e.g. @memory-query query=\"auth token refresh\".")
    if args.mode in ("similarity", "history") and len(args.query) > MAX_QUERY_CHARS:
        raise UsageError(f"query is {len(args.query):,} characters; {args.mode} takes at most {MAX_QUERY_CHARS:,}. "
                         "Keep the key words or identifiers, e.g. query=\"token refresh fails\".")
    flt = _filter(args)
    shown = flt.describe()
    if args.mode == "history":
        from opensage.plugins.graph_memory.graph import graph_for
        from opensage.plugins.graph_memory.history import chains, render_chains

        if flt.as_of is None:  # history mode is the request for history: replaced knowledge too
            flt.include_superseded = True
        found = chains(graph_for(ctx.host), args.query, max_chains=min(args.max_results, 10), flt=flt)
        if not found:
            return CommandResult(text=f"history {args.query!r}: 0 chains.\n{_empty_hint(args)}", data=[])
        return CommandResult(text=render_chains(args.query, found), data=[c.as_dict() for c in found])
    engine = engine_for(ctx.host)
    header = ""
    if args.mode == "similarity":
        results = engine.similarity(args.query, None, args.max_results, flt=flt)
        header = f"similarity {args.query!r}"
    elif args.mode == "pattern":
        results = engine.pattern(args.query, args.field, args.syntax, None, args.max_results,
                                 args.case_sensitive, flt=flt)
        header = f"pattern {args.syntax} {args.query!r} in {args.field}"
    else:
        start, results = engine.traversal(args.start_node or args.query, args.depth, args.direction,
                                          args.edge_types, None, args.max_results, flt=flt)
        types = f" over {','.join(args.edge_types)}" if args.edge_types else ""
        header = f"traversal from {start.ref} {start.label} ({args.direction}, depth <= {args.depth}{types})"
    if shown:
        header += f" [{shown}]"
    if not results:
        loosen = f"\nFilters on ({shown}): loosen them to see more." if shown else ""
        return CommandResult(text=f"{header}: 0 results.\n{_empty_hint(args)}{loosen}", data=[])
    body = "\n".join(r.render(i) for i, r in enumerate(results, start=1))
    return CommandResult(text=f"{header}: {len(results)} result{'s' if len(results) != 1 else ''}\n{body}",
                         data=[r.as_dict() for r in results])


def _code_query(args: QueryArgs, ctx: CommandContext) -> CommandResult:
    from opensage.plugins.graph_memory.codegraph import CodeGraph
    from opensage.plugins.graph_memory.graph import graph_for

    if args.relation != "unused" and not args.query.strip():
        raise UsageError(f"mode=code relation={args.relation} needs query=<symbol>, e.g. query=app.models.User "
                         "(relation=file-symbols: query=<file path>).")
    depth = args.depth if "depth" in args.model_fields_set else None
    kinds = [k.strip() for k in args.node_type.split(",")] if args.node_type else None
    for k in kinds or ():
        if not TYPE_NAME.match(k):
            raise UsageError(f"nodeType {k!r} is not a node type; use e.g. nodeType=function or nodeType=function,class.")
    header, hits, _ = CodeGraph(graph_for(ctx.host)).ask(args.relation, args.query, depth, kinds, args.max_results)
    data = [h.as_dict() for h in hits]
    if args.relation == "exists":
        return CommandResult(text=header + "".join(f"\n{h.render(i)}" for i, h in enumerate(hits, 1)),
                             data={"exists": bool(hits), "matches": data})
    if not hits:
        return CommandResult(text=f"{header}: 0 results.", data=[])
    body = "\n".join(h.render(i) for i, h in enumerate(hits, start=1))
    return CommandResult(text=f"{header}: {len(hits)} result{'s' if len(hits) != 1 else ''}\n{body}", data=data)


COMMANDS = [
    Command("memory-query", QueryArgs, memory_query,
            "Search graph memory: ranked similarity (BM25 + fuzzy labels + episodes, RRF, 1-hop), "
            "regex/glob pattern, traversal (who depends on X: direction=in), history "
            "(how did we fix X: error, fix, decision, session and when), or exact code questions "
            "(mode=code relation=callers|callees|references|members|implementors|file-symbols|unused|exists)."),
]
