"""Kill the worker process (SIGKILL) while an agent's canary is decided on live traffic:
mid-canary with runs at the model and some verdicts stored, again while the next worker
recovers, then while the decision's transaction is in flight, and once more the moment
the retried decision is stored. Every finished live run is observed exactly once and
counted once as evidence, and the canary is decided (and released) exactly once."""

import asyncio
import itertools
import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from core.db import Pool
from core.evolution import cases as eval_cases
from core.evolution import rollouts
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec
from core.evolution.payloads import EvolutionSettings
from core.evolution.rollout_payloads import CanaryRef, LiveRun, RolloutSettings, RolloutView
from core.evolution.sequential import SequentialPolicy
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentRunInput, AgentRunOutput, AgentSpec
from core.runs.rollout import resolve_version
from core.temporal import ColonyPlugin
from tests.conftest import make_settings
from tests.e2e.test_worker_crash import start_worker
from tests.evolution.test_workflow import system_text
from tests.support.model_server import RecordedRequest, ScriptedModelServer, Step, reply
from tests.support.services import TemporalServer, child_env

TENANT = "rollout-crash"
AGENT = "answerer"
MODEL = "openai/scripted-model"
MARK = "You are the new version."
OBJECTIVE = "What is 6 times 7?"
FIRST_STABLE = 6  # stable runs in the first wave (the canary's baseline needs 4)
FIRST_CANARY = 3  # canary runs in the first wave
CANARY_RUNS = 8  # the test's min_samples: the decision needs every canary run's verdict
RULES = RolloutSettings(
    canary_share=0.5,
    online_sample_rate=1.0,  # every run is checked against the eval case
    baseline_runs=4,
    canary_test=SequentialPolicy(min_samples=CANARY_RUNS, delta=0.3),
    watch=False,
    max_cost_ratio=None,  # a run stalled by a kill is not a slow run
    max_latency_ratio=None,
)

Handle = WorkflowHandle[Any, AgentRunOutput]


def answers(quick: int) -> Callable[[RecordedRequest], Step]:
    """The canary (MARK in its instructions) answers right, the stable version does not.

    The first `quick` requests are answered at once, the others after 1.5 s: the first
    kill lands while some runs are observed and the others are still at the model.
    """
    order = itertools.count()

    def respond(request: RecordedRequest) -> Step:
        text = "The answer is 42." if MARK in system_text(request) else "I do not know."
        return reply(text, delay=0.1 if next(order) < quick else 1.5)

    return respond


