"""MCP servers: register (admin), list, show, refresh (admin), delete (admin).

Registering stores the server (its config holds secret references, never values), then
starts `McpDiscoveryWorkflow`, which lists the server's tools on the tools lane (where
stdio servers run) and stores them as `mcp:<server>/<tool>`; the route waits for it up
to `wait` seconds. A discovery still running leaves the server `pending` and goes on in
Temporal; `GET /v1/mcp-servers/{name}` shows the outcome.

Registering, refreshing and deleting need an admin key: a server's env and headers may
send the tenant's secrets to the command or host it names.
"""

import asyncio
import uuid
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from api.deps import AdminDep, PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.schemas.mcp import (
    McpDiscoveryPublic,
    McpServerCreate,
    McpServerPublic,
    McpSkippedToolPublic,
    McpToolPublic,
)
from core import metrics, search_attributes
from core.errors import InvalidInput
from core.queues import TaskQueue
from core.settings import Settings
from core.tools import mcp_servers
from core.tools import secrets as tool_secrets
from core.tools import store as tool_store
from core.tools.mcp import HttpServerConfig, secret_references
from core.tools.mcp_servers import McpDiscoveryInput, McpDiscoveryOutput, McpTransport
from core.tools.spec import MCP_TOOL_PREFIX
from workflows.mcp_discovery import McpDiscoveryWorkflow

router = APIRouter(prefix="/v1/mcp-servers", tags=["tools"])

Wait = Annotated[float, Query(ge=0, le=60, description="seconds to wait for discovery to finish")]
DEFAULT_WAIT_S = 30.0


@router.post(
    "",
    response_model=McpServerPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": McpServerPublic, "description": "an existing server was replaced"}},
)
async def register_mcp_server(
    body: McpServerCreate,
    principal: AdminDep,
    pool: PoolDep,
    client: TemporalDep,
    settings: SettingsDep,
    response: Response,
    wait: Wait = DEFAULT_WAIT_S,
) -> McpServerPublic:
    """Register (or replace) an MCP server and discover its tools (admin only)."""
    tenant_id = principal.tenant_id
    transport: McpTransport = "http" if isinstance(body, HttpServerConfig) else "stdio"
    config = body.model_dump(mode="json", exclude={"name", "transport"})
    async with pool.connection() as conn:
        missing = await tool_secrets.missing_secrets(conn, tenant_id, secret_references(body))
        if missing:
            where = "headers" if transport == "http" else "env"
            raise InvalidInput(
                f"{where} refer to secrets that do not exist: {', '.join(missing)} "
                "(create them with PUT /v1/secrets/NAME)",
                details={"missing_secrets": missing},
            )
        _, created = await mcp_servers.upsert_mcp_server(
            conn, tenant_id, body.name, transport, config
        )
    discovery = await _discover(client, settings, tenant_id, body.name, wait)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await _server(pool, tenant_id, body.name, discovery)


@router.get("", response_model=list[McpServerPublic])
async def list_mcp_servers(principal: PrincipalDep, pool: PoolDep) -> list[McpServerPublic]:
    """The tenant's MCP servers with their tools."""
    async with pool.connection() as conn:
        servers = await mcp_servers.list_mcp_servers(conn, principal.tenant_id)
        tools = await _tools_by_server(conn, principal.tenant_id)
    return [_public(s, tools.get(s.name, [])) for s in servers]


@router.get("/{name}", response_model=McpServerPublic)
async def get_mcp_server(name: str, principal: PrincipalDep, pool: PoolDep) -> McpServerPublic:
    """One MCP server with its tools."""
    return await _server(pool, principal.tenant_id, name)


