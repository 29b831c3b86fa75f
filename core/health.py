"""Health checks of Colony's dependencies, shared by `/healthz` and `colony doctor`.

Each check returns a `ComponentStatus` (never raises) with the fix for anything that
is not ready.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import psycopg
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue as TaskQueueProto
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, GetSystemInfoRequest
from temporalio.client import Client

from core import db
from core.queues import TaskQueue
from core.settings import Settings


@dataclass(frozen=True)
class ComponentStatus:
    """One row of the health report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    latency_ms: float = 0.0


async def timed(
    name: str, check: Callable[[], Awaitable[ComponentStatus]], limit: float = 5.0
) -> ComponentStatus:
    """Run a check with a timeout, turning exceptions into a failed status."""
    started = time.perf_counter()
    try:
        status = await asyncio.wait_for(check(), limit)
    except TimeoutError:
        status = ComponentStatus(name, False, f"no answer within {limit:.0f}s")
    except Exception as exc:
        status = ComponentStatus(name, False, f"{type(exc).__name__}: {exc}".strip())
    return ComponentStatus(
        status.name, status.ok, status.detail, status.fix, (time.perf_counter() - started) * 1000
    )


async def check_postgres(settings: Settings) -> ComponentStatus:
    """Postgres answers and the schema is at the latest migration."""
    url = settings.effective_database_url
    fix = "start the stack (`colony up`) or check DATABASE_URL"
    try:
        version = await db.schema_version(url)
    except psycopg.Error as exc:
        return ComponentStatus("postgres", False, str(exc).strip().splitlines()[0], fix)
    if version < db.LATEST_SCHEMA_VERSION:
        return ComponentStatus(
            "postgres", False, f"schema version {version}, expected {db.LATEST_SCHEMA_VERSION}",
            "run `colony migrate`",
        )  # fmt: skip
    return ComponentStatus("postgres", True, f"schema version {version}")


async def check_temporal(settings: Settings, client: Client | None = None) -> ComponentStatus:
    """The Temporal frontend answers for our namespace."""
    address = settings.effective_temporal_address
    fix = "start the stack (`colony up`) or check TEMPORAL_ADDRESS"
    try:
        if client is None:
            client = await Client.connect(address, namespace=settings.temporal_namespace)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    except Exception as exc:
        return ComponentStatus("temporal", False, f"{address}: {exc}", fix)
    return ComponentStatus(
        "temporal",
        True,
        f"{address}, namespace {settings.temporal_namespace}, server {info.server_version}",
    )


async def check_temporal_ui(settings: Settings) -> ComponentStatus:
    """The Temporal UI answers over HTTP (embedded stack or COLONY_TEMPORAL_UI_URL)."""
    url = settings.effective_temporal_ui_url
    if url is None:
        return ComponentStatus(
            "temporal-ui", True, "external Temporal; set COLONY_TEMPORAL_UI_URL for links"
        )
    async with httpx.AsyncClient(timeout=3) as http:
        try:
            response = await http.get(url)
        except httpx.HTTPError as exc:
            return ComponentStatus(
                "temporal-ui", False, f"{url}: {exc!r}", "start the stack (`colony up`)"
            )
    ok = response.status_code < 400
    return ComponentStatus("temporal-ui", ok, f"{url} (HTTP {response.status_code})")


async def check_qdrant(settings: Settings) -> ComponentStatus:
    """A Qdrant server answers, or the embedded store (Qdrant Edge) is available."""
    if settings.qdrant_url:
        async with httpx.AsyncClient(timeout=3) as http:
            try:
                response = await http.get(settings.qdrant_url.rstrip("/") + "/readyz")
            except httpx.HTTPError as exc:
                return ComponentStatus(
                    "qdrant", False, f"{settings.qdrant_url}: {exc!r}", "check QDRANT_URL"
                )
        return ComponentStatus(
            "qdrant", response.is_success, f"{settings.qdrant_url} (HTTP {response.status_code})"
        )
    try:
        from importlib.metadata import version

        edge_version = version("qdrant-edge-py")
    except ImportError:
        return ComponentStatus("qdrant", False, "qdrant-edge-py is not installed", "make install")
    path = settings.data_path / "qdrant-edge"
    return ComponentStatus(
        "qdrant",
        True,
        f"embedded (qdrant-edge-py {edge_version}), data in {path}; set QDRANT_URL for a server",
    )


async def check_workers(settings: Settings, client: Client) -> list[ComponentStatus]:
    """Each lane's task queue has at least one live poller."""
    statuses = []
    for queue in TaskQueue:
        kind = (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
            if queue is TaskQueue.ORCHESTRATION
            else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
        )
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace,
                task_queue=TaskQueueProto(name=queue.value + settings.task_queue_suffix),
                task_queue_type=kind,
            )
        )
        pollers = {p.identity for p in response.pollers}
        ok = bool(pollers)
        detail = (
            f"{len(pollers)} poller(s) on {queue.value}" if ok else f"no worker polls {queue.value}"
        )
        statuses.append(
            ComponentStatus(
                f"worker:{queue.lane}",
                ok,
                detail,
                "" if ok else f"`colony worker --lane {queue.lane}` or `colony up`",
            )
        )
    return statuses
