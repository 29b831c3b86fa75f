"""Colony as an MCP server (`/mcp`): the API and real workers on a real port, and three clients.

- the official `mcp` Python client (streamable HTTP);
- an independent one: the TypeScript SDK's Client in `servers/colony_client.mjs` (node);
- the MCP conformance suite's generic server scenarios (`conformance server`, npm).

The conformance CLI cannot send an Authorization header, so its scenarios run against the
same app behind `_with_key`, an ASGI shim in this test that adds a valid key to requests
that carry none; everything else (Host/Origin checks, sessions, tools) is the real app.
"""

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.types import ASGIApp, Receive, Scope, Send

from api.main import create_app
from api.mcp_server import security_settings
from core import temporal as temporal_support
from core import tenants
from core.db import Pool
from core.settings import Settings
from tests.conftest import make_settings
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.swarm_script import SwarmScript, plan_json, subtask
from tests.support.workers import running_workers
from workers.process import free_port

pytestmark = pytest.mark.timeout(180)

SERVERS_DIR = Path(__file__).parent / "servers"
CONFORMANCE_BIN = SERVERS_DIR / "node_modules" / ".bin" / "conformance"
NODE_CLIENT = SERVERS_DIR / "colony_client.mjs"
CALC = {
    "name": "calc",
    "instructions": "Use the calculator.",
    "model": "openai/scripted-model",
    "tools": ["calculator"],
}
TOOLS = {
    "list_agents", "run_agent", "get_run", "run_swarm", "get_swarm", "query_memory",
    "give_feedback",
}  # fmt: skip


@dataclass(frozen=True)
class Served:
    """The API on a real port: its `/mcp` URL and keys of two tenants."""

    url: str
    keys: dict[str, str]
    http: Callable[[str], httpx.AsyncClient]
    """`http(key)`: a plain HTTP client of the API that sends `key`."""
    settings: Settings


