"""The MCP client of the tools lane: live sessions to MCP servers, owned by a worker.

    pool = McpSessionPool(resolve_secret)           # one per worker process
    tools = await pool.list_tools(config)           # -> [DiscoveredTool], mcp:<server>/<tool>
    text = await pool.call_tool(config, "get_current_time", {"timezone": "UTC"}, 30)
    definition = mcp_tool_definition(pool, config, tools[0])   # for a ToolRegistry
    await pool.close()                              # on worker shutdown; stops stdio servers

A session is opened on first use and reused by every later call with the same
(scope, server name, config fingerprint). Each lives in a background task that owns the
SDK's transport and session context managers from open to close: anyio cancel scopes must
be entered and left by the same task, while requests may come from any task (the SDK's
dispatcher correlates concurrent requests by id). When the transport dies (the server
process crashed, the HTTP server went away or forgot the session) the call reconnects
once and is sent again; a server still unreachable raises `McpUnavailableError`.

Errors, all `ToolError`s so `run_tool` passes them through unchanged:

    ToolError
    ├── BadToolArgumentsError   the server refused the arguments (JSON-RPC invalid params)
    ├── ToolExecutionError      the tool reported an error (`isError`), the server answered
    │                           with a JSON-RPC error, or a secret cannot be resolved
    └── McpUnavailableError     cannot connect, the connection died twice, or no answer in
                                time; retryable (`McpUnavailable`, or `Timeout` for a
                                call that timed out): the activity should fail and let
                                Temporal retry rather than show it to the model
"""

import asyncio
import contextlib
import contextvars
import copy
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any, Final, TextIO, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp.types as mcp_types
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, ConfigDict, ValidationError

from activities.tools.framework import (
    BadToolArgumentsError,
    ToolContext,
    ToolDefinition,
    ToolError,
    ToolExecutionError,
)
from core.errors import ConfigError, ErrorType
from core.tools.mcp import (
    HttpServerConfig,
    McpServerConfig,
    SecretResolver,
    StdioServerConfig,
    config_fingerprint,
    provider_safe_name,
    qualified_name,
)

logger = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_S: Final = 60.0
DEFAULT_LIST_TIMEOUT_S: Final = 30.0
MAX_TOOL_PAGES: Final = 100
"""Pages of tools/list followed before giving up (a server that never ends its cursor)."""
MAX_MESSAGE_CHARS: Final = 4000
MAX_DESCRIPTION_CHARS: Final = 4000

_CLIENT_INFO = mcp_types.Implementation(name="colony", version="0.1.0")
# The SDK's HTTP defaults, but a connect timeout that matches our own handshake bound.
_HTTP_READ_TIMEOUT_S: Final = 300.0
# Beyond the call timeout the SDK enforces: a write stuck on a full pipe, say.
_BACKSTOP_S: Final = 5.0

_T = TypeVar("_T")


class McpUnavailableError(ToolError):
    """The MCP server cannot be reached, keeps dying, or did not answer in time (retryable)."""

    error_type = ErrorType.MCP_UNAVAILABLE

    def __init__(self, message: str, *, server: str, error_type: ErrorType | None = None) -> None:
        super().__init__(message, error_type=error_type)
        self.server = server


class DiscoveredTool(BaseModel):
    """A tool an MCP server lists, with Colony's names for it.

    The annotations are the server's hints (MCP defaults when absent): `read_only`
    False, `destructive` True, `idempotent` False, `open_world` True. `side_effects`
    is `not read_only`.
    """

    model_config = ConfigDict(frozen=True)

    server: str
    name: str
    qualified_name: str
    provider_name: str
    title: str | None = None
    description: str = ""
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = True
    side_effects: bool = True


