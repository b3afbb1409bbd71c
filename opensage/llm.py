"""The one door to language models (litellm), imported lazily.

Importing litellm costs about 2 s, so nothing here imports it at module level: commands
that need no model start fast. ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set before the
import so litellm never fetches its price list from the network.

The model is any litellm model string, from the ``model=`` argument or
``$OPENSAGE_MODEL`` (e.g. ``openai/gpt-4o-mini``, ``anthropic/claude-sonnet-4-5``,
``ollama/qwen2.5-coder``). Tests and benchmarks use ``scripted/<name>`` served by
:mod:`opensage.testing` through litellm's custom-provider mechanism.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from opensage.errors import ModelError, ModelNotConfigured

__all__ = [
    "Usage",
    "ToolCall",
    "Completion",
    "Structured",
    "model_name",
    "complete",
    "acomplete",
    "structured",
    "astructured",
]

T = TypeVar("T", bound=BaseModel)

#: Provider errors retried with exponential backoff (litellm exception class names).
RETRYABLE = (
    "RateLimitError",
    "Timeout",
    "APIConnectionError",
    "ServiceUnavailableError",
    "InternalServerError",
)
DEFAULT_PROVIDER_RETRIES = 3
BACKOFF_BASE_S = 1.0

_litellm = None


def _lib():
    """Import litellm once (offline price map, no telemetry, quiet logging)."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        import litellm  # noqa: PLC0415 - deliberately lazy

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        litellm.drop_params = True
        _litellm = litellm
        if os.environ.get("OPENSAGE_SCRIPT"):
            from opensage import testing  # noqa: PLC0415

            testing.install_from_env()
    return _litellm


def model_name(model: str | None = None) -> str:
    """The model to use: ``model`` or ``$OPENSAGE_MODEL``. Raises ModelNotConfigured."""
    chosen = model or os.environ.get("OPENSAGE_MODEL")
    if not chosen:
        raise ModelNotConfigured(
            "no model is configured. Set OPENSAGE_MODEL to a litellm model string, e.g. "
            "'export OPENSAGE_MODEL=openai/gpt-4o-mini' (with OPENAI_API_KEY set) or "
            "'export OPENSAGE_MODEL=ollama/qwen2.5-coder' for a local model."
        )
    return chosen


