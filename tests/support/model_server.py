"""A scripted, OpenAI-compatible HTTP model server for tests.

`ScriptedModelServer` is a real HTTP server (stdlib only, background threads, a free
port on 127.0.0.1) that speaks enough of the OpenAI API for the official ``openai``
SDK and LiteLLM's openai provider: chat completions (plain and streamed, text and
tool calls), embeddings, moderations (`flag_for_moderation`) and the model list. What each chat request gets back is
scripted as a queue of *steps* — replies, tool calls and injected faults (HTTP
errors, hangs, malformed bodies, truncated streams) — optionally per model, so
retry, timeout and fallback behaviour can be tested deterministically, also from
worker subprocesses.

Example:
    ```python
    with ScriptedModelServer() as server:
        server.script(fault(429, retry_after=1.5), reply("ok"), model="gpt-primary")
        server.script(tool_calls(tool_call("calculator", {"expression": "2+2"})))
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        ...
        assert server.chat_requests(model="gpt-primary")[0].status == 429
    ```

It can also run as a process::

    python -m tests.support.model_server --port 0 --default-reply TEXT

which prints ``READY <base_url>`` on stdout and serves until SIGTERM.
"""

import argparse
import base64
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeAlias

__all__ = [
    "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_MODEL",
    "Fault",
    "Hang",
    "MalformedJson",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedModelServer",
    "Step",
    "ToolCall",
    "ToolCalls",
    "TruncatedStream",
    "Usage",
    "embed_text",
    "fault",
    "hang",
    "malformed_json",
    "reply",
    "tool_call",
    "tool_calls",
    "tool_loop",
    "truncated_stream",
]

DEFAULT_MODEL = "scripted-model"
DEFAULT_EMBEDDING_DIM = 384

_TRUNCATED_TEXT = "This answer is cut off before it is finished and never ends properly."
_MALFORMED_BODY = '{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"message": '

# Status code -> (OpenAI error type, code, message) for generated error bodies.
_ERROR_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (scripted fault)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "Permission denied (scripted fault)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", None, "Request timed out (scripted fault)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (scripted fault)."),
    500: ("server_error", None, "The server had an error processing your request."),
    502: ("server_error", None, "Bad gateway (scripted fault)."),
    503: ("server_error", None, "The server is overloaded (scripted fault)."),
}


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Usage:
    """Token usage to report instead of the server's rough estimate.

    Attributes:
        prompt_tokens: Tokens attributed to the prompt.
        completion_tokens: Tokens attributed to the completion.
    """

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """The sum of prompt and completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        """The OpenAI ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Reply:
    """A plain assistant text answer (``finish_reason="stop"``).

    Attributes:
        text: The assistant message content.
        delay: Seconds to wait before the response starts.
        chunk_delay: Seconds to wait between stream chunks (streaming requests only).
        usage: Usage to report; estimated from the text when None.
    """

    text: str
    delay: float = 0.0
    chunk_delay: float = 0.0
    usage: Usage | None = None


@dataclass(frozen=True)
class ToolCall:
    """One function call requested by the assistant.

    Attributes:
        name: The function (tool) name.
        arguments: The arguments exactly as sent on the wire (normally a JSON object).
        id: The call id; when None a deterministic ``call_<request>_<index>`` is used.
    """

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class ToolCalls:
    """An assistant message asking for tool calls (``finish_reason="tool_calls"``).

    Attributes:
        calls: The calls, in order.
        text: Optional assistant content sent alongside the calls.
        delay: Seconds to wait before the response starts.
        chunk_delay: Seconds to wait between stream chunks (streaming requests only).
        usage: Usage to report; estimated when None.
    """

    calls: tuple[ToolCall, ...]
    text: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    usage: Usage | None = None


