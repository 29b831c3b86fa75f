"""The provider layer of the LLM lane, against the scripted OpenAI-compatible server over HTTP."""

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import openai
import pytest
from temporalio.exceptions import ApplicationError

from activities.providers import json_protocol
from activities.providers.breaker import BreakerState, CircuitBreaker
from activities.providers.client import ModelClient
from activities.providers.errors import MAX_RETRY_AFTER, classify
from activities.providers.grammar import grammar_safe
from activities.providers.litellm_loader import load_litellm
from activities.providers.pricing import cost_usd, estimate_prompt_cost, estimate_usage
from activities.providers.routing import ResolvedModel, resolve
from core.errors import ErrorType
from core.payloads import (
    ChatMessage,
    ModelRequest,
    ModelResult,
    ModelUsage,
    ToolCallRequest,
    ToolSchema,
)
from core.settings import Settings
from tests.conftest import make_settings
from tests.support.model_server import (
    ScriptedModelServer,
    Step,
    fault,
    hang,
    malformed_json,
    reply,
    tool_call,
    tool_calls,
    truncated_stream,
)
from tests.support.models import complete
from workers.process import free_port

litellm = load_litellm()  # configured as the client uses it

MODEL = "openai/scripted-model"
LOCAL = "local/smollm2-135m"
SECRET = "sk-colony-test-9f8e7d6c5b4a"
CONTEXT_BODY = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, your "
        "messages resulted in 9000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
CALCULATOR = ToolSchema(
    name="calculator",
    description="Evaluate an arithmetic expression.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)


def settings_for(server: ScriptedModelServer, **env: str) -> Settings:
    return make_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="k", **env)


def ask(
    text: str = "hi",
    *,
    model: str = MODEL,
    timeout_s: float = 5.0,
    tools: list[ToolSchema] | None = None,
) -> ModelRequest:
    return ModelRequest(
        model=model,
        messages=[ChatMessage(role="user", content=text)],
        tools=tools or [],
        timeout_s=timeout_s,
    )


async def failure(request: ModelRequest, settings: Settings) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await complete(request, settings)
    return caught.value


async def complete_with_breaker(
    request: ModelRequest, settings: Settings, *, breaker: CircuitBreaker
) -> ModelResult:
    async with ModelClient(settings) as client:
        return await client.complete_with_breaker(request, breaker=breaker)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- successful calls ------------------------------------------------------------------


async def test_plain_reply_with_usage(model_server: ScriptedModelServer) -> None:
    model_server.script(reply("Hello there!", usage={"prompt_tokens": 12, "completion_tokens": 3}))
    request = ModelRequest(
        model=MODEL,
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Say hello."),
        ],
        max_tokens=50,
        temperature=0.2,
    )

    result = await complete(request, settings_for(model_server))

    assert result.message == ChatMessage(role="assistant", content="Hello there!")
    assert result.finish_reason == "stop"
    assert result.usage == ModelUsage(prompt_tokens=12, completion_tokens=3)
    assert result.model == MODEL
    assert result.latency_ms > 0
    [sent] = model_server.chat_requests()
    assert sent.body["model"] == "scripted-model"
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_tokens"] == 50
    assert sent.body["temperature"] == 0.2
    assert "tools" not in sent.body
    assert sent.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert sent.headers["authorization"] == "Bearer k"


async def test_calls_reuse_one_connection(model_server: ScriptedModelServer) -> None:
    # The stream is read to its end after [DONE]: a response closed early closes its
    # connection, and every model call then paid for a new one.
    model_server.script(reply("one"), reply("two"), reply("three"))
    async with ModelClient(settings_for(model_server)) as client:
        for _ in range(3):
            await client.complete(ask())

    assert len(model_server.chat_requests()) == 3
    assert model_server.connections_accepted == 1


