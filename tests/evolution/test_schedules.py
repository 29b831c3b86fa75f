"""Evolution schedules and triggers: a Temporal Schedule per agent, and cycles that start
by themselves on repeated failure or new feedback (real Temporal, Postgres, workers)."""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from api.cli import evolution as cli_evolution
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core import search_attributes
from core import temporal as temporal_support
from core.db import Pool
from core.evolution import cases as eval_cases
from core.evolution import schedules, triggers
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec
from core.evolution.payloads import EvolutionInput, EvolutionOutput, EvolutionTriggers
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec, RunProgress
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.conftest import make_settings
from tests.evolution.test_workflow import case_ids, done_if_told, responder, user_text
from tests.support.api import in_process_api, stack_settings, tenant_keys
from tests.support.model_server import RecordedRequest, ScriptedModelServer, Step, fault
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers

TENANT = "evolving"
MODEL = "openai/scripted-model"
Api = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="module", autouse=True)
async def key(pool: Pool) -> str:
    """The tenant, and an API key of it."""
    return (await tenant_keys(pool, TENANT, role="member"))[TENANT]


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(database_url, temporal.address, model_server.base_url, tmp_path / "data")


@pytest.fixture
async def client(settings: Settings) -> Client:
    return await temporal_support.connect(settings)


@pytest.fixture
async def api(settings: Settings, key: str) -> AsyncIterator[Api]:
    """The API app in process, without workers (nothing a schedule starts runs)."""
    async with in_process_api(settings) as client_for:
        yield lambda: client_for(key)


async def new_agent(pool: Pool, prefix: str = "sched") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    async with pool.connection() as conn:
        await agents.create_version(
            conn, TENANT, name,
            AgentSpec(instructions="You answer questions about numbers.", model=MODEL, tools=[]),
        )  # fmt: skip
    return name


# -- pure checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "every"),
    [("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)), ("1d", timedelta(days=1)),
     ("1h30m", timedelta(minutes=90)), (" 2D ", timedelta(days=2)), ("60s", timedelta(minutes=1))],
)  # fmt: skip
def test_intervals_parse(text: str, every: timedelta) -> None:
    assert schedules.parse_every(text) == every


@pytest.mark.parametrize("text", ["", "24", "h", "24x", "1h 30m", "-1h", "30s", "0m", "400d"])
def test_bad_intervals_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="interval"):
        schedules.parse_every(text)


@pytest.mark.parametrize(
    "text", ["0 3 * * *", "*/15 * * * *", "0 9-17 * * mon-fri", "0 0 1,15 jan,jul *", "@daily"]
)
def test_cron_expressions_are_checked(text: str) -> None:
    assert schedules.check_cron(text) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [("* * *", "5 fields"), ("0 3 * * * *", "5 fields"), ("61 * * * *", "minute '61'"),
     ("0 24 * * *", "hour '24'"), ("0 0 0 * *", "day of month '0'"), ("0 0 * foo *", "month"),
     ("*/0 * * * *", "step"), ("0 0 * * funday", "day of week")],
)  # fmt: skip
def test_bad_cron_expressions_say_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        schedules.check_cron(text)


def test_ids_are_unambiguous() -> None:
    # A dash in the tenant cannot make two (tenant, agent) pairs share an id.
    assert schedules.agent_key("a-b", "c") != schedules.agent_key("a", "b-c")
    assert schedules.agent_key("local", "calc") == "local-calc"
    assert schedules.agent_key("t/x y", "calc") == "t%2Fx%20y-calc"


# -- the schedule over HTTP -------------------------------------------------------------


