"""A run's timeline: its stored events and its Temporal history, in time order."""

from typing import Annotated

from fastapi import APIRouter, Query
from temporalio.service import RPCError, RPCStatusCode

from api.deps import PoolDep, PrincipalDep, TemporalHandleDep
from api.schemas.timeline import TimelinePublic
from core import timeline
from core.errors import StackError
from core.event_log import EventRecord
from core.runs import store as runs

router = APIRouter(prefix="/v1/runs", tags=["runs"])

MAX_EVENTS = 20_000
"""Events of one run a timeline holds at most (a conversation can run for weeks)."""


@router.get("/{run_id}/timeline", response_model=TimelinePublic)
async def run_timeline(
    run_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    temporal: TemporalHandleDep,
    history: Annotated[bool, Query(description="include the Temporal history")] = True,
) -> TimelinePublic:
    """The run's events and its workflow's Temporal history, merged by time.

    History entries are activities (scheduled, started with their attempt, completed,
    failed with the decoded failure), timers, signals, updates and child workflows;
    payloads are left out. When Temporal is unreachable or no longer has the history
    (past the namespace's retention) the events still come, with `history_error`.
    `colony logs` adds the run's log records from JSON log files.
    """
    async with pool.connection() as conn:
        record = await runs.get_run(conn, principal.tenant_id, run_id)  # 404 for other tenants
        events = await _events(conn, principal.tenant_id, run_id)
    entries = timeline.event_entries(events)
    error: str | None = None
    if history:
        try:
            client = await temporal.get()
            found = await timeline.workflow_history(client, record.workflow_id)
            entries = timeline.merge(
                entries, await timeline.history_entries(found, client.data_converter)
            )
        except RPCError as exc:
            error = (
                "Temporal has no history of this run: it has not started, or it ended "
                "longer ago than the namespace's retention"
                if exc.status == RPCStatusCode.NOT_FOUND
                else f"Temporal did not answer: {exc.message}"
            )
        except StackError as exc:
            error = exc.message
    return TimelinePublic(
        run_id=run_id, workflow_id=record.workflow_id, entries=entries, history_error=error
    )


async def _events(conn: runs.Conn, tenant_id: str, run_id: str) -> list[EventRecord]:
    out: list[EventRecord] = []
    while len(out) < MAX_EVENTS:
        page = await runs.list_events(conn, tenant_id, run_id, after=out[-1].seq if out else 0)
        out += page
        if len(page) < 500:
            break
    return out
