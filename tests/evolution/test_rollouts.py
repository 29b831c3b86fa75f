"""Evolution in production: canaries decided on live traffic, shadow runs, and automatic
rollback of a live version that degrades (real Temporal, Postgres, workers, the API and
the scripted model)."""

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from temporalio.client import Client

from activities.runs.store import StoreActivities
from activities.tools.framework import ToolContext, ToolDefinition
from api.cli import rollouts as cli_rollouts
from api.cli import runs as cli_runs
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core import temporal as temporal_support
from core.db import Pool
from core.evolution import cases as eval_cases
from core.evolution import rollouts
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec
from core.evolution.payloads import EvolutionSettings
from core.evolution.rollout_payloads import CanaryRef, RolloutSettings
from core.evolution.rollouts import Conn
from core.evolution.sequential import SequentialPolicy
from core.payloads import RunMode
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec, ChildRunInput
from core.runs.rollout import resolve_version
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.api.test_runs import wait_finished
from tests.conftest import make_settings
from tests.evolution.test_workflow import case_ids, responder, system_text, user_text
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import (
    RecordedRequest,
    ScriptedModelServer,
    Step,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers

TENANT = "rolling"
MODEL = "openai/scripted-model"
MARK = "You are the new version."
OBJECTIVE = "What is 6 times 7?"


@pytest.fixture(scope="module", autouse=True)
async def key(pool: Pool) -> str:
    return (await tenant_keys(pool, TENANT, role="member"))[TENANT]


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(database_url, temporal.address, model_server.base_url, tmp_path / "data")


@pytest.fixture
async def client(settings: Settings) -> Client:
    return await temporal_support.connect(settings)


def spec(instructions: str, **overrides: Any) -> AgentSpec:
    return AgentSpec.model_validate(
        {"instructions": instructions, "model": MODEL, "tools": [], **overrides}
    )


async def new_agent(pool: Pool, prefix: str, **overrides: Any) -> str:
    """An agent with a case that checks live answers to OBJECTIVE for "42"."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    async with pool.connection() as conn:
        await agents.create_version(conn, TENANT, name, spec("You answer questions.", **overrides))
        await eval_cases.add_case(
            conn, TENANT, name,
            EvalCaseSpec(objective=OBJECTIVE, checks=[{"kind": "contains", "value": "42"}]),  # type: ignore[list-item]
        )  # fmt: skip
    return name


def policy(**overrides: Any) -> RolloutSettings:
    """Small samples, so a test decides within a few dozen runs."""
    base: dict[str, Any] = {
        "canary_share": 0.5,
        "online_sample_rate": 1.0,
        "baseline_runs": 4,
        "canary_test": SequentialPolicy(min_samples=4, delta=0.3),
        "watch": False,
    }
    return RolloutSettings.model_validate({**base, **overrides})


async def add_canary(
    conn: Conn, name: str, rules: RolloutSettings, candidate: AgentSpec | None = None
) -> str:
    """A cycle's candidate v2 (by default its instructions are MARK) as the agent's canary."""
    await rollouts.put_policy(conn, TENANT, name, rules)
    cycle = await evolutions.create_evolution(
        conn, tenant_id=TENANT, agent_name=name, incumbent_version=1,
        settings=EvolutionSettings(),
    )  # fmt: skip
    version = await agents.add_candidate(
        conn, TENANT, name, candidate or spec(MARK), parent=1, evolution_id=cycle.id,
        rationale="test",
    )  # fmt: skip
    record = await rollouts.start_canary(
        conn, TENANT, name, stable=1, canary=version.version, evolution_id=cycle.id,
        settings=rules,
    )  # fmt: skip
    return record.id


async def start_canary(
    pool: Pool,
    client: Client,
    settings: Settings,
    name: str,
    rules: RolloutSettings,
    candidate: AgentSpec | None = None,
) -> str:
    """`add_canary`, and the controller told; the canary's id."""
    async with pool.connection() as conn:
        rollout_id = await add_canary(conn, name, rules, candidate)
    await rollouts.signal_controller(
        client, settings, TENANT, name, "canary_started", CanaryRef(rollout_id=rollout_id)
    )
    return rollout_id


async def replays(client: Client, name: str, history: str) -> None:
    """The agent's controller replays (and its history is recorded when asked)."""
    handle = client.get_workflow_handle(rollouts.controller_id(TENANT, name))
    await assert_replays(handle)
    record_history(history, await handle.fetch_history())


def answers(new: str, old: str) -> Callable[[RecordedRequest], Step]:
    """The new version (MARK in its instructions) answers `new`, the stable one `old`."""

    def respond(request: RecordedRequest) -> Step:
        return reply(new if MARK in system_text(request) else old)

    return respond


async def live_runs(
    http: httpx.AsyncClient, name: str, users: range, objective: str = OBJECTIVE
) -> list[dict[str, Any]]:
    """One finished run per user, four at a time."""
    gate = asyncio.Semaphore(4)

    async def one(user: int) -> dict[str, Any]:
        async with gate:
            started = await http.post(
                "/v1/runs", json={"agent": name, "objective": objective, "end_user": f"u{user}"}
            )
            assert started.status_code == 201, started.text
            return await wait_finished(http, started.json()["id"])

    return list(await asyncio.gather(*(one(u) for u in users)))


async def wait_decided(http: httpx.AsyncClient, name: str, timeout: float = 60) -> dict[str, Any]:
    """The agent's rollout once its canary is decided."""
    for _ in range(int(timeout / 0.2)):
        state: dict[str, Any] = (await http.get(f"/v1/agents/{name}/rollout")).json()
        if state["canary"] is None and state["history"]:
            return state
        await asyncio.sleep(0.2)
    raise AssertionError(f"no decision: {state}")


async def test_a_canary_that_scores_worse_is_rolled_back_by_the_sequential_test(
    settings: Settings, key: str, pool: Pool, client: Client, model_server: ScriptedModelServer
) -> None:
    model_server.responder = answers("I do not know.", "The answer is 42.")
    name = await new_agent(pool, "worse")
    rollout_id = await start_canary(pool, client, settings, name, policy())
    async with api_with_workers(settings, pool, key, timeout=60) as http:
        finished = await live_runs(http, name, range(24))
        state = await wait_decided(http, name)
        versions = (await http.get(f"/v1/agents/{name}/versions")).json()
    assert {r["agent_version"] for r in finished} == {1, 2}
    assert all(r["rollout_id"] == rollout_id for r in finished if r["agent_version"] == 2)
    decided = state["history"][0]
    assert decided["id"] == rollout_id and decided["status"] == "rolled_back", decided
    assert "worse than the stable version" in decided["reason"]
    assert decided["evidence"]["test"] == "sprt" and decided["evidence"]["samples"] >= 4
    assert state["live_version"] == 1  # the canary was never released
    candidate = next(v for v in versions if v["version"] == 2)
    assert candidate["status"] == "candidate"
    assert candidate["rollouts"][0]["status"] == "rolled_back"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT version, success, judged_score FROM live_observations WHERE agent_name = %s",
            (name,),
        )
        observed = await cur.fetchall()
    assert {(o["version"], o["success"]) for o in observed} == {(1, True), (2, False)}
    await replays(client, name, "rollout_v1_canary_rolled_back")


