"""The API's side of a workflow: start it once, read its live state, ask it to stop."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.types import MethodAsyncSingleParam, ParamType, ReturnType, SelfType

from core import metrics, search_attributes
from core.errors import ErrorType, InvalidInput, StackError
from core.queues import TaskQueue
from core.settings import Settings

QUERY_TIMEOUT = 2.0
log = logging.getLogger("colony.api")
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
    await _once(
        client.start_workflow(
            workflow, arg, id=workflow_id, task_queue=orchestration_queue(settings),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, search_attributes=attributes,
        ),
        kind, workflow_id,
    )  # fmt: skip


async def start_named_once(
    client: Client,
    settings: Settings,
    workflow: str,
    arg: BaseModel,
    *,
    workflow_id: str,
    attributes: TypedSearchAttributes,
    kind: str,
) -> None:
    """`start_once` for a workflow known by its registered name (the API does not import it)."""
    await _once(
        client.start_workflow(
            workflow, arg, id=workflow_id, task_queue=orchestration_queue(settings),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, search_attributes=attributes,
        ),
        kind, workflow_id,
    )  # fmt: skip


async def execute_briefly(
    client: Client,
    settings: Settings,
    workflow: MethodAsyncSingleParam[SelfType, ParamType, ReturnType],
    arg: ParamType,
    *,
    kind: str,
    tenant_id: str,
    execution_timeout: timedelta,
    what: str,
) -> ReturnType:
    """Run a short workflow whose work is on the memory lane to its result (a request's answer).

    Its id is `{kind}-{random}`. A failure the activity typed `invalid_request` is the
    caller's (422); any other means the lane did not answer (503, naming `what`).
    """
    workflow_id = f"{kind}-{uuid.uuid4().hex}"
    metrics.WORKFLOWS_STARTED.labels(kind=kind).inc()
    try:
        return await client.execute_workflow(
            workflow, arg, id=workflow_id, task_queue=orchestration_queue(settings),
            execution_timeout=execution_timeout,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(search_attributes.TENANT, tenant_id),
                SearchAttributePair(search_attributes.KIND, kind),
            ]),
        )  # fmt: skip
    except WorkflowFailureError as exc:
        cause = exc.cause.__cause__ if isinstance(exc.cause, ActivityError) else exc.cause
        if isinstance(cause, ApplicationError) and cause.type == ErrorType.INVALID_REQUEST:
            raise InvalidInput(cause.message) from exc
        raise StackError(
            f"{what} failed: the memory lane did not answer (workflow {workflow_id})"
        ) from exc


def orchestration_queue(settings: Settings) -> str:
    """The task queue of the orchestration lane (workflows of runs, swarms, evolution)."""
    return TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix


async def _once(start: Awaitable[object], kind: str, workflow_id: str) -> None:
    try:
        await start
        metrics.WORKFLOWS_STARTED.labels(kind=kind).inc()
        log.info("started %s workflow %s", kind, workflow_id, extra={"workflow_id": workflow_id})
    except WorkflowAlreadyStartedError:
        pass


async def query_status(client: Client, workflow_id: str, query: Callable[[Any], T]) -> T | None:
    """The workflow's `query` answer, or None when no worker answered within 2 s.

    Postgres still tells the state then; it is one activity behind the workflow.
    """
    handle = client.get_workflow_handle(workflow_id)
    return await _answer(handle.query(query))


async def query_named(
    client: Client, workflow_id: str, query: str, result_type: type[T]
) -> T | None:
    """`query_status` for a query known by its name."""
    handle = client.get_workflow_handle(workflow_id)
    return await _answer(handle.query(query, result_type=result_type))


async def _answer(query: Awaitable[T]) -> T | None:
    try:
        return await asyncio.wait_for(query, QUERY_TIMEOUT)
    except (RPCError, TimeoutError):
        return None


async def request_cancel(client: Client, workflow_id: str) -> None:
    """Ask the workflow to cancel; one Temporal no longer has (it ended) is no error."""
    try:
        await client.get_workflow_handle(workflow_id).cancel()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
