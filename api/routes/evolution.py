"""Evolution: an agent's eval cases, runs made into cases, and evolution cycles."""

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api import sse
from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.live import query_named, request_cancel, start_named_once
from api.routes.agents import AgentName
from api.schemas.evolution import (
    CandidatePublic,
    CaseRowPublic,
    CaseScorePublic,
    EvalCaseCreate,
    EvalCaseFromRun,
    EvalCasePublic,
    EvolutionCreate,
    EvolutionEstimate,
    EvolutionPublic,
    EvolutionScheduleCreate,
    EvolutionSchedulePublic,
    Outcome,
    PromotionDecisionCreate,
    ScheduledCyclePublic,
    ScheduleStatePublic,
)
from api.schemas.rollouts import RolloutPublic
from api.schemas.runs import EventPublic
from core import search_attributes
from core.db import Pool
from core.errors import Conflict, NotFound, StackError
from core.event_log import EventRecord
from core.evolution import cases, rollouts, schedules, store
from core.evolution.from_runs import case_from_run
from core.evolution.payloads import (
    WORKFLOW_NAME,
    EvolutionInput,
    EvolutionSettings,
    EvolutionStatus,
    PromotionDecision,
)
from core.evolution.store import Conn, EvolutionRecord
from core.runs import agents
from core.runs.metrics import agent_metrics
from core.settings import Settings

router = APIRouter(prefix="/v1/agents", tags=["evolution"])
"""Routes under an agent: `/v1/agents/{name}/...`."""

runs_router = APIRouter(prefix="/v1/runs", tags=["evolution"])
"""Routes under a run: `/v1/runs/{run_id}/...`."""


def _case_public(case: cases.EvalCase) -> EvalCasePublic:
    return EvalCasePublic(
        id=case.id,
        agent=case.agent_name,
        split=case.split,
        source_run_id=case.source_run_id,
        created_at=case.created_at,
        **case.spec.model_dump(),
    )


# -- eval cases -----------------------------------------------------------------------


@router.post("/{name}/eval-cases", response_model=EvalCasePublic,
             status_code=status.HTTP_201_CREATED)  # fmt: skip
async def create_eval_case(
    name: AgentName, body: EvalCaseCreate, principal: PrincipalDep, pool: PoolDep
) -> EvalCasePublic:
    """Add an eval case to an agent; its id fixes its split (train, validation, holdout)."""
    async with pool.connection() as conn:
        case, _ = await cases.add_case(conn, principal.tenant_id, name, body)
    return _case_public(case)


@router.get("/{name}/eval-cases", response_model=list[EvalCasePublic])
async def list_eval_cases(
    name: AgentName,
    principal: PrincipalDep,
    pool: PoolDep,
    split: cases.Split | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
) -> list[EvalCasePublic]:
    """An agent's eval cases, oldest first (optionally of one split, or with a tag)."""
    async with pool.connection() as conn:
        await agents.get_version(conn, principal.tenant_id, name)  # 404 for unknown agents
        found = await cases.list_cases(
            conn, principal.tenant_id, name, (split,) if split else cases.SPLITS, tag
        )
    return [_case_public(case) for case in found]


@router.get("/{name}/eval-cases/{case_id}", response_model=EvalCasePublic)
async def get_eval_case(
    name: AgentName, case_id: str, principal: PrincipalDep, pool: PoolDep
) -> EvalCasePublic:
    """One eval case of an agent."""
    async with pool.connection() as conn:
        return _case_public(await cases.get_case(conn, principal.tenant_id, name, case_id))


