"""Recipes over HTTP and the CLI: save a succeeded swarm's plan, run it again, tenants apart."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from api.cli import recipes as cli_recipes
from api.cli import swarms as cli_swarms
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core.db import Pool
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.api.test_swarms import wait_finished
from tests.conftest import make_settings
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer
from tests.support.swarm_script import SwarmScript, plan_json, requests_for, subtask
from tests.support.workers import api_with_workers

TENANT, OTHER = "t-recipes", "t-recipes-other"
SOURCE = "Compare the prices of flats in Berlin"
PLAN = (
    subtask("a", "researcher", description=f"Find listings for: {SOURCE}"),
    subtask("b", "analyst", ["a"], description="Compare the prices [a] found."),
)
ANSWER = "Prices compared [b]."


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    return await tenant_keys(pool, TENANT, OTHER)


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(database_url, temporal.address, model_server.base_url, tmp_path / "data")


@pytest.fixture
async def api(
    settings: Settings, pool: Pool, keys: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_with_workers(settings, pool, keys[TENANT]) as http:
        yield http


async def succeeded_swarm(api: httpx.AsyncClient, model_server: ScriptedModelServer) -> str:
    """A swarm the queen planned, finished."""
    SwarmScript(plans=[plan_json(*PLAN)], synthesis=ANSWER).install(model_server)
    created = await api.post(
        "/v1/swarms", json={"objective": SOURCE, "limits": {"max_parallel": 3}}
    )
    assert created.status_code == 201, created.text
    done = await wait_finished(api, created.json()["id"])
    assert done["outcome"] == "succeeded", done
    return str(done["id"])


async def test_save_show_run_and_delete_a_recipe(
    api: httpx.AsyncClient, model_server: ScriptedModelServer, keys: dict[str, str]
) -> None:
    swarm_id = await succeeded_swarm(api, model_server)
    name = "flat-prices-" + uuid.uuid4().hex[:6]
    body = {"name": name, "swarm_id": swarm_id, "description": "Price comparisons"}
    saved = await api.post("/v1/recipes", json=body)
    assert saved.status_code == 201, saved.text
    recipe = saved.json()
    assert (recipe["name"], recipe["tool"], recipe["mode"]) == (
        name,
        f"recipe:{name}",
        "hierarchical",
    )
    assert (recipe["source_swarm_id"], recipe["objective"]) == (swarm_id, SOURCE)
    assert recipe["limits"]["max_parallel"] == 3 and recipe["queen"] == "queen"
    assert [s["id"] for s in recipe["plan"]] == ["a", "b"]
    assert recipe["plan"][0]["description"] == "Find listings for: {objective}"
    assert recipe["plan"][1]["depends_on"] == ["a"]
    # The same plan again is harmless; another plan under the name is a conflict.
    again = await api.post("/v1/recipes", json=body)
    assert again.status_code == 200 and again.json() == recipe
    assert (await api.post("/v1/recipes", json={**body, "description": None})).status_code == 200
    assert_error(
        await api.post("/v1/recipes", json={**body, "description": "another"}), 409, "conflict"
    )
    assert (await api.get(f"/v1/recipes/{name}")).json() == recipe
    assert name in [r["name"] for r in (await api.get("/v1/recipes")).json()]

    # Run it directly: the saved plan with the new objective, the queen only synthesizes.
    model_server.reset()
    SwarmScript(synthesis="Lisbon is cheaper [b].").install(model_server)
    objective = "Compare the prices of flats in Lisbon"
    created = await api.post("/v1/swarms", json={"recipe": name, "objective": objective})
    assert created.status_code == 201, created.text
    swarm = created.json()
    assert (swarm["recipe"], swarm["plan_version"], swarm["limits"]["max_parallel"]) == (name, 1, 3)
    assert swarm["subtasks"][0]["description"] == f"Find listings for: {objective}"
    done = await wait_finished(api, swarm["id"])
    assert (done["outcome"], done["result"]) == ("succeeded", "Lisbon is cheaper [b].")
    assert requests_for(model_server, "plan") == []
    limited = await api.post(
        "/v1/swarms", json={"recipe": name, "objective": "x", "limits": {"max_subtasks": 1}}
    )
    assert "at most 1" in " ".join(
        assert_error(limited, 422, "invalid_request")["details"]["errors"]
    )  # type: ignore[index]

    # An agent may list the recipe as a tool; an unknown recipe is refused.
    agent = {"name": "planner-" + uuid.uuid4().hex[:6], "instructions": "Plan.",
             "model": "openai/scripted-model"}  # fmt: skip
    ok = await api.post("/v1/agents", json={**agent, "tools": [f"recipe:{name}"]})
    assert ok.status_code == 201, ok.text
    refused = assert_error(
        await api.post("/v1/agents", json={**agent, "tools": ["recipe:nope"]}), 404, "not_found"
    )
    assert refused["details"] == {"unknown_tools": ["recipe:nope"]}

    # Tenants are apart: the other tenant sees neither the recipe nor the swarm.
    other = {"Authorization": f"Bearer {keys[OTHER]}"}
    assert_error(await api.get(f"/v1/recipes/{name}", headers=other), 404, "not_found")
    assert_error(await api.delete(f"/v1/recipes/{name}", headers=other), 404, "not_found")
    assert_error(
        await api.post("/v1/swarms", json={"recipe": name, "objective": "x"}, headers=other),
        404,
        "not_found",
    )
    assert_error(
        await api.post("/v1/recipes", json={"name": name, "swarm_id": swarm_id}, headers=other),
        404,
        "not_found",
    )
    assert (await api.get("/v1/recipes", headers=other)).json() == []

    deleted = await api.delete(f"/v1/recipes/{name}")
    assert deleted.status_code == 204
    assert_error(await api.get(f"/v1/recipes/{name}"), 404, "not_found")
    assert_error(await api.delete(f"/v1/recipes/{name}"), 404, "not_found")


async def test_bad_recipes_are_4xx(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    async def rejected(body: dict[str, Any], status: int = 422) -> dict[str, Any]:
        type_ = {422: "invalid_request", 404: "not_found"}[status]
        return assert_error(await api.post("/v1/recipes", json=body), status, type_)

    for body in (
        {"name": "bad name!", "swarm_id": "swarm_x"},
        {"name": "ok"},
        {"swarm_id": "swarm_x"},
        {"name": "ok", "swarm_id": "swarm_x", "colour": "red"},
        {"name": "ok", "swarm_id": ""},
    ):
        await rejected(body)
    await rejected({"name": "ok", "swarm_id": "swarm_nothing"}, 404)
    assert_error(await api.get("/v1/recipes/nothing"), 404, "not_found")
    assert_error(await api.get("/v1/recipes/bad name!"), 422, "invalid_request")
    unknown = {"recipe": "nothing", "objective": "x"}
    assert_error(await api.post("/v1/swarms", json=unknown), 404, "not_found")
    for body in (
        {"recipe": "nothing", "objective": "x", "plan": [subtask("a")]},
        {"recipe": "nothing", "objective": "x", "mode": "parallel"},
        {"recipe": "bad name!", "objective": "x"},
    ):
        assert_error(await api.post("/v1/swarms", json=body), 422, "invalid_request")

    # A swarm that is still running, or that did not succeed, cannot be saved.
    SwarmScript(delay=30).install(model_server)
    created = await api.post(
        "/v1/swarms", json={"objective": "slow", "mode": "parallel", "plan": [subtask("a")]}
    )
    swarm_id = created.json()["id"]
    running = await rejected({"name": "slow", "swarm_id": swarm_id})
    assert "has not finished" in running["message"] and "succeeded" in running["message"]
    assert (await api.post(f"/v1/swarms/{swarm_id}/cancel")).status_code == 202
    await wait_finished(api, swarm_id)
    cancelled = await rejected({"name": "slow", "swarm_id": swarm_id})
    assert "ended cancelled" in cancelled["message"]
    assert_error(await api.get("/v1/recipes/slow"), 404, "not_found")
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {"/v1/recipes", "/v1/recipes/{name}"} <= set(paths)


async def test_the_cli(
    api: httpx.AsyncClient,
    settings: Settings,
    model_server: ScriptedModelServer,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    swarm_id = await succeeded_swarm(api, model_server)
    app = create_app(settings)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            client = ColonyClient(make_settings(COLONY_API_KEY=keys[TENANT]))
            http.headers["Authorization"] = f"Bearer {keys[TENANT]}"
            client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_recipes, "api_client", lambda: client)
            monkeypatch.setattr(cli_swarms, "api_client", lambda: client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})

    name = "cli-recipe-" + uuid.uuid4().hex[:6]
    saved = await asyncio.to_thread(
        run, "recipes", "save", swarm_id, "--name", name, "--description", "From the CLI"
    )
    assert saved.exit_code == 0, saved.output
    out = " ".join(saved.output.split())
    assert f"saved recipe {name}" in out and f"tool recipe:{name}" in out
    assert "Find listings for: {objective}" in out and "From the CLI" in out
    conflict = await asyncio.to_thread(
        run, "recipes", "save", swarm_id, "--name", name, "--description", "other"
    )
    assert conflict.exit_code == 1 and "exists with another plan" in conflict.output
    listed = await asyncio.to_thread(run, "recipes", "list")
    assert listed.exit_code == 0 and name in listed.output
    shown = await asyncio.to_thread(run, "recipes", "show", name)
    assert shown.exit_code == 0 and "Compare the prices [a] found." in shown.output

    model_server.reset()
    SwarmScript(synthesis=ANSWER).install(model_server)
    ran = await asyncio.to_thread(run, "swarm", "Flats in Rome", "--recipe", name)
    assert ran.exit_code == 0, ran.output
    assert "✔ succeeded · 2/2 subtasks" in " ".join(ran.output.split())
    assert f"▶ started · hierarchical · recipe {name}" in ran.output
    assert requests_for(model_server, "plan") == []
    plan = tmp_path / "plan.json"
    plan.write_text(plan_json(subtask("a")))
    both = await asyncio.to_thread(run, "swarm", "x", "--recipe", name, "--plan", str(plan))
    assert both.exit_code == 2 and "leave out --plan" in both.output

    deleted = await asyncio.to_thread(run, "recipes", "delete", name)
    assert deleted.exit_code == 0 and f"deleted recipe {name}" in deleted.output
    missing = await asyncio.to_thread(run, "recipes", "show", name)
    assert missing.exit_code == 1 and "not found" in missing.output
