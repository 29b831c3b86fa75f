"""One model call through LiteLLM: `ModelRequest` in, `ModelResult` out.

`complete` streams the answer (text deltas go to an `on_delta` callback), reassembles
text and tool calls, reads usage and prices the call. Every failure leaves it as an
`ApplicationError` built by `classify`, the one place that maps LiteLLM, openai and
httpx exceptions to `ErrorType`s:

    ApplicationError(type=...)
    ├── RateLimited          429                                   retryable, Retry-After honoured
    ├── Timeout              408, read/connect timeouts, deadline  retryable
    ├── ProviderUnavailable  409, 5xx, connection errors,          retryable (503: Retry-After)
    │                        truncated or malformed responses
    ├── AuthFailed           401, 403                              non-retryable
    ├── ContextTooLong       context window exceeded, 413          non-retryable
    └── InvalidRequest       any other 4xx                         non-retryable

LiteLLM and the openai SDK below it never retry (``num_retries=0``, ``max_retries=0``):
Temporal's retry policy is the only retry loop. `CircuitBreaker` keeps per-provider
health for the caller's fallback chain; `complete` itself does not consult it.
"""

import asyncio
import contextlib
import enum
import functools
import os
import re
import sys
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx
import openai
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from activities.providers import grammar, json_protocol, openai_wire, tool_ranking
from core.errors import ErrorType
from core.payloads import ChatMessage, ModelRequest, ModelResult, ModelUsage, ToolCallRequest
from core.settings import Settings

if TYPE_CHECKING:
    from litellm.types.llms.openai import ChatCompletionToolParam

COST_MAP_ENV = "LITELLM_LOCAL_MODEL_COST_MAP"
"""Set to ``True`` in the environment (unless already set) before LiteLLM is imported."""


@functools.cache
def load_litellm() -> ModuleType:
    """LiteLLM, imported and configured on first use (once per process).

    Nothing imports LiteLLM at module level: importing it takes about a second, and it
    reads its configuration from the environment at that moment. Before the first
    import this sets `COST_MAP_ENV` to ``True`` unless the operator set it, the only
    change Colony makes to ``os.environ``: otherwise LiteLLM downloads its price map
    from GitHub at import (the bundled copy is used instead). Then it applies LiteLLM's
    process-wide settings once: no debug output, no prompts in logging callbacks, no
    tokenizer downloads, httpx instead of aiohttp.
    """
    os.environ.setdefault(COST_MAP_ENV, "True")
    with warnings.catch_warnings():
        # LiteLLM's own import-time deprecations (none in 1.106) must not fail
        # `filterwarnings = error` runs.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"litellm(\.|$)")
        # LiteLLM's response models build their pydantic schemas on first use, and pydantic
        # warns about the ReadOnly TypedDict items in them: build them here, once, instead
        # of inside the first model call.
        warnings.filterwarnings("ignore", message=r".*`ReadOnly` qualifier", category=UserWarning)
        import litellm
        from litellm.litellm_core_utils import model_response_utils
        from litellm.types.utils import ModelResponse, ModelResponseStream

        ModelResponse()
        ModelResponseStream()

    # LiteLLM 1.106 has no telemetry switch left; these keep it quiet and offline.
    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = True  # callbacks, if anyone adds them, never see prompts
    litellm.disable_hf_tokenizer_download = True  # token_counter uses the bundled tiktoken files
    # httpx, not LiteLLM's aiohttp transport: aiohttp warns on (and copies) request bodies
    # over 1 MB, which long conversations reach; httpx streams them.
    litellm.disable_aiohttp_transport = True
    if hasattr(model_response_utils, "_attribute_of"):
        model_response_utils._attribute_of = _class_level_attribute_of
    return litellm


