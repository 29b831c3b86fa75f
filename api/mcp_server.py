"""Colony as an MCP server: `/mcp` over streamable HTTP, with the API's keys.

An MCP client (Claude Desktop, an IDE, another agent framework) gets Colony's main
verbs as tools: run an agent or a swarm, read its status and result, query memory,
list agents, rate a run. Each tool calls the HTTP route that does the same thing, so
validation, tenancy and errors are the API's; a tool acts as the tenant of the key
the request came with.

    request ─▶ Host/Origin check (DNS rebinding) ─▶ API key (401) ─▶ session manager
                                                                     └─▶ tool ─▶ route function

Any valid key reaches `/mcp`; each tool needs the scope its HTTP route needs (`read`
for reading, `write` to start runs and swarms, `write` or `eval` for feedback). Every
HTTP request of a session is authenticated again (a revoked key stops at once, and a
waiting `run_agent` checks its key as event streams do), and a session only answers the
key that opened it (the SDK compares `scope["user"]`).
`run_agent` and `run_swarm` with `wait` follow the run's (swarm's) event log and send
one MCP progress notification per event until it finishes.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import version
from typing import Annotated, Final
from urllib.parse import urlsplit

from fastapi import Response
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.deps import TemporalHandle, get_principal
from api.routes import agents as agent_routes
from api.routes import memory as memory_routes
from api.routes import runs as run_routes
from api.routes import swarms as swarm_routes
from api.schemas.memory import MemoryQueryCreate, MemoryQueryPublic
from api.schemas.runs import AgentPublic, FeedbackCreate, FeedbackPublic, RunCreate, RunPublic
from api.schemas.swarms import SwarmCreate, SwarmPublic
from api.sse import KEY_CHECK_SECONDS
from core import tenants
from core.db import Pool
from core.errors import AuthError, ColonyError, PermissionDenied
from core.event_log import Conn, EventRecord
from core.runs import store as runs
from core.settings import LOCAL_HOST, Settings
from core.swarms import store as swarm_store
from core.swarms.plan import SwarmMode

PATH: Final = "/mcp"
POLL_SECONDS: Final = 0.25
DEFAULT_WAIT_S: Final = 600.0
MAX_WAIT_S: Final = 3600.0

_LOCAL_HOSTS: Final = (LOCAL_HOST, "localhost", "[::1]")

INSTRUCTIONS: Final = """\
Colony runs AI agents durably on Temporal. Start a run of one of your agents with
run_agent (list_agents shows them), or a swarm of agents on a larger objective with
run_swarm; read a run or swarm with get_run / get_swarm; recall what agents learnt
with query_memory; rate a finished run with give_feedback."""


def security_settings(settings: Settings) -> TransportSecuritySettings:
    """Which Host and Origin headers `/mcp` accepts (DNS-rebinding protection).

    By default: localhost, 127.0.0.1 and [::1] on any port, the API's own host
    (`COLONY_API_HOST`, unless it listens on every interface) and the host of
    `COLONY_API_URL`; `COLONY_MCP_ALLOWED_HOSTS` / `COLONY_MCP_ALLOWED_ORIGINS` add more.
    A request without an Origin header (not a browser) passes the Origin check.
    """
    hosts = {*_LOCAL_HOSTS}
    if settings.api_host not in ("0.0.0.0", "::", ""):
        hosts.add(f"[{settings.api_host}]" if ":" in settings.api_host else settings.api_host)
    origins: set[str] = set()
    if settings.api_url:
        parts = urlsplit(settings.api_url)
        if parts.hostname:
            hosts.add(parts.netloc.rpartition("@")[2])
            origins.add(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")
    allowed_hosts = {h for host in hosts for h in (host, f"{host}:*")}
    allowed_origins = origins | {f"{scheme}://{host}{port}" for host in hosts
                                 for scheme in ("http", "https") for port in ("", ":*")}  # fmt: skip
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(allowed_hosts | set(settings.mcp_allowed_hosts)),
        allowed_origins=sorted(allowed_origins | set(settings.mcp_allowed_origins)),
    )


class McpEndpoint:
    """The ASGI app at `/mcp`: checks Host/Origin, authenticates the key, serves MCP.

    `lifespan()` runs the SDK's session manager; enter it inside the app's lifespan.
    """

    def __init__(self, settings: Settings) -> None:
        self.server = build_server()
        self._security = security_settings(settings)
        self._max_body_bytes = settings.api_max_body_bytes
        self._guard = TransportSecurityMiddleware(self._security)
        self.route = Route(PATH, self, methods=["GET", "POST", "DELETE"], include_in_schema=False)
        """The API's route to this endpoint (a plain Starlette route: this is an ASGI app)."""

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run a session manager until the context exits.

        It runs in a task of its own: its anyio task group must be left in the task that
        entered it, and an app's lifespan may end in another task than it began in (as
        under async test fixtures).
        """
        # A new session manager each time (one runs only once, and an app's lifespan may
        # run again). The Starlette app this returns is not used: the endpoint is a route
        # of the API, behind the API's middleware.
        self.server.streamable_http_app(
            streamable_http_path=PATH, transport_security=self._security,
            max_request_body_size=self._max_body_bytes,
        )  # fmt: skip
        ready, stop = asyncio.Event(), asyncio.Event()

        async def own() -> None:
            async with self.server.session_manager.run():
                ready.set()
                await stop.wait()

        task = asyncio.create_task(own(), name="mcp-session-manager")
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiting.cancel()
            task.result()  # its failure, raised here
        try:
            yield
        finally:
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request of `/mcp`."""
        # Starlette sets no route for a plain Route; metrics, audit and scopes read it.
        scope["route"] = self.route
        request = Request(scope, receive)
        # Rebinding first: a page that rebinds a name to this host never gets as far as
        # the key check (the transport checks again, and the Content-Type of POSTs).
        refused = await self._guard.validate_request(request)
        if refused is not None:
            await refused(scope, receive, send)
            return
        # ColonyError (401, 503 while Postgres is down) reaches the app's error handlers.
        principal = await get_principal(request, request.app.state.pool)
        # The SDK ties a session to the key that opened it through `scope["user"]`.
        token = AccessToken(
            token=principal.key_id,
            client_id=principal.key_id,
            scopes=list(principal.scopes),
            subject=principal.tenant_id,
        )
        scope["user"] = AuthenticatedUser(token)
        await self.server.session_manager.handle_request(scope, receive, send)


