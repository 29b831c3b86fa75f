"""Tenant spend caps: runs, swarm queens and evolution's calls stop at them; /v1/usage reads the ledgers.

Real API, workers, Temporal and Postgres; the scripted model server answers under a
priced model id (openai/gpt-4o-mini), so every call costs real (LiteLLM-priced) money.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.evolution import grading
from activities.providers.client import ModelClient
from core.db import Pool
from core.errors import ErrorType
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers

PRICED = "openai/gpt-4o-mini"


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(database_url, temporal.address, model_server.base_url, tmp_path / "d")


@pytest.fixture
async def tenant(pool: Pool) -> tuple[str, str]:
    name = "cap-" + uuid.uuid4().hex[:10]
    return name, (await tenant_keys(pool, name))[name]


@pytest.fixture
async def api(
    settings: Settings, pool: Pool, tenant: tuple[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_with_workers(settings, pool, tenant[1]) as http:
        yield http


async def _finished(api: httpx.AsyncClient, path: str, timeout: float = 60) -> dict[str, Any]:
    for _ in range(int(timeout / 0.2)):
        body: dict[str, Any] = (await api.get(path)).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not finish")


async def _ledger_today(pool: Pool, tenant: str) -> float:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(cost_usd), 0)::float8 AS s FROM llm_calls WHERE tenant_id = %s"
            " AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
            (tenant,),
        )
        row = await cur.fetchone()
    assert row is not None
    return float(row["s"])


async def test_a_run_stops_at_the_daily_cap_and_usage_matches_the_ledger(
    api: httpx.AsyncClient, pool: Pool, tenant: tuple[str, str], model_server: ScriptedModelServer
) -> None:
    name, _ = tenant
    model_server.default = tool_calls(tool_call("calculator", {"expression": "1+1"}))
    agent = {
        "name": "pricey",
        "instructions": "Calculate.",
        "model": PRICED,
        "tools": ["calculator"],
    }
    assert (await api.post("/v1/agents", json=agent)).status_code == 201
    cap = (await api.put("/v1/tenant/limits", json={"daily_usd": 0.0002})).json()
    assert cap["limits"]["daily_usd"] == 0.0002

    first = {"agent": "pricey", "objective": "add"}
    run = (await api.post("/v1/runs", json=first, headers={"Idempotency-Key": "k1"})).json()
    done = await _finished(api, f"/v1/runs/{run['id']}")

    assert (done["status"], done["outcome"]) == ("failed", "limit_reached")
    assert "daily spend cap of $0.000200" in done["reason"], done["reason"]
    # It stopped on the cap after some priced calls, long before max_steps.
    assert 1 <= len(model_server.chat_requests()) < 10
    spent = await _ledger_today(pool, name)
    assert spent > 0

    usage = (await api.get("/v1/usage")).json()
    assert usage["today"]["cap_usd"] == 0.0002 and usage["month"]["cap_usd"] is None
    assert usage["today"]["spent_usd"] == pytest.approx(spent)
    assert usage["month"]["spent_usd"] == pytest.approx(spent)
    assert usage["today"]["remaining_usd"] == pytest.approx(max(0.0, 0.0002 - spent))
    assert usage["total"]["cost_usd"] == pytest.approx(spent)
    assert usage["total"]["calls"] == len(model_server.chat_requests())
    assert [(g["name"], g["cost_usd"]) for g in usage["by_agent"]] == [
        ("pricey", pytest.approx(spent))
    ]
    assert [g["name"] for g in usage["by_source"]] == ["runs"]
    assert [g["name"] for g in usage["by_model"]] == [PRICED]
    assert len(usage["by_day"]) == 1 and usage["by_day"][0]["prompt_tokens"] > 0

    # Once the cap is reached, a new run is refused up front until the day is over.
    await api.put("/v1/tenant/limits", json={"daily_usd": spent / 2})
    refused = await api.post("/v1/runs", json={"agent": "pricey", "objective": "again"})
    error = assert_error(refused, 429, "spend_cap_reached")
    assert "daily spend cap" in str(error["message"])
    assert 1 <= int(refused.headers["Retry-After"]) <= 86400
    # A replay of the run that already exists is no new spend: it is answered.
    again = await api.post("/v1/runs", json=first, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == run["id"]


async def test_a_swarm_queen_respects_the_cap(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    queen = {"name": "pricey-queen", "instructions": "Plan.", "model": PRICED}
    assert (await api.post("/v1/agents", json=queen)).status_code == 201
    # Under the cap when it starts; the plan's prompt alone would cross it.
    await api.put("/v1/tenant/limits", json={"monthly_usd": 0.000001})
    created = await api.post("/v1/swarms", json={"objective": "plan it", "queen": "pricey-queen"})
    assert created.status_code == 201, created.text
    done = await _finished(api, f"/v1/swarms/{created.json()['id']}")
    assert done["outcome"] == "limit_reached", done
    assert "monthly spend cap of $0.000001" in done["reason"]
    assert model_server.chat_requests() == []  # the call was never made


async def test_evolution_calls_are_capped_and_ledgered(
    api: httpx.AsyncClient,
    settings: Settings,
    pool: Pool,
    tenant: tuple[str, str],
    model_server: ScriptedModelServer,
) -> None:
    # grading.ask carries every model call of evolution of its own (judge, diagnoses,
    # proposals); the same helper refuses over the cap and ledgers what it spends.
    name, _ = tenant
    model_server.default = reply('{"score": 5, "reason": "fine"}')
    spender = grading.Spender(pool, settings, name, "graded", "evo-1")
    async with ModelClient(settings) as models:
        answer, cost = await grading.ask(
            models, [PRICED], "Grade.", "An answer.", grading.JUDGE_SCHEMA, spender=spender
        )
        assert answer["score"] == 5 and cost > 0
        await api.put("/v1/tenant/limits", json={"daily_usd": cost / 2})
        with pytest.raises(ApplicationError) as refused:
            await grading.ask(
                models, [PRICED], "Grade.", "Again.", grading.JUDGE_SCHEMA, spender=spender
            )
    assert refused.value.type == ErrorType.BUDGET_EXCEEDED and refused.value.non_retryable
    assert "daily spend cap" in refused.value.message
    assert len(model_server.chat_requests()) == 1  # the refused call was never made
    usage = (await api.get("/v1/usage")).json()
    assert usage["today"]["spent_usd"] == pytest.approx(cost)
    assert [(g["name"], g["calls"]) for g in usage["by_source"]] == [("evolution", 1)]
    assert [g["name"] for g in usage["by_agent"]] == ["graded"]
