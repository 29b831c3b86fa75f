"""Writes that must not throw away work already done: a model's answer, a tool's result.

A model call is paid for and a tool call may have changed the world by the time its
result is written to Postgres. If Postgres is down at that moment (restarting after a
crash takes the embedded supervisor 1.5-2.6 s), failing the activity would make Temporal
retry it, and the retry would call the model or the tool again. So:

- the finished work is recorded in the activity's heartbeat details first (`keep`), which
  Temporal carries to the next attempt even when this one fails;
- the write is retried while Postgres is unreachable, heartbeating, for up to
  `PERSIST_WINDOW_S`;
- an attempt that finds finished work from an earlier one (`earlier_work`) writes it
  instead of doing the work again.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import psycopg
from psycopg_pool import PoolTimeout
from temporalio import activity

PERSIST_WINDOW_S: Final = 60.0
"""How long a finished result's write is retried while Postgres is unreachable."""
UNREACHABLE: Final = (psycopg.OperationalError, PoolTimeout)
"""Errors that mean Postgres cannot be reached (as opposed to a bad statement)."""

T = TypeVar("T")
log = logging.getLogger(__name__)


def earlier_work(index: int) -> Any | None:
    """Heartbeat detail `index` of an earlier attempt (None outside a worker or if none)."""
    try:
        details = activity.info().heartbeat_details
    except RuntimeError:
        return None
    return details[index] if len(details) > index else None


async def keep(
    write: Callable[[], Awaitable[T]],
    details: tuple[Any, ...],
    *,
    window_s: float = PERSIST_WINDOW_S,
    first_delay_s: float = 0.25,
) -> T:
    """Run `write` until it succeeds, retrying while Postgres is unreachable.

    Heartbeats `details` (the finished work) before the first try and between tries; after
    `window_s` the last error is raised and the activity fails with its work kept.
    """
    _heartbeat(details)
    deadline = time.monotonic() + window_s
    delay = first_delay_s
    while True:
        try:
            return await write()
        except UNREACHABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Postgres unreachable while saving a result (%s); retrying", exc)
            await asyncio.sleep(delay)
            _heartbeat(details)
            delay = min(delay * 2, 5.0)


def _heartbeat(details: tuple[Any, ...]) -> None:
    try:
        if activity.info().is_local:
            # Local activities cannot heartbeat: only the tools that need no isolation
            # run so (pure functions, which a retry may compute again at no cost).
            return
        activity.heartbeat(*details)
    except RuntimeError:  # not in an activity (a direct call in a test)
        pass
