"""Per-provider rate limits of model calls in a worker process (`RateLimits`)."""

import asyncio
import time
from collections.abc import Callable, Mapping


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


class RateLimits:
    """A worker's `RateLimiter` of each provider, created on first use.

    ``rates`` are calls per second by provider (`COLONY_LLM_PROVIDER_RATE_LIMITS`);
    providers without one are unlimited.
    """

    def __init__(self, rates: Mapping[str, float]) -> None:
        self._rates = dict(rates)
        self._limiters: dict[str, RateLimiter] = {}

    def for_provider(self, provider: str) -> RateLimiter:
        """The limiter every call to ``provider`` in this worker waits on."""
        limiter = self._limiters.get(provider)
        if limiter is None:
            limiter = self._limiters[provider] = RateLimiter(self._rates.get(provider))
        return limiter
