"""Per-provider rate limits of model calls in a worker process."""

import asyncio
import time
from collections.abc import Callable

from core.settings import Settings


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
