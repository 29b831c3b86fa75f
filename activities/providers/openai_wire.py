"""Streamed chat completions over the OpenAI wire protocol, straight on httpx.

OpenAI, llama.cpp, vLLM, Ollama's `/v1` and most gateways speak this protocol. For them
`client.complete` skips LiteLLM and the openai SDK: on an agent step with an
instant model those two cost ~20 ms of CPU (request transforms that walk the whole
conversation, response objects, logging), several times the orchestration round trip
the step is measured against (docs/benchmarks.md). Other providers keep going through
LiteLLM.

Failures are raised as the exceptions `errors.classify` already understands:
`ProviderHTTPError` (with the status, headers and the provider's message), httpx's
transport and timeout errors, and `MalformedStream` for bodies that are not the
protocol.
"""

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from core.payloads import ChatMessage, ModelRequest

if TYPE_CHECKING:
    from litellm.types.llms.openai import ChatCompletionToolParam

MAX_ERROR_BODY = 64 * 1024
"""Bytes of an error response read for its message."""


class ProviderHTTPError(Exception):
    """The provider answered with a non-2xx status."""

    def __init__(self, status_code: int, message: str, headers: httpx.Headers) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


class MalformedStream(Exception):
    """The response is not a well-formed chat-completion stream."""


class Chunk:
    """A decoded JSON object whose missing attributes read as None (like SDK objects)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def _decode(data: str) -> Chunk:
    try:
        value = json.loads(data, object_hook=Chunk)
    except ValueError as exc:
        raise MalformedStream(f"undecodable stream event: {data[:200]!r}") from exc
    if not isinstance(value, Chunk):
        raise MalformedStream(f"stream event is not an object: {data[:200]!r}")
    return value


def wire_model(litellm_model: str) -> str:
    """The model name the endpoint expects: the id without LiteLLM's `openai/` routing prefix."""
    return litellm_model.removeprefix("openai/")


async def stream_chat(
    client: httpx.AsyncClient,
    base_url: str,
    api_key: str | None,
    body: dict[str, Any],
    timeout_s: float,
) -> AsyncGenerator[Chunk, None]:
    """POST `body` (with `stream: true`) to `{base_url}/chat/completions`; yield each chunk.

    Raises:
        ProviderHTTPError: a non-2xx answer, or an error object inside the stream.
        MalformedStream: undecodable events, or a stream that ends before `[DONE]`
            without a finish reason (a cut connection).
        httpx.TransportError / httpx.TimeoutException: as httpx raises them.
    """
    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = client.build_request(
        "POST",
        f"{base_url.rstrip('/')}/chat/completions",
        json=body,
        headers=headers,
        timeout=httpx.Timeout(timeout_s),
    )
    response = await client.send(request, stream=True)
    try:
        if response.status_code >= 300:
            raise await _http_error(response)
        finished = False
        lines = response.aiter_lines()
        async for line in lines:
            if not line.startswith("data:"):
                continue  # comments, `event:` lines, keep-alives
            data = line[5:].strip()
            if data == "[DONE]":
                await _drain(lines)
                return
            chunk = _decode(data)
            if isinstance(chunk.error, Chunk):
                message = chunk.error.message or "error event in the stream"
                raise ProviderHTTPError(_status(chunk.error), str(message), response.headers)
            for choice in chunk.choices or []:
                finished = finished or bool(choice.finish_reason)
            yield chunk
        if not finished:
            raise MalformedStream("the stream ended before the answer was complete")
    finally:
        await response.aclose()


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows `[DONE]` (the end of the chunked body): the connection is kept.

    httpx closes the connection of a response closed before its end, and each model call
    then paid for a new TCP connection (docs/benchmarks.md, issue #16). A server that
    sends more than `MAX_ERROR_BODY` after `[DONE]` loses the connection.
    """
    left = MAX_ERROR_BODY
    async for line in lines:
        left -= len(line) + 1
        if left < 0:
            return


async def _http_error(response: httpx.Response) -> ProviderHTTPError:
    raw = b""
    async for part in response.aiter_bytes():
        raw += part
        if len(raw) >= MAX_ERROR_BODY:
            break
    text = raw[:MAX_ERROR_BODY].decode("utf-8", "replace")
    message = text.strip() or response.reason_phrase
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        elif isinstance(error, str):
            message = error
    except (ValueError, AttributeError):
        pass
    return ProviderHTTPError(response.status_code, message, response.headers)


def _status(error: Chunk) -> int:
    for value in (error.code, error.status, error.status_code):
        if isinstance(value, int) and 400 <= value < 600:
            return value
    return 500  # a provider failing mid-answer: retry


def tools_to_openai(request: ModelRequest) -> "list[ChatCompletionToolParam]":
    """The request's tools as OpenAI function tools."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in request.tools
    ]


def message_to_openai(message: ChatMessage) -> dict[str, Any]:
    """A message in the OpenAI chat format."""
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
