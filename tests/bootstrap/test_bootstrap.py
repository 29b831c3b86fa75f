"""`POST /v1/agents/bootstrap` and the tenant's sharing mode, through real Temporal and workers.

Two tenants hold weather knowledge: `bs-one` the tools, lessons, skills and agents a draft
should use (and a failing tool it must not), `bs-two` look-alikes that must never reach
`bs-one`. The sharing mode is switched on `bs-one` to show what recall, evolution and
bootstrap see in each mode.
"""

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from temporalio.client import Client

from activities.evolution.models import _Evidence, _reflexions
from api.cli import runs as cli_runs
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from api.routes import agents as agents_route
from core import temporal as temporal_support
from core import tenants
from core.db import Pool
from core.evolution.store import EvolutionRecord
from core.memory.payloads import MemoryItem, RecallInput, WriteMemoriesInput
from core.queues import TaskQueue
from core.runs import agents
from core.runs.bootstrap import BootstrapInput
from core.runs.payloads import AGENT_NAME_PATTERN, AgentSpec
from core.settings import Settings
from core.tools import store as tool_store
from tests.conftest import make_settings
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from tests.tools.test_api_tools import assert_error
from workers.registry import Resources
from workflows.agent_bootstrap import AgentBootstrapWorkflow

ONE, TWO = "bs-one", "bs-two"
OBJECTIVE = "Tell users whether it will rain in their city tomorrow"
SHARED_LESSON = (
    "When asked whether it will rain, give the precipitation probability and the hours"
    " rain is expected, not just yes or no."
)
PRIVATE_LESSON = "For rain questions about a city, always name the forecast provider."
SKILL = (
    "Answering a rain question: call weather_forecast with the city, then report the rain"
    " chance and the temperature."
)
OTHER_TENANT_LESSON = "Rain answers must cite the weather station of tenant two (SECRET-B)."


def http_tool(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "http": {"url_template": f"https://api.weather.example/{name}/{{city}}"},
    }


def lesson(key: str, agent: str, content: str, **fields: Any) -> MemoryItem:
    return MemoryItem.model_validate(
        {"key": key, "agent_name": agent, "kind": "reflexion", "content": content, **fields}
    )


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    out = {}
    async with pool.connection() as conn:
        for tenant in (ONE, TWO):
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="admin")
        _, out["member"] = await tenants.create_api_key(conn, ONE, "m", role="member")
    return out


@pytest.fixture(scope="module")
async def stack(
    temporal: TemporalServer,
    database_url: str,
    pool: Pool,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, Client, Resources]]:
    settings = make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        COLONY_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        COLONY_TASK_QUEUE_SUFFIX="-" + uuid.uuid4().hex[:8],
    )
    client = await temporal_support.connect(settings)
    async with running_workers(client, settings, pool, suffix=settings.task_queue_suffix) as res:
        await _seed(settings, pool, res, keys)
        yield settings, client, res


