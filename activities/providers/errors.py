"""Error classification: every failure of a model call as an `ApplicationError`.

`classify` is the one place that maps LiteLLM, openai and httpx exceptions to
`ErrorType`s:

    ApplicationError(type=...)
    ├── RateLimited          429                                   retryable, Retry-After honoured
    ├── Timeout              408, read/connect timeouts, deadline  retryable
    ├── ProviderUnavailable  409, 5xx, connection errors,          retryable (503: Retry-After)
    │                        truncated or malformed responses
    ├── AuthFailed           401, 403                              non-retryable
    ├── ContextTooLong       context window exceeded, 413          non-retryable
    └── InvalidRequest       any other 4xx                         non-retryable
"""

import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai
from temporalio.exceptions import ApplicationError

from activities.providers.routing import LOCAL_PLACEHOLDER_KEY
from core.errors import ErrorType

MAX_RETRY_AFTER = timedelta(minutes=5)
MAX_MESSAGE_CHARS = 500


def _is_litellm_error(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is LiteLLM's exception ``name`` (false while LiteLLM is not loaded).

    Only a loaded LiteLLM raises its exceptions, so classifying a failure never loads it.
    """
    exceptions = sys.modules.get("litellm.exceptions")
    return exceptions is not None and isinstance(exc, getattr(exceptions, name))


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


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret != LOCAL_PLACEHOLDER_KEY:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text
