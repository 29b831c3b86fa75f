"""Live state from a workflow's query, when a worker answers in time."""

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.service import RPCError

QUERY_TIMEOUT = 2.0
T = TypeVar("T")


async def query_status(client: Client, workflow_id: str, query: Callable[[Any], T]) -> T | None:
    """The workflow's `query` answer, or None when no worker answered within 2 s.

    Postgres still tells the state then; it is one activity behind the workflow.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        result: T = await asyncio.wait_for(handle.query(query), QUERY_TIMEOUT)
    except (RPCError, TimeoutError):
        return None
    return result
