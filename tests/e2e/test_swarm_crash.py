"""Kill the worker (SIGKILL) in the middle of a swarm: the swarm completes after a restart, and
no subtask that had completed is run again (checked against the model server's log)."""

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from core.db import Pool
from core.queues import TaskQueue
from core.swarms import store as swarm_store
from core.swarms.plan import QUEEN_AGENT, SubtaskSpec, SwarmInput, SwarmOutput, SwarmSettings
from core.temporal import ColonyPlugin
from tests.support.model_server import ScriptedModelServer, reply
from tests.support.processes import start_worker
from tests.support.services import TemporalServer, child_env
from tests.support.swarm_script import SwarmScript, requests_for, subtask

TENANT = "swarm-crash"
DIAMOND = [
    subtask("a", "researcher"),
    subtask("b", "analyst", ["a"]),
    subtask("c", "analyst", ["a"]),
    subtask("d", "writer", ["b", "c"]),
]


@pytest.mark.timeout(240)
async def test_a_swarm_survives_a_worker_kill(
    temporal: TemporalServer,
    pool: Pool,
    database_url: str,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> None:
    SwarmScript(
        subtasks={"b": [reply("b done", delay=2.0)], "c": [reply("c done", delay=2.0)]},
        synthesis="All done [a][b][c][d].",
    ).install(model_server)
    suffix = "-" + uuid.uuid4().hex[:8]
    env = child_env(
        TEMPORAL_ADDRESS=temporal.address,
        DATABASE_URL=database_url,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/scripted-model",
        COLONY_TASK_QUEUE_SUFFIX=suffix,
        COLONY_DATA_DIR=str(tmp_path / "data"),
        COLONY_MEMORY_MAINTENANCE_EVERY="0",
    )
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Crash')", (TENANT,))
        queen = await swarm_store.role_agent(conn, TENANT, QUEEN_AGENT, "openai/scripted-model")
        record, _ = await swarm_store.create_swarm(
            conn, tenant_id=TENANT, objective="A report, in four parts.", mode="hierarchical",
            queen=queen, settings=SwarmSettings(),
            plan=[SubtaskSpec.model_validate(s) for s in DIAMOND],
        )  # fmt: skip
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    handle = await client.start_workflow(
        "SwarmWorkflow",
        SwarmInput(tenant_id=TENANT, swarm_id=record.id),
        id=record.workflow_id,
        task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        result_type=SwarmOutput,
    )

    log = tmp_path / "worker.log"
    worker = await start_worker(env, log)
    try:
        # Kill it while b and c are at the model: a has completed, d has not started.
        for _ in range(600):
            if requests_for(model_server, "subtask", "b") and requests_for(
                model_server, "subtask", "c"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"b and c never started; see {log}")
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        worker = await start_worker(env, log)
        output = await asyncio.wait_for(handle.result(), 180)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()

    assert output.outcome == "succeeded", output.reason
    assert output.attribution == ["a", "b", "c", "d"]
    # Completed work is never redone: one model call for a, for d and for the synthesis.
    assert len(requests_for(model_server, "subtask", "a")) == 1
    assert len(requests_for(model_server, "subtask", "d")) == 1
    assert len(requests_for(model_server, "synthesis")) == 1
    # b and c were at the model when the worker died; their calls may have been made again.
    assert len(requests_for(model_server, "subtask", "b")) >= 1
    async with pool.connection() as conn:
        rows = {s.id: s for s in await swarm_store.list_subtasks(conn, record.id)}
    # The children resumed where they were: no subtask needed a second attempt.
    assert {k: (r.status, r.attempts) for k, r in rows.items()} == dict.fromkeys(
        "abcd", ("succeeded", 1)
    )
