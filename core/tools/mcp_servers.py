"""MCP servers registered per tenant: their rows in Postgres, and the payloads of discovery.

A server's row (`McpServer`) holds its transport and config, with secret names, never
values (`core.tools.mcp` says what a config may hold). A registered server's tools are
discovered on the tools lane (stdio servers are child processes of a tools worker) and
stored as tools of kind `mcp` named `mcp:<server>/<tool>`. The payloads carry names
only: the server's config stays in Postgres, so no history ever holds a command line,
URL or secret reference.
"""

import re
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidInput, NotFound
from core.payloads import Payload
from core.tools.mcp import SERVER_NAME_PATTERN
from core.tools.secrets import inline_credentials

Conn = psycopg.AsyncConnection[Any]

McpTransport = Literal["stdio", "http", "streamable_http"]
"""As core/tools/mcp.py spells them ("streamable_http" is an alias of "http")."""
McpStatus = Literal["pending", "ready", "error", "disabled"]
McpDiscoveryStatus = Literal["ready", "error", "superseded"]


class McpDiscoveryInput(Payload):
    """Input of `McpDiscoveryWorkflow` and `discover_mcp_server`: which server to discover."""

    tenant_id: str
    server: str


class McpSkippedTool(Payload):
    """A tool the server listed but Colony could not register, and why."""

    tool: str
    reason: str


class McpDiscoveryOutput(Payload):
    """What one discovery found and changed.

    `status` is what the server record now says: `ready` (its tools are registered) or
    `error` (`error` says why, never with a secret's value; its earlier tools are left
    as they were); or `superseded`: the server was deleted or registered again while
    this discovery ran, so nothing was recorded (`error` says which). Names are
    qualified (`mcp:<server>/<tool>`).
    """

    server: str
    status: McpDiscoveryStatus
    tools: list[str] = Field(default_factory=list)
    added: list[str] = Field(default_factory=list)
    """New names, or names enabled again after they had disappeared."""
    updated: list[str] = Field(default_factory=list)
    """Names that got a new version (description or schema changed)."""
    disabled: list[str] = Field(default_factory=list)
    """Names the server no longer lists."""
    skipped: list[McpSkippedTool] = Field(default_factory=list)
    error: str | None = None


# -- MCP servers ---------------------------------------------------------------------


class McpServer(BaseModel):
    """A registered MCP server (its config holds secret names, never values)."""

    model_config = ConfigDict(frozen=True)

    name: str
    transport: McpTransport
    config: dict[str, Any]
    status: McpStatus
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime


def _mcp(row: dict[str, Any]) -> McpServer:
    return McpServer.model_validate(dict(row))


_MCP_COLUMNS = "name, transport, config, status, last_error, created_at, updated_at"


async def upsert_mcp_server(
    conn: Conn, tenant_id: str, name: str, transport: McpTransport, config: dict[str, Any]
) -> tuple[McpServer, bool]:
    """Create or replace an MCP server's registration (status back to `pending`).

    Returns (server, created).

    Raises:
        InvalidInput: bad name, or a credential written inline instead of as a secret ref.
    """
    if not re.fullmatch(SERVER_NAME_PATTERN, name):
        raise InvalidInput(f"MCP server name {name!r} must match {SERVER_NAME_PATTERN}")
    inline = inline_credentials(config)
    if inline:
        raise InvalidInput(
            "credentials must be secret references ({'secret': 'NAME'}), not literals",
            details={"fields": inline},
        )
    try:
        cur = await conn.execute(
            "INSERT INTO mcp_servers AS m (tenant_id, name, transport, config)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, name) DO UPDATE SET transport = EXCLUDED.transport,"
            " config = EXCLUDED.config, status = 'pending', last_error = NULL, updated_at = now()"
            f" RETURNING {_MCP_COLUMNS}, (xmax = 0) AS created",
            (tenant_id, name, transport, Jsonb(config)),
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    row = await cur.fetchone()
    assert row is not None
    created = bool(row["created"])
    return _mcp({k: v for k, v in dict(row).items() if k != "created"}), created


async def get_mcp_server(conn: Conn, tenant_id: str, name: str) -> McpServer:
    """One MCP server.

    Raises:
        NotFound: no such server for this tenant.
    """
    cur = await conn.execute(
        f"SELECT {_MCP_COLUMNS} FROM mcp_servers WHERE tenant_id = %s AND name = %s",
        (tenant_id, name),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"MCP server {name!r} not found")
    return _mcp(row)


async def list_mcp_servers(conn: Conn, tenant_id: str) -> list[McpServer]:
    """The tenant's MCP servers, by name."""
    cur = await conn.execute(
        f"SELECT {_MCP_COLUMNS} FROM mcp_servers WHERE tenant_id = %s ORDER BY name",
        (tenant_id,),
    )
    return [_mcp(row) for row in await cur.fetchall()]


async def set_mcp_server_status(
    conn: Conn, tenant_id: str, name: str, status: McpStatus, last_error: str | None = None
) -> None:
    """Record a server's connection status (and the last error, cut to 2,000 characters).

    Raises:
        NotFound: no such server for this tenant.
    """
    cur = await conn.execute(
        "UPDATE mcp_servers SET status = %s, last_error = %s, updated_at = now()"
        " WHERE tenant_id = %s AND name = %s",
        (status, last_error[:2000] if last_error else None, tenant_id, name),
    )
    if cur.rowcount == 0:
        raise NotFound(f"MCP server {name!r} not found")


async def delete_mcp_server(conn: Conn, tenant_id: str, name: str) -> None:
    """Remove an MCP server's registration.

    Raises:
        NotFound: no such server for this tenant.
    """
    cur = await conn.execute(
        "DELETE FROM mcp_servers WHERE tenant_id = %s AND name = %s", (tenant_id, name)
    )
    if cur.rowcount == 0:
        raise NotFound(f"MCP server {name!r} not found")