def _class_level_attribute_of(source: object, name: str) -> object:
    # LiteLLM 1.106 probes every attribute of each usage chunk's delta, including
    # pydantic's model_fields/model_computed_fields, whose access on an instance is
    # deprecated (PydanticDeprecatedSince211): every streamed call with usage would warn,
    # and fail under `filterwarnings = error`. Its callers skip model_* names anyway,
    # so reading them from the class changes nothing but the warning.
    return getattr(type(source) if name.startswith("model_") else source, name)


def _is_litellm_error(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is LiteLLM's exception ``name`` (false while LiteLLM is not loaded).

    Only a loaded LiteLLM raises its exceptions, so classifying a failure never loads it.
    """
    exceptions = sys.modules.get("litellm.exceptions")
    return exceptions is not None and isinstance(exc, getattr(exceptions, name))


LOCAL_PLACEHOLDER_KEY = "not-needed"
"""Sent to OpenAI-compatible servers that ignore keys (llama.cpp, vLLM without auth)."""

MAX_RETRY_AFTER = timedelta(minutes=5)
_MAX_MESSAGE_CHARS = 500

OnDelta = Callable[[str], Awaitable[None]]


# -- resolution ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    """Where and how LiteLLM reaches a Colony model id."""

    litellm_model: str
    api_base: str | None
    api_key: str | None = field(repr=False)
    provider: str  # circuit-breaker and rate-limit key: the id's prefix
    openai_wire: bool = False  # called directly over the OpenAI protocol (openai_wire.py)


def resolve(model_id: str, settings: Settings) -> ResolvedModel:
    """Map a Colony model id to the LiteLLM model, endpoint and key to call it with.

    ``openai/...`` honours ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``, ``anthropic/...``
    uses ``ANTHROPIC_API_KEY``, ``ollama/...`` passes through and ``local/smollm2-135m``
    goes to the local llama.cpp server. Unknown prefixes pass through to LiteLLM unchanged
    (with its own environment-based defaults).
    """
    provider, _, name = model_id.partition("/")
    if not name:
        provider = _guess_provider(model_id)
    if provider == "openai":
        base = settings.openai_base_url.rstrip("/") if settings.openai_base_url else None
        key = _secret(settings.openai_api_key)
        if key is None and base is not None:
            key = LOCAL_PLACEHOLDER_KEY
        return ResolvedModel(model_id, base, key, provider, openai_wire=True)
    if provider == "anthropic":
        return ResolvedModel(model_id, None, _secret(settings.anthropic_api_key), provider)
    if provider == "local":
        # llama.cpp's OpenAI-compatible server serves the model under its Colony id.
        return ResolvedModel(
            f"openai/{model_id}",
            settings.effective_local_model_url,
            LOCAL_PLACEHOLDER_KEY,
            provider,
            openai_wire=True,
        )
    return ResolvedModel(model_id, None, None, provider)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _guess_provider(model_id: str) -> str:
    try:
        return str(load_litellm().get_llm_provider(model_id)[1])
    except Exception:
        return model_id


# -- rate limits ----------------------------------------------------------------------


class RateLimiter:
    """A token bucket: at most `rate` calls per second, bursts up to `burst` (default: none)."""

    def __init__(
        self,
        rate: float | None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else 1.0
        self._tokens = self.burst
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a call may start."""
        if self.rate is None:
            return
        async with self._lock:  # callers queue in order
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


_LIMITERS: dict[tuple[str, float | None], RateLimiter] = {}


def limiter_for(provider: str, settings: Settings) -> RateLimiter:
    """The worker's limiter of a provider (`COLONY_LLM_PROVIDER_RATE_LIMITS`; none: unlimited)."""
    rate = settings.llm_provider_rate_limits.get(provider)
    key = (provider, rate)
    limiter = _LIMITERS.get(key)
    if limiter is None:
        limiter = _LIMITERS[key] = RateLimiter(rate)
    return limiter


# -- the call --------------------------------------------------------------------------

_HTTP_CLIENTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]" = (
    weakref.WeakKeyDictionary()
)