@router.delete("/{name}/eval-cases/{case_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_eval_case(
    name: AgentName, case_id: str, principal: PrincipalDep, pool: PoolDep
) -> Response:
    """Delete an eval case (past cycles keep their per-case results)."""
    async with pool.connection() as conn:
        await cases.delete_case(conn, principal.tenant_id, name, case_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- runs as cases --------------------------------------------------------------------


@runs_router.post("/{run_id}/eval-case", response_model=EvalCasePublic,
                  status_code=status.HTTP_201_CREATED,
                  responses={200: {"model": EvalCasePublic, "description": "the case this run already is"}})  # fmt: skip
async def create_eval_case_from_run(
    run_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    response: Response,
    body: EvalCaseFromRun | None = None,
) -> EvalCasePublic:
    """Make a run an eval case of its agent, with the run's objective.

    Without checks and rubric, the run's feedback must carry an expected answer: a single
    number becomes a `numeric` check (tolerance 1e-6), other text a `contains` check. A run
    becomes a case once: asking again returns that case (200).
    """
    body = body or EvalCaseFromRun()
    async with pool.connection() as conn:
        case, created = await case_from_run(
            conn, principal.tenant_id, run_id, checks=body.checks, rubric=body.rubric,
            tags=body.tags, guard=body.guard,
        )  # fmt: skip
    if not created:
        response.status_code = status.HTTP_200_OK
    return _case_public(case)


# -- schedule and triggers ------------------------------------------------------------


@router.put("/{name}/evolution-schedule", response_model=EvolutionSchedulePublic)
async def put_evolution_schedule(
    name: AgentName,
    body: EvolutionScheduleCreate,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
) -> EvolutionSchedulePublic:
    """Set the agent's evolution policy: its Temporal Schedule, triggers and cycle settings.

    With `every` or `cron` the schedule `evolution-schedule-{tenant}-{agent}` is created or
    updated (overlap policy: skip; `paused` pauses it); without both it is deleted. The
    policy and the schedule change together: when Temporal refuses, nothing is stored.
    """
    tenant = principal.tenant_id
    policy = store.EvolutionPolicy(
        agent_name=name, settings=body.settings, every=body.every, cron=body.cron,
        paused=body.paused, triggers=body.triggers,
    )  # fmt: skip
    async with pool.connection() as conn, conn.transaction():
        stored = await store.put_policy(conn, tenant, policy)  # 404 for unknown agents
        await schedules.put_schedule(
            client, app_settings, tenant, name, every=body.every, cron=body.cron,
            paused=body.paused,
        )  # fmt: skip
    return await _schedule_public(client, app_settings, tenant, stored)


@router.get("/{name}/evolution-schedule", response_model=EvolutionSchedulePublic)
async def get_evolution_schedule(
    name: AgentName,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
) -> EvolutionSchedulePublic:
    """The agent's evolution policy, with its schedule's next runs and recent cycles."""
    async with pool.connection() as conn:
        policy = await store.get_policy(conn, principal.tenant_id, name)
    if policy is None:
        raise NotFound(f"agent {name!r} has no evolution schedule or triggers")
    return await _schedule_public(client, app_settings, principal.tenant_id, policy)


@router.delete("/{name}/evolution-schedule", status_code=status.HTTP_204_NO_CONTENT)
async def delete_evolution_schedule(
    name: AgentName,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
) -> Response:
    """Remove the agent's schedule and policy (cycles already started go on)."""
    tenant = principal.tenant_id
    async with pool.connection() as conn, conn.transaction():
        had_policy = await store.delete_policy(conn, tenant, name)
        had_schedule = await schedules.delete_schedule(client, app_settings, tenant, name)
    if not (had_policy or had_schedule):
        raise NotFound(f"agent {name!r} has no evolution schedule or triggers")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _schedule_public(
    client: Client, app_settings: Settings, tenant_id: str, policy: store.EvolutionPolicy
) -> EvolutionSchedulePublic:
    state = None
    if policy.every is not None or policy.cron is not None:
        found = await schedules.describe_schedule(client, app_settings, tenant_id,
                                                  policy.agent_name)  # fmt: skip
        if found is not None:
            state = ScheduleStatePublic(
                id=found.id, paused=found.paused, note=found.note, next_runs=found.next_runs,
                recent=[ScheduledCyclePublic(**asdict(a)) for a in found.recent],
                running=found.running,
            )  # fmt: skip
    return EvolutionSchedulePublic(
        agent=policy.agent_name, schedule=state,
        **policy.model_dump(
            include={"every", "cron", "paused", "settings", "triggers", "last_triggered_at"}
        ),
    )  # fmt: skip


# -- evolution cycles -----------------------------------------------------------------

APPROVE_UPDATE = "approve_promotion"
STATUS_QUERY = "status"
UPDATE_TIMEOUT = 10.0
"""How long an approval waits for a worker to accept the update."""


@router.post("/{name}/evolutions/preflight", response_model=EvolutionEstimate)
async def preflight_evolution(
    name: AgentName, principal: PrincipalDep, pool: PoolDep, body: EvolutionCreate | None = None
) -> EvolutionEstimate:
    """What a cycle with these settings would cost in evaluation runs; nothing is started."""
    settings = (body or EvolutionCreate()).settings
    async with pool.connection() as conn:
        await agents.get_version(conn, principal.tenant_id, name)  # 404 for unknown agents
        return await _estimate(conn, principal.tenant_id, name, settings)


@router.post("/{name}/evolutions", response_model=EvolutionPublic,
             status_code=status.HTTP_201_CREATED)  # fmt: skip
async def create_evolution(
    name: AgentName,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
    body: EvolutionCreate | None = None,
) -> EvolutionPublic:
    """Start an evolution cycle of the agent's live version; the response has its estimate."""
    tenant, settings = principal.tenant_id, (body or EvolutionCreate()).settings
    async with pool.connection() as conn:
        incumbent = await agents.get_version(conn, tenant, name)
        estimate = await _estimate(conn, tenant, name, settings)
        record = await store.create_evolution(
            conn, tenant_id=tenant, agent_name=name, incumbent_version=incumbent.version,
            settings=settings,
        )  # fmt: skip
    # The row is committed first: a cycle whose start failed stays queued and visible.
    await start_named_once(
        client, app_settings, WORKFLOW_NAME,
        EvolutionInput(tenant_id=tenant, evolution_id=record.id),
        workflow_id=record.workflow_id,
        attributes=search_attributes.for_run(
            tenant, name, incumbent.version, kind="evolution"
        ),
        kind="evolution",
    )  # fmt: skip
    public = await _live_public(pool, client, app_settings, record)
    return public.model_copy(update={"estimate": estimate})


async def _estimate(
    conn: Conn, tenant_id: str, agent_name: str, settings: EvolutionSettings
) -> EvolutionEstimate:
    found = await cases.list_cases(conn, tenant_id, agent_name)
    counts = {split: sum(1 for c in found if c.split == split) for split in cases.SPLITS}
    runs = (settings.candidates + 1) * (counts["validation"] + counts["holdout"]) + counts["train"]
    live = await agents.get_version(conn, tenant_id, agent_name)
    measured = (await agent_metrics(conn, tenant_id, agent_name, version=live.version)).versions
    per_run = measured[0].cost_usd_avg if measured else None
    cost = None if per_run is None else round(per_run * runs, 6)
    return EvolutionEstimate(
        eval_runs=runs, cases=counts, candidates=settings.candidates,
        max_eval_runs=settings.max_eval_runs,
        within_budget=runs <= settings.max_eval_runs
        and (cost is None or settings.max_cost_usd is None or cost <= settings.max_cost_usd),
        max_cost_usd=settings.max_cost_usd, cost_usd=cost,
    )  # fmt: skip


@router.get("/{name}/evolutions", response_model=list[EvolutionPublic])
async def list_evolutions(
    name: AgentName,
    principal: PrincipalDep,
    pool: PoolDep,
    app_settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[EvolutionPublic]:
    """An agent's cycles, newest first (from Postgres; no live progress)."""
    async with pool.connection() as conn:
        await agents.get_version(conn, principal.tenant_id, name)  # 404 for unknown agents
        records = await store.list_evolutions(conn, principal.tenant_id, name, limit=limit)
        guards = await _guards(conn, principal.tenant_id, name)
        return [await _public(conn, app_settings, record, guards) for record in records]


@router.get("/{name}/evolutions/{evolution_id}", response_model=EvolutionPublic)
async def get_evolution(
    name: AgentName,
    evolution_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
) -> EvolutionPublic:
    """A cycle: evidence, diagnoses, candidates with diffs, the per-case table, decision, cost."""
    record = await _evolution(pool, principal.tenant_id, name, evolution_id)
    return await _live_public(pool, client, app_settings, record)


@router.get("/{name}/evolutions/{evolution_id}/events", response_model=list[EventPublic],
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}})  # fmt: skip
async def evolution_events(
    name: AgentName,
    evolution_id: str,
    request: Request,
    principal: PrincipalDep,
    pool: PoolDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this event seq")] = None,
    format: Annotated[str, Query(pattern="^(sse|json)$")] = "sse",
) -> Response:
    """The cycle's events as Server-Sent Events (resumable with `Last-Event-ID`), or JSON.

    The stream ends after `evolution.finished`. Each evaluation run has its own events at
    `/v1/runs/{run_id}/events`.
    """
    tenant = principal.tenant_id
    await _evolution(pool, tenant, name, evolution_id)  # 404 for other tenants' cycles

    async def list_events(conn: Conn, after: int) -> list[EventRecord]:
        return await store.list_events(conn, tenant, evolution_id, after=after)

    return await sse.events_response(
        request, pool, list_events, terminal="evolution.finished",
        after=after, last_event_id=last_event_id, format=format,
    )  # fmt: skip