async def test_a_schedule_exists_in_temporal_and_can_be_paused_updated_and_deleted(
    api: Api, pool: Pool, client: Client, settings: Settings
) -> None:
    name = await new_agent(pool)
    path = f"/v1/agents/{name}/evolution-schedule"
    schedule_id = f"evolution-schedule-{TENANT}-{name}{settings.task_queue_suffix}"
    async with api() as http:
        assert_error(await http.get(path), 404, "not_found")
        put = await http.put(path, json={"every": "24h", "settings": {"candidates": 1}})
        assert put.status_code == 200, put.text
        body = put.json()
        assert (body["agent"], body["every"], body["cron"], body["paused"]) == (
            name, "24h", None, False
        )  # fmt: skip
        assert body["settings"]["candidates"] == 1 and body["triggers"]["failures"] is None
        assert body["schedule"]["id"] == schedule_id and body["schedule"]["paused"] is False
        assert len(body["schedule"]["next_runs"]) >= 1 and body["schedule"]["recent"] == []

        # In Temporal: EvolutionWorkflow by name, the agent's input, overlap skip, 24 h.
        described = await client.get_schedule_handle(schedule_id).describe()
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "EvolutionWorkflow"
        assert action.task_queue == "colony-orchestration" + settings.task_queue_suffix
        (arg,) = await client.data_converter.decode(action.args, [EvolutionInput])
        assert arg == EvolutionInput(tenant_id=TENANT, agent_name=name, trigger="schedule")
        assert action.typed_search_attributes.get(search_attributes.KIND) == "evolution"
        assert action.typed_search_attributes.get(search_attributes.AGENT) == name
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(hours=24)]
        async with pool.connection() as conn:
            policy = await evolutions.get_policy(conn, TENANT, name)
        assert policy is not None and policy.every == "24h" and policy.settings.candidates == 1

        # Paused, resumed: Temporal follows; the policy keeps its settings.
        paused = await http.put(path, json={"every": "24h", "paused": True})
        assert paused.status_code == 200 and paused.json()["schedule"]["paused"] is True
        assert (await client.get_schedule_handle(schedule_id).describe()).schedule.state.paused
        got = (await http.get(path)).json()
        assert got["paused"] is True and got["schedule"]["paused"] is True
        resumed = await http.put(path, json={"every": "24h", "paused": False})
        assert resumed.json()["schedule"]["paused"] is False
        described = await client.get_schedule_handle(schedule_id).describe()
        assert not described.schedule.state.paused

        # Updated to a cron expression: no interval any more.
        cron = await http.put(path, json={"cron": "0 3 * * *"})
        assert cron.status_code == 200, cron.text
        assert (cron.json()["every"], cron.json()["cron"]) == (None, "0 3 * * *")
        described = await client.get_schedule_handle(schedule_id).describe()
        assert not described.schedule.spec.intervals
        assert described.schedule.spec.calendars or described.schedule.spec.cron_expressions
        assert all(t.hour == 3 and t.minute == 0 for t in described.info.next_action_times)

        # Triggers only: the policy stays, the schedule goes.
        only = await http.put(path, json={"triggers": {"failures": 3}})
        assert only.status_code == 200 and only.json()["schedule"] is None
        assert only.json()["triggers"]["failures"] == 3
        with pytest.raises(RPCError) as missing:
            await client.get_schedule_handle(schedule_id).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND

        # Scheduled again, then deleted: schedule and policy gone; a second delete is 404.
        assert (await http.put(path, json={"every": "1d"})).status_code == 200
        deleted = await http.delete(path)
        assert deleted.status_code == 204
        with pytest.raises(RPCError):
            await client.get_schedule_handle(schedule_id).describe()
        assert_error(await http.get(path), 404, "not_found")
        assert_error(await http.delete(path), 404, "not_found")
        async with pool.connection() as conn:
            assert await evolutions.get_policy(conn, TENANT, name) is None


async def test_bad_schedules_are_422_and_unknown_agents_404(api: Api, pool: Pool) -> None:
    name = await new_agent(pool)
    path = f"/v1/agents/{name}/evolution-schedule"
    async with api() as http:
        for bad, why in [
            ({"every": "24x"}, "not an interval"),
            ({"every": "10s"}, "between 1m and 366d"),
            ({"cron": "61 * * * *"}, "out of range 0-59"),
            ({"cron": "* * *"}, "5 fields"),
            ({"every": "1h", "cron": "0 3 * * *"}, "not both"),
            ({}, "nothing would start a cycle"),
            ({"paused": True}, "nothing would start a cycle"),
            ({"every": "1h", "settings": {"candidates": 9}}, "less than or equal to 8"),
            ({"every": "1h", "triggers": {"failures": 0}}, "greater than or equal to 1"),
            ({"every": "1h", "colour": "red"}, "Extra inputs"),
        ]:
            response = await http.put(path, json=bad)
            error = assert_error(response, 422, "invalid_request")
            assert why in str(error["details"]), (bad, error)
        assert_error(await http.get(path), 404, "not_found")  # nothing was stored
        missing = await http.put("/v1/agents/nobody/evolution-schedule", json={"every": "1h"})
        assert_error(missing, 404, "not_found")
        assert_error(await http.get("/v1/agents/nobody/evolution-schedule"), 404, "not_found")