async def test_text_deltas_reach_on_delta_in_order(model_server: ScriptedModelServer) -> None:
    text = "Streaming answers arrive word by word, in order."
    model_server.script(reply(text))
    deltas: list[str] = []

    async def on_delta(delta: str) -> None:
        deltas.append(delta)

    result = await complete(ask(), settings_for(model_server), on_delta=on_delta)

    assert len(deltas) >= 5
    assert "".join(deltas) == text == result.message.content


async def test_single_tool_call(model_server: ScriptedModelServer) -> None:
    model_server.script(tool_calls(tool_call("calculator", {"expression": "2+2"}, id="call_a")))

    result = await complete(ask("2+2?", tools=[CALCULATOR]), settings_for(model_server))

    assert result.finish_reason == "tool_calls"
    assert result.message.content is None
    assert result.message.tool_calls == [
        ToolCallRequest(id="call_a", name="calculator", arguments='{"expression": "2+2"}')
    ]
    [sent] = model_server.chat_requests()
    assert sent.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": CALCULATOR.description,
                "parameters": CALCULATOR.parameters,
            },
        }
    ]


async def test_parallel_tool_calls_keep_arguments_verbatim(
    model_server: ScriptedModelServer,
) -> None:
    spaced = '{ "expression" :  "6*7" }'
    broken = '{"query": "unterminated'
    model_server.script(
        tool_calls(
            tool_call("calculator", spaced, id="call_1"),
            tool_call("search", broken, id="call_2"),
            text="Let me check.",
        )
    )

    result = await complete(ask(tools=[CALCULATOR]), settings_for(model_server))

    assert result.message.content == "Let me check."
    assert result.message.tool_calls == [
        ToolCallRequest(id="call_1", name="calculator", arguments=spaced),
        ToolCallRequest(id="call_2", name="search", arguments=broken),
    ]


async def test_prior_tool_calls_and_results_are_sent_in_openai_shape(
    model_server: ScriptedModelServer,
) -> None:
    model_server.script(reply("4 and 42."))
    messages = [
        ChatMessage(role="system", content="You can calculate."),
        ChatMessage(role="user", content="2+2 and 6*7?"),
        ChatMessage(
            role="assistant",
            tool_calls=[
                ToolCallRequest(id="call_1", name="calculator", arguments='{"expression": "2+2"}'),
                ToolCallRequest(id="call_2", name="calculator", arguments='{"expression": "6*7"}'),
            ],
        ),
        ChatMessage(role="tool", tool_call_id="call_1", name="calculator", content="4"),
        ChatMessage(role="tool", tool_call_id="call_2", name="calculator", content="42"),
    ]

    await complete(
        ModelRequest(model=MODEL, messages=messages, tools=[CALCULATOR]),
        settings_for(model_server),
    )

    [sent] = model_server.chat_requests()
    # An absent content and "content": null mean the same to OpenAI; LiteLLM drops the null.
    assert [{k: v for k, v in m.items() if v is not None} for m in sent.messages] == [
        {"role": "system", "content": "You can calculate."},
        {"role": "user", "content": "2+2 and 6*7?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        {"role": "tool", "tool_call_id": "call_2", "content": "42"},
    ]


async def test_on_delta_errors_propagate_unchanged(model_server: ScriptedModelServer) -> None:
    model_server.script(reply("some text"))

    async def on_delta(delta: str) -> None:
        raise KeyError("publisher broke")

    with pytest.raises(KeyError, match="publisher broke"):
        await complete(ask(), settings_for(model_server), on_delta=on_delta)


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (fault(500), ErrorType.PROVIDER_UNAVAILABLE),
        (fault(502), ErrorType.PROVIDER_UNAVAILABLE),
        (fault(503), ErrorType.PROVIDER_UNAVAILABLE),
        (fault(409), ErrorType.PROVIDER_UNAVAILABLE),
        (fault(408), ErrorType.TIMEOUT),
        (fault(429), ErrorType.RATE_LIMITED),
        (truncated_stream(after_chunks=3), ErrorType.PROVIDER_UNAVAILABLE),
        (malformed_json(), ErrorType.PROVIDER_UNAVAILABLE),
        (fault(400), ErrorType.INVALID_REQUEST),
        (fault(404), ErrorType.INVALID_REQUEST),
        (fault(422), ErrorType.INVALID_REQUEST),
        (fault(400, body=CONTEXT_BODY), ErrorType.CONTEXT_TOO_LONG),
        (fault(403), ErrorType.AUTH_FAILED),
    ],
    ids=lambda v: v.value if isinstance(v, ErrorType) else type(v).__name__,
)
async def test_failures_are_classified_after_exactly_one_request(
    model_server: ScriptedModelServer, step: Step, expected: ErrorType
) -> None:
    model_server.script(step)

    error = await failure(ask(), settings_for(model_server))

    assert error.type == expected.value
    assert error.non_retryable is (not expected.retryable)
    assert error.next_retry_delay is None
    assert error.__cause__ is None  # provider exceptions never reach histories verbatim
    assert len(model_server.chat_requests()) == 1  # no hidden retries


