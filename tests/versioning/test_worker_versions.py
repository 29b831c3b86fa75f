"""Versioned workers on the dev server: runs stay on their version, promote moves new ones.

Two builds of Colony's real workers ("a" and "b", all lanes) serve the same task queues
as two versions of one worker deployment, as during a rolling deploy.
"""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner
from temporalio.client import Client, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.service import RPCError
from temporalio.worker import Worker

from core.db import Pool
from core.queues import TaskQueue
from core.settings import Settings
from core.stack_check import StackCheckInput
from core.temporal import ColonyPlugin
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.replay import assert_replays
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from tests.versioning.probe import LongLivedProbe
from workers import versioning
from workers.cli import deploy
from workflows.stack_check import StackCheckWorkflow

TENANT = "versions"
T = TypeVar("T")


@pytest.fixture(scope="module", autouse=True)
async def tenant(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Versions')", (TENANT,))


async def eventually(call: Callable[[], Awaitable[T]], seconds: float = 30) -> T:
    """`call()` once Temporal stops refusing it: a version registers after its first polls."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await call()
        except RPCError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Wait for `check()` to be true."""
    for _ in range(int(seconds / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def ran_on(handle: WorkflowHandle, build_ids: set[str]) -> bool:  # type: ignore[type-arg]
    return task_build_ids((await handle.fetch_history()).events) == build_ids


def task_build_ids(history_events: list) -> set[str]:  # type: ignore[type-arg]
    """Build ids of the workers that completed the run's workflow tasks."""
    return {
        e.workflow_task_completed_event_attributes.deployment_version.build_id
        for e in history_events
        if e.HasField("workflow_task_completed_event_attributes")
    }


async def history_has(handle: WorkflowHandle, activity: str) -> bool:  # type: ignore[type-arg]
    history = await handle.fetch_history()
    return any(
        e.activity_task_scheduled_event_attributes.activity_type.name == activity
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    )


@asynccontextmanager
async def stack_checks_blocked(pool: Pool) -> AsyncIterator[None]:
    """Hold runs at their last activity (record_stack_check) until the block ends."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("LOCK TABLE stack_checks IN ACCESS EXCLUSIVE MODE")
        yield


async def test_a_pinned_run_finishes_on_its_version_after_another_is_promoted(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    deployment = "colony-test-" + uuid.uuid4().hex[:8]
    suffix = "-" + uuid.uuid4().hex[:8]

    def build(build_id: str) -> Settings:
        return make_settings(
            TEMPORAL_ADDRESS=temporal.address,
            OPENAI_BASE_URL=model_server.base_url,
            COLONY_DEFAULT_MODEL="openai/m",
            COLONY_DEPLOYMENT_NAME=deployment,
            COLONY_BUILD_ID=build_id,
        )

    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    version_a = versioning.worker_version(build("a"))
    assert version_a is not None
    queue = TaskQueue.ORCHESTRATION.value + suffix

    async def start(name: str) -> WorkflowHandle:  # type: ignore[type-arg]
        return await client.start_workflow(
            StackCheckWorkflow.run, StackCheckInput(tenant_id=TENANT),
            id=f"stack-check-{name}{suffix}", task_queue=queue,
        )  # fmt: skip

    async with running_workers(client, build("a"), pool, suffix=suffix):
        # A new deployment's first version becomes current by itself.
        assert await versioning.adopt_first_version(client, version_a, wait_s=30)
        first = await start("first")
        assert (await first.result()).ok
        # The rolling deploy: b's workers join while a is current.
        async with running_workers(client, build("b"), pool, suffix=suffix):
            async with stack_checks_blocked(pool):
                pinned = await start("pinned")
                await until(lambda: history_has(pinned, "record_stack_check"))
                previous = await eventually(lambda: versioning.set_current(client, deployment, "b"))
                assert previous == "a"
                # b is current: a later worker of a does not take the deployment back.
                assert not await versioning.adopt_first_version(client, version_a, wait_s=5)
                after = await start("after")
                state = await versioning.describe(client, deployment)
                assert state is not None and state.current_build_id == "b"
                statuses = {v.build_id: v.status for v in state.versions}
                assert statuses == {"a": "draining", "b": "current"}, statuses
            assert (await pinned.result()).ok
            assert (await after.result()).ok
    assert task_build_ids((await first.fetch_history()).events) == {"a"}
    # Started on a and pinned there: finished by a's workers while b was current.
    assert task_build_ids((await pinned.fetch_history()).events) == {"a"}
    assert task_build_ids((await after.fetch_history()).events) == {"b"}
    info = (await pinned.describe()).raw_description.workflow_execution_info.versioning_info
    assert info.behavior == VersioningBehavior.PINNED.value
    assert info.deployment_version.build_id == "a"
    for handle in (pinned, after):
        await assert_replays(handle)


def probe_worker(
    client: Client, deployment: str, queue: str, build_id: str, **options: Any
) -> Worker:
    """A worker of `LongLivedProbe` on `queue`, polling as version `deployment`.`build_id`."""
    config = versioning.deployment_config(
        make_settings(COLONY_DEPLOYMENT_NAME=deployment, COLONY_BUILD_ID=build_id)
    )
    return Worker(
        client, task_queue=queue, workflows=[LongLivedProbe], deployment_config=config,
        **options,
    )  # fmt: skip


async def test_an_auto_upgrade_workflow_moves_to_the_promoted_version(
    temporal: TemporalServer,
) -> None:
    deployment = "colony-test-" + uuid.uuid4().hex[:8]
    queue = "version-probe-" + uuid.uuid4().hex[:8]
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])

    def worker(build_id: str) -> Worker:
        return probe_worker(client, deployment, queue, build_id, max_cached_workflows=0)

    async with worker("a"), worker("b"):
        await eventually(lambda: versioning.set_current(client, deployment, "a"))
        handle = await client.start_workflow(LongLivedProbe.run, id=queue, task_queue=queue)
        await until(lambda: ran_on(handle, {"a"}))
        await eventually(lambda: versioning.set_current(client, deployment, "b"))
        await handle.signal(LongLivedProbe.finish)
        assert await handle.result() == "done"
    # Its next workflow task after the promote went to b.
    assert task_build_ids((await handle.fetch_history()).events) == {"a", "b"}


async def test_ramping_sends_a_share_of_new_runs_to_the_new_version(
    temporal: TemporalServer,
) -> None:
    deployment = "colony-test-" + uuid.uuid4().hex[:8]
    queue = "version-probe-" + uuid.uuid4().hex[:8]
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])

    def worker(build_id: str) -> Worker:
        return probe_worker(client, deployment, queue, build_id)

    async with worker("a"), worker("b"):
        await eventually(lambda: versioning.set_current(client, deployment, "a"))
        await eventually(lambda: versioning.set_ramping(client, deployment, "b", 100))
        state = await versioning.describe(client, deployment)
        assert state is not None
        assert (state.current_build_id, state.ramping_build_id, state.ramping_percentage) == (
            "a",
            "b",
            100,
        )
        handle = await client.start_workflow(LongLivedProbe.run, id=queue, task_queue=queue)
        await handle.signal(LongLivedProbe.finish)
        assert await handle.result() == "done"
        await versioning.set_ramping(client, deployment, None, 0)
        state = await versioning.describe(client, deployment)
        assert state is not None and state.ramping_build_id is None
    assert task_build_ids((await handle.fetch_history()).events) == {"b"}


async def test_the_deploy_commands(temporal: TemporalServer) -> None:
    deployment = "colony-test-" + uuid.uuid4().hex[:8]
    queue = "version-probe-" + uuid.uuid4().hex[:8]
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    env = {"TEMPORAL_ADDRESS": temporal.address, "COLONY_DEPLOYMENT_NAME": deployment}

    async def colony_deploy(*args: str, **extra: str) -> tuple[int, str]:
        runner = CliRunner()
        result = await asyncio.to_thread(runner.invoke, deploy, list(args), env=env | extra)
        return result.exit_code, result.output

    async def registered() -> bool:
        state = await versioning.describe(client, deployment)
        return state is not None and {v.build_id for v in state.versions} == {"a", "b"}

    def worker(build_id: str) -> Worker:
        config = versioning.deployment_config(
            make_settings(COLONY_DEPLOYMENT_NAME=deployment, COLONY_BUILD_ID=build_id)
        )
        return Worker(
            client, task_queue=queue, workflows=[LongLivedProbe], deployment_config=config
        )

    code, text = await colony_deploy("status")
    assert code == 1 and "no worker of deployment" in text, text
    async with worker("a"), worker("b"):
        await until(registered)
        code, text = await colony_deploy("promote", "--build-id", "a")
        assert code == 0 and "current version unversioned -> a" in text, text
        # Without --build-id: this code's build id, here COLONY_BUILD_ID.
        code, text = await colony_deploy("ramp", "25", COLONY_BUILD_ID="b")
        assert code == 0 and "ramping b at 25%" in text, text
        code, text = await colony_deploy("status")
        assert code == 0, text
        assert re.search(r"\ba\b.*current", text) and re.search(r"\bb\b.*ramping 25%", text), text
        code, text = await colony_deploy("promote", "--build-id", "b")
        assert code == 0 and "current version a -> b" in text, text
        code, text = await colony_deploy("promote", "--build-id", "c")
        assert code == 1 and "Temporal refused" in text, text
    code, text = await colony_deploy("status", COLONY_DEPLOYMENT_NAME="")
    assert code == 1 and "worker versioning is off" in text, text
