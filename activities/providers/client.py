"""One model call: `ModelRequest` in, `ModelResult` out.

`complete` streams the answer (text deltas go to an `on_delta` callback), reassembles
text and tool calls, reads usage and prices the call (pricing.py). It goes straight over
the OpenAI wire where the endpoint speaks it (openai_wire.py), through LiteLLM
otherwise. Every failure leaves it as an `ApplicationError` built by `errors.classify`.

LiteLLM and the openai SDK below it never retry (``num_retries=0``, ``max_retries=0``):
Temporal's retry policy is the only retry loop. `CircuitBreaker` keeps per-provider
health for the caller's fallback chain (`complete_with_breaker`); `complete` itself
does not consult it.

`ModelClient` holds what a worker's calls share (rate limiters, breakers, HTTP clients);
the worker registry builds one per process and passes it to the activity classes.
"""

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
from temporalio.exceptions import ApplicationError

from activities.providers import grammar, json_protocol, openai_wire, tool_ranking
from activities.providers.breaker import Breakers, CircuitBreaker
from activities.providers.errors import MAX_MESSAGE_CHARS, classify
from activities.providers.limits import RateLimits
from activities.providers.litellm_loader import load_litellm
from activities.providers.openai_wire import message_to_openai, tools_to_openai
from activities.providers.pricing import cost_usd, estimate_usage
from activities.providers.routing import OPENAI_API_BASE, ResolvedModel, resolve
from core.errors import ErrorType
from core.payloads import ChatMessage, ModelRequest, ModelResult, ModelUsage, ToolCallRequest
from core.settings import Settings

OnDelta = Callable[[str], Awaitable[None]]


