"""Data rights: `DELETE /v1/runs/{id}`, `DELETE /v1/end-users/{name}`, exports.

A deletion takes a run with everything derived from it (`core.data_rights` lists what)
in three steps, each safe to repeat, so a request that fails half-way is simply sent
again:

    1. memories     their vectors and rows, on the memory lane (`MemoryDeleteWorkflow`
                    per run: only that lane opens the vector store)
    2. Temporal     every execution of the run's workflow (and of its children and
                    swarms): `DeleteWorkflowExecution`, so the objective and transcript
                    do not survive in histories
    3. Postgres     the rows, in one transaction (`core.data_rights.delete_rows`)

Only ended runs are deleted: a run (or derived run or swarm, or the parent run, swarm or
evolution cycle the run belongs to) still going answers 409; cancel it first. Postgres marks a run finished one activity before its workflow ends
(it still writes its episode), so Temporal must also say the workflow is closed.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AdminDep, PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.live import execute_briefly
from api.schemas.data_rights import DeletionPublic, EndUserDeletionPublic
from core import data_rights
from core.db import Pool
from core.errors import Conflict, NotFound
from core.memory.payloads import DeleteMemoriesInput, DeleteMemoriesOutput
from core.runs import store as runs
from core.settings import Settings
from workflows.memory_query import MemoryDeleteWorkflow

router = APIRouter(tags=["data rights"])

MEMORY_DELETE_TIMEOUT: Final = timedelta(minutes=2)
PARALLEL_MEMORY_DELETES: Final = 4
NDJSON: Final = "application/x-ndjson"
EndUser = Annotated[str, Path(min_length=1, max_length=200, description="runs.end_user")]


@router.delete("/v1/runs/{run_id}", response_model=DeletionPublic, tags=["runs"],
               responses={409: {"description": "the run (or one derived from it) has not ended"}})  # fmt: skip
async def delete_run(
    run_id: str, principal: PrincipalDep, pool: PoolDep, client: TemporalDep, settings: SettingsDep
) -> DeletionPublic:
    """Delete an ended run and everything derived from it (a data-subject request).

    Goes with it: its messages, events, feedback, child runs (agents called as tools),
    shadow runs, swarms it started, memories (rows and vectors), eval cases made of it,
    and the Temporal histories of all of them. The cost ledger stays, detached, so spend
    caps still count it. A run still going answers 409: cancel it first.
    """
    async with pool.connection() as conn:
        await runs.get_run(conn, principal.tenant_id, run_id)  # 404 for other tenants' runs
        plan = await data_rights.plan_deletion(conn, principal.tenant_id, [run_id])
    return await _delete(pool, client, settings, principal.tenant_id, plan)


@router.delete("/v1/end-users/{end_user}", response_model=EndUserDeletionPublic,
               tags=["data rights"],
               responses={409: {"description": "one of the end user's runs has not ended"}})  # fmt: skip
async def delete_end_user(
    end_user: EndUser,
    principal: AdminDep,
    pool: PoolDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> EndUserDeletionPublic:
    """Delete every run made for `end_user` (`runs.end_user`), as one run's deletion does.

    Admin only. Nothing is deleted while one of the runs (or one derived from them) is
    still going (409). An end user without runs answers 404.
    """
    async with pool.connection() as conn:
        ids = await data_rights.end_user_runs(conn, principal.tenant_id, end_user)
        if not ids:
            raise NotFound(f"no runs for end user {end_user!r}")
        plan = await data_rights.plan_deletion(conn, principal.tenant_id, ids)
    deleted = await _delete(pool, client, settings, principal.tenant_id, plan)
    return EndUserDeletionPublic(end_user=end_user, **deleted.model_dump())


@router.get("/v1/end-users/{end_user}/export", response_class=StreamingResponse,
            responses={200: {"content": {NDJSON: {}}, "description": "NDJSON, one row a line"}})  # fmt: skip
async def export_end_user(
    end_user: EndUser, principal: AdminDep, pool: PoolDep
) -> StreamingResponse:
    """An end user's runs with their messages, events, feedback and memories, as NDJSON.

    Admin only. A header line, then `{"type": <table>, "row": {...}}` per row. An end
    user without runs answers 404.
    """
    async with pool.connection() as conn:
        if not await data_rights.end_user_runs(conn, principal.tenant_id, end_user):
            raise NotFound(f"no runs for end user {end_user!r}")
    return _stream(
        pool, lambda conn: data_rights.export_end_user(conn, principal.tenant_id, end_user)
    )


@router.get("/v1/export", response_class=StreamingResponse,
            responses={200: {"content": {NDJSON: {}}, "description": "NDJSON, one row a line"}})  # fmt: skip
async def export_tenant(principal: AdminDep, pool: PoolDep) -> StreamingResponse:
    """Everything the tenant has, as NDJSON from one snapshot (admin only).

    A header line, then `{"type": <table>, "row": {...}}` for every row of every table
    with a tenant: agents and versions, runs with messages and events, tools, memories,
    eval cases, feedback, recipes, schedules, the cost ledger, the audit log... Secret
    values and key hashes are never in it (secrets appear by name only).
    """
    return _stream(pool, lambda conn: data_rights.export_tenant(conn, principal.tenant_id))


def _stream(
    pool: Pool, lines: Callable[[data_rights.Conn], AsyncIterator[str]]
) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async with pool.connection() as conn:
            async for line in lines(conn):
                yield line

    return StreamingResponse(body(), media_type=NDJSON)


async def _delete(
    pool: Pool, client: Client, settings: Settings, tenant_id: str, plan: data_rights.DeletionPlan
) -> DeletionPublic:
    unfinished = plan.unfinished + [
        w.id for w in plan.workflows if w.finished and not await _closed(client, w.workflow_id)
    ]
    if unfinished:
        raise Conflict(
            "these runs or swarms have not ended yet; cancel them (or wait) and delete again: "
            + ", ".join(unfinished),
            details={"unfinished": unfinished},
        )
    limit = asyncio.Semaphore(PARALLEL_MEMORY_DELETES)

    async def forget(run_id: str) -> int:
        async with limit:
            output: DeleteMemoriesOutput = await execute_briefly(
                client, settings, MemoryDeleteWorkflow.run,
                DeleteMemoriesInput(tenant_id=tenant_id, source_run_id=run_id),
                kind="memory-delete", tenant_id=tenant_id,
                execution_timeout=MEMORY_DELETE_TIMEOUT, what="deleting the run's memories",
            )  # fmt: skip
            return output.deleted

    memories = sum(await asyncio.gather(*(forget(r) for r in plan.run_ids)))
    histories = 0
    for w in plan.workflows:
        histories += await delete_history(client, w.workflow_id)
    async with pool.connection() as conn:
        counts = await data_rights.delete_rows(conn, tenant_id, plan)
    return DeletionPublic(
        run_ids=plan.run_ids, runs=counts.runs, swarms=counts.swarms,
        memories=memories + counts.memories, eval_cases=counts.eval_cases, workflows=histories,
    )  # fmt: skip


async def _closed(client: Client, workflow_id: str) -> bool:
    """Whether the workflow's latest execution has ended (or Temporal has none)."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True
        raise
    return described.status != WorkflowExecutionStatus.RUNNING


async def delete_history(client: Client, workflow_id: str) -> int:
    """Delete every execution of `workflow_id` from Temporal (1 if it had any, else 0).

    Temporal removes them in the background: `describe` says NOT_FOUND soon after.
    """
    quoted = workflow_id.replace("\\", "\\\\").replace('"', '\\"')
    run_ids = [e.run_id async for e in client.list_workflows(f'WorkflowId = "{quoted}"')]
    found = False
    for run_id in [*run_ids, ""]:  # "": the latest, should visibility lag behind
        request = DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        )
        try:
            await client.workflow_service.delete_workflow_execution(request)
            found = True
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
    return int(found)