@asynccontextmanager
async def serve(app: ASGIApp, port: int) -> AsyncIterator[None]:
    """uvicorn in this process on 127.0.0.1:`port`, lifespan included."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                       timeout_graceful_shutdown=2, lifespan="on")
    )  # fmt: skip
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        task.cancel()
        raise RuntimeError(f"uvicorn did not start on port {port}")
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def _with_key(app: ASGIApp, key: str) -> ASGIApp:
    """`app`, where an HTTP request without an Authorization header gets `key`'s."""

    async def shim(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(k == b"authorization" for k, _ in scope["headers"]):
            scope = {**scope, "headers": [*scope["headers"], (b"authorization", f"Bearer {key}".encode())]}  # fmt: skip
        await app(scope, receive, send)

    return shim


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    return await tenant_keys(pool, "t-mcp", "t-mcp-other")


@pytest.fixture
async def served(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    keys: dict[str, str],
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> AsyncIterator[Served]:
    settings = stack_settings(database_url, temporal.address, model_server.base_url, tmp_path)
    port = free_port()
    client = await temporal_support.connect(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            running_workers(client, settings, pool, suffix=settings.task_queue_suffix)
        )
        await stack.enter_async_context(serve(create_app(settings), port))
        base = f"http://127.0.0.1:{port}"

        def http(key: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )

        yield Served(url=f"{base}/mcp", keys=keys, http=http, settings=settings)


@asynccontextmanager
async def mcp_session(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    """An initialized session of the official Python client."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    body = result.structured_content
    assert isinstance(body, dict), result
    return body.get("result", body) if set(body) == {"result"} else body


async def test_python_client(served: Served, model_server: ScriptedModelServer) -> None:
    async with served.http(served.keys["t-mcp"]) as http:
        created = await http.post("/v1/agents", json=CALC)
        assert created.status_code in (200, 201), created.text
    model_server.script(
        tool_calls(tool_call("calculator", {"expression": "21*2"})), reply("It is 42.")
    )
    async with mcp_session(served.url, served.keys["t-mcp"]) as session:
        assert session.initialize_result is None or session.initialize_result.server_info.name == "colony"  # fmt: skip
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == TOOLS
        assert tools["get_run"].annotations and tools["get_run"].annotations.read_only_hint

        agents = _structured(await session.call_tool("list_agents", {}))
        assert "calc" in {a["name"] for a in agents}

        progress: list[tuple[float, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, message))

        run = _structured(
            await session.call_tool(
                "run_agent", {"agent": "calc", "objective": "21*2?"}, progress_callback=on_progress
            )
        )
        assert (run["status"], run["outcome"], run["result"]) == ("succeeded", "succeeded", "It is 42.")  # fmt: skip
        # One notification per run event, in order, ending with run.finished.
        values = [v for v, _ in progress]
        assert values == sorted(values) and len(values) >= 4, progress
        assert progress[0][1] and "run.started" in progress[0][1]
        assert progress[-1][1] and "run.finished" in progress[-1][1]
        assert any(m and "tool.call" in m for _, m in progress)

        again = _structured(await session.call_tool("get_run", {"run_id": run["id"]}))
        assert again["id"] == run["id"] and again["result"] == "It is 42."

        rated = _structured(
            await session.call_tool(
                "give_feedback", {"run_id": run["id"], "rating": 5, "comment": "right"}
            )
        )
        assert (rated["run_id"], rated["rating"]) == (run["id"], 5)

        memory = _structured(await session.call_tool("query_memory", {"query": "multiplication"}))
        assert memory["query"] == "multiplication" and isinstance(memory["hits"], list)

        # A run started without waiting comes back queued or running.
        model_server.script(reply("Hello."))
        queued = _structured(
            await session.call_tool("run_agent", {"objective": "say hello", "wait": False})
        )
        assert queued["status"] in ("queued", "running") and queued["agent"] == "assistant"

        # Arguments are validated: the agent name pattern of the HTTP API.
        bad = await session.call_tool("run_agent", {"agent": "no spaces!", "objective": "x"})
        assert bad.is_error and "invalid_request" in str(bad.content)

    # MCP's POSTs are in the tenant's audit log like other mutating calls.
    async with served.http(served.keys["t-mcp"]) as http:
        audit = (await http.get("/v1/audit", params={"limit": 500})).json()
        assert {("POST", "/mcp", 200)} <= {(a["method"], a["route"], a["status"]) for a in audit}

    # Another tenant's key: the run does not exist for it.
    async with mcp_session(served.url, served.keys["t-mcp-other"]) as other:
        missing = await other.call_tool("get_run", {"run_id": run["id"]})
        assert missing.is_error and "not_found" in str(missing.content)
        refused = await other.call_tool("give_feedback", {"run_id": run["id"], "rating": 1})
        assert refused.is_error and "not_found" in str(refused.content)
        theirs = _structured(await other.call_tool("list_agents", {}))
        assert "calc" not in {a["name"] for a in theirs}


async def test_keys_and_sessions(served: Served, pool: Pool) -> None:
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}},
    }  # fmt: skip
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=10) as raw:
        for headers in (
            {},
            {"Authorization": "Bearer colony_sk_wrong"},
            {"Authorization": "Basic x"},
        ):
            answer = await raw.post(served.url, json=init, headers={**accept, **headers})
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["type"] == "unauthorized"
            assert answer.headers["www-authenticate"] == "Bearer"

        # Host and Origin are checked before the key (DNS rebinding).
        evil = {"Host": "evil.example.com", "Authorization": f"Bearer {served.keys['t-mcp']}"}
        assert (
            await raw.post(served.url, json=init, headers={**accept, **evil})
        ).status_code == 421
        origin = {"Origin": "http://evil.example.com", "Authorization": f"Bearer {served.keys['t-mcp']}"}  # fmt: skip
        assert (
            await raw.post(served.url, json=init, headers={**accept, **origin})
        ).status_code == 403

        # A session answers only the key that opened it.
        mine = {**accept, "Authorization": f"Bearer {served.keys['t-mcp']}"}
        opened = await raw.post(served.url, json=init, headers=mine)
        assert opened.status_code == 200, opened.text
        session = opened.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        theirs = {**accept, "Authorization": f"Bearer {served.keys['t-mcp-other']}",
                  "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}  # fmt: skip
        assert (await raw.post(served.url, json=ping, headers=theirs)).status_code == 404
        ours = {**mine, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        assert (await raw.post(served.url, json=ping, headers=ours)).status_code == 200

        # Revocation takes effect on the session's next request.
        async with pool.connection() as conn:
            record, key = await tenants.create_api_key(conn, "t-mcp", "short-lived")
        short = {**accept, "Authorization": f"Bearer {key}"}
        opened = await raw.post(served.url, json=init, headers=short)
        assert opened.status_code == 200, opened.text
        short |= {"mcp-session-id": opened.headers["mcp-session-id"],
                  "mcp-protocol-version": "2025-11-25"}  # fmt: skip
        assert (await raw.post(served.url, json=ping, headers=short)).status_code == 200
        async with pool.connection() as conn:
            await tenants.revoke_api_key(conn, "t-mcp", record.id)
        revoked = await raw.post(served.url, json=ping, headers=short)
        assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]


async def test_each_tool_needs_its_scope(served: Served, pool: Pool) -> None:
    async with pool.connection() as conn:
        _, reader = await tenants.create_api_key(conn, "t-mcp", "reader", scopes=["read"])
        _, grader = await tenants.create_api_key(conn, "t-mcp", "grader", scopes=["eval"])
    async with mcp_session(served.url, reader) as session:  # any valid key opens a session
        assert isinstance(_structured(await session.call_tool("list_agents", {})), list)
        for tool, args in (("run_agent", {"objective": "x"}), ("run_swarm", {"objective": "x"}),
                           ("give_feedback", {"run_id": "run_x", "rating": 3})):  # fmt: skip
            refused = await session.call_tool(tool, args)
            assert refused.is_error and "forbidden" in str(refused.content), tool
    async with mcp_session(served.url, grader) as session:
        refused = await session.call_tool("run_agent", {"objective": "x"})
        assert refused.is_error and "forbidden" in str(refused.content)
        # eval may rate runs: past the scope check, the run is not there.
        missing = await session.call_tool("give_feedback", {"run_id": "run_x", "rating": 3})
        assert missing.is_error and "not_found" in str(missing.content)


def test_allowed_hosts_and_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    local = security_settings(make_settings())
    assert {"127.0.0.1:*", "localhost", "localhost:*", "[::1]:*"} <= set(local.allowed_hosts)
    assert {"http://localhost:*", "http://127.0.0.1:*"} <= set(local.allowed_origins)
    assert not any("example" in h for h in local.allowed_hosts)

    # The extra names come from the environment as JSON lists.
    monkeypatch.setenv("COLONY_MCP_ALLOWED_HOSTS", '["colony-api:8000"]')
    monkeypatch.setenv("COLONY_MCP_ALLOWED_ORIGINS", '["https://app.example.com"]')
    public = security_settings(
        make_settings(COLONY_API_HOST="0.0.0.0", COLONY_API_URL="https://colony.example.com")
    )
    assert {"colony.example.com", "colony-api:8000"} <= set(public.allowed_hosts)
    assert not any(h.startswith("0.0.0.0") for h in public.allowed_hosts)
    assert {"https://colony.example.com", "https://app.example.com"} <= set(public.allowed_origins)


async def test_a_swarm(served: Served, model_server: ScriptedModelServer) -> None:
    SwarmScript(
        plans=[plan_json(subtask("a", "analyst"), subtask("d", "writer", ["a"]))],
        synthesis="Both compared.",
    ).install(model_server)
    progress: list[str | None] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async with mcp_session(served.url, served.keys["t-mcp"]) as session:
        swarm = _structured(
            await session.call_tool(
                "run_swarm", {"objective": "Compare two things", "wait": True},
                progress_callback=on_progress,
            )
        )  # fmt: skip
        assert (swarm["status"], swarm["outcome"], swarm["result"]) == (
            "succeeded", "succeeded", "Both compared.",
        )  # fmt: skip
        assert [(s["id"], s["status"]) for s in swarm["subtasks"]] == [
            ("a", "succeeded"), ("d", "succeeded"),
        ]  # fmt: skip
        assert progress[0] and progress[0].startswith("swarm.started")
        assert progress[-1] and progress[-1].startswith("swarm.finished")
        again = _structured(await session.call_tool("get_swarm", {"swarm_id": swarm["id"]}))
        assert again["id"] == swarm["id"] and again["outcome"] == "succeeded"

    async with mcp_session(served.url, served.keys["t-mcp-other"]) as other:
        missing = await other.call_tool("get_swarm", {"swarm_id": swarm["id"]})
        assert missing.is_error and "not_found" in str(missing.content)


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (SERVERS_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        return "npm packages missing: npm ci --prefix tests/mcp/servers"
    return None


async def _node(*args: str, timeout: float = 120) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "node", *args, cwd=SERVERS_DIR,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.skipif(_node_missing() is not None, reason=_node_missing() or "")
async def test_typescript_client(served: Served, model_server: ScriptedModelServer) -> None:
    model_server.script(reply("Paris."))
    code, out = await _node(str(NODE_CLIENT), served.url, served.keys["t-mcp"])
    assert code == 0, out
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report["tools"]) == TOOLS
    assert report["run"]["status"] == "succeeded" and report["run"]["result"] == "Paris."
    assert report["progress"] and report["progress"][-1].startswith("run.finished")
    assert report["refused"] == 401


CONFORMANCE = (
    "server-initialize", "ping", "tools-list", "server-sse-multiple-streams",
    "dns-rebinding-protection",
)  # fmt: skip


@pytest.mark.skipif(
    _node_missing() is not None or not CONFORMANCE_BIN.exists(),
    reason=_node_missing() or "the conformance suite is not installed",
)
async def test_conformance(served: Served, tmp_path: Path) -> None:
    # The suite's client sends no key: a second app on the same stack lends it the
    # first tenant's (see the module docstring).
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    failed = {}
    async with serve(_with_key(create_app(served.settings), served.keys["t-mcp"]), port):
        for scenario in CONFORMANCE:
            code, out = await _node(
                str(CONFORMANCE_BIN), "server", "--url", url, "--scenario", scenario,
                "-o", str(tmp_path / scenario),
            )  # fmt: skip
            if code != 0 or " 0 failed, 0 warnings" not in out:
                failed[scenario] = out[-3000:]
    assert not failed, json.dumps(failed, indent=1)