def _http_client() -> httpx.AsyncClient:
    """One HTTP client per event loop for every model call, without a connection cap.

    LiteLLM's default client allows 100 connections, so the 101st concurrent model call
    would queue inside the worker instead of waiting on the provider; the llm lane's
    concurrency is bounded by the worker (`COLONY_LLM_MAX_CONCURRENCY`) instead.
    """
    loop = asyncio.get_running_loop()
    client = _HTTP_CLIENTS.get(loop)
    if client is None:
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
            follow_redirects=True,
        )
        _HTTP_CLIENTS[loop] = client
    return client


async def complete(
    request: ModelRequest, settings: Settings, *, on_delta: OnDelta | None = None
) -> ModelResult:
    """Run one streamed model call and return the reassembled answer.

    Args:
        request: The call; ``timeout_s`` bounds connect and every read, and the whole call.
        settings: Provider keys and endpoints.
        on_delta: Awaited with each text delta, in order, as it arrives.

    Returns:
        The assistant message with tool calls (arguments verbatim, even invalid JSON),
        finish reason, usage, latency and cost (None when the model's price is unknown).

    Raises:
        ApplicationError: Every provider failure, classified by `classify`. Exceptions
            raised by ``on_delta`` and cancellation propagate unchanged.
    """
    resolved = resolve(request.model, settings)
    protocol = json_protocol.applies(resolved.provider, request)
    if not protocol:
        messages = [_message_to_openai(m) for m in request.messages]
        kwargs = _call_kwargs(resolved, request, messages)
        if request.json_schema is not None:
            # Grammar-constrained servers (llama.cpp) take the schema, cut down to what
            # they compile safely; OpenAI-style APIs take JSON mode (the prompt describes
            # the shape). The caller validates the answer against the full schema.
            kwargs["response_format"] = (
                {"type": "json_object", "schema": grammar.grammar_safe(request.json_schema)}
                if resolved.provider in json_protocol.PROVIDERS
                else {"type": "json_object"}
            )
        if request.tools:
            kwargs["tools"] = _tools_to_openai(request)
        answer, latency_ms = await _stream(resolved, settings, kwargs, request.timeout_s, on_delta)
        message = answer.message()
        usage = answer.usage or _estimate_usage(resolved, messages, kwargs.get("tools"), message)
        return _result(request, resolved, message, answer.finish_reason, usage, latency_ms)

    # The JSON protocol: the turn plan decides what the model may say (json_protocol).
    turn = json_protocol.plan_turn(request, await _tool_scores(request))
    usage, latency_ms = ModelUsage(), 0.0
    while True:
        messages = json_protocol.messages(request, turn)
        kwargs = _call_kwargs(resolved, request, messages)
        kwargs["response_format"] = json_protocol.response_format(request, turn)
        # Protocol replies are JSON: the decoded answer is published whole, not streamed.
        answer, spent_ms = await _stream(resolved, settings, kwargs, request.timeout_s, None)
        raw = answer.message()
        if not (raw.content or "").strip() and not raw.tool_calls:
            # A grammar-constrained reply is never empty: the server cut the answer off.
            raise ApplicationError(
                f"{resolved.provider}: the model server ended its reply before any output "
                f"(finish reason {answer.finish_reason or 'none'}); retrying",
                type=ErrorType.PROVIDER_UNAVAILABLE.value,
            )
        message = json_protocol.decode(raw, request)
        step = answer.usage or _estimate_usage(resolved, messages, None, raw)
        usage = ModelUsage(
            prompt_tokens=usage.prompt_tokens + step.prompt_tokens,
            completion_tokens=usage.completion_tokens + step.completion_tokens,
        )
        latency_ms += spent_ms
        unusable = json_protocol.is_repeat(message, request) or json_protocol.is_protocol_fragment(
            message
        )
        if not unusable or turn.mode == "answer":
            break
        # A repeated call or a broken piece of protocol: ask once more for an answer only.
        turn = json_protocol.Turn("answer", ())
    if on_delta is not None and message.content:
        await on_delta(message.content)
    return _result(request, resolved, message, answer.finish_reason, usage, latency_ms)


