"""Pydantic AI's Temporal integration: a TemporalAgent (model calls and the tool as
activities) run by a workflow, with PydanticAIPlugin on the client and AgentPlugin on
the worker."""

import contextlib
import json
import os
import warnings
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

from pydantic_core import core_schema
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.workflow import _event_groups

from tests.bench.peers._common import INSTRUCTIONS, MODEL, Config, calculate

# pydantic-ai-slim 2.31 (the newest that allows openai<3, which Colony pins) builds a
# pydantic schema of temporalio's ActivityConfig, and temporalio 1.35 added a field of a
# type pydantic cannot describe; later pydantic-ai releases handle it. Teach pydantic the
# type (an instance check) so the integration imports: a benchmark-only shim.
_event_groups.EventGroup.__get_pydantic_core_schema__ = classmethod(  # type: ignore[attr-defined]
    lambda cls, source, handler: core_schema.is_instance_schema(cls)
)

with workflow.unsafe.imports_passed_through():
    from pydantic_ai import Agent
    from pydantic_ai.durable_exec.temporal import AgentPlugin, PydanticAIPlugin, TemporalAgent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

_CFG = json.loads(os.environ.get("BENCH_PEERS_CONFIG", "{}"))

agent = Agent(
    OpenAIChatModel(
        MODEL,
        provider=OpenAIProvider(
            base_url=_CFG.get("base_url", "http://127.0.0.1:1/v1"), api_key="x"
        ),
    ),
    instructions=INSTRUCTIONS,
    name="bench",
)


@agent.tool_plain
def calculator(expression: str) -> str:
    """Evaluate an addition such as 1+1."""
    return calculate(expression, _CFG["tool_log"])


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    temporal_agent = TemporalAgent(
        agent,
        activity_config={"start_to_close_timeout": timedelta(seconds=30)},
    )


@workflow.defn(name="BenchPydanticAIAgent")
class PydanticAIAgentWorkflow:
    """One agent run; ends with the model's final text."""

    @workflow.run
    async def run(self, prompt: str) -> str:
        """Run the agent on `prompt`."""
        result = await temporal_agent.run(prompt)
        return result.output


class PydanticAITemporal:
    """The framework protocol of tests.bench.peers._common for Pydantic AI."""

    def __init__(self) -> None:
        self._client: Client | None = None

    async def _connect(self, cfg: Config) -> Client:
        if self._client is None:
            self._client = await Client.connect(cfg.temporal_address, plugins=[PydanticAIPlugin()])
        return self._client

    @contextlib.asynccontextmanager
    async def serving(self, cfg: Config) -> AsyncIterator[None]:
        client = await self._connect(cfg)
        async with Worker(
            client,
            task_queue=cfg.task_queue,
            workflows=[PydanticAIAgentWorkflow],
            plugins=[AgentPlugin(temporal_agent)],
            max_concurrent_activities=1000,
        ):
            yield

    async def start(self, cfg: Config, run_id: str, prompt: str) -> Awaitable[None]:
        client = await self._connect(cfg)
        handle = await client.start_workflow(
            PydanticAIAgentWorkflow.run, prompt, id=run_id, task_queue=cfg.task_queue
        )
        return handle.result()

    async def crash_run(self, cfg: Config, run_id: str, prompt: str, resume: bool) -> None:
        # The worker process the parent restarts picks the run up; nothing to resume here.
        await (await self.start(cfg, run_id, prompt))


FRAMEWORK = PydanticAITemporal()
