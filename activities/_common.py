"""Helpers shared by activity classes."""

import os
import socket
from typing import Any

from core import runs
from core.db import Pool
from core.models import RunEvent


def worker_identity() -> str:
    """`host:pid` of the worker process running the activity."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def append_run_event(
    pool: Pool, tenant_id: str, run_id: str, type_: str, key: str, data: dict[str, Any]
) -> None:
    """Append one event to a run's log (idempotent by `key`)."""
    async with pool.connection() as conn:
        await runs.append_event(conn, tenant_id, run_id, RunEvent(key=key, type=type_, data=data))
