"""Kill the worker process (SIGKILL) mid-run, again and again: every run still completes, and
no model call whose answer had been stored is made again."""

import asyncio
import random
import signal
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
from tests.support.model_server import RecordedRequest, ScriptedModelServer, tool_call, tool_loop
from tests.support.processes import calls_after_stored, start_worker
from tests.support.services import TemporalServer, child_env

TENANT = "crash"
STEPS = 6  # tool-calling steps before the final answer


@pytest.mark.timeout(240)
async def test_runs_survive_repeated_worker_kills(
    temporal: TemporalServer,
    pool: Pool,
    database_url: str,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> None:
    model_server.responder = tool_loop(
        STEPS, lambda k: [tool_call("calculator", {"expression": f"{k}+1"})], delay=0.3
    )
    suffix = "-" + uuid.uuid4().hex[:8]
    env = child_env(
        TEMPORAL_ADDRESS=temporal.address,
        DATABASE_URL=database_url,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_TASK_QUEUE_SUFFIX=suffix,
        COLONY_DATA_DIR=str(tmp_path / "data"),
        COLONY_MEMORY_MAINTENANCE_EVERY="0",  # no schedule needed here
    )
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Crash')", (TENANT,))
        spec = AgentSpec(instructions="count", model="openai/scripted-model", tools=["calculator"])
        version, _ = await agents.create_version(conn, TENANT, "counter", spec)
        created = [
            await runs.create_run(
                conn, tenant_id=TENANT, agent_name="counter", agent_version=1, objective=f"run {i}"
            )
            for i in range(3)
        ]
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    handles = [
        await client.start_workflow(
            "AgentRunWorkflow",
            AgentRunInput(
                tenant_id=TENANT,
                run_id=r.id,
                agent_name="counter",
                agent_version=version.version,
                inbox_ids=[inbox],
            ),
            id=r.workflow_id + suffix,
            task_queue=TaskQueue.ORCHESTRATION.value + suffix,
            result_type=AgentRunOutput,
        )
        for r, inbox, _ in created
    ]

    log = tmp_path / "worker.log"
    worker = await start_worker(env, log)
    rng = random.Random(7)
    kills = 0
    try:
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.8, 2.0))
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
            kills += 1
            worker = await start_worker(env, log)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 180)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
    assert kills == 5
    assert [r.outcome for r in results] == ["succeeded"] * 3

    # When was each step's answer stored? No request for that step may come later.
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT r.objective, m.seq, extract(epoch FROM m.created_at) AS stored_at FROM run_messages m"
            " JOIN runs r ON r.id = m.run_id WHERE r.tenant_id = %s AND m.role = 'assistant'",
            (TENANT,),
        )
        stored = {
            (row["objective"], int(row["seq"])): float(row["stored_at"])
            for row in await cur.fetchall()
        }
        cur = await conn.execute(
            "SELECT count(*) AS n FROM llm_calls WHERE tenant_id = %s", (TENANT,)
        )
        ledger = await cur.fetchone()
    assert len(stored) == 3 * (STEPS + 1)
    assert ledger is not None and ledger["n"] == 3 * (
        STEPS + 1
    )  # one ledger row per step, never two
    repeated = calls_after_stored(model_server.chat_requests(), stored, step_of)
    assert repeated == [], f"model calls made again after their answers were stored: {repeated}"
    # Some calls were interrupted and retried (the kills landed mid-call), and that is fine.
    assert len(model_server.chat_requests()) >= 3 * (STEPS + 1)


def step_of(request: RecordedRequest) -> tuple[str, int]:
    """(objective, seq): the answer to a request is message number len(history) of its run."""
    return request.messages[1]["content"], len(request.messages)
