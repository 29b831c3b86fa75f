"""Swarms: start, inspect, stream events, cancel."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from temporalio.client import Client

from api import sse
from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.limits import admit_start
from api.live import query_status, request_cancel, start_once
from api.openapi import IDEMPOTENCY_CONFLICT
from api.schemas.runs import EventPublic
from api.schemas.swarms import SubtaskPublic, SwarmCreate, SwarmPublic
from core import idempotency, search_attributes
from core.db import Pool
from core.errors import Conflict, InvalidInput
from core.event_log import EventRecord
from core.providers import default_model
from core.runs import agents
from core.runs.store import Conn
from core.settings import Settings
from core.swarms import recipes
from core.swarms import store as swarm_store
from core.swarms.plan import (
    QUEEN_AGENT,
    SubtaskState,
    SwarmInput,
    SwarmLimits,
    SwarmMode,
    SwarmSettings,
    SwarmStatus,
    check_plan,
    child_workflow_id,
    shape,
)
from core.swarms.store import SubtaskRecord, SwarmRecord
from workflows.swarm import SwarmWorkflow

router = APIRouter(prefix="/v1/swarms", tags=["swarms"])


@router.post("", response_model=SwarmPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": SwarmPublic, "description": "the swarm this idempotency key started"},
                        404: {"description": "No such recipe or queen agent (`not_found`)."},
                        409: {"description": IDEMPOTENCY_CONFLICT}})  # fmt: skip
async def create_swarm(
    body: SwarmCreate,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> SwarmPublic:
    """Start a swarm; with an idempotency key a repeated POST returns the same swarm.

    With `recipe`, the recipe's saved plan runs on the objective (404 for an unknown
    recipe, 422 when its plan cannot run now). The key names this request: reused with a
    different body it is refused (409 `idempotency_conflict`).
    """
    tenant = principal.tenant_id
    key = idempotency_key or body.idempotency_key
    hashed = _request_hash(body) if key else None
    async with pool.connection() as conn:
        await idempotency.check(conn, "swarms", tenant, key, hashed)
    if body.recipe is not None:
        record, created = await _recipe_swarm(pool, settings, tenant, body, key, hashed)
    else:
        _check_policy(body.limits, body.mode)
        record, created = await _new_swarm(pool, settings, tenant, body, key, hashed)
    # As with runs: the row is committed first, so a retry with the same key after
    # Temporal was down starts the same swarm.
    if created or record.status == "queued":
        await _start(client, settings, record)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await _live_public(pool, client, settings, record)


def _request_hash(body: SwarmCreate) -> bytes:
    """The body as the key names it: the key itself (header or field) left out."""
    return idempotency.request_hash(body.model_dump(mode="json", exclude={"idempotency_key"}))


def _check_policy(limits: SwarmLimits, mode: SwarmMode) -> None:
    if limits.failure_policy == "replan" and mode != "hierarchical":
        raise InvalidInput(
            f'failure_policy "replan" needs mode "hierarchical" (got {mode!r}); '
            'use "retry" or "fail"'
        )


async def _recipe_swarm(
    pool: Pool, settings: Settings, tenant: str, body: SwarmCreate, key: str | None,
    hashed: bytes | None,
) -> tuple[SwarmRecord, bool]:  # fmt: skip
    """A swarm that runs the recipe `body.recipe` (its plan, mode and, by default, settings)."""
    assert body.recipe is not None
    given = body.model_fields_set
    if given & {"plan", "mode"}:
        raise InvalidInput('a recipe brings its own plan and mode; leave out "plan" and "mode"')
    async with pool.connection() as conn:
        recipe = await recipes.get_recipe(conn, tenant, body.recipe)
        swarm_settings = SwarmSettings(
            limits=body.limits if "limits" in given else recipe.settings.limits,
            models=body.models if "models" in given else recipe.settings.models,
        )
        _check_policy(swarm_settings.limits, recipe.mode)
        await admit_start(conn, settings, tenant, "swarms", key)  # 429 over the tenant's limits
        return await recipes.create_recipe_swarm(
            conn, tenant_id=tenant, recipe=recipe, objective=body.objective,
            default_model=default_model(settings), queen=body.queen, settings=swarm_settings,
            idempotency_key=key, request_hash=hashed,
        )  # fmt: skip


async def _new_swarm(
    pool: Pool, settings: Settings, tenant: str, body: SwarmCreate, key: str | None,
    hashed: bytes | None,
) -> tuple[SwarmRecord, bool]:  # fmt: skip
    """A swarm of the queen's plan, or of the user's plan in `body`."""
    async with pool.connection() as conn:
        queen = await _queen(conn, tenant, body.queen, settings)
        planned = None
        if body.plan is not None:
            planned = shape(body.plan, body.mode)
            clashes = [
                t.id
                for t, shaped in zip(body.plan, planned, strict=True)
                if t.depends_on and t.depends_on != shaped.depends_on
            ]
            if clashes:
                raise InvalidInput(
                    f'mode "{body.mode}" sets the dependencies itself (sequential: each '
                    "subtask after the one listed before it; parallel: none), and those of "
                    f"{', '.join(clashes)} differ; leave depends_on empty, or use mode "
                    '"hierarchical"'
                )
            errors = check_plan(
                planned,
                roles=await swarm_store.known_roles(conn, tenant),
                max_subtasks=body.limits.max_subtasks,
            )
            if errors:
                raise InvalidInput("the plan cannot run", details={"errors": errors})
        await admit_start(conn, settings, tenant, "swarms", key)  # 429 over the tenant's limits
        return await swarm_store.create_swarm(
            conn, tenant_id=tenant, objective=body.objective, mode=body.mode, queen=queen,
            settings=body.settings(), plan=planned, idempotency_key=key, request_hash=hashed,
        )  # fmt: skip


async def _queen(
    conn: Conn, tenant_id: str, name: str | None, settings: Settings
) -> agents.AgentVersion:
    """The queen: the built-in one (installed on first use) or the tenant's named agent."""
    if name is None or name == QUEEN_AGENT:
        return await swarm_store.role_agent(conn, tenant_id, QUEEN_AGENT, default_model(settings))
    return await agents.get_version(conn, tenant_id, name)