class _Caller:
    """What a tool call acts with: the request's key, and the app's pool, Temporal, settings."""

    def __init__(self, ctx: Context) -> None:
        request = ctx.request_context.request
        if not isinstance(request, Request):
            raise ToolError("Colony's tools are served over HTTP only")
        self.principal: tenants.Principal = request.state.principal
        self.pool: Pool = request.app.state.pool
        self.settings: Settings = request.app.state.settings
        self.temporal: TemporalHandle = request.app.state.temporal
        self.tenant = self.principal.tenant_id

    def need(self, *scopes: tenants.Scope) -> None:
        """Refuse the call unless the key has one of `scopes` (as the HTTP route would).

        Raises:
            PermissionDenied: it has none of them.
        """
        if not any(self.principal.allows(scope) for scope in scopes):
            raise PermissionDenied(
                f"this tool needs an API key with the {' or '.join(map(repr, scopes))} scope"
            )


@contextmanager
def _tool_errors() -> Iterator[None]:
    """Colony's errors and invalid arguments reach the client as the tool's error text."""
    try:
        yield
    except ColonyError as exc:
        raise ToolError(f"{exc.error_type}: {exc.message}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        raise ToolError(f"invalid_request: {problems}") from exc


ListEvents = Callable[[Conn, int], Awaitable[list[EventRecord]]]


async def _follow(
    ctx: Context, caller: _Caller, list_events: ListEvents, terminal: str, timeout_s: float
) -> bool:
    """Report each event as progress until `terminal` (True) or `timeout_s` (False)."""
    deadline = time.monotonic() + timeout_s
    checked = time.monotonic()
    after = 0
    while time.monotonic() < deadline:
        async with caller.pool.connection() as conn:
            if time.monotonic() - checked >= KEY_CHECK_SECONDS:
                # As an open event stream does: a key revoked meanwhile stops the wait.
                if not await tenants.key_is_usable(conn, caller.principal.key_id):
                    raise AuthError("the API key was revoked or has expired")
                checked = time.monotonic()
            events = await list_events(conn, after)
        for event in events:
            after = event.seq
            await ctx.report_progress(event.seq, message=_describe(event))
            if event.type == terminal:
                return True
        if not events:
            await asyncio.sleep(POLL_SECONDS)
    return False


def _describe(event: EventRecord) -> str:
    """A one-line progress message of an event."""
    data = event.data
    for key in ("tool", "name", "role", "status", "outcome"):
        if isinstance(data.get(key), str | int):
            detail = f"{key}={data[key]}"
            break
    else:
        detail = ""
    step = f"step {data['step']}: " if isinstance(data.get("step"), int) else ""
    return f"{step}{event.type} {detail}".strip()


WaitS = Annotated[
    float, Field(gt=0, le=MAX_WAIT_S, description="how long `wait` waits, in seconds")
]


def build_server() -> MCPServer:
    """The MCP server and its tools (no transport)."""
    server = MCPServer(
        name="colony", title="Colony", version=version("colony"), instructions=INSTRUCTIONS
    )
    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    @server.tool(annotations=read_only)
    async def list_agents(ctx: Context) -> list[AgentPublic]:
        """Your agents at their latest versions: name, instructions, model, tools."""
        caller = _Caller(ctx)
        with _tool_errors():
            caller.need("read")
            return await agent_routes.list_agents(caller.principal, caller.pool)

    @server.tool()
    async def run_agent(
        ctx: Context,
        objective: Annotated[str, Field(min_length=1, description="what the agent should do")],
        agent: Annotated[
            str | None, Field(description="the agent's name (default: your `assistant` agent)")
        ] = None,
        wait: Annotated[
            bool,
            Field(
                description="wait for the result, with one progress notification per "
                "event; false returns the queued run at once (read it with get_run)"
            ),
        ] = True,
        wait_s: WaitS = DEFAULT_WAIT_S,
    ) -> RunPublic:
        """Start a run of an agent on an objective; with `wait`, until it finishes."""
        caller = _Caller(ctx)
        with _tool_errors():
            caller.need("write")
            body = RunCreate(objective=objective, agent=agent)
            client = await caller.temporal.get()
            started = await run_routes.create_run(
                body=body, principal=caller.principal, pool=caller.pool, client=client,
                settings=caller.settings, response=Response(), idempotency_key=None,
            )  # fmt: skip
            if not wait:
                return started

            async def events(conn: Conn, after: int) -> list[EventRecord]:
                return await runs.list_events(conn, caller.tenant, started.id, after=after)

            await _follow(ctx, caller, events, "run.finished", wait_s)
            return await run_routes.get_run(
                started.id, caller.principal, caller.pool, client, caller.settings
            )

    @server.tool(annotations=read_only)
    async def get_run(ctx: Context, run_id: Annotated[str, Field(min_length=1)]) -> RunPublic:
        """A run: status, outcome, result, steps, tokens, cost."""
        caller = _Caller(ctx)
        with _tool_errors():
            caller.need("read")
            client = await caller.temporal.get()
            return await run_routes.get_run(
                run_id, caller.principal, caller.pool, client, caller.settings
            )

    @server.tool()
    async def run_swarm(
        ctx: Context,
        objective: Annotated[str, Field(min_length=1, description="the whole task")],
        mode: Annotated[
            SwarmMode, Field(description="how the subtasks run (default: hierarchical)")
        ] = "hierarchical",
        recipe: Annotated[
            str | None, Field(description="run this saved recipe's plan on the objective")
        ] = None,
        wait: Annotated[
            bool,
            Field(
                description="wait for the result, with one progress notification per "
                "event; false returns the queued swarm at once (read it with get_swarm)"
            ),
        ] = False,
        wait_s: WaitS = DEFAULT_WAIT_S,
    ) -> SwarmPublic:
        """Start a swarm: a queen plans subtasks that role agents run, and combines them."""
        caller = _Caller(ctx)
        with _tool_errors():
            caller.need("write")
            body = SwarmCreate(objective=objective, mode=mode, recipe=recipe)
            client = await caller.temporal.get()
            started = await swarm_routes.create_swarm(
                body=body, principal=caller.principal, pool=caller.pool, client=client,
                settings=caller.settings, response=Response(), idempotency_key=None,
            )  # fmt: skip
            if not wait:
                return started

            async def events(conn: Conn, after: int) -> list[EventRecord]:
                return await swarm_store.list_events(conn, caller.tenant, started.id, after=after)

            await _follow(ctx, caller, events, "swarm.finished", wait_s)
            return await swarm_routes.get_swarm(
                started.id, caller.principal, caller.pool, client, caller.settings
            )

    @server.tool(annotations=read_only)
    async def get_swarm(ctx: Context, swarm_id: Annotated[str, Field(min_length=1)]) -> SwarmPublic:
        """A swarm: status, plan, each subtask and its run, result, cost."""
        caller = _Caller(ctx)
        with _tool_errors():
            caller.need("read")
            client = await caller.temporal.get()
            return await swarm_routes.get_swarm(
                swarm_id, caller.principal, caller.pool, client, caller.settings
            )

    @server.tool(annotations=read_only)
    async def query_memory(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, description="what to recall")],
        agent: Annotated[
            str | None, Field(description="that agent's memories and the shared ones")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
    ) -> MemoryQueryPublic:
        """Your memories (episodes, lessons, skills, facts) closest in meaning to `query`."""
        caller = _Caller(ctx)
        with _tool_errors():
            caller.need("read")
            body = MemoryQueryCreate(query=query, agent=agent, limit=limit)
            client = await caller.temporal.get()
            return await memory_routes.query_memory(body, caller.principal, client, caller.settings)

    @server.tool(annotations=ToolAnnotations(idempotentHint=True, openWorldHint=False))
    async def give_feedback(
        ctx: Context,
        run_id: Annotated[str, Field(min_length=1)],
        rating: Annotated[int, Field(ge=1, le=5, description="1 (bad) to 5 (excellent)")],
        comment: str | None = None,
        expected: Annotated[
            str | None, Field(description="the answer the run should have given")
        ] = None,
    ) -> FeedbackPublic:
        """Rate a finished run; it rewards (or not) what the agent learnt from it."""
        caller = _Caller(ctx)
        with _tool_errors():
            caller.need("write", "eval")
            body = FeedbackCreate(rating=rating, comment=comment, expected=expected)
            return await run_routes.feedback(
                run_id, body, caller.principal, caller.pool, caller.temporal, caller.settings
            )

    return server
