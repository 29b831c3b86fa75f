"""Helpers shared by activity classes."""

import os
import socket
from collections import OrderedDict
from typing import Any

from core.db import Pool
from core.payloads import RunEvent
from core.runs import agents
from core.runs import store as runs


def worker_identity() -> str:
    """`host:pid` of the worker process running the activity."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def append_run_event(
    pool: Pool, tenant_id: str, run_id: str, type_: str, key: str, data: dict[str, Any]
) -> None:
    """Append one event to a run's log (idempotent by `key`)."""
    async with pool.connection() as conn:
        await runs.append_event(conn, tenant_id, run_id, RunEvent(key=key, type=type_, data=data))


class PinnedVersions:
    """Agent versions by (tenant, agent, version), least recently used dropped past `size`.

    A run's pinned version never changes, so a worker asks Postgres once per version.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._versions: OrderedDict[tuple[str, str, int], agents.AgentVersion] = OrderedDict()

    async def get(
        self, conn: runs.Conn, tenant_id: str, agent_name: str, version: int
    ) -> agents.AgentVersion:
        """The version, from the cache or Postgres."""
        key = (tenant_id, agent_name, version)
        found = self._versions.get(key)
        if found is None:
            found = await agents.get_version(conn, *key)
            self._versions[key] = found
            if len(self._versions) > self._size:
                self._versions.popitem(last=False)
        else:
            self._versions.move_to_end(key)
        return found