async def test_a_cycle_winner_starts_as_a_canary_and_is_promoted_when_it_scores_better(
    settings: Settings, key: str, pool: Pool, client: Client, model_server: ScriptedModelServer
) -> None:
    """The whole path: a cycle promotes, the winner is a canary, live runs promote it."""

    def done_if_told(request: RecordedRequest) -> Step:
        told = "DONE" in system_text(request)
        return reply("The answer is 42 DONE" if told else "The answer is 42")

    model_server.responder = responder(done_if_told)
    name = f"better-{uuid.uuid4().hex[:6]}"
    async with pool.connection() as conn:
        await agents.create_version(conn, TENANT, name, spec("You answer questions about numbers."))
        for split, ids in case_ids({"train": 2, "validation": 6, "holdout": 3}).items():
            for i, case_id in enumerate(ids):
                await eval_cases.add_case(
                    conn, TENANT, name,
                    EvalCaseSpec(objective=f"{split} question {i}: what is 6 times 7?",
                                 checks=[{"kind": "contains", "value": "DONE"}]),  # type: ignore[list-item]
                    case_id=case_id,
                )  # fmt: skip
    async with api_with_workers(settings, pool, key, timeout=60) as http:
        put = await http.put(
            f"/v1/agents/{name}/rollout",
            json=policy().model_dump(mode="json"),
        )
        assert put.status_code == 200, put.text
        started = await http.post(
            f"/v1/agents/{name}/evolutions",
            json={"settings": {"candidates": 1, "kinds": ["instruction_edit"]}},
        )
        assert started.status_code == 201, started.text
        evolution_id = started.json()["id"]
        for _ in range(600):
            cycle = (await http.get(f"/v1/agents/{name}/evolutions/{evolution_id}")).json()
            if cycle["status"] == "succeeded":
                break
            await asyncio.sleep(0.2)
        assert cycle["decision"] == "promote", cycle["reasons"]
        assert cycle["rollout"]["status"] == "active"
        canary = cycle["promoted_version"]
        state = (await http.get(f"/v1/agents/{name}/rollout")).json()
        assert state["live_version"] == 1 and state["canary"]["canary_version"] == canary
        # Live traffic: the train case's objective has checks, so every run is judged.
        await live_runs(http, name, range(24), objective="train question 0: what is 6 times 7?")
        state = await wait_decided(http, name)
        cycle = (await http.get(f"/v1/agents/{name}/evolutions/{evolution_id}")).json()
        agent = (await http.get(f"/v1/agents/{name}")).json()
    assert state["history"][0]["status"] == "promoted", state["history"][0]
    assert "not worse than the stable version" in state["history"][0]["reason"]
    assert cycle["rollout"]["status"] == "promoted"
    assert agent["version"] == canary and agent["status"] == "released"
    assert state["live_version"] == canary
    async with pool.connection() as conn:
        events = await evolutions.list_events(conn, TENANT, evolution_id)
    assert "rollout.promoted" in [e.type for e in events]


