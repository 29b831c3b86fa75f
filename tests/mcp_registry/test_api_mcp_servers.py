"""`/v1/mcp-servers` end to end: the real API, Temporal, workers and third-party MCP servers.

Registration starts `McpDiscoveryWorkflow`, whose activity lists the server's tools on the
tools-lane worker (mcp-server-time and mcp-server-git over stdio, server-everything over
streamable HTTP) and stores them as `mcp:<server>/<tool>`.
"""

import asyncio
import importlib.util
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from activities.tools.framework import ToolContext
from api.main import create_app
from core import temporal as temporal_support
from core import tenants
from core.db import Pool
from core.payloads import ToolCallRequest
from core.queues import TaskQueue
from tests.conftest import make_settings
from tests.mcp._servers import EverythingServer, everything_missing, everything_server
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from workers.main import build_workers
from workers.registry import Resources

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("mcp_server_time", "mcp_server_git")),
        reason="mcp-server-time / mcp-server-git are not installed (pip install -e '.[dev]')",
    ),
]

SECRET_VALUE = "tz-secret-value-8d1f"
TIME_TOOLS = {"mcp:time/get_current_time", "mcp:time/convert_time"}


def time_server(name: str = "time", **fields: Any) -> dict[str, Any]:
    """A stdio registration of mcp-server-time, run with this interpreter."""
    return {
        "name": name,
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
        **fields,
    }


def git_server(name: str, repo: Path) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "mcp_server_git", "--repository", str(repo)],
    }


@dataclass
class Stack:
    http: httpx.AsyncClient
    temporal: Client
    resources: Resources
    keys: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, "mcp-a", "A")
        await tenants.ensure_tenant(conn, "mcp-b", "B")
        _, admin = await tenants.create_api_key(conn, "mcp-a", "admin", role="admin")
        _, member = await tenants.create_api_key(conn, "mcp-a", "member", role="member")
        _, other = await tenants.create_api_key(conn, "mcp-b", "admin", role="admin")
    return {"admin": admin, "member": member, "other": other}


