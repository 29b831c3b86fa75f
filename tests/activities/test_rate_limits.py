"""Per-provider rate limits of model calls in a worker process."""

import asyncio
import time

import pytest

from activities.providers.client import ModelClient
from activities.providers.limits import RateLimiter
from core.payloads import ChatMessage, ModelRequest
from core.settings import Settings
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, reply


async def test_token_bucket_spaces_calls() -> None:
    limiter = RateLimiter(rate=20)
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    # One token to start with, then one every 50 ms.
    assert time.monotonic() - started >= 0.19
    # Without a rate, acquiring never suspends (checked by stepping the coroutine once,
    # not by a clock: this machine is too noisy for an upper time bound).
    unlimited = RateLimiter(rate=None)
    for _ in range(100):
        step = unlimited.acquire().__await__()
        with pytest.raises(StopIteration):
            next(step)


async def test_provider_limit_applies_to_model_calls(model_server: ScriptedModelServer) -> None:
    model_server.default = reply("ok")
    settings = make_settings(
        OPENAI_BASE_URL=model_server.base_url, COLONY_LLM_PROVIDER_RATE_LIMITS={"openai": 10}
    )
    request = ModelRequest(
        model="openai/scripted-model", messages=[ChatMessage(role="user", content="hi")]
    )
    async with ModelClient(settings) as client:
        assert client.limits.for_provider("openai").rate == 10
        assert client.limits.for_provider("anthropic").rate is None
        assert client.limits.for_provider("openai") is client.limits.for_provider("openai")
        started = time.monotonic()
        await asyncio.gather(*(client.complete(request) for _ in range(4)))
        assert time.monotonic() - started >= 0.29  # 4 calls at 10/s: 3 gaps of 100 ms
    # Each worker's client has limiters of its own.
    assert ModelClient(settings).limits.for_provider("openai") is not client.limits.for_provider(
        "openai"
    )
    assert len(model_server.chat_requests()) == 4


def test_limits_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLONY_LLM_PROVIDER_RATE_LIMITS", '{"anthropic": 2.5}')
    assert Settings(_env_file=None).llm_provider_rate_limits == {"anthropic": 2.5}  # type: ignore[call-arg]
