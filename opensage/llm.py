"""The one door to language models (litellm), imported lazily.

Importing litellm costs about 2 s, so nothing here imports it at module level: commands
that need no model start fast. ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set before the
import so litellm never fetches its price list from the network.

The model is any litellm model string, from the ``model=`` argument or
``$OPENSAGE_MODEL`` (e.g. ``openai/gpt-4o-mini``, ``anthropic/claude-sonnet-4-5``,
``ollama/qwen2.5-coder``). Tests and benchmarks use ``scripted/<name>`` served by
:mod:`opensage.testing` through litellm's custom-provider mechanism.

Every request is bounded and retried as :func:`settings` reads from the environment
(``OPENSAGE_MODEL_TIMEOUT``, ``OPENSAGE_MODEL_RETRIES``, ``OPENSAGE_BACKOFF_BASE_S``,
``OPENSAGE_MAX_RETRY_AFTER_S``, ``OPENSAGE_API_BASE``; docs/run.md "Model calls"),
with tenacity and with the provider client's own retries off. Model output is bounded
too: answers over :data:`MAX_CONTENT_CHARS` are cut, tool-call arguments that are not a
JSON object become :attr:`ToolCall.error`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from opensage import litellm_lib
from opensage.errors import ModelError, ModelNotConfigured, UsageError

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
    "ModelUnavailable",
    "ModelRateLimited",
    "ModelTimedOut",
    "Settings",
    "settings",
    "extract_json",
    "price_known",
    "require_price",
]

T = TypeVar("T", bound=BaseModel)

#: Seconds one model request may take before it counts as hung (``$OPENSAGE_MODEL_TIMEOUT``).
DEFAULT_TIMEOUT_S = 60.0
#: Extra attempts after a retryable provider failure (``$OPENSAGE_MODEL_RETRIES``).
DEFAULT_PROVIDER_RETRIES = 3
#: First backoff wait in seconds, doubled per retry (``$OPENSAGE_BACKOFF_BASE_S``).
BACKOFF_BASE_S = 1.0
#: Longest ``Retry-After`` opensage waits, in seconds (``$OPENSAGE_MAX_RETRY_AFTER_S``); a
#: server asking for longer fails the call at once with a message saying so.
MAX_RETRY_AFTER_S = 30.0
#: Characters of one model answer kept; more is cut with a note (a model can return megabytes).
MAX_CONTENT_CHARS = 1_000_000
#: Positions (``{`` or ``[``) tried when looking for a JSON value inside prose.
MAX_JSON_STARTS = 20
#: Characters of an invalid structured answer echoed back to the model with the error.
FEEDBACK_ECHO_CHARS = 4_000

log = logging.getLogger("opensage.llm")

_script_checked = False


def _lib():
    """litellm, configured by :func:`opensage.litellm_lib.load`; in a process started with
    ``$OPENSAGE_SCRIPT`` (tests), the scripted provider is installed first."""
    global _script_checked
    lib = litellm_lib.load()
    if not _script_checked:
        _script_checked = True
        if os.environ.get("OPENSAGE_SCRIPT"):
            from opensage import testing  # noqa: PLC0415 - test double, loaded only when asked for

            testing.install_from_env()
    return lib


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
        """Prompt + completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "Usage") -> "Usage":
        """Add ``other``'s tokens, cost (USD), latency (ms) and calls to this one; returns self."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.latency_ms += other.latency_ms
        self.calls += other.calls
        return self


@dataclass
class ToolCall:
    """One tool call of the model.

    :param arguments: the decoded JSON object (``{}`` when ``error`` is set).
    :param raw_arguments: the arguments string exactly as the model sent it.
    :param error: why the arguments are unusable (not JSON, or JSON that is not an
        object, e.g. ``null`` or an array); the runner answers the model with it.
    """

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""
    error: str | None = None


def _tool_call(tc, index: int) -> ToolCall:
    raw = tc.function.arguments
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raw = "{}"  # no arguments at all: a tool without parameters
    text = raw if isinstance(raw, str) else json.dumps(raw)
    error = None
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        args, error = {}, f"the arguments are not valid JSON ({exc.msg} at character {exc.pos}): {text[:200]}"
    if error is None and not isinstance(args, dict):
        kind = "null" if args is None else type(args).__name__.replace("list", "a JSON array").replace("str", "a string")
        args, error = {}, f"the arguments must be a JSON object of named parameters, not {kind}: {text[:200]}"
    return ToolCall(id=tc.id or f"call_{index}", name=str(tc.function.name or ""), arguments=args,
                    raw_arguments=text, error=error)


@dataclass
class Completion:
    """One model answer: text, tool calls, and its usage."""

    content: str
    tool_calls: list[ToolCall]
    usage: Usage
    finish_reason: str | None = None
    model: str = ""
    #: characters of the answer as sent, when it was over :data:`MAX_CONTENT_CHARS` and cut
    cut_from: int | None = None

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


def _cost(lib, response, model: str, prompt_tokens: int, completion_tokens: int) -> float:
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    if cost is None:
        try:
            cost = lib.completion_cost(completion_response=response)
        except Exception:
            cost = None
    if not cost and not price_known(model):
        fallback = fallback_price_per_mtok()
        if fallback is not None:
            return (prompt_tokens + completion_tokens) * fallback / 1e6
    return float(cost or 0.0)


def fallback_price_per_mtok() -> float | None:
    """``$OPENSAGE_PRICE_PER_MTOK``: USD per million tokens (prompt and completion alike)
    for a model litellm has no price for; None when unset. Raises UsageError when malformed."""
    if not os.environ.get("OPENSAGE_PRICE_PER_MTOK", "").strip():
        return None
    return _env_number("OPENSAGE_PRICE_PER_MTOK", 0.0)


def price_known(model: str | None = None) -> bool:
    """Whether litellm's price map has a per-token price for ``model`` (``$OPENSAGE_MODEL``)."""
    lib = _lib()
    try:
        info = lib.get_model_info(model_name(model))
    except Exception:
        return False
    return bool(info.get("input_cost_per_token") or info.get("output_cost_per_token"))


