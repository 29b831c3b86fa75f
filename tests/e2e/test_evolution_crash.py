"""Kill the worker process (SIGKILL) in the middle of an evolution cycle's evaluations, and
again while it recovers: the cycle still promotes, every (version, case) is evaluated exactly
once, and no evaluation whose answer had been stored calls the model again (checked against
the model server's log)."""

import asyncio
import signal
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from core.db import Pool
from core.evolution import cases as eval_cases
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec, Split
from core.evolution.payloads import EvolutionInput, EvolutionOutput, EvolutionSettings
from core.queues import TaskQueue
from core.runs import agents
from core.runs.payloads import AgentSpec
from core.temporal import ColonyPlugin
from tests.evolution.test_workflow import (
    RULE,
    case_ids,
    rated_live_run,
    responder,
    system_text,
)
from tests.support.model_server import RecordedRequest, ScriptedModelServer, Step, reply
from tests.support.processes import calls_after_stored, start_worker
from tests.support.services import TemporalServer, child_env

TENANT = "evolution-crash"
AGENT = "calc"
COUNTS: dict[Split, int] = {"train": 2, "validation": 8, "holdout": 4}
FIRST_KILL_AT = 6  # results stored (of 26) before the first kill


def slow_done_if_told(request: RecordedRequest) -> Step:
    """An agent's answer after 0.2-0.4 s (the same for a case under every version); it ends
    with DONE when its instructions say so."""
    delay = 0.2 + 0.1 * (zlib.crc32(objective_of(request).encode()) % 3)
    text = "The answer is 42 DONE" if "DONE" in system_text(request) else "The answer is 42"
    return reply(text, delay=delay)


def is_agent(request: RecordedRequest) -> bool:
    """An evaluated agent's request (not the cycle's own: proposer, diagnoser, sorter, judge)."""
    return not system_text(request).startswith(
        (
            "You improve the instructions",
            "You find why",
            "You sort feedback",
            "You grade",
            "You compare",
        )
    )


def objective_of(request: RecordedRequest) -> str:
    return next(str(m["content"]) for m in request.messages if m["role"] == "user")


async def result_count(pool: Pool, evolution_id: str) -> int:
    async with pool.connection() as conn:
        return len(await evolutions.list_results(conn, evolution_id))


async def evaluating(server: ScriptedModelServer, pool: Pool, evolution_id: str, n: int) -> bool:
    """At least `n` results are stored and an agent's model call is in progress."""
    in_flight = any(r.status is None and is_agent(r) for r in server.chat_requests())
    return in_flight and await result_count(pool, evolution_id) >= n


async def serving(log: Path, n: int) -> bool:
    """The worker log says a worker started serving `n` times."""
    return log.read_text().count("worker serving lanes") >= n


async def until(condition: Callable[[], Awaitable[bool]], log: Path) -> None:
    for _ in range(3000):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting; see {log}")


async def kill_and_restart(
    worker: asyncio.subprocess.Process,
    env: dict[str, str],
    log: Path,
    pool: Pool,
    evolution_id: str,
    killed_at: list[int],
) -> asyncio.subprocess.Process:
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    killed_at.append(await result_count(pool, evolution_id))
    return await start_worker(env, log)