async def test_rate_limit_honours_retry_after(model_server: ScriptedModelServer) -> None:
    model_server.script(fault(429, retry_after=7))

    error = await failure(ask(), settings_for(model_server))

    assert error.type == ErrorType.RATE_LIMITED.value
    assert error.non_retryable is False
    assert error.next_retry_delay == timedelta(seconds=7)
    assert len(model_server.chat_requests()) == 1


async def test_unavailable_retry_after_is_capped(model_server: ScriptedModelServer) -> None:
    model_server.script(fault(503, retry_after=3600))

    error = await failure(ask(), settings_for(model_server))

    assert error.type == ErrorType.PROVIDER_UNAVAILABLE.value
    assert error.next_retry_delay == MAX_RETRY_AFTER


async def test_wrong_api_key_is_auth_failed_and_never_shown() -> None:
    wrong = "sk-wrong-key-0123456789abcdef"
    with ScriptedModelServer(api_key=SECRET) as server:
        server.script(reply("unreachable"))
        error = await failure(
            ask(), make_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=wrong)
        )
        assert len(server.chat_requests()) == 1

    assert error.type == ErrorType.AUTH_FAILED.value
    assert error.non_retryable is True
    assert wrong not in f"{error} {error.message} {error.details!r}"


@pytest.mark.parametrize("status", [400, 401, 429, 500])
async def test_api_keys_echoed_by_the_provider_are_redacted(
    model_server: ScriptedModelServer, status: int
) -> None:
    body = {
        "error": {
            "message": f"Key {SECRET} rejected (header: Bearer {SECRET}; api_key={SECRET})",
            "type": "invalid_request_error",
        }
    }
    model_server.script(fault(status, body=body))

    error = await failure(
        ask(), make_settings(OPENAI_BASE_URL=model_server.base_url, OPENAI_API_KEY=SECRET)
    )

    assert "rejected" in error.message
    for text in (str(error), error.message, repr(error.details)):
        assert SECRET not in text
        assert SECRET[:12] not in text


async def test_hang_is_a_retryable_timeout(model_server: ScriptedModelServer) -> None:
    model_server.script(hang(10))
    started = time.monotonic()

    error = await failure(ask(timeout_s=0.3), settings_for(model_server))

    assert time.monotonic() - started < 3
    assert error.type == ErrorType.TIMEOUT.value
    assert error.non_retryable is False
    assert len(model_server.chat_requests()) == 1


async def test_slow_stream_hits_the_overall_deadline(model_server: ScriptedModelServer) -> None:
    # Each chunk arrives within the read timeout; the whole answer does not.
    model_server.script(reply("one two three four five six", chunk_delay=0.15))
    started = time.monotonic()

    error = await failure(ask(timeout_s=0.5), settings_for(model_server))

    assert time.monotonic() - started < 2
    assert error.type == ErrorType.TIMEOUT.value
    assert len(model_server.chat_requests()) == 1


# -- cost ------------------------------------------------------------------------------