async def _seed(settings: Settings, pool: Pool, res: Resources, keys: dict[str, str]) -> None:
    """Tools (one proven, one failing), agents and memories of both tenants."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for tenant, tools in (
            (ONE, [
                http_tool("weather_forecast", "Current conditions and a 5-day forecast"
                          " (temperature, rain, wind) for a city."),
                http_tool("rain_radar", "Live rain radar and precipitation nowcast for a city."),
            ]),
            (TWO, [http_tool("storm_tracker", "Rain and storm forecast for a city.")]),
        ):  # fmt: skip
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://colony",
                headers={"Authorization": f"Bearer {keys[tenant]}"},
            ) as http:  # fmt: skip
                for tool in tools:
                    created = await http.post("/v1/tools", json=tool)
                    assert created.status_code == 201, created.text
    async with pool.connection() as conn:
        for i in range(10):
            await tool_store.record_tool_call_stats(conn, ONE, "weather_forecast", True, 50)
            await tool_store.record_tool_call_stats(conn, ONE, "rain_radar", i < 2, 80)
            await tool_store.record_tool_call_stats(conn, TWO, "storm_tracker", True, 50)
        for tenant, name, instructions, model in (
            (ONE, "forecaster", "You answer questions about the weather forecast: rain,"
             " temperature and wind for a city.", "openai/forecast-model"),
            (ONE, "poet", "You write short rhyming poems about any topic.", "openai/poem-model"),
            (TWO, "weather-bot-two", "You answer questions about rain and weather forecasts"
             " for a city.", "openai/two-model"),
        ):  # fmt: skip
            await agents.create_version(
                conn, tenant, name, AgentSpec(instructions=instructions, model=model)
            )
    await res.memory.write(
        WriteMemoriesInput(
            tenant_id=ONE,
            items=[
                lesson("l-shared", "forecaster", SHARED_LESSON, scope="shared"),
                lesson("l-private", "forecaster", PRIVATE_LESSON),
                lesson("s-shared", "forecaster", SKILL, kind="skill", scope="shared"),
            ],
        )
    )
    await res.memory.write(
        WriteMemoriesInput(
            tenant_id=TWO,
            items=[lesson("l-two", "weather-bot-two", OTHER_TENANT_LESSON, scope="shared")],
        )
    )


@pytest.fixture
async def http(
    stack: tuple[Settings, Client, Resources], keys: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack[0])
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {keys[ONE]}"}, timeout=60,
        ) as client:  # fmt: skip
            yield client


async def set_sharing(pool: Pool, mode: tenants.SharingMode) -> None:
    async with pool.connection() as conn:
        await tenants.set_sharing(conn, ONE, mode)


def contents(items: list[dict[str, Any]]) -> list[str]:
    return [item["content"] for item in items]


async def test_a_draft_names_proven_tools_lessons_and_the_closest_agent(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/v1/agents/bootstrap", json={"objective": OBJECTIVE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"spec", "evidence", "rationale", "exists"}
    spec, evidence = body["spec"], body["evidence"]
    assert re.fullmatch(AGENT_NAME_PATTERN, spec["name"]) and body["exists"] is False
    # The proven tool is in the spec; the failing one is evidence only, with its record.
    assert "weather_forecast" in spec["tools"] and "rain_radar" not in spec["tools"]
    tools = {t["name"]: t for t in evidence["tools"]}
    assert tools["weather_forecast"]["proven"] and tools["weather_forecast"]["calls"] == 10
    assert tools["weather_forecast"]["success_rate"] == 1.0
    assert tools["rain_radar"] == {**tools["rain_radar"], "proven": False, "success_rate": 0.2}
    assert set(tools["weather_forecast"]) >= {"name", "similarity", "success_rate", "calls"}
    assert "rain_radar (20% of 10 calls succeeded)" in body["rationale"]
    # The shared lesson and skill are the playbook; another agent's private lesson is not.
    assert contents(evidence["lessons"]) == [SHARED_LESSON]
    assert contents(evidence["skills"]) == [SKILL]
    assert SHARED_LESSON in spec["instructions"] and SKILL in spec["instructions"]
    assert PRIVATE_LESSON not in spec["instructions"]
    # The closest agent lends its model; the unrelated one is not similar.
    similar = [a["name"] for a in evidence["similar_agents"]]
    assert similar[0] == "forecaster" and "poet" not in similar
    assert spec["model"] == "openai/forecast-model"
    assert spec["memory"]["enabled"] and spec["memory"]["scope"] == "shared"
    assert evidence["sharing"] == "shared"
    # Nothing of the other tenant, anywhere.
    for secret in ("storm_tracker", "weather-bot-two", "SECRET-B", "openai/two-model"):
        assert secret not in response.text
    # Not created: the draft is a valid body for POST /v1/agents.
    assert (await http.get(f"/v1/agents/{spec['name']}")).status_code == 404
    created = await http.post("/v1/agents", json=spec)
    assert created.status_code == 201, created.text
    assert created.json()["tools"] == spec["tools"]


async def test_the_other_tenant_drafts_from_its_own_knowledge_only(
    http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    response = await http.post(
        "/v1/agents/bootstrap",
        json={"objective": OBJECTIVE, "name": "forecaster"},
        headers={"Authorization": f"Bearer {keys[TWO]}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["exists"] is False  # bs-one's forecaster is not bs-two's
    assert body["spec"]["tools"] == ["storm_tracker"]
    assert contents(body["evidence"]["lessons"]) == [OTHER_TENANT_LESSON]
    assert [a["name"] for a in body["evidence"]["similar_agents"]] == ["weather-bot-two"]
    for secret in ("weather_forecast", "rain_radar", SHARED_LESSON, SKILL, "forecast-model"):
        assert secret not in response.text


async def test_isolated_mode_drafts_only_from_the_agents_own_lessons(
    http: httpx.AsyncClient, pool: Pool
) -> None:
    await set_sharing(pool, "isolated")
    try:
        fresh = (await http.post("/v1/agents/bootstrap", json={"objective": OBJECTIVE})).json()
        assert fresh["evidence"]["sharing"] == "isolated"
        assert fresh["evidence"]["lessons"] == fresh["evidence"]["skills"] == []
        assert fresh["spec"]["memory"]["scope"] == "private"
        assert "weather_forecast" in fresh["spec"]["tools"]  # tools are the tenant's
        own = await http.post(
            "/v1/agents/bootstrap", json={"objective": OBJECTIVE, "name": "forecaster"}
        )
        body = own.json()
        assert body["exists"] is True and "adds a version" in body["rationale"]
        assert sorted(contents(body["evidence"]["lessons"])) == [PRIVATE_LESSON, SHARED_LESSON]
    finally:
        await set_sharing(pool, "shared")


async def test_sharing_mode_decides_what_an_agent_recalls(
    stack: tuple[Settings, Client, Resources], pool: Pool
) -> None:
    memory = stack[2].memory

    async def recalled(agent: str, tenant: str = ONE) -> list[str]:
        out = await memory.recall(
            RecallInput(tenant_id=tenant, query=OBJECTIVE, agent_name=agent, min_score=-1.0)
        )
        return sorted(hit.content for hit in out.hits)

    assert await recalled("newcomer") == sorted([SHARED_LESSON, SKILL])
    assert await recalled("forecaster") == sorted([SHARED_LESSON, PRIVATE_LESSON, SKILL])
    await set_sharing(pool, "isolated")
    try:
        assert await recalled("newcomer") == []
        assert await recalled("forecaster") == sorted([SHARED_LESSON, PRIVATE_LESSON, SKILL])
    finally:
        await set_sharing(pool, "shared")
    # Never across tenants, whatever the agent is called.
    assert await recalled("forecaster", TWO) == [OTHER_TENANT_LESSON]
    assert await recalled("weather-bot-two") == sorted([SHARED_LESSON, SKILL])


async def test_sharing_mode_decides_which_lessons_evolution_reads(
    stack: tuple[Settings, Client, Resources], pool: Pool
) -> None:
    evidence = _Evidence(cases=[], results=[], since=None)

    async def lessons(agent: str, tenant: str = ONE) -> list[str]:
        record = EvolutionRecord.model_construct(tenant_id=tenant, agent_name=agent)
        async with pool.connection() as conn:
            return sorted(await _reflexions(conn, record, evidence))

    assert await lessons("poet") == [SHARED_LESSON]  # reflexions only: not the skill
    assert await lessons("forecaster") == sorted([SHARED_LESSON, PRIVATE_LESSON])
    await set_sharing(pool, "isolated")
    try:
        assert await lessons("poet") == []
        assert await lessons("forecaster") == sorted([SHARED_LESSON, PRIVATE_LESSON])
    finally:
        await set_sharing(pool, "shared")
    # Never across tenants, whatever the agent is called.
    assert await lessons("forecaster", TWO) == [OTHER_TENANT_LESSON]
    assert await lessons("weather-bot-two") == [SHARED_LESSON]


async def test_tenant_settings_route(http: httpx.AsyncClient, keys: dict[str, str]) -> None:
    got = await http.get("/v1/tenant/settings")
    assert got.status_code == 200 and got.json() == {"tenant_id": ONE, "sharing": "shared"}
    put = await http.put("/v1/tenant/settings", json={"sharing": "isolated"})
    assert put.status_code == 200 and put.json()["sharing"] == "isolated"
    other = await http.get("/v1/tenant/settings", headers={"Authorization": f"Bearer {keys[TWO]}"})
    assert other.json() == {"tenant_id": TWO, "sharing": "shared"}
    put = await http.put("/v1/tenant/settings", json={"sharing": "shared"})
    assert put.json()["sharing"] == "shared"
    member = {"Authorization": f"Bearer {keys['member']}"}
    assert (await http.get("/v1/tenant/settings", headers=member)).status_code == 200
    assert_error(
        await http.put("/v1/tenant/settings", json={"sharing": "isolated"}, headers=member),
        403, "forbidden",
    )  # fmt: skip
    for body in ({}, {"sharing": "sometimes"}, {"sharing": "shared", "extra": 1}):
        assert_error(await http.put("/v1/tenant/settings", json=body), 422, "invalid_request")


async def test_bad_bootstrap_requests_are_clear_4xx(http: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "objective"),
        ({"objective": ""}, "objective"),
        ({"objective": "x" * 4001}, "objective"),
        ({"objective": "rain", "name": "no spaces allowed"}, "name"),
        ({"objective": "rain", "tools": ["x"]}, "tools"),
    ]
    for body, field in cases:
        error = assert_error(
            await http.post("/v1/agents/bootstrap", json=body), 422, "invalid_request"
        )
        assert field in str(error), error
    blank = assert_error(
        await http.post("/v1/agents/bootstrap", json={"objective": "  "}), 422, "invalid_request"
    )
    assert "blank" in blank["message"]
    request = http.build_request("POST", "/v1/agents/bootstrap", json={"objective": "rain"})
    del request.headers["Authorization"]
    assert_error(await http.send(request), 401, "unauthorized")


async def test_secrets_in_the_objective_are_masked(http: httpx.AsyncClient) -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwx1234"
    response = await http.post(
        "/v1/agents/bootstrap", json={"objective": f"Check the weather with key {secret}"}
    )
    assert response.status_code == 200, response.text
    assert secret not in response.text and "Check the weather with key" in response.text


async def test_without_a_memory_lane_the_route_answers_503(
    stack: tuple[Settings, Client, Resources],
    pool: Pool,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agents_route, "BOOTSTRAP_TIMEOUT", timedelta(seconds=2))
    settings = stack[0].model_copy(update={"task_queue_suffix": "-" + uuid.uuid4().hex[:8]})
    app = create_app(settings)
    async with (
        running_workers(
            stack[1], settings, pool, suffix=settings.task_queue_suffix,
            queues=[TaskQueue.ORCHESTRATION],
        ),
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {keys[ONE]}"}, timeout=30,
        ) as http,
    ):  # fmt: skip
        response = await http.post("/v1/agents/bootstrap", json={"objective": OBJECTIVE})
    error = assert_error(response, 503, "stack_error")
    assert "memory lane did not answer" in error["message"]


async def test_the_workflow_drafts_on_the_memory_lane_and_replays(
    stack: tuple[Settings, Client, Resources],
) -> None:
    settings, client, _ = stack
    handle = await client.start_workflow(
        AgentBootstrapWorkflow.run,
        BootstrapInput(tenant_id=ONE, objective="convert time zones for a meeting"),
        id=f"agent-bootstrap-test-{uuid.uuid4().hex[:8]}",
        task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
    )
    output = await handle.result()
    # get_time is relevant but untried: evidence, not part of the spec.
    assert "get_time" in [t.name for t in output.evidence.tools]
    assert "get_time" not in output.spec.tools
    assert output.spec.model == "local/smollm2-135m" or output.evidence.similar_agents
    await assert_replays(handle)
    record_history("agent_bootstrap_v1", await handle.fetch_history())


async def test_the_cli_prints_a_draft_and_creates_it_from_json(
    stack: tuple[Settings, Client, Resources],
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(stack[0])

    def run(*args: str, input: str | None = None) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            client = ColonyClient(make_settings(COLONY_API_KEY=keys[ONE]))
            http.headers["Authorization"] = f"Bearer {keys[ONE]}"
            client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_runs, "api_client", lambda: client)
            return CliRunner().invoke(cli, list(args), input=input, env={"COLUMNS": "250"})

    async def colony(*args: str, input: str | None = None) -> Result:
        return await asyncio.to_thread(run, *args, input=input)

    shown = await colony("agents", "bootstrap", OBJECTIVE, "--name", "rain-teller")
    assert shown.exit_code == 0, shown.output
    assert "relevant tools" in shown.output and "rain_radar" in shown.output
    assert "similar agent" in shown.output and "forecaster" in shown.output
    assert '"name": "rain-teller"' in shown.output and "colony agents create --file -" in (
        shown.output
    )
    drafted = await colony("agents", "bootstrap", OBJECTIVE, "--name", "rain-teller", "--json")
    assert drafted.exit_code == 0, drafted.output
    assert json.loads(drafted.output)["spec"]["name"] == "rain-teller"
    created = await colony("agents", "create", "--file", "-", input=drafted.output)
    assert created.exit_code == 0, created.output
    assert "agent rain-teller version 1" in created.output
    missing = await colony("agents", "create", "--instructions", "x")
    assert missing.exit_code == 1 and "missing --name, --model" in missing.output
    bad = await colony("agents", "bootstrap", " ")
    assert bad.exit_code == 1 and "blank" in bad.output


def test_the_routes_are_documented() -> None:
    root = Path(__file__).resolve().parents[2]
    for doc in (root / "README.md", root / "docs" / "architecture.md"):
        text = doc.read_text()
        assert "POST /v1/agents/bootstrap" in text and "/v1/tenant/settings" in text, doc