@dataclass(frozen=True)
class Fault:
    """An HTTP error response.

    Attributes:
        status: The HTTP status code.
        retry_after: Value of the ``Retry-After`` header in seconds, if any.
        body: The body: a mapping is sent as JSON, a string verbatim; when None an
            OpenAI-style ``{"error": {...}}`` body matching the status is generated.
        delay: Seconds to wait before responding.
    """

    status: int
    retry_after: float | None = None
    body: Mapping[str, Any] | str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Accept the request, send nothing for ``seconds``, then close the connection.

    The wait ends early when the server stops, so shutdown never waits for a hang.

    Attributes:
        seconds: How long to stay silent.
    """

    seconds: float


@dataclass(frozen=True)
class MalformedJson:
    """A 200 response whose body is not valid JSON.

    For a streaming request the stream carries one event whose data is the body.

    Attributes:
        body: The invalid payload.
        delay: Seconds to wait before responding.
    """

    body: str = _MALFORMED_BODY
    delay: float = 0.0


@dataclass(frozen=True)
class TruncatedStream:
    """A response that stops midway and closes the connection.

    A streaming request gets ``after_chunks`` SSE events of a normal answer, then the
    connection closes without ``[DONE]`` or the chunked-encoding terminator. A
    non-streaming request gets part of a JSON body whose ``Content-Length`` promises
    more, then the connection closes.

    Attributes:
        after_chunks: How many stream events to send before cutting off.
        text: The answer that is being cut off.
        delay: Seconds to wait before the response starts.
    """

    after_chunks: int = 2
    text: str = _TRUNCATED_TEXT
    delay: float = 0.0


Step: TypeAlias = Reply | ToolCalls | Fault | Hang | MalformedJson | TruncatedStream
"""Anything the server can do with one chat completion request."""


def _usage(usage: Usage | Mapping[str, int] | None) -> Usage | None:
    if usage is None or isinstance(usage, Usage):
        return usage
    return Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))


def reply(
    text: str,
    *,
    delay: float = 0.0,
    chunk_delay: float = 0.0,
    usage: Usage | Mapping[str, int] | None = None,
) -> Reply:
    """A plain text answer.

    Args:
        text: The assistant message content.
        delay: Seconds to wait before the response starts.
        chunk_delay: Seconds between stream chunks when the request streams.
        usage: Usage to report (a `Usage` or a mapping with ``prompt_tokens`` and
            ``completion_tokens``); estimated from the text when None.

    Returns:
        The step.
    """
    return Reply(text=text, delay=delay, chunk_delay=chunk_delay, usage=_usage(usage))


def tool_call(name: str, arguments: Mapping[str, Any] | str, id: str | None = None) -> ToolCall:
    """One tool call for `tool_calls`.

    Args:
        name: The function name.
        arguments: A mapping is JSON-encoded; a string is sent verbatim, which lets
            tests send malformed arguments.
        id: The call id; a deterministic one is generated when None.

    Returns:
        The call.
    """
    encoded = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
    return ToolCall(name=name, arguments=encoded, id=id)


def tool_calls(
    *calls: ToolCall,
    text: str | None = None,
    delay: float = 0.0,
    chunk_delay: float = 0.0,
    usage: Usage | Mapping[str, int] | None = None,
) -> ToolCalls:
    """An assistant message requesting one or more tool calls.

    Args:
        *calls: The calls, built with `tool_call`.
        text: Optional assistant content sent with the calls.
        delay: Seconds to wait before the response starts.
        chunk_delay: Seconds between stream chunks when the request streams.
        usage: Usage to report; estimated when None.

    Returns:
        The step.

    Raises:
        ValueError: If no call is given.
    """
    if not calls:
        raise ValueError("tool_calls() needs at least one tool_call(...)")
    return ToolCalls(
        calls=tuple(calls), text=text, delay=delay, chunk_delay=chunk_delay, usage=_usage(usage)
    )


def fault(
    status: int,
    *,
    retry_after: float | None = None,
    body: Mapping[str, Any] | str | None = None,
    delay: float = 0.0,
) -> Fault:
    """An HTTP error response (429, 500, 503, 400, 401, ...).

    Args:
        status: The HTTP status code.
        retry_after: Seconds for the ``Retry-After`` header, if any.
        body: A mapping (sent as JSON) or string (sent verbatim); an OpenAI-style
            error body is generated when None.
        delay: Seconds to wait before responding.

    Returns:
        The step.
    """
    return Fault(status=status, retry_after=retry_after, body=body, delay=delay)


def hang(seconds: float) -> Hang:
    """Stay silent for ``seconds`` after reading the request, then close the connection.

    Args:
        seconds: How long to hang; cut short when the server stops.

    Returns:
        The step.
    """
    return Hang(seconds=seconds)


def malformed_json(body: str = _MALFORMED_BODY, *, delay: float = 0.0) -> MalformedJson:
    """A 200 response whose body is not valid JSON.

    Args:
        body: The invalid payload.
        delay: Seconds to wait before responding.

    Returns:
        The step.
    """
    return MalformedJson(body=body, delay=delay)


def truncated_stream(
    after_chunks: int = 2, *, text: str = _TRUNCATED_TEXT, delay: float = 0.0
) -> TruncatedStream:
    """A response cut off midway (see `TruncatedStream`).

    Args:
        after_chunks: Stream events sent before the connection closes.
        text: The answer being cut off.
        delay: Seconds to wait before the response starts.

    Returns:
        The step.
    """
    return TruncatedStream(after_chunks=after_chunks, text=text, delay=delay)


# ----------------------------------------------------------------- request records


@dataclass
class RecordedRequest:
    """One HTTP request the server received.

    Recorded as soon as the request is read, so it is visible while a hang or delay
    is still in progress; ``step`` and ``status`` are filled in as the response goes out.

    Attributes:
        method: HTTP method.
        path: Request path as sent (e.g. ``/v1/chat/completions``).
        headers: Request headers, names lower-cased.
        raw_body: The body bytes.
        body: The body parsed as JSON, or None when empty or not JSON.
        model: The ``model`` field of the body, if any.
        received_at: ``time.monotonic()`` when the request had been read.
        index: Position in the server's request log (0-based).
        step: The step served, or None (non-chat endpoints, auth failures, exhausted
            script, errors).
        status: The HTTP status sent, or None if no status line was sent (hang).
        client_port: The TCP port the request came from (which process sent it).
    """

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    model: str | None
    received_at: float
    index: int
    step: Step | None = None
    status: int | None = None
    client_port: int = 0

    @property
    def endpoint(self) -> str:
        """The path without the ``/v1`` prefix and query, e.g. ``/chat/completions``."""
        return _endpoint(self.path)

    @property
    def is_chat(self) -> bool:
        """Whether this is a chat completion request."""
        return self.method == "POST" and self.endpoint == "/chat/completions"

    @property
    def stream(self) -> bool:
        """Whether the request asked for a streamed response."""
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat ``messages`` of the body (empty when absent)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return list(self.body["messages"])
        return []


Responder: TypeAlias = Callable[[RecordedRequest], Step | None]
"""Computes the step for a chat request; returning None falls back to the queues."""


def tool_loop(
    steps: int,
    calls: Callable[[int], Sequence[ToolCall]],
    *,
    answer: str | Callable[[int], str] = "done",
    delay: float = 0.0,
) -> Responder:
    """A responder that drives an agent loop for `steps` tool-calling turns, then answers.

    The turn is read from the request (assistant messages so far), so it is right for any
    number of runs at once and for retried calls. `calls(k)` are the tool calls of turn k.
    """

    def respond(request: RecordedRequest) -> Step:
        done = sum(1 for m in request.messages if m.get("role") == "assistant")
        if done < steps:
            return tool_calls(*calls(done), delay=delay)
        return reply(answer(done) if callable(answer) else answer, delay=delay)

    return respond


def _endpoint(path: str) -> str:
    path = path.split("?", 1)[0].rstrip("/")
    return path[3:] if path.startswith("/v1/") else path


# ------------------------------------------------------------------------- helpers


def _rough_tokens(text: str) -> int:
    # About four characters per token, like OpenAI's rule of thumb; deterministic.
    return (len(text) + 3) // 4


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    total = 0
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        total += 3 + _rough_tokens(_content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            total += _rough_tokens(str(function.get("name", "")))
            total += _rough_tokens(str(function.get("arguments", "")))
    return max(total, 1)


def _split_text(text: str) -> list[str]:
    # Word-sized pieces keep their trailing whitespace so they concatenate back exactly.
    return re.findall(r"\s*\S+\s*|\s+", text)


def _split_arguments(arguments: str, pieces: int = 3) -> list[str]:
    if not arguments:
        return []
    size = max(1, math.ceil(len(arguments) / pieces))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _error_body(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind, default_code, default_message = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    return {
        "error": {
            "message": message or default_message,
            "type": kind,
            "param": None,
            "code": code or default_code,
        }
    }


@lru_cache(maxsize=65536)
def _seeded_vector(seed: str, dim: int) -> tuple[float, ...]:
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    return tuple(rng.gauss(0.0, 1.0) for _ in range(dim))


def embed_text(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """The deterministic unit vector the server returns for ``text``.

    The vector is a sum of per-word random vectors (seeded by a hash of the word) plus
    a smaller component seeded by the whole text, normalised to length 1: identical
    texts always map to the same vector, and texts sharing words are closer than
    unrelated ones, which keeps similarity search tests meaningful.

    Args:
        text: The input text.
        dim: The vector dimension.

    Returns:
        The normalised vector.
    """
    vector = [0.5 * x for x in _seeded_vector("text:" + text, dim)]
    for word in re.findall(r"\w+", text.lower()):
        for i, x in enumerate(_seeded_vector("word:" + word, dim)):
            vector[i] += x
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


# -------------------------------------------------------------------------- server


class _Aborted(Exception):
    """The server is stopping; the handler should drop the connection."""


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks open connections so stop() can cut them."""

    # Handler threads are daemons (a stuck client never keeps a process alive); stop()
    # still joins them through the list kept by process_request.
    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs in a burst of new connections (16
    # subtasks calling at once), and each drop costs the client a 1 s retransmit.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: "ScriptedModelServer") -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._handler_threads: list[threading.Thread] = []
        self.accepted = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
            self.accepted += 1
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            thread = threading.Thread(
                target=self.process_request_thread,
                args=(request, client_address),
                name="scripted-model-server-conn",
                daemon=True,
            )
            self._handler_threads.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Unblock handlers waiting on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._connections_lock:
            threads = list(self._handler_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        # Clients dropping connections (timeouts, truncation tests) is normal here.
        if isinstance(error, ConnectionError | TimeoutError):
            return
        if error is not None:
            self.owner.errors.append(error)
        if self.owner.verbose:
            traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ScriptedModelServer/1.0"
    # Small writes (headers, stream chunks) must not wait for delayed ACKs: without
    # TCP_NODELAY every response here took ~40 ms, which is not a model's latency.
    disable_nagle_algorithm = True
    server: _HTTPServer

    # ---- plumbing

    @property
    def owner(self) -> "ScriptedModelServer":
        return self.server.owner

    def log_message(self, format: str, *args: Any) -> None:
        if self.owner.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.owner.stopping.wait(seconds):
            raise _Aborted

    def _start(self, record: RecordedRequest, status: int, headers: Mapping[str, str]) -> None:
        record.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(
        self,
        record: RecordedRequest,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        self._start(
            record,
            status,
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
                **(headers or {}),
            },
        )
        self.wfile.write(data)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    def _write_event(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._write_chunk(f"data: {text}\n\n".encode())

    # ---- entry points

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        raw = self._read_body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        record = self.owner._record(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            raw_body=raw,
            body=body,
            model=model if isinstance(model, str) else None,
            client_port=int(self.client_address[1]),
        )
        try:
            self._route(record)
        except _Aborted:
            self.close_connection = True
        except ConnectionError:
            self.close_connection = True
        except Exception as error:
            # A bug in a responder or in this server: answer 500 if still possible.
            self.owner.errors.append(error)
            self.close_connection = True
            if record.status is None:
                with contextlib.suppress(OSError):
                    self._send_json(
                        record,
                        500,
                        _error_body(500, f"ScriptedModelServer error: {error!r}", "server_bug"),
                    )
            if self.owner.verbose:
                traceback.print_exc()

    def _route(self, record: RecordedRequest) -> None:
        api_key = self.owner.api_key
        if api_key is not None and record.headers.get("authorization") != f"Bearer {api_key}":
            self._send_json(
                record,
                401,
                _error_body(401, "Incorrect API key provided.", "invalid_api_key"),
            )
            return
        endpoint, method = record.endpoint, record.method
        if method == "POST" and endpoint == "/chat/completions":
            self._chat(record)
        elif method == "POST" and endpoint == "/embeddings":
            self._embeddings(record)
        elif method == "POST" and endpoint == "/moderations":
            self._moderations(record)
        elif method == "GET" and endpoint == "/models":
            self._models(record)
        else:
            self._send_json(
                record,
                404,
                _error_body(404, f"Unknown endpoint {method} {record.path}", "unknown_url"),
            )

    # ---- endpoints

    def _models(self, record: RecordedRequest) -> None:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "colony-tests"}
            for name in self.owner.models()
        ]
        self._send_json(record, 200, {"object": "list", "data": data})

    def _moderations(self, record: RecordedRequest) -> None:
        body = record.body
        if not isinstance(body, dict) or "input" not in body:
            self._send_json(record, 400, _error_body(400, "'input' is required"))
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for item in inputs:
            scores = self.owner.moderation_scores(_content_text(item) or str(item))
            flags = {category: score >= 0.5 for category, score in scores.items()}
            results.append(
                {"flagged": any(flags.values()), "categories": flags, "category_scores": scores}
            )
        self._send_json(
            record,
            200,
            {"id": "modr-scripted", "model": record.model or "moderation", "results": results},
        )

    def _embeddings(self, record: RecordedRequest) -> None:
        body = record.body
        if not isinstance(body, dict) or "input" not in body:
            self._send_json(record, 400, _error_body(400, "'input' is required"))
            return
        inputs = body["input"]
        # Token-id inputs are embedded via their text form; only determinism matters.
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and all(isinstance(x, int) for x in inputs)
        ):
            inputs = [inputs]
        texts = [item if isinstance(item, str) else str(item) for item in inputs]
        dim = int(body.get("dimensions") or self.owner.embedding_dim)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dim)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(max(1, _rough_tokens(text)) for text in texts)
        self._send_json(
            record,
            200,
            {
                "object": "list",
                "data": data,
                "model": record.model or DEFAULT_MODEL,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chat(self, record: RecordedRequest) -> None:
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_json(
                record, 400, _error_body(400, "Request body must be JSON with 'messages'.")
            )
            return
        step = self.owner._next_step(record)
        if step is None:
            self._send_json(
                record,
                500,
                _error_body(
                    500,
                    f"ScriptedModelServer: script exhausted for model {record.model!r} "
                    "(no scripted step left and no default set)",
                    "script_exhausted",
                ),
            )
            return
        record.step = step
        match step:
            case Hang(seconds=seconds):
                self._sleep(seconds)
                self.close_connection = True
            case Fault():
                self._fault(record, step)
            case MalformedJson():
                self._malformed(record, step)
            case TruncatedStream():
                self._truncated(record, step)
            case Reply() | ToolCalls():
                self._sleep(step.delay)
                if record.stream:
                    self._stream_answer(record, step)
                else:
                    self._send_json(record, 200, self._completion(record, step))

    def _fault(self, record: RecordedRequest, step: Fault) -> None:
        self._sleep(step.delay)
        headers: dict[str, str] = {}
        if step.retry_after is not None:
            value = step.retry_after
            headers["Retry-After"] = str(int(value)) if float(value).is_integer() else str(value)
        if isinstance(step.body, str):
            data = step.body.encode()
            try:
                json.loads(data)
                content_type = "application/json"
            except ValueError:
                content_type = "text/plain; charset=utf-8"
            self._start(
                record,
                step.status,
                {"Content-Type": content_type, "Content-Length": str(len(data)), **headers},
            )
            self.wfile.write(data)
            return
        payload = dict(step.body) if step.body is not None else _error_body(step.status)
        self._send_json(record, step.status, payload, headers)

    def _malformed(self, record: RecordedRequest, step: MalformedJson) -> None:
        self._sleep(step.delay)
        if record.stream:
            self._start_stream(record)
            self._write_event(step.body)
            self._write_event("[DONE]")
            self._write_chunk(b"")
            return
        data = step.body.encode()
        self._start(
            record,
            200,
            {"Content-Type": "application/json", "Content-Length": str(len(data))},
        )
        self.wfile.write(data)

    def _truncated(self, record: RecordedRequest, step: TruncatedStream) -> None:
        self._sleep(step.delay)
        self.close_connection = True
        answer = Reply(text=step.text)
        if record.stream:
            self._start_stream(record)
            for event in list(self._chunks(record, answer))[: step.after_chunks]:
                self._write_event(event)
            return
        data = json.dumps(self._completion(record, answer)).encode()
        self._start(
            record,
            200,
            {"Content-Type": "application/json", "Content-Length": str(len(data))},
        )
        self.wfile.write(data[: len(data) // 2])

    # ---- chat payloads

    def _usage_for(self, record: RecordedRequest, step: Reply | ToolCalls) -> dict[str, int]:
        if step.usage is not None:
            return step.usage.as_dict()
        completion = _rough_tokens(step.text or "")
        if isinstance(step, ToolCalls):
            completion += sum(
                _rough_tokens(c.name) + _rough_tokens(c.arguments) for c in step.calls
            )
        return Usage(_prompt_tokens(record.body), max(completion, 1)).as_dict()

    def _call_id(self, record: RecordedRequest, index: int, call: ToolCall) -> str:
        return call.id or f"call_{record.index}_{index}"

    def _completion(self, record: RecordedRequest, step: Reply | ToolCalls) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": step.text, "refusal": None}
        finish_reason = "stop"
        if isinstance(step, ToolCalls):
            finish_reason = "tool_calls"
            message["tool_calls"] = [
                {
                    "id": self._call_id(record, i, call),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for i, call in enumerate(step.calls)
            ]
        return {
            "id": f"chatcmpl-scripted-{record.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": record.model or DEFAULT_MODEL,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": self._usage_for(record, step),
        }

    def _chunks(self, record: RecordedRequest, step: Reply | ToolCalls) -> Iterator[dict[str, Any]]:
        base = {
            "id": f"chatcmpl-scripted-{record.index}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": record.model or DEFAULT_MODEL,
            "system_fingerprint": None,
        }
        options = record.body.get("stream_options") if isinstance(record.body, dict) else None
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        extra: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice], **extra}

        yield chunk({"role": "assistant", "content": ""})
        for piece in _split_text(step.text or ""):
            yield chunk({"content": piece})
        finish_reason = "stop"
        if isinstance(step, ToolCalls):
            finish_reason = "tool_calls"
            for i, call in enumerate(step.calls):
                yield chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": self._call_id(record, i, call),
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ]
                    }
                )
                for fragment in _split_arguments(call.arguments):
                    yield chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]})
        yield chunk({}, finish_reason)
        if include_usage:
            yield {**base, "choices": [], "usage": self._usage_for(record, step)}

    def _start_stream(self, record: RecordedRequest) -> None:
        self._start(
            record,
            200,
            {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "Transfer-Encoding": "chunked",
            },
        )

    def _stream_answer(self, record: RecordedRequest, step: Reply | ToolCalls) -> None:
        self._start_stream(record)
        for n, event in enumerate(self._chunks(record, step)):
            if n:
                self._sleep(step.chunk_delay)
            self._write_event(event)
        self._write_event("[DONE]")
        self._write_chunk(b"")