async def test_assignment_is_sticky_per_end_user(pool: Pool) -> None:
    name = await new_agent(pool, "sticky")
    async with pool.connection() as conn:
        await add_canary(conn, name, policy())
        picks: dict[str, set[int]] = {}
        for user in range(200):
            for _ in range(3):
                version, rollout_id = await resolve_version(conn, TENANT, name, end_user=f"u{user}")
                assert rollout_id is not None
                picks.setdefault(f"u{user}", set()).add(version.version)
        keyed = {
            (await resolve_version(conn, TENANT, name, idempotency_key="same"))[0].version
            for _ in range(5)
        }
    assert all(len(versions) == 1 for versions in picks.values())  # nobody flips
    on_canary = sum(versions == {2} for versions in picks.values())
    assert 70 <= on_canary <= 130  # about half of 200 users
    assert len(keyed) == 1


TOOL_CALLS: list[str] = []


async def _order(arguments: dict[str, Any], context: ToolContext) -> str:
    del context
    TOOL_CALLS.append(str(arguments["item"]))
    return "ordered"


ORDER = ToolDefinition(
    name="place_order",
    description="Place an order (it really happens).",
    parameters={"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]},
    side_effects=True,
    handler=_order,
)


async def test_shadow_runs_never_execute_side_effects(
    settings: Settings, key: str, pool: Pool, client: Client, model_server: ScriptedModelServer
) -> None:
    """Every live run is re-run on the canary in evaluation mode; only live ones order."""

    def respond(request: RecordedRequest) -> Step:
        if any(m["role"] == "tool" for m in request.messages):
            return reply("Ordered. The answer is 42.")
        item = user_text(request)[-12:]
        return tool_calls(tool_call("place_order", {"item": item}))

    model_server.responder = respond
    name = await new_agent(pool, "shadow", tools=["place_order"])
    TOOL_CALLS.clear()
    rollout_id = await start_canary(
        pool, client, settings, name, policy(canary_share=0.0, shadow_share=1.0),
        spec(MARK, tools=["place_order"]),
    )  # fmt: skip
    async with api_with_workers(settings, pool, key, timeout=60, extra_tools=[ORDER]) as http:
        finished = await live_runs(http, name, range(3))
        for _ in range(300):
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT * FROM shadow_pairs WHERE rollout_id = %s", (rollout_id,)
                )
                pairs = await cur.fetchall()
            if len(pairs) == 3:
                break
            await asyncio.sleep(0.2)
    assert all(r["agent_version"] == 1 for r in finished)  # no live run on the canary
    assert len(TOOL_CALLS) == 3  # the live runs ordered; the shadow runs did not
    assert {p["live_run_id"] for p in pairs} == {r["id"] for r in finished}
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT r.mode, e.data FROM runs r JOIN run_events e ON e.run_id = r.id"
            " WHERE r.id = ANY(%s) AND e.type = 'tool.result'",
            ([p["shadow_run_id"] for p in pairs],),
        )
        shadow_results = await cur.fetchall()
    assert shadow_results and all(row["mode"] == "evaluation" for row in shadow_results)
    assert all("denied" in row["data"]["result"] for row in shadow_results), shadow_results
    await replays(client, name, "rollout_v1_shadow")