@router.post("/{name}/evolutions/{evolution_id}/approve", response_model=EvolutionPublic,
             responses={409: {"description": "Nothing of the evolution waits for approval."}})  # fmt: skip
async def approve_evolution(
    name: AgentName,
    evolution_id: str,
    body: PromotionDecisionCreate,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
) -> EvolutionPublic:
    """Approve or reject the promotion a cycle waits on (409 when it waits on none)."""
    record = await _live_evolution(pool, principal.tenant_id, name, evolution_id)
    if record.status == "queued":
        raise Conflict(f"evolution {evolution_id!r} is queued; nothing waits for approval yet")
    handle = client.get_workflow_handle(record.workflow_id)
    decision = PromotionDecision(approved=body.approved, reason=body.reason)
    try:
        await asyncio.wait_for(handle.execute_update(APPROVE_UPDATE, decision), UPDATE_TIMEOUT)
    except WorkflowUpdateFailedError as exc:
        # The update's validator said why (e.g. the cycle is not waiting for approval).
        raise Conflict(str(getattr(exc.cause, "message", exc.cause))) from exc
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise Conflict(f"evolution {evolution_id!r} has no running workflow") from exc
    except TimeoutError:
        raise StackError(
            f"no worker took the approval of evolution {evolution_id!r} within "
            f"{UPDATE_TIMEOUT:g} s; is the orchestration worker running?"
        ) from None
    async with pool.connection() as conn:
        record = await store.get_evolution(conn, principal.tenant_id, evolution_id)
    return await _live_public(pool, client, app_settings, record)