@router.post("/{name}/refresh", response_model=McpServerPublic)
async def refresh_mcp_server(
    name: str,
    principal: AdminDep,
    pool: PoolDep,
    client: TemporalDep,
    settings: SettingsDep,
    wait: Wait = DEFAULT_WAIT_S,
) -> McpServerPublic:
    """Reconnect and discover the server's tools again (admin only).

    New tools are added, changed ones get a new version, vanished ones are disabled.
    """
    async with pool.connection() as conn:
        await mcp_servers.get_mcp_server(conn, principal.tenant_id, name)  # 404 first
        await mcp_servers.set_mcp_server_status(conn, principal.tenant_id, name, "pending")
    discovery = await _discover(client, settings, principal.tenant_id, name, wait)
    return await _server(pool, principal.tenant_id, name, discovery)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_mcp_server(name: str, principal: AdminDep, pool: PoolDep) -> Response:
    """Remove a server (admin only); its tools stay listed, disabled.

    Registering the server again enables the tools it still has.
    """
    tenant_id = principal.tenant_id
    async with pool.connection() as conn, conn.transaction():
        await mcp_servers.delete_mcp_server(conn, tenant_id, name)
        for tool in (await _tools_by_server(conn, tenant_id)).get(name, []):
            if tool.enabled:
                await tool_store.set_tool_enabled(conn, tenant_id, tool.name, False)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- helpers -------------------------------------------------------------------------


def _workflow_id(tenant_id: str, server: str) -> str:
    return f"mcp-discovery-{tenant_id}-{server}-{uuid.uuid4().hex[:12]}"


async def _discover(
    client: Client, settings: Settings, tenant_id: str, server: str, wait: float
) -> McpDiscoveryPublic:
    """Start a discovery and wait for it up to `wait` seconds."""
    workflow_id = _workflow_id(tenant_id, server)
    handle = await client.start_workflow(
        McpDiscoveryWorkflow.run,
        McpDiscoveryInput(tenant_id=tenant_id, server=server),
        id=workflow_id,
        task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.TENANT, tenant_id),
                SearchAttributePair(search_attributes.KIND, "mcp-discovery"),
                SearchAttributePair(search_attributes.STATUS, "running"),
            ]
        ),
    )
    metrics.WORKFLOWS_STARTED.labels(kind="mcp-discovery").inc()
    link = settings.workflow_ui_link(workflow_id)
    try:
        output: McpDiscoveryOutput = await asyncio.wait_for(handle.result(), wait)
    except TimeoutError:
        return McpDiscoveryPublic(workflow_id=workflow_id, status="running", temporal_ui=link)
    except WorkflowFailureError as exc:
        return McpDiscoveryPublic(
            workflow_id=workflow_id,
            status="error",
            error=f"discovery failed: {exc.cause or exc}",
            temporal_ui=link,
        )
    return McpDiscoveryPublic(
        workflow_id=workflow_id,
        status=output.status,
        added=output.added,
        updated=output.updated,
        disabled=output.disabled,
        skipped=[McpSkippedToolPublic(tool=s.tool, reason=s.reason) for s in output.skipped],
        error=output.error,
        temporal_ui=link,
    )


async def _tools_by_server(conn: tool_store.Conn, tenant_id: str) -> dict[str, list[McpToolPublic]]:
    found: dict[str, list[McpToolPublic]] = defaultdict(list)
    for tool in await tool_store.list_tools(conn, tenant_id, kind="mcp"):
        server, _, remote = tool.name.removeprefix(MCP_TOOL_PREFIX).partition("/")
        found[server].append(
            McpToolPublic(
                name=tool.name,
                tool=str(tool.config.get("tool", remote)),
                version=tool.version,
                description=tool.description,
                side_effects=tool.side_effects,
                enabled=tool.enabled,
            )
        )
    return found


async def _server(
    pool: PoolDep, tenant_id: str, name: str, discovery: McpDiscoveryPublic | None = None
) -> McpServerPublic:
    async with pool.connection() as conn:
        record = await mcp_servers.get_mcp_server(conn, tenant_id, name)
        tools = await _tools_by_server(conn, tenant_id)
    return _public(record, tools.get(name, []), discovery)


def _public(
    record: mcp_servers.McpServer,
    tools: list[McpToolPublic],
    discovery: McpDiscoveryPublic | None = None,
) -> McpServerPublic:
    return McpServerPublic(
        name=record.name,
        transport="stdio" if record.transport == "stdio" else "http",
        config=record.config,
        status=record.status,
        last_error=record.last_error,
        tools=tools,
        created_at=record.created_at,
        updated_at=record.updated_at,
        discovery=discovery,
    )
