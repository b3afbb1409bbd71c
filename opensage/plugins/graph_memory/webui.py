"""``opensage ui``: a local web view of graph memory (search, node, provenance, neighbourhood, edits).

Served by Starlette on uvicorn (both already installed with the ``mcp`` SDK), on
127.0.0.1 only, on a port the OS picks. Access control, for a page any other local
program or web site could try to reach:

* the URL printed at start carries a one-time token (``secrets.token_urlsafe``, 256 bits);
  the first request with it is answered with an HttpOnly, ``SameSite=Strict`` session
  cookie and a redirect to a token-free URL; the token then stops working;
* every other request needs that cookie, else 403;
* the ``Host`` header must name 127.0.0.1/localhost and our port (DNS-rebinding pages get 403);
* writes are POST with ``Content-Type: application/json`` and, when the browser sends
  ``Origin``, our own origin; bodies above :data:`MAX_BODY` bytes get 413;
* no CORS headers at all; a Content-Security-Policy allows only our own scripts.

The graph is drawn by Cytoscape.js (vendored, see ``static/VENDORED.md``): no CDN, works offline.
All reads use :class:`.graph.Graph` / :class:`.query.QueryEngine`; all writes go through
Graph methods or the registered ``@memory-*`` commands.
"""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path
from typing import Any

from opensage.errors import OpenSageError, UsageError
from opensage.plugins.graph_memory.graph import Graph, Node, format_id, graph_for, parse_id
from opensage.plugins.graph_memory.markdown import check_tags, node_tags, set_node_tags

__all__ = ["make_app", "serve", "MAX_BODY"]