async def test_the_cli_sets_pauses_shows_and_removes_the_schedule(
    settings: Settings, key: str, pool: Pool, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await new_agent(pool)
    app = create_app(settings)
    schedule_id = schedules.schedule_id(settings, TENANT, name)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            api_client = ColonyClient(make_settings(COLONY_API_KEY=key))
            http.headers["Authorization"] = f"Bearer {key}"
            api_client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_evolution, "api_client", lambda: api_client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})

    async def colony(*args: str) -> Result:
        return await asyncio.to_thread(run, *args)

    async def paused() -> bool:
        return (await client.get_schedule_handle(schedule_id).describe()).schedule.state.paused

    none = await colony("evolve", name, "--pause")
    assert none.exit_code == 2 and "has no evolution schedule" in none.output
    shown = await colony("evolutions", "schedule", name)
    assert shown.exit_code == 1 and "no evolution schedule or triggers" in shown.output

    scheduled = await colony("evolve", name, "--every", "24h", "--candidates", "2")
    assert scheduled.exit_code == 0, scheduled.output
    out = " ".join(scheduled.output.split())
    assert f"evolution schedule of {name} · every 24h · active" in out
    assert "next runs: 20" in out and "cycles: 2 candidates" in out
    assert not await paused()
    async with pool.connection() as conn:
        assert await evolutions.list_evolutions(conn, TENANT, name) == []  # nothing started

    assert (await colony("evolve", name, "--pause")).exit_code == 0
    assert await paused()
    shown = await colony("evolutions", "schedule", name)
    out = " ".join(shown.output.split())
    assert "every 24h · paused" in out and "cycles: 2 candidates" in out  # settings kept
    assert (await colony("evolve", name, "--resume")).exit_code == 0
    assert not await paused()

    cron = await colony("evolve", name, "--cron", "0 3 * * *")
    assert cron.exit_code == 0 and "cron '0 3 * * *' · active" in " ".join(cron.output.split())
    bad = await colony("evolve", name, "--every", "soon")
    assert bad.exit_code == 1 and "not an interval" in bad.output
    both = await colony("evolve", name, "--every", "1h", "--unschedule")
    assert both.exit_code == 2 and "--unschedule goes alone" in both.output

    removed = await colony("evolve", name, "--unschedule")
    assert removed.exit_code == 0 and f"removed the evolution schedule of {name}" in removed.output
    with pytest.raises(RPCError):
        await paused()


# -- cycles that start by themselves (real workers) ---------------------------------------


def failing_live_runs(request: RecordedRequest) -> Step:
    """Live runs fail (a 400 from the model); the cycle's runs and model calls work."""
    if "live:" in user_text(request):
        return fault(400)
    return done_if_told(request)


async def add_cases(pool: Pool, name: str) -> None:
    ids = case_ids({"train": 2, "validation": 6, "holdout": 3})
    async with pool.connection() as conn:
        for split, split_ids in ids.items():
            for i, case_id in enumerate(split_ids):
                await eval_cases.add_case(
                    conn, TENANT, name,
                    EvalCaseSpec(
                        objective=f"{split} question {i}: what is 6 times 7?",
                        checks=[{"kind": "contains", "value": "DONE"}],  # type: ignore[list-item]
                    ),
                    case_id=case_id,
                )  # fmt: skip


async def run_to_end(http: httpx.AsyncClient, client: Client, name: str, n: int) -> dict[str, Any]:
    """A run of the agent, once its workflow has ended (`finish_run` and its hook done)."""
    started = await http.post("/v1/runs", json={"agent": name, "objective": f"live: q{n}"})
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    await asyncio.wait_for(client.get_workflow_handle(runs.workflow_id_for(run_id)).result(), 60)
    body: dict[str, Any] = (await http.get(f"/v1/runs/{run_id}")).json()
    return body


