"""StackCheckWorkflow on a real Temporal server with the real activities."""

import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client, WorkflowHandle

from core import search_attributes
from core.db import Pool
from core.queues import TaskQueue
from core.stack_check import StackCheckInput, StackCheckOutput
from core.temporal import ColonyPlugin
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from workflows.stack_check import StackCheckWorkflow

StackCheckHandle = WorkflowHandle[StackCheckWorkflow, StackCheckOutput]


@pytest.fixture(scope="module", autouse=True)
async def tenant(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES ('wf', 'WF')")


async def run_check(
    temporal: TemporalServer, pool: Pool, model_url: str, client: Client | None = None
) -> tuple[StackCheckHandle, StackCheckOutput, str]:
    """Run one stack check on task queues of its own; returns handle, output and suffix."""
    settings = make_settings(
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_url,
        COLONY_DEFAULT_MODEL="openai/m",
    )
    client = client or await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    suffix = "-" + uuid.uuid4().hex[:8]
    async with running_workers(client, settings, pool, suffix=suffix):
        handle = await client.start_workflow(
            StackCheckWorkflow.run,
            StackCheckInput(tenant_id="wf"),
            id=f"stack-check{suffix}",
            task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        )
        output = await handle.result()
    return handle, output, suffix


async def test_touches_every_lane_and_replays(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    handle, output, suffix = await run_check(temporal, pool, model_server.base_url)
    assert output.ok, output
    assert output.workflow_id == handle.id
    by_lane = {lane.lane: lane for lane in output.lanes}
    assert set(by_lane) == {"orchestration", "llm", "tools", "memory"}
    assert f"colony-orchestration{suffix}" in by_lane["orchestration"].detail
    assert "answers" in by_lane["llm"].detail
    assert by_lane["tools"].detail.startswith("bubblewrap")
    # Activities went to this test's own lane queues.
    history = await handle.fetch_history()
    queues = {
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert queues == {f"colony-llm{suffix}", f"colony-tools{suffix}", f"colony-memory{suffix}"}
    description = await handle.describe()
    assert description.typed_search_attributes.get(search_attributes.STATUS) == "succeeded"
    await assert_replays(handle)
    record_history("stack_check_v1", history)


async def test_a_lane_failure_is_reported_not_hidden(temporal: TemporalServer, pool: Pool) -> None:
    # The model endpoint is down: the llm lane must say so, and the check must not pass.
    handle, output, _ = await run_check(temporal, pool, "http://127.0.0.1:9/v1")
    assert not output.ok
    llm = next(lane for lane in output.lanes if lane.lane == "llm")
    assert not llm.ok and "unreachable" in llm.detail
    description = await handle.describe()
    assert description.typed_search_attributes.get(search_attributes.STATUS) == "failed"
    await assert_replays(handle)


async def test_spans_cover_client_workflow_and_activities(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plugin = ColonyPlugin(tracer=provider.get_tracer("test"))
    client = await Client.connect(temporal.address, plugins=[plugin])
    await run_check(temporal, pool, model_server.base_url, client)
    names = {span.name for span in exporter.get_finished_spans()}
    assert {
        "StartWorkflow:StackCheckWorkflow",
        "RunWorkflow:StackCheckWorkflow",
        "StartActivity:probe_llm_lane",
        "RunActivity:probe_llm_lane",
        "RunActivity:probe_tools_lane",
        "RunActivity:record_stack_check",
    } <= names, names
    provider.shutdown()