class HttpClients:
    """The HTTP client of every model call: one per event loop, without a connection cap.

    LiteLLM's default client allows 100 connections, so the 101st concurrent model call
    would queue inside the worker instead of waiting on the provider; the llm lane's
    concurrency is bounded by the worker (`COLONY_LLM_MAX_CONCURRENCY`) instead.
    """

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> httpx.AsyncClient:
        """The running event loop's client, created on first use."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
                follow_redirects=True,
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the running event loop's client (clients of other loops went with them)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


class ModelClient:
    """A worker's model calls, with the clients they share: rate limits, breakers, HTTP.

    The worker registry builds one per process and hands it to every activity class that
    calls models, so all of them wait on the same rate limiters and see the same provider
    health. Tests build their own, or pass fakes for ``limits``, ``breakers`` and
    ``http``. Building one does no I/O: HTTP clients open, and LiteLLM loads, on first use.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        limits: RateLimits | None = None,
        breakers: Breakers | None = None,
        http: HttpClients | None = None,
    ) -> None:
        self.settings = settings
        self.limits = RateLimits(settings.llm_provider_rate_limits) if limits is None else limits
        self.breakers = Breakers() if breakers is None else breakers
        self.http = HttpClients() if http is None else http

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def complete(
        self, request: ModelRequest, *, on_delta: OnDelta | None = None
    ) -> ModelResult:
        """Run one streamed model call and return the reassembled answer.

        Args:
            request: The call; ``timeout_s`` bounds connect and every read, and the whole call.
            on_delta: Awaited with each text delta, in order, as it arrives.

        Returns:
            The assistant message with tool calls (arguments verbatim, even invalid JSON),
            finish reason, usage, latency and cost (None when the model's price is unknown).

        Raises:
            ApplicationError: Every provider failure, classified by `classify`. Exceptions
                raised by ``on_delta`` and cancellation propagate unchanged.
        """
        resolved = resolve(request.model, self.settings)
        protocol = json_protocol.applies(resolved.provider, request)
        if not protocol:
            messages = [message_to_openai(m) for m in request.messages]
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
                kwargs["tools"] = tools_to_openai(request)
            answer, latency_ms = await self._stream(resolved, kwargs, request.timeout_s, on_delta)
            message = answer.message()
            usage = answer.usage or estimate_usage(resolved, messages, kwargs.get("tools"), message)
            return _result(request, resolved, message, answer.finish_reason, usage, latency_ms)

        # The JSON protocol: the turn plan decides what the model may say (json_protocol).
        turn = json_protocol.plan_turn(request, await _tool_scores(request))
        usage, latency_ms = ModelUsage(), 0.0
        while True:
            messages = json_protocol.messages(request, turn)
            kwargs = _call_kwargs(resolved, request, messages)
            kwargs["response_format"] = json_protocol.response_format(request, turn)
            # Protocol replies are JSON: the decoded answer is published whole, not streamed.
            answer, spent_ms = await self._stream(resolved, kwargs, request.timeout_s, None)
            raw = answer.message()
            if not (raw.content or "").strip() and not raw.tool_calls:
                # A grammar-constrained reply is never empty: the server cut the answer off.
                raise ApplicationError(
                    f"{resolved.provider}: the model server ended its reply before any output "
                    f"(finish reason {answer.finish_reason or 'none'}); retrying",
                    type=ErrorType.PROVIDER_UNAVAILABLE.value,
                )
            message = json_protocol.decode(raw, request)
            step = answer.usage or estimate_usage(resolved, messages, None, raw)
            usage = ModelUsage(
                prompt_tokens=usage.prompt_tokens + step.prompt_tokens,
                completion_tokens=usage.completion_tokens + step.completion_tokens,
            )
            latency_ms += spent_ms
            unusable = json_protocol.is_repeat(
                message, request
            ) or json_protocol.is_protocol_fragment(message)
            if not unusable or turn.mode == "answer":
                break
            # A repeated call or a broken piece of protocol: ask once more for an answer only.
            turn = json_protocol.Turn("answer", ())
        if on_delta is not None and message.content:
            await on_delta(message.content)
        return _result(request, resolved, message, answer.finish_reason, usage, latency_ms)

    async def complete_with_breaker(
        self,
        request: ModelRequest,
        *,
        on_delta: OnDelta | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> ModelResult:
        """`complete`, guarded by the provider's circuit breaker (this worker's, by default).

        Raises:
            ApplicationError: ``ProviderUnavailable``, non-retryable, without calling the
                provider when the breaker is open (the caller moves on to its fallback); its
                message ends with the failure that last counted against the provider;
                otherwise whatever `complete` raises, after recording the outcome.
        """
        if breaker is None:
            breaker = self.breakers.for_provider(resolve(request.model, self.settings).provider)
        if not breaker.allow():
            # "circuit open" alone leaves the run's reader guessing: name what kept failing.
            last = breaker.last_failure
            raise ApplicationError(
                f"{breaker.provider}: circuit open after repeated failures; "
                f"not calling {request.model} for now"
                + (f". Last failure: {_clip(last, MAX_MESSAGE_CHARS - 150)}" if last else ""),
                {
                    "provider": breaker.provider,
                    "circuit": breaker.state.value,
                    "last_failure": last,
                },
                type=ErrorType.PROVIDER_UNAVAILABLE.value,
                non_retryable=True,
            )
        try:
            result = await self.complete(request, on_delta=on_delta)
        except ApplicationError as exc:
            breaker.record_failure(exc.type, exc.message)
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.record_success()
        return result

    async def _stream(
        self,
        resolved: ResolvedModel,
        kwargs: dict[str, Any],
        timeout_s: float,
        on_delta: OnDelta | None,
    ) -> tuple["_Assembly", float]:
        """One streamed call: the reassembled answer and its latency in ms."""
        secrets = [resolved.api_key] if resolved.api_key else []
        await self.limits.for_provider(resolved.provider).acquire()
        started = time.perf_counter()
        answer = _Assembly()
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                async with self._open_stream(resolved, kwargs) as stream:
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
                server_log=_server_log(resolved, self.settings),
            ) from None
        return answer, (time.perf_counter() - started) * 1000

    @contextlib.asynccontextmanager
    async def _open_stream(
        self, resolved: ResolvedModel, kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
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
                self.http.get(),
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
        litellm.aclient_session = self.http.get()
        stream: Any = await litellm.acompletion(**kwargs)
        try:
            yield stream
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def _result(
    request: ModelRequest,
    resolved: ResolvedModel,
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
    resolved: ResolvedModel, request: ModelRequest, messages: list[dict[str, Any]]
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


def _server_log(resolved: ResolvedModel, settings: Settings) -> str | None:
    """The log of the model server `colony up` runs for this provider (the local model)."""
    if resolved.provider != "local":
        return None
    return str(settings.data_dir / "logs" / "local-model.log")


_LITELLM_ONLY = frozenset({"num_retries", "max_retries", "timeout", "api_base", "api_key"})


class _CallbackError(Exception):
    """Carries an exception raised by ``on_delta`` past the classifier."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


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


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
