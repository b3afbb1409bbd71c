"""A scripted Anthropic Messages API on 127.0.0.1 (stdlib only), for the real Claude Code.

Claude Code (``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``) posts
``/v1/messages?beta=true`` with ``stream: true``; this server answers each request with
whatever ``responder(body)`` returns, streamed as the Messages API's Server-Sent Events
(``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``
with the ``stop_reason``, ``message_stop``):

* ``{"content": "text"}`` -> one text block, ``stop_reason: "end_turn"``;
* ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` -> ``tool_use`` blocks
  (``input_json_delta``), ``stop_reason: "tool_use"``.

``/v1/messages/count_tokens`` answers a fixed small count. Every messages request body
is kept in ``server.requests``.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Responder = Callable[[dict[str, Any]], dict[str, Any]]
_ids = itertools.count(1)


class FakeAnthropic:
    """``with FakeAnthropic(responder) as srv: srv.base_url`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, obj, status=200):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                with outer._lock:
                    outer.paths.append("GET " + self.path)
                self._json({"data": [], "has_more": False})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with outer._lock:
                    outer.paths.append("POST " + self.path)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                if "count_tokens" in self.path:
                    self._json({"input_tokens": 10})
                    return
                if not self.path.split("?")[0].endswith("/v1/messages"):
                    self._json({"type": "error", "error": {"type": "not_found_error", "message": self.path}}, 404)
                    return
                with outer._lock:
                    outer.requests.append(body)
                try:
                    answer = outer.responder(body)
                except Exception as exc:  # surface responder bugs in the test, answer something valid
                    outer.errors.append(f"{type(exc).__name__}: {exc}")
                    answer = {"content": f"responder failed: {exc}"}
                if body.get("stream"):
                    self._stream(body, answer)
                else:
                    self._json(_message(body, answer))

            def _stream(self, body, answer):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()

                def event(name, data):
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()

                message = _message(body, answer)
                blocks, message["content"] = message["content"], []
                stop = message.pop("stop_reason")
                event("message_start", {"type": "message_start", "message": {**message, "stop_reason": None}})
                for i, block in enumerate(blocks):
                    if block["type"] == "text":
                        event("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {"type": "text", "text": ""}})
                        text = block["text"]
                        for piece in [text[j:j + 60] for j in range(0, len(text), 60)] or [""]:
                            event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                          "delta": {"type": "text_delta", "text": piece}})
                    else:
                        event("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {**block, "input": {}}})
                        event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "input_json_delta",
                                                                "partial_json": json.dumps(block["input"])}})
                    event("content_block_stop", {"type": "content_block_stop", "index": i})
                event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                        "usage": {"output_tokens": 5}})
                event("message_stop", {"type": "message_stop"})
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeAnthropic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _message(body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.get("content"):
        content.append({"type": "text", "text": answer["content"]})
    for call in answer.get("tool_calls") or []:
        content.append({"type": "tool_use", "id": f"toolu_scripted{next(_ids):04d}", "name": call["name"],
                        "input": call.get("arguments", {})})
    if not content:
        content.append({"type": "text", "text": ""})
    return {
        "id": f"msg_scripted{next(_ids):04d}", "type": "message", "role": "assistant",
        "model": body.get("model", "claude-scripted"), "content": content,
        "stop_reason": "tool_use" if answer.get("tool_calls") else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t.get("name", "") for t in body.get("tools") or []]


def blocks(body: dict[str, Any]):
    """Every content block of every message, as ``(role, block)`` (strings as text blocks)."""
    for m in body.get("messages", []):
        c = m.get("content")
        for b in ([{"type": "text", "text": c}] if isinstance(c, str) else c or []):
            if isinstance(b, dict):
                yield m.get("role"), b


def tool_results(body: dict[str, Any]) -> list[str]:
    """The text of every ``tool_result`` block, in order (what the model was shown)."""
    out = []
    for _, b in blocks(body):
        if b.get("type") == "tool_result":
            c = b.get("content")
            if isinstance(c, str):
                out.append(c)
            else:
                out.append("\n".join(p.get("text", "") for p in c or [] if isinstance(p, dict) and p.get("type") == "text"))
    return out


def all_text(body: dict[str, Any]) -> str:
    """The system prompt and every text / tool-result text of a request, joined."""
    system = body.get("system")
    parts = [system if isinstance(system, str) else " ".join(s.get("text", "") for s in system or [] if isinstance(s, dict))]
    for _, b in blocks(body):
        if b.get("type") == "text":
            parts.append(b.get("text", ""))
    parts += tool_results(body)
    return "\n".join(parts)