def require_price(model: str | None = None, what: str = "--max-cost") -> None:
    """Refuse a cost budget that could never trigger.

    litellm reports $0 for a model missing from its price map (a local or custom
    endpoint), so a USD budget would silently never stop anything. Passes when the price
    is known or ``$OPENSAGE_PRICE_PER_MTOK`` gives one.

    :raises UsageError: no price for the model (the message says how to give one).
    """
    if fallback_price_per_mtok() is not None or price_known(model):
        return
    raise UsageError(
        f"{what} needs the model's price, and litellm's price map has none for {model_name(model)!r} "
        "(a local or custom endpoint), so every call would cost $0 and the budget would never stop anything. "
        "Set OPENSAGE_PRICE_PER_MTOK to its price in USD per million tokens (e.g. OPENSAGE_PRICE_PER_MTOK=5), "
        "or limit the run by tokens instead (--max-tokens).")


def _parse(lib, response, model: str, latency_ms: float) -> Completion:
    choice = response.choices[0]
    message = choice.message
    calls = [_tool_call(tc, i) for i, tc in enumerate(getattr(message, "tool_calls", None) or [])]
    usage = getattr(response, "usage", None)
    content = message.content or ""
    cut_from = None
    if len(content) > MAX_CONTENT_CHARS:
        log.warning("model answer of %d characters cut to %d", len(content), MAX_CONTENT_CHARS)
        cut_from = len(content)
        content = content[:MAX_CONTENT_CHARS] + f"\n[... cut: {len(content) - MAX_CONTENT_CHARS} more characters]"
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    return Completion(
        content=content,
        tool_calls=calls,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=_cost(lib, response, model, prompt_tokens, completion_tokens),
            latency_ms=latency_ms,
            calls=1,
        ),
        finish_reason=getattr(choice, "finish_reason", None),
        model=model,
        cut_from=cut_from,
    )


class ModelUnavailable(ModelError):
    """The provider failed on every attempt (HTTP error, connection error, timeout).

    :ivar attempts: requests made (the server saw exactly this many; the provider
        client's own retries are switched off).
    """

    attempts: int = 0


class ModelRateLimited(ModelUnavailable):
    """The provider answered HTTP 429 (rate limit or quota) on every attempt."""


class ModelTimedOut(ModelUnavailable):
    """No answer within the per-request timeout on any attempt (a hung or overloaded endpoint)."""


