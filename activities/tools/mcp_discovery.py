"""Discovery of a registered MCP server's tools, on the tools lane.

    activities = McpActivities(pool, mcp_pool, secret_resolver)   # the worker's MCP pool
    output = await activities.discover_mcp_server(McpDiscoveryInput(tenant_id=t, server=s))

Stdio servers are child processes of a tools worker, so discovery runs where calls run,
through the worker's one `McpSessionPool` with the tenant as session scope: the session
discovery opens is the one the first tool call reuses.

Each listed tool becomes (a version of) a stored tool of kind `mcp` named
`mcp:<server>/<tool>` with config `{"server", "tool"}`; tools the server stopped listing
are disabled. The server record ends `ready`, or `error` with a message that names
commands, hosts and secret names but never a secret's value.

Failures:

    server unreachable, or no answer in time   retried by Temporal; on the last attempt of
                                                the retry policy, recorded as `error`
    a secret missing, tools/list refused        recorded as `error` at once (retrying
                                                cannot help)
    no such server                              `error` in the output, nothing recorded
    deleted or registered again meanwhile       `superseded`, nothing recorded (the server's
                                                row is locked while results are written, so
                                                an older discovery never overwrites a newer
                                                registration)
"""

import copy
import logging
from typing import Final

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.tools.framework import ToolError
from activities.tools.http import SecretResolver
from activities.tools.mcp_client import DEFAULT_CALL_TIMEOUT_S, DiscoveredTool, McpSessionPool
from core.db import Pool
from core.errors import InvalidInput, NotFound
from core.tools import mcp_servers
from core.tools import store as tool_store
from core.tools.mcp import McpServerConfig, parse_server_config
from core.tools.mcp_servers import McpDiscoveryInput, McpDiscoveryOutput, McpSkippedTool
from core.tools.policy import ToolPolicyDefaults
from core.tools.spec import MCP_TOOL_PREFIX, ToolSpec, check_json_schema

logger = logging.getLogger(__name__)

LIST_TIMEOUT_S: Final = 20.0
"""How long tools/list may take once connected (connecting has the pool's own bound)."""
DEFAULT_ATTEMPTS: Final = 3
"""Attempts before an unreachable server is recorded as `error`, when the retry policy
sets no maximum."""
MAX_TOOLS: Final = 500
"""Tools registered per server; more are skipped (a server listing thousands is a bug)."""
MAX_DESCRIPTION_CHARS: Final = 4000

"""`(tenant_id, name) -> value` of a tenant's secret."""


