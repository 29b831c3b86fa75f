"""The FastAPI application.

Thin: it authenticates, validates, starts and queries workflows and reads Postgres;
agent logic never runs here.

Run with `colony api` (uvicorn, factory `api.main:create_app`).
"""

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from importlib.metadata import version

from fastapi import Depends, FastAPI, Request, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import TracerProvider

from api import errors, inputs, mcp_server, openapi
from api.deps import TemporalHandle
from api.limits import BodySizeLimit
from api.routes import (
    agents,
    codec,
    data_rights,
    evolution,
    health,
    keys,
    mcp_servers,
    memory,
    recipes,
    rollouts,
    runs,
    safety,
    stack_checks,
    swarms,
    tenant,
    timeline,
    tools,
    usage,
)
from core import audit, db, metrics, telemetry, tenants
from core.settings import Settings

log = logging.getLogger("colony.api")


def create_app(
    settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the app; `settings` defaults to the environment.

    Request spans, and the spans of the workflows a request starts, go to
    `tracer_provider`; by default to the global one `core.telemetry.setup_tracing` installs.
    """
    settings = settings or Settings()
    mcp = mcp_server.McpEndpoint(settings) if settings.mcp_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        telemetry.setup_tracing(settings, "colony-api")
        # min_size=0: the API starts even while Postgres is down; /healthz says so.
        async with (
            db.open_pool(settings.effective_database_url, min_size=0, max_size=20) as pool,
            mcp.lifespan() if mcp is not None else nullcontext(),
        ):
            app.state.pool = pool
            yield

    app = FastAPI(
        title="Colony",
        version=version("colony"),
        description="Durable orchestration for AI agents on Temporal.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.api_docs else None,
        dependencies=[Depends(inputs.reject_nul)],
    )
    app.state.settings = settings
    app.state.temporal = TemporalHandle(
        settings,
        tracer=None if tracer_provider is None else tracer_provider.get_tracer("colony.api"),
    )
    errors.install(app)
    openapi.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)

    @app.middleware("http")
    async def record_audit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        principal = getattr(request.state, "principal", None)
        if request.method in audit.MUTATING and principal is not None:
            await _audit(request, principal, response.status_code)
        return response

    @app.middleware("http")
    async def record_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.HTTP_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    codec.install_cors(app, settings)
    app.include_router(health.router)
    app.include_router(codec.router)
    app.include_router(keys.router)
    app.include_router(tenant.router)
    app.include_router(usage.router)
    app.include_router(stack_checks.router)
    app.include_router(agents.router)
    app.include_router(runs.router)
    app.include_router(timeline.router)
    app.include_router(swarms.router)
    app.include_router(recipes.router)
    app.include_router(tools.router)
    app.include_router(mcp_servers.router)
    app.include_router(memory.router)
    app.include_router(evolution.router)
    app.include_router(evolution.runs_router)
    app.include_router(rollouts.router)
    app.include_router(safety.router)
    app.include_router(data_rights.router)
    if mcp is not None:
        # Colony as an MCP server (streamable HTTP: POST, GET and DELETE on one path).
        app.router.routes.append(mcp.route)
    # Outermost middleware: the request's span is current while a route starts a workflow,
    # so the client interceptor carries it into the workflow's headers (one trace).
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        excluded_urls=r"://[^/]*/(healthz|metrics)$",  # probes and scrapes, not agents' /metrics
        exclude_spans=["receive", "send"],
    )
    return app


async def _audit(request: Request, principal: tenants.Principal, status: int) -> None:
    """Write the call's audit entry; a failure is logged, the response stands."""
    route = request.scope.get("route")
    try:
        async with request.app.state.pool.connection() as conn:
            await audit.record(
                conn, tenant_id=principal.tenant_id, key_id=principal.key_id,
                method=request.method, route=getattr(route, "path", request.url.path),
                path=request.url.path, resource=dict(request.path_params), status=status,
            )  # fmt: skip
    except Exception:
        log.exception("could not write the audit entry of %s %s", request.method, request.url.path)
