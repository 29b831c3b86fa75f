"""Input the API must refuse cleanly: NUL characters, reused idempotency keys; and the
OpenAPI document lists every error status in the error shape.

Real Postgres and Temporal; no workers (runs and swarms stay queued, which is enough).
"""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from core.db import Pool
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.support.api import in_process_api, stack_settings, tenant_keys
from tests.support.services import TemporalServer

TENANT = "t-input"
NUL = "\u0000"
CALC = {"instructions": "Use the calculator.", "model": "openai/scripted-model",
        "tools": ["calculator"]}  # fmt: skip
HTTP_TOOL = {"name": "weather", "description": "The weather", "http": {
    "method": "GET", "url": "https://api.example.com/weather"}}  # fmt: skip


@pytest.fixture(scope="module")
async def key(pool: Pool) -> str:
    return (await tenant_keys(pool, TENANT))[TENANT]


@pytest.fixture
def settings(database_url: str, temporal: TemporalServer, tmp_path: Path) -> Settings:
    # No model is called: nothing works the runs and swarms these tests start.
    return stack_settings(database_url, temporal.address, "http://127.0.0.1:9/v1", tmp_path)


@pytest.fixture
async def api(settings: Settings, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(settings) as client_for, client_for(key) as http:
        yield http


def nul_locations(response: httpx.Response) -> list[list[Any]]:
    error = assert_error(response, 422, "invalid_request")
    errors: list[dict[str, Any]] = error["details"]["errors"]  # type: ignore[index]
    assert {e["type"] for e in errors} == {"nul_character"}, errors
    return [e["loc"] for e in errors]


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/tools", {**HTTP_TOOL, "description": f"a{NUL}b"}, ["body", "description"]),
        ("/v1/agents", {**CALC, "name": "nul", "instructions": NUL}, ["body", "instructions"]),
        ("/v1/runs", {"objective": f"hi{NUL}"}, ["body", "objective"]),
        ("/v1/runs", {"messages": [{"content": "ok"}, {"content": NUL}]},
         ["body", "messages", 1, "content"]),
        ("/v1/api-keys", {"name": f"k{NUL}"}, ["body", "name"]),
        ("/v1/swarms", {"objective": "x", "models": {"low": NUL}}, ["body", "models", "low"]),
        ("/v1/tools", {**HTTP_TOOL, "input_schema": {"type": "object", "properties": {
            f"a{NUL}": {"type": "string"}}}}, ["body", "input_schema", "properties", f"a{NUL}"]),
    ],
)  # fmt: skip
async def test_a_nul_in_a_body_is_a_422_naming_the_field(
    api: httpx.AsyncClient, path: str, body: dict[str, Any], where: list[Any]
) -> None:
    # Postgres cannot store U+0000: before the check these were 500s.
    assert nul_locations(await api.post(path, json=body)) == [where]


async def test_a_nul_in_a_path_query_or_header_is_a_422(api: httpx.AsyncClient) -> None:
    assert nul_locations(await api.get("/v1/runs/run%00x")) == [["path", "run_id"]]
    assert nul_locations(await api.get("/v1/tools/search", params={"q": f"a{NUL}"})) == [
        ["query", "q"]
    ]
    response = await api.post(
        "/v1/runs", json={"objective": "x"}, headers={"Idempotency-Key": f"k{NUL}"}
    )
    assert nul_locations(response) == [["header", "idempotency-key"]]


async def test_reusing_an_idempotency_key_with_another_body_is_a_409(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    body = {"agent_spec": CALC, "objective": "2+2?"}
    first = await api.post("/v1/runs", json=body, headers={"Idempotency-Key": "input-1"})
    # The key in the body or the header is the same key; an explicit default is the same body.
    again = await api.post(
        "/v1/runs", json={**body, "mode": "normal", "idempotency_key": "input-1"}
    )
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"]

    other = {"agent_spec": {**CALC, "instructions": "Be terse."}, "objective": "2+2?"}
    error = assert_error(
        await api.post("/v1/runs", json=other, headers={"Idempotency-Key": "input-1"}),
        409, "idempotency_conflict",
    )  # fmt: skip
    assert error["details"] == {"idempotency_key": "input-1"}
    # Refused before anything was made for it: no inline agent of the other spec.
    agents = (await api.get("/v1/agents")).json()
    assert len([a for a in agents if a["name"].startswith("inline-")]) == 1
    assert_error(
        await api.post("/v1/runs", json={"objective": "3+3?", "idempotency_key": "input-1"}),
        409, "idempotency_conflict",
    )  # fmt: skip

    # A run keyed before request hashes were stored accepts any body, as it did.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET request_hash = NULL WHERE id = %s", (first.json()["id"],)
        )
    older = await api.post("/v1/runs", json=other, headers={"Idempotency-Key": "input-1"})
    assert (older.status_code, older.json()["id"]) == (200, first.json()["id"])


async def test_swarms_refuse_a_reused_idempotency_key_too(api: httpx.AsyncClient) -> None:
    body = {"objective": "write a haiku", "idempotency_key": "input-swarm"}
    first = await api.post("/v1/swarms", json=body)
    same = await api.post(
        "/v1/swarms",
        json={"objective": "write a haiku"},
        headers={"Idempotency-Key": "input-swarm"},
    )
    assert (first.status_code, same.status_code) == (201, 200), same.text
    assert same.json()["id"] == first.json()["id"]
    assert_error(
        await api.post("/v1/swarms", json={**body, "objective": "write a sonnet"}),
        409, "idempotency_conflict",
    )  # fmt: skip


def test_openapi_documents_every_error_status_in_the_error_shape(settings: Settings) -> None:
    document = create_app(settings).openapi()
    error = {"$ref": "#/components/schemas/Error"}
    operations = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) > 40
    for method, path, operation in operations:
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        assert {"422", "503"} <= set(responses), where
        if path != "/healthz":
            assert {"401", "403", "429"} <= set(responses), where
        if "{" in path:
            assert "404" in responses, where
        if "requestBody" in operation:
            assert {"400", "413"} <= set(responses), where
        for status, response in responses.items():
            if status[0] in "45" and (path, status) != ("/healthz", "503"):
                assert response["content"]["application/json"]["schema"] == error, where
    assert "409" in document["paths"]["/v1/runs"]["post"]["responses"]
    assert "409" in document["paths"]["/v1/swarms"]["post"]["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_a_request_rate_too_slow_for_postgres_intervals_is_a_422(
    api: httpx.AsyncClient,
) -> None:
    # Found by schemathesis: 5e-324 requests a second was stored, and every later request
    # of the tenant was a 500 (its bucket's interval overflowed).
    for field in ("requests_per_second", "key_requests_per_second"):
        refused = await api.put("/v1/tenant/limits", json={field: 5e-324})
        assert_error(refused, 422, "invalid_request")
    assert (await api.get("/v1/runs")).status_code == 200
