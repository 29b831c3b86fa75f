"""Model calls in tests, each through a `ModelClient` of its own."""

from activities.providers.client import ModelClient, OnDelta
from core.payloads import ModelRequest, ModelResult
from core.settings import Settings


async def complete(
    request: ModelRequest, settings: Settings, *, on_delta: OnDelta | None = None
) -> ModelResult:
    """`ModelClient.complete` on a fresh client (fresh limits and breakers), closed after."""
    async with ModelClient(settings) as client:
        return await client.complete(request, on_delta=on_delta)
