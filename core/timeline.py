"""One timeline of a run: its events, its Temporal history and its log records, by time.

`GET /v1/runs/{run_id}/timeline` builds the first two (`event_entries`,
`history_entries`); `colony logs` adds records from JSON log files (`log_entries`) and
sorts the lot (`merge`). Every entry has the same shape:

    time     when it happened (events: when Postgres stored them; history: the Temporal
             server's clock; logs: the logging process's clock)
    source   event | history | log
    kind     the event type (`tool.result`), the history event (`activity.failed`), or
             the log level (`INFO`)
    summary  one line for people
    data     the details: an event's data, an activity's name, id, attempt and failure,
             a log record's fields

History entries hold names, ids, attempts, timers and decoded failure messages, never
payloads (inputs and results stay in Temporal and Postgres).
"""

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.enums.v1 import EventType, RetryState
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError, FailureError

from core.event_log import EventRecord
from core.logs import run_id_of

Source = Literal["event", "history", "log"]
_SOURCE_ORDER = {"history": 0, "event": 1, "log": 2}

SKIPPED_EVENTS = frozenset({"model.delta"})
"""Run events left out: streamed text fragments (`model.message` holds the whole text)."""

MAX_SUMMARY = 200
PATCH_MARKER = "core_patch"
"""`workflow.patched` markers: code-version bookkeeping, not something the run did."""
LOCAL_ACTIVITY_MARKER = "core_local_activity"


class TimelineEntry(BaseModel):
    """One thing that happened to a run."""

    model_config = ConfigDict(frozen=True)

    time: datetime
    source: Source
    kind: str
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_SUMMARY else flat[: MAX_SUMMARY - 3] + "..."


def event_entries(events: Iterable[EventRecord]) -> list[TimelineEntry]:
    """The run's stored events (core.event_log), `SKIPPED_EVENTS` left out."""
    return [
        TimelineEntry(
            time=e.created_at,
            source="event",
            kind=e.type,
            summary=_short(_event_summary(e.type, e.data)),
            data={"seq": e.seq, **e.data},
        )
        for e in events
        if e.type not in SKIPPED_EVENTS
    ]


def _event_summary(kind: str, data: dict[str, Any]) -> str:
    if kind == "model.message":
        calls = ", ".join(str(c.get("name")) for c in data.get("tool_calls", []))
        return (str(data.get("content") or "") + (f" -> {calls}" if calls else "")).strip()
    if kind == "tool.result":
        return f"{data.get('tool')} {'ok' if data.get('ok') else 'failed'}: {data.get('result')}"
    if kind == "run.finished":
        return f"{data.get('outcome')}: {data.get('reason') or data.get('result') or ''}"
    return json.dumps(data, separators=(",", ":"), default=str)


_ACTIVITY_CLOSED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED: "activity.started",
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity.completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity.failed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity.timed_out",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED: "activity.cancel_requested",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity.canceled",
}
_WORKFLOW_CLOSED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: "workflow.completed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "workflow.failed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "workflow.timed_out",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "workflow.canceled",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "workflow.terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "workflow.continued_as_new",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED: "workflow.cancel_requested",
}
_CHILD = {
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "child.initiated",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED: "child.started",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: "child.completed",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: "child.failed",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: "child.canceled",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: "child.timed_out",
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: "child.terminated",
}


def _attributes(event: HistoryEvent) -> Any:
    field = event.WhichOneof("attributes")
    return getattr(event, field) if field else None


async def _failure(converter: DataConverter, failure: Failure) -> dict[str, Any]:
    """The failure's message and type, decrypted through `converter` (the Colony plugin's)."""
    copy = Failure()
    copy.CopyFrom(failure)
    try:
        error = await converter.decode_failure(copy)
    except Exception as exc:  # a key we no longer hold: say so rather than fail the timeline
        return {"message": f"(failure not decodable: {type(exc).__name__})"}
    message = error.message if isinstance(error, FailureError) else str(error)
    out: dict[str, Any] = {"message": message or type(error).__name__}
    if isinstance(error, ApplicationError) and error.type:
        out["type"] = error.type
    cause = error.__cause__
    if isinstance(cause, FailureError) and cause.message:
        out["cause"] = cause.message
    return out


