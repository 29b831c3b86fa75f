"""Payloads of MCP server discovery (`McpDiscoveryWorkflow`, `discover_mcp_server`).

A registered server's tools are discovered on the tools lane (stdio servers are child
processes of a tools worker) and stored as tools of kind `mcp` named
`mcp:<server>/<tool>`. The payloads carry names only: the server's config stays in
Postgres, so no history ever holds a command line, URL or secret reference.
"""

from typing import Literal

from pydantic import Field

from core.payloads import Payload

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