class ScriptedModelServer:
    """A scripted OpenAI-compatible model server on 127.0.0.1 for tests.

    Chat completion requests are answered by steps taken, in order, from the queue of
    the requested model, falling back to the shared queue (scripted without
    ``model=``), then to `default`; when all are empty the server answers 500 with a
    "script exhausted" error. A `responder`, when set, is asked first. Every request is
    recorded in `requests`, faults included. Embeddings are deterministic (see
    `embed_text`) and never consume steps.

    Attributes:
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get 401.
        default: Step used when the matching queues are empty (None: 500 exhausted).
        responder: Optional ``fn(request) -> Step | None`` consulted before the queues.
        embedding_dim: Default embedding dimension (a request's ``dimensions`` wins).
        verbose: Log requests and handler errors to stderr (off by default).
        errors: Unexpected exceptions raised while handling requests (for debugging).
        stopping: Set when the server stops; interrupts hangs and delays.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        default: Step | None = None,
        responder: Responder | None = None,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        models: Sequence[str] = (DEFAULT_MODEL,),
        verbose: bool = False,
    ) -> None:
        """Configure the server; nothing listens until `start`.

        Args:
            host: Interface to bind.
            port: Port to bind; 0 picks a free one.
            api_key: Expected bearer token, or None to accept any.
            default: Step used when the script is exhausted.
            responder: Dynamic step source consulted before the queues.
            embedding_dim: Default embedding dimension.
            models: Model ids always listed by ``GET /v1/models``.
            verbose: Log to stderr.
        """
        self.host = host
        self.api_key = api_key
        self.default: Step | None = default
        self.responder: Responder | None = responder
        self.embedding_dim = embedding_dim
        self.verbose = verbose
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self._port = port
        self._initial_default = default
        self._initial_responder = responder
        self._base_models = tuple(models)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._shared: deque[Step] = deque()
        self._queues: dict[str, deque[Step]] = {}
        self._requests: list[RecordedRequest] = []
        self._moderation: list[tuple[str, str, float]] = []  # (word, category, score)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> Self:
        """Bind the port and serve in a background daemon thread.

        Returns:
            The server itself.

        Raises:
            RuntimeError: If already started.
        """
        if self._httpd is not None:
            raise RuntimeError("ScriptedModelServer already started")
        self.stopping.clear()
        self._httpd = _HTTPServer((self.host, self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            # A short poll keeps stop() fast; serve_forever only notices shutdown between polls.
            kwargs={"poll_interval": 0.01},
            name=f"scripted-model-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: end hangs and delays, cut open connections, join threads.

        Safe to call twice.

        Args:
            timeout: Upper bound in seconds for joining handler threads.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self.stopping.set()
        httpd.shutdown()
        if thread is not None:
            thread.join(timeout)
        httpd.cut_connections()
        httpd.join_handlers(timeout)
        httpd.server_close()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            RuntimeError: If the server is not running.
        """
        if self._httpd is None:
            raise RuntimeError("ScriptedModelServer is not running; call start()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # ---- scripting

    def script(self, *steps: Step, model: str | None = None) -> Self:
        """Append steps to a queue.

        Args:
            *steps: Steps served in order, one per chat request.
            model: Queue for requests with this ``model``; None means the shared queue
                used by any model whose own queue is empty.

        Returns:
            The server itself, for chaining.
        """
        with self._lock:
            if model is None:
                self._shared.extend(steps)
            else:
                self._queues.setdefault(model, deque()).extend(steps)
        return self

    def pending(self, model: str | None = None) -> int:
        """How many scripted steps are left in a queue (shared queue when model is None)."""
        with self._lock:
            queue = self._shared if model is None else self._queues.get(model, ())
            return len(queue)

    def reset(self) -> None:
        """Drop queued steps and recorded requests; restore default and responder.

        ``default`` and ``responder`` go back to the values given to the constructor.
        """
        with self._lock:
            self._shared.clear()
            self._queues.clear()
            self._requests.clear()
            self._moderation.clear()
            self.errors.clear()
            self.default = self._initial_default
            self.responder = self._initial_responder

    def flag_for_moderation(
        self, word: str, category: str = "violence", score: float = 0.9
    ) -> Self:
        """Make ``POST /v1/moderations`` flag inputs holding `word` (any case) as `category`."""
        with self._lock:
            self._moderation.append((word.lower(), category, score))
        return self

    def moderation_scores(self, text: str) -> dict[str, float]:
        """The category scores ``/v1/moderations`` gives `text` (0.0 for unflagged ones)."""
        with self._lock:
            rules = list(self._moderation)
        scores = {"violence": 0.0, "self-harm": 0.0, "hate": 0.0, "sexual": 0.0}
        for word, category, score in rules:
            if word in text.lower():
                scores[category] = max(scores.get(category, 0.0), score)
        return scores

    def models(self) -> list[str]:
        """Model ids listed by ``GET /v1/models``: the defaults plus every scripted model."""
        with self._lock:
            names = list(self._base_models) + list(self._queues)
        return list(dict.fromkeys(names))

    # ---- inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since the server started (keep-alive reuses one)."""
        return self._httpd.accepted if self._httpd is not None else 0

    def chat_requests(self, model: str | None = None) -> list[RecordedRequest]:
        """Chat completion requests, optionally only those for ``model``."""
        return [r for r in self.requests if r.is_chat and (model is None or r.model == model)]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests have been recorded.

        Args:
            n: The number of requests to wait for.
            timeout: Seconds to wait at most.

        Returns:
            A snapshot of the recorded requests.

        Raises:
            TimeoutError: If fewer than ``n`` requests arrived in time.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} requests within {timeout}s, got {len(self._requests)}"
                )
            return list(self._requests)

    # ---- used by the handler

    def _record(self, **fields: Any) -> RecordedRequest:
        with self._changed:
            record = RecordedRequest(
                received_at=time.monotonic(), index=len(self._requests), **fields
            )
            self._requests.append(record)
            self._changed.notify_all()
        return record

    def _next_step(self, record: RecordedRequest) -> Step | None:
        responder = self.responder
        if responder is not None:
            step = responder(record)
            if step is not None:
                return step
        with self._lock:
            queue = self._queues.get(record.model or "")
            if queue:
                return queue.popleft()
            if self._shared:
                return self._shared.popleft()
            return self.default


