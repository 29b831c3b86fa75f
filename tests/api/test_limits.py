"""Request bodies over the limit are refused with 413; every route but /healthz needs a key."""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from core.db import Pool
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.support.api import ClientFor, in_process_api, stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer

TENANT = "limited"
LIMIT = 4096
OPEN = {("get", "/healthz"), ("get", "/openapi.json")}
"""Routes that answer without a key: the health check and the API's own description."""


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(
        database_url, temporal.address, model_server.base_url, tmp_path / "data",
        COLONY_API_MAX_BODY_BYTES=str(LIMIT),
    )  # fmt: skip


@pytest.fixture
async def client_for(settings: Settings) -> AsyncIterator[ClientFor]:
    async with in_process_api(settings) as factory:
        yield factory


async def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
    client_for: ClientFor, pool: Pool
) -> None:
    key = (await tenant_keys(pool, TENANT))[TENANT]
    async with client_for(key) as http:
        big = await http.post("/v1/runs", json={"objective": "x" * (2 * LIMIT)})
        small = await http.post("/v1/runs", json={"objective": "x" * 10, "mode": "bogus"})
    error = assert_error(big, 413, "payload_too_large")
    assert str(LIMIT) in str(error["message"]) and error["details"] == {"max_bytes": LIMIT}
    assert_error(small, 422, "invalid_request")  # under the limit: the route saw it


async def test_a_streamed_body_over_the_limit_is_413(client_for: ClientFor, pool: Pool) -> None:
    key = (await tenant_keys(pool, TENANT))[TENANT]

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"objective": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    async with client_for(key) as http:
        response = await http.post(
            "/v1/runs", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert_error(response, 413, "payload_too_large")


async def test_every_route_but_the_health_check_needs_a_key(settings: Settings) -> None:
    app = create_app(settings)
    routes = [
        (method, path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert len(routes) > 60
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://colony") as http,
    ):
        for method, path in routes:
            url = re.sub(r"\{[^}]+\}", "x1", path)
            response = await http.request(method.upper(), url)
            if (method, path) in OPEN:
                assert response.status_code < 400, (method, path, response.text)
            else:
                assert_error(response, 401, "unauthorized")
        docs = await http.get("/openapi.json")
    assert docs.status_code == 200


async def test_mutating_calls_are_audited_for_the_tenants_admins(
    client_for: ClientFor, pool: Pool
) -> None:
    keys = await tenant_keys(pool, "audited", "bystander")
    member = (await tenant_keys(pool, "audited", role="member"))["audited"]
    agent = {"name": "auditee", "instructions": "You answer.", "model": "openai/scripted-model"}
    async with client_for(keys["audited"]) as http:
        created = await http.post("/v1/agents", json=agent)
        refused = await http.put("/v1/agents/nobody/rollout", json={})
        await http.get("/v1/agents")  # a read: not audited
        log = (await http.get("/v1/audit")).json()
    async with client_for(member) as http:
        member_read = await http.get("/v1/audit")
        await http.post("/v1/agents/auditee/rollback", json={"version": 1})
    async with client_for(keys["bystander"]) as http:
        other = (await http.get("/v1/audit")).json()
    assert created.status_code == 201 and refused.status_code == 404
    assert [(e["method"], e["route"], e["resource"], e["status"]) for e in log] == [
        ("PUT", "/v1/agents/{name}/rollout", {"name": "nobody"}, 404),
        ("POST", "/v1/agents", {}, 201),
    ]
    assert all(e["key_id"].startswith("key_") for e in log)
    assert_error(member_read, 403, "forbidden")
    assert other == []
    async with client_for(keys["audited"]) as http:
        latest = (await http.get("/v1/audit", params={"limit": 1})).json()
    # The member's call is audited too (refused: v1 is already the latest).
    assert latest[0]["route"] == "/v1/agents/{name}/rollback" and latest[0]["status"] == 422
