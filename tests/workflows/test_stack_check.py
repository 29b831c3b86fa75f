"""StackCheckWorkflow on a real Temporal server with the real activities."""

import uuid

from core import search_attributes
from core import temporal as temporal_support
from core.db import Pool
from core.models import StackCheckInput
from core.queues import TaskQueue
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from workflows.stack_check import StackCheckWorkflow


async def test_touches_every_lane_and_replays(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ('wf', 'WF') ON CONFLICT DO NOTHING"
        )
    settings = make_settings(
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/m",
    )
    client = await temporal_support.connect(settings)
    suffix = "-" + uuid.uuid4().hex[:8]
    async with running_workers(client, settings, pool, suffix=suffix):
        handle = await client.start_workflow(
            StackCheckWorkflow.run,
            StackCheckInput(tenant_id="wf"),
            id=f"stack-check-test{suffix}",
            task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        )
        output = await handle.result()
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


async def test_a_lane_failure_is_reported_not_hidden(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ('wf', 'WF') ON CONFLICT DO NOTHING"
        )
    # The model endpoint is down: the llm lane must say so, and the check must not pass.
    settings = make_settings(
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        COLONY_DEFAULT_MODEL="openai/m",
    )
    client = await temporal_support.connect(settings)
    suffix = "-" + uuid.uuid4().hex[:8]
    async with running_workers(client, settings, pool, suffix=suffix):
        handle = await client.start_workflow(
            StackCheckWorkflow.run,
            StackCheckInput(tenant_id="wf"),
            id=f"stack-check-down{suffix}",
            task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        )
        output = await handle.result()
    assert not output.ok
    llm = next(lane for lane in output.lanes if lane.lane == "llm")
    assert not llm.ok and "unreachable" in llm.detail
    description = await handle.describe()
    assert description.typed_search_attributes.get(search_attributes.STATUS) == "failed"
    await assert_replays(handle)
