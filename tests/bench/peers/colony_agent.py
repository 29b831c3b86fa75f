"""Colony: AgentRunWorkflow with call_llm and execute_tool on their lanes (the real
workers of tests/support/workers.py; the built-in calculator tool)."""

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from temporalio.client import Client

from core import db
from core.temporal import ColonyPlugin
from tests.bench.agent import _start_run
from tests.bench.peers._common import Config
from tests.conftest import make_settings
from tests.support.workers import running_workers


class Colony:
    """The framework protocol of tests.bench.peers._common for Colony."""

    def __init__(self) -> None:
        self._client: Client | None = None
        self._pool: Any = None
        self._tool_events: set[int] = set()

    async def _connect(self, cfg: Config) -> Client:
        if self._client is None:
            self._client = await Client.connect(cfg.temporal_address, plugins=[ColonyPlugin()])
        return self._client

    @contextlib.asynccontextmanager
    async def serving(self, cfg: Config) -> AsyncIterator[None]:
        client = await self._connect(cfg)
        settings = make_settings(
            TEMPORAL_ADDRESS=cfg.temporal_address,
            DATABASE_URL=cfg.database_url,
            OPENAI_BASE_URL=cfg.base_url,
        )
        async with (
            db.open_pool(cfg.database_url, max_size=32) as pool,
            running_workers(client, settings, pool, suffix=cfg.task_queue, cache=True),
        ):
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    async def start(self, cfg: Config, run_id: str, prompt: str) -> Awaitable[None]:
        client = await self._connect(cfg)
        handle = await _start_run(client, cfg.database_url, cfg.task_queue, prompt, self._pool)
        return handle.result()

    async def crash_run(
        self, cfg: Config, run_id: str, prompt: str, resume: bool
    ) -> dict[str, Any]:
        # The worker process the parent restarts picks the run up; nothing to resume here.
        client = await self._connect(cfg)
        handle = await _start_run(client, cfg.database_url, cfg.task_queue, prompt)
        await handle.result()
        # The built-in calculator writes no log: count its executions from the history.
        # A started event is written once per activity, when it ends, with the attempt
        # that ended it, so the attempts add up to every execution the tool lane began.
        # Since issue 16 the calculator is a local activity (the run's only one): one
        # marker per call. A local execution lost with its worker before the workflow task
        # completed leaves no trace; the kill here lands in a model call, after the
        # previous tool call's workflow task has completed, so there is none to lose.
        tools = 0
        async for event in handle.fetch_history_events():
            if event.HasField("marker_recorded_event_attributes"):
                tools += event.marker_recorded_event_attributes.marker_name == "core_local_activity"
            if event.HasField("activity_task_scheduled_event_attributes"):
                scheduled = event.activity_task_scheduled_event_attributes
                if scheduled.activity_type.name == "execute_tool":
                    self._tool_events.add(event.event_id)
            elif event.HasField("activity_task_started_event_attributes"):
                started = event.activity_task_started_event_attributes
                if started.scheduled_event_id in self._tool_events:
                    tools += started.attempt
        return {"tool_calls": tools}


FRAMEWORK = Colony()