class McpActivities:
    """MCP server discovery, served by the `tools` lane."""

    def __init__(
        self, pool: Pool, mcp: McpSessionPool, secret_resolver: SecretResolver | None = None
    ) -> None:
        self._pool = pool
        self._mcp = mcp
        self._secret = secret_resolver

    @activity.defn(name="discover_mcp_server")
    async def discover_mcp_server(self, input: McpDiscoveryInput) -> McpDiscoveryOutput:
        """List the server's tools, store them as `mcp:<server>/<tool>`, record its status.

        Reconnects first (the config or the server may have changed). An unreachable server
        fails the attempt (retryable) until the retry policy's last attempt, which records
        status `error` and returns; every other failure is recorded at once.
        """
        tenant_id, name = input.tenant_id, input.server
        async with self._pool.connection() as conn:
            try:
                record = await mcp_servers.get_mcp_server(conn, tenant_id, name)
            except NotFound:
                return McpDiscoveryOutput(
                    server=name, status="error", error=f"MCP server {name!r} is not registered"
                )
        try:
            config = parse_server_config(
                {**record.config, "name": record.name, "transport": record.transport}
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            return await self._failed(
                input, f"the stored registration is invalid: {_reason(exc)}", record
            )

        try:
            discovered = await self._list(config, tenant_id)
        except ToolError as exc:
            if exc.retryable and not _last_attempt():
                raise ApplicationError(exc.message, type=exc.error_type.value) from None
            return await self._failed(input, exc.message, record)
        return await self._register(input, record, discovered)

    async def _list(self, config: McpServerConfig, tenant_id: str) -> list[DiscoveredTool]:
        secret = self._secret

        async def resolve(name: str) -> str:
            assert secret is not None
            return await secret(tenant_id, name)

        await self._mcp.discard(config, scope=tenant_id)
        return await self._mcp.list_tools(
            config,
            scope=tenant_id,
            resolve_secret=resolve if secret is not None else None,
            timeout_s=LIST_TIMEOUT_S,
        )

    async def _register(
        self,
        input: McpDiscoveryInput,
        record: mcp_servers.McpServer,
        discovered: list[DiscoveredTool],
    ) -> McpDiscoveryOutput:
        tenant_id, server = input.tenant_id, input.server
        prefix = f"{MCP_TOOL_PREFIX}{server}/"
        registered: list[str] = []
        added: list[str] = []
        updated: list[str] = []
        skipped: list[McpSkippedTool] = []
        async with self._pool.connection() as conn, conn.transaction():
            superseded = await _superseded(conn, record, tenant_id)
            if superseded is not None:
                return McpDiscoveryOutput(server=server, status="superseded", error=superseded)
            existing = {
                t.name: t
                for t in await tool_store.list_tools(conn, tenant_id, kind="mcp")
                if t.name.startswith(prefix)
            }
            for found in discovered:
                if len(registered) >= MAX_TOOLS:
                    skipped.append(
                        McpSkippedTool(
                            tool=found.name, reason=f"the server lists more than {MAX_TOOLS} tools"
                        )
                    )
                    continue
                previous = existing.get(found.qualified_name)
                try:
                    spec = tool_spec(found, previous)
                    stored, created = await tool_store.register_tool(
                        conn, tenant_id, found.qualified_name, spec
                    )
                except (ValueError, InvalidInput) as exc:
                    reason = _reason(exc)
                    logger.warning(
                        "MCP server '%s': skipping tool %r: %s", server, found.name, reason
                    )
                    skipped.append(McpSkippedTool(tool=found.name, reason=reason))
                    continue
                if not stored.enabled:
                    # An identical spec returns the stored row, disabled when the tool had
                    # disappeared (or the server was deleted): it is back.
                    await tool_store.set_tool_enabled(conn, tenant_id, stored.name, True)
                if previous is None or not previous.enabled:
                    added.append(stored.name)
                elif created:
                    updated.append(stored.name)
                registered.append(stored.name)
            listed = set(registered)
            disabled = [n for n, t in existing.items() if n not in listed and t.enabled]
            for gone in disabled:
                await tool_store.set_tool_enabled(conn, tenant_id, gone, False)
            await mcp_servers.set_mcp_server_status(conn, tenant_id, server, "ready")
        logger.info(
            "MCP server '%s' of tenant %s: %d tools (%d added, %d updated, %d disabled)",
            server,
            tenant_id,
            len(registered),
            len(added),
            len(updated),
            len(disabled),
        )
        return McpDiscoveryOutput(
            server=server,
            status="ready",
            tools=registered,
            added=added,
            updated=updated,
            disabled=disabled,
            skipped=skipped,
        )

    async def _failed(
        self, input: McpDiscoveryInput, error: str, record: mcp_servers.McpServer
    ) -> McpDiscoveryOutput:
        async with self._pool.connection() as conn, conn.transaction():
            superseded = await _superseded(conn, record, input.tenant_id)
            if superseded is not None:
                return McpDiscoveryOutput(
                    server=input.server, status="superseded", error=superseded
                )
            await mcp_servers.set_mcp_server_status(
                conn, input.tenant_id, input.server, "error", error
            )
        logger.info("MCP server '%s' of tenant %s: %s", input.server, input.tenant_id, error)
        return McpDiscoveryOutput(server=input.server, status="error", error=error)


async def _superseded(
    conn: tool_store.Conn, record: mcp_servers.McpServer, tenant_id: str
) -> str | None:
    """Why this discovery's outcome no longer applies, or None (the row is then locked).

    The server's row stays locked until the caller's transaction ends, so a registration
    replaced meanwhile (its own discovery follows) is never overwritten by an older one.
    """
    await conn.execute(
        "SELECT 1 FROM mcp_servers WHERE tenant_id = %s AND name = %s FOR UPDATE",
        (tenant_id, record.name),
    )
    try:
        current = await mcp_servers.get_mcp_server(conn, tenant_id, record.name)
    except NotFound:
        return f"MCP server {record.name!r} was deleted during discovery"
    if (current.transport, current.config) != (record.transport, record.config):
        return f"MCP server {record.name!r} was registered again during discovery"
    return None


def tool_spec(found: DiscoveredTool, previous: tool_store.StoredTool | None) -> ToolSpec:
    """The stored spec of a discovered tool.

    The server decides the description, schemas and side effects; the operator's policy
    and timeout of an earlier version are kept.

    Raises:
        ValueError: the input schema is not a JSON Schema for an object, or is too large.
    """
    input_schema = copy.deepcopy(found.input_schema)
    input_schema.pop("$schema", None)  # draft-07 markers; Colony validates with 2020-12
    input_schema.setdefault("type", "object")
    output_schema = copy.deepcopy(found.output_schema) if found.output_schema else None
    if output_schema is not None:
        output_schema.pop("$schema", None)
        try:
            check_json_schema(output_schema, what="output_schema", object_only=False)
        except ValueError:
            output_schema = None  # informative only: an unusable one is dropped, not fatal
    description = (
        found.description.strip()
        or (found.title or "").strip()
        or f"Tool '{found.name}' of MCP server '{found.server}'."
    )
    if len(description) > MAX_DESCRIPTION_CHARS:
        description = description[: MAX_DESCRIPTION_CHARS - 3] + "..."
    return ToolSpec(
        kind="mcp",
        description=description,
        input_schema=input_schema,
        output_schema=output_schema,
        config={"server": found.server, "tool": found.name},
        timeout_s=previous.timeout_s if previous is not None else DEFAULT_CALL_TIMEOUT_S,
        side_effects=found.side_effects,
        policy=previous.policy if previous is not None else ToolPolicyDefaults(),
    )


def _last_attempt() -> bool:
    """Whether this is the retry policy's last attempt of the running activity."""
    info = activity.info()
    policy = info.retry_policy
    maximum = policy.maximum_attempts if policy is not None else 0
    return info.attempt >= (maximum or DEFAULT_ATTEMPTS)


def _reason(exc: Exception) -> str:
    """Why a tool was refused, in one line (pydantic's first error without its frame)."""
    if isinstance(exc, InvalidInput):
        return exc.message
    if isinstance(exc, ValidationError) and exc.errors():
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    else:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message[:500]
