"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib only).

Used to drive a real OpenCode binary without a network: OpenCode's bundled
``@ai-sdk/openai-compatible`` provider posts ``/v1/chat/completions`` with
``stream: true``; this server answers each request with whatever ``responder(body)``
returns, streamed as Server-Sent Events chunks:

* ``{"content": "text"}`` -> text deltas, ``finish_reason: "stop"``;
* ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` -> tool-call deltas,
  ``finish_reason: "tool_calls"``; ``"raw_arguments": "null"`` sends that exact
  arguments string instead (``null``, a JSON array, broken JSON...).

A plain string answer is ``{"content": string}``. Misbehaving servers (non-streaming
requests, the path opensage's own litellm calls take):

* ``{"hang": True}`` -> read the request, never answer (until the server is closed);
* ``{"status": 429, "headers": {"Retry-After": "20"}}`` -> that HTTP error with an
  OpenAI-style error body (any status: 500, 503...).

Every request body is kept in ``server.requests`` for assertions; ``server.received``
(a :class:`threading.Event`) is set on the first request.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Responder = Callable[[dict[str, Any]], dict[str, Any]]


class FakeOpenAI:
    """``with FakeOpenAI(responder) as srv: srv.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.times: list[float] = []  # time.monotonic() of each request, for waits between them
        self.received = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # /v1/models
                body = json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with outer._lock:
                    outer.requests.append(body)
                    outer.times.append(time.monotonic())
                outer.received.set()
                try:
                    answer = outer.responder(body)
                except Exception as exc:  # surface responder bugs in the test, answer something valid
                    outer.errors.append(f"{type(exc).__name__}: {exc}")
                    answer = {"content": f"responder failed: {exc}"}
                if isinstance(answer, str):
                    answer = {"content": answer}
                if answer.get("hang"):
                    outer._closing.wait()  # a hung endpoint: the client's own timeout must end this
                    self.close_connection = True
                    return
                if answer.get("status"):
                    self._error(answer)
                elif body.get("stream"):
                    self._stream(body, answer)
                else:
                    self._plain(body, answer)

            def _error(self, answer):
                status = int(answer["status"])
                data = json.dumps({"error": {"message": answer.get("message") or f"scripted HTTP {status}",
                                             "type": "rate_limit_error" if status == 429 else "server_error",
                                             "code": status}}).encode()
                self.send_response(status)
                for key, value in (answer.get("headers") or {}).items():
                    self.send_header(key, str(value))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _plain(self, body, answer):
                message: dict[str, Any] = {"role": "assistant", "content": answer.get("content")}
                if answer.get("tool_calls"):
                    message["tool_calls"] = [
                        {"id": f"call_{i}_{int(time.time()*1000)}", "type": "function",
                         "function": {"name": c["name"], "arguments": _arguments(c)}}
                        for i, c in enumerate(answer["tool_calls"])
                    ]
                data = json.dumps({
                    "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "scripted"),
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": "tool_calls" if answer.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body, answer):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": body.get("model", "scripted")}

                def chunk(delta, finish=None, usage=None):
                    obj = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    if usage is not None:
                        obj["usage"] = usage
                    self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                    self.wfile.flush()

                chunk({"role": "assistant", "content": ""})
                if answer.get("tool_calls"):
                    for i, call in enumerate(answer["tool_calls"]):
                        chunk({"tool_calls": [{"index": i, "id": f"call_{i}_{int(time.time()*1000)}", "type": "function",
                                               "function": {"name": call["name"], "arguments": ""}}]})
                        chunk({"tool_calls": [{"index": i, "function": {"arguments": _arguments(call)}}]})
                    finish = "tool_calls"
                else:
                    text = answer.get("content") or ""
                    for piece in [text[i:i + 40] for i in range(0, len(text), 40)] or [""]:
                        chunk({"content": piece})
                    finish = "stop"
                chunk({}, finish, {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()  # release hung requests
        self.httpd.shutdown()
        self.httpd.server_close()


def _arguments(call: dict[str, Any]) -> str:
    if "raw_arguments" in call:
        return call["raw_arguments"]
    return json.dumps(call.get("arguments", {}))


def system_text(body: dict[str, Any]) -> str:
    """All system-message text of a chat-completions request body."""
    out = []
    for m in body.get("messages", []):
        if m.get("role") == "system":
            c = m.get("content")
            out.append(c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict)))
    return "\n".join(out)


def tool_messages(body: dict[str, Any]) -> list[str]:
    """The text of every ``role: tool`` message (tool results the model has seen)."""
    out = []
    for m in body.get("messages", []):
        if m.get("role") == "tool":
            c = m.get("content")
            out.append(c if isinstance(c, str) else json.dumps(c))
    return out