async def cycles_of(pool: Pool, name: str) -> list[evolutions.EvolutionRecord]:
    async with pool.connection() as conn:
        return await evolutions.list_evolutions(conn, TENANT, name)


async def wait_for(
    pool: Pool, name: str, done: Callable[[list[evolutions.EvolutionRecord]], bool]
) -> list[evolutions.EvolutionRecord]:
    for _ in range(600):
        found = await cycles_of(pool, name)
        if done(found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"cycles of {name}: {await cycles_of(pool, name)}")


async def test_repeated_failure_starts_one_cycle(
    settings: Settings, key: str, pool: Pool, client: Client, model_server: ScriptedModelServer
) -> None:
    model_server.responder = responder(failing_live_runs)
    name = await new_agent(pool, "failing")
    await add_cases(pool, name)
    async with api_with_workers(settings, pool, key, timeout=60) as http:
        put = await http.put(
            f"/v1/agents/{name}/evolution-schedule",
            json={
                "triggers": {"failures": 2, "window_hours": 1, "cooldown_hours": 0},
                # A human approves: the cycle waits, so a failure meanwhile finds it running.
                "settings": {"candidates": 1, "kinds": ["instruction_edit"], "approval": "human"},
            },
        )
        assert put.status_code == 200, put.text

        assert (await run_to_end(http, client, name, 1))["outcome"] == "failed"
        assert await cycles_of(pool, name) == []  # one failure is not enough
        assert (await run_to_end(http, client, name, 2))["outcome"] == "failed"
        (cycle,) = await cycles_of(pool, name)  # claimed by the second run's finish_run
        assert cycle.trigger == "failures" and cycle.settings.approval == "human"
        assert cycle.workflow_id.startswith(f"evolution-trigger-{TENANT}-{name}-")
        (cycle,) = await wait_for(pool, name, lambda found: found[0].status == "waiting")

        # Two more failures while the cycle runs (enough, with no cooldown) start no other.
        for n in (3, 4):
            assert (await run_to_end(http, client, name, n))["outcome"] == "failed"
        assert [c.id for c in await cycles_of(pool, name)] == [cycle.id]

        approved = await http.post(
            f"/v1/agents/{name}/evolutions/{cycle.id}/approve", json={"approved": True}
        )
        assert approved.status_code == 200, approved.text
        handle = client.get_workflow_handle(cycle.workflow_id, result_type=EvolutionOutput)
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.decision == "promote", result
        (done,) = await cycles_of(pool, name)
        assert (done.status, done.trigger, done.decision) == ("succeeded", "failures", "promote")
        described = await handle.describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED
        assert described.typed_search_attributes.get(search_attributes.KIND) == "evolution"
        async with pool.connection() as conn:
            policy = await evolutions.get_policy(conn, TENANT, name)
        assert policy is not None and policy.last_triggered_at is not None


async def test_new_feedback_starts_a_cycle(
    settings: Settings, key: str, pool: Pool, client: Client, model_server: ScriptedModelServer
) -> None:
    model_server.responder = responder(done_if_told)
    name = await new_agent(pool, "rated")  # no eval cases: the cycle keeps the incumbent
    async with api_with_workers(settings, pool, key, timeout=60) as http:
        put = await http.put(
            f"/v1/agents/{name}/evolution-schedule",
            json={"triggers": {"feedback": 2, "cooldown_hours": 0}},
        )
        assert put.status_code == 200, put.text
        first, second = [await run_to_end(http, client, name, n) for n in (1, 2)]
        assert first["outcome"] == second["outcome"] == "succeeded"
        assert await cycles_of(pool, name) == []  # successful runs trigger nothing
        rated = await http.post(f"/v1/runs/{first['id']}/feedback", json={"rating": 4})
        assert rated.status_code == 200, rated.text
        assert await cycles_of(pool, name) == []  # one item is not enough
        await http.post(f"/v1/runs/{second['id']}/feedback", json={"rating": 5})
        (cycle,) = await wait_for(pool, name, lambda found: len(found) == 1)
        assert cycle.trigger == "feedback"
        handle = client.get_workflow_handle(cycle.workflow_id, result_type=EvolutionOutput)
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.decision == "keep" and "too little evidence" in result.reasons[0]
        # Feedback counts from the last cycle's start: the same items start nothing more.
        await http.post(f"/v1/runs/{second['id']}/feedback", json={"rating": 3})
        assert len(await cycles_of(pool, name)) == 1


