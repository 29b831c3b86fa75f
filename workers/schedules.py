"""Temporal Schedules the workers keep in place: memory maintenance.

Every worker that serves the orchestration lane calls `ensure_maintenance_schedule` at
start. Many workers may do so at once: creating a schedule that exists is not an error,
and an existing one is updated only when its interval, target or overlap policy differ
from what the settings ask for, so the call is idempotent and converges.
"""

import asyncio
import logging
from datetime import timedelta
from typing import Final, Literal

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from core import search_attributes
from core.memory.maintenance import MaintenanceInput
from core.queues import TaskQueue
from core.settings import Settings
from workflows.memory_maintenance import KIND, MemoryMaintenanceWorkflow

log = logging.getLogger("colony.schedules")

MAINTENANCE_SCHEDULE_ID: Final = "colony-memory-maintenance"
"""The schedule's id (plus `COLONY_TASK_QUEUE_SUFFIX`); its workflows get this id and
the time they were started at."""
DISABLED_NOTE: Final = "disabled by COLONY_MEMORY_MAINTENANCE_EVERY=0"
ENSURE_TIMEOUT: Final = timedelta(seconds=30)

ScheduleChange = Literal["created", "updated", "unchanged", "paused", "absent"]


def maintenance_schedule_id(settings: Settings) -> str:
    """The id of the deployment's memory-maintenance schedule."""
    return MAINTENANCE_SCHEDULE_ID + settings.task_queue_suffix


def maintenance_schedule(settings: Settings, every: timedelta) -> Schedule:
    """The schedule: `MemoryMaintenanceWorkflow` over every tenant each `every`.

    Never two at once: a run still going when the next is due makes the schedule skip it.
    """
    return Schedule(
        action=ScheduleActionStartWorkflow(
            MemoryMaintenanceWorkflow.run,
            MaintenanceInput(),
            id=maintenance_schedule_id(settings),
            task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.KIND, KIND),
                    SearchAttributePair(search_attributes.STATUS, "running"),
                ]
            ),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="memory maintenance: retention, re-embedding, skills"),
    )


async def ensure_maintenance_schedule(
    client: Client, settings: Settings, every: timedelta | None = timedelta(hours=24)
) -> ScheduleChange:
    """Make the memory-maintenance schedule run every `every`; None or zero pauses it.

    Returns what changed: `created`, `updated` (another interval, target or policy; or
    un-paused after being disabled here), `unchanged`, `paused` (disabled now) or
    `absent` (disabled, and there is no schedule). A schedule an operator paused stays
    paused.

    Raises:
        temporalio.service.RPCError: Temporal refused or cannot be reached.
    """
    schedule_id = maintenance_schedule_id(settings)
    handle = client.get_schedule_handle(schedule_id)
    if not every:
        try:
            described = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return "absent"
            raise
        if described.schedule.state.paused:
            return "unchanged"
        await handle.pause(note=DISABLED_NOTE)
        log.info("memory maintenance schedule %s paused", schedule_id)
        return "paused"

    wanted = maintenance_schedule(settings, every)
    try:
        await client.create_schedule(schedule_id, wanted)
        log.info("memory maintenance schedule %s created: every %s", schedule_id, every)
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    described = await handle.describe()
    resume = described.schedule.state.paused and described.schedule.state.note == DISABLED_NOTE
    if _same(described, wanted) and not resume:
        return "unchanged"

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        state = current.description.schedule.state
        if not (state.paused and state.note == DISABLED_NOTE):
            wanted.state = state  # keep an operator's pause and its note
        return ScheduleUpdate(schedule=wanted)

    await handle.update(update)
    log.info("memory maintenance schedule %s updated: every %s", schedule_id, every)
    return "updated"


def _same(described: ScheduleDescription, wanted: Schedule) -> bool:
    have, want = described.schedule, wanted
    if not isinstance(have.action, ScheduleActionStartWorkflow):
        return False
    assert isinstance(want.action, ScheduleActionStartWorkflow)
    return (
        [(i.every, i.offset) for i in have.spec.intervals]
        == [(i.every, i.offset) for i in want.spec.intervals]
        and not have.spec.calendars
        and not have.spec.cron_expressions
        and have.action.workflow == want.action.workflow
        and have.action.task_queue == want.action.task_queue
        and have.action.id == want.action.id
        and have.policy.overlap == want.policy.overlap
    )


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """Put the schedules in place at worker start; a failure is logged, never raised.

    `COLONY_MEMORY_MAINTENANCE_EVERY` (seconds; 0 pauses the schedule) sets the interval.
    """
    seconds = settings.memory_maintenance_every
    try:
        # Bounded: a Temporal that does not answer must not hold up the worker's shutdown.
        async with asyncio.timeout(ENSURE_TIMEOUT.total_seconds()):
            await ensure_maintenance_schedule(
                client, settings, timedelta(seconds=seconds) if seconds > 0 else None
            )
    except Exception as exc:
        log.warning("could not put the memory maintenance schedule in place: %s", exc)
