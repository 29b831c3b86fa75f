"""core/logs.py: the fields a record carries, the format chosen, secrets masked."""

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from temporalio import activity, workflow

from core import logs
from core.settings import Settings
from core.timeline import log_entries
from tests.conftest import make_settings


@pytest.fixture
def emit() -> Iterator[Any]:
    """Log through a JSON handler; returns the records written, parsed."""
    stream = io.StringIO()
    logger = logging.getLogger("colony.test-logs")
    handler = logs.make_handler(stream, "json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)

    def emit(message: str, *args: object, **extra: Any) -> dict[str, Any]:
        logger.info(message, *args, extra=extra)
        return dict(json.loads(stream.getvalue().splitlines()[-1]))

    yield emit
    logger.removeHandler(handler)
    logger.propagate = True


def test_temporal_logger_details_are_flattened_and_name_the_run(emit: Any) -> None:
    activity = {"activity_id": "3", "activity_type": "call_llm", "attempt": 2,
                "namespace": "default", "task_queue": "colony-llm", "workflow_id": "run-run_ab12",
                "workflow_run_id": "0193", "workflow_type": "AgentRunWorkflow"}  # fmt: skip
    record = emit("model answered", temporal_activity=activity)
    assert record == {
        "time": record["time"], "level": "INFO", "logger": "colony.test-logs",
        "message": "model answered", "run_id": "run_ab12", "workflow_id": "run-run_ab12",
        "workflow_type": "AgentRunWorkflow", "temporal_run_id": "0193", "activity_id": "3",
        "activity_type": "call_llm", "attempt": 2, "task_queue": "colony-llm",
    }  # fmt: skip
    assert record["time"].endswith("Z")
    child = emit("x", temporal_workflow={"workflow_id": "run-run_ab12/recipe-c1", "run_id": "r"})
    assert child["run_id"] == "run_ab12" and child["temporal_run_id"] == "r"
    assert "run_id" not in emit("x", temporal_workflow={"workflow_id": "swarm-s1"})


def test_bound_ids_and_the_current_span_are_added_and_explicit_extras_win(emit: Any) -> None:
    tracer = TracerProvider().get_tracer("test")
    with logs.bound(tenant="acme", run_id="run_1"), tracer.start_as_current_span("s") as span:
        record = emit("inside")
        explicit = emit("explicit", run_id="run_2")
    context = span.get_span_context()
    assert record["tenant"] == "acme" and record["run_id"] == "run_1"
    assert record["trace_id"] == format(context.trace_id, "032x")
    assert record["span_id"] == format(context.span_id, "016x")
    assert explicit["run_id"] == "run_2"
    outside = emit("outside")
    assert "tenant" not in outside and "trace_id" not in outside


def test_secrets_are_masked_in_messages_extras_and_tracebacks(emit: Any) -> None:
    key = "sk-" + "a1B2" * 10
    record = emit("calling with api_key=%s", key, detail=f"Bearer {key}")
    assert key not in json.dumps(record)
    assert record["message"] == "calling with api_key=[SECRET]"
    stream = io.StringIO()
    logger = logging.getLogger("colony.test-logs.tb")
    logger.addHandler(logs.make_handler(stream, "text"))
    logger.propagate = False
    try:
        raise ValueError(f"token={key}")
    except ValueError:
        logger.exception("failed")
    assert key not in stream.getvalue() and "token=[SECRET]" in stream.getvalue()


def test_the_format_is_json_unless_stderr_is_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    unset: Settings = make_settings()
    assert logs.choose_format(unset, io.StringIO()) == "json"
    assert logs.choose_format(unset, Tty()) == "text"
    assert logs.choose_format(make_settings(COLONY_LOG_FORMAT="JSON"), Tty()) == "json"
    assert logs.choose_format(make_settings(COLONY_LOG_FORMAT="text"), io.StringIO()) == "text"


def test_configure_installs_one_handler_and_text_shows_the_run() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        logs.configure(make_settings(COLONY_LOG_FORMAT="json"), stream=io.StringIO())
        assert logs.configure(make_settings(COLONY_LOG_FORMAT="text"), stream=stream) == "text"
        assert len(root.handlers) == len(before) + 1
        logging.getLogger("colony.test-logs.text").warning("slow", extra={"run_id": "run_9"})
        assert stream.getvalue().rstrip().endswith("colony.test-logs.text: slow [run=run_9]")
        logging.getLogger("httpx").info("HTTP Request: GET /")
        assert "HTTP Request" not in stream.getvalue()
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
        for name in (*logs._QUIET, "temporalio.workflow", "temporalio.activity"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        workflow.logger.workflow_info_on_message = True
        activity.logger.activity_info_on_message = True


def test_log_files_give_only_the_runs_json_records() -> None:
    lines = [
        "--- 2026-12-06 17:00:00 starting worker-all",
        '{"time": "2026-12-06T17:00:01.500Z", "level": "INFO", "message": "a", "run_id": "run_1"}',
        '{"time": "2026-12-06T17:00:02Z", "level": "INFO", "message": "b", "run_id": "run_10"}',
        '{"time": "2026-12-06T17:00:03Z", "level": "WARNING", "message": "c",'
        ' "workflow_id": "run-run_1/recipe-c1"}',
        '{"level": "INFO", "message": "no time", "run_id": "run_1"}',
        "12:00:00 INFO    colony.x: text mentions run_1",
    ]
    found = list(log_entries(lines, "run_1", origin="worker-all.log"))
    assert [(e.kind, e.summary) for e in found] == [("INFO", "a"), ("WARNING", "c")]
    assert found[0].data["origin"] == "worker-all.log" and found[0].time.microsecond == 500000
