"""Request rates and active runs and swarms per tenant: 429 with Retry-After, held in Postgres.

Also the tenant's limits (`/v1/tenant/limits`) and `colony usage`.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from api.cli import usage as cli_usage
from api.cli.main import cli
from api.client import ColonyClient
from api.limits import admit_start
from api.main import create_app
from core import limits
from core.db import Pool
from core.errors import TooManyRequests
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.conftest import make_settings
from tests.support.api import ClientFor, in_process_api, stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    # Per key: 3 at once, then one a second; per tenant: 5 at once, then one a second.
    return stack_settings(
        database_url, temporal.address, model_server.base_url, tmp_path / "data",
        COLONY_KEY_RATE_LIMIT_RPS="1", COLONY_KEY_RATE_LIMIT_BURST="3",
        COLONY_RATE_LIMIT_RPS="1", COLONY_RATE_LIMIT_BURST="5",
    )  # fmt: skip


@pytest.fixture
async def client_for(settings: Settings) -> AsyncIterator[ClientFor]:
    async with in_process_api(settings) as factory:
        yield factory


def _tenant() -> str:
    return "rl-" + uuid.uuid4().hex[:10]


def assert_limited(response: httpx.Response, type_: str = "rate_limited") -> dict[str, object]:
    error = assert_error(response, 429, type_)
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return error


async def test_a_burst_over_the_key_limit_is_429_with_retry_after(
    client_for: ClientFor, pool: Pool
) -> None:
    tenant = _tenant()
    key = (await tenant_keys(pool, tenant))[tenant]
    async with client_for(key) as http:
        answers = [await http.get("/v1/whoami") for _ in range(4)]
        health = [await http.get("/healthz") for _ in range(6)]
        metrics = [await http.get("/metrics") for _ in range(6)]
    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    error = assert_limited(answers[3])
    assert error["details"] == {"limit": "key", "requests_per_second": 1.0, "burst": 3}
    # The health check and the metrics stay open however often they are polled.
    assert {r.status_code for r in health} <= {200, 503}
    assert {r.status_code for r in metrics} == {200}


async def test_two_api_replicas_share_the_buckets(settings: Settings, pool: Pool) -> None:
    tenant = _tenant()
    key = (await tenant_keys(pool, tenant))[tenant]
    async with (
        in_process_api(settings) as first,
        in_process_api(settings) as second,
        first(key) as a,
        second(key) as b,
    ):
        answers = [await (a if i % 2 else b).get("/v1/whoami") for i in range(4)]
    # Three requests over both replicas together, not three each.
    assert [r.status_code for r in answers] == [200, 200, 200, 429]


async def test_the_tenant_limit_holds_across_its_keys(client_for: ClientFor, pool: Pool) -> None:
    tenant, other = _tenant(), _tenant()
    keys = await tenant_keys(pool, tenant)
    second = (await tenant_keys(pool, tenant))[tenant]
    stranger = (await tenant_keys(pool, other))[other]
    async with client_for(keys[tenant]) as a, client_for(second) as b, client_for(stranger) as c:
        answers = [await a.get("/v1/whoami") for _ in range(3)]
        answers += [await b.get("/v1/whoami") for _ in range(3)]
        elsewhere = await c.get("/v1/whoami")
    # Neither key passed its own limit of 3; together they passed the tenant's 5.
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    assert assert_limited(answers[5])["details"] == {
        "limit": "tenant", "requests_per_second": 1.0, "burst": 5,
    }  # fmt: skip
    assert elsewhere.status_code == 200  # another tenant has buckets of its own


async def test_admins_override_the_limits_of_their_tenant(
    client_for: ClientFor, pool: Pool
) -> None:
    tenant = _tenant()
    admin = (await tenant_keys(pool, tenant))[tenant]
    member = (await tenant_keys(pool, tenant, role="member"))[tenant]
    async with client_for(admin) as http, client_for(member) as other:
        before = (await http.get("/v1/tenant/limits")).json()
        refused = await other.put("/v1/tenant/limits", json={"key_burst": 50})
        put = await http.put(
            "/v1/tenant/limits",
            json={"key_requests_per_second": 100, "key_burst": 50, "daily_usd": 2.5},
        )
        bogus = await http.put("/v1/tenant/limits", json={"burst": 0})
    assert before["limits"]["key_burst"] == 3 and before["overrides"]["key_burst"] is None
    assert before["limits"]["daily_usd"] is None
    assert_error(refused, 403, "forbidden")
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["limits"]["key_burst"] == 50 and body["limits"]["daily_usd"] == 2.5
    assert body["limits"]["burst"] == 5  # not overridden: the default
    assert body["overrides"]["key_burst"] == 50 and body["overrides"]["burst"] is None
    assert_error(bogus, 422, "invalid_request")


async def test_active_runs_and_swarms_per_tenant(client_for: ClientFor, pool: Pool) -> None:
    # No workers: what is started stays queued, so it stays active.
    tenant = _tenant()
    key = (await tenant_keys(pool, tenant))[tenant]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenant_limits (tenant_id, max_active_runs, max_active_swarms,"
            " requests_per_second, key_requests_per_second) VALUES (%s, 1, 1, 1000, 1000)",
            (tenant,),
        )
    async with client_for(key) as http:
        first = await http.post(
            "/v1/runs", json={"objective": "one"}, headers={"Idempotency-Key": "a"}
        )
        second = await http.post("/v1/runs", json={"objective": "two"})
        replay = await http.post(
            "/v1/runs", json={"objective": "one"}, headers={"Idempotency-Key": "a"}
        )
        swarm = await http.post("/v1/swarms", json={"objective": "s1"})
        another = await http.post("/v1/swarms", json={"objective": "s2"})
    assert first.status_code == 201, first.text
    error = assert_limited(second, "concurrency_limited")
    assert error["details"] == {"kind": "runs", "active": 1, "limit": 1}
    # Replaying the idempotency key of the active run returns it: it starts nothing new.
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert swarm.status_code == 201, swarm.text
    assert assert_limited(another, "concurrency_limited")["details"]["kind"] == "swarms"


async def test_starts_at_the_same_instant_cannot_pass_the_active_limit(
    client_for: ClientFor, pool: Pool
) -> None:
    tenant = _tenant()
    key = (await tenant_keys(pool, tenant))[tenant]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenant_limits (tenant_id, max_active_runs, max_active_swarms,"
            " requests_per_second, key_requests_per_second) VALUES (%s, 2, 1, 1000, 1000)",
            (tenant,),
        )
    async with client_for(key) as http:
        started = await asyncio.gather(
            *(http.post("/v1/runs", json={"objective": f"run {i}"}) for i in range(8)),
            *(http.post("/v1/swarms", json={"objective": f"swarm {i}"}) for i in range(4)),
        )
    runs_, swarms_ = started[:8], started[8:]
    assert sorted(r.status_code for r in runs_) == [201] * 2 + [429] * 6, [r.text for r in runs_]
    assert sorted(r.status_code for r in swarms_) == [201] + [429] * 3
    async with pool.connection() as conn:
        assert await limits.count_active(conn, tenant, "runs") == 2


async def test_a_start_waits_for_the_one_before_it_to_commit(
    client_for: ClientFor, pool: Pool, settings: Settings
) -> None:
    tenant = _tenant()
    key = (await tenant_keys(pool, tenant))[tenant]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenant_limits (tenant_id, max_active_runs) VALUES (%s, 2)", (tenant,)
        )
    async with client_for(key) as http:
        first = (await http.post("/v1/runs", json={"objective": "one"})).json()["id"]
    copied = asyncio.Event()

    async def start_slowly() -> None:  # holds its place, inserts, commits half a second later
        async with pool.connection() as conn:
            await admit_start(conn, settings, tenant, "runs", None)
            await conn.execute(
                "INSERT INTO runs SELECT (jsonb_populate_record(NULL::runs,"
                " to_jsonb(r) || jsonb_build_object('id', r.id || '-copy',"
                " 'workflow_id', r.workflow_id || '-copy'))).*"
                " FROM runs r WHERE r.id = %s",
                (first,),
            )
            copied.set()
            await asyncio.sleep(0.5)

    async def start_now() -> None:
        await copied.wait()
        async with pool.connection() as conn:
            await admit_start(conn, settings, tenant, "runs", None)

    slow = asyncio.create_task(start_slowly())
    try:
        with pytest.raises(TooManyRequests, match="2 active runs"):
            await asyncio.wait_for(start_now(), 30)  # counted after the slow start committed
    finally:
        await slow


async def test_colony_usage(
    settings: Settings, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = _tenant()
    key = (await tenant_keys(pool, tenant))[tenant]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenant_limits (tenant_id, daily_usd) VALUES (%s, 1.5)", (tenant,)
        )
    app = create_app(settings)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            client = ColonyClient(make_settings(COLONY_API_KEY=key))
            http.headers["Authorization"] = f"Bearer {key}"
            client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_usage, "api_client", lambda: client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})

    shown = await asyncio.to_thread(run, "usage")
    assert shown.exit_code == 0, shown.output
    assert "today (UTC): $0.0000 spent (cap $1.5000, $1.5000 left)" in shown.output
    assert "this month: $0.0000 spent (no cap)" in shown.output
    assert "by agent since" in shown.output
    raw = await asyncio.to_thread(run, "usage", "--json", "--since", "2026-01-01T00:00:00Z")
    assert raw.exit_code == 0, raw.output
    body = json.loads(raw.output)
    assert body["today"]["cap_usd"] == 1.5 and body["total"]["calls"] == 0
    assert body["since"].startswith("2026-01-01")


async def test_usage_sums_every_ledger_in_its_windows(client_for: ClientFor, pool: Pool) -> None:
    # No workers: the run and swarm stay queued; their ledger rows are written here.
    tenant = _tenant()
    key = (await tenant_keys(pool, tenant))[tenant]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenant_limits (tenant_id, burst, key_burst) VALUES (%s, 100, 100)",
            (tenant,),
        )
    async with client_for(key) as http:
        run = (await http.post("/v1/runs", json={"objective": "x"})).json()
        swarm = (await http.post("/v1/swarms", json={"objective": "y"})).json()
    async with pool.connection() as conn:
        for step, cost, age in ((1, "0.25", "0 days"), (2, None, "0 days"), (3, "7", "40 days")):
            await conn.execute(
                "INSERT INTO llm_calls (tenant_id, run_id, step, model, provider, prompt_tokens,"
                " completion_tokens, cost_usd, latency_ms, created_at)"
                " VALUES (%s, %s, %s, 'openai/a', 'openai', 10, 5, %s, 1, now() - %s::interval)",
                (tenant, run["id"], step, cost, age),
            )
        await conn.execute(
            "INSERT INTO swarm_llm_calls (tenant_id, swarm_id, key, purpose, model, provider,"
            " prompt_tokens, completion_tokens, cost_usd, latency_ms, answer)"
            " VALUES (%s, %s, 'plan-1-1', 'plan', 'openai/b', 'openai', 20, 2, 0.5, 1, '')",
            (tenant, swarm["id"]),
        )
        await limits.record_evolution_call(
            conn, tenant_id=tenant, agent_name="evolved", evolution_id=None, model="openai/a",
            prompt_tokens=1, completion_tokens=1, cost_usd=0.125,
        )  # fmt: skip
    async with client_for(key) as http:
        usage = (await http.get("/v1/usage")).json()
        later = (await http.get("/v1/usage", params={"since": "2999-01-01T00:00:00"})).json()
    # Today and this month: the three ledgers; the 40-day-old call is in neither window.
    assert usage["today"]["spent_usd"] == pytest.approx(0.875)
    assert usage["month"]["spent_usd"] == pytest.approx(0.875)
    assert usage["today"]["cap_usd"] is None and usage["today"]["remaining_usd"] is None
    assert usage["total"] == {
        "name": "total", "calls": 4, "prompt_tokens": 41, "completion_tokens": 13,
        "cost_usd": pytest.approx(0.875), "unpriced_calls": 1,
    }  # fmt: skip
    assert [(g["name"], g["calls"]) for g in usage["by_source"]] == [
        ("evolution", 1), ("runs", 2), ("swarms", 1),
    ]  # fmt: skip
    assert [g["name"] for g in usage["by_agent"]] == ["assistant", "evolved", "queen"]
    assert [(g["name"], g["cost_usd"]) for g in usage["by_model"]] == [
        ("openai/a", pytest.approx(0.375)), ("openai/b", pytest.approx(0.5)),
    ]  # fmt: skip
    assert len(usage["by_day"]) == 1
    assert later["total"]["calls"] == 0 and later["by_agent"] == []
    assert later["today"]["spent_usd"] == pytest.approx(0.875)  # the caps' windows stay
