"""JSON logs carry a run's ids; `colony logs` puts its events, history and logs on one timeline.

Real Postgres, Temporal, workers and the scripted model server; log records are captured
as the JSON lines `colony worker` and `colony api` write.
"""

import asyncio
import contextlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

from api.cli import logs as cli_logs
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core import logs, search_attributes, timeline
from core import temporal as temporal_support
from core.db import Pool
from core.settings import Settings
from tests.api.test_runs import wait_finished
from tests.conftest import make_settings
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers

A, B = "t-logs-a", "t-logs-b"
CALC = {"name": "calc", "instructions": "Use the calculator.",
        "model": "openai/scripted-model", "tools": ["calculator"]}  # fmt: skip


@contextlib.contextmanager
def capture() -> Iterator[io.StringIO]:
    """Every record logged meanwhile, as the JSON lines a Colony process writes."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, "json")
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def captured() -> Iterator[io.StringIO]:
    with capture() as stream:
        yield stream


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def settings(
    database_url: str,
    temporal: TemporalServer,
    model: ScriptedModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    data = tmp_path_factory.mktemp("logs")
    return stack_settings(database_url, temporal.address, model.base_url, data)


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    return await tenant_keys(pool, A, B)


@pytest.fixture(scope="module")
async def two_runs(
    settings: Settings,
    pool: Pool,
    keys: dict[str, str],
    model: ScriptedModelServer,
    captured: io.StringIO,
) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """A run of tenant A that calls the calculator, then a run of tenant B."""
    async with api_with_workers(settings, pool, keys[A]) as http:
        assert (await http.post("/v1/agents", json=CALC)).status_code == 201
        model.script(tool_calls(tool_call("calculator", {"expression": "6*7"})), reply("It is 42."))
        first = (await http.post("/v1/runs", json={"agent": "calc", "objective": "6*7?"})).json()
        assert (await wait_finished(http, first["id"]))["outcome"] == "succeeded"
        model.script(reply("Hello."))
        http.headers["Authorization"] = f"Bearer {keys[B]}"
        second = (await http.post("/v1/runs", json={"objective": "Say hello."})).json()
        assert (await wait_finished(http, second["id"]))["outcome"] == "succeeded"
        http.headers["Authorization"] = f"Bearer {keys[A]}"
        yield http, first["id"], second["id"]


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_log_records_carry_the_run_workflow_activity_and_tenant(
    two_runs: tuple[httpx.AsyncClient, str, str], captured: io.StringIO
) -> None:
    _, first, second = two_runs
    lines = records(captured)
    mine = [r for r in lines if r.get("run_id") == first]
    api = [r for r in mine if r["logger"] == "colony.api"]
    assert api and api[0]["tenant"] == A and api[0]["workflow_id"] == f"run-{first}"
    activities = {r["activity_type"]: r for r in mine if r["logger"] == "colony.activity"}
    # The calculator needs no isolation: a local activity of the workflow's worker.
    assert {"call_llm", "execute_local_tool"} <= set(activities), mine
    for record in activities.values():
        assert record["tenant"] == A and record["workflow_id"] == f"run-{first}"
        assert record["workflow_type"] == "AgentRunWorkflow" and record["attempt"] == 1
        assert record["activity_id"] and record["task_queue"].startswith("colony-")
        datetime.fromisoformat(record["time"])
    # Temporal's own warnings about an activity come after the activity's context ended:
    # they name the run (from the workflow id) but not always the tenant.
    assert {r.get("tenant") for r in lines if r.get("run_id") == second} - {None} == {B}


async def test_colony_logs_merges_events_history_and_log_files_of_one_run(
    two_runs: tuple[httpx.AsyncClient, str, str],
    captured: io.StringIO,
    settings: Settings,
    keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http, first, second = two_runs
    route = (await http.get(f"/v1/runs/{first}/timeline")).json()
    assert route["history_error"] is None
    kinds = {(e["source"], e["kind"]) for e in route["entries"]}
    assert {("event", "run.started"), ("event", "tool.result"), ("event", "run.finished"),
            ("history", "workflow.started"), ("history", "activity.scheduled"),
            ("history", "activity.completed"), ("history", "workflow.completed")} <= kinds  # fmt: skip
    started = [e for e in route["entries"] if e["kind"] == "activity.started"]
    assert {e["data"]["activity_type"] for e in started} >= {"call_llm"}
    assert all(e["data"]["attempt"] == 1 for e in started)
    (local,) = [e for e in route["entries"] if e["kind"] == "local_activity.completed"]
    assert local["data"]["activity_type"] == "execute_local_tool"
    assert (await http.get(f"/v1/runs/{second}/timeline")).status_code == 404  # B's run

    log_file = tmp_path / "worker.log"
    log_file.write_text("--- a banner line that is not JSON\n" + captured.getvalue())
    app = create_app(settings)

    def colony_logs(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as client:
            api = ColonyClient(make_settings(COLONY_API_KEY=keys[A]))
            client.headers["Authorization"] = f"Bearer {keys[A]}"
            api._http = client  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_logs, "api_client", lambda: api)
            return CliRunner().invoke(cli, ["logs", first, *args], env={"COLUMNS": "200"})

    shown = await asyncio.to_thread(colony_logs, "--json", "--no-stack-logs", "--log-file",
                                    str(log_file))  # fmt: skip
    assert shown.exit_code == 0, shown.output
    entries = [json.loads(line) for line in shown.output.splitlines()]
    assert {e["source"] for e in entries} == {"event", "history", "log"}
    times = [datetime.fromisoformat(e["time"]) for e in entries]
    assert times == sorted(times)
    found = [e for e in entries if e["source"] == "log"]
    assert {e["data"]["run_id"] for e in found} == {first}
    assert {"call_llm", "execute_local_tool"} <= {e["data"].get("activity_type") for e in found}
    assert second not in shown.output
    # The workflow's start (API log), its history and its first model call, in that order.
    order = [(e["source"], e["kind"]) for e in entries]
    assert order.index(("history", "workflow.started")) < order.index(("event", "run.finished"))

    table = await asyncio.to_thread(colony_logs, "--no-stack-logs", "--log-file", str(log_file))
    assert table.exit_code == 0, table.output
    assert "activity.completed" in table.output and "log (worker.log)" in table.output


@activity.defn
async def flaky() -> str:
    if activity.info().attempt == 1:
        raise ApplicationError("the first try fails", type="Flaky")
    return "ok"


@activity.defn
async def refused() -> str:
    raise ApplicationError("no second chance", type="Refused", non_retryable=True)


@activity.defn
def quick() -> str:
    logging.getLogger("tests.quick").info("a plain logger in a sync activity")
    return "quick"


@workflow.defn(sandboxed=False)
class TimelineWorkflow:
    """Continues as new once, then does one of everything a timeline shows."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, generation: int) -> str:
        if generation == 0:
            workflow.continue_as_new(1)
        workflow.logger.info("generation %d", generation)
        retry = RetryPolicy(initial_interval=timedelta(milliseconds=50))
        timeout = timedelta(seconds=10)
        await workflow.execute_activity(flaky, start_to_close_timeout=timeout, retry_policy=retry)
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity(refused, start_to_close_timeout=timeout)
        await workflow.execute_local_activity(quick, start_to_close_timeout=timeout)
        await workflow.sleep(0.05)
        await workflow.wait_condition(lambda: self.go)
        return "done"

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.update
    def poke(self) -> str:
        return "poked"


