"""Long-term memory: `POST /v1/memory/query`, `DELETE /v1/memory`, `DELETE /v1/memory/{id}`.

Both run as small workflows (`MemoryQueryWorkflow`, `MemoryDeleteWorkflow`) because only
the memory lane may open the vector store. Queries are masked (`core.redact`) before they
reach a workflow, so a secret pasted into a query is neither in Temporal's history nor
embedded. Everything is scoped to the caller's tenant.
"""

import uuid
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError

from api.deps import PrincipalDep, SettingsDep, TemporalDep
from api.schemas.memory import (
    MemoryDeletedPublic,
    MemoryHitPublic,
    MemoryQueryCreate,
    MemoryQueryPublic,
)
from core import metrics, search_attributes
from core.errors import ErrorType, InvalidInput, NotFound, StackError
from core.memory.payloads import (
    DeleteMemoriesInput,
    DeleteMemoriesOutput,
    MemoryKind,
    RecallInput,
    RecallOutput,
)
from core.queues import TaskQueue
from core.redact import mask_sensitive
from core.settings import Settings
from workflows.memory_query import MemoryDeleteWorkflow, MemoryQueryWorkflow

router = APIRouter(prefix="/v1/memory", tags=["memory"])

QUERY_TIMEOUT: Final = timedelta(seconds=30)
DELETE_TIMEOUT: Final = timedelta(minutes=2)


@router.post("/query", response_model=MemoryQueryPublic)
async def query_memory(
    body: MemoryQueryCreate, principal: PrincipalDep, client: TemporalDep, settings: SettingsDep
) -> MemoryQueryPublic:
    """The tenant's memories closest in meaning to `query`, best first."""
    query = mask_sensitive(body.query)
    recall = RecallInput(
        tenant_id=principal.tenant_id,
        query=query,
        agent_name=body.agent,
        kinds=body.kinds,
        limit=body.limit,
    )
    output: RecallOutput = await _execute(
        client, settings, MemoryQueryWorkflow.run, recall, "memory-query", QUERY_TIMEOUT,
        principal.tenant_id,
    )  # fmt: skip
    return MemoryQueryPublic(
        query=query,
        hits=[
            MemoryHitPublic(
                id=hit.id,
                kind=hit.kind,
                content=hit.content,
                score=round(hit.score, 4),
                agent=hit.agent_name,
                scope=hit.scope,
                run_id=hit.source_run_id,
                created_at=hit.created_at,
            )
            for hit in output.hits
        ],
    )


@router.delete("", response_model=MemoryDeletedPublic)
async def delete_memories(
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
    agent: Annotated[str | None, Query(min_length=1, description="the agent's memories")] = None,
    run: Annotated[str | None, Query(min_length=1, description="memories of this run")] = None,
    kind: Annotated[list[MemoryKind] | None, Query(description="repeatable")] = None,
) -> MemoryDeletedPublic:
    """Delete the tenant's memories matching every filter given (at least one)."""
    if agent is None and run is None and not kind:
        raise InvalidInput("give at least one filter: agent, run or kind")
    filters = DeleteMemoriesInput(
        tenant_id=principal.tenant_id, agent_name=agent, source_run_id=run, kinds=kind or None
    )
    output: DeleteMemoriesOutput = await _execute(
        client, settings, MemoryDeleteWorkflow.run, filters, "memory-delete", DELETE_TIMEOUT,
        principal.tenant_id,
    )  # fmt: skip
    return MemoryDeletedPublic(deleted=output.deleted)


@router.delete("/{memory_id}", response_model=MemoryDeletedPublic)
async def delete_memory(
    memory_id: str, principal: PrincipalDep, client: TemporalDep, settings: SettingsDep
) -> MemoryDeletedPublic:
    """Delete one memory of the tenant (its row and its vector)."""
    try:
        memory_id = str(uuid.UUID(memory_id))
    except ValueError:
        raise NotFound(f"no memory {memory_id!r}") from None
    filters = DeleteMemoriesInput(tenant_id=principal.tenant_id, ids=[memory_id])
    output: DeleteMemoriesOutput = await _execute(
        client, settings, MemoryDeleteWorkflow.run, filters, "memory-delete", DELETE_TIMEOUT,
        principal.tenant_id,
    )  # fmt: skip
    if output.deleted == 0:
        raise NotFound(f"no memory {memory_id!r}")
    return MemoryDeletedPublic(deleted=output.deleted)


async def _execute(
    client: Client,
    settings: Settings,
    run: Any,
    arg: Any,
    kind: str,
    execution_timeout: timedelta,
    tenant_id: str,
) -> Any:
    """Run a memory workflow to completion; its failures as API errors."""
    workflow_id = f"{kind}-{uuid.uuid4().hex}"
    metrics.WORKFLOWS_STARTED.labels(kind=kind).inc()
    try:
        return await client.execute_workflow(
            run,
            arg,
            id=workflow_id,
            task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
            execution_timeout=execution_timeout,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.TENANT, tenant_id),
                    SearchAttributePair(search_attributes.KIND, kind),
                ]
            ),
        )
    except WorkflowFailureError as exc:
        cause = exc.cause.__cause__ if isinstance(exc.cause, ActivityError) else exc.cause
        if isinstance(cause, ApplicationError) and cause.type == ErrorType.INVALID_REQUEST:
            raise InvalidInput(cause.message) from exc
        raise StackError(
            f"memory request failed: the memory lane did not answer (workflow {workflow_id})"
        ) from exc
