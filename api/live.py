"""The API's side of a workflow: start it once, read its live state, ask it to stop."""

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.common import TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.types import MethodAsyncSingleParam, ParamType, ReturnType, SelfType

from core import metrics
from core.queues import TaskQueue
from core.settings import Settings

QUERY_TIMEOUT = 2.0
T = TypeVar("T")


async def start_once(
    client: Client,
    settings: Settings,
    workflow: MethodAsyncSingleParam[SelfType, ParamType, ReturnType],
    arg: ParamType,
    *,
    workflow_id: str,
    attributes: TypedSearchAttributes,
    kind: str,
) -> None:
    """Start `workflow` on the orchestration lane under its business-key id.

    A workflow of that id that already exists (a repeated request) is left as it is.
    """
    try:
        await client.start_workflow(
            workflow,
            arg,
            id=workflow_id,
            task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=attributes,
        )
        metrics.WORKFLOWS_STARTED.labels(kind=kind).inc()
    except WorkflowAlreadyStartedError:
        pass


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


async def request_cancel(client: Client, workflow_id: str) -> None:
    """Ask the workflow to cancel; one Temporal no longer has (it ended) is no error."""
    try:
        await client.get_workflow_handle(workflow_id).cancel()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
