"""A harness for agent-run workflow tests: real Temporal, Postgres, workers, scripted model."""

import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from core.db import Pool
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentRunInput, AgentRunOutput, AgentSpec
from core.temporal import ColonyPlugin
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from workers.registry import Resources
from workflows.agent_run import AgentRunWorkflow

TENANT = "agents"
RunHandle = WorkflowHandle[AgentRunWorkflow, AgentRunOutput]


@dataclass
class Harness:
    client: Client
    pool: Pool
    server: ScriptedModelServer
    suffix: str
    resources: Resources
    data_dir: Path

    async def start(
        self,
        spec: AgentSpec,
        objective: str = "What is 2+2?",
        *,
        conversation: bool = False,
        name: str | None = None,
    ) -> tuple[RunHandle, str]:
        name = name or "agent-" + uuid.uuid4().hex[:6]
        async with self.pool.connection() as conn:
            version, _ = await agents.create_version(conn, TENANT, name, spec)
            record, inbox_id, _ = await runs.create_run(
                conn, tenant_id=TENANT, agent_name=name, agent_version=version.version,
                objective=objective, conversation=conversation,
            )  # fmt: skip
        handle = await self.client.start_workflow(
            AgentRunWorkflow.run,
            AgentRunInput(
                tenant_id=TENANT, run_id=record.id, agent_name=name, agent_version=version.version,
                conversation=conversation, inbox_ids=[inbox_id],
            ),
            id=record.workflow_id + self.suffix,
            task_queue=TaskQueue.ORCHESTRATION.value + self.suffix,
        )  # fmt: skip
        return handle, record.id

    async def messages(self, run_id: str) -> list[Any]:
        async with self.pool.connection() as conn:
            return await runs.load_messages(conn, run_id, 10_000)

    async def events(self, run_id: str) -> list[runs.EventRecord]:
        async with self.pool.connection() as conn:
            return await runs.list_events(conn, TENANT, run_id)

    async def run_row(self, run_id: str) -> runs.RunRecord:
        async with self.pool.connection() as conn:
            return await runs.get_run(conn, TENANT, run_id)


@asynccontextmanager
async def running_harness(
    temporal: TemporalServer,
    pool: Pool,
    server: ScriptedModelServer,
    *,
    queues: Sequence[TaskQueue] = tuple(TaskQueue),
    **env: str,
) -> AsyncIterator[Harness]:
    """Workers for `queues` on fresh task queues, with a data dir (sandbox workspaces) of
    their own."""
    with tempfile.TemporaryDirectory(prefix="colony-harness-") as data_dir:
        settings = make_settings(
            TEMPORAL_ADDRESS=temporal.address,
            OPENAI_BASE_URL=server.base_url,
            COLONY_DATA_DIR=data_dir,
            **env,
        )
        client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
        suffix = "-" + uuid.uuid4().hex[:8]
        async with running_workers(
            client, settings, pool, suffix=suffix, queues=queues
        ) as resources:
            yield Harness(client, pool, server, suffix, resources, Path(data_dir))


def spec(**overrides: Any) -> AgentSpec:
    base: dict[str, Any] = {
        "instructions": "You are a careful calculator agent.",
        "model": "openai/scripted-model",
        "tools": ["calculator", "get_time"],
    }
    base.update(overrides)
    return AgentSpec.model_validate(base)