async def history_entries(
    events: Sequence[HistoryEvent], converter: DataConverter
) -> list[TimelineEntry]:
    """A workflow history as timeline entries: what tells what a run did.

    The workflow's start and end, activities (scheduled, started with their attempt,
    completed, failed with their failure), timers, signals, updates, child workflows,
    local-activity markers and failed workflow tasks.
    """
    scheduled: dict[int, dict[str, Any]] = {}  # activity details by scheduled event id
    timers: dict[int, str] = {}
    out: list[TimelineEntry] = []

    def add(event: HistoryEvent, kind: str, summary: str, **data: Any) -> None:
        at = event.event_time.ToDatetime(tzinfo=UTC)
        data = {"event_id": event.event_id, **{k: v for k, v in data.items() if v is not None}}
        out.append(TimelineEntry(time=at, source="history", kind=kind, summary=_short(summary),
                                 data=data))  # fmt: skip

    for event in events:
        kind, attrs = event.event_type, _attributes(event)
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            add(event, "workflow.started",
                f"{attrs.workflow_type.name} started on {attrs.task_queue.name}",
                workflow_type=attrs.workflow_type.name, task_queue=attrs.task_queue.name,
                attempt=attrs.attempt,
                continued_from=attrs.continued_execution_run_id or None)  # fmt: skip
        elif kind in _WORKFLOW_CLOSED:
            failure = await _failure(converter, attrs.failure) if _has(attrs, "failure") else None
            text = f": {failure['message']}" if failure else ""
            add(event, _WORKFLOW_CLOSED[kind], f"workflow {_WORKFLOW_CLOSED[kind][9:]}{text}",
                failure=failure)  # fmt: skip
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            details = {"activity_type": attrs.activity_type.name,
                       "activity_id": attrs.activity_id, "task_queue": attrs.task_queue.name}  # fmt: skip
            scheduled[event.event_id] = details
            add(event, "activity.scheduled",
                f"{details['activity_type']} scheduled on {details['task_queue']}", **details)  # fmt: skip
        elif kind in _ACTIVITY_CLOSED:
            details = scheduled.get(attrs.scheduled_event_id, {})
            name = details.get("activity_type", "activity")
            label = _ACTIVITY_CLOSED[kind]
            extra: dict[str, Any] = {}
            summary = f"{name} {label[9:]}"
            if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                extra["attempt"] = attrs.attempt
                summary += f" (attempt {attrs.attempt})"
                if _has(attrs, "last_failure"):
                    extra["last_failure"] = await _failure(converter, attrs.last_failure)
                    summary += (
                        f"; attempt {attrs.attempt - 1} failed: {extra['last_failure']['message']}"
                    )
            elif _has(attrs, "failure"):
                extra["failure"] = await _failure(converter, attrs.failure)
                extra["retry_state"] = _retry_state(attrs)
                summary += f": {extra['failure']['message']}"
            add(event, label, summary, **details, **extra)
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            seconds = attrs.start_to_fire_timeout.ToTimedelta().total_seconds()
            timers[event.event_id] = attrs.timer_id
            add(event, "timer.started", f"timer {attrs.timer_id} for {seconds:g}s",
                timer_id=attrs.timer_id, seconds=seconds)  # fmt: skip
        elif kind in (EventType.EVENT_TYPE_TIMER_FIRED, EventType.EVENT_TYPE_TIMER_CANCELED):
            label = "timer.fired" if kind == EventType.EVENT_TYPE_TIMER_FIRED else "timer.canceled"
            add(event, label, f"timer {attrs.timer_id} {label[6:]}", timer_id=attrs.timer_id)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            add(event, "signal", f"signal {attrs.signal_name}", signal=attrs.signal_name)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            name = attrs.accepted_request.input.name
            add(event, "update.accepted", f"update {name} accepted", update=name,
                update_id=attrs.protocol_instance_id)  # fmt: skip
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            failure = (await _failure(converter, attrs.outcome.failure)
                       if attrs.outcome.HasField("failure") else None)  # fmt: skip
            text = f" with failure: {failure['message']}" if failure else ""
            add(event, "update.completed", f"update {attrs.meta.update_id} completed{text}",
                update_id=attrs.meta.update_id, failure=failure)  # fmt: skip
        elif kind in _CHILD:
            label = _CHILD[kind]
            failure = await _failure(converter, attrs.failure) if _has(attrs, "failure") else None
            child = (
                attrs.workflow_id
                if hasattr(attrs, "workflow_id")
                else attrs.workflow_execution.workflow_id
            )
            text = f": {failure['message']}" if failure else ""
            add(event, label, f"child {child} {label[6:]}{text}", child_workflow_id=child,
                failure=failure)  # fmt: skip
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED and attrs.marker_name != PATCH_MARKER:
            failure = await _failure(converter, attrs.failure) if _has(attrs, "failure") else None
            local = local_activity(attrs) if attrs.marker_name == LOCAL_ACTIVITY_MARKER else {}
            if local:
                text = (
                    f"local activity {local.get('activity_type')} (attempt {local.get('attempt')})"
                )
                label = "local_activity.failed" if failure else "local_activity.completed"
            else:
                text, label = f"marker {attrs.marker_name}", "marker"
            text += f": {failure['message']}" if failure else ""
            add(event, label, text, marker=attrs.marker_name, failure=failure, **local)
        elif kind in (EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
                      EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT):  # fmt: skip
            failure = await _failure(converter, attrs.failure) if _has(attrs, "failure") else None
            label = ("workflow_task.failed" if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                     else "workflow_task.timed_out")  # fmt: skip
            text = f": {failure['message']}" if failure else ""
            add(event, label, f"workflow task {label[14:]}{text}", failure=failure)
    return out