def _result(
    request: ModelRequest,
    resolved: "ResolvedModel",
    message: ChatMessage,
    finish_reason: str | None,
    usage: ModelUsage,
    latency_ms: float,
) -> ModelResult:
    return ModelResult(
        message=message,
        finish_reason=finish_reason,
        usage=usage,
        model=request.model,
        cost_usd=cost_usd(resolved, usage),
        latency_ms=latency_ms,
    )


async def _tool_scores(request: ModelRequest) -> list[float] | None:
    """The offered tools' similarity to the user's words (None: no ranking this step)."""
    query = json_protocol.ranking_query(request)
    if query is None:
        return None
    texts = [json_protocol.tool_texts(t) for t in request.tools]
    return await asyncio.to_thread(tool_ranking.best_scores, query, texts)


def _call_kwargs(
    resolved: "ResolvedModel", request: ModelRequest, messages: list[dict[str, Any]]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": resolved.litellm_model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        # Temporal is the only retry loop: neither LiteLLM nor the SDK below may retry.
        "num_retries": 0,
        "max_retries": 0,
        "timeout": request.timeout_s,
    }
    if resolved.api_base is not None:
        kwargs["api_base"] = resolved.api_base
    if resolved.api_key is not None:
        kwargs["api_key"] = resolved.api_key
    if request.max_tokens is not None:
        kwargs["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    return kwargs


async def _stream(
    resolved: "ResolvedModel",
    settings: Settings,
    kwargs: dict[str, Any],
    timeout_s: float,
    on_delta: OnDelta | None,
) -> tuple["_Assembly", float]:
    """One streamed call: the reassembled answer and its latency in ms."""
    secrets = [resolved.api_key] if resolved.api_key else []
    await limiter_for(resolved.provider, settings).acquire()
    started = time.perf_counter()
    answer = _Assembly()
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            async with _open_stream(resolved, kwargs) as stream:
                async for chunk in stream:
                    text = answer.add(chunk)
                    if text and on_delta is not None:
                        try:
                            await on_delta(text)
                        except Exception as exc:
                            raise _CallbackError(exc) from exc
    except _CallbackError as wrapper:
        raise wrapper.error from None
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            exc = TimeoutError(f"no complete answer within {timeout_s:g} s")
        raise classify(
            exc,
            provider=resolved.provider,
            secrets=secrets,
            server_log=_server_log(resolved, settings),
        ) from None
    return answer, (time.perf_counter() - started) * 1000


def _server_log(resolved: ResolvedModel, settings: Settings) -> str | None:
    """The log of the model server `colony up` runs for this provider (the local model)."""
    if resolved.provider != "local":
        return None
    return str(settings.data_dir / "logs" / "local-model.log")


@contextlib.asynccontextmanager
async def _open_stream(resolved: ResolvedModel, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """The answer's chunks, closed when the block ends.

    Straight over the OpenAI wire where the endpoint speaks it, through LiteLLM otherwise.
    """
    if resolved.openai_wire:
        if resolved.api_key is None:
            raise ApplicationError(
                f"{resolved.provider}: no API key: set OPENAI_API_KEY (or OPENAI_BASE_URL "
                "for a server that needs none)",
                type=ErrorType.AUTH_FAILED.value,
                non_retryable=True,
            )
        body = {k: v for k, v in kwargs.items() if k not in _LITELLM_ONLY}
        body["model"] = openai_wire.wire_model(resolved.litellm_model)
        chunks = openai_wire.stream_chat(
            _http_client(),
            resolved.api_base or OPENAI_API_BASE,
            resolved.api_key,
            body,
            kwargs["timeout"],
        )
        try:
            yield chunks
        finally:
            await chunks.aclose()
        return
    load_litellm()
    import litellm  # loaded and configured just above, never at module level

    # Set per call: the client belongs to the running loop (LiteLLM reads this global).
    litellm.aclient_session = _http_client()
    stream: Any = await litellm.acompletion(**kwargs)
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


_LITELLM_ONLY = frozenset({"num_retries", "max_retries", "timeout", "api_base", "api_key"})

OPENAI_API_BASE = "https://api.openai.com/v1"


class _CallbackError(Exception):
    """Carries an exception raised by ``on_delta`` past the classifier."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


def _tools_to_openai(request: ModelRequest) -> "list[ChatCompletionToolParam]":
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in request.tools
    ]


def _message_to_openai(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": message.content or "",
        }
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    elif out["content"] is None:
        out["content"] = ""
    return out


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _Assembly:
    """Reassembles a streamed answer: text, tool calls by index, finish reason, usage."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None
        self.usage: ModelUsage | None = None

    def add(self, chunk: Any) -> str:
        """Fold one chunk in; returns its text delta ("" when none)."""
        usage = getattr(chunk, "usage", None)
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            self.usage = ModelUsage(
                prompt_tokens=int(usage.prompt_tokens or 0),
                completion_tokens=int(usage.completion_tokens or 0),
            )
        text = ""
        for choice in getattr(chunk, "choices", None) or []:
            if choice.finish_reason:
                self.finish_reason = str(choice.finish_reason)
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                text += delta.content
            for call in getattr(delta, "tool_calls", None) or []:
                self._add_call(call)
        if text:
            self.text.append(text)
        return text

    def _add_call(self, call: Any) -> None:
        index = call.index
        if index is None:  # some providers omit it: match by id, else a new call
            index = next(
                (i for i, c in self.calls.items() if call.id and c.id == call.id), len(self.calls)
            )
        partial = self.calls.setdefault(int(index), _PartialCall())
        if call.id and not partial.id:
            partial.id = call.id
        function = call.function
        if function is not None:
            if function.name and not partial.name:
                partial.name = function.name
            if function.arguments:
                partial.arguments.append(function.arguments)

    def message(self) -> ChatMessage:
        content = "".join(self.text)
        calls = [
            ToolCallRequest(id=c.id, name=c.name, arguments="".join(c.arguments))
            for _, c in sorted(self.calls.items())
        ]
        return ChatMessage(role="assistant", content=content or None, tool_calls=calls)


def _estimate_usage(
    resolved: ResolvedModel,
    messages: list[dict[str, Any]],
    tools: "list[ChatCompletionToolParam] | None",
    answer: ChatMessage,
) -> ModelUsage:
    # The provider sent no usage chunk (some OpenAI-compatible servers ignore
    # stream_options): estimate with LiteLLM's tokenizer (bundled tiktoken, offline).
    # Estimates are approximate, and so is the cost computed from them.
    completion = (answer.content or "") + "".join(c.name + c.arguments for c in answer.tool_calls)
    try:
        prompt_tokens = _prompt_tokens(resolved, messages, tools)
        completion_tokens = (
            load_litellm().token_counter(
                model=resolved.litellm_model, text=completion, count_response_tokens=True
            )
            if completion
            else 0
        )
    except Exception:
        return ModelUsage()
    return ModelUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def _prompt_tokens(
    resolved: ResolvedModel,
    messages: list[dict[str, Any]],
    tools: "list[ChatCompletionToolParam] | None",
) -> int:
    return int(
        load_litellm().token_counter(
            model=resolved.litellm_model,
            messages=messages,
            tools=tools or None,
        )
    )


def estimate_prompt_cost(request: ModelRequest, settings: Settings) -> float | None:
    """Approximate USD cost of the prompt alone, before calling (budget checks).

    Tokens are counted offline with LiteLLM's tokenizer; None when the model's price
    (or the count) is unknown, 0.0 for the local model.
    """
    resolved = resolve(request.model, settings)
    messages = [_message_to_openai(m) for m in request.messages]
    try:
        tokens = _prompt_tokens(resolved, messages, _tools_to_openai(request))
    except Exception:
        return None
    return cost_usd(resolved, ModelUsage(prompt_tokens=tokens))


def cost_usd(resolved: ResolvedModel, usage: ModelUsage) -> float | None:
    """USD cost of ``usage`` from LiteLLM's bundled price table; None when unpriced.

    The local model runs on our own hardware, so its price is known: zero.
    """
    if resolved.provider == "local":
        return 0.0
    if not _priced(resolved.litellm_model):
        return None
    try:
        prompt_cost, completion_cost = load_litellm().cost_per_token(
            model=resolved.litellm_model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
    except Exception:  # ModelNotMappedError and friends: the price is unknown
        return None
    return float(prompt_cost) + float(completion_cost)


def model_info(model: str) -> dict[str, Any]:
    """LiteLLM's bundled facts about a model (limits, prices); {} when it does not know it."""
    try:
        return dict(load_litellm().get_model_info(model))
    except Exception:
        return {}


@functools.lru_cache(maxsize=1024)
def _priced(litellm_model: str) -> bool:
    # For an unpriced model LiteLLM searches its whole price table and raises, on every
    # call; the table is bundled and fixed for the life of the process.
    try:
        load_litellm().cost_per_token(model=litellm_model, prompt_tokens=1, completion_tokens=1)
    except Exception:
        return False
    return True


# -- error classification --------------------------------------------------------------

_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many (input )?tokens",
    re.IGNORECASE,
)
# The openai SDK refuses to build a client without a key; LiteLLM reports that as a 500.
_MISSING_KEY = re.compile(r"missing credentials|api_key client option must be set", re.I)
_SECRET_PATTERNS = (
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-*]{6,}"), "[redacted]"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1[redacted]"),
)


