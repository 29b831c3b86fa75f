"""`colony worker` with COLONY_DEPLOYMENT_NAME: the process's lanes poll as one version,
which becomes current by itself on a new deployment, and serve a stack check."""

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from core.db import Pool
from core.queues import TaskQueue
from core.stack_check import StackCheckInput
from core.temporal import ColonyPlugin
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer, child_env
from tests.versioning.test_worker_versions import task_build_ids, until
from workers import versioning
from workflows.stack_check import StackCheckWorkflow

ROOT = Path(__file__).resolve().parents[2]
TENANT = "versioned-process"


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_versioned_worker_process_adopts_a_new_deployment_and_serves_runs(
    temporal: TemporalServer,
    pool: Pool,
    database_url: str,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Process')", (TENANT,))
    deployment = "colony-test-" + uuid.uuid4().hex[:8]
    suffix = "-" + uuid.uuid4().hex[:8]
    env = child_env(
        TEMPORAL_ADDRESS=temporal.address,
        DATABASE_URL=database_url,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/m",
        COLONY_TASK_QUEUE_SUFFIX=suffix,
        COLONY_DATA_DIR=str(tmp_path / "data"),
        COLONY_MEMORY_MAINTENANCE_EVERY="0",
        COLONY_DEPLOYMENT_NAME=deployment,
    )
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    build_id = versioning.code_build_id()  # no COLONY_BUILD_ID: the workflow code's hash
    with (tmp_path / "worker.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.main", "--lane", "all", env=env, cwd=ROOT,
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:

        async def adopted() -> bool:
            state = await versioning.describe(client, deployment)
            return state is not None and state.current_build_id == build_id

        await until(adopted, seconds=150)
        output = await client.execute_workflow(
            StackCheckWorkflow.run, StackCheckInput(tenant_id=TENANT),
            id=f"stack-check{suffix}", task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        )  # fmt: skip
        assert output.ok, output
        history = await client.get_workflow_handle(f"stack-check{suffix}").fetch_history()
        assert task_build_ids(history.events) == {build_id}
    finally:
        process.terminate()
        await process.wait()