@dataclass
class Usage:
    """Token counts and cost of one or more calls (tokens; USD from litellm's price map)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "Usage") -> "Usage":
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.latency_ms += other.latency_ms
        self.calls += other.calls
        return self


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""


@dataclass
class Completion:
    """One model answer: text, tool calls, and its usage."""

    content: str
    tool_calls: list[ToolCall]
    usage: Usage
    finish_reason: str | None = None
    model: str = ""

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to a conversation (OpenAI format)."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.raw_arguments or json.dumps(tc.arguments)},
                }
                for tc in self.tool_calls
            ]
        return msg


@dataclass
class Structured(Generic[T]):
    """A validated structured answer, the usage of all attempts, and how many it took."""

    value: T
    usage: Usage
    attempts: int = 1
    errors: list[str] = field(default_factory=list)


def _cost(lib, response) -> float:
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    if cost is None:
        try:
            cost = lib.completion_cost(completion_response=response)
        except Exception:
            cost = 0.0
    return float(cost or 0.0)


def _parse(lib, response, model: str, latency_ms: float) -> Completion:
    choice = response.choices[0]
    message = choice.message
    calls = []
    for tc in getattr(message, "tool_calls", None) or []:
        raw = tc.function.arguments or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except ValueError:
            args = {"_invalid_json": raw}
        calls.append(ToolCall(id=tc.id or f"call_{len(calls)}", name=tc.function.name, arguments=args, raw_arguments=raw if isinstance(raw, str) else json.dumps(raw)))
    usage = getattr(response, "usage", None)
    return Completion(
        content=message.content or "",
        tool_calls=calls,
        usage=Usage(
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=_cost(lib, response),
            latency_ms=latency_ms,
            calls=1,
        ),
        finish_reason=getattr(choice, "finish_reason", None),
        model=model,
    )


def _request(model: str, messages: list[dict], tools, temperature, max_tokens, timeout_s, extra) -> dict:
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "timeout": timeout_s, **extra}
    if tools:
        kwargs["tools"] = tools
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    return kwargs


def _retry_message(exc: Exception, attempts: int) -> str:
    return f"model call failed after {attempts} attempt(s): {type(exc).__name__}: {exc}"


def complete(
    messages: list[dict],
    *,
    model: str | None = None,
    tools: list[dict] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout_s: float = 120.0,
    retries: int = DEFAULT_PROVIDER_RETRIES,
    **extra: Any,
) -> Completion:
    """One chat completion.

    :param messages: OpenAI-format messages.
    :param tools: OpenAI-format tool definitions (``{"type": "function", "function": {...}}``).
    :param timeout_s: per-attempt timeout in seconds.
    :param retries: extra attempts on rate limits, timeouts and connection errors, with
        exponential backoff (1 s, 2 s, 4 s ... ``OPENSAGE_BACKOFF_BASE_S`` scales it).
    :raises ModelNotConfigured: no model given and ``$OPENSAGE_MODEL`` unset.
    :raises ModelError: the provider failed on every attempt.
    """
    name = model_name(model)
    lib = _lib()
    kwargs = _request(name, messages, tools, temperature, max_tokens, timeout_s, extra)
    base = float(os.environ.get("OPENSAGE_BACKOFF_BASE_S", BACKOFF_BASE_S))
    for attempt in range(retries + 1):
        started = time.perf_counter()
        try:
            response = lib.completion(**kwargs)
        except Exception as exc:
            if type(exc).__name__ in RETRYABLE and attempt < retries:
                time.sleep(base * (2**attempt))
                continue
            raise ModelError(_retry_message(exc, attempt + 1)) from exc
        return _parse(lib, response, name, (time.perf_counter() - started) * 1000)
    raise AssertionError("unreachable")


async def acomplete(
    messages: list[dict],
    *,
    model: str | None = None,
    tools: list[dict] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout_s: float = 120.0,
    retries: int = DEFAULT_PROVIDER_RETRIES,
    **extra: Any,
) -> Completion:
    """Async :func:`complete` (same arguments and errors), for parallel ensembles."""
    name = model_name(model)
    lib = _lib()
    kwargs = _request(name, messages, tools, temperature, max_tokens, timeout_s, extra)
    base = float(os.environ.get("OPENSAGE_BACKOFF_BASE_S", BACKOFF_BASE_S))
    for attempt in range(retries + 1):
        started = time.perf_counter()
        try:
            response = await lib.acompletion(**kwargs)
        except Exception as exc:
            if type(exc).__name__ in RETRYABLE and attempt < retries:
                await asyncio.sleep(base * (2**attempt))
                continue
            raise ModelError(_retry_message(exc, attempt + 1)) from exc
        return _parse(lib, response, name, (time.perf_counter() - started) * 1000)
    raise AssertionError("unreachable")


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def _extract_json(text: str) -> str:
    m = _FENCE.search(text)
    if m:
        return m.group(1).strip()
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    return text[start:].strip() if start >= 0 else text.strip()


def _schema_prompt(schema: type[BaseModel]) -> str:
    return (
        "Answer with one JSON object only (no prose, no code fence) that validates against this "
        f"JSON Schema:\n{json.dumps(schema.model_json_schema(), indent=1)}"
    )


def _validate(schema: type[T], completion: Completion) -> T:
    return schema.model_validate_json(_extract_json(completion.content))


class _Attempts:
    """One structured-output conversation: the schema prompt, feedback on errors, usage."""

    def __init__(self, messages: list[dict], schema: type[T]) -> None:
        self.schema = schema
        self.convo = _with_schema(messages, schema)
        self.usage = Usage()
        self.errors: list[str] = []

    def accept(self, completion: Completion, attempt: int) -> "Structured[T] | None":
        """The validated answer, or None after queueing the error as feedback."""
        self.usage.add(completion.usage)
        try:
            return Structured(_validate(self.schema, completion), self.usage, attempt, self.errors)
        except (ValidationError, ValueError) as exc:
            self.errors.append(_short_error(exc))
            self.convo = self.convo + [
                {"role": "assistant", "content": completion.content},
                {"role": "user", "content": f"That answer was invalid: {self.errors[-1]}\nReturn corrected JSON only."},
            ]
            return None

    def failure(self, max_attempts: int) -> ModelError:
        return ModelError(
            f"the model returned an invalid {self.schema.__name__} {max_attempts} times: " + " | ".join(self.errors)
        )


def structured(
    messages: list[dict],
    schema: type[T],
    *,
    model: str | None = None,
    max_attempts: int = 3,
    temperature: float | None = None,
    **kwargs: Any,
) -> Structured[T]:
    """Ask for a JSON answer and parse it into ``schema``.

    The schema is appended to the system message; on invalid JSON or a validation error
    the error is fed back and the model tries again, at most ``max_attempts`` times in all.

    :raises ModelError: still invalid after ``max_attempts`` (message lists the errors).
    """
    run = _Attempts(messages, schema)
    for attempt in range(1, max_attempts + 1):
        done = run.accept(complete(run.convo, model=model, temperature=temperature, **kwargs), attempt)
        if done is not None:
            return done
    raise run.failure(max_attempts)


async def astructured(
    messages: list[dict],
    schema: type[T],
    *,
    model: str | None = None,
    max_attempts: int = 3,
    temperature: float | None = None,
    **kwargs: Any,
) -> Structured[T]:
    """Async :func:`structured` (same arguments and errors)."""
    run = _Attempts(messages, schema)
    for attempt in range(1, max_attempts + 1):
        done = run.accept(await acomplete(run.convo, model=model, temperature=temperature, **kwargs), attempt)
        if done is not None:
            return done
    raise run.failure(max_attempts)


def _with_schema(messages: list[dict], schema: type[BaseModel]) -> list[dict]:
    convo = [dict(m) for m in messages]
    instruction = _schema_prompt(schema)
    if convo and convo[0].get("role") == "system":
        convo[0]["content"] = f"{convo[0]['content']}\n\n{instruction}"
    else:
        convo.insert(0, {"role": "system", "content": instruction})
    return convo


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
            parts.append(f"{loc}: {err.get('msg')}")
        return "; ".join(parts)
    return str(exc)[:300]
