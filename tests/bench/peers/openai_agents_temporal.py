"""The OpenAI Agents SDK's Temporal integration: Runner.run inside a workflow, model
calls as activities through OpenAIAgentsPlugin (chat completions against the scripted
server through an AsyncOpenAI client with its base_url), the tool as an activity
(activity_as_tool)."""

import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from tests.bench.peers._common import INSTRUCTIONS, MODEL, Config, calculate

with workflow.unsafe.imports_passed_through():
    from agents import Agent, Runner, set_tracing_disabled
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI
    from temporalio.contrib.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
    from temporalio.contrib.openai_agents import workflow as agents_workflow

_CFG = json.loads(os.environ.get("BENCH_PEERS_CONFIG", "{}"))


@activity.defn
def calculator(expression: str) -> str:
    """Evaluate an addition such as 1+1."""
    return calculate(expression, _CFG["tool_log"])


@workflow.defn(name="BenchOpenAIAgent")
class OpenAIAgentWorkflow:
    """One agent run; ends with the model's final text."""

    @workflow.run
    async def run(self, prompt: str) -> str:
        """Run the agent on `prompt`."""
        agent = Agent(
            name="bench",
            instructions=INSTRUCTIONS,
            model=MODEL,
            tools=[
                agents_workflow.activity_as_tool(
                    calculator, start_to_close_timeout=timedelta(seconds=30)
                )
            ],
        )
        result = await Runner.run(agent, prompt, max_turns=1000)
        return str(result.final_output)


def _plugin(cfg: Config) -> OpenAIAgentsPlugin:
    set_tracing_disabled(True)
    return OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=30)),
        model_provider=OpenAIProvider(
            openai_client=AsyncOpenAI(base_url=cfg.base_url, api_key="x", max_retries=0),
            use_responses=False,
        ),
    )


class OpenAIAgentsTemporal:
    """The framework protocol of tests.bench.peers._common for the OpenAI Agents SDK."""

    def __init__(self) -> None:
        self._client: Client | None = None

    async def _connect(self, cfg: Config) -> Client:
        if self._client is None:
            self._client = await Client.connect(cfg.temporal_address, plugins=[_plugin(cfg)])
        return self._client

    @contextlib.asynccontextmanager
    async def serving(self, cfg: Config) -> AsyncIterator[None]:
        client = await self._connect(cfg)
        with contextlib.ExitStack() as stack:
            from concurrent.futures import ThreadPoolExecutor

            executor = stack.enter_context(ThreadPoolExecutor(max_workers=16))
            async with Worker(
                client,
                task_queue=cfg.task_queue,
                workflows=[OpenAIAgentWorkflow],
                activities=[calculator],
                activity_executor=executor,
                max_concurrent_activities=1000,
            ):
                yield

    async def start(self, cfg: Config, run_id: str, prompt: str) -> Awaitable[None]:
        client = await self._connect(cfg)
        handle = await client.start_workflow(
            OpenAIAgentWorkflow.run, prompt, id=run_id, task_queue=cfg.task_queue
        )
        return handle.result()

    async def crash_run(self, cfg: Config, run_id: str, prompt: str, resume: bool) -> None:
        # The worker process the parent restarts picks the run up; nothing to resume here.
        await (await self.start(cfg, run_id, prompt))


FRAMEWORK = OpenAIAgentsTemporal()
