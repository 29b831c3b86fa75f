"""Log records that say which run, workflow, activity, trace and tenant they belong to.

Every entry point (`colony api`, `colony worker`, `colony up` and the other commands)
calls `configure` once. Records go to stderr, one JSON object per line or as text:

    COLONY_LOG_FORMAT=json  {"time": ..., "level": ..., "logger": ..., "message": ..., ids}
    COLONY_LOG_FORMAT=text  `12:00:01 INFO    colony.x: message [run=... activity=...]`
    unset                   JSON unless stderr is a terminal: containers and the log files
                            `colony up` writes for its children get JSON (what `colony
                            logs` and log shippers read), a person at a terminal gets text

`ContextFilter` adds, when known: `run_id`, `tenant`, `workflow_id`, `workflow_type`,
`temporal_run_id`, `activity_id`, `activity_type`, `attempt`, `task_queue`, `trace_id`
and `span_id`. It reads them from Temporal's own logger extras (`workflow.logger`,
`activity.logger`), from `activity.info()` / `workflow.info()` when a plain
`logging.getLogger(__name__)` logs inside an activity or workflow, from the
OpenTelemetry span that is current, and from fields bound to the context (`bind`): the
API binds the caller's tenant, `LogContextInterceptor` the tenant and run of an
activity's input. An id given in `extra=` wins.

Messages, tracebacks and string extras pass through `core.redact.mask_sensitive`, so
keys and tokens of recognisable shape never reach a log.
"""

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter
from temporalio import activity, workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core import search_attributes
from core.redact import mask_sensitive
from core.settings import Settings

LogFormat = Literal["json", "text"]

CONTEXT_FIELDS = (
    "run_id", "tenant", "workflow_id", "workflow_type", "temporal_run_id", "activity_id",
    "activity_type", "attempt", "task_queue", "trace_id", "span_id",
)  # fmt: skip
"""The ids a record carries when they are known, in the order JSON lines show them."""

_QUIET = ("httpx", "httpx2", "httpcore", "psycopg", "psycopg.pool", "temporalio",
          "uvicorn.access")  # fmt: skip
"""Libraries whose INFO lines are per-request or per-poll chatter: WARNING and up only."""

_bound: ContextVar[Mapping[str, str] | None] = ContextVar("colony_log_fields", default=None)

log = logging.getLogger("colony.activity")


def run_id_of(workflow_id: str) -> str | None:
    """The agent run a workflow id belongs to, or None.

    Runs' workflows are `run-<run id>` (core.runs.store), their children `run-<run id>/...`.
    """
    head = workflow_id.split("/", 1)[0]
    return head.removeprefix("run-") if head.startswith("run-") and len(head) > 4 else None


