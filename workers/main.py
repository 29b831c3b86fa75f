"""A worker process: serves one or more lanes until SIGINT/SIGTERM.

`colony worker --lane llm` (or `python -m workers.main --lane llm`) adds a replica by
hand; `colony up` starts one process for all lanes, or one per lane with --split-lanes.
"""

import argparse
import asyncio
import contextlib
import functools
import inspect
import logging
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from prometheus_client import start_http_server
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.providers.litellm_loader import load_litellm
from activities.tools import workspace
from activities.tools.workspace_host import sweep_workspaces
from core import db, logs, metrics, telemetry
from core import temporal as temporal_support
from core.queues import TaskQueue, workspace_host_queue
from core.runs import store as runs
from core.settings import Settings
from workers.registry import LANES, Resources, parse_lanes
from workers.schedules import ensure_schedules
from workers.versioning import adopt_first_version, deployment_config, worker_version

log = logging.getLogger("colony.worker")

MODEL_LANES = frozenset({TaskQueue.LLM, TaskQueue.MEMORY})
"""Lanes whose activities call models or read LiteLLM's price table."""


def build_workers(
    client: Client,
    queues: Sequence[TaskQueue],
    resources: Resources,
    *,
    executor: ThreadPoolExecutor,
    task_queue_suffix: str = "",
    max_cached_workflows: int | None = None,
) -> list[Worker]:
    """One Temporal `Worker` per lane. `task_queue_suffix` isolates tests.

    With `COLONY_DEPLOYMENT_NAME` set, all of them poll as this build's deployment
    version (workers/versioning.py).
    """
    workers: list[Worker] = []
    settings = resources.settings
    deployment = deployment_config(settings)
    for queue in queues:
        lane = LANES[queue]
        extra: dict[str, object] = {
            "deployment_config": deployment,
            # Drain on SIGTERM: in-flight model and tool calls finish instead of being
            # cancelled and paid for again on another replica.
            "graceful_shutdown_timeout": timedelta(seconds=settings.worker_shutdown_grace_s),
        }
        if max_cached_workflows is not None:
            extra["max_cached_workflows"] = max_cached_workflows
        if queue is TaskQueue.LLM:
            extra["max_concurrent_activities"] = settings.llm_max_concurrency
            if settings.llm_rate_limit is not None:
                extra["max_task_queue_activities_per_second"] = settings.llm_rate_limit
        # Records logged in an activity name its run and tenant (core/logs.py).
        extra["interceptors"] = [logs.LogContextInterceptor()]
        activities = list(lane.activities(resources))
        # Only sync activities need the thread pool; a lane of async ones runs without it.
        if any(not inspect.iscoroutinefunction(fn) for fn in activities):
            extra["activity_executor"] = executor
        task_queue = queue.value + task_queue_suffix
        workers.append(
            Worker(
                client,
                task_queue=task_queue,
                workflows=list(lane.workflows),
                activities=activities,
                **extra,  # type: ignore[arg-type]
            )
        )
        if queue is TaskQueue.TOOLS:
            # The host's own queue: runs whose workspace is on this disk send their
            # workspace calls here (activities/tools/workspace_host.py).
            host_queue = workspace_host_queue(task_queue, workspace.host_id(settings))
            workers.append(
                Worker(client, task_queue=host_queue, activities=activities, **extra)  # type: ignore[arg-type]
            )
    return workers


async def run(queues: Sequence[TaskQueue], settings: Settings, stop: asyncio.Event) -> None:
    """Serve `queues` until `stop` is set, then shut down gracefully."""
    telemetry.setup_tracing(settings, "colony-worker")
    client = await temporal_support.connect(settings)
    with metrics_endpoint(settings):
        await _serve(client, queues, settings, stop)


async def _serve(
    client: Client, queues: Sequence[TaskQueue], settings: Settings, stop: asyncio.Event
) -> None:
    async with db.open_pool(settings.effective_database_url, min_size=1, max_size=10) as pool:
        with ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity") as executor:
            resources = Resources(settings, pool)
            if MODEL_LANES & set(queues):
                # Off the event loop, before the first task: LiteLLM loads on first use.
                await asyncio.to_thread(load_litellm)
            workers = build_workers(
                client, queues, resources, executor=executor,
                task_queue_suffix=settings.task_queue_suffix,
            )  # fmt: skip
            try:
                async with contextlib.AsyncExitStack() as stack:
                    for worker in workers:
                        await stack.enter_async_context(worker)
                    log.info("worker serving lanes: %s", ", ".join(q.lane for q in queues))
                    if TaskQueue.ORCHESTRATION in queues:
                        await ensure_schedules(client, settings)  # logs, never raises
                        version = worker_version(settings)
                        if version is not None:
                            adopting = asyncio.create_task(_adopt(client, version))
                            stack.callback(adopting.cancel)
                    if TaskQueue.TOOLS in queues:
                        await sweep_workspaces(settings, functools.partial(_live_runs, pool))
                    await stop.wait()
                    log.info("worker stopping")
            finally:
                await resources.aclose()


async def _adopt(client: Client, version: WorkerDeploymentVersion) -> None:
    """A new deployment's first version becomes current by itself; later ones wait."""
    try:
        if await adopt_first_version(client, version):
            log.info("version %s is the deployment's first: now current", version.build_id)
        else:
            log.info(
                "serving version %s of deployment %s (`colony deploy status` shows where runs go)",
                version.build_id, version.deployment_name,
            )  # fmt: skip
    except (TimeoutError, RPCError) as exc:
        log.warning("could not check deployment %s: %s", version.deployment_name, exc)


@contextlib.contextmanager
def metrics_endpoint(settings: Settings) -> Iterator[int | None]:
    """Serve this process's metrics (`core.metrics.REGISTRY`) on `COLONY_METRICS_PORT`.

    Yields the bound port (0 asks for a free one), or None when no port is set.
    """
    if settings.metrics_port is None:
        yield None
        return
    server, thread = start_http_server(
        settings.metrics_port, settings.metrics_host, registry=metrics.REGISTRY
    )
    port = server.server_port
    log.info("metrics at http://%s:%d/metrics", settings.metrics_host, port)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _live_runs(pool: db.Pool, run_ids: list[str]) -> set[str]:
    async with pool.connection() as conn:
        return await runs.live_run_ids(conn, run_ids)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m workers.main`."""
    parser = argparse.ArgumentParser(prog="colony worker")
    parser.add_argument(
        "--lane", action="append", default=[], help="lane(s) to serve; 'all' for every lane"
    )
    args = parser.parse_args(argv)
    logs.configure()
    queues = parse_lanes(args.lane or ["all"])
    asyncio.run(_main(queues))


async def _main(queues: Sequence[TaskQueue]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(queues, Settings(), stop)


if __name__ == "__main__":
    main()
