"""HTTP bodies of the MCP server routes (`McpServerCreate` in, `McpServerPublic` out).

The request body is core/mcp's registration itself, so the API, config files and the
workers validate one shape with one set of messages:

    {"name": "time", "transport": "stdio", "command": "mcp-server-time", "args": [],
     "env": {"TZ_API_KEY": {"secret": "TZ_KEY"}}}
    {"name": "docs", "transport": "http", "url": "https://mcp.example.com/mcp",
     "headers": {"Authorization": {"secret": "DOCS_AUTH"}}}
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from core.tools.mcp import McpServerConfig
from core.tools.mcp_servers import McpStatus

McpServerCreate = McpServerConfig
"""A registration: `transport` "stdio" (command, args, env) or "http" (url, headers)."""


class McpToolPublic(BaseModel):
    """One tool of a server, as stored (latest version)."""

    name: str
    """`mcp:<server>/<tool>`: what agents list in `tools`."""
    tool: str
    """The server's own name for it."""
    version: int
    description: str
    side_effects: bool
    enabled: bool


class McpSkippedToolPublic(BaseModel):
    """A tool the server lists that could not be registered."""

    tool: str
    reason: str


class McpDiscoveryPublic(BaseModel):
    """The discovery this request started (`running` when it did not finish in time)."""

    workflow_id: str
    status: Literal["running", "ready", "error", "superseded"]
    added: list[str] = []
    updated: list[str] = []
    disabled: list[str] = []
    skipped: list[McpSkippedToolPublic] = []
    error: str | None = None
    temporal_ui: str | None = None


class McpServerPublic(BaseModel):
    """A registered server: its config (secret references, never values), status, tools.

    `status` is `pending` until discovery finishes, then `ready` or `error`
    (`last_error` says why).
    """

    name: str
    transport: Literal["stdio", "http"]
    config: dict[str, Any]
    status: McpStatus
    last_error: str | None = None
    tools: list[McpToolPublic] = []
    created_at: datetime
    updated_at: datetime
    discovery: McpDiscoveryPublic | None = None