def bind(**fields: str | None) -> None:
    """Add fields to every record logged from this context (a request, an activity) on.

    A request or activity runs in a context of its own, so what it binds ends with it.
    """
    current = dict(_bound.get() or {})
    current.update({k: v for k, v in fields.items() if v})
    _bound.set(current)


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """`bind` for the duration of a `with` block."""
    token = _bound.set({**(_bound.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


class ContextFilter(logging.Filter):
    """Adds the ids of the run, workflow, activity, trace and tenant to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the known ids on `record` (never drops it)."""
        found: dict[str, Any] = {}
        # Temporal's logger adapters put their details in extra as one dict each.
        details = record.__dict__.pop("temporal_workflow", None)
        if isinstance(details, dict):
            found.update(_workflow_fields(details))
        details = record.__dict__.pop("temporal_activity", None)
        if isinstance(details, dict):
            found.update(_activity_fields(details))
        if activity.in_activity():
            found.update(_current_activity_fields())
        elif workflow.in_workflow():
            found.update(_current_workflow_fields())
        found.update(_bound.get() or {})
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            found["trace_id"] = format(span.trace_id, "032x")
            found["span_id"] = format(span.span_id, "016x")
        for name, value in found.items():
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        workflow_id = getattr(record, "workflow_id", None)
        if getattr(record, "run_id", None) is None and isinstance(workflow_id, str):
            record.run_id = run_id_of(workflow_id)
        return True


def _workflow_fields(details: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "workflow_id": details.get("workflow_id"),
        "workflow_type": details.get("workflow_type"),
        "temporal_run_id": details.get("run_id"),
        "task_queue": details.get("task_queue"),
        "attempt": details.get("attempt"),
    }


def _activity_fields(details: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "workflow_id": details.get("workflow_id"),
        "workflow_type": details.get("workflow_type"),
        "temporal_run_id": details.get("workflow_run_id"),
        "activity_id": details.get("activity_id"),
        "activity_type": details.get("activity_type"),
        "task_queue": details.get("task_queue"),
        "attempt": details.get("attempt"),
    }


def _current_activity_fields() -> dict[str, Any]:
    info = activity.info()
    return {
        "workflow_id": info.workflow_id,
        "workflow_type": info.workflow_type,
        "temporal_run_id": info.workflow_run_id,
        "activity_id": info.activity_id,
        "activity_type": info.activity_type,
        "task_queue": info.task_queue,
        "attempt": info.attempt,
    }


def _current_workflow_fields() -> dict[str, Any]:
    info = workflow.info()
    return {
        "workflow_id": info.workflow_id,
        "workflow_type": info.workflow_type,
        "temporal_run_id": info.run_id,
        "task_queue": info.task_queue,
        "attempt": info.attempt,
        "tenant": info.typed_search_attributes.get(search_attributes.TENANT),
    }


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object per record, secrets masked.

    Fields: time (UTC, ISO 8601), level, logger, message, the ids of `CONTEXT_FIELDS`,
    then any other extras (`exc_info`: the traceback).
    """

    def __init__(self) -> None:
        """Rename `levelname` and `name` to `level` and `logger`."""
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Order the fields, drop empty ids and mask secrets in free text."""
        out: dict[str, Any] = {"time": log_data.pop("time", None)}
        for name in ("level", "logger", "message", *CONTEXT_FIELDS):
            value = log_data.pop(name, None)
            if value is not None:
                out[name] = value
        for name, value in log_data.items():
            if value is not None:
                out[name] = mask_sensitive(value) if isinstance(value, str) else value
        if isinstance(out.get("message"), str):
            out["message"] = mask_sensitive(out["message"])
        return out

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The standard fields plus `time` from the record's creation."""
        super().add_fields(log_data, record, message_dict)
        log_data["time"] = format_time(record.created)


def format_time(created: float) -> str:
    """`2026-12-06T17:48:00.123Z`: the time of a record as JSON lines carry it."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class TextFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL logger: message [run=... activity=...]` with secrets masked."""

    _SHOWN = (("run_id", "run"), ("tenant", "tenant"), ("activity_type", "activity"),
              ("attempt", "attempt"))  # fmt: skip

    def __init__(self) -> None:
        """The CLI's layout, as before JSON logs."""
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """The line, its context in brackets when known, masked."""
        line = super().format(record)
        shown = [f"{label}={getattr(record, n)}" for n, label in self._SHOWN
                 if getattr(record, n, None) is not None]  # fmt: skip
        if shown:
            head, newline, rest = line.partition("\n")
            line = f"{head} [{' '.join(shown)}]{newline}{rest}"
        return mask_sensitive(line)


def choose_format(settings: Settings, stream: TextIO) -> LogFormat:
    """`settings.log_format`, else JSON unless `stream` is a terminal."""
    if settings.log_format is not None:
        return settings.log_format
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def make_handler(stream: TextIO, log_format: LogFormat) -> logging.Handler:
    """A handler writing `log_format` records with their ids to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


_OURS = "_colony_handler"


def configure(
    settings: Settings | None = None, *, verbose: bool = False, stream: TextIO | None = None
) -> LogFormat:
    """Send every record of the process to stderr (or `stream`) in the chosen format.

    Idempotent: a second call replaces the handler the first one installed. Returns the
    format chosen.
    """
    settings = settings or Settings()
    stream = stream or sys.stderr
    chosen = choose_format(settings, stream)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    handler = make_handler(stream, chosen)
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else settings.log_level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Colony's own workflow and activity code logs through these two.
    for name in ("temporalio.workflow", "temporalio.activity"):
        logging.getLogger(name).setLevel(root.level)
    # The ids are fields now; Temporal would also append them to every message.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    logging.captureWarnings(True)
    return chosen


class LogContextInterceptor(Interceptor):
    """Binds the tenant and run of an activity's input to the records it logs.

    Also logs each activity's completion with its duration; Temporal's worker logs the
    failures.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap the activity's inbound calls."""
        return _ActivityInbound(next)


class _ActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        arg = input.args[0] if input.args else None
        tenant, run_id = getattr(arg, "tenant_id", None), getattr(arg, "run_id", None)
        with bound(
            tenant=tenant if isinstance(tenant, str) else None,
            run_id=run_id if isinstance(run_id, str) else None,
        ):
            started = time.perf_counter()
            result = await super().execute_activity(input)
            if log.isEnabledFor(logging.INFO):
                ms = (time.perf_counter() - started) * 1000
                log.info("activity %s completed in %.0f ms", activity.info().activity_type, ms,
                         extra={"duration_ms": round(ms, 1)})  # fmt: skip
            return result