def _discovered(server: str, tool: mcp_types.Tool) -> DiscoveredTool:
    hints = tool.annotations
    read_only = bool(hints and hints.read_only_hint)
    qualified = qualified_name(server, tool.name)

    def hint(value: bool | None, default: bool) -> bool:
        return default if value is None else value

    return DiscoveredTool(
        server=server,
        name=tool.name,
        qualified_name=qualified,
        provider_name=provider_safe_name(qualified),
        title=tool.title or (hints.title if hints else None),
        description=tool.description or "",
        input_schema=dict(tool.input_schema),
        output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
        read_only=read_only,
        destructive=hint(hints.destructive_hint if hints else None, not read_only),
        idempotent=hint(hints.idempotent_hint if hints else None, False),
        open_world=hint(hints.open_world_hint if hints else None, True),
        side_effects=not read_only,
    )


# -- rendering -----------------------------------------------------------------------


def render_result(result: mcp_types.CallToolResult) -> str:
    """The compact text a model reads for a tool result.

    Text blocks as they are (a block that is the JSON of `structuredContent` is re-encoded
    compactly); images, audio and binary resources as a one-line note; embedded text
    resources with their URI; resource links as a line; `structuredContent` as compact
    JSON unless a text block already carries it.
    """
    structured = result.structured_content
    parts: list[str] = []
    carried = False
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            if structured is not None and _json_equals(block.text, structured):
                parts.append(_compact_json(structured))
                carried = True
            else:
                parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent):
            parts.append(f"[image {block.mime_type}, {_b64_size(block.data)} not shown]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio {block.mime_type}, {_b64_size(block.data)} not shown]")
        elif isinstance(block, mcp_types.ResourceLink):
            label = f" ({block.name})" if block.name and block.name != str(block.uri) else ""
            about = f": {block.description}" if block.description else ""
            parts.append(f"[resource link {block.uri}{label}{about}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(f"[resource {resource.uri}]\n{resource.text}")
            else:
                mime = resource.mime_type or "binary"
                parts.append(
                    f"[resource {resource.uri}, {mime}, {_b64_size(resource.blob)} not shown]"
                )
        else:
            parts.append(f"[{getattr(block, 'type', 'unknown')} content not shown]")
    if structured is not None and not carried:
        parts.append(_compact_json(structured))
    return "\n".join(parts) if parts else "(no output)"


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _json_equals(text: str, value: Any) -> bool:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return False
    try:
        return bool(json.loads(stripped) == value)
    except ValueError:
        return False


def _b64_size(data: str) -> str:
    size = len(data) * 3 // 4 - data.count("=", -2)
    if size >= 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size} bytes"


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- connections ---------------------------------------------------------------------


