"""An agent's evolution schedule: a Temporal Schedule that starts `EvolutionWorkflow`.

One schedule per agent, with the id `evolution-schedule-{tenant}-{agent}` (plus the
deployment's task queue suffix). It starts the workflow by its registered name with the
agent's name and `trigger="schedule"`; the cycle's first activity creates its row from the
agent's evolution policy, so settings changed later apply to the next firing. Its overlap
policy is skip: a cycle still running when the next is due makes the schedule skip it.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import quote

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from core import search_attributes
from core.errors import InvalidInput
from core.evolution.payloads import WORKFLOW_NAME, EvolutionInput
from core.queues import TaskQueue
from core.settings import Settings

SCHEDULE_PREFIX: Final = "evolution-schedule-"
NOTE: Final = "evolution cycles of {agent}"
PAUSED_NOTE: Final = "paused through the evolution schedule of {agent}"
MIN_EVERY: Final = timedelta(minutes=1)
MAX_EVERY: Final = timedelta(days=366)

_EVERY = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"})
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31),
                ("month", 1, 12), ("day of week", 0, 7))  # fmt: skip
_NAMES = {
    3: "jan feb mar apr may jun jul aug sep oct nov dec".split(),
    4: "sun mon tue wed thu fri sat".split(),
}
_CRON_ITEM = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(\d+))?$")


def parse_every(text: str) -> timedelta:
    """An interval such as `24h`, `90m`, `1d`, `1h30m` or `45s` (units d, h, m, s).

    Raises:
        ValueError: not such an interval, or shorter than a minute or longer than a year.
    """
    match = _EVERY.match(text.strip().lower())
    if not text.strip() or match is None:
        raise ValueError(
            f"{text!r} is not an interval: use a number with a unit, e.g. 24h, 90m, 1d, 1h30m"
        )
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    every = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if not MIN_EVERY <= every <= MAX_EVERY:
        raise ValueError(f"interval {text!r} must be between 1m and 366d")
    return every


def check_cron(text: str) -> str:
    """A checked cron expression: 5 fields, or a macro such as `@daily`; returned stripped.

    The fields are minute, hour, day of month, month and day of week (names allowed).

    Raises:
        ValueError: what is wrong with it.
    """
    expression = " ".join(text.split())
    if expression.lower() in _MACROS:
        return expression
    fields = expression.split(" ")
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"cron {text!r} must have 5 fields (minute hour day-of-month month day-of-week), "
            f"e.g. '0 3 * * *'; it has {len(fields)}"
        )
    for position, (field, (name, low, high)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        for item in field.lower().split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                raise ValueError(f"cron {text!r}: {name} field {field!r} is not valid")
            if match.group(1) != "*":
                for value in match.group(1).split("-"):
                    number = _cron_value(value, position, low)
                    if number is None or not low <= number <= high:
                        raise ValueError(
                            f"cron {text!r}: {name} {value!r} is out of range {low}-{high}"
                        )
            if match.group(2) is not None and int(match.group(2)) == 0:
                raise ValueError(f"cron {text!r}: a step in the {name} field must be above 0")
    return expression


def _cron_value(value: str, position: int, low: int) -> int | None:
    if value.isdigit():
        return int(value)
    names = _NAMES.get(position)
    if names is None or value not in names:
        return None
    return names.index(value) + low


def agent_key(tenant_id: str, agent_name: str) -> str:
    """`{tenant}-{agent}` for ids, unambiguous: the tenant is percent-encoded, `-` too.

    Agent names are already safe (letters, digits, `_ . -`): after the encoded tenant, the
    first `-` separates the two.
    """
    return quote(tenant_id, safe="").replace("-", "%2D") + "-" + agent_name


def schedule_id(settings: Settings, tenant_id: str, agent_name: str) -> str:
    """The id of the agent's evolution schedule."""
    return SCHEDULE_PREFIX + agent_key(tenant_id, agent_name) + settings.task_queue_suffix