# ---------------------------------------------------------------------- __main__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server as a process until SIGTERM/SIGINT.

    Args:
        argv: Command line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--default-reply", default=None, help="answer every chat request with TEXT")
    parser.add_argument(
        "--tool-loop",
        type=int,
        default=None,
        metavar="STEPS",
        help="drive agent loops: STEPS turns of --tool-call, then --default-reply (or 'done')",
    )
    parser.add_argument(
        "--tool-call",
        default='calculator:{"expression": "1+1"}',
        metavar="NAME:JSON",
        help="the tool call of each --tool-loop turn",
    )
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--embedding-dim", type=int, default=DEFAULT_EMBEDDING_DIM)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    default = reply(args.default_reply) if args.default_reply is not None else None
    responder = None
    if args.tool_loop is not None:
        name, _, arguments = args.tool_call.partition(":")
        call = tool_call(name, arguments or "{}")
        responder = tool_loop(args.tool_loop, lambda _: [call], answer=args.default_reply or "done")
    server = ScriptedModelServer(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        default=default,
        responder=responder,
        embedding_dim=args.embedding_dim,
        verbose=args.verbose,
    )
    with server:
        print(f"READY {server.base_url}", flush=True)
        # A timed wait lets the main thread run the signal handler promptly.
        while not done.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