def classify(
    exc: BaseException,
    *,
    provider: str,
    secrets: Iterable[str] = (),
    server_log: str | None = None,
) -> ApplicationError:
    """Translate any failure of a model call into Colony's `ApplicationError`.

    Args:
        exc: What LiteLLM, the openai SDK, httpx or the stream raised.
        provider: The provider prefix, named in the message.
        secrets: Values to blank out of the message (API keys); common key shapes are
            blanked anyway.
        server_log: For a model server Colony runs itself (the local model), its log
            file: a lost connection is then reported as the crash or restart it is.

    Returns:
        The error to raise: ``type`` is an `ErrorType` value, ``non_retryable`` follows
        from it, and a 429/503 ``Retry-After`` becomes ``next_retry_delay`` (at most
        `MAX_RETRY_AFTER`). An `ApplicationError` is returned unchanged.
    """
    if isinstance(exc, ApplicationError):
        return exc
    # LiteLLM wraps failures inside a stream; the provider's own exception says more.
    inner = getattr(exc, "original_exception", None)
    if _is_litellm_error(exc, "MidStreamFallbackError") and isinstance(inner, BaseException):
        exc = inner
    status = _status_code(exc)
    text = str(getattr(exc, "message", None) or exc) or "no details"
    error_type = _error_type(exc, status, text)

    delay = None
    if error_type.retryable and status in (429, 503):
        delay = _retry_after(exc)
    summary = f"HTTP {status}" if status is not None else "no HTTP status"
    message = f"{provider}: {type(exc).__name__} ({summary}): {text}"
    gone = _server_gone(exc) if server_log is not None else None
    if gone is not None:
        message = f"{provider}: {gone} (see {server_log}); {type(exc).__name__}: {text}"
    return ApplicationError(
        _scrub(message, secrets),
        {"provider": provider, "status_code": status, "exception": type(exc).__name__},
        type=error_type.value,
        non_retryable=not error_type.retryable,
        next_retry_delay=delay,
    )