def evolution_schedule(
    settings: Settings,
    tenant_id: str,
    agent_name: str,
    *,
    every: str | None,
    cron: str | None,
    paused: bool,
) -> Schedule:
    """The schedule that starts a cycle of the agent every `every`, or at `cron`'s times.

    The workflows it starts get the id `evolution-scheduled-{tenant}-{agent}` plus the time
    they were due (Temporal appends it).
    """
    if (every is None) == (cron is None):
        raise ValueError("an evolution schedule needs exactly one of every and cron")
    spec = (
        ScheduleSpec(intervals=[ScheduleIntervalSpec(every=parse_every(every))])
        if every is not None
        else ScheduleSpec(cron_expressions=[check_cron(cron or "")])
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW_NAME,
            EvolutionInput(tenant_id=tenant_id, agent_name=agent_name, trigger="schedule"),
            id="evolution-scheduled-" + agent_key(tenant_id, agent_name),
            task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
            typed_search_attributes=search_attributes.for_run(
                tenant_id, agent_name, None, kind="evolution"
            ),
        ),
        spec=spec,
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(
            note=(PAUSED_NOTE if paused else NOTE).format(agent=agent_name), paused=paused
        ),
    )


async def put_schedule(
    client: Client,
    settings: Settings,
    tenant_id: str,
    agent_name: str,
    *,
    every: str | None,
    cron: str | None,
    paused: bool,
) -> None:
    """Create or update the agent's schedule; without `every` and `cron`, delete it.

    Raises:
        InvalidInput: Temporal refused the spec (e.g. a cron expression it cannot parse).
        temporalio.service.RPCError: Temporal refused otherwise or cannot be reached.
    """
    if every is None and cron is None:
        await delete_schedule(client, settings, tenant_id, agent_name)
        return
    wanted = evolution_schedule(
        settings, tenant_id, agent_name, every=every, cron=cron, paused=paused
    )
    sid = schedule_id(settings, tenant_id, agent_name)
    try:
        try:
            await client.create_schedule(sid, wanted)
            return
        except ScheduleAlreadyRunningError:
            pass
        handle = client.get_schedule_handle(sid)

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=wanted)

        await handle.update(update)
        # The update may leave the state as it was: pause or resume explicitly.
        described = await handle.describe()
        if described.schedule.state.paused != paused:
            note = wanted.state.note
            await (handle.pause(note=note) if paused else handle.unpause(note=note))
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidInput(f"Temporal refused the schedule: {exc.message}") from exc
        raise


async def delete_schedule(
    client: Client, settings: Settings, tenant_id: str, agent_name: str
) -> bool:
    """Delete the agent's schedule; False when it had none."""
    try:
        await client.get_schedule_handle(schedule_id(settings, tenant_id, agent_name)).delete()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


@dataclass(frozen=True)
class ScheduledAction:
    """A cycle the schedule started."""

    scheduled_at: datetime
    started_at: datetime
    workflow_id: str


@dataclass(frozen=True)
class ScheduleStatus:
    """The schedule's state in Temporal."""

    id: str
    paused: bool
    note: str | None
    next_runs: list[datetime]
    recent: list[ScheduledAction]
    running: list[str]
    """Workflow ids of the cycles it started that still run."""


async def describe_schedule(
    client: Client, settings: Settings, tenant_id: str, agent_name: str
) -> ScheduleStatus | None:
    """The agent's schedule as Temporal has it; None when there is none."""
    sid = schedule_id(settings, tenant_id, agent_name)
    try:
        described = await client.get_schedule_handle(sid).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = described.info
    return ScheduleStatus(
        id=sid,
        paused=described.schedule.state.paused,
        note=described.schedule.state.note,
        next_runs=list(info.next_action_times),
        recent=[
            ScheduledAction(a.scheduled_at, a.started_at, a.action.workflow_id)
            for a in info.recent_actions
            if isinstance(a.action, ScheduleActionExecutionStartWorkflow)
        ],
        running=[
            a.workflow_id
            for a in info.running_actions
            if isinstance(a, ScheduleActionExecutionStartWorkflow)
        ],
    )
