"""Stack checks: a workflow that runs one activity on every lane (`colony demo` step one)."""

import asyncio
import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, status
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api.deps import PrincipalDep, SettingsDep, TemporalDep
from api.live import start_once
from api.schemas.ops import StackCheckPublic
from core import search_attributes
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from core.stack_check import StackCheckInput, StackCheckOutput
from workflows.stack_check import StackCheckWorkflow

router = APIRouter(prefix="/v1/stack-checks", tags=["ops"])

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATUS = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "running",
    WorkflowExecutionStatus.COMPLETED: "succeeded",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.TERMINATED: "terminated",
}


def _workflow_id(tenant_id: str, check_id: str) -> str:
    return f"stack-check-{tenant_id}-{check_id}"


@router.post("", response_model=StackCheckPublic, status_code=status.HTTP_202_ACCEPTED)
async def start_stack_check(
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the result")] = 0,
) -> StackCheckPublic:
    """Start a stack check; a repeated `Idempotency-Key` returns the same check."""
    check_id = idempotency_key or uuid.uuid4().hex
    if not _ID.match(check_id):
        raise InvalidInput("Idempotency-Key must be 1-64 characters of [A-Za-z0-9_-]")
    workflow_id = _workflow_id(principal.tenant_id, check_id)
    # The same idempotency key reports the existing check.
    await start_once(
        client, settings, StackCheckWorkflow.run,
        StackCheckInput(tenant_id=principal.tenant_id),
        workflow_id=workflow_id,
        attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.TENANT, principal.tenant_id),
                SearchAttributePair(search_attributes.KIND, "stack-check"),
                SearchAttributePair(search_attributes.STATUS, "running"),
            ]
        ),
        kind="stack-check",
    )  # fmt: skip
    return await _describe(client, settings, principal.tenant_id, check_id, wait)


@router.get("/{check_id}", response_model=StackCheckPublic)
async def get_stack_check(
    check_id: str,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> StackCheckPublic:
    """A stack check's status, and its lane reports once finished."""
    if not _ID.match(check_id):
        raise NotFound(f"stack check {check_id!r} not found")
    return await _describe(client, settings, principal.tenant_id, check_id, wait)


async def _describe(
    client: TemporalDep, settings: Settings, tenant_id: str, check_id: str, wait: float
) -> StackCheckPublic:
    workflow_id = _workflow_id(tenant_id, check_id)
    handle = client.get_workflow_handle_for(StackCheckWorkflow.run, workflow_id)
    link = settings.workflow_ui_link(workflow_id)
    try:
        if wait > 0:
            try:
                output: StackCheckOutput = await asyncio.wait_for(handle.result(), wait)
            except TimeoutError:
                pass
            else:
                return StackCheckPublic(
                    id=check_id, status="succeeded", temporal_ui=link, lanes=output.lanes
                )
        description = await handle.describe()
    except WorkflowFailureError as exc:
        return StackCheckPublic(
            id=check_id, status="failed", temporal_ui=link, error=str(exc.cause or exc)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"stack check {check_id!r} not found") from exc
        raise
    state = _STATUS.get(description.status, "running") if description.status else "running"
    if state != "succeeded":
        return StackCheckPublic(id=check_id, status=state, temporal_ui=link)
    output = await handle.result()
    return StackCheckPublic(id=check_id, status="succeeded", temporal_ui=link, lanes=output.lanes)