STATIC = Path(__file__).with_name("static")
#: Largest request body accepted (bytes): a node's content edit, not an upload.
MAX_BODY = 256 * 1024
#: Most results / neighbours / episodes a page asks for.
MAX_RESULTS = 100
MAX_GRAPH_NODES = 80
MAX_EPISODES = 50
COOKIE = "opensage_ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class _Guard:
    """ASGI middleware: host check, one-time token -> session cookie, cookie check, body bound."""

    def __init__(self, app, port_ref: dict, token: str) -> None:
        self.app = app
        self.port_ref = port_ref
        self.url_token: str | None = token
        self.session = secrets.token_urlsafe(32)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, RedirectResponse

        request = Request(scope)
        port = self.port_ref.get("port")
        host = request.headers.get("host", "")
        if host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            return await PlainTextResponse("forbidden host", 403)(scope, receive, send)
        given = request.query_params.get("token")
        if given is not None:
            if self.url_token is not None and secrets.compare_digest(given, self.url_token):
                self.url_token = None
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(COOKIE, self.session, httponly=True, samesite="strict", path="/")
                return await resp(scope, receive, send)
            return await PlainTextResponse(
                "this link was already used or is wrong; restart 'opensage ui' for a new one", 403)(scope, receive, send)
        cookie = request.cookies.get(COOKIE, "")
        if not secrets.compare_digest(cookie, self.session):
            return await PlainTextResponse("forbidden: open the URL printed by 'opensage ui'", 403)(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and origin not in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
                return await PlainTextResponse("forbidden origin", 403)(scope, receive, send)
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return await PlainTextResponse("send JSON (Content-Type: application/json)", 415)(scope, receive, send)
            length = request.headers.get("content-length")
            if length is None or not length.isdigit() or int(length) > MAX_BODY:
                return await PlainTextResponse(f"request body must have a length of at most {MAX_BODY} bytes", 413)(
                    scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"),
                            (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_secured)


def _node_view(graph: Graph, node: Node) -> dict[str, Any]:
    d = node.as_dict()
    d["tags"] = node_tags(node)
    return d


def _relations(graph: Graph, node: Node) -> list[dict[str, Any]]:
    edges = graph.edges_of(node.id, "both")
    others = graph.get_many({e.dst if e.src == node.id else e.src for e in edges})
    out = []
    for e in edges[:200]:
        other = e.dst if e.src == node.id else e.src
        o = others.get(other)
        out.append({"direction": "out" if e.src == node.id else "in", "type": e.type, "weight": e.weight,
                    "id": format_id(other), "label": o.label if o else "", "nodeType": o.type if o else ""})
    return out


def _provenance(graph: Graph, node: Node) -> list[dict[str, Any]]:
    rows = graph.db.conn.execute(
        "SELECT e.id, e.session_id, e.seq, e.kind, e.role, e.tool, e.path, substr(e.text, 1, 600) AS text, e.timestamp"
        " FROM node_episodes ne JOIN episodes e ON e.id = ne.episode_id WHERE ne.node_id=?"
        " ORDER BY e.timestamp, e.seq LIMIT ?", (node.id, MAX_EPISODES)).fetchall()
    return [dict(r) for r in rows]


def make_app(host, token: str, port_ref: dict):
    """The ASGI app for ``host``'s workspace; ``port_ref["port"]`` is filled in once the socket is bound."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    graph = graph_for(host)

    def _err(exc: Exception) -> JSONResponse:
        status = 404 if exc.__class__.__name__ == "NotFoundError" else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    def _node(ref: str) -> Node:
        return graph.resolve(ref)

    async def _json(request: Request) -> dict[str, Any]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise UsageError(f"request body larger than {MAX_BODY} bytes")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise UsageError("request body is not JSON") from None
        if not isinstance(data, dict):
            raise UsageError("request body must be a JSON object")
        return data

    async def index(request: Request):
        return FileResponse(STATIC / "index.html")

    async def info(request: Request):
        names = set(host.commands)
        return JSONResponse({"workspace": str(host.workspace.root), "counts": graph.counts(),
                             "canForget": "memory-forget" in names, "canSupersede": "memory-supersede" in names})

    async def search(request: Request):
        from opensage.plugins.graph_memory.filters import MemoryFilter

        p = request.query_params
        q = p.get("q", "").strip()[:500]
        try:
            limit = max(1, min(MAX_RESULTS, int(p.get("limit", "30"))))
            types = [t for t in p.get("type", "").replace(",", " ").split() if t]
            flt = MemoryFilter.build(
                since=p.get("since") or None, until=p.get("until") or None,
                tags=check_tags(p.get("tags", "")) or None, tags_mode=p.get("tagsMode", "any"),
                session=p.get("session") or None, source=p.get("source") or None,
                node_types=[t for t in types if t != "episode"] or None,
                include_superseded=p.get("includeSuperseded") in ("1", "true", "on"))
            if q:
                from opensage.plugins.graph_memory.query import engine_for

                results = engine_for(host).similarity(q, max_results=limit, flt=flt)
                ids = [i for i in (parse_id(r.id) for r in results if r.kind == "node") if i is not None]
            else:
                cond, args = flt.node_sql("n")
                sql = "SELECT n.id FROM nodes n WHERE json_extract(n.metadata, '$.source') IS NOT 'ingest'"
                if cond:
                    sql += " AND " + cond
                ids = [r[0] for r in graph.db.conn.execute(sql + " ORDER BY n.updated_at DESC LIMIT ?", (*args, limit))]
        except ValueError:
            return _err(UsageError("limit must be a number"))
        except OpenSageError as exc:
            return _err(exc)
        nodes = graph.get_many(ids)
        return JSONResponse({"results": [_node_view(graph, nodes[i]) for i in ids if i in nodes],
                             "filter": flt.describe()})

    async def node_get(request: Request):
        try:
            node = _node(request.path_params["ref"])
        except OpenSageError as exc:
            return _err(exc)
        return JSONResponse({"node": _node_view(graph, node), "relations": _relations(graph, node),
                             "provenance": _provenance(graph, node)})

    async def node_graph(request: Request):
        from opensage.plugins.graph_memory.mermaid import neighbourhood

        try:
            node = _node(request.path_params["ref"])
            radius = max(1, min(3, int(request.query_params.get("radius", "1"))))
        except (OpenSageError, ValueError) as exc:
            return _err(exc)
        sub = neighbourhood(graph, node, radius=radius, max_nodes=MAX_GRAPH_NODES)
        return JSONResponse({
            "nodes": [{"id": n.ref, "label": n.label, "type": n.type, "center": n.id == node.id} for n in sub.nodes],
            "edges": [{"id": f"e{e.id}", "source": format_id(e.src), "target": format_id(e.dst), "type": e.type}
                      for e in sub.edges],
            "hidden": sub.hidden,
        })

    async def node_edit(request: Request):
        try:
            data = await _json(request)
            node = _node(request.path_params["ref"])
            unknown = set(data) - {"content", "tags"}
            if unknown:
                raise UsageError(f"unknown fields {sorted(unknown)}; send content and/or tags")
            tags = check_tags(data["tags"]) if "tags" in data else None
            if "content" in data:
                if not isinstance(data["content"], str):
                    raise UsageError("content must be text")
                node = graph.update_node(node.id, content=data["content"])
            if tags is not None:
                node = set_node_tags(graph, node, tags)
        except OpenSageError as exc:
            return _err(exc)
        return JSONResponse({"node": _node_view(graph, node)})

    async def node_forget(request: Request):
        try:
            await _json(request)
            node = _node(request.path_params["ref"])
            text = host.run("memory-forget", {"node": node.ref}).text
        except OpenSageError as exc:
            return _err(exc)
        return JSONResponse({"removed": node.ref, "text": text})

    async def node_supersede(request: Request):
        try:
            data = await _json(request)
            node = _node(request.path_params["ref"])
            if not isinstance(data.get("by"), str) or not data["by"].strip():
                raise UsageError("say which node replaces it: by = an id (n12) or exact label")
            result = host.run("memory-supersede", {"old": node.ref, "new": data["by"].strip()[:500]})
        except OpenSageError as exc:
            return _err(exc)
        return JSONResponse({"text": result.text, "node": _node_view(graph, graph.get(node.id) or node)})

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/search", search),
        Route("/api/node/{ref}", node_get),
        Route("/api/node/{ref}/graph", node_graph),
        Route("/api/node/{ref}/edit", node_edit, methods=["POST"]),
        Route("/api/node/{ref}/forget", node_forget, methods=["POST"]),
        Route("/api/node/{ref}/supersede", node_supersede, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return _Guard(Starlette(routes=routes), port_ref, token)


def serve(host, port: int = 0, on_ready=None) -> None:
    """Serve the web view until interrupted (Ctrl-C).

    :param port: 0 (default) lets the OS pick a free port.
    :param on_ready: called with the one-time URL once the socket listens (default: print it).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    port_ref = {"port": sock.getsockname()[1]}
    token = secrets.token_urlsafe(32)
    app = make_app(host, token, port_ref)
    url = f"http://127.0.0.1:{port_ref['port']}/?token={token}"
    (on_ready or (lambda u: print(f"opensage ui: open {u}  (Ctrl-C stops)", flush=True)))(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, h11_max_incomplete_event_size=16 * 1024,
                            limit_concurrency=32, timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])
