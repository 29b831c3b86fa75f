"""Agent runs: start, inspect, stream events, talk to, approve, cancel."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from temporalio.client import Client, WorkflowUpdateFailedError

from api import sse
from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep, TemporalHandleDep
from api.limits import admit_start
from api.live import query_status, request_cancel, start_once
from api.openapi import IDEMPOTENCY_CONFLICT
from api.schemas.runs import (
    ApprovalCreate,
    EventPublic,
    FeedbackCreate,
    FeedbackPublic,
    MessageAccepted,
    MessageCreate,
    MessagePublic,
    RunCreate,
    RunPublic,
)
from core import idempotency, search_attributes
from core.db import Pool
from core.errors import Conflict, InvalidInput, NotFound
from core.event_log import EventRecord
from core.evolution import triggers
from core.providers import default_model
from core.runs import agents, rollout
from core.runs import store as runs
from core.runs.payloads import AgentRunInput, AgentSpec, ApprovalDecision, RunStatus, SubmitMessage
from core.settings import Settings
from workflows.agent_run import AgentRunWorkflow

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.post("", response_model=RunPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": RunPublic, "description": "the run this idempotency key started"},
                        404: {"description": "No such agent, or version of it (`not_found`)."},
                        409: {"description": IDEMPOTENCY_CONFLICT}})  # fmt: skip
async def create_run(
    body: RunCreate,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunPublic:
    """Start a run; with an idempotency key a repeated POST returns the same run.

    The key names this request: reused with a different body it is refused (409
    `idempotency_conflict`).
    """
    objective, extra = _objective(body)
    tenant = principal.tenant_id
    key = idempotency_key or body.idempotency_key
    request_hash = _request_hash(body) if key else None
    rollout_id: str | None = None
    async with pool.connection() as conn:
        # Before anything is made for the request (an inline agent's version).
        await idempotency.check(conn, "runs", tenant, key, request_hash)
        if body.agent_spec is not None:
            if body.agent is not None:
                raise InvalidInput("give either `agent` or `agent_spec`, not both")
            name = "inline-" + body.agent_spec.spec_hash()[:12]
            version, _ = await agents.create_version(conn, tenant, name, body.agent_spec)
        elif body.agent is not None and body.agent_version is not None:
            version = await agents.get_version(conn, tenant, body.agent, body.agent_version)
        elif body.agent is not None:
            version, rollout_id = await rollout.resolve_version(
                conn, tenant, body.agent, end_user=body.end_user, idempotency_key=key
            )
        else:
            version = await _default_agent(conn, tenant, settings)
        await admit_start(conn, settings, tenant, "runs", key)  # 429 over the tenant's limits
        record, inbox_id, created = await runs.create_run(
            conn, tenant_id=tenant, agent_name=version.name, agent_version=version.version,
            objective=objective, mode=body.mode, conversation=body.conversation,
            idempotency_key=key, end_user=body.end_user, rollout_id=rollout_id,
            request_hash=request_hash,
        )  # fmt: skip
        inbox_ids = [inbox_id]
        if created:
            inbox_ids += [await runs.add_inbox(conn, tenant, record.id, text) for text in extra]
    # The row is committed before the workflow starts: if Temporal is down the request
    # fails with 503 and a retry with the same idempotency key starts the same run.
    if created or record.status == "queued":
        await _start(client, settings, record, inbox_ids)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await _public(client, settings, record)


def _request_hash(body: RunCreate) -> bytes:
    """The body as the key names it: the key itself (header or field) left out."""
    return idempotency.request_hash(body.model_dump(mode="json", exclude={"idempotency_key"}))


DEFAULT_AGENT = "assistant"


async def _default_agent(
    conn: runs.Conn, tenant_id: str, settings: Settings
) -> agents.AgentVersion:
    """The tenant's `assistant` agent, created on first use with the default model."""
    try:
        return await agents.get_version(conn, tenant_id, DEFAULT_AGENT)
    except NotFound:
        spec = AgentSpec(
            instructions="You are a helpful assistant. Use the tools when they help; answer concisely.",
            model=default_model(settings),
            tools=["calculator", "get_time"],
        )
        version, _ = await agents.create_version(conn, tenant_id, DEFAULT_AGENT, spec)
        return version


def _objective(body: RunCreate) -> tuple[str, list[str]]:
    if body.objective is not None and body.messages is not None:
        raise InvalidInput("give either `objective` or `messages`, not both")
    if body.objective is not None:
        return body.objective, []
    if body.messages:
        return body.messages[0].content, [m.content for m in body.messages[1:]]
    raise InvalidInput("a run needs an `objective` or `messages`")


