"""How often a long activity heartbeats: from its own heartbeat timeout, not a constant."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import activity

BEATS_PER_TIMEOUT = 3
"""Heartbeats per heartbeat timeout: two may be lost before the server gives up."""


def heartbeat_every(fallback: float) -> float:
    """Seconds between heartbeats: a third of the activity's heartbeat timeout.

    `fallback` when the activity has none (or runs outside a worker, in tests).
    """
    try:
        timeout = activity.info().heartbeat_timeout
    except RuntimeError:  # not in an activity
        return fallback
    if not timeout:
        return fallback
    return timeout.total_seconds() / BEATS_PER_TIMEOUT


@asynccontextmanager
async def heartbeating(fallback: float = 10.0) -> AsyncIterator[None]:
    """Heartbeat in the background while the block runs (a long model call, say).

    Outside an activity (tests calling the code directly) it does nothing.
    """
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(heartbeat_every(fallback))
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