async def test_a_live_version_whose_success_drops_is_rolled_back_and_diagnosed(
    settings: Settings, key: str, pool: Pool, client: Client, model_server: ScriptedModelServer
) -> None:
    broken = {"now": False}

    def respond(request: RecordedRequest) -> Step:
        if broken["now"] and MARK in system_text(request):
            return tool_calls(
                tool_call("calculator", {"expression": "6*7"})
            )  # until its step limit
        return reply("The answer is 42.")

    model_server.responder = respond
    name = await new_agent(pool, "drop")
    async with pool.connection() as conn:
        v2, _ = await agents.create_version(
            conn, TENANT, name, spec(MARK, tools=["calculator"], limits={"max_steps": 2})
        )
    rules = policy(
        online_sample_rate=0.0, watch=True, baseline_runs=5,
        watch_test=SequentialPolicy(min_samples=5, delta=0.3, at_limit="keep"),
    )  # fmt: skip
    async with api_with_workers(settings, pool, key, timeout=60) as http:
        put = await http.put(f"/v1/agents/{name}/rollout", json=rules.model_dump(mode="json"))
        assert put.status_code == 200, put.text
        healthy = await live_runs(http, name, range(5))
        assert {r["outcome"] for r in healthy} == {"succeeded"}
        broken["now"] = True
        for _ in range(150):
            await live_runs(http, name, range(1))
            agent = (await http.get(f"/v1/agents/{name}")).json()
            if agent["version"] != v2.version:
                break
        state = (await http.get(f"/v1/agents/{name}/rollout")).json()
        versions = (await http.get(f"/v1/agents/{name}/versions")).json()
    restored = versions[0]
    assert restored["cause"] == "auto_rollback" and restored["parent_version"] == v2.version
    assert restored["instructions"] == "You answer questions."  # v1's spec again
    assert "automatic rollback of v2" in restored["rationale"]
    degraded = next(v for v in versions if v["version"] == v2.version)
    assert degraded["rollouts"][0]["kind"] == "degradation"
    record = state["history"][0]
    assert record["kind"] == "degradation" and record["status"] == "rolled_back"
    assert record["stable_version"] == 1 and record["canary_version"] == v2.version
    diagnostic = record["diagnostic_evolution_id"]
    assert diagnostic is not None
    async with pool.connection() as conn:
        cycle = await evolutions.get_evolution(conn, TENANT, diagnostic)
    assert cycle.trigger == "degradation"
    assert cycle.evidence["degraded_version"] == v2.version
    assert len(cycle.evidence["degraded_runs"]) >= 3
    await replays(client, name, "rollout_v1_degradation")


