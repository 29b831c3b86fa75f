"""Per-tool rate limits and concurrency caps, enforced in the tools lane.

`ToolLimiter` keeps, per `(tenant, tool)`, a token bucket (calls per minute) and a
concurrency gate (calls in flight). Both are **per worker process**: N tools-lane
workers admit up to N times the configured rate and concurrency in total. That bounds
a runaway agent cheaply; a hard global quota would need a shared store (Postgres or a
Temporal task queue per tool) and is not what this is.

A call that cannot start within `max_wait_s` fails with `RetryableToolError`
(`RateLimited`, retryable): Temporal retries the activity later instead of a worker
sitting on it without heartbeats.
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from activities.tools.framework import ToolError
from core.errors import ErrorType

DEFAULT_MAX_WAIT_S = 10.0
"""How long a call may wait for its turn before it fails (retryably)."""


class RetryableToolError(ToolError):
    """The tool could not run now, but may later: rate limited, overloaded, timed out.

    `error_type` is a retryable `ErrorType` (RateLimited, DependencyUnavailable, Timeout);
    `retry_after_s` is a hint for `ApplicationError(next_retry_delay=...)`.
    """

    error_type = ErrorType.DEPENDENCY_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        error_type: ErrorType | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, error_type=error_type)
        self.retry_after_s = retry_after_s


@dataclass
class _Bucket:
    rate_per_s: float
    capacity: float
    tokens: float
    updated: float


@dataclass
class _Gate:
    limit: int
    in_flight: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class ToolLimiter:
    """Rate limits and concurrency caps keyed by (tenant, tool), for one worker process.

    The bucket holds one second's worth of calls (at least one), so a limit of 600 per
    minute admits bursts of 10; waiting callers reserve tokens in arrival order.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._gates: dict[tuple[str, str], _Gate] = {}

    def in_flight(self, tenant_id: str, tool: str) -> int:
        """Calls of the tool running now in this process."""
        gate = self._gates.get((tenant_id, tool))
        return gate.in_flight if gate else 0

    @asynccontextmanager
    async def acquire(
        self,
        tenant_id: str,
        tool: str,
        *,
        rate_per_minute: float | None = None,
        max_concurrency: int | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> AsyncIterator[None]:
        """Hold a slot for one call of `tool` for the duration of the block.

        Raises:
            RetryableToolError: the call could not start within `max_wait_s`.
        """
        key = (tenant_id, tool)
        deadline = self._clock() + max_wait_s
        gate = await self._enter(key, max_concurrency, max_wait_s) if max_concurrency else None
        try:
            if rate_per_minute:
                await self._take_token(key, rate_per_minute, deadline, tool)
            yield
        finally:
            if gate is not None:
                async with gate.changed:
                    gate.in_flight -= 1
                    gate.changed.notify_all()

    async def _enter(self, key: tuple[str, str], limit: int, max_wait_s: float) -> _Gate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(limit)
        gate.limit = limit  # a re-registered tool may change its limit
        async with gate.changed:
            try:
                async with asyncio.timeout(max_wait_s):
                    await gate.changed.wait_for(lambda: gate.in_flight < gate.limit)
            except TimeoutError:
                raise RetryableToolError(
                    f"Tool '{key[1]}' is at its concurrency limit ({limit} calls at once); "
                    "the call will be retried shortly.",
                    error_type=ErrorType.RATE_LIMITED,
                    retry_after_s=1.0,
                ) from None
            gate.in_flight += 1
        return gate

    async def _take_token(
        self, key: tuple[str, str], rate_per_minute: float, deadline: float, tool: str
    ) -> None:
        now = self._clock()
        rate = rate_per_minute / 60.0
        capacity = max(1.0, math.floor(rate))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, capacity, capacity, now)
        if bucket.rate_per_s != rate:
            bucket.rate_per_s, bucket.capacity = rate, capacity
            bucket.tokens = min(bucket.tokens, capacity)
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        wait = (1.0 - bucket.tokens) / rate if bucket.tokens < 1.0 else 0.0
        if now + wait > deadline:
            raise RetryableToolError(
                f"Tool '{tool}' is rate limited ({rate_per_minute:g} calls per minute); "
                "the call will be retried shortly.",
                error_type=ErrorType.RATE_LIMITED,
                retry_after_s=wait,
            )
        bucket.tokens -= 1.0  # reserve now: later callers queue behind this one
        if wait > 0:
            await self._sleep(wait)