async def test_a_triggered_schedule_runs_a_cycle(
    settings: Settings, key: str, pool: Pool, client: Client, model_server: ScriptedModelServer
) -> None:
    model_server.responder = responder(done_if_told)
    name = await new_agent(pool, "scheduled")
    path = f"/v1/agents/{name}/evolution-schedule"
    async with api_with_workers(settings, pool, key, timeout=60) as http:
        put = await http.put(path, json={"every": "24h", "settings": {"candidates": 2}})
        assert put.status_code == 200, put.text
        await client.get_schedule_handle(put.json()["schedule"]["id"]).trigger()
        (cycle,) = await wait_for(
            pool, name, lambda found: len(found) == 1 and found[0].status == "succeeded"
        )
        assert cycle.trigger == "schedule" and cycle.decision == "keep"
        assert cycle.settings.candidates == 2  # from the policy
        assert cycle.workflow_id.startswith(f"evolution-scheduled-{TENANT}-{name}-")
        shown = (await http.get(path)).json()
        assert [a["workflow_id"] for a in shown["schedule"]["recent"]] == [cycle.workflow_id]
        assert (await http.delete(path)).status_code == 204


# -- the claim, without Temporal -------------------------------------------------------------


async def failed_run(pool: Pool, name: str) -> str:
    async with pool.connection() as conn:
        record, _, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name=name, agent_version=1, objective="live: q"
        )
        await runs.finish(
            conn, record.id, outcome="failed", reason="boom", result=None, progress=RunProgress()
        )
    return record.id


async def test_concurrent_checks_claim_one_cycle_and_the_cooldown_holds(pool: Pool) -> None:
    name = await new_agent(pool, "claimed")
    async with pool.connection() as conn:
        await evolutions.put_policy(
            conn, TENANT,
            evolutions.EvolutionPolicy(
                agent_name=name, triggers=EvolutionTriggers(failures=1, cooldown_hours=1)
            ),
        )  # fmt: skip
        assert await triggers.claim(conn, TENANT, name) is None  # no failure yet
    run_id = await failed_run(pool, name)
    async with pool.connection() as conn:
        assert await triggers.agent_with_failure_trigger(conn, TENANT, run_id) == name

    async def claim() -> triggers.TriggeredCycle | None:
        async with pool.connection() as conn:
            return await triggers.claim(conn, TENANT, name)

    claimed = await asyncio.gather(*(claim() for _ in range(4)))
    # One cycle: the first claim creates it; the others find it queued (to be started).
    assert {c.evolution_id for c in claimed if c is not None} == {
        c.id for c in await cycles_of(pool, name)
    }
    (cycle,) = await cycles_of(pool, name)
    assert cycle.trigger == "failures" and cycle.status == "queued"
    async with pool.connection() as conn:
        await evolutions.finish(
            conn, cycle.id, status="succeeded", decision="keep", promoted_version=None,
            reasons=[], gate=None, cost_usd=0.0,
        )  # fmt: skip
    # Finished, and failures since: the cooldown (1 h since it started) holds the next one.
    await failed_run(pool, name)
    await failed_run(pool, name)
    assert await claim() is None
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE evolutions SET created_at = now() - interval '2 hours' WHERE id = %s",
            (cycle.id,),
        )
        await conn.execute(
            "UPDATE evolution_policies SET last_triggered_at = now() - interval '2 hours'"
            " WHERE tenant_id = %s AND agent_name = %s",
            (TENANT, name),
        )
    again = await claim()
    assert again is not None and again.evolution_id != cycle.id
    # An agent without a failure trigger: the lookup after a failed run finds nothing.
    other = await new_agent(pool, "untriggered")
    async with pool.connection() as conn:
        assert (
            await triggers.agent_with_failure_trigger(conn, TENANT, await failed_run(pool, other))
            is None
        )
