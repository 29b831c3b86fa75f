"""A worker stopped with SIGTERM finishes the model call it is running (within
COLONY_WORKER_SHUTDOWN_GRACE_S) instead of cancelling it: the call is made once."""

import asyncio
import signal
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from core.db import Pool
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentRunInput, AgentRunOutput, AgentSpec
from core.temporal import ColonyPlugin
from tests.support.model_server import ScriptedModelServer, tool_call, tool_loop
from tests.support.processes import colony_env, start_worker
from tests.support.services import TemporalServer

TENANT = "drain"
MODEL_DELAY = 4.0  # long enough to stop the worker while the call is in flight


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigterm_drains_the_model_call_in_flight(
    temporal: TemporalServer,
    pool: Pool,
    database_url: str,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> None:
    model_server.responder = tool_loop(
        1, lambda k: [tool_call("calculator", {"expression": "20+1"})], delay=MODEL_DELAY
    )
    suffix = "-" + uuid.uuid4().hex[:8]
    env = colony_env(
        temporal=temporal.address, database_url=database_url, model_url=model_server.base_url,
        suffix=suffix, data_dir=tmp_path / "data", COLONY_WORKER_SHUTDOWN_GRACE_S="30",
    )  # fmt: skip
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Drain') ON CONFLICT DO NOTHING", (TENANT,)
        )
        spec = AgentSpec(instructions="add", model="openai/scripted-model", tools=["calculator"])
        version, _ = await agents.create_version(conn, TENANT, f"adder-{suffix}", spec)
        run, inbox, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name=version.name, agent_version=1, objective="20+1"
        )
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    handle = await client.start_workflow(
        "AgentRunWorkflow",
        AgentRunInput(tenant_id=TENANT, run_id=run.id, agent_name=version.name,
                      agent_version=version.version, inbox_ids=[inbox]),
        id=run.workflow_id + suffix,
        task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        result_type=AgentRunOutput,
    )  # fmt: skip
    log = tmp_path / "worker.log"
    worker = await start_worker(env, log)
    try:
        deadline = time.monotonic() + 120
        while not model_server.chat_requests():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 60) == 0, log.read_text()[-3000:]
        # It waited for the call: its answer came after MODEL_DELAY and was stored.
        assert time.monotonic() - stopped_at > MODEL_DELAY / 2
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM llm_calls WHERE run_id = %s",
                                     (run.id,))  # fmt: skip
            row = await cur.fetchone()
        assert row is not None and row["n"] == 1, log.read_text()[-3000:]
        worker = await start_worker(env, log)
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
    assert result.outcome == "succeeded"
    assert len(model_server.chat_requests()) == 2  # the drained call was never made again