@dataclass(frozen=True)
class Settings:
    """How model calls are made, from the environment (seconds unless said otherwise).

    :param timeout_s: per-request limit (``OPENSAGE_MODEL_TIMEOUT``, default 60).
    :param retries: extra attempts after a retryable failure (``OPENSAGE_MODEL_RETRIES``,
        default 3: at most 4 requests per call).
    :param backoff_s: first wait between attempts, doubled each time
        (``OPENSAGE_BACKOFF_BASE_S``, default 1).
    :param max_retry_after_s: longest ``Retry-After`` honoured (``OPENSAGE_MAX_RETRY_AFTER_S``,
        default 30).
    :param api_base: base URL of an OpenAI-compatible endpoint (``OPENSAGE_API_BASE``),
        passed to litellm as ``api_base``; None = the provider's default (for
        ``openai/*`` models litellm also reads ``OPENAI_API_BASE``).
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_PROVIDER_RETRIES
    backoff_s: float = BACKOFF_BASE_S
    max_retry_after_s: float = MAX_RETRY_AFTER_S
    api_base: str | None = None


def _env_number(name: str, default: float, *, integer: bool = False, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or value != value:
        kind = "a whole number" if integer else "a number of seconds"
        raise UsageError(f"{name}={raw!r} is not valid; set it to {kind} >= {minimum:g}, or unset it "
                         f"for the default ({default:g}).")
    return value


def settings() -> Settings:
    """The :class:`Settings` in force. Raises UsageError for a malformed variable."""
    timeout = _env_number("OPENSAGE_MODEL_TIMEOUT", DEFAULT_TIMEOUT_S, minimum=0.01)
    return Settings(
        timeout_s=timeout,
        retries=int(_env_number("OPENSAGE_MODEL_RETRIES", DEFAULT_PROVIDER_RETRIES, integer=True)),
        backoff_s=_env_number("OPENSAGE_BACKOFF_BASE_S", BACKOFF_BASE_S),
        max_retry_after_s=_env_number("OPENSAGE_MAX_RETRY_AFTER_S", MAX_RETRY_AFTER_S),
        api_base=os.environ.get("OPENSAGE_API_BASE", "").strip() or None,
    )


def _request(model: str, messages: list[dict], tools, temperature, max_tokens, timeout_s, conf: Settings,
             extra) -> dict:
    # max_retries=0: the provider client (openai's SDK retries twice by default) must not
    # retry underneath us, so the attempts we report are the requests the server sees.
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "timeout": timeout_s, "max_retries": 0}
    if conf.api_base:
        kwargs["api_base"] = conf.api_base
    kwargs.update(extra)
    if tools:
        kwargs["tools"] = tools
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    return kwargs


def _retryable_classes(lib) -> tuple[type[BaseException], ...]:
    names = ("RateLimitError", "Timeout", "APIConnectionError", "ServiceUnavailableError",
             "InternalServerError", "BadGatewayError")
    return tuple(c for c in (getattr(lib, n, None) for n in names) if isinstance(c, type))


def _headers(exc: BaseException) -> dict[str, str]:
    found: dict[str, str] = {}
    for source in (getattr(exc, "litellm_response_headers", None),
                   getattr(getattr(exc, "response", None), "headers", None)):
        try:
            found.update({str(k).lower(): str(v) for k, v in dict(source or {}).items()})
        except (TypeError, ValueError):
            continue
    return found


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, ``Retry-After`` seconds or
    HTTP date, RFC 9110 §10.2.3), or None when it did not say."""
    headers = _headers(exc)
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        raw = headers.get("retry-after")
        if raw is None:
            return None
        try:
            return max(0.0, float(raw))
        except ValueError:
            import email.utils  # noqa: PLC0415 - rare: an HTTP-date Retry-After

            when = email.utils.parsedate_to_datetime(raw)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