async def _start(
    client: Client, settings: Settings, record: runs.RunRecord, inbox_ids: list[int]
) -> None:
    await start_once(
        client, settings, AgentRunWorkflow.run,
        AgentRunInput(
            tenant_id=record.tenant_id, run_id=record.id, agent_name=record.agent_name,
            agent_version=record.agent_version, mode=record.mode,
            conversation=record.conversation, inbox_ids=inbox_ids,
        ),
        workflow_id=record.workflow_id,
        attributes=search_attributes.for_run(
            record.tenant_id, record.agent_name, record.agent_version
        ),
        kind="run",
    )  # fmt: skip


@router.get("", response_model=list[RunPublic])
async def list_runs(
    principal: PrincipalDep, pool: PoolDep, client: TemporalDep, settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RunPublic]:  # fmt: skip
    """The tenant's most recent runs (from Postgres; no live status)."""
    async with pool.connection() as conn:
        records = await runs.list_runs(conn, principal.tenant_id, limit=limit)
    return [await _public(client, settings, r, live=False) for r in records]


@router.get("/{run_id}", response_model=RunPublic)
async def get_run(
    run_id: str, principal: PrincipalDep, pool: PoolDep, client: TemporalDep, settings: SettingsDep
) -> RunPublic:
    """A run: status, outcome, result, cost, tokens and its Temporal UI link."""
    async with pool.connection() as conn:
        record = await runs.get_run(conn, principal.tenant_id, run_id)
    return await _public(client, settings, record)


async def _public(
    client: Client, settings: Settings, record: runs.RunRecord, *, live: bool = True
) -> RunPublic:
    live_status: RunStatus | None = None
    if live and record.status not in runs.TERMINAL and record.status != "queued":
        live_status = await query_status(client, record.workflow_id, AgentRunWorkflow.status)
    progress = live_status.progress if live_status else None
    state = record.status
    if live_status is not None and live_status.phase != "finished":
        # The workflow knows first: Postgres follows one activity later.
        state = "waiting" if live_status.phase.startswith("waiting") else "running"
    return RunPublic(
        id=record.id,
        status=state,
        outcome=record.outcome,
        reason=record.reason,
        result=record.result,
        agent=record.agent_name,
        agent_version=record.agent_version,
        end_user=record.end_user,
        rollout_id=record.rollout_id,
        mode=record.mode,
        conversation=record.conversation,
        objective=record.objective,
        phase=live_status.phase if live_status else None,
        steps=progress.step if progress else record.steps,
        prompt_tokens=progress.prompt_tokens if progress else record.prompt_tokens,
        completion_tokens=progress.completion_tokens if progress else record.completion_tokens,
        tokens=(progress.prompt_tokens + progress.completion_tokens) if progress
        else record.prompt_tokens + record.completion_tokens,
        cost_usd=progress.cost_usd if progress else record.cost_usd,
        cost_complete=progress.cost_complete if progress else record.cost_complete,
        pending_approvals=live_status.pending_approvals if live_status else [],
        temporal_ui=settings.workflow_ui_link(record.workflow_id),
        created_at=record.created_at,
        finished_at=record.finished_at,
    )  # fmt: skip