@pytest.mark.timeout(240)
async def test_an_evolution_cycle_survives_worker_kills(
    temporal: TemporalServer,
    pool: Pool,
    database_url: str,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> None:
    model_server.responder = responder(slow_done_if_told)
    suffix = "-" + uuid.uuid4().hex[:8]
    env = child_env(
        TEMPORAL_ADDRESS=temporal.address,
        DATABASE_URL=database_url,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_TASK_QUEUE_SUFFIX=suffix,
        COLONY_DATA_DIR=str(tmp_path / "data"),
        COLONY_MEMORY_MAINTENANCE_EVERY="0",
    )
    ids = case_ids(COUNTS)
    objectives: dict[str, str] = {}  # case id -> its (unique) objective
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Crash')", (TENANT,))
        incumbent, _ = await agents.create_version(
            conn, TENANT, AGENT,
            AgentSpec(instructions="You answer questions about numbers.",
                      model="openai/scripted-model", tools=[]),
        )  # fmt: skip
        for split, split_ids in ids.items():
            for i, case_id in enumerate(split_ids):
                objectives[case_id] = f"{split} question {i}: what is 6 times 7?"
                await eval_cases.add_case(
                    conn, TENANT, AGENT,
                    EvalCaseSpec(
                        objective=objectives[case_id],
                        checks=[{"kind": "contains", "value": "DONE"}],  # type: ignore[list-item]
                    ),
                    case_id=case_id,
                )  # fmt: skip
        await rated_live_run(conn, TENANT, AGENT, incumbent.version)
        record = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=AGENT, incumbent_version=incumbent.version,
            settings=EvolutionSettings(candidates=1, kinds=["instruction_edit"], parallelism=2),
        )  # fmt: skip
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    handle = await client.start_workflow(
        "EvolutionWorkflow",
        EvolutionInput(tenant_id=TENANT, evolution_id=record.id),
        id=record.workflow_id,
        task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        result_type=EvolutionOutput,
    )
    measured = [c for split in ("validation", "holdout") for c in ids[split]]
    total = len(ids["train"]) + 2 * len(measured)

    log = tmp_path / "worker.log"
    worker = await start_worker(env, log)
    killed_at: list[int] = []  # results stored at each kill
    try:
        # First kill: while an evaluation's agent is at the model, some results stored.
        await until(lambda: evaluating(model_server, pool, record.id, FIRST_KILL_AT), log)
        worker = await kill_and_restart(worker, env, log, pool, record.id, killed_at)
        # Second kill: as soon as the new worker serves, while it recovers the cycle.
        await until(lambda: serving(log, 2), log)
        worker = await kill_and_restart(worker, env, log, pool, record.id, killed_at)
        output = await asyncio.wait_for(handle.result(), 150)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
    # Both kills landed while evaluations were in progress.
    assert len(killed_at) == 2 and all(0 < n < total for n in killed_at), killed_at
    assert output.decision == "promote", output.reasons
    candidate = output.version
    assert candidate is not None

    async with pool.connection() as conn:
        results = await evolutions.list_results(conn, record.id)
        candidates = await evolutions.list_candidates(conn, record.id)
        cur = await conn.execute(
            "SELECT version FROM agent_versions WHERE tenant_id = %s AND evolution_id = %s",
            (TENANT, record.id),
        )
        versions = [row["version"] for row in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT r.id, r.agent_version, r.objective, count(m.seq) AS answers,"
            " extract(epoch FROM min(m.created_at)) AS stored_at FROM runs r"
            " LEFT JOIN run_messages m ON m.run_id = r.id AND m.role = 'assistant'"
            " WHERE r.evolution_id = %s GROUP BY r.id",
            (record.id,),
        )
        eval_runs = await cur.fetchall()

    # The proposer wrote one candidate, stored once (a retried proposal finds it again).
    assert versions == [candidate]
    assert [c.version for c in candidates] == [candidate]

    # Every (version, case) has exactly one result and exactly one evaluation run.
    expected = {(incumbent.version, c) for c in ids["train"]} | {
        (v, c) for c in measured for v in (incumbent.version, candidate)
    }
    assert len(results) == total
    assert {(r.version, r.case_id) for r in results} == expected
    by_objective = {objective: case_id for case_id, objective in objectives.items()}
    runs_per_eval = Counter((r["agent_version"], by_objective[r["objective"]]) for r in eval_runs)
    assert set(runs_per_eval) == expected and set(runs_per_eval.values()) == {1}
    assert {r.run_id for r in results} == {r["id"] for r in eval_runs}
    # The time a kill stalled an evaluation is not its latency (only its model and tool
    # calls' time is), so the gate's latency bound cannot depend on when a worker died.
    assert all(r.latency_s is not None and r.latency_s < 2 for r in results), [
        (r.version, r.case_id, r.latency_s) for r in results
    ]
    assert all(r["answers"] == 1 for r in eval_runs)

    # Each evaluation child workflow was started once, and completed once.
    started: Counter[str] = Counter()
    completed = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            started[
                event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            ] += 1
        completed += event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED
    assert started == Counter(evolutions.eval_workflow_id(record.id, v, c) for v, c in expected)
    assert completed == total

    # No evaluation called the model after its answer had been stored.
    stored = {(r["agent_version"], r["objective"]): float(r["stored_at"]) for r in eval_runs}
    agent_calls = [r for r in model_server.chat_requests() if is_agent(r)]

    def evaluation_of(request: RecordedRequest) -> tuple[int, str]:
        version = candidate if RULE in system_text(request) else incumbent.version
        return version, objective_of(request)

    assert {evaluation_of(r) for r in agent_calls} == set(stored)  # none of another run
    repeated = calls_after_stored(agent_calls, stored, evaluation_of)
    assert repeated == [], f"evaluations that called the model again after storing: {repeated}"