@router.post("/{name}/evolutions/{evolution_id}/cancel", response_model=EvolutionPublic,
             status_code=status.HTTP_202_ACCEPTED,
             responses={409: {"description": "The evolution has finished."}})  # fmt: skip
async def cancel_evolution(
    name: AgentName,
    evolution_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
) -> EvolutionPublic:
    """Request cancellation: running evaluations are cancelled and the incumbent kept."""
    record = await _live_evolution(pool, principal.tenant_id, name, evolution_id)
    await request_cancel(client, record.workflow_id)
    return await _live_public(pool, client, app_settings, record)


async def _evolution(pool: Pool, tenant_id: str, name: str, evolution_id: str) -> EvolutionRecord:
    """The agent's cycle (404 for unknown ones, other agents' and other tenants')."""
    async with pool.connection() as conn:
        record = await store.get_evolution(conn, tenant_id, evolution_id)
    if record.agent_name != name:
        raise NotFound(f"evolution {evolution_id!r} of agent {name!r} not found")
    return record


async def _live_evolution(
    pool: Pool, tenant_id: str, name: str, evolution_id: str
) -> EvolutionRecord:
    """The agent's cycle, or Conflict if it has finished."""
    record = await _evolution(pool, tenant_id, name, evolution_id)
    if record.status in store.TERMINAL:
        raise Conflict(f"evolution {evolution_id!r} has finished ({record.status})")
    return record


