"""Long-term memory: `POST /v1/memory/query`, `DELETE /v1/memory`, `DELETE /v1/memory/{id}`.

Both run as small workflows (`MemoryQueryWorkflow`, `MemoryDeleteWorkflow`) because only
the memory lane may open the vector store. Queries are masked (`core.redact`) before they
reach a workflow, so a secret pasted into a query is neither in Temporal's history nor
embedded. Everything is scoped to the caller's tenant.
"""

import uuid
from datetime import timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, SettingsDep, TemporalDep
from api.live import execute_briefly
from api.schemas.memory import (
    MemoryDeletedPublic,
    MemoryHitPublic,
    MemoryQueryCreate,
    MemoryQueryPublic,
)
from core.errors import InvalidInput, NotFound
from core.memory.payloads import (
    DeleteMemoriesInput,
    DeleteMemoriesOutput,
    MemoryKind,
    RecallInput,
    RecallOutput,
)
from core.redact import mask_sensitive
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
    output: RecallOutput = await execute_briefly(
        client, settings, MemoryQueryWorkflow.run, recall, kind="memory-query", tenant_id=principal.tenant_id,
        execution_timeout=QUERY_TIMEOUT, what="memory request",
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
    output: DeleteMemoriesOutput = await execute_briefly(
        client, settings, MemoryDeleteWorkflow.run, filters, kind="memory-delete", tenant_id=principal.tenant_id,
        execution_timeout=DELETE_TIMEOUT, what="memory request",
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
    output: DeleteMemoriesOutput = await execute_briefly(
        client, settings, MemoryDeleteWorkflow.run, filters, kind="memory-delete", tenant_id=principal.tenant_id,
        execution_timeout=DELETE_TIMEOUT, what="memory request",
    )  # fmt: skip
    if output.deleted == 0:
        raise NotFound(f"no memory {memory_id!r}")
    return MemoryDeletedPublic(deleted=output.deleted)