@pytest.fixture(scope="module")
async def stack(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    suffix = f"-mcpreg-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        COLONY_DATA_DIR=str(tmp_path_factory.mktemp("colony-data")),
        COLONY_TASK_QUEUE_SUFFIX=suffix,
    )
    app = create_app(settings)
    client = await temporal_support.connect(settings)
    # The worker's own resources (not tests/support/workers.py): the test reads its MCP
    # pool, and closing it stops every stdio server the workers started.
    resources = Resources(settings, pool)
    try:
        with ThreadPoolExecutor(max_workers=4) as executor:
            workers = build_workers(
                client, [TaskQueue.ORCHESTRATION, TaskQueue.TOOLS], resources,
                executor=executor, task_queue_suffix=suffix, max_cached_workflows=0,
            )  # fmt: skip
            async with AsyncExitStack() as exits:
                await exits.enter_async_context(app.router.lifespan_context(app))
                for worker in workers:
                    await exits.enter_async_context(worker)
                http = await exits.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app),
                        base_url="http://colony",
                        headers={"Authorization": f"Bearer {keys['admin']}"},
                        timeout=60,
                    )
                )
                yield Stack(http, client, resources, keys)
    finally:
        await resources.aclose()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repo")
    git = ["git", "-C", str(path), "-c", "user.name=T", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (path / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    return path


def assert_error(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "details"}
    assert body["error"]["type"] == type_ and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


async def register(stack: Stack, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return await stack.http.post("/v1/mcp-servers", json=body, **kwargs)


def tools_of(server: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in server["tools"]}


async def test_register_a_stdio_server_and_its_tools(stack: Stack) -> None:
    started = time.monotonic()
    created = await register(stack, time_server())
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["transport"], body["status"]) == ("time", "stdio", "ready")
    assert body["last_error"] is None
    assert body["config"]["command"] == sys.executable
    assert set(tools_of(body)) == TIME_TOOLS
    assert all(t["enabled"] and t["version"] == 1 for t in body["tools"])
    discovery = body["discovery"]
    assert discovery["status"] == "ready" and set(discovery["added"]) == TIME_TOOLS
    assert discovery["workflow_id"].startswith("mcp-discovery-mcp-a-time-")
    assert time.monotonic() - started < 20

    listed = {t["name"]: t for t in (await stack.http.get("/v1/tools")).json()}
    current = listed["mcp:time/get_current_time"]
    assert current["kind"] == "mcp" and current["enabled"] is True
    assert current["config"] == {"server": "time", "tool": "get_current_time"}
    assert current["input_schema"]["type"] == "object" and "$schema" not in current["input_schema"]
    assert current["input_schema"]["required"] == ["timezone"]
    assert current["output_schema"] is not None
    assert current["side_effects"] is False  # the server marks it read-only
    assert current["timeout_s"] == 60 and current["description"]
    one = await stack.http.get("/v1/tools/mcp:time/convert_time")
    assert one.status_code == 200 and one.json()["kind"] == "mcp"

    shown = (await stack.http.get("/v1/mcp-servers/time")).json()
    assert shown["status"] == "ready" and set(tools_of(shown)) == TIME_TOOLS
    assert shown["discovery"] is None
    assert "time" in [s["name"] for s in (await stack.http.get("/v1/mcp-servers")).json()]

    # The session discovery opened is the one a call by this tenant reuses.
    opened = stack.resources.mcp.sessions_opened
    async with stack.resources.pool.connection() as conn:
        text = await stack.resources.catalog.run(
            conn,
            "mcp-a",
            ToolCallRequest(
                id="c1", name="mcp:time/get_current_time", arguments='{"timezone": "Asia/Tokyo"}'
            ),
            ToolContext(tenant_id="mcp-a", run_id="r1", step=1, now=datetime.now(UTC)),
        )
    assert '"timezone":"Asia/Tokyo"' in text
    assert stack.resources.mcp.sessions_opened == opened

    handle = stack.temporal.get_workflow_handle(discovery["workflow_id"])
    await assert_replays(handle)
    record_history("mcp_discovery_v1_ready", await handle.fetch_history())


async def test_repeat_and_refresh_keep_versions(stack: Stack) -> None:
    again = await register(stack, time_server())
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["status"] == "ready" and body["discovery"]["added"] == []
    assert body["discovery"]["updated"] == [] and body["discovery"]["disabled"] == []
    assert {t["version"] for t in body["tools"]} == {1}

    opened = stack.resources.mcp.sessions_opened
    refreshed = await stack.http.post("/v1/mcp-servers/time/refresh")
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["status"] == "ready"
    assert set(tools_of(refreshed.json())) == TIME_TOOLS
    assert stack.resources.mcp.sessions_opened == opened + 1  # a refresh reconnects
    assert_error(await stack.http.post("/v1/mcp-servers/nobody/refresh"), 404, "not_found")


async def test_tools_that_disappear_are_disabled_and_come_back(stack: Stack, repo: Path) -> None:
    first = await register(stack, time_server("clock"))
    assert first.json()["status"] == "ready", first.text
    clock_tools = {"mcp:clock/get_current_time", "mcp:clock/convert_time"}
    # Same name, another server behind it: the old tools go, the new ones come.
    swapped = await register(stack, git_server("clock", repo))
    body = swapped.json()
    assert swapped.status_code == 200 and body["status"] == "ready", swapped.text
    assert set(body["discovery"]["disabled"]) == clock_tools
    assert "mcp:clock/git_status" in body["discovery"]["added"]
    enabled = {n for n, t in tools_of(body).items() if t["enabled"]}
    assert "mcp:clock/git_status" in enabled and not enabled & clock_tools
    listed = {t["name"]: t for t in (await stack.http.get("/v1/tools")).json()}
    assert listed["mcp:clock/get_current_time"]["enabled"] is False
    # git_commit writes: no read-only hint, so it has side effects.
    assert listed["mcp:clock/git_commit"]["side_effects"] is True

    back = (await register(stack, time_server("clock"))).json()
    assert back["status"] == "ready"
    assert set(back["discovery"]["added"]) == clock_tools
    assert "mcp:clock/git_status" in back["discovery"]["disabled"]
    assert {n for n, t in tools_of(back).items() if t["enabled"]} == clock_tools
    assert {t["version"] for n, t in tools_of(back).items() if n in clock_tools} == {1}


@pytest.mark.parametrize(
    ("command", "args", "fragment"),
    [
        ("/nonexistent/mcp-server", [], "command was not found"),
        (sys.executable, ["-c", "import sys; sys.exit(3)"], "closed the connection"),
    ],
)
async def test_a_server_that_cannot_start_is_an_error(
    stack: Stack, command: str, args: list[str], fragment: str
) -> None:
    put = await stack.http.put("/v1/secrets/BROKEN_TOKEN", json={"value": SECRET_VALUE})
    assert put.status_code in (200, 201), put.text
    started = time.monotonic()
    response = await register(
        stack,
        {
            "name": "broken",
            "transport": "stdio",
            "command": command,
            "args": args,
            "env": {"BROKEN_TOKEN": {"secret": "BROKEN_TOKEN"}},
        },
    )
    assert response.status_code in (200, 201), response.text
    body = response.json()
    assert body["status"] == "error" and body["tools"] == []
    assert fragment in body["last_error"] and "'broken'" in body["last_error"]
    assert body["discovery"]["status"] == "error" and fragment in body["discovery"]["error"]
    assert SECRET_VALUE not in response.text
    assert body["config"]["env"] == {"BROKEN_TOKEN": {"secret": "BROKEN_TOKEN"}}
    assert time.monotonic() - started < 20  # three quick attempts, no hang
    shown = (await stack.http.get("/v1/mcp-servers/broken")).json()
    assert shown["status"] == "error" and fragment in shown["last_error"]
    handle = stack.temporal.get_workflow_handle(body["discovery"]["workflow_id"])
    await assert_replays(handle)
    if command.startswith("/nonexistent"):
        record_history("mcp_discovery_v1_error", await handle.fetch_history())


async def test_secret_references_resolve_in_the_worker(stack: Stack) -> None:
    put = await stack.http.put("/v1/secrets/TZ_TOKEN", json={"value": SECRET_VALUE})
    assert put.status_code in (200, 201)
    response = await register(
        stack, time_server("time-secret", env={"TZ_TOKEN": {"secret": "TZ_TOKEN"}})
    )
    assert response.status_code == 201 and response.json()["status"] == "ready", response.text
    assert SECRET_VALUE not in response.text
    listed = (await stack.http.get("/v1/mcp-servers")).text
    assert "TZ_TOKEN" in listed and SECRET_VALUE not in listed


async def test_missing_secrets_and_bad_bodies_are_422(stack: Stack) -> None:
    missing = await register(
        stack,
        time_server("nosecret", env={"A_TOKEN": {"secret": "NOPE_1"}, "B": {"secret": "NOPE_2"}}),
    )
    error = assert_error(missing, 422, "invalid_request")
    assert error["details"] == {"missing_secrets": ["NOPE_1", "NOPE_2"]}
    assert "NOPE_1, NOPE_2" in error["message"]
    header = await register(
        stack,
        {"name": "remote", "transport": "http", "url": "http://127.0.0.1:9/mcp",
         "headers": {"Authorization": {"secret": "NOPE_3"}}},
    )  # fmt: skip
    assert assert_error(header, 422, "invalid_request")["details"] == {
        "missing_secrets": ["NOPE_3"]
    }
    bad = [
        ({**time_server(), "name": "Bad Name"}, "server name"),
        ({**time_server(), "command": " "}, "command must not be empty"),
        ({**time_server(), "env": {"API_TOKEN": "abc"}}, "looks like a credential"),
        ({**time_server(), "colour": "red"}, "extra"),
        ({"name": "x", "command": "y"}, "transport"),
        ({"name": "x", "transport": "sse", "url": "http://h/"}, "transport"),
        ({"name": "x", "transport": "http", "url": "ftp://h/"}, "http:// or https://"),
    ]
    for body, fragment in bad:
        error = assert_error(await register(stack, body), 422, "invalid_request")
        assert fragment in str(error["details"]), (body, error)
    for name in ("nosecret", "remote", "Bad Name", "x"):
        assert_error(await stack.http.get(f"/v1/mcp-servers/{name}"), 404, "not_found")


async def test_pending_while_discovery_runs(stack: Stack) -> None:
    response = await register(stack, time_server("later"), params={"wait": 0})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["discovery"]["status"] == "running" and body["status"] == "pending"
    for _ in range(200):
        shown = (await stack.http.get("/v1/mcp-servers/later")).json()
        if shown["status"] != "pending":
            break
        await asyncio.sleep(0.1)
    assert shown["status"] == "ready"
    assert set(tools_of(shown)) == {"mcp:later/get_current_time", "mcp:later/convert_time"}


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EverythingServer]:
    reason = everything_missing()
    if reason is not None:
        pytest.skip(reason)
    with everything_server(log=tmp_path_factory.mktemp("everything") / "server.log") as server:
        yield server


async def test_register_a_streamable_http_server(
    stack: Stack, everything: EverythingServer
) -> None:
    put = await stack.http.put("/v1/secrets/EVERYTHING_AUTH", json={"value": "Bearer xyz"})
    assert put.status_code in (200, 201)
    response = await register(
        stack,
        {"name": "everything", "transport": "streamable_http", "url": everything.url,
         "headers": {"Authorization": {"secret": "EVERYTHING_AUTH"}}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["transport"], body["status"]) == ("http", "ready"), body
    tools = tools_of(body)
    assert "mcp:everything/echo" in tools and len(tools) >= 5
    assert body["config"]["headers"] == {"Authorization": {"secret": "EVERYTHING_AUTH"}}
    assert "Bearer xyz" not in response.text
    echo = (await stack.http.get("/v1/tools/mcp:everything/echo")).json()
    assert echo["kind"] == "mcp" and "message" in echo["input_schema"]["properties"]

    gone = await register(
        stack, {"name": "gone", "transport": "http", "url": "http://127.0.0.1:9/mcp"}
    )
    assert gone.json()["status"] == "error", gone.text
    assert "unavailable" in gone.json()["last_error"]


async def test_delete_disables_the_tools(stack: Stack) -> None:
    assert (await register(stack, time_server("doomed"))).json()["status"] == "ready"
    deleted = await stack.http.delete("/v1/mcp-servers/doomed")
    assert deleted.status_code == 204
    assert_error(await stack.http.get("/v1/mcp-servers/doomed"), 404, "not_found")
    assert_error(await stack.http.delete("/v1/mcp-servers/doomed"), 404, "not_found")
    tool = (await stack.http.get("/v1/tools/mcp:doomed/get_current_time")).json()
    assert tool["enabled"] is False
    # Registering it again brings the same tools back, enabled.
    back = (await register(stack, time_server("doomed"))).json()
    assert {t["enabled"] for t in back["tools"]} == {True}
    assert await stack.http.delete("/v1/mcp-servers/doomed")


async def test_only_admins_change_servers(stack: Stack) -> None:
    member = stack.as_("member")
    assert_error(await register(stack, time_server("m"), headers=member), 403, "forbidden")
    assert_error(
        await stack.http.post("/v1/mcp-servers/time/refresh", headers=member), 403, "forbidden"
    )
    assert_error(await stack.http.delete("/v1/mcp-servers/time", headers=member), 403, "forbidden")
    listed = await stack.http.get("/v1/mcp-servers", headers=member)
    assert listed.status_code == 200 and "time" in [s["name"] for s in listed.json()]
    assert (await stack.http.get("/v1/mcp-servers/time", headers=member)).status_code == 200
    request = stack.http.build_request("GET", "/v1/mcp-servers")
    del request.headers["Authorization"]
    assert_error(await stack.http.send(request), 401, "unauthorized")


async def test_tenants_are_isolated(stack: Stack) -> None:
    other = stack.as_("other")
    assert "time" not in [
        s["name"] for s in (await stack.http.get("/v1/mcp-servers", headers=other)).json()
    ]
    assert_error(await stack.http.get("/v1/mcp-servers/time", headers=other), 404, "not_found")
    assert_error(
        await stack.http.post("/v1/mcp-servers/time/refresh", headers=other), 404, "not_found"
    )
    assert_error(await stack.http.delete("/v1/mcp-servers/time", headers=other), 404, "not_found")
    # Secrets are per tenant too: tenant A's TZ_TOKEN does not exist for B.
    missing = await register(
        stack, time_server("time", env={"TZ_TOKEN": {"secret": "TZ_TOKEN"}}), headers=other
    )
    assert assert_error(missing, 422, "invalid_request")["details"] == {
        "missing_secrets": ["TZ_TOKEN"]
    }
    mine = await register(stack, time_server("time", args=["-m", "mcp_server_time"]), headers=other)
    assert mine.status_code == 201 and mine.json()["status"] == "ready", mine.text
    b_tools = {t["name"] for t in (await stack.http.get("/v1/tools", headers=other)).json()}
    assert TIME_TOOLS <= b_tools and "mcp:clock/git_status" not in b_tools
    assert (await stack.http.delete("/v1/mcp-servers/time", headers=other)).status_code == 204
    a_time = (await stack.http.get("/v1/mcp-servers/time")).json()
    assert a_time["status"] == "ready" and {t["enabled"] for t in a_time["tools"]} == {True}
    assert a_time["config"]["args"][-2:] == ["--local-timezone", "UTC"]
