"""The HTTP API against real Postgres and Temporal (ASGI in-process, real workers)."""

from collections.abc import AsyncIterator

import httpx
import pytest

from api.main import create_app
from core import db, tenants
from core import temporal as temporal_support
from core.db import Pool
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer
from tests.support.workers import running_workers


@pytest.fixture(scope="module")
async def admin_key(pool: Pool) -> str:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, "acme", "Acme")
        _, key = await tenants.create_api_key(conn, "acme", "admin", role="admin")
        return key


@pytest.fixture
async def api(
    database_url: str, temporal: TemporalServer, admin_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(DATABASE_URL=database_url, TEMPORAL_ADDRESS=temporal.address)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://colony",
            headers={"Authorization": f"Bearer {admin_key}"},
        ) as client:
            yield client


def assert_error(response: httpx.Response, status: int, type_: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "details"}
    assert body["error"]["type"] == type_
    assert body["error"]["message"]
    return body["error"]


async def test_healthz_reports_each_dependency_without_auth(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"postgres", "temporal", "qdrant"}
    assert body["components"]["postgres"]["detail"] == f"schema version {db.LATEST_SCHEMA_VERSION}"


async def test_healthz_is_503_when_a_dependency_is_down(database_url: str) -> None:
    settings = make_settings(DATABASE_URL=database_url, TEMPORAL_ADDRESS="127.0.0.1:1")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://c"
        ) as client:
            response = await client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["components"]["temporal"]["ok"] is False
    assert body["components"]["postgres"]["ok"] is True


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing API key"),
        ("Basic abc", "malformed Authorization header"),
        ("Bearer nope", "malformed API key"),
        ("Bearer colony_sk_unknownunknownunknown", "unknown API key"),
    ],
)
async def test_every_route_but_healthz_needs_a_valid_key(
    api: httpx.AsyncClient, header: str | None, message: str
) -> None:
    for path in ("/v1/whoami", "/metrics", "/v1/api-keys"):
        headers = {"Authorization": header} if header else {}
        request = api.build_request("GET", path, headers=headers)
        if header is None:
            del request.headers["Authorization"]
        response = await api.send(request)
        error = assert_error(response, 401, "unauthorized")
        assert message in str(error["message"])
        assert response.headers["www-authenticate"] == "Bearer"


async def test_whoami_and_metrics(api: httpx.AsyncClient) -> None:
    me = (await api.get("/v1/whoami")).json()
    assert me["tenant_id"] == "acme" and me["role"] == "admin"
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200
    assert "text/plain" in metrics.headers["content-type"]
    assert (
        'colony_http_requests_total{method="GET",route="/v1/whoami",status="200"}' in metrics.text
    )


async def test_api_key_lifecycle_and_roles(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/api-keys", json={"name": "ci bot"})
    assert created.status_code == 201, created.text
    member = created.json()
    assert member["role"] == "member" and member["key"].startswith("colony_sk_")
    listed = (await api.get("/v1/api-keys")).json()
    assert member["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)

    as_member = {"Authorization": f"Bearer {member['key']}"}
    assert (await api.get("/v1/whoami", headers=as_member)).json()["role"] == "member"
    assert_error(await api.get("/v1/api-keys", headers=as_member), 403, "forbidden")

    revoked = await api.delete(f"/v1/api-keys/{member['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_error(await api.get("/v1/whoami", headers=as_member), 401, "unauthorized")
    assert_error(await api.delete("/v1/api-keys/key_missing"), 404, "not_found")


async def test_bad_input_gets_4xx_in_the_error_shape(api: httpx.AsyncClient) -> None:
    invalid_json = await api.post(
        "/v1/api-keys", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(invalid_json, 400, "invalid_json")
    error = assert_error(await api.post("/v1/api-keys", json={"name": ""}), 422, "invalid_request")
    assert error["details"]["errors"][0]["loc"] == ["body", "name"]  # type: ignore[index]
    assert_error(
        await api.post("/v1/api-keys", json={"name": "x", "bogus": 1}), 422, "invalid_request"
    )
    assert_error(
        await api.post("/v1/api-keys", json={"name": "x", "role": "root"}), 422, "invalid_request"
    )
    assert_error(await api.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await api.put("/v1/whoami"), 405, "method_not_allowed")
    assert_error(
        await api.post("/v1/stack-checks", headers={"Idempotency-Key": "bad key!"}),
        422,
        "invalid_request",
    )
    assert_error(await api.get("/v1/stack-checks/unknown"), 404, "not_found")


async def test_openapi_lists_the_routes(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {"/healthz", "/metrics", "/v1/whoami", "/v1/api-keys", "/v1/stack-checks"} <= set(paths)


async def test_stack_check_runs_every_lane_and_is_idempotent(
    api: httpx.AsyncClient,
    temporal: TemporalServer,
    pool: Pool,
    model_server: ScriptedModelServer,
) -> None:
    worker_settings = make_settings(
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/scripted",
    )
    client = await temporal_support.connect(worker_settings)
    async with running_workers(client, worker_settings, pool):
        first = await api.post(
            "/v1/stack-checks", params={"wait": 30}, headers={"Idempotency-Key": "check-1"}
        )
        assert first.status_code == 202, first.text
        body = first.json()
        assert body["status"] == "succeeded", body
        assert [lane["lane"] for lane in body["lanes"]] == [
            "orchestration",
            "llm",
            "tools",
            "memory",
        ]
        assert all(lane["ok"] for lane in body["lanes"]), body["lanes"]
        assert body["temporal_ui"] is None  # external Temporal without a UI URL
        # The llm lane really reached the model server.
        assert [r.path for r in model_server.requests] == ["/v1/models"]

        again = await api.post(
            "/v1/stack-checks", params={"wait": 30}, headers={"Idempotency-Key": "check-1"}
        )
        assert again.json()["id"] == "check-1" and again.json()["status"] == "succeeded"
        assert len(model_server.requests) == 1  # same workflow, not a second run
        fetched = await api.get("/v1/stack-checks/check-1")
        assert fetched.json()["lanes"] == body["lanes"]

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT tenant_id, step FROM stack_checks WHERE workflow_id = 'stack-check-acme-check-1' ORDER BY step"
        )
        assert [(r["tenant_id"], r["step"]) for r in await cur.fetchall()] == [
            ("acme", "llm"),
            ("acme", "tools"),
        ]