async def test_rollout_policy_errors(settings: Settings, key: str, pool: Pool) -> None:
    name = await new_agent(pool, "errs")
    async with api_with_workers(settings, pool, key) as http:
        missing = await http.put("/v1/agents/nobody/rollout", json={})
        bad = await http.put(f"/v1/agents/{name}/rollout", json={"canary_share": 2})
        typo = await http.put(f"/v1/agents/{name}/rollout", json={"canary_shar": 0.2})
        gone = await http.delete(f"/v1/agents/{name}/rollout")
        state = (await http.get(f"/v1/agents/{name}/rollout")).json()
    assert_error(missing, 404, "not_found")
    assert_error(bad, 422, "invalid_request")
    assert_error(typo, 422, "invalid_request")
    assert_error(gone, 404, "not_found")
    assert state["settings"] is None and state["canary"] is None and state["live_version"] == 1


async def test_the_cli_sets_shows_and_removes_the_rollout_policy(
    settings: Settings, key: str, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await new_agent(pool, "cli")
    async with pool.connection() as conn:
        await add_canary(conn, name, policy())
    app = create_app(settings)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            api_client = ColonyClient(make_settings(COLONY_API_KEY=key))
            http.headers["Authorization"] = f"Bearer {key}"
            api_client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            for module in (cli_rollouts, cli_runs):
                monkeypatch.setattr(module, "api_client", lambda: api_client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})

    async def colony(*args: str) -> str:
        result = await asyncio.to_thread(run, *args)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    shown = await colony("rollout", name)
    assert f"{name}: live version 1" in shown and "canary: v2 on 50% beside v1" in shown
    changed = await colony("rollout", name, "--canary-share", "0.2", "--no-watch")
    assert "policy: canary 20% of new runs" in changed and "watch off" in changed
    async with pool.connection() as conn:
        stored = await rollouts.get_policy(conn, TENANT, name)
    assert stored is not None and stored.canary_share == 0.2
    assert stored.canary_test.min_samples == 4  # what was not given is kept
    history = await colony("agents", "history", name)
    assert "canaries and rollbacks" in history and "│ canary │ v2 beside v1 │ active │" in history
    off = await colony("rollout", name, "--off")
    assert "no rollout policy" in off


async def test_agents_called_as_tools_go_through_the_resolver(pool: Pool) -> None:
    """A delegated run of an agent with a canary is assigned like an API run (normal mode)."""
    name = await new_agent(pool, "callee")
    caller = await new_agent(pool, "caller")
    async with pool.connection() as conn:
        rollout_id = await add_canary(conn, name, policy(canary_share=1.0))
        parent, _, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name=caller, agent_version=1, objective="delegate",
            end_user="alice",
        )  # fmt: skip
    store = StoreActivities(pool)

    async def child(call_id: str, mode: RunMode) -> runs.RunRecord:
        out = await store.create_child_run(
            ChildRunInput(
                tenant_id=TENANT, parent_run_id=parent.id, call_id=call_id, agent_name=name,
                arguments='{"task": "What is 6 times 7?"}', mode=mode,
            )
        )  # fmt: skip
        async with pool.connection() as conn:
            return await runs.get_run(conn, TENANT, out.run_id)

    live = await child("c1", "normal")
    assert (live.agent_version, live.rollout_id, live.end_user) == (2, rollout_id, "alice")
    evaluated = await child("c2", "evaluation")
    assert (evaluated.agent_version, evaluated.rollout_id) == (1, None)
