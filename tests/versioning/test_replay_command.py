"""`colony replay --since`: recent histories replay against the current code, or it says
which do not and exits non-zero."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from temporalio.client import Client
from temporalio.worker import Worker

from core.db import Pool
from core.queues import TaskQueue
from core.stack_check import StackCheckInput
from core.temporal import ColonyPlugin
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from tests.versioning.probe import OldStackCheck
from workers.cli import replay
from workers.registry import ALL_WORKFLOWS
from workers.replay import ReplayReport, replay_recent, visibility_query
from workflows.stack_check import StackCheckWorkflow

TENANT = "replays"


@pytest.fixture(scope="module", autouse=True)
async def tenant(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Replays')", (TENANT,))


async def listed(client: Client, suffix: str, count: int) -> None:
    """Wait until visibility lists `count` workflows on the suffix's queue."""
    query = f"TaskQueue = '{TaskQueue.ORCHESTRATION.value}{suffix}'"
    for _ in range(100):
        if (await client.count_workflows(query)).count >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"visibility never listed {count} workflows for {query}")


async def colony_replay(temporal: TemporalServer, suffix: str, *args: str) -> tuple[int, str]:
    """`colony replay ARGS` against the suffix's queues (in a thread: it runs its own loop)."""
    env = {"TEMPORAL_ADDRESS": temporal.address, "COLONY_TASK_QUEUE_SUFFIX": suffix}
    result = await asyncio.to_thread(CliRunner().invoke, replay, list(args), env=env)
    return result.exit_code, result.output


async def test_fresh_histories_replay(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    settings = make_settings(
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/m",
    )
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    suffix = "-" + uuid.uuid4().hex[:8]
    async with running_workers(client, settings, pool, suffix=suffix):
        output = await client.execute_workflow(
            StackCheckWorkflow.run, StackCheckInput(tenant_id=TENANT),
            id=f"stack-check{suffix}", task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        )  # fmt: skip
    assert output.ok
    await listed(client, suffix, 1)
    code, text = await colony_replay(temporal, suffix, "--since", "1h")
    assert code == 0, text
    assert "replayed 1, failed 0" in text


async def test_a_history_the_code_cannot_replay_fails_and_is_named(
    temporal: TemporalServer,
) -> None:
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    suffix = "-" + uuid.uuid4().hex[:8]
    queue = TaskQueue.ORCHESTRATION.value + suffix
    workflow_id = f"old-stack-check{suffix}"
    # An older release's StackCheckWorkflow ran here; the current one does other things.
    async with Worker(client, task_queue=queue, workflows=[OldStackCheck]):
        await client.execute_workflow(
            OldStackCheck.run, StackCheckInput(tenant_id=TENANT), id=workflow_id, task_queue=queue
        )
    await listed(client, suffix, 1)

    code, text = await colony_replay(temporal, suffix, "--since", "24h")
    assert code == 1, text
    assert f"FAILED StackCheckWorkflow {workflow_id}" in text
    assert "Nondeterminism" in text, text
    assert "replayed 1, failed 1" in text

    # The same history replays against the code that wrote it; the filters narrow the list.
    settings = make_settings(COLONY_TASK_QUEUE_SUFFIX=suffix)
    since = datetime.now(UTC) - timedelta(hours=1)

    async def replayed(workflows: list[type], **filters: str) -> ReplayReport:
        query = visibility_query(settings, since=since, **filters)
        return await replay_recent(client, query, workflows, limit=5)

    report = await replayed([OldStackCheck])
    assert (report.replayed, report.ok) == (1, True)
    assert (await replayed(ALL_WORKFLOWS, workflow_id=workflow_id)).failures[0].workflow_id == (
        workflow_id
    )
    assert (await replayed(ALL_WORKFLOWS, workflow_id="other")).replayed == 0
    assert (await replayed(ALL_WORKFLOWS, workflow_type="AgentRunWorkflow")).replayed == 0
