"""Tests for the scripted OpenAI-compatible model server (tests/support/model_server.py)."""

import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionMessageParam

from tests.support.model_server import (
    DEFAULT_MODEL,
    RecordedRequest,
    Reply,
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

ROOT = Path(__file__).resolve().parents[2]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


@pytest.fixture
def client(server: ScriptedModelServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(server: ScriptedModelServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5.0) as raw:
        yield raw


def chat_body(model: str = "gpt-test", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER, **extra}


def sse_events(text: str) -> list[str]:
    """The data payloads of a raw SSE body."""
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


# ----------------------------------------------------------------- chat completions


def test_plain_reply_via_sdk(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(reply("Hello there"))

    completion = client.chat.completions.create(model="gpt-test", messages=USER)

    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-test"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_plain_reply_wire_format_and_keep_alive(
    server: ScriptedModelServer, http: httpx.Client
) -> None:
    server.script(reply("one"), reply("two", usage={"prompt_tokens": 7, "completion_tokens": 3}))

    first = http.post("/chat/completions", json=chat_body())
    # The second request reuses the pooled connection; it must not see stale bytes.
    second = http.post("/chat/completions", json=chat_body())

    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert int(first.headers["content-length"]) == len(first.content)
    payload = first.json()
    assert payload["id"].startswith("chatcmpl-")
    assert payload["object"] == "chat.completion"
    assert isinstance(payload["created"], int)
    assert payload["choices"][0]["message"]["content"] == "one"
    assert "tool_calls" not in payload["choices"][0]["message"]
    assert second.json()["choices"][0]["message"]["content"] == "two"
    assert second.json()["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }


def test_tool_calls_round_trip(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(
        tool_calls(
            tool_call("calculator", {"expression": "2+2"}),
            tool_call("search", {"query": "temporal"}, id="call_fixed"),
        )
    )

    completion = client.chat.completions.create(model="gpt-test", messages=USER)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    assert isinstance(calls[1], ChatCompletionMessageFunctionToolCall)
    assert calls[0].function.name == "calculator"
    assert json.loads(calls[0].function.arguments) == {"expression": "2+2"}
    assert calls[0].id.startswith("call_")
    assert calls[1].id == "call_fixed"
    assert json.loads(calls[1].function.arguments) == {"query": "temporal"}


def test_tool_call_string_arguments_are_sent_verbatim(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(tool_calls(tool_call("calculator", '{"expression": 2+'), text="Let me compute."))

    completion = client.chat.completions.create(model="gpt-test", messages=USER)

    message = completion.choices[0].message
    assert message.content == "Let me compute."
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.arguments == '{"expression": 2+'


def test_streaming_text_reassembled_by_sdk(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    text = "The answer, after careful thought, is four."
    server.script(reply(text))

    with client.chat.completions.create(
        model="gpt-test",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)

    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3
    assert "".join(pieces) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.model == "gpt-test" for c in chunks)


def test_streaming_wire_format(server: ScriptedModelServer, http: httpx.Client) -> None:
    server.script(reply("a b c"), reply("again"))

    response = http.post("/chat/completions", json=chat_body(stream=True))
    follow_up = http.post("/chat/completions", json=chat_body())

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    # Without include_usage there is no usage-only chunk.
    assert all(c["choices"] and "usage" not in c for c in chunks)
    # The chunked body ended cleanly, so the kept-alive connection still works.
    assert follow_up.json()["choices"][0]["message"]["content"] == "again"


def test_streaming_tool_calls_reassembled_by_sdk(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    arguments = {"expression": "12345 * 6789", "precision": 10}
    server.script(
        tool_calls(
            tool_call("calculator", arguments, id="call_a"),
            tool_call("search", {"query": "durable execution"}, id="call_b"),
        )
    )

    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    finish_reason = None
    with client.chat.completions.create(
        model="gpt-test",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            if not chunk.choices:
                continue
            finish_reason = chunk.choices[0].finish_reason or finish_reason
            for delta in chunk.choices[0].delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
                    fragments += 1

    assert finish_reason == "tool_calls"
    assert calls[0]["id"] == "call_a" and calls[0]["name"] == "calculator"
    assert json.loads(calls[0]["arguments"]) == arguments
    assert calls[1]["id"] == "call_b" and calls[1]["name"] == "search"
    assert json.loads(calls[1]["arguments"]) == {"query": "durable execution"}
    assert fragments > 2


async def test_async_sdk_streaming(server: ScriptedModelServer) -> None:
    server.script(reply("async works fine"))

    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="gpt-test",
            messages=USER,
            stream=True,
        )
        async with stream:
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert text == "async works fine"


def test_chunk_delay_spaces_stream_chunks(server: ScriptedModelServer, http: httpx.Client) -> None:
    server.script(reply("one two three", chunk_delay=0.05))

    arrivals = []
    with http.stream("POST", "/chat/completions", json=chat_body(stream=True)) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())

    # role, 3 words, finish and [DONE]: 4 delayed gaps between the 5 chunks.
    assert arrivals[-2] - arrivals[0] >= 0.18


def test_delay_before_reply(server: ScriptedModelServer, http: httpx.Client) -> None:
    server.script(reply("slow", delay=0.3))

    started = time.monotonic()
    response = http.post("/chat/completions", json=chat_body())

    assert time.monotonic() - started >= 0.3
    assert response.json()["choices"][0]["message"]["content"] == "slow"


# ------------------------------------------------------------------- queue selection


def test_per_model_queues_fall_back_to_shared_queue(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(fault(503), model="gpt-primary")
    server.script(reply("from fallback"), model="gpt-fallback")
    server.script(reply("shared 1"), reply("shared 2"))

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-primary", messages=USER)
    fallback = client.chat.completions.create(model="gpt-fallback", messages=USER)
    primary_again = client.chat.completions.create(model="gpt-primary", messages=USER)
    other = client.chat.completions.create(model="other", messages=USER)

    assert fallback.choices[0].message.content == "from fallback"
    assert primary_again.choices[0].message.content == "shared 1"
    assert other.choices[0].message.content == "shared 2"
    assert [r.status for r in server.chat_requests(model="gpt-primary")] == [503, 200]
    assert [r.status for r in server.chat_requests(model="gpt-fallback")] == [200]
    assert len(server.chat_requests()) == 4
    assert server.pending() == 0 and server.pending("gpt-primary") == 0


def test_concurrent_requests_each_take_one_step(server: ScriptedModelServer) -> None:
    count = 20
    server.script(*(reply(f"answer {i}") for i in range(count)))
    answers: list[str] = []
    lock = threading.Lock()

    def call(raw: httpx.Client) -> None:
        text = raw.post("/chat/completions", json=chat_body()).json()
        with lock:
            answers.append(text["choices"][0]["message"]["content"])

    # One shared client (it is thread-safe) opens parallel pooled connections.
    with httpx.Client(base_url=server.base_url, timeout=5.0) as raw:
        threads = [threading.Thread(target=call, args=(raw,)) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)

    assert sorted(answers) == sorted(f"answer {i}" for i in range(count))


def test_default_reply_used_when_queue_empty(
    server: ScriptedModelServer, http: httpx.Client
) -> None:
    server.default = reply("default answer")
    server.script(reply("scripted first"))

    contents = [
        http.post("/chat/completions", json=chat_body()).json()["choices"][0]["message"]["content"]
        for _ in range(3)
    ]

    assert contents == ["scripted first", "default answer", "default answer"]


def test_script_exhausted_is_a_clear_500(
    server: ScriptedModelServer, http: httpx.Client, client: openai.OpenAI
) -> None:
    response = http.post("/chat/completions", json=chat_body(model="gpt-lonely"))

    assert response.status_code == 500
    error = response.json()["error"]
    assert "script exhausted" in error["message"]
    assert "gpt-lonely" in error["message"]
    assert error["code"] == "script_exhausted"
    with pytest.raises(openai.InternalServerError, match="script exhausted"):
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert [r.step for r in server.requests] == [None, None]


def test_responder_overrides_queues(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(reply("from queue"))

    def echo(request: RecordedRequest) -> Step | None:
        last = request.messages[-1]["content"]
        return None if last == "use the queue" else reply(f"echo: {last}")

    server.responder = echo

    echoed = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "ping"}]
    )
    queued = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "use the queue"}]
    )

    assert echoed.choices[0].message.content == "echo: ping"
    assert queued.choices[0].message.content == "from queue"


def test_responder_exception_becomes_500(server: ScriptedModelServer, http: httpx.Client) -> None:
    def broken(request: RecordedRequest) -> Step | None:
        raise RuntimeError("responder bug")

    server.responder = broken

    response = http.post("/chat/completions", json=chat_body())

    assert response.status_code == 500
    assert "responder bug" in response.json()["error"]["message"]
    assert isinstance(server.errors[0], RuntimeError)


# --------------------------------------------------------------------------- faults


def test_rate_limit_with_retry_after(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(fault(429, retry_after=1.5), reply("ok"))

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-test", messages=USER)
    ok = client.chat.completions.create(model="gpt-test", messages=USER)

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1.5"
    assert caught.value.code == "rate_limit_exceeded"
    assert ok.choices[0].message.content == "ok"


def test_sdk_retry_honours_retry_after(server: ScriptedModelServer) -> None:
    server.script(fault(429, retry_after=0.4), reply("after waiting"))

    with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=1) as sdk:
        completion = sdk.chat.completions.create(model="gpt-test", messages=USER)

    first, second = server.chat_requests()
    assert completion.choices[0].message.content == "after waiting"
    assert second.received_at - first.received_at >= 0.4


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(server: ScriptedModelServer, client: openai.OpenAI, status: int) -> None:
    server.script(fault(status))

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-test", messages=USER)

    assert caught.value.status_code == status
    assert caught.value.type == "server_error"
    assert server.requests[0].status == status


def test_fault_with_custom_bodies(
    server: ScriptedModelServer, client: openai.OpenAI, http: httpx.Client
) -> None:
    custom = {"error": {"message": "context too long", "type": "invalid_request_error"}}
    server.script(fault(400, body=custom), fault(502, body="<html>bad gateway</html>"))

    with pytest.raises(openai.BadRequestError, match="context too long"):
        client.chat.completions.create(model="gpt-test", messages=USER)
    raw = http.post("/chat/completions", json=chat_body())

    assert raw.status_code == 502
    assert raw.text == "<html>bad gateway</html>"
    assert raw.headers["content-type"].startswith("text/plain")


def test_api_key_checked() -> None:
    with ScriptedModelServer(api_key="sk-right") as srv:
        srv.script(reply("authorised"))
        with openai.OpenAI(base_url=srv.base_url, api_key="sk-wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                wrong.chat.completions.create(model="gpt-test", messages=USER)
        with openai.OpenAI(base_url=srv.base_url, api_key="sk-right", max_retries=0) as right:
            ok = right.chat.completions.create(model="gpt-test", messages=USER)

        assert caught.value.status_code == 401
        assert caught.value.code == "invalid_api_key"
        assert caught.value.type == "invalid_request_error"
        assert ok.choices[0].message.content == "authorised"
        rejected = srv.requests[0]
        assert (rejected.status, rejected.step) == (401, None)


def test_fault_401_step(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(fault(401))

    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-test", messages=USER)

    assert caught.value.code == "invalid_api_key"


def test_hang_times_out_client_and_shutdown_is_fast() -> None:
    srv = ScriptedModelServer().start()
    try:
        srv.script(hang(2.0))
        with openai.OpenAI(base_url=srv.base_url, api_key="t", max_retries=0, timeout=0.3) as sdk:
            started = time.monotonic()
            with pytest.raises(openai.APITimeoutError):
                sdk.chat.completions.create(model="gpt-test", messages=USER)
            assert time.monotonic() - started < 1.5
        (hung,) = srv.wait_for_requests(1)
        assert hung.step == hang(2.0)
        assert hung.status is None
    finally:
        stopping = time.monotonic()
        srv.stop()
        stop_seconds = time.monotonic() - stopping
    assert stop_seconds < 1.0


def test_stop_cuts_idle_keep_alive_connections() -> None:
    srv = ScriptedModelServer(default=reply("hi")).start()
    with httpx.Client(base_url=srv.base_url) as raw:
        assert raw.post("/chat/completions", json=chat_body()).status_code == 200
        # The pooled connection is still open here; stop() must not wait for the client.
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 1.0


def test_malformed_json(
    server: ScriptedModelServer, client: openai.OpenAI, http: httpx.Client
) -> None:
    server.script(malformed_json(), malformed_json(), malformed_json())

    raw = http.post("/chat/completions", json=chat_body())
    assert raw.status_code == 200
    with pytest.raises(ValueError):
        raw.json()
    with pytest.raises(ValueError):
        client.chat.completions.create(model="gpt-test", messages=USER)
    with (
        pytest.raises(ValueError),
        client.chat.completions.create(
            model="gpt-test",
            messages=USER,
            stream=True,
        ) as stream,
    ):
        list(stream)


def test_truncated_stream_raises_on_client(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(truncated_stream(after_chunks=3), reply("recovered"))

    received = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.chat.completions.create(
            model="gpt-test",
            messages=USER,
            stream=True,
        ) as stream,
    ):
        for chunk in stream:
            received.append(chunk)

    assert len(received) == 3
    # The pool discards the broken connection; the next call works.
    ok = client.chat.completions.create(model="gpt-test", messages=USER)
    assert ok.choices[0].message.content == "recovered"


def test_truncated_non_streaming_body_raises(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(truncated_stream())

    with pytest.raises(openai.APIConnectionError) as caught:
        client.chat.completions.create(model="gpt-test", messages=USER)

    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert server.requests[0].status == 200


# ----------------------------------------------------------------- other endpoints


def test_embeddings_deterministic_and_normalised(
    server: ScriptedModelServer, client: openai.OpenAI, http: httpx.Client
) -> None:
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue report"]

    # The SDK asks for base64 by default; httpx asks for plain floats.
    first = client.embeddings.create(model="embedder", input=texts)
    second = http.post("/embeddings", json={"model": "embedder", "input": texts}).json()
    single = http.post("/embeddings", json={"model": "embedder", "input": texts[0]}).json()

    vectors = [d.embedding for d in first.data]
    assert [d.index for d in first.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)
    for vector in vectors:
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-5)
    for a, b in zip(vectors, [d["embedding"] for d in second["data"]], strict=True):
        assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a, b, strict=True))
    assert single["data"][0]["embedding"] == second["data"][0]["embedding"]
    assert vectors[0] != vectors[1]

    def cosine(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert first.usage.prompt_tokens > 0
    assert first.model == "embedder"


def test_embedding_dimensions() -> None:
    with (
        ScriptedModelServer(embedding_dim=64) as srv,
        httpx.Client(base_url=srv.base_url) as raw,
    ):
        default_dim = raw.post("/embeddings", json={"model": "e", "input": "x"}).json()
        requested = raw.post(
            "/embeddings", json={"model": "e", "input": ["x"], "dimensions": 16}
        ).json()

    assert len(default_dim["data"][0]["embedding"]) == 64
    assert len(requested["data"][0]["embedding"]) == 16


def test_models_lists_default_and_scripted_models(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(reply("x"), model="gpt-primary")
    server.script(reply("y"), model="gpt-fallback")

    ids = [m.id for m in client.models.list()]

    assert ids == [DEFAULT_MODEL, "gpt-primary", "gpt-fallback"]


# ---------------------------------------------------------------------- inspection


def test_request_log_records_everything(server: ScriptedModelServer, http: httpx.Client) -> None:
    server.script(fault(500), reply("fine"))

    http.post("/chat/completions", json=chat_body(temperature=0.2), headers={"X-Trace": "abc"})
    http.post("/chat/completions", json=chat_body(model="gpt-b", stream=True))
    http.get("/models")
    http.get("/nope")

    log = server.requests
    assert [(r.method, r.endpoint, r.status) for r in log] == [
        ("POST", "/chat/completions", 500),
        ("POST", "/chat/completions", 200),
        ("GET", "/models", 200),
        ("GET", "/nope", 404),
    ]
    assert log[0].path == "/v1/chat/completions"
    assert log[0].headers["x-trace"] == "abc"
    assert log[0].body["temperature"] == 0.2
    assert log[0].messages == USER
    assert log[0].step == fault(500)
    assert log[1].step == Reply(text="fine")
    assert (log[1].model, log[1].stream) == ("gpt-b", True)
    assert [r.index for r in log] == [0, 1, 2, 3]
    assert log[0].received_at <= log[1].received_at
    assert [r.model for r in server.chat_requests()] == ["gpt-test", "gpt-b"]
    assert server.chat_requests(model="gpt-b") == [log[1]]


def test_wait_for_requests(server: ScriptedModelServer) -> None:
    server.default = reply("later")

    def send_later() -> None:
        time.sleep(0.1)
        with httpx.Client(base_url=server.base_url) as raw:
            raw.post("/chat/completions", json=chat_body())

    sender = threading.Thread(target=send_later)
    sender.start()
    try:
        requests = server.wait_for_requests(1, timeout=3)
        assert requests[0].is_chat
        with pytest.raises(TimeoutError):
            server.wait_for_requests(2, timeout=0.1)
    finally:
        sender.join(5)


def test_reset(server: ScriptedModelServer, http: httpx.Client) -> None:
    server.script(reply("stale"))
    server.script(reply("stale too"), model="gpt-x")
    server.default = reply("stale default")
    http.post("/chat/completions", json=chat_body(model="other"))

    server.reset()

    assert server.requests == []
    assert server.pending() == 0 and server.pending("gpt-x") == 0
    assert server.default is None
    assert http.post("/chat/completions", json=chat_body()).status_code == 500


# ------------------------------------------------------------------- process mode


def test_subprocess_mode_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.model_server",
            "--port",
            "0",
            "--default-reply",
            "from the subprocess",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.removeprefix("READY ")
        with openai.OpenAI(base_url=base_url, api_key="t", max_retries=0, timeout=5) as sdk:
            completion = sdk.chat.completions.create(model="gpt-test", messages=USER)
        assert completion.choices[0].message.content == "from the subprocess"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