_REFUSED = (httpx.ConnectError, ConnectionRefusedError)
_CUT = (
    httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError,
    ConnectionResetError, BrokenPipeError,
)  # fmt: skip


def _server_gone(exc: BaseException) -> str | None:
    """What a lost connection to the local model server means, in words (None: not that)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # SDKs wrap the httpx error
        seen.add(id(current))
        if isinstance(current, _REFUSED):
            return (
                "the local model server refused the connection: it is down, or restarting "
                "after a crash"
            )
        if isinstance(current, _CUT):
            return "the local model server crashed or restarted while answering"
        current = current.__cause__ or current.__context__
    return None


def _error_type(exc: BaseException, status: int | None, text: str) -> ErrorType:
    if _is_litellm_error(exc, "ContextWindowExceededError"):
        return ErrorType.CONTEXT_TOO_LONG
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return ErrorType.TIMEOUT
    if isinstance(
        exc, openai.AuthenticationError | openai.PermissionDeniedError
    ) or _MISSING_KEY.search(text):
        return ErrorType.AUTH_FAILED
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | ConnectionError):
        return ErrorType.PROVIDER_UNAVAILABLE
    if status is None:
        # Truncated streams, malformed JSON, unexpected shapes: a retry may get a clean answer.
        return ErrorType.PROVIDER_UNAVAILABLE
    if status in (401, 403):
        return ErrorType.AUTH_FAILED
    if status == 429:
        return ErrorType.RATE_LIMITED
    if status == 408:
        return ErrorType.TIMEOUT
    if status == 409 or status >= 500:
        return ErrorType.PROVIDER_UNAVAILABLE
    if status == 413 or (status in (400, 422) and _CONTEXT_LENGTH.search(text)):
        return ErrorType.CONTEXT_TOO_LONG
    if 400 <= status < 500:
        return ErrorType.INVALID_REQUEST
    return ErrorType.PROVIDER_UNAVAILABLE


def _status_code(exc: BaseException) -> int | None:
    for candidate in (getattr(exc, "status_code", None), _response_attr(exc, "status_code")):
        try:
            if candidate is not None:
                return int(candidate)
        except (TypeError, ValueError):
            continue
    return None


def _response_attr(exc: BaseException, name: str) -> Any:
    try:
        return getattr(getattr(exc, "response", None), name, None)
    except Exception:  # httpx raises on .response of request-only errors
        return None


def _retry_after(exc: BaseException) -> timedelta | None:
    # LiteLLM keeps the provider's headers in litellm_response_headers; its own
    # .response is synthetic. Its __context__ is the SDK error with the real ones.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for headers in (
            getattr(current, "litellm_response_headers", None),
            getattr(current, "headers", None),
            _response_attr(current, "headers"),
        ):
            delay = _parse_retry_after(headers)
            if delay is not None:
                return delay
        current = current.__cause__ or current.__context__
    return None


def _parse_retry_after(headers: Any) -> timedelta | None:
    if not headers or not hasattr(headers, "get"):
        return None
    seconds: float | None = None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            seconds = float(ms) / 1000
        elif (value := headers.get("retry-after")) is not None:
            try:
                seconds = float(value)
            except ValueError:
                when = parsedate_to_datetime(value)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                seconds = (when - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, IndexError):
        return None
    if seconds is None or seconds != seconds or seconds <= 0:  # absent, NaN or past
        return None
    return min(timedelta(seconds=seconds), MAX_RETRY_AFTER)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret != LOCAL_PLACEHOLDER_KEY:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


# -- circuit breaker -------------------------------------------------------------------


class BreakerState(enum.StrEnum):
    """States of a `CircuitBreaker`."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Per-provider health, shared by every call in the worker process (thread-safe).

    Closed: calls pass. ``failure_threshold`` consecutive unhealthy failures (retryable
    types: unavailable, rate limited, timeout) open it. Open: calls are refused for
    ``cooldown_s``. Half-open: one trial call passes; success closes the breaker, an
    unhealthy failure opens it for another cool-down. Failures that say nothing about
    the provider's health (bad request, auth, context too long) neither count nor
    reset the count; in half-open they free the trial slot for another call.
    """

    def __init__(
        self,
        provider: str,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None
        self._last_failure: str | None = None

    @property
    def state(self) -> BreakerState:
        """The current state (open turns half-open once the cool-down has passed)."""
        with self._lock:
            return self._current()

    @property
    def consecutive_failures(self) -> int:
        """Unhealthy failures since the last success."""
        with self._lock:
            return self._failures

    @property
    def last_failure(self) -> str | None:
        """The message of the latest unhealthy failure since the last success."""
        with self._lock:
            return self._last_failure

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open this claims the one trial slot."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.OPEN:
                return False
            now = self._clock()
            # A trial whose caller never reported back (crash, cancel) expires.
            if self._trial_started is not None and now - self._trial_started < self.cooldown_s:
                return False
            self._trial_started = now
            return True

    def record_success(self) -> None:
        """A call succeeded: close the breaker."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._trial_started = None
            self._last_failure = None

    def record_failure(
        self, error_type: ErrorType | str | None, message: str | None = None
    ) -> None:
        """A call failed with ``error_type`` (an `ErrorType` or its value) and ``message``."""
        with self._lock:
            state = self._current()
            self._trial_started = None
            if not _unhealthy(error_type):
                return
            self._failures += 1
            if message:
                self._last_failure = message
            if state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()

    def release(self) -> None:
        """A call ended without an outcome (cancelled): free the half-open trial slot."""
        with self._lock:
            self._trial_started = None

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._trial_started = None
        return self._state