@router.get("/{run_id}/messages", response_model=list[MessagePublic])
async def run_messages(
    run_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    after: Annotated[int, Query(ge=0, description="messages after this seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[MessagePublic]:
    """The run's transcript, page by page: `colony://runs/{id}/messages/{seq}` is `seq` here."""
    async with pool.connection() as conn:
        await runs.get_run(conn, principal.tenant_id, run_id)  # 404 for other tenants' runs
        found = await runs.list_messages(conn, run_id, after=after, limit=limit)
    return [
        MessagePublic(
            seq=seq,
            role=m.role,
            content=m.content,
            name=m.name,
            created_at=at,
            tool_calls=[c.model_dump() for c in m.tool_calls],
            tool_call_id=m.tool_call_id,
        )
        for seq, m, at in found
    ]


@router.get("/{run_id}/events", response_model=list[EventPublic],
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}})  # fmt: skip
async def run_events(
    run_id: str,
    request: Request,
    principal: PrincipalDep,
    pool: PoolDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this event seq")] = None,
    format: Annotated[str, Query(pattern="^(sse|json)$")] = "sse",
) -> Response:
    """The run's events as Server-Sent Events (resumable with `Last-Event-ID`), or JSON.

    The stream ends after the `run.finished` event.
    """
    tenant = principal.tenant_id
    async with pool.connection() as conn:
        await runs.get_run(conn, tenant, run_id)  # 404 for other tenants' runs

    async def list_events(conn: runs.Conn, after: int) -> list[EventRecord]:
        return await runs.list_events(conn, tenant, run_id, after=after)

    return await sse.events_response(
        request, pool, list_events, terminal="run.finished",
        after=after, last_event_id=last_event_id, format=format,
    )  # fmt: skip


@router.post("/{run_id}/messages", response_model=MessageAccepted,
             status_code=status.HTTP_202_ACCEPTED,
             responses={409: {"description": "The run has finished, or is no conversation."}})  # fmt: skip
async def submit_message(
    run_id: str, body: MessageCreate, principal: PrincipalDep, pool: PoolDep, client: TemporalDep
) -> MessageAccepted:
    """Send a further user message to a conversation run."""
    record = await _live_run(pool, principal.tenant_id, run_id)
    if not record.conversation:
        raise Conflict(f'run {run_id!r} is not a conversation; start it with "conversation": true')
    async with pool.connection() as conn:
        inbox_id = await runs.add_inbox(conn, principal.tenant_id, run_id, body.content)
    handle = client.get_workflow_handle_for(AgentRunWorkflow.run, record.workflow_id)
    await handle.signal(
        AgentRunWorkflow.submit_message,
        SubmitMessage(inbox_id=inbox_id, end_conversation=body.end_conversation),
    )
    return MessageAccepted(run_id=run_id, inbox_id=inbox_id)


@router.post("/{run_id}/approvals", response_model=RunStatus,
             responses={409: {"description": "The run has finished, or no such call waits."}})  # fmt: skip
async def approve(
    run_id: str, body: ApprovalCreate, principal: PrincipalDep, pool: PoolDep, client: TemporalDep
) -> RunStatus:
    """Approve or deny a tool call that waits for a human, or answer an `ask_human` question."""
    record = await _live_run(pool, principal.tenant_id, run_id)
    handle = client.get_workflow_handle_for(AgentRunWorkflow.run, record.workflow_id)
    try:
        result: RunStatus = await handle.execute_update(
            AgentRunWorkflow.approve_tool_call,
            ApprovalDecision(
                call_id=body.call_id, approved=body.approved, reason=body.reason, answer=body.answer
            ),
        )
    except WorkflowUpdateFailedError as exc:
        # The update's validator said why (e.g. no such call is waiting).
        raise Conflict(str(getattr(exc.cause, "message", exc.cause))) from exc
    return result


@router.post("/{run_id}/feedback", response_model=FeedbackPublic,
             responses={409: {"description": "The run has not finished yet."}})  # fmt: skip
async def feedback(
    run_id: str,
    body: FeedbackCreate,
    principal: PrincipalDep,
    pool: PoolDep,
    temporal: TemporalHandleDep,
    settings: SettingsDep,
) -> FeedbackPublic:
    """Rate a finished run (1-5, with a comment and the answer you expected).

    The rating goes to the run's episode in memory and rewards its lesson; recall and
    skill consolidation weigh them by it. An expected answer lets the run become an eval
    case with a check (`POST /v1/runs/{id}/eval-case`). Feedback may start an evolution
    cycle of the agent, when its policy has a `feedback` or `failures` trigger.
    """
    async with pool.connection() as conn:
        record = await runs.get_run(conn, principal.tenant_id, run_id)
        if record.status not in runs.TERMINAL:
            raise Conflict(f"run {run_id!r} is {record.status}; rate it once it has finished")
        await runs.record_feedback(
            conn, principal.tenant_id, run_id, body.rating, body.comment, body.expected
        )
    if record.mode == "normal":
        await triggers.check_quietly(
            pool, temporal.get, settings, principal.tenant_id, record.agent_name
        )
    return FeedbackPublic(run_id=run_id, **body.model_dump())


@router.post("/{run_id}/cancel", response_model=RunPublic, status_code=status.HTTP_202_ACCEPTED,
             responses={409: {"description": "The run has finished."}})  # fmt: skip
async def cancel(
    run_id: str, principal: PrincipalDep, pool: PoolDep, client: TemporalDep, settings: SettingsDep
) -> RunPublic:
    """Request cancellation: in-flight activities are cancelled and the outcome recorded."""
    record = await _live_run(pool, principal.tenant_id, run_id)
    await request_cancel(client, record.workflow_id)
    return await _public(client, settings, record)


async def _live_run(pool: Pool, tenant_id: str, run_id: str) -> runs.RunRecord:
    """The run, or Conflict if it has finished (404 for unknown or other tenants' runs)."""
    async with pool.connection() as conn:
        record = await runs.get_run(conn, tenant_id, run_id)
    if record.status in runs.TERMINAL:
        raise Conflict(f"run {run_id!r} has finished ({record.status})")
    return record
