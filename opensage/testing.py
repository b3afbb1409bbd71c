"""A scripted model for tests and benchmarks, served through litellm's custom providers.

It replays a queue of answers so that tests drive the real :mod:`opensage.llm` code
path (litellm request building, response parsing, retries, cost) without a network.
It is a test double, like pydantic-ai's ``TestModel``: no product code path uses it
unless the configured model is ``scripted/...``.

Each scripted answer is one of:

* a string — the assistant's text;
* a dict ``{"content": str, "tool_calls": [{"name": str, "arguments": dict}],
  "prompt_tokens": int, "completion_tokens": int, "delay_s": float,
  "error": "rate_limit" | "timeout" | "connection"}``;
* a callable ``f(messages, tools) -> str | dict`` (decides from the request).

Usage::

    from opensage import testing
    script = testing.install(["hello", {"tool_calls": [{"name": "read", "arguments": {"path": "a.py"}}]}])
    # OPENSAGE_MODEL=scripted/test now answers from the queue; script.requests holds what it saw.

From another process, point ``$OPENSAGE_SCRIPT`` at a JSON file holding a list of
answers (strings or dicts) and use ``OPENSAGE_MODEL=scripted/<anything>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections import deque
from typing import Any, Iterable

__all__ = ["Script", "install", "install_from_env", "PROVIDER", "PRICE_PER_TOKEN_USD"]

PROVIDER = "scripted"
#: Price registered for every ``scripted/*`` model so cost accounting is exercised.
PRICE_PER_TOKEN_USD = 1e-6


class ScriptExhausted(RuntimeError):
    pass


class Script:
    """The queue of answers and a log of the requests received."""

    def __init__(self, answers: Iterable[Any] = ()) -> None:
        self.answers: deque[Any] = deque(answers)
        self.requests: list[dict[str, Any]] = []
        self.default: Any = None
        self._lock = threading.Lock()

    def add(self, *answers: Any) -> "Script":
        """Queue answers, used in order: a string (the reply text), a dict (an OpenAI-style
        message, e.g. with ``tool_calls``) or a callable ``(messages, tools) -> either``.
        Returns the script, for chaining.
        """
        with self._lock:
            self.answers.extend(answers)
        return self

    def next(self, messages: list[dict], tools: list[dict] | None) -> dict:
        """The answer to one request (recorded in ``requests``): the next queued answer, else
        ``default``.

        :raises ScriptExhausted: nothing queued and no default.
        """
        with self._lock:
            self.requests.append({"messages": messages, "tools": tools})
            if self.answers:
                answer = self.answers.popleft()
            elif self.default is not None:
                answer = self.default
            else:
                raise ScriptExhausted(
                    f"scripted model has no answer left for request #{len(self.requests)}"
                )
        if callable(answer):
            answer = answer(messages, tools)
        if isinstance(answer, str):
            answer = {"content": answer}
        return dict(answer)


_script = Script()


def _raise_error(kind: str) -> None:
    import httpx
    import litellm

    req = httpx.Request("POST", "http://scripted.invalid/v1/chat/completions")
    if kind == "rate_limit":
        raise litellm.RateLimitError("scripted rate limit", llm_provider=PROVIDER, model="scripted")
    if kind == "timeout":
        raise litellm.Timeout("scripted timeout", model="scripted", llm_provider=PROVIDER)
    if kind == "connection":
        raise litellm.APIConnectionError("scripted connection error", llm_provider=PROVIDER, model="scripted", request=req)
    raise litellm.BadRequestError("scripted bad request", model="scripted", llm_provider=PROVIDER)


def _build_response(model: str, answer: dict, messages: list[dict]):
    from litellm.types.utils import ChatCompletionMessageToolCall, Function, Message, ModelResponse, Usage

    tool_calls = None
    if answer.get("tool_calls"):
        tool_calls = [
            ChatCompletionMessageToolCall(
                id=tc.get("id") or f"call_{uuid.uuid4().hex[:8]}",
                type="function",
                function=Function(
                    name=tc["name"],
                    arguments=tc["arguments"] if isinstance(tc.get("arguments"), str) else json.dumps(tc.get("arguments", {})),
                ),
            )
            for tc in answer["tool_calls"]
        ]
    content = answer.get("content")
    prompt_tokens = int(answer.get("prompt_tokens", sum(len(str(m.get("content") or "")) // 4 for m in messages)))
    completion_tokens = int(answer.get("completion_tokens", max(1, len(content or "") // 4)))
    response = ModelResponse(
        model=model,
        choices=[
            {
                "index": 0,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "message": Message(role="assistant", content=content, tool_calls=tool_calls),
            }
        ],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens),
    )
    response._hidden_params["response_cost"] = (prompt_tokens + completion_tokens) * PRICE_PER_TOKEN_USD
    return response


def _make_handler():
    from litellm import CustomLLM

    class ScriptedLLM(CustomLLM):
        def completion(self, model, messages, *args, optional_params=None, **kwargs):
            answer = _script.next(messages, (optional_params or {}).get("tools"))
            if answer.get("delay_s"):
                time.sleep(float(answer["delay_s"]))
            if answer.get("error"):
                _raise_error(answer["error"])
            return _build_response(model, answer, messages)

        async def acompletion(self, model, messages, *args, optional_params=None, **kwargs):
            answer = _script.next(messages, (optional_params or {}).get("tools"))
            if answer.get("delay_s"):
                await asyncio.sleep(float(answer["delay_s"]))
            if answer.get("error"):
                _raise_error(answer["error"])
            return _build_response(model, answer, messages)

    return ScriptedLLM()


_installed = False


def install(answers: Iterable[Any] = (), default: Any = None) -> Script:
    """Register the ``scripted`` provider with litellm and reset the queue to ``answers``.

    :param default: answer (or callable) used once the queue is empty; None = error.
    :returns: the :class:`Script` (inspect ``.requests``, ``.add()`` more answers).
    """
    global _installed
    from opensage import litellm_lib

    litellm = litellm_lib.load()
    if not _installed:
        handler = _make_handler()
        litellm.custom_provider_map = [
            p for p in litellm.custom_provider_map if p.get("provider") != PROVIDER
        ] + [{"provider": PROVIDER, "custom_handler": handler}]
        from litellm.utils import custom_llm_setup

        custom_llm_setup()
        _installed = True
    _register_price(litellm)
    _script.answers = deque(answers)
    _script.requests.clear()
    _script.default = default
    return _script


def _register_price(litellm) -> None:
    """Put ``scripted/test`` and a ``scripted/*`` ``$OPENSAGE_MODEL`` into litellm's price map
    at :data:`PRICE_PER_TOKEN_USD`, so cost budgets accept them (see ``llm.require_price``)."""
    names = {f"{PROVIDER}/test"}
    current = os.environ.get("OPENSAGE_MODEL", "")
    if current.startswith(f"{PROVIDER}/"):
        names.add(current)
    entry = {"input_cost_per_token": PRICE_PER_TOKEN_USD, "output_cost_per_token": PRICE_PER_TOKEN_USD,
             "litellm_provider": PROVIDER, "mode": "chat"}
    missing = {name: entry for name in names if name not in litellm.model_cost}
    if missing:
        litellm.register_model(missing)


def install_from_env() -> Script | None:
    """Install with the answers in the JSON file named by ``$OPENSAGE_SCRIPT`` (if set)."""
    path = os.environ.get("OPENSAGE_SCRIPT")
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        answers = json.load(fh)
    if not isinstance(answers, list):
        raise ValueError(f"{path}: expected a JSON list of scripted answers")
    return install(answers)


def script() -> Script:
    """The current script (after :func:`install`)."""
    return _script