_UNHEALTHY = frozenset({ErrorType.PROVIDER_UNAVAILABLE, ErrorType.RATE_LIMITED, ErrorType.TIMEOUT})


def _unhealthy(error_type: ErrorType | str | None) -> bool:
    # DependencyUnavailable is retryable too, but names our own dependencies (the
    # caller's database, say), not the provider.
    try:
        return error_type is not None and ErrorType(error_type) in _UNHEALTHY
    except ValueError:
        return False


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(provider: str) -> CircuitBreaker:
    """The process-wide breaker of ``provider`` (created closed, with defaults)."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(provider)
        if breaker is None:
            breaker = _BREAKERS[provider] = CircuitBreaker(provider)
        return breaker


def reset_breakers() -> None:
    """Forget every provider's breaker (tests, or an operator's reset)."""
    with _BREAKERS_LOCK:
        _BREAKERS.clear()


async def complete_with_breaker(
    request: ModelRequest,
    settings: Settings,
    *,
    on_delta: OnDelta | None = None,
    breaker: CircuitBreaker | None = None,
) -> ModelResult:
    """`complete`, guarded by the provider's circuit breaker.

    Raises:
        ApplicationError: ``ProviderUnavailable``, non-retryable, without calling the
            provider when the breaker is open (the caller moves on to its fallback); its
            message ends with the failure that last counted against the provider;
            otherwise whatever `complete` raises, after recording the outcome.
    """
    if breaker is None:
        breaker = breaker_for(resolve(request.model, settings).provider)
    if not breaker.allow():
        # "circuit open" alone leaves the run's reader guessing: name what kept failing.
        last = breaker.last_failure
        raise ApplicationError(
            f"{breaker.provider}: circuit open after repeated failures; "
            f"not calling {request.model} for now"
            + (f". Last failure: {_clip(last, _MAX_MESSAGE_CHARS - 150)}" if last else ""),
            {"provider": breaker.provider, "circuit": breaker.state.value, "last_failure": last},
            type=ErrorType.PROVIDER_UNAVAILABLE.value,
            non_retryable=True,
        )
    try:
        result = await complete(request, settings, on_delta=on_delta)
    except ApplicationError as exc:
        breaker.record_failure(exc.type, exc.message)
        raise
    except BaseException:
        breaker.release()
        raise
    breaker.record_success()
    return result
