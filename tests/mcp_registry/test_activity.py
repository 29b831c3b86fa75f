"""`discover_mcp_server` against real Postgres with a scripted session pool.

The API tests run real servers; these pin what is hard to provoke there: a registration
replaced or deleted while tools are listed, tools that cannot be stored, versions, kept
policies, and how each kind of failure is retried or recorded.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import pytest
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.tools.framework import ToolExecutionError
from activities.tools.mcp_client import DiscoveredTool, McpSessionPool, McpUnavailableError
from activities.tools.mcp_discovery import McpActivities
from core import tenants
from core.db import Pool
from core.tools import mcp_servers
from core.tools import store as tool_store
from core.tools.mcp import McpServerConfig, provider_safe_name, qualified_name
from core.tools.mcp_servers import McpDiscoveryInput, McpDiscoveryOutput
from core.tools.policy import ToolPolicyDefaults

TENANT = "mcp-act"
CONFIG = {"command": "/bin/true", "args": [], "env": {}}


def tool(name: str, **fields: Any) -> DiscoveredTool:
    qualified = qualified_name("srv", name)
    return DiscoveredTool(
        server="srv",
        name=name,
        qualified_name=qualified,
        provider_name=provider_safe_name(qualified),
        **{"input_schema": {"type": "object", "properties": {}}, **fields},
    )


class ScriptedPool:
    """Stands in for `McpSessionPool`: `list_tools` runs `during` and returns `tools`."""

    def __init__(self, tools: list[DiscoveredTool] | Exception) -> None:
        self.tools = tools
        self.during: Callable[[], Any] | None = None
        self.discarded = 0

    async def discard(self, config: McpServerConfig, *, scope: str = "") -> None:
        self.discarded += 1

    async def list_tools(self, config: McpServerConfig, **kwargs: Any) -> list[DiscoveredTool]:
        assert kwargs["scope"] == TENANT
        if self.during is not None:
            await self.during()
        if isinstance(self.tools, Exception):
            raise self.tools
        return self.tools


@pytest.fixture(scope="module", autouse=True)
async def tenant(pool: Pool) -> None:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, TENANT, TENANT)


@pytest.fixture
async def server(pool: Pool) -> str:
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM tools WHERE tenant_id = %s", (TENANT,))
        await mcp_servers.upsert_mcp_server(conn, TENANT, "srv", "stdio", CONFIG)
    return "srv"


async def discover(pool: Pool, scripted: ScriptedPool, *, attempt: int = 1) -> McpDiscoveryOutput:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=attempt, retry_policy=RetryPolicy(maximum_attempts=3)
    )
    activities = McpActivities(pool, cast(McpSessionPool, scripted))
    output: McpDiscoveryOutput = await env.run(
        activities.discover_mcp_server, McpDiscoveryInput(tenant_id=TENANT, server="srv")
    )
    return output


async def record(pool: Pool) -> mcp_servers.McpServer:
    async with pool.connection() as conn:
        return await mcp_servers.get_mcp_server(conn, TENANT, "srv")


async def stored(pool: Pool) -> dict[str, tool_store.StoredTool]:
    async with pool.connection() as conn:
        return {t.name: t for t in await tool_store.list_tools(conn, TENANT, kind="mcp")}


async def test_tools_are_stored_versioned_and_keep_their_policy(pool: Pool, server: str) -> None:
    scripted = ScriptedPool(
        [
            tool(
                "a",
                description="Tool A",
                input_schema={"$schema": "http://json-schema.org/draft-07/schema#",
                              "properties": {"x": {"type": "string"}}},
                output_schema={"type": "object", "properties": {"y": {"type": 7}}},
                side_effects=False,
            ),
            tool("b", title="Bee"),
            tool("bad", input_schema={"type": "array"}),
            tool("odd@name"),
        ]
    )  # fmt: skip
    first = await discover(pool, scripted)
    assert first.status == "ready" and scripted.discarded == 1
    assert first.tools == first.added == ["mcp:srv/a", "mcp:srv/b"]
    assert {s.tool: s.reason for s in first.skipped} == {
        "bad": 'input_schema must be a JSON Schema with "type": "object"',
        "odd@name": "MCP tool names look like 'mcp:SERVER/TOOL', not 'mcp:srv/odd@name'",
    }
    tools = await stored(pool)
    a = tools["mcp:srv/a"]
    assert a.input_schema == {"type": "object", "properties": {"x": {"type": "string"}}}
    assert a.output_schema is None  # invalid: dropped, the tool kept
    assert a.config == {"server": "srv", "tool": "a"} and a.kind == "mcp"
    assert not a.side_effects and a.timeout_s == 60
    assert tools["mcp:srv/b"].description == "Bee" and tools["mcp:srv/b"].side_effects
    assert (await record(pool)).status == "ready"

    # An operator's policy and timeout survive a new version of the tool.
    async with pool.connection() as conn:
        spec = a.spec().model_copy(
            update={"policy": ToolPolicyDefaults(mode="requires_approval"), "timeout_s": 5.0}
        )
        await tool_store.register_tool(conn, TENANT, "mcp:srv/a", spec)
    scripted.tools = [tool("a", description="Tool A, v2"), tool("c")]
    second = await discover(pool, scripted)
    assert (second.added, second.updated, second.disabled) == (
        ["mcp:srv/c"],
        ["mcp:srv/a"],
        ["mcp:srv/b"],
    )
    tools = await stored(pool)
    assert tools["mcp:srv/a"].version == 3 and tools["mcp:srv/a"].timeout_s == 5.0
    assert tools["mcp:srv/a"].policy.mode == "requires_approval"
    assert tools["mcp:srv/b"].enabled is False and tools["mcp:srv/c"].enabled is True


@pytest.mark.parametrize("change", ["replaced", "deleted"])
async def test_a_registration_changed_meanwhile_is_not_overwritten(
    pool: Pool, server: str, change: str
) -> None:
    scripted = ScriptedPool([tool("a")])

    async def meanwhile() -> None:
        async with pool.connection() as conn:
            if change == "deleted":
                await mcp_servers.delete_mcp_server(conn, TENANT, "srv")
            else:
                config = {**CONFIG, "args": ["--other"]}
                await mcp_servers.upsert_mcp_server(conn, TENANT, "srv", "stdio", config)

    scripted.during = meanwhile
    output = await discover(pool, scripted)
    assert output.status == "superseded" and output.tools == []
    fragment = "was deleted" if change == "deleted" else "was registered again"
    assert output.error is not None and fragment in output.error
    assert await stored(pool) == {}
    if change == "replaced":
        assert (await record(pool)).status == "pending"


async def test_unreachable_is_retried_then_recorded(pool: Pool, server: str) -> None:
    down = McpUnavailableError("MCP server 'srv' is unavailable: refused", server="srv")
    with pytest.raises(ApplicationError) as raised:
        await discover(pool, ScriptedPool(down), attempt=1)
    assert raised.value.type == "McpUnavailable" and not raised.value.non_retryable
    assert (await record(pool)).status == "pending"
    output = await discover(pool, ScriptedPool(down), attempt=3)
    assert output.status == "error" and output.error == down.message
    srv = await record(pool)
    assert srv.status == "error" and srv.last_error == down.message


async def test_other_failures_are_recorded_at_once(pool: Pool, server: str) -> None:
    missing = ToolExecutionError("MCP server 'srv': env K references secret 'S', which is not set")
    output = await discover(pool, ScriptedPool(missing), attempt=1)
    assert output.status == "error" and output.error == missing.message
    assert (await record(pool)).last_error == missing.message
    async with pool.connection() as conn:
        await mcp_servers.delete_mcp_server(conn, TENANT, "srv")
    gone = await discover(pool, ScriptedPool([tool("a")]))
    assert gone.status == "error" and gone.error == "MCP server 'srv' is not registered"
