"""`/healthz` (no auth) and `/metrics` (Prometheus text, auth like every other route)."""

import asyncio
import logging
from importlib.metadata import version

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from api.deps import PrincipalDep, SettingsDep, TemporalHandle
from api.schemas.ops import ComponentPublic, HealthPublic
from core import health, metrics

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/healthz", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def healthz(request: Request, settings: SettingsDep) -> JSONResponse:
    """Each dependency's status; 200 when all are ready, 503 otherwise."""
    handle: TemporalHandle = request.app.state.temporal

    async def temporal() -> health.ComponentStatus:
        try:
            client = await handle.get()
        except Exception as exc:
            return health.ComponentStatus("temporal", False, str(exc))
        return await health.check_temporal(settings, client)

    results = await asyncio.gather(
        health.timed("postgres", lambda: health.check_postgres(settings)),
        health.timed("temporal", temporal),
        health.timed("qdrant", lambda: health.check_qdrant(settings)),
    )
    body = HealthPublic(
        status="ok" if all(r.ok for r in results) else "degraded",
        version=version("colony"),
        components={
            r.name: ComponentPublic(ok=r.ok, detail=r.detail, latency_ms=round(r.latency_ms, 1))
            for r in results
        },
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(
    request: Request, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """Prometheus text exposition of Colony's metrics.

    This process's series, the gauges read from Postgres (live runs, approvals waiting,
    swarm subtasks, evolution cycles, canaries), and the series of the worker endpoints
    in `COLONY_METRICS_TARGETS`, labelled `colony_process`. Keys of the operator tenant
    (`COLONY_METRICS_TENANT`) see every tenant's series; other keys only their own
    tenant's, besides the series that name no tenant.
    """
    tenant = None if principal.tenant_id == settings.metrics_tenant else principal.tenant_id
    state: list[Metric] = []
    try:
        async with request.app.state.pool.connection() as conn:
            state = await metrics.state_families(conn)
    except Exception:  # the scrape still serves the process's own series
        log.warning("could not read the state gauges from Postgres", exc_info=True)
    if settings.metrics_targets:
        body = await metrics.aggregate(
            metrics.REGISTRY, settings.metrics_targets, state, tenant=tenant
        )
    else:
        body = metrics.exposition(metrics.REGISTRY, state, tenant=tenant)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