async def test_the_history_part_decodes_attempts_failures_and_every_kind(
    temporal: TemporalServer,
) -> None:
    settings = make_settings(TEMPORAL_ADDRESS=temporal.address)
    tenant = search_attributes.for_run(A, "calc", 1)
    client = await temporal_support.connect(settings)
    queue = "timeline-" + uuid.uuid4().hex[:8]
    workflow_id = f"run-run_{uuid.uuid4().hex[:12]}"
    with ThreadPoolExecutor(2) as pool, capture() as captured:
        async with Worker(client, task_queue=queue, workflows=[TimelineWorkflow],
                          activities=[flaky, refused, quick], activity_executor=pool):  # fmt: skip
            await _drive(client, workflow_id, queue, tenant)
    lines = records(captured)
    logged = next(r for r in lines if r["message"].startswith("generation 1"))
    assert logged["workflow_id"] == workflow_id and logged["run_id"] == workflow_id[4:]
    assert logged["workflow_type"] == "TimelineWorkflow" and logged["tenant"] == A
    plain = next(r for r in lines if r["logger"] == "tests.quick")
    assert plain["activity_type"] == "quick" and plain["workflow_id"] == workflow_id

    events = await timeline.workflow_history(client, workflow_id)

    entries = await timeline.history_entries(events, client.data_converter)
    kinds = [e.kind for e in entries]
    assert kinds.count("workflow.started") == 2 and "workflow.continued_as_new" in kinds
    assert kinds.index("workflow.continued_as_new") < kinds.index("activity.scheduled")
    started = {e.data["activity_type"]: e for e in entries if e.kind == "activity.started"}
    assert started["flaky"].data["attempt"] == 2
    assert started["flaky"].data["last_failure"] == {
        "message": "the first try fails", "type": "Flaky"}  # fmt: skip
    failed = next(e for e in entries if e.kind == "activity.failed")
    assert failed.data["activity_type"] == "refused"
    assert failed.data["failure"]["message"] == "no second chance"
    assert failed.data["retry_state"] == "non_retryable_failure"
    local = next(e for e in entries if e.kind == "local_activity.completed")
    assert local.data["activity_type"] == "quick"
    assert {"timer.started", "timer.fired", "signal", "update.accepted", "update.completed",
            "workflow.completed"} <= set(kinds)  # fmt: skip
    assert next(e for e in entries if e.kind == "signal").data["signal"] == "proceed"
    assert all("Encoded failure" not in e.summary for e in entries)


async def _drive(client: Client, workflow_id: str, queue: str, attributes: Any) -> None:
    handle = await client.start_workflow(TimelineWorkflow.run, 0, id=workflow_id,
                                         task_queue=queue, search_attributes=attributes)  # fmt: skip
    for _ in range(100):  # the update waits for the continued execution to start
        with contextlib.suppress(RPCError):
            assert await handle.execute_update(TimelineWorkflow.poke) == "poked"
            break
        await asyncio.sleep(0.05)
    await handle.signal(TimelineWorkflow.proceed)
    assert await handle.result() == "done"