async def _start(client: Client, settings: Settings, record: SwarmRecord) -> None:
    await start_once(
        client, settings, SwarmWorkflow.run,
        SwarmInput(tenant_id=record.tenant_id, swarm_id=record.id),
        workflow_id=record.workflow_id,
        attributes=search_attributes.for_run(
            record.tenant_id, record.queen_agent, record.queen_version, kind="swarm"
        ),
        kind="swarm",
    )  # fmt: skip


@router.get("", response_model=list[SwarmPublic])
async def list_swarms(
    principal: PrincipalDep, pool: PoolDep, settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[SwarmPublic]:  # fmt: skip
    """The tenant's most recent swarms (from Postgres; no live status)."""
    async with pool.connection() as conn:
        records = await swarm_store.list_swarms(conn, principal.tenant_id, limit=limit)
        return [_public(settings, r, await _rows(conn, r)) for r in records]


@router.get("/{swarm_id}", response_model=SwarmPublic)
async def get_swarm(
    swarm_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> SwarmPublic:
    """A swarm: status, plan, each subtask's progress and run, result, cost, Temporal UI links."""
    async with pool.connection() as conn:
        record = await swarm_store.get_swarm(conn, principal.tenant_id, swarm_id)
    return await _live_public(pool, client, settings, record)


@dataclass(frozen=True)
class _Rows:
    """What the swarm row does not hold: its subtasks and what it has cost."""

    subtasks: list[SubtaskRecord]
    cost_usd: float
    cost_complete: bool


async def _rows(conn: Conn, record: SwarmRecord) -> _Rows:
    cost, complete = await swarm_store.swarm_cost(conn, record.id)
    return _Rows(await swarm_store.list_subtasks(conn, record.id), cost, complete)


async def _live_public(
    pool: Pool, client: Client, settings: Settings, record: SwarmRecord
) -> SwarmPublic:
    """The swarm from Postgres, overlaid with the workflow's live state while it runs."""
    live: SwarmStatus | None = None
    if record.status not in swarm_store.TERMINAL and record.status != "queued":
        live = await query_status(client, record.workflow_id, SwarmWorkflow.status)
    async with pool.connection() as conn:
        rows = await _rows(conn, record)
    return _public(settings, record, rows, live)


def _public(
    settings: Settings, record: SwarmRecord, rows: _Rows, live: SwarmStatus | None = None
) -> SwarmPublic:
    state = record.status
    if live is not None and live.phase != "finished":
        state = "running"  # the workflow knows first: Postgres follows one activity later
    known = {s.id: s for s in live.subtasks} if live else {}
    return SwarmPublic(
        id=record.id,
        status=state,
        phase=live.phase if live else record.phase,
        outcome=record.outcome,
        reason=record.reason,
        objective=record.objective,
        mode=record.mode,
        recipe=record.recipe,
        parent_run_id=record.parent_run_id,
        queen=record.queen_agent,
        queen_version=record.queen_version,
        limits=record.settings.limits,
        models=record.settings.models,
        plan_version=max(record.plan_version, live.plan_version if live else 0),
        subtasks=[_subtask(settings, record, s, known.get(s.id)) for s in rows.subtasks],
        result=record.result,
        attribution=record.attribution,
        cost_usd=rows.cost_usd,
        cost_complete=rows.cost_complete,
        temporal_ui=settings.workflow_ui_link(record.workflow_id),
        created_at=record.created_at,
        finished_at=record.finished_at,
    )


def _subtask(
    settings: Settings, swarm: SwarmRecord, record: SubtaskRecord, live: SubtaskState | None
) -> SubtaskPublic:
    subtask_status, attempts, run_id, cost = (
        record.status, record.attempts, record.run_id, record.cost_usd
    )  # fmt: skip
    if live is not None:
        subtask_status, attempts = live.status, max(attempts, live.attempt)
        run_id, cost = live.run_id or run_id, max(cost, live.cost_usd)
    link = settings.workflow_ui_link(child_workflow_id(swarm.workflow_id, record.id, attempts))
    return SubtaskPublic(
        id=record.id,
        description=record.description,
        role=record.role,
        depends_on=record.depends_on,
        expected_output=record.expected_output,
        complexity=record.complexity,
        status=subtask_status,
        attempts=attempts,
        run_id=run_id,
        agent=record.agent_name,
        agent_version=record.agent_version,
        model=record.model,
        budget_usd=live.budget_usd if live is not None else record.budget_usd,
        cost_usd=cost,
        reason=record.reason,
        temporal_ui=link if attempts else None,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


@router.get("/{swarm_id}/events", response_model=list[EventPublic],
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}})  # fmt: skip
async def swarm_events(
    swarm_id: str,
    request: Request,
    principal: PrincipalDep,
    pool: PoolDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this event seq")] = None,
    format: Annotated[str, Query(pattern="^(sse|json)$")] = "sse",
) -> Response:
    """The swarm's events as Server-Sent Events (resumable with `Last-Event-ID`), or JSON.

    swarm.started, swarm.planned / plan.invalid / swarm.replanned, subtask.started,
    subtask.finished / subtask.failed, blackboard.posted, swarm.synthesized and finally
    swarm.finished, after which the stream ends. Each subtask's own run has its events
    at `/v1/runs/{run_id}/events`.
    """
    tenant = principal.tenant_id
    async with pool.connection() as conn:
        await swarm_store.get_swarm(conn, tenant, swarm_id)  # 404 for other tenants' swarms

    async def list_events(conn: Conn, after: int) -> list[EventRecord]:
        return await swarm_store.list_events(conn, tenant, swarm_id, after=after)

    return await sse.events_response(
        request, pool, list_events, terminal="swarm.finished",
        after=after, last_event_id=last_event_id, format=format,
    )  # fmt: skip


@router.post("/{swarm_id}/cancel", response_model=SwarmPublic,
             status_code=status.HTTP_202_ACCEPTED,
             responses={409: {"description": "The swarm has finished."}})  # fmt: skip
async def cancel(
    swarm_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> SwarmPublic:
    """Request cancellation: running subtasks are cancelled and the outcome recorded."""
    record = await _live_swarm(pool, principal.tenant_id, swarm_id)
    await request_cancel(client, record.workflow_id)
    return await _live_public(pool, client, settings, record)


async def _live_swarm(pool: Pool, tenant_id: str, swarm_id: str) -> SwarmRecord:
    """The swarm, or Conflict if it has finished (404 for unknown or other tenants' swarms)."""
    async with pool.connection() as conn:
        record = await swarm_store.get_swarm(conn, tenant_id, swarm_id)
    if record.status in swarm_store.TERMINAL:
        raise Conflict(f"swarm {swarm_id!r} has finished ({record.status})")
    return record