def _target(config: McpServerConfig) -> str:
    """Where the server is, for messages: the command, or the URL without its query."""
    if isinstance(config, StdioServerConfig):
        return f"command '{config.command}'"
    parts = urlsplit(config.url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from anyio task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe_failure(exc: BaseException, connect_timeout_s: float) -> str:
    leaf = _leaf(exc)
    if isinstance(leaf, TimeoutError):
        return f"no answer to the MCP handshake within {connect_timeout_s:g}s"
    if isinstance(leaf, FileNotFoundError):
        return "the command was not found"
    if isinstance(leaf, PermissionError):
        return "the command is not executable"
    if isinstance(leaf, MCPError) and _connection_lost(leaf):
        return "the server closed the connection during the MCP handshake (did it exit?)"
    if isinstance(leaf, httpx2.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(leaf, httpx2.TimeoutException):
        return f"the HTTP request timed out ({type(leaf).__name__})"
    if isinstance(leaf, MCPError):
        return f"the server answered the handshake with an error: {_clip(leaf.message, 300)}"
    return f"{type(leaf).__name__}"


def _connection_lost(exc: MCPError) -> bool:
    """Whether the error means the session is gone (not that the request failed).

    Besides a closed connection, the streamable HTTP transport turns an HTTP error status
    into a stand-in JSON-RPC error: 404 for a known session (the server forgot it, as the
    spec says it must after a restart), and any other status without a JSON-RPC body
    (servers that answer an unknown session with 400, a proxy's 502...). Both are worth
    one reconnect.
    """
    if exc.code == mcp_types.CONNECTION_CLOSED:
        return True
    if exc.code == mcp_types.INVALID_REQUEST and exc.message == "Session terminated":
        return True
    return (
        exc.code == mcp_types.INTERNAL_ERROR and exc.message == "Server returned an error response"
    )


class _Connection:
    """One live session, owned by a background task from open to close."""

    def __init__(
        self,
        config: McpServerConfig,
        key: tuple[str, str, str],
        *,
        resolve_secret: SecretResolver | None,
        connect_timeout_s: float,
        errlog: TextIO,
    ) -> None:
        self.config = config
        self.key = key
        self.session: ClientSession | None = None
        self.broken = False
        self.last_used = time.monotonic()
        self.in_flight = 0
        self._resolve_secret = resolve_secret
        self._connect_timeout_s = connect_timeout_s
        self._errlog = errlog
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return (
            self.session is not None
            and not self.broken
            and self._task is not None
            and not self._task.done()
        )

    async def open(self) -> ClientSession:
        """Start the owner task and wait until the session is initialized.

        Raises:
            ConfigError: a referenced secret cannot be resolved.
            BaseException: whatever failed while connecting (see `_describe_failure`).
        """
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[ClientSession] = loop.create_future()
        # Nobody may be waiting any more (a cancelled caller); retrieve the outcome anyway.
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        # A fresh context: the owner outlives the activity that happened to open it.
        self._task = loop.create_task(
            self._own(ready), name=f"mcp-session-{self.config.name}", context=contextvars.Context()
        )
        try:
            async with asyncio.timeout(self._connect_timeout_s + _BACKSTOP_S):
                return await asyncio.shield(ready)
        except TimeoutError:
            await self.close(_BACKSTOP_S)
            raise

    async def _own(self, ready: asyncio.Future[ClientSession]) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await self._enter_transport(stack)
                session = await stack.enter_async_context(
                    ClientSession(read, write, client_info=_CLIENT_INFO)
                )
                with anyio.fail_after(self._connect_timeout_s):
                    await session.initialize()
                self.session = session
                if not ready.done():
                    ready.set_result(session)
                await self._stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not self._stop.is_set():
                logger.warning(
                    "MCP server '%s' connection ended: %s",
                    self.config.name,
                    _describe_failure(exc, self._connect_timeout_s),
                )
        finally:
            self.broken = True
            if not ready.done():
                ready.cancel()

    async def _enter_transport(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        config = self.config
        if isinstance(config, StdioServerConfig):
            params = StdioServerParameters(
                command=config.command,
                args=list(config.args),
                env=await config.resolved_env(self._resolve_secret),
            )
            return await stack.enter_async_context(stdio_client(params, errlog=self._errlog))
        assert isinstance(config, HttpServerConfig)
        headers = await config.resolved_headers(self._resolve_secret)
        timeout = httpx2.Timeout(
            _HTTP_READ_TIMEOUT_S, connect=self._connect_timeout_s, read=_HTTP_READ_TIMEOUT_S
        )
        # What the SDK's default client is (redirects are the transport's business), plus
        # our headers and connect timeout.
        client = await stack.enter_async_context(
            httpx2.AsyncClient(headers=headers, timeout=timeout)
        )
        streams = await stack.enter_async_context(
            streamable_http_client(config.url, http_client=client)
        )
        return streams[0], streams[1]

    async def close(self, timeout_s: float) -> None:
        """Stop the owner task (it closes the session and stops a stdio server), bounded."""
        self.broken = True
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        _, pending = await asyncio.wait({task}, timeout=timeout_s)
        if pending:
            logger.warning(
                "MCP server '%s' did not close in %ss; cancelling", self.config.name, timeout_s
            )
            task.cancel()
            await asyncio.wait({task}, timeout=_BACKSTOP_S)


class McpSessionPool:
    """A worker's MCP sessions: one per (scope, server name, config fingerprint).

    `scope` keeps tenants apart: two tenants with identical registrations still get
    separate sessions (their secrets may differ, and so may the server's state). Secrets
    are resolved when a session opens; a rotated secret takes effect on the next
    reconnect, or at once after `discard()`. Sessions unused for `idle_timeout_s` are
    closed on the next acquire.
    """

    def __init__(
        self,
        resolve_secret: SecretResolver | None = None,
        *,
        connect_timeout_s: float = 20.0,
        close_timeout_s: float = 10.0,
        idle_timeout_s: float | None = 900.0,
        errlog: TextIO | None = None,
    ) -> None:
        self._resolve_secret = resolve_secret
        self._connect_timeout_s = connect_timeout_s
        self._close_timeout_s = close_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._errlog_arg = errlog
        self._devnull: IO[str] | None = None
        self._connections: dict[tuple[str, str, str], _Connection] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self.sessions_opened = 0
        """Sessions successfully opened so far (reuse keeps this low)."""

    @property
    def live_sessions(self) -> int:
        """Sessions currently open."""
        return sum(1 for c in self._connections.values() if c.usable)

    async def __aenter__(self) -> "McpSessionPool":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def list_tools(
        self,
        config: McpServerConfig,
        *,
        scope: str = "",
        resolve_secret: SecretResolver | None = None,
        timeout_s: float = DEFAULT_LIST_TIMEOUT_S,
    ) -> list[DiscoveredTool]:
        """Every tool the server lists, named `mcp:<server>/<tool>`.

        Tools whose names cannot be qualified (whitespace, too long) are skipped with a
        warning.

        Raises:
            McpUnavailableError: the server cannot be reached or did not answer in time.
            ToolExecutionError: the server answered tools/list with an error.
        """

        async def list_all(session: ClientSession) -> list[mcp_types.Tool]:
            tools: list[mcp_types.Tool] = []
            cursor: str | None = None
            for _ in range(MAX_TOOL_PAGES):
                params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools

        listed = await self._request(
            config, scope, resolve_secret, list_all, what="tools/list", timeout_s=timeout_s
        )
        discovered: list[DiscoveredTool] = []
        for tool in listed:
            try:
                discovered.append(_discovered(config.name, tool))
            except ValueError as exc:
                logger.warning("MCP server '%s': skipping tool %r: %s", config.name, tool.name, exc)
        return discovered

    async def call_tool(
        self,
        config: McpServerConfig,
        tool: str,
        arguments: dict[str, Any],
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        *,
        scope: str = "",
        resolve_secret: SecretResolver | None = None,
    ) -> str:
        """Call `tool` (the server's own name for it) and render the result for a model.

        Raises:
            ToolExecutionError: the tool reported an error (`isError`; the message is the
                server's) or the server answered with a JSON-RPC error.
            BadToolArgumentsError: the server refused the arguments.
            McpUnavailableError: the server cannot be reached, the connection died again
                after one reconnect, or no answer within `timeout_s` (type `Timeout`).
        """

        async def call(session: ClientSession) -> mcp_types.CallToolResult:
            return await session.call_tool(tool, arguments, read_timeout_seconds=timeout_s)

        result = await self._request(
            config, scope, resolve_secret, call, what=f"tools/call '{tool}'", timeout_s=timeout_s
        )
        text = render_result(result)
        if result.is_error:
            raise ToolExecutionError(_clip(text if result.content else "the tool failed"))
        return text

    async def connect(
        self,
        config: McpServerConfig,
        *,
        scope: str = "",
        resolve_secret: SecretResolver | None = None,
    ) -> None:
        """Open the session now if it is not open (a warm-up, or a registration check).

        Raises:
            McpUnavailableError: the server cannot be reached.
            ToolExecutionError: a referenced secret cannot be resolved.
        """
        await self._acquire(config, scope, resolve_secret)

    async def discard(self, config: McpServerConfig, *, scope: str = "") -> None:
        """Close the session for this registration, if any (the next call reconnects)."""
        conn = self._connections.pop(self._key(config, scope), None)
        if conn is not None:
            await conn.close(self._close_timeout_s)

    async def close(self) -> None:
        """Close every session and stop every stdio server; later calls fail."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(
            *(c.close(self._close_timeout_s) for c in connections),
            *list(self._retiring),
            return_exceptions=True,
        )
        if self._devnull is not None:
            self._devnull.close()
            self._devnull = None

    # -- internals --

    def _key(self, config: McpServerConfig, scope: str) -> tuple[str, str, str]:
        return (scope, config.name, config_fingerprint(config))

    def _errlog(self) -> TextIO:
        """Where stdio servers write stderr: ours when it is a real file, else /dev/null."""
        stream = self._errlog_arg or sys.stderr
        try:
            stream.fileno()
        except (AttributeError, OSError, ValueError):
            if self._devnull is None:
                self._devnull = open(os.devnull, "w")  # closed in close()
            return cast(TextIO, self._devnull)
        return stream

    async def _request(
        self,
        config: McpServerConfig,
        scope: str,
        resolve_secret: SecretResolver | None,
        operation: Callable[[ClientSession], Awaitable[_T]],
        *,
        what: str,
        timeout_s: float,
    ) -> _T:
        """Run `operation` on the server's session; reconnect once if the session died."""
        for attempt in (1, 2):
            conn = await self._acquire(config, scope, resolve_secret)
            assert conn.session is not None
            conn.last_used = time.monotonic()
            conn.in_flight += 1
            try:
                with anyio.fail_after(timeout_s + _BACKSTOP_S):
                    return await operation(conn.session)
            except MCPError as exc:
                if _connection_lost(exc):
                    self._retire(conn)
                    if attempt == 1:
                        logger.info("MCP server '%s' connection lost; reconnecting", config.name)
                        continue
                    raise McpUnavailableError(
                        f"MCP server '{config.name}' ({_target(config)}) closed the connection "
                        f"during {what} again after a reconnect",
                        server=config.name,
                    ) from None
                if exc.code == mcp_types.REQUEST_TIMEOUT:
                    raise self._timeout(config, what, timeout_s) from None
                raise _server_error(config.name, what, exc) from None
            except TimeoutError:
                self._retire(conn)
                raise self._timeout(config, what, timeout_s) from None
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._retire(conn)
                if attempt == 1:
                    continue
                raise McpUnavailableError(
                    f"MCP server '{config.name}' ({_target(config)}): the connection broke "
                    f"during {what} again after a reconnect",
                    server=config.name,
                ) from None
            except (RuntimeError, ValidationError) as exc:
                # The SDK's checks of the answer: output schema, unexpected result shapes.
                raise ToolExecutionError(
                    f"MCP server '{config.name}' gave an invalid answer to {what}: "
                    f"{_clip(str(exc), 500)}"
                ) from None
            finally:
                conn.in_flight -= 1
                conn.last_used = time.monotonic()
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout(self, config: McpServerConfig, what: str, timeout_s: float) -> McpUnavailableError:
        return McpUnavailableError(
            f"MCP server '{config.name}' did not answer {what} within {timeout_s:g}s",
            server=config.name,
            error_type=ErrorType.TIMEOUT,
        )

    async def _acquire(
        self, config: McpServerConfig, scope: str, resolve_secret: SecretResolver | None
    ) -> _Connection:
        if self._closed:
            raise McpUnavailableError(
                f"MCP server '{config.name}': the worker is shutting down", server=config.name
            )
        self._reap_idle()
        key = self._key(config, scope)
        conn = self._connections.get(key)
        if conn is not None and conn.usable:
            return conn
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._connections.get(key)
            if conn is not None and conn.usable:
                return conn
            if conn is not None:
                self._retire(conn)
            conn = _Connection(
                config,
                key,
                resolve_secret=resolve_secret or self._resolve_secret,
                connect_timeout_s=self._connect_timeout_s,
                errlog=self._errlog(),
            )
            started = time.perf_counter()
            try:
                await conn.open()
            except asyncio.CancelledError:
                # The owner task goes on connecting; make sure it stops again.
                self._retire(conn)
                raise
            except ConfigError as exc:
                raise ToolExecutionError(exc.message) from None
            except Exception as exc:
                await conn.close(self._close_timeout_s)
                reason = _describe_failure(exc, self._connect_timeout_s)
                raise McpUnavailableError(
                    f"MCP server '{config.name}' is unavailable ({_target(config)}): {reason}",
                    server=config.name,
                ) from None
            if self._closed:  # the pool closed while we connected
                await conn.close(self._close_timeout_s)
                raise McpUnavailableError(
                    f"MCP server '{config.name}': the worker is shutting down", server=config.name
                )
            self.sessions_opened += 1
            logger.info(
                "MCP server '%s' connected in %.0f ms",
                config.name,
                (time.perf_counter() - started) * 1000,
            )
            self._connections[key] = conn
            return conn

    def _retire(self, conn: _Connection) -> None:
        """Drop a connection and close it in the background (close() waits for it)."""
        conn.broken = True
        if self._connections.get(conn.key) is conn:
            del self._connections[conn.key]
        task = asyncio.get_running_loop().create_task(conn.close(self._close_timeout_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _reap_idle(self) -> None:
        if self._idle_timeout_s is None:
            return
        deadline = time.monotonic() - self._idle_timeout_s
        for conn in list(self._connections.values()):
            if conn.in_flight == 0 and conn.last_used < deadline:
                self._retire(conn)


def _server_error(server: str, what: str, exc: MCPError) -> ToolError:
    message = f"MCP server '{server}' refused {what}: {_clip(exc.message)}"
    if exc.code == mcp_types.INVALID_PARAMS:
        return BadToolArgumentsError(message)
    return ToolExecutionError(message)


# -- registry integration ------------------------------------------------------------


def mcp_tool_definition(
    pool: McpSessionPool,
    config: McpServerConfig,
    discovered: DiscoveredTool,
    *,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    resolve_secret: SecretResolver | None = None,
) -> ToolDefinition:
    """A `ToolDefinition` named `discovered.provider_name` whose handler calls through `pool`.

    The handler's session scope is the caller's tenant (`ToolContext.tenant_id`).

    Raises:
        ValueError: the tool belongs to another server, or its input schema is not a JSON
            Schema for an object.
    """
    if discovered.server != config.name:
        raise ValueError(
            f"tool {discovered.qualified_name!r} does not belong to MCP server {config.name!r}"
        )
    parameters = copy.deepcopy(discovered.input_schema)
    parameters.pop("$schema", None)  # noise for the model; validation uses draft 2020-12
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    description = (
        discovered.description
        or discovered.title
        or (f"Tool '{discovered.name}' of MCP server '{config.name}'.")
    )

    async def handler(arguments: dict[str, Any], ctx: ToolContext) -> str:
        return await pool.call_tool(
            config,
            discovered.name,
            arguments,
            timeout_s,
            scope=ctx.tenant_id,
            resolve_secret=resolve_secret,
        )

    try:
        return ToolDefinition(
            name=discovered.provider_name,
            description=_clip(description, MAX_DESCRIPTION_CHARS),
            parameters=parameters,
            side_effects=discovered.side_effects,
            handler=handler,
        )
    except Exception as exc:  # jsonschema's SchemaError is not a ValueError
        raise ValueError(
            f"MCP tool {discovered.qualified_name!r} has an unusable input schema: "
            f"{_clip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 300)}"
        ) from None
