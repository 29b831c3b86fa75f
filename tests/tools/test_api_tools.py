"""The tool, secret and egress routes (ASGI in-process, real Postgres; no Temporal needed)."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from core import tenants
from core.db import Pool
from core.tools import store as tools
from core.tools.spec import ToolSpec
from tests.conftest import make_settings

SECRET_VALUE = "ghp_super_secret_value_123"


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, "acme", "Acme")
        await tenants.ensure_tenant(conn, "globex", "Globex")
        _, admin = await tenants.create_api_key(conn, "acme", "admin", role="admin")
        _, member = await tenants.create_api_key(conn, "acme", "member", role="member")
        _, other = await tenants.create_api_key(conn, "globex", "admin", role="admin")
    return {"admin": admin, "member": member, "other": other}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("colony-data")


@pytest.fixture
async def api(
    database_url: str, keys: dict[str, str], data_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        DATABASE_URL=database_url, TEMPORAL_ADDRESS="127.0.0.1:1", COLONY_DATA_DIR=str(data_dir)
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://colony",
            headers={"Authorization": f"Bearer {keys['admin']}"},
        ) as client:
            yield client


def as_(keys: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who]}"}


def assert_error(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "details"}
    assert body["error"]["type"] == type_
    error: dict[str, Any] = body["error"]
    return error


def weather(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "weather",
        "description": "Current weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "units": {"type": "string"}},
            "required": ["city"],
        },
        "http": {
            "url_template": "https://api.weather.example/v1/{city}",
            "headers": {"Accept": {"value": "application/json"}},
        },
    }
    body.update(changes)
    return body


async def test_routes_need_a_key(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/tools"),
        ("GET", "/v1/tools/calculator"),
        ("POST", "/v1/tools"),
        ("GET", "/v1/secrets"),
        ("PUT", "/v1/secrets/X"),
        ("GET", "/v1/egress"),
        ("PUT", "/v1/egress"),
    ]:
        request = api.build_request(method, path, json={})
        del request.headers["Authorization"]
        assert_error(await api.send(request), 401, "unauthorized")


async def test_builtin_tools_are_listed(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/tools")
    assert response.status_code == 200, response.text
    listed = {t["name"]: t for t in response.json()}
    for name in ("calculator", "get_time", "http_fetch"):
        assert listed[name]["kind"] == "builtin" and listed[name]["version"] is None
    assert listed["calculator"]["input_schema"]["required"] == ["expression"]
    one = (await api.get("/v1/tools/get_time")).json()
    assert one["name"] == "get_time" and one["stats"]["calls"] == 0
    assert_error(await api.get("/v1/tools/calculator?version=1"), 404, "not_found")


async def test_register_an_http_tool_and_its_versions(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/tools", json=weather())
    assert created.status_code == 201, created.text
    tool = created.json()
    assert (tool["name"], tool["kind"], tool["version"]) == ("weather", "http", 1)
    assert tool["side_effects"] is False and tool["timeout_s"] == 30
    assert tool["config"]["url_template"] == "https://api.weather.example/v1/{city}"
    again = await api.post("/v1/tools", json=weather())
    assert again.status_code == 200 and again.json()["version"] == 1
    changed = await api.post(
        "/v1/tools", json=weather(description="v2", policy={"mode": "requires_approval"})
    )
    assert changed.status_code == 201 and changed.json()["version"] == 2
    latest = (await api.get("/v1/tools/weather")).json()
    assert latest["version"] == 2 and latest["policy"]["mode"] == "requires_approval"
    assert (await api.get("/v1/tools/weather?version=1")).json()["description"] == (
        "Current weather for a city"
    )
    assert_error(await api.get("/v1/tools/weather?version=9"), 404, "not_found")
    names = [t["name"] for t in (await api.get("/v1/tools")).json()]
    assert names.count("weather") == 1
    post = await api.post(
        "/v1/tools",
        json=weather(
            name="create_ticket", http={"url_template": "https://t.example/", "method": "POST"}
        ),
    )
    assert post.status_code == 201 and post.json()["side_effects"] is True


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"input_schema": {"type": "array"}}, '"type": "object"'),
        ({"input_schema": {"type": "object", "properties": {"a": {"type": 12}}}}, "not a valid JSON Schema"),
        ({"http": {"url_template": "https://x.example/{town}"}}, "not properties of input_schema"),
        ({"http": {"url_template": "https://x.example/{units}"}}, "'required'"),
        ({"http": {"url_template": "https://{city}.example/"}}, "not in the host"),
        ({"http": {"url_template": "https://x.example/", "headers": {"Authorization": {"value": "Bearer abc"}}}}, "looks like a credential"),
        ({"http": {"url_template": "https://x.example/", "method": "TRACE"}}, "method"),
        ({"name": "bad name"}, "name"),
        ({"name": "mcp:github/x"}, "name"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"bogus": 1}, "bogus"),
    ],
)  # fmt: skip
async def test_invalid_tools_are_422(
    api: httpx.AsyncClient, changes: dict[str, Any], fragment: str
) -> None:
    error = assert_error(
        await api.post("/v1/tools", json=weather(**changes)), 422, "invalid_request"
    )
    assert fragment in str(error["details"]), error


async def test_reserved_names(api: httpx.AsyncClient) -> None:
    error = assert_error(
        await api.post("/v1/tools", json=weather(name="calculator")), 409, "conflict"
    )
    assert "built-in" in error["message"]
    assert_error(await api.post("/v1/tools", json=weather(name="search")), 422, "invalid_request")


async def test_secret_references_must_exist_and_need_an_admin(
    api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    body = weather(
        name="github_issues",
        http={
            "url_template": "https://api.github.example/issues",
            "headers": {"Authorization": {"secret": "GITHUB_TOKEN"}},
        },
    )
    error = assert_error(await api.post("/v1/tools", json=body), 422, "invalid_request")
    assert error["details"] == {"missing_secrets": ["GITHUB_TOKEN"]}
    assert (
        await api.put("/v1/secrets/GITHUB_TOKEN", json={"value": SECRET_VALUE})
    ).status_code == 201
    assert_error(
        await api.post("/v1/tools", json=body, headers=as_(keys, "member")), 403, "forbidden"
    )
    created = await api.post("/v1/tools", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["config"]["headers"] == {"Authorization": {"secret": "GITHUB_TOKEN"}}
    for response in (created, await api.get("/v1/tools"), await api.get("/v1/tools/github_issues")):
        assert SECRET_VALUE not in response.text
    plain = await api.post(
        "/v1/tools", json=weather(name="member_tool"), headers=as_(keys, "member")
    )
    assert plain.status_code == 201, plain.text


async def test_secrets_are_write_only(api: httpx.AsyncClient, keys: dict[str, str]) -> None:
    put = await api.put("/v1/secrets/API_KEY", json={"value": SECRET_VALUE})
    assert put.status_code == 201 and set(put.json()) == {"name", "created_at", "updated_at"}
    replaced = await api.put("/v1/secrets/API_KEY", json={"value": SECRET_VALUE + "2"})
    assert replaced.status_code == 200
    listed = await api.get("/v1/secrets", headers=as_(keys, "member"))
    assert listed.status_code == 200 and "API_KEY" in [s["name"] for s in listed.json()]
    for response in (put, replaced, listed):
        assert SECRET_VALUE not in response.text
    assert_error(
        await api.put("/v1/secrets/API_KEY", json={"value": "x"}, headers=as_(keys, "member")),
        403,
        "forbidden",
    )
    assert_error(await api.put("/v1/secrets/bad name", json={"value": "x"}), 422, "invalid_request")
    assert_error(await api.put("/v1/secrets/EMPTY", json={"value": ""}), 422, "invalid_request")
    assert (await api.delete("/v1/secrets/API_KEY")).status_code == 204
    assert_error(await api.delete("/v1/secrets/API_KEY"), 404, "not_found")


async def test_egress_allowlist(api: httpx.AsyncClient, keys: dict[str, str]) -> None:
    assert (await api.get("/v1/egress")).json() == {"rules": []}
    rules = [{"pattern": "API.Example.com"}, {"pattern": "*.bücher.de", "port": 8443}]
    put = await api.put("/v1/egress", json={"rules": rules})
    assert put.status_code == 200, put.text
    assert put.json()["rules"] == [
        {"pattern": "*.xn--bcher-kva.de", "port": 8443},
        {"pattern": "api.example.com", "port": None},
    ]
    assert (await api.get("/v1/egress", headers=as_(keys, "member"))).json() == put.json()
    assert_error(
        await api.put("/v1/egress", json={"rules": []}, headers=as_(keys, "member")),
        403,
        "forbidden",
    )
    error = assert_error(
        await api.put("/v1/egress", json={"rules": [{"pattern": "a.*.com"}]}),
        422,
        "invalid_request",
    )
    assert "first label" in str(error["details"])
    assert (await api.get("/v1/egress", headers=as_(keys, "other"))).json() == {"rules": []}


async def test_unknown_tools_and_names_with_slashes(api: httpx.AsyncClient, pool: Pool) -> None:
    error = assert_error(await api.get("/v1/tools/nope"), 404, "not_found")
    assert "'nope'" in error["message"]
    assert_error(await api.get("/v1/tools/mcp:github/create_issue"), 404, "not_found")
    spec = ToolSpec(
        kind="mcp",
        description="Create an issue",
        input_schema={"type": "object"},
        config={"server": "github", "tool": "create_issue"},
    )
    async with pool.connection() as conn:
        await tools.register_tool(conn, "acme", "mcp:github/create_issue", spec)
    found = await api.get("/v1/tools/mcp:github/create_issue")
    assert found.status_code == 200, found.text
    assert found.json()["kind"] == "mcp" and found.json()["name"] == "mcp:github/create_issue"


async def test_stats_show_up_in_the_listing(api: httpx.AsyncClient, pool: Pool) -> None:
    async with pool.connection() as conn:
        for i, ok in enumerate([True, True, True, False]):
            await tools.record_tool_call_stats(conn, "acme", "calculator", ok, 10.0 * (i + 1))
    listed = {t["name"]: t for t in (await api.get("/v1/tools")).json()}
    stats = listed["calculator"]["stats"]
    assert (stats["calls"], stats["successes"], stats["failures"]) == (4, 3, 1)
    assert stats["success_rate"] == 0.75 and stats["p50_ms"] == pytest.approx(25.0)
    assert stats["p95_ms"] == pytest.approx(38.5)


async def test_tenants_do_not_see_each_other(api: httpx.AsyncClient, keys: dict[str, str]) -> None:
    assert (await api.post("/v1/tools", json=weather(name="acme_only"))).status_code == 201
    assert (await api.put("/v1/secrets/ACME_ONLY", json={"value": "v"})).status_code == 201
    other = as_(keys, "other")
    assert_error(await api.get("/v1/tools/acme_only", headers=other), 404, "not_found")
    names = [t["name"] for t in (await api.get("/v1/tools", headers=other)).json()]
    assert "acme_only" not in names and "calculator" in names
    assert "ACME_ONLY" not in (await api.get("/v1/secrets", headers=other)).text
    assert_error(await api.delete("/v1/secrets/ACME_ONLY", headers=other), 404, "not_found")
    calc = (await api.get("/v1/tools/calculator", headers=other)).json()
    assert calc["stats"]["calls"] == 0  # acme's calls are acme's


async def test_register_a_sandboxed_code_tool(api: httpx.AsyncClient) -> None:
    body = {
        "name": "slugify",
        "kind": "code",
        "description": "Turn a title into a URL slug.",
        "input_schema": {
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"],
        },
        "source": "import re\nprint(re.sub(r'[^a-z0-9]+', '-', args['title'].lower()).strip('-'))",
    }
    created = await api.post("/v1/tools", json=body)
    assert created.status_code == 201, created.text
    tool = created.json()
    assert (tool["kind"], tool["side_effects"], tool["config"]["language"]) == (
        "code",
        False,
        "python",
    )
    assert (await api.post("/v1/tools", json=body)).status_code == 200
    assert_error(await api.post("/v1/tools", json={**body, "source": ""}), 422, "invalid_request")
    assert_error(
        await api.post("/v1/tools", json={**body, "language": "cobol"}), 422, "invalid_request"
    )
    assert_error(
        await api.post("/v1/tools", json={**body, "kind": "magic"}), 422, "invalid_request"
    )
    # Schemas are checked as for HTTP tools: bad input is a 422, never a 500.
    for schema in ({"type": "string"}, {"type": "object", "properties": {"x": {"type": 5}}}):
        assert_error(
            await api.post("/v1/tools", json={**body, "input_schema": schema}),
            422,
            "invalid_request",
        )