async def test_cost_of_a_priced_model(model_server: ScriptedModelServer) -> None:
    model_server.script(
        reply("ok", usage={"prompt_tokens": 1000, "completion_tokens": 200}), model="gpt-4o-mini"
    )

    result = await complete(ask(model="openai/gpt-4o-mini"), settings_for(model_server))

    price = litellm.model_cost["gpt-4o-mini"]
    expected = 1000 * price["input_cost_per_token"] + 200 * price["output_cost_per_token"]
    assert result.cost_usd is not None
    assert result.cost_usd > 0
    assert result.cost_usd == pytest.approx(expected, rel=1e-9)
    assert result.model == "openai/gpt-4o-mini"
    assert model_server.chat_requests()[0].model == "gpt-4o-mini"


async def test_cost_of_an_unknown_model_is_none(model_server: ScriptedModelServer) -> None:
    model_server.script(reply("ok", usage={"prompt_tokens": 10, "completion_tokens": 2}))

    result = await complete(ask(), settings_for(model_server))

    assert result.usage.total_tokens == 12
    assert result.cost_usd is None


async def test_local_model_goes_to_the_local_server_and_costs_nothing(
    model_server: ScriptedModelServer,
) -> None:
    model_server.script(reply("tiny answer"), model="local/smollm2-135m")
    settings = make_settings(COLONY_LOCAL_MODEL_URL=model_server.base_url + "/")

    result = await complete(ask(model="local/smollm2-135m"), settings)

    assert result.message.content == "tiny answer"
    assert result.model == "local/smollm2-135m"
    assert result.cost_usd == 0.0
    [sent] = model_server.chat_requests()
    assert sent.model == "local/smollm2-135m"
    assert sent.headers["authorization"] == "Bearer not-needed"


def test_usage_estimate_when_the_provider_sends_none() -> None:
    resolved = resolve("openai/gpt-4o-mini", make_settings(OPENAI_API_KEY="k"))
    messages = [{"role": "user", "content": "Count the tokens of this sentence, please."}]
    answer = ChatMessage(
        role="assistant",
        content="Here is a fairly long answer with several words.",
        tool_calls=[ToolCallRequest(id="c", name="search", arguments='{"q": "tokens"}')],
    )

    usage = estimate_usage(resolved, messages, None, answer)

    assert 5 < usage.prompt_tokens < 40
    assert 10 < usage.completion_tokens < 40
    price = litellm.model_cost["gpt-4o-mini"]
    assert cost_usd(resolved, usage) == pytest.approx(
        usage.prompt_tokens * price["input_cost_per_token"]
        + usage.completion_tokens * price["output_cost_per_token"]
    )


def test_estimate_prompt_cost_before_a_call() -> None:
    settings = make_settings(OPENAI_API_KEY="k")
    short = ask("hi", model="openai/gpt-4o-mini")
    long = ask("hi " * 2000, model="openai/gpt-4o-mini", tools=[CALCULATOR])

    short_cost = estimate_prompt_cost(short, settings)
    long_cost = estimate_prompt_cost(long, settings)

    assert short_cost is not None and long_cost is not None
    assert 0 < short_cost < long_cost
    assert long_cost == pytest.approx(
        2000 * litellm.model_cost["gpt-4o-mini"]["input_cost_per_token"], rel=0.1
    )
    assert estimate_prompt_cost(ask(model="local/smollm2-135m"), settings) == 0.0
    assert estimate_prompt_cost(ask(), settings) is None


# -- resolution ------------------------------------------------------------------------


