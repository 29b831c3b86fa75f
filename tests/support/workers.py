"""Run Colony's real workers inside the test process."""

from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from temporalio.client import Client

from activities.tools.framework import ToolDefinition
from api.main import create_app
from core import temporal
from core.db import Pool
from core.queues import TaskQueue
from core.settings import Settings
from workers.main import build_workers
from workers.registry import Resources


@asynccontextmanager
async def running_workers(
    client: Client,
    settings: Settings,
    pool: Pool,
    *,
    suffix: str = "",
    queues: Sequence[TaskQueue] = tuple(TaskQueue),
    cache: bool = False,
    extra_tools: Sequence[ToolDefinition] = (),
) -> AsyncIterator[Resources]:
    """Workers for `queues` (+ `suffix`); without `cache` every workflow task replays.

    `extra_tools` join the built-in tools. Yields the workers' shared resources.
    """
    resources = Resources(settings, pool, extra_tools=extra_tools)
    with ThreadPoolExecutor(max_workers=8) as executor:
        workers = build_workers(
            client, queues, resources, executor=executor,
            task_queue_suffix=suffix, max_cached_workflows=None if cache else 0,
        )  # fmt: skip
        try:
            async with AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(worker)
                yield resources
        finally:
            await resources.aclose()


@asynccontextmanager
async def api_with_workers(
    settings: Settings,
    pool: Pool,
    key: str,
    *,
    timeout: float = 30,
    extra_tools: Sequence[ToolDefinition] = (),
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in process, with real workers on `settings.task_queue_suffix` (and
    `extra_tools`), and an HTTP client for it that sends `key`."""
    app = create_app(settings)
    client = await temporal.connect(settings)
    async with (
        app.router.lifespan_context(app),
        running_workers(
            client, settings, pool, suffix=settings.task_queue_suffix, extra_tools=extra_tools
        ),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
        ) as http,
    ):  # fmt: skip
        yield http