async def observed(pool: Pool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM live_observations WHERE tenant_id = %s", (TENANT,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def decided_at(pool: Pool, rollout_id: str) -> datetime | None:
    async with pool.connection() as conn:
        return (await rollouts.get_rollout(conn, TENANT, rollout_id)).decided_at


async def releasing(pool: Pool) -> bool:
    """A transaction waits for the agent's row lock (`decide_rollout` releasing the canary)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE %s",
            ("%FROM agents WHERE%FOR UPDATE%",),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"]) > 0


async def until(condition: Callable[[], Awaitable[bool]], log: Path, timeout: float = 90) -> None:
    for _ in range(int(timeout / 0.01)):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting; see {log}")


async def serving(log: Path, n: int) -> bool:
    """The worker log says a worker started serving `n` times."""
    return log.read_text().count("worker serving lanes") >= n


async def start_runs(
    pool: Pool, client: Client, suffix: str, users: list[str], stable: int, canary: int
) -> list[tuple[str, Handle]]:
    """`stable` and `canary` new runs of the agent (their ids and workflows), each version
    picked by the resolver (sticky per end user) as POST /v1/runs does; users are taken
    from `users`."""
    handles: list[tuple[str, Handle]] = []
    wanted = {1: stable, 2: canary}
    async with pool.connection() as conn:
        while any(wanted.values()):
            user = users.pop(0)
            version, rollout_id = await resolve_version(conn, TENANT, AGENT, end_user=user)
            assert rollout_id is not None
            if not wanted[version.version]:
                continue
            wanted[version.version] -= 1
            record, inbox, _ = await runs.create_run(
                conn, tenant_id=TENANT, agent_name=AGENT, agent_version=version.version,
                objective=OBJECTIVE, end_user=user, rollout_id=rollout_id,
            )  # fmt: skip
            handle = await client.start_workflow(
                "AgentRunWorkflow",
                AgentRunInput(
                    tenant_id=TENANT, run_id=record.id, agent_name=AGENT,
                    agent_version=version.version, inbox_ids=[inbox],
                ),
                id=record.workflow_id,
                task_queue=TaskQueue.ORCHESTRATION.value + suffix,
                result_type=AgentRunOutput,
            )  # fmt: skip
            handles.append((record.id, handle))
    return handles


async def kill(worker: asyncio.subprocess.Process) -> None:
    worker.send_signal(signal.SIGKILL)
    await worker.wait()


@pytest.mark.chaos
@pytest.mark.timeout(240)
async def test_a_canary_loses_no_evidence_and_decides_once_across_worker_kills(
    temporal: TemporalServer,
    pool: Pool,
    database_url: str,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> None:
    model_server.responder = answers(quick=4)
    suffix = "-" + uuid.uuid4().hex[:8]
    values = {
        "TEMPORAL_ADDRESS": temporal.address,
        "DATABASE_URL": database_url,
        "OPENAI_BASE_URL": model_server.base_url,
        "COLONY_TASK_QUEUE_SUFFIX": suffix,
        "COLONY_DATA_DIR": str(tmp_path / "data"),
        "COLONY_MEMORY_MAINTENANCE_EVERY": "0",
    }
    env = child_env(**values)
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Crash')", (TENANT,))
        spec = {"model": MODEL, "tools": []}
        await agents.create_version(
            conn, TENANT, AGENT,
            AgentSpec.model_validate({"instructions": "You answer questions.", **spec}),
        )  # fmt: skip
        await eval_cases.add_case(
            conn, TENANT, AGENT,
            EvalCaseSpec.model_validate(
                {"objective": OBJECTIVE, "checks": [{"kind": "contains", "value": "42"}]}
            ),
        )  # fmt: skip
        await rollouts.put_policy(conn, TENANT, AGENT, RULES)
        cycle = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=AGENT, incumbent_version=1,
            settings=EvolutionSettings(),
        )  # fmt: skip
        candidate = await agents.add_candidate(
            conn, TENANT, AGENT, AgentSpec.model_validate({"instructions": MARK, **spec}),
            parent=1, evolution_id=cycle.id, rationale="test",
        )  # fmt: skip
        rollout = await rollouts.start_canary(
            conn, TENANT, AGENT, stable=1, canary=candidate.version, evolution_id=cycle.id,
            settings=RULES,
        )  # fmt: skip
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    await rollouts.signal_controller(
        client, make_settings(**values), TENANT, AGENT, "canary_started",
        CanaryRef(rollout_id=rollout.id),
    )  # fmt: skip
    controller = client.get_workflow_handle(rollouts.controller_id(TENANT, AGENT))
    users = [f"user-{i}" for i in range(1000)]

    log = tmp_path / "worker.log"
    worker = await start_worker(env, log)
    at_kill: list[tuple[int, datetime | None]] = []  # (observations stored, decided_at)
    try:
        handles = await start_runs(pool, client, suffix, users, FIRST_STABLE, FIRST_CANARY)
        first = len(handles)

        # First kill: some runs observed, others still at the model.
        async def mid_canary() -> bool:
            in_flight = any(r.status is None for r in model_server.chat_requests())
            return in_flight and await observed(pool) >= 3

        await until(mid_canary, log)
        await kill(worker)
        at_kill.append((await observed(pool), await decided_at(pool, rollout.id)))
        worker = await start_worker(env, log)
        # Second kill: as soon as the new worker serves, while it recovers.
        await until(lambda: serving(log, 2), log)
        await kill(worker)
        at_kill.append((await observed(pool), await decided_at(pool, rollout.id)))
        worker = await start_worker(env, log)

        # Every run of the first wave observed (the canary's baseline is set); the rest
        # of the canary's runs decide it. Third kill: while the decision's transaction
        # waits for the agent's row (the test holds it), its rollout row already updated.
        async def first_wave_observed() -> bool:
            return await observed(pool) == first

        await until(first_wave_observed, log)
        # A `finish_run` retried after a kill signals its run's end again: ignored.
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, agent_version FROM runs WHERE tenant_id = %s", (TENANT,)
            )
            for row in await cur.fetchall():
                again = LiveRun(
                    run_id=row["id"], version=row["agent_version"], rollout_id=rollout.id
                )
                await controller.signal("run_finished", again)
        async with pool.connection() as blocker, blocker.transaction():
            await blocker.execute(
                "SELECT 1 FROM agents WHERE tenant_id = %s AND name = %s FOR UPDATE",
                (TENANT, AGENT),
            )
            handles += await start_runs(pool, client, suffix, users, 0, CANARY_RUNS - FIRST_CANARY)
            await until(lambda: releasing(pool), log)
            await kill(worker)
            at_kill.append((await observed(pool), await decided_at(pool, rollout.id)))
        worker = await start_worker(env, log)

        # Fourth kill: the moment the retried decision is stored.
        async def decided() -> bool:
            return await decided_at(pool, rollout.id) is not None

        await until(decided, log)
        await kill(worker)
        at_kill.append((await observed(pool), await decided_at(pool, rollout.id)))
        worker = await start_worker(env, log)

        outputs = await asyncio.wait_for(asyncio.gather(*(h.result() for _, h in handles)), 120)

        async def all_counted() -> bool:
            now: RolloutView = await controller.query("view", result_type=RolloutView)
            return now.observed == len(handles)

        await until(all_counted, log)
        view: RolloutView = await controller.query("view", result_type=RolloutView)
        # The agent stops being watched: the controller ends (its history is complete).
        async with pool.connection() as conn:
            await rollouts.delete_policy(conn, TENANT, AGENT)
        await controller.signal("policy_changed")
        await asyncio.wait_for(controller.result(), 30)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()

    total = len(handles)
    assert total == FIRST_STABLE + CANARY_RUNS
    assert [o.outcome for o in outputs] == ["succeeded"] * total
    # The first two kills landed mid-canary, with some evidence stored and some not.
    assert all(0 < n < total and when is None for n, when in at_kill[:2]), at_kill
    assert at_kill[2] == (total, None), at_kill  # every verdict in, the decision not
    assert at_kill[3][1] is not None, at_kill

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT r.id, r.agent_version, r.rollout_id, count(o.run_id) AS observations,"
            " bool_and(o.success) AS success, min(o.rollout_id) AS observed_rollout"
            " FROM runs r LEFT JOIN live_observations o ON o.run_id = r.id"
            " WHERE r.tenant_id = %s AND r.agent_name = %s AND r.mode = 'normal'"
            " GROUP BY r.id",
            (TENANT, AGENT),
        )
        live = await cur.fetchall()
        cur = await conn.execute(
            "SELECT count(*) AS n FROM live_observations WHERE tenant_id = %s", (TENANT,)
        )
        stored = await cur.fetchone()
        record = await rollouts.get_rollout(conn, TENANT, rollout.id)
        events = await evolutions.list_events(conn, TENANT, cycle.id)
        versions = await agents.list_versions(conn, TENANT, AGENT)
        latest = await agents.get_version(conn, TENANT, AGENT)

    # No evidence lost, none counted twice: one observation per finished live run, and
    # the controller counted each of them once.
    assert {r["id"] for r in live} == {run_id for run_id, _ in handles}
    assert [r["observations"] for r in live] == [1] * total
    assert stored is not None and stored["n"] == total
    assert Counter(r["agent_version"] for r in live) == {1: FIRST_STABLE, 2: CANARY_RUNS}
    assert all(r["rollout_id"] == rollout.id == r["observed_rollout"] for r in live)
    assert {(r["agent_version"], r["success"]) for r in live} == {(1, False), (2, True)}
    assert view.observed == total and view.decisions == 1, view
    assert view.canary is None

    # Decided once: promoted on all of the canary's runs, at the moment the last kill saw.
    assert record.status == "promoted", record
    assert record.decided_at == at_kill[3][1]
    assert record.evidence["test"] == "sprt" and record.evidence["samples"] == CANARY_RUNS
    assert record.evidence["successes"] == CANARY_RUNS
    # The baseline is the stable version's runs during the canary, each counted once.
    assert record.evidence["baseline"] == round(1 / (FIRST_STABLE + 2), 4), record.evidence
    assert "not worse than the stable version" in (record.reason or "")
    rollout_events = [e.type for e in events if e.type.startswith("rollout.")]
    assert rollout_events == ["rollout.promoted"]
    # The canary was released once: no duplicate version, and it is the live one.
    assert [(v.version, v.status) for v in versions] == [(2, "released"), (1, "released")]
    assert latest.version == candidate.version

    # The controller's history has one decide_rollout, scheduled and completed once.
    # Its one attempt that counted is the retry after the third kill.
    scheduled: dict[int, str] = {}
    completed: Counter[str] = Counter()
    attempts: dict[str, list[int]] = {}
    history = await controller.fetch_history()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            name = scheduled[started.scheduled_event_id]
            attempts.setdefault(name, []).append(started.attempt)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            completed[scheduled[done.scheduled_event_id]] += 1
    assert Counter(scheduled.values())["decide_rollout"] == 1
    assert completed["decide_rollout"] == 1
    assert attempts["decide_rollout"] == [2], attempts
    assert completed["observe_live_run"] == total