@pytest.fixture
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "COLONY_LOCAL_MODEL_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_provider_env")
def test_resolve_maps_each_provider() -> None:
    keyed = make_settings(
        OPENAI_API_KEY="sk-openai", ANTHROPIC_API_KEY="sk-ant", COLONY_LOCAL_MODEL_PORT="9999"
    )
    based = make_settings(OPENAI_BASE_URL="http://vllm:8000/v1/")

    openai_model = resolve("openai/gpt-4o-mini", keyed)
    assert (openai_model.litellm_model, openai_model.api_base, openai_model.api_key) == (
        "openai/gpt-4o-mini",
        None,
        "sk-openai",
    )
    assert openai_model.provider == "openai"
    assert resolve("openai/my-model", based).api_base == "http://vllm:8000/v1"
    assert resolve("openai/my-model", based).api_key == "not-needed"

    claude = resolve("anthropic/claude-sonnet-4-5", keyed)
    assert (claude.litellm_model, claude.api_key, claude.provider) == (
        "anthropic/claude-sonnet-4-5",
        "sk-ant",
        "anthropic",
    )
    assert resolve("ollama/llama3", keyed) == ResolvedModel("ollama/llama3", None, None, "ollama")
    local = resolve("local/smollm2-135m", keyed)
    assert local.litellm_model == "openai/local/smollm2-135m"
    assert local.api_base == "http://127.0.0.1:9999/v1"
    assert local.provider == "local"
    assert resolve("groq/llama-3.1-8b", keyed).litellm_model == "groq/llama-3.1-8b"
    assert resolve("groq/llama-3.1-8b", keyed).provider == "groq"
    assert "sk-openai" not in repr(openai_model)


# -- classification without HTTP -------------------------------------------------------


def _status_error(
    cls: type[openai.APIStatusError], status: int, headers: dict[str, str]
) -> openai.APIStatusError:
    request = httpx.Request("POST", "https://api.example.com/v1/chat/completions")
    response = httpx.Response(status, headers=headers, request=request)
    return cls("failed", response=response, body=None)


