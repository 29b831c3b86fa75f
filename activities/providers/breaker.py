"""Per-provider circuit breakers for the callers' fallback chains."""

import enum
import threading
import time
from collections.abc import Callable

from core.errors import ErrorType


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


class Breakers:
    """A worker's `CircuitBreaker` of each provider, shared by all its calls (thread-safe)."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def for_provider(self, provider: str) -> CircuitBreaker:
        """The breaker of ``provider`` (created closed, with defaults)."""
        with self._lock:
            breaker = self._breakers.get(provider)
            if breaker is None:
                breaker = self._breakers[provider] = CircuitBreaker(provider)
            return breaker
