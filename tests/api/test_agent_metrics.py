"""`GET /v1/agents/{name}/metrics` and `colony agents show` (real Postgres; no Temporal)."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from api.cli import runs as cli_runs
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core import tenants
from core.db import Pool
from core.runs import metrics
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.conftest import make_settings
from tests.store.test_agent_metrics import AGENT, OTHER, TENANT, assert_same, seed
from tests.store.test_agent_metrics import version_1 as expected_1
from tests.store.test_agent_metrics import version_2 as expected_2


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    await seed(pool)
    out = {}
    async with pool.connection() as conn:
        for tenant in (TENANT, OTHER):
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="member")
    return out


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url)


@pytest.fixture
async def api(settings: Settings, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {keys[TENANT]}"},
        ) as http,
    ):  # fmt: skip
        yield http


async def test_metrics_per_version_over_http(api: httpx.AsyncClient, keys: dict[str, str]) -> None:
    response = await api.get(f"/v1/agents/{AGENT}/metrics")
    assert response.status_code == 200, response.text
    found = metrics.AgentMetrics.model_validate(response.json())
    assert [v.version for v in found.versions] == [2, 1]
    assert_same(found.versions[0], expected_2())
    assert_same(found.versions[1], expected_1())
    assert response.json()["versions"][1]["rating_distribution"] == {
        "1": 0, "2": 2, "3": 0, "4": 1, "5": 1,
    }  # fmt: skip

    one = (await api.get(f"/v1/agents/{AGENT}/metrics", params={"version": 1})).json()
    assert [v["version"] for v in one["versions"]] == [1]
    empty = (await api.get(f"/v1/agents/{AGENT}/metrics", params={"version": 3})).json()
    assert empty["versions"][0]["runs"] == 0 and empty["versions"][0]["tools"] == []

    # A time without an offset is UTC.
    since = await api.get(f"/v1/agents/{AGENT}/metrics", params={"since": "2026-06-01T00:00:00"})
    assert since.status_code == 200, since.text
    assert since.json()["since"] == "2026-06-01T00:00:00Z"
    assert [(v["version"], v["runs"]) for v in since.json()["versions"]] == [(2, 1), (1, 5)]

    # Another tenant's agent of the same name is its own.
    async with httpx.AsyncClient(
        transport=api._transport, base_url="http://colony",
        headers={"Authorization": f"Bearer {keys[OTHER]}"},
    ) as other:  # fmt: skip
        theirs = (await other.get(f"/v1/agents/{AGENT}/metrics")).json()
        assert [(v["version"], v["runs"], v["cost_usd_total"]) for v in theirs["versions"]] == [
            (1, 1, 9.0)
        ]
        assert_error(await other.get("/v1/agents/clerk/metrics"), 404, "not_found")


async def test_unknown_agents_versions_and_bad_parameters(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/agents/nobody/metrics"), 404, "not_found")
    missing = await api.get(f"/v1/agents/{AGENT}/metrics", params={"version": 9})
    assert_error(missing, 404, "not_found")
    assert "version 9 of agent 'calc' not found" in missing.json()["error"]["message"]
    for params in ({"version": 0}, {"since": "yesterday"}):
        bad = await api.get(f"/v1/agents/{AGENT}/metrics", params=params)
        assert bad.status_code == 422, bad.text
    unauthenticated = await api.get(
        f"/v1/agents/{AGENT}/metrics", headers={"Authorization": "Bearer nope"}
    )
    assert unauthenticated.status_code == 401


async def test_the_cli(
    settings: Settings, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            client = ColonyClient(make_settings(COLONY_API_KEY=keys[TENANT]))
            http.headers["Authorization"] = f"Bearer {keys[TENANT]}"
            client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_runs, "api_client", lambda: client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})

    async def colony(*args: str) -> Result:
        return await asyncio.to_thread(run, *args)

    shown = await colony("agents", "show", AGENT)
    assert shown.exit_code == 0, shown.output
    assert '"name": "calc"' in shown.output and "metrics of calc" in shown.output
    rows = {
        cells[0]: cells
        for line in shown.output.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 14 and cells[0].isdigit()
    }
    assert rows["1"] == [
        "1", "6", "1", "1 (20%)", "2 (40%)", "1 (20%)", "1 (20%)", "3.25 (4)", "0/2/0/1/1",
        "$0.1000 +?", "$0.0200", "32.0s · 30.0s · 56.0s", "4.0", "240",
    ]  # fmt: skip
    assert "+?: some model calls had no known price" in shown.output
    assert rows["2"][:4] == ["2", "1", "0", "1 (100%)"] and "$0.0050" in rows["2"]
    tools = [" ".join(line.split()) for line in shown.output.splitlines() if "calculator" in line]
    assert tools == ["│ 2 │ calculator │ 1 │ 0 │ 0 │ 0% │", "│ 1 │ calculator │ 5 │ 3 │ 0 │ 60% │"]
    assert "│ 1 │ http_fetch │ 2 │ 0 │ 1 │ 0% │" in " ".join(shown.output.split())

    one = await colony("agents", "show", AGENT, "--version", "2", "--since", "2026-06-01T00:00Z")
    assert one.exit_code == 0, one.output
    assert "metrics of calc since 2026-06-01T00:00:00Z" in one.output
    assert "60%" not in one.output and "100%" in one.output and "+?" not in one.output

    idle = await colony("agents", "show", "idle")
    assert idle.exit_code == 0 and "no runs of idle" in idle.output
    missing = await colony("agents", "show", AGENT, "--version", "9")
    assert missing.exit_code == 1 and "version 9 of agent 'calc' not found" in missing.output
