"""ToolLimiter: per-(tenant, tool) token buckets and concurrency gates in one process."""

import asyncio

import pytest

from activities.tools.limits import RetryableToolError, ToolLimiter
from core.errors import ErrorType


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_rate_limit_admits_a_burst_then_spaces_calls() -> None:
    clock = FakeClock()
    limiter = ToolLimiter(clock=clock, sleep=clock.sleep)
    # 120 per minute: 2 per second, bursts of 2.
    for _ in range(2):
        async with limiter.acquire("t", "weather", rate_per_minute=120):
            pass
    assert clock.slept == []
    async with limiter.acquire("t", "weather", rate_per_minute=120):
        pass
    assert clock.slept == [pytest.approx(0.5)]


async def test_rate_limit_fails_retryably_past_the_wait_budget() -> None:
    clock = FakeClock()
    limiter = ToolLimiter(clock=clock, sleep=clock.sleep)
    async with limiter.acquire("t", "slow_api", rate_per_minute=1):
        pass
    with pytest.raises(RetryableToolError) as info:
        async with limiter.acquire("t", "slow_api", rate_per_minute=1, max_wait_s=5):
            pass
    assert info.value.error_type is ErrorType.RATE_LIMITED and info.value.retryable
    assert info.value.retry_after_s == pytest.approx(60)
    assert "1 calls per minute" in info.value.message
    clock.now += 60  # the bucket refills
    async with limiter.acquire("t", "slow_api", rate_per_minute=1, max_wait_s=5):
        pass


async def test_limits_are_per_tenant_and_per_tool() -> None:
    clock = FakeClock()
    limiter = ToolLimiter(clock=clock, sleep=clock.sleep)
    for tenant, tool in [("a", "x"), ("b", "x"), ("a", "y")]:
        async with limiter.acquire(tenant, tool, rate_per_minute=1, max_wait_s=0):
            pass
    with pytest.raises(RetryableToolError):
        async with limiter.acquire("a", "x", rate_per_minute=1, max_wait_s=0):
            pass


async def test_concurrency_cap_queues_then_fails_retryably() -> None:
    limiter = ToolLimiter()
    release = asyncio.Event()
    peak = 0

    async def call() -> None:
        nonlocal peak
        async with limiter.acquire("t", "db", max_concurrency=2, max_wait_s=5):
            peak = max(peak, limiter.in_flight("t", "db"))
            await release.wait()

    tasks = [asyncio.create_task(call()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert limiter.in_flight("t", "db") == 2
    with pytest.raises(RetryableToolError, match="concurrency limit"):
        async with limiter.acquire("t", "db", max_concurrency=2, max_wait_s=0.05):
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2 and limiter.in_flight("t", "db") == 0


async def test_a_failing_call_releases_its_slot() -> None:
    limiter = ToolLimiter()
    with pytest.raises(RuntimeError):
        async with limiter.acquire("t", "x", max_concurrency=1):
            raise RuntimeError("boom")
    async with limiter.acquire("t", "x", max_concurrency=1, max_wait_s=0.01):
        assert limiter.in_flight("t", "x") == 1


async def test_no_limits_means_no_waiting() -> None:
    limiter = ToolLimiter()
    async with asyncio.timeout(1):
        await asyncio.gather(*(_enter(limiter) for _ in range(100)))


async def _enter(limiter: ToolLimiter) -> None:
    async with limiter.acquire("t", "free"):
        await asyncio.sleep(0)