class _Policy:
    """The retry policy of one call, for tenacity: which failures, how long to wait, announcements."""

    def __init__(self, lib, conf: Settings, on_retry: Callable[[dict], None] | None) -> None:
        self.classes = _retryable_classes(lib)
        self.rate_limit = getattr(lib, "RateLimitError", ())
        self.timeout_cls = getattr(lib, "Timeout", ())
        self.conf = conf
        self.on_retry = on_retry
        self.attempts = 0
        self.too_long: float | None = None  # a Retry-After above the bound: stop at once

    def retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, self.classes):
            return False
        asked = retry_after_s(exc)
        if asked is not None and asked > self.conf.max_retry_after_s:
            self.too_long = asked
            return False
        return True

    def wait(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_s(exc) if exc is not None else None
        if asked is not None:
            return min(asked, self.conf.max_retry_after_s)
        return self.conf.backoff_s * (2 ** (state.attempt_number - 1))

    def before_sleep(self, state) -> None:
        exc = state.outcome.exception()
        info = {"kind": "retry", "attempt": state.attempt_number, "attempts": self.conf.retries + 1,
                "wait_s": round(state.next_action.sleep, 2), "error": _describe(self, exc)}
        if self.on_retry is not None:
            try:
                self.on_retry(info)
            except Exception:  # a broken progress display must not stop the call
                pass
        else:
            log.warning("model call %s (attempt %d of %d); retrying in %.1f s", info["error"],
                        info["attempt"], info["attempts"], info["wait_s"])

    def tenacity_kwargs(self) -> dict[str, Any]:
        import tenacity  # noqa: PLC0415 - only model calls need it

        return dict(stop=tenacity.stop_after_attempt(self.conf.retries + 1), wait=self.wait,
                    retry=tenacity.retry_if_exception(self.retryable), before_sleep=self.before_sleep,
                    reraise=True)

    def failure(self, exc: BaseException) -> ModelError:
        return _failure(self, exc)


def _describe(policy: _Policy, exc: BaseException | None) -> str:
    if policy.timeout_cls and isinstance(exc, policy.timeout_cls):
        return f"got no answer within {policy.conf.timeout_s:g} s"
    if policy.rate_limit and isinstance(exc, policy.rate_limit):
        return "was rate-limited by the provider (HTTP 429)"
    status = getattr(exc, "status_code", None)
    return f"failed ({type(exc).__name__}{f', HTTP {status}' if status else ''})"


def _failure(policy: _Policy, exc: BaseException) -> ModelError:
    n = policy.attempts
    detail = f"{type(exc).__name__}: {str(exc)[:500]}"
    if not isinstance(exc, policy.classes):
        return ModelError(f"model call failed after {n} attempt(s): {detail}")
    head = f"model call failed after {n} attempt(s) ({n} request(s) sent)"
    if policy.timeout_cls and isinstance(exc, policy.timeout_cls):
        err: ModelUnavailable = ModelTimedOut(
            f"{head}: no answer within {policy.conf.timeout_s:g} s on any attempt ({detail}). The endpoint is "
            "hung or overloaded: check that it is up, or allow more time with OPENSAGE_MODEL_TIMEOUT=<seconds>.")
    elif policy.rate_limit and isinstance(exc, policy.rate_limit):
        if policy.too_long is not None:
            wait = (f"the provider asks to wait {policy.too_long:g} s (Retry-After), longer than "
                    f"OPENSAGE_MAX_RETRY_AFTER_S={policy.conf.max_retry_after_s:g}")
        else:
            wait = "it kept refusing after the waits it asked for"
        err = ModelRateLimited(
            f"{head}: rate-limited by the provider (HTTP 429; {wait}) ({detail}). Wait and run the command "
            "again, lower the load (fewer parallel ensemble strategies), or raise your quota with the provider; "
            "OPENSAGE_MODEL_RETRIES and OPENSAGE_MAX_RETRY_AFTER_S allow more or longer waits.")
    else:
        err = ModelUnavailable(
            f"{head}: {detail}. The provider or endpoint failed every time; check it (OPENSAGE_MODEL, "
            "OPENSAGE_API_BASE) and run again.")
    err.attempts = n
    return err


def complete(
    messages: list[dict],
    *,
    model: str | None = None,
    tools: list[dict] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout_s: float | None = None,
    retries: int | None = None,
    on_retry: Callable[[dict], None] | None = None,
    **extra: Any,
) -> Completion:
    """One chat completion.

    Retries (with tenacity) rate limits (HTTP 429), timeouts, connection errors and HTTP
    500/502/503: waits ``Retry-After`` when the server sends one (at most
    ``OPENSAGE_MAX_RETRY_AFTER_S``; a longer request fails at once), else 1 s, 2 s, 4 s ...
    (``OPENSAGE_BACKOFF_BASE_S`` scales it). The provider client's own retries are off,
    so ``n attempt(s)`` in an error is the number of requests the server received.

    :param messages: OpenAI-format messages.
    :param tools: OpenAI-format tool definitions (``{"type": "function", "function": {...}}``).
    :param timeout_s: per-request timeout in seconds (None: ``OPENSAGE_MODEL_TIMEOUT``, default 60).
    :param retries: extra attempts (None: ``OPENSAGE_MODEL_RETRIES``, default 3).
    :param on_retry: called before each wait with ``{"kind": "retry", "attempt": int,
        "attempts": int, "wait_s": float, "error": str}``; without it a warning is logged.
    :raises ModelNotConfigured: no model given and ``$OPENSAGE_MODEL`` unset.
    :raises UsageError: a malformed ``OPENSAGE_MODEL_*`` variable.
    :raises ModelRateLimited, ModelTimedOut, ModelUnavailable: the provider failed on every attempt.
    :raises ModelError: a non-retryable provider error (bad request, authentication...).
    """
    import tenacity  # noqa: PLC0415

    name = model_name(model)
    conf = _with_overrides(settings(), timeout_s, retries)
    lib = _lib()
    kwargs = _request(name, messages, tools, temperature, max_tokens, conf.timeout_s, conf, extra)
    policy = _Policy(lib, conf, on_retry)
    try:
        for attempt in tenacity.Retrying(**policy.tenacity_kwargs()):
            with attempt:
                policy.attempts = attempt.retry_state.attempt_number
                started = time.perf_counter()
                response = lib.completion(**kwargs)
    except Exception as exc:
        raise policy.failure(exc) from exc
    return _parse(lib, response, name, (time.perf_counter() - started) * 1000)


async def acomplete(
    messages: list[dict],
    *,
    model: str | None = None,
    tools: list[dict] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout_s: float | None = None,
    retries: int | None = None,
    on_retry: Callable[[dict], None] | None = None,
    **extra: Any,
) -> Completion:
    """Async :func:`complete` (same arguments, retries and errors), for parallel ensembles."""
    import tenacity  # noqa: PLC0415

    name = model_name(model)
    conf = _with_overrides(settings(), timeout_s, retries)
    lib = _lib()
    kwargs = _request(name, messages, tools, temperature, max_tokens, conf.timeout_s, conf, extra)
    policy = _Policy(lib, conf, on_retry)
    try:
        async for attempt in tenacity.AsyncRetrying(**policy.tenacity_kwargs()):
            with attempt:
                policy.attempts = attempt.retry_state.attempt_number
                started = time.perf_counter()
                response = await lib.acompletion(**kwargs)
    except Exception as exc:
        raise policy.failure(exc) from exc
    return _parse(lib, response, name, (time.perf_counter() - started) * 1000)


def _with_overrides(conf: Settings, timeout_s: float | None, retries: int | None) -> Settings:
    from dataclasses import replace  # noqa: PLC0415

    if timeout_s is not None:
        conf = replace(conf, timeout_s=float(timeout_s))
    if retries is not None:
        conf = replace(conf, retries=max(0, int(retries)))
    return conf


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_DECODER = json.JSONDecoder()


def extract_json(text: str) -> str:
    """The JSON value in a model answer, as text.

    Tries, in order: the whole answer; the first fenced block; the first complete JSON
    value starting at a ``{`` or ``[`` (``json.JSONDecoder.raw_decode``, so prose after
    it, or braces inside its strings, do not matter). Falls back to the stripped text so
    the caller's parse error names the problem.
    """
    stripped = (text or "").strip()
    try:
        json.loads(stripped)
        return stripped
    except (ValueError, RecursionError):
        pass
    m = _FENCE.search(stripped)
    if m:
        inner = m.group(1).strip()
        try:
            json.loads(inner)
            return inner
        except (ValueError, RecursionError):
            pass
    starts = (i for i, ch in enumerate(stripped) if ch in "{[")
    for _, start in zip(range(MAX_JSON_STARTS), starts):
        try:
            _, end = _DECODER.raw_decode(stripped, start)
        except (ValueError, RecursionError):
            continue
        return stripped[start:end]
    return m.group(1).strip() if m else stripped


def _schema_prompt(schema: type[BaseModel]) -> str:
    return (
        "Answer with one JSON object only (no prose, no code fence) that validates against this "
        f"JSON Schema:\n{json.dumps(schema.model_json_schema(), indent=1)}"
    )


def _validate(schema: type[T], completion: Completion) -> T:
    return schema.model_validate_json(extract_json(completion.content))


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
            if completion.cut_from is not None:
                raise ValueError(f"the answer was {completion.cut_from} characters long, over the "
                                 f"{MAX_CONTENT_CHARS}-character bound; answer with a much shorter JSON object")
            return Structured(_validate(self.schema, completion), self.usage, attempt, self.errors)
        except (ValidationError, ValueError) as exc:
            self.errors.append(_short_error(exc))
            self.convo = self.convo + [
                {"role": "assistant", "content": _echo(completion.content)},
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


def _echo(content: str) -> str:
    """An invalid answer as fed back to the model, cut to :data:`FEEDBACK_ECHO_CHARS`."""
    if len(content) <= FEEDBACK_ECHO_CHARS:
        return content
    return content[:FEEDBACK_ECHO_CHARS] + f"\n[... {len(content) - FEEDBACK_ECHO_CHARS} more characters not shown]"


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