def test_retry_after_as_http_date_and_in_milliseconds() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    dated = classify(
        _status_error(
            openai.RateLimitError, 429, {"retry-after": format_datetime(when, usegmt=True)}
        ),
        provider="openai",
    )
    assert dated.next_retry_delay is not None
    assert timedelta(seconds=80) < dated.next_retry_delay <= timedelta(seconds=90)

    in_ms = classify(
        _status_error(openai.RateLimitError, 429, {"retry-after-ms": "2500"}), provider="openai"
    )
    assert in_ms.next_retry_delay == timedelta(seconds=2.5)

    past = classify(
        _status_error(openai.RateLimitError, 429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        provider="openai",
    )
    assert past.next_retry_delay is None


def test_classify_unwraps_and_recognises_exception_kinds() -> None:
    rate_limited = _status_error(openai.RateLimitError, 429, {"retry-after": "3"})
    wrapped = litellm.exceptions.MidStreamFallbackError(
        message="stream broke", model="m", llm_provider="anthropic", original_exception=rate_limited
    )
    assert classify(wrapped, provider="anthropic").type == ErrorType.RATE_LIMITED.value
    assert classify(wrapped, provider="anthropic").next_retry_delay == timedelta(seconds=3)

    too_long = litellm.exceptions.ContextWindowExceededError(
        message="too long", model="m", llm_provider="openai"
    )
    assert classify(too_long, provider="openai").type == ErrorType.CONTEXT_TOO_LONG.value

    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    refused = classify(httpx.ConnectError("refused", request=request), provider="openai")
    assert (refused.type, refused.non_retryable) == (ErrorType.PROVIDER_UNAVAILABLE.value, False)
    read_timeout = classify(httpx.ReadTimeout("slow", request=request), provider="openai")
    assert read_timeout.type == ErrorType.TIMEOUT.value
    garbage = classify(json.JSONDecodeError("bad", "{", 0), provider="openai")
    assert garbage.type == ErrorType.PROVIDER_UNAVAILABLE.value
    assert classify(_status_error(openai.APIStatusError, 413, {}), provider="x").type == (
        ErrorType.CONTEXT_TOO_LONG.value
    )

    mine = ApplicationError("already classified", type=ErrorType.BUDGET_EXCEEDED.value)
    assert classify(mine, provider="openai") is mine


# -- circuit breaker -------------------------------------------------------------------


async def test_breaker_opens_short_circuits_half_opens_and_closes(
    model_server: ScriptedModelServer,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("openai", failure_threshold=3, cooldown_s=30, clock=clock)
    settings = settings_for(model_server)
    model_server.script(fault(500), fault(503), fault(429))

    for _ in range(3):
        assert breaker.state is BreakerState.CLOSED
        with pytest.raises(ApplicationError) as caught:
            await complete_with_breaker(ask(), settings, breaker=breaker)
        assert caught.value.non_retryable is False
    assert breaker.state is BreakerState.OPEN

    with pytest.raises(ApplicationError) as refused:
        await complete_with_breaker(ask(), settings, breaker=breaker)
    assert refused.value.type == ErrorType.PROVIDER_UNAVAILABLE.value
    assert refused.value.non_retryable is True
    assert "circuit open" in refused.value.message
    assert len(model_server.chat_requests()) == 3  # no HTTP while open

    clock.now += 29.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN

    model_server.script(reply("back"))
    result = await complete_with_breaker(ask(), settings, breaker=breaker)
    assert result.message.content == "back"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert len(model_server.chat_requests()) == 4


def test_breaker_half_open_allows_one_trial_and_reopens_on_failure() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("p", failure_threshold=2, cooldown_s=10, clock=clock)
    breaker.record_failure(ErrorType.TIMEOUT)
    breaker.record_failure(ErrorType.PROVIDER_UNAVAILABLE.value)
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow() is False

    clock.now += 10
    assert breaker.allow() is True  # the trial
    assert breaker.allow() is False  # only one at a time
    breaker.record_failure(ErrorType.RATE_LIMITED)
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow() is False

    clock.now += 10
    assert breaker.allow() is True
    clock.now += 10  # the trial's caller never reported back: the slot expires
    assert breaker.allow() is True
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_breaker_ignores_failures_that_say_nothing_about_health() -> None:
    breaker = CircuitBreaker("p", failure_threshold=2, clock=FakeClock())
    for error_type in (
        ErrorType.INVALID_REQUEST,
        ErrorType.AUTH_FAILED,
        ErrorType.CONTEXT_TOO_LONG,
        ErrorType.DEPENDENCY_UNAVAILABLE,  # our own dependency, not the provider
    ):
        breaker.record_failure(error_type)
        breaker.record_failure(error_type.value)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0

    breaker.record_failure(ErrorType.PROVIDER_UNAVAILABLE)
    breaker.record_failure(ErrorType.INVALID_REQUEST)  # neither counts nor resets
    breaker.record_failure(ErrorType.PROVIDER_UNAVAILABLE)
    assert breaker.state is BreakerState.OPEN


async def test_a_model_client_shares_one_breaker_per_provider(
    model_server: ScriptedModelServer,
) -> None:
    settings = settings_for(model_server)
    async with ModelClient(settings) as client:
        breakers = client.breakers
        assert breakers.for_provider("openai") is breakers.for_provider("openai")
        assert breakers.for_provider("openai") is not breakers.for_provider("anthropic")

        model_server.script(*[fault(500)] * 5)
        for _ in range(5):
            with pytest.raises(ApplicationError):
                await client.complete_with_breaker(ask())
        assert breakers.for_provider("openai").state is BreakerState.OPEN
        assert breakers.for_provider("anthropic").state is BreakerState.CLOSED

        with pytest.raises(ApplicationError, match="circuit open"):
            await client.complete_with_breaker(ask())
    assert len(model_server.chat_requests()) == 5
    # Breakers belong to the client the worker registry built, not to the process.
    assert ModelClient(settings).breakers.for_provider("openai").state is BreakerState.CLOSED


async def test_a_crashed_local_model_server_is_named_and_the_open_circuit_says_why(
    model_server: ScriptedModelServer, tmp_path: Path
) -> None:
    log = tmp_path / ".colony" / "logs" / "local-model.log"
    settings = make_settings(
        COLONY_LOCAL_MODEL_URL=model_server.base_url, COLONY_DATA_DIR=str(tmp_path / ".colony")
    )
    breaker = CircuitBreaker("local", failure_threshold=3, cooldown_s=30, clock=FakeClock())
    # The server dies before answering (a crash while compiling the grammar), then in
    # the middle of the answer: the run is told so, in words, and where to look.
    model_server.script(hang(0.05), truncated_stream(after_chunks=1))
    for _ in range(2):
        with pytest.raises(ApplicationError) as crashed:
            await complete_with_breaker(ask(model=LOCAL), settings, breaker=breaker)
        assert crashed.value.type == ErrorType.PROVIDER_UNAVAILABLE.value
        assert not crashed.value.non_retryable
        assert crashed.value.message.startswith(
            f"local: the local model server crashed or restarted while answering (see {log}); "
        ), crashed.value.message

    # While it restarts, nothing listens on its port.
    down = make_settings(
        COLONY_LOCAL_MODEL_URL=f"http://127.0.0.1:{free_port()}/v1",
        COLONY_DATA_DIR=str(tmp_path / ".colony"),
    )
    with pytest.raises(ApplicationError) as refused:
        await complete_with_breaker(ask(model=LOCAL), down, breaker=breaker)
    assert "the local model server refused the connection: it is down, or restarting" in (
        refused.value.message
    )
    assert breaker.state is BreakerState.OPEN

    with pytest.raises(ApplicationError) as open_circuit:
        await complete_with_breaker(ask(model=LOCAL), down, breaker=breaker)
    message = open_circuit.value.message
    assert message.startswith("local: circuit open after repeated failures"), message
    assert f"Last failure: {refused.value.message}" in message
    assert open_circuit.value.non_retryable
    assert len(model_server.chat_requests()) == 2


async def test_other_providers_keep_the_plain_connection_error(
    model_server: ScriptedModelServer,
) -> None:
    model_server.script(hang(0.05))
    error = await failure(ask(), settings_for(model_server))
    assert error.type == ErrorType.PROVIDER_UNAVAILABLE.value
    assert "local model server" not in error.message and "RemoteProtocolError" in error.message


def test_the_breaker_forgets_the_last_failure_on_success() -> None:
    breaker = CircuitBreaker("p", failure_threshold=5, clock=FakeClock())
    breaker.record_failure(ErrorType.TIMEOUT, "p: no complete answer within 5 s")
    breaker.record_failure(ErrorType.INVALID_REQUEST, "p: bad request")  # not about health
    assert breaker.last_failure == "p: no complete answer within 5 s"
    breaker.record_success()
    assert breaker.last_failure is None


async def test_the_local_model_gets_grammar_safe_schemas(model_server: ScriptedModelServer) -> None:
    settings = make_settings(COLONY_LOCAL_MODEL_URL=model_server.base_url)
    shape = {
        "type": "object",
        "properties": {"report": {"type": "string", "maxLength": 8000}},
        "required": ["report"],
    }
    model_server.script(reply('{"report": "done"}'), reply('{"report": "done"}'))
    await complete(ask(model=LOCAL).model_copy(update={"json_schema": shape}), settings)
    await complete(
        ask(model=MODEL).model_copy(update={"json_schema": shape}), settings_for(model_server)
    )
    local, other = (r.body["response_format"] for r in model_server.chat_requests())
    assert local == {"type": "json_object", "schema": grammar_safe(shape)}
    assert local["schema"]["properties"]["report"] == {"type": "string"}  # no 8000 nested rules
    assert other == {"type": "json_object"}

    # The JSON tool protocol's arguments, likewise.
    tool = ToolSchema(name="note", description="Take a note.", parameters=shape)
    protocol = json_protocol.response_format(ask(model=LOCAL, tools=[tool]))["schema"]
    options = protocol.get("anyOf", [protocol])
    arguments = next(o["properties"]["arguments"] for o in options if "tool" in o["properties"])
    # Grounded in the request's words ("hi"), and no maxLength's 8000 nested rules.
    assert arguments == {**grammar_safe(shape), "properties": {"report": {"const": "hi"}}}