MAX_CHAIN = 50
"""Executions of one workflow id followed back through continue-as-new, at most."""


async def workflow_history(client: Client, workflow_id: str) -> list[HistoryEvent]:
    """The history of `workflow_id`, oldest first, through continue-as-new.

    Its latest execution and the executions it continued from.

    Raises:
        RPCError: Temporal has no such workflow (NOT_FOUND) or is unreachable.
    """
    runs: list[list[HistoryEvent]] = []
    run_id: str | None = None
    for _ in range(MAX_CHAIN):
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        events = list(history.events)
        runs.append(events)
        first = events[0] if events else None
        if first is None or not first.HasField("workflow_execution_started_event_attributes"):
            break
        run_id = first.workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            break
    return [event for events in reversed(runs) for event in events]


def local_activity(attrs: Any) -> dict[str, Any]:
    """The type, id and attempt the SDK records in a local activity's marker (plain JSON)."""
    try:
        data = json.loads(attrs.details["data"].payloads[0].data)
    except (KeyError, IndexError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("activity_type", "activity_id", "attempt") if k in data}


def _has(attrs: Any, field: str) -> bool:
    try:
        return bool(attrs.HasField(field))
    except ValueError:  # the message has no such field
        return False


def _retry_state(attrs: Any) -> str | None:
    value = int(getattr(attrs, "retry_state", 0))
    return RetryState.Name(value).removeprefix("RETRY_STATE_").lower() if value else None  # type: ignore[arg-type]


def log_entries(lines: Iterable[str], run_id: str, *, origin: str) -> Iterator[TimelineEntry]:
    """The JSON log records among `lines` that belong to run `run_id`.

    A record belongs to the run when its `run_id` is the run's, or its `workflow_id` is
    the run's workflow or a child of it. Lines that are not JSON objects with a `time`
    (text logs, a child's start banner) are skipped. `origin` (a file name) goes in `data`.
    """
    for line in lines:
        if run_id not in line:  # cheap test first: most lines of a busy log are other runs'
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not _belongs(record, run_id):
            continue
        try:
            at = datetime.fromisoformat(str(record.pop("time")).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        level = str(record.pop("level", "LOG"))
        message = str(record.pop("message", ""))
        yield TimelineEntry(time=at, source="log", kind=level, summary=_short(message),
                            data={**record, "origin": origin, "message": message})  # fmt: skip


def _belongs(record: dict[str, Any], run_id: str) -> bool:
    if record.get("run_id") == run_id:
        return True
    workflow_id = record.get("workflow_id")
    return isinstance(workflow_id, str) and run_id_of(workflow_id) == run_id


def merge(*parts: Iterable[TimelineEntry]) -> list[TimelineEntry]:
    """All entries by time; at the same instant history first, then events, then logs."""
    entries = [e for part in parts for e in part]
    return sorted(entries, key=lambda e: (e.time, _SOURCE_ORDER[e.source]))
