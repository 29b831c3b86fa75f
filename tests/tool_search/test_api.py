"""`ToolSearchWorkflow` and `GET /v1/tools/search` through real Temporal and workers."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from api.main import create_app
from api.routes import tool_search as tool_search_route
from core import temporal as temporal_support
from core import tenants
from core.db import Pool
from core.queues import TaskQueue
from core.settings import Settings
from core.tools.search import ToolSearchInput
from tests.conftest import make_settings
from tests.support.replay import assert_replays
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from tests.tools.test_api_tools import assert_error
from workflows.tool_search import ToolSearchWorkflow

WEATHER = {
    "name": "weather_forecast",
    "description": "Current conditions and a 5-day forecast (temperature, rain, wind) for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "http": {"url_template": "https://api.weather.example/v1/{city}"},
}


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    out = {}
    async with pool.connection() as conn:
        for tenant in ("ts-one", "ts-two"):
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="admin")
    return out


def settings_for(temporal: TemporalServer, database_url: str, data: Path) -> Settings:
    return make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        COLONY_DATA_DIR=str(data),
        COLONY_TASK_QUEUE_SUFFIX="-" + uuid.uuid4().hex[:8],
    )


@pytest.fixture(scope="module")
async def stack(
    temporal: TemporalServer,
    database_url: str,
    pool: Pool,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, Client]]:
    settings = settings_for(temporal, database_url, tmp_path_factory.mktemp("data"))
    client = await temporal_support.connect(settings)
    async with running_workers(client, settings, pool, suffix=settings.task_queue_suffix):
        yield settings, client


@pytest.fixture
async def api(
    stack: tuple[Settings, Client], keys: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack[0])
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {keys['ts-one']}"}, timeout=60,
        ) as http:  # fmt: skip
            yield http


async def test_the_workflow_searches_on_the_memory_lane_and_replays(
    stack: tuple[Settings, Client],
) -> None:
    settings, client = stack
    handle = await client.start_workflow(
        ToolSearchWorkflow.run,
        ToolSearchInput(tenant_id="ts-two", query="what time is it in Tokyo", limit=2),
        id=f"tool-search-test-{uuid.uuid4().hex[:8]}",
        task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
    )
    output = await handle.result()
    assert len(output.hits) == 2 and output.hits[0].name == "get_time"
    await assert_replays(handle)


async def test_search_route_ranks_the_tenants_tools(
    api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    created = await api.post("/v1/tools", json=WEATHER)
    assert created.status_code == 201, created.text
    response = await api.get("/v1/tools/search", params={"q": "is it raining in Paris", "limit": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "is it raining in Paris" and len(body["hits"]) == 3
    top = body["hits"][0]
    assert (top["name"], top["kind"]) == ("weather_forecast", "http")
    assert set(top) == {"name", "kind", "description", "score"}
    times = (await api.get("/v1/tools/search", params={"q": " convert time zones "})).json()
    assert times["query"] == "convert time zones" and times["hits"][0]["name"] == "get_time"
    # The other tenant does not see the tool.
    other = await api.get(
        "/v1/tools/search",
        params={"q": "is it raining in Paris", "limit": 50},
        headers={"Authorization": f"Bearer {keys['ts-two']}"},
    )
    assert "weather_forecast" not in [h["name"] for h in other.json()["hits"]]
    # `search` is not taken for a tool name by GET /v1/tools/{name}.
    assert (await api.get("/v1/tools/weather_forecast")).status_code == 200


async def test_bad_searches_are_4xx(api: httpx.AsyncClient) -> None:
    cases: list[dict[str, str | int]] = [
        {},
        {"q": ""},
        {"q": "x" * 501},
        {"q": "a", "limit": 0},
        {"q": "a", "limit": 51},
    ]
    for params in cases:
        assert_error(await api.get("/v1/tools/search", params=params), 422, "invalid_request")
    blank = assert_error(await api.get("/v1/tools/search?q=%20%20"), 422, "invalid_request")
    assert "blank" in blank["message"]
    request = api.build_request("GET", "/v1/tools/search", params={"q": "time"})
    del request.headers["Authorization"]
    assert_error(await api.send(request), 401, "unauthorized")


async def test_without_a_memory_lane_the_route_answers_503(
    temporal: TemporalServer,
    database_url: str,
    pool: Pool,
    keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tool_search_route, "SEARCH_TIMEOUT", timedelta(seconds=2))
    settings = settings_for(temporal, database_url, tmp_path)
    client = await temporal_support.connect(settings)
    app = create_app(settings)
    async with (
        running_workers(
            client, settings, pool, suffix=settings.task_queue_suffix, queues=[TaskQueue.ORCHESTRATION]
        ),
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {keys['ts-one']}"}, timeout=30,
        ) as http,
    ):  # fmt: skip
        error = assert_error(await http.get("/v1/tools/search?q=time"), 503, "stack_error")
    assert "memory lane did not answer" in error["message"]