async def _live_public(
    pool: Pool, client: Client, app_settings: Settings, record: EvolutionRecord
) -> EvolutionPublic:
    """The cycle from Postgres, with the workflow's live progress while it runs."""
    live = None
    if record.status not in store.TERMINAL and record.status != "queued":
        live = await query_named(client, record.workflow_id, STATUS_QUERY, EvolutionStatus)
    async with pool.connection() as conn:
        guards = await _guards(conn, record.tenant_id, record.agent_name)
        public = await _public(conn, app_settings, record, guards)
    return public.model_copy(update={"progress": live})


async def _guards(conn: Conn, tenant_id: str, agent_name: str) -> dict[str, bool]:
    """Whether each of the agent's eval cases is a guard, by case id."""
    return {c.id: c.spec.guard for c in await cases.list_cases(conn, tenant_id, agent_name)}


async def _public(
    conn: Conn, app_settings: Settings, record: EvolutionRecord, guards: dict[str, bool]
) -> EvolutionPublic:
    candidates = await store.list_candidates(conn, record.id)
    results = await store.list_results(conn, record.id)
    table = case_table(record.incumbent_version, results, guards)
    canary = await rollouts.of_evolution(conn, record.id)
    return EvolutionPublic(
        rollout=None if canary is None else RolloutPublic.of(canary),
        id=record.id,
        agent=record.agent_name,
        candidates=[_candidate(c, table) for c in candidates],
        cases=table,
        temporal_ui=app_settings.workflow_ui_link(record.workflow_id),
        **record.model_dump(
            include={
                "incumbent_version", "trigger", "settings", "status", "phase", "decision",
                "promoted_version", "reasons", "evidence", "diagnoses", "gate", "judge",
                "cost_usd", "created_at", "updated_at", "finished_at",
            }
        ),
    )  # fmt: skip


def case_table(
    incumbent: int, results: list[store.ResultRecord], guards: dict[str, bool]
) -> list[CaseRowPublic]:
    """The per-case table: each case's incumbent result and each candidate's against it.

    A None score (a failed or timed-out evaluation) counts as 0; a candidate's result on a
    case the incumbent has no result for yet is not compared. Rows go by split, then case.
    """
    by_case: dict[str, list[store.ResultRecord]] = {}
    for result in results:
        by_case.setdefault(result.case_id, []).append(result)
    rows = []
    for case_id, found in by_case.items():
        base = next((r for r in found if r.version == incumbent), None)
        rows.append(
            CaseRowPublic(
                case_id=case_id,
                split=found[0].split,
                guard=guards.get(case_id),
                incumbent=None if base is None else _score(base),
                candidates=[_score(r, base) for r in found if r.version != incumbent],
            )
        )
    order = {split: n for n, split in enumerate(cases.SPLITS)}
    return sorted(rows, key=lambda row: (order[row.split], row.case_id))


def _score(result: store.ResultRecord, base: store.ResultRecord | None = None) -> CaseScorePublic:
    versus: Outcome | None = None
    if base is not None:
        mine, theirs = result.score or 0.0, base.score or 0.0
        versus = "win" if mine > theirs else "loss" if mine < theirs else "tie"
    return CaseScorePublic(
        version=result.version, score=result.score, passed=result.passed, versus_incumbent=versus
    )


def _candidate(candidate: store.CandidateRecord, table: list[CaseRowPublic]) -> CandidatePublic:
    outcomes = [
        s.versus_incumbent
        for row in table
        for s in row.candidates
        if s.version == candidate.version and s.versus_incumbent is not None
    ]
    return CandidatePublic(
        **candidate.model_dump(),
        wins=outcomes.count("win"),
        losses=outcomes.count("loss"),
        ties=outcomes.count("tie"),
    )
