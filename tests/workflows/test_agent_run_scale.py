"""Long runs: history stays small (claim check), and continue-as-new keeps the conversation."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.tools.framework import ToolContext, ToolDefinition
from core.db import Pool
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentRunInput, AgentRunOutput, AgentSpec
from core.temporal import ColonyPlugin
from tests.conftest import make_settings
from tests.support.model_server import (
    Responder,
    ScriptedModelServer,
    ToolCall,
    tool_call,
    tool_loop,
)
from tests.support.replay import assert_replays
from tests.support.services import TemporalServer, temporal_dev_server
from tests.support.workers import running_workers

TENANT = "scale"
BLOB = 100_000  # characters per tool output


def blob(args: dict[str, object], ctx: ToolContext) -> str:
    return str(args["tag"]) * 10 + "x" * (BLOB - 10 * len(str(args["tag"])))


TOOLS = [
    ToolDefinition(
        name="blob",
        description="Returns 100 KB of text.",
        parameters={
            "type": "object",
            "properties": {"tag": {"type": "string"}},
            "required": ["tag"],
        },
        side_effects=False,
        handler=blob,
    ),
]


@pytest.fixture(scope="module", autouse=True)
async def tenant(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Scale')", (TENANT,))


async def start(client: Client, pool: Pool, suffix: str, spec: AgentSpec) -> tuple[str, object]:
    name = "a-" + uuid.uuid4().hex[:6]
    async with pool.connection() as conn:
        version, _ = await agents.create_version(conn, TENANT, name, spec)
        record, inbox, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name=name, agent_version=1, objective="go"
        )
    handle = await client.start_workflow(
        "AgentRunWorkflow",
        AgentRunInput(
            tenant_id=TENANT,
            run_id=record.id,
            agent_name=name,
            agent_version=version.version,
            inbox_ids=[inbox],
        ),
        id=record.workflow_id + suffix,
        task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        result_type=AgentRunOutput,
    )
    return record.id, handle


def steps_of(calls_per_step: int, steps: int, tool: str) -> Responder:
    def calls(k: int) -> list[ToolCall]:
        def args(i: int) -> dict[str, str]:
            return {"tag": f"s{k}c{i}"} if tool == "blob" else {"expression": f"{k}+{i}"}

        return [tool_call(tool, args(i), id=f"s{k}c{i}") for i in range(calls_per_step)]

    return tool_loop(steps, calls, answer=lambda k: f"finished after {k} steps")


@pytest.mark.timeout(300)
async def test_500_tool_calls_with_100kb_outputs_keep_history_small(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    model_server.responder = steps_of(10, 50, "blob")  # 50 steps x 10 parallel calls
    settings = make_settings(
        TEMPORAL_ADDRESS=temporal.address, OPENAI_BASE_URL=model_server.base_url
    )
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    suffix = "-" + uuid.uuid4().hex[:8]
    spec = AgentSpec(
        instructions="x", model="openai/scripted-model", tools=["blob"],
        limits={"max_steps": 100},
        # The whole conversation in every prompt: this test is about history size, and the
        # scripted model counts turns in the request (no window summaries here).
        memory={"window_tokens": 10_000_000},
    )  # fmt: skip
    async with running_workers(
        client, settings, pool, suffix=suffix, cache=True, extra_tools=TOOLS
    ):
        run_id, handle = await start(client, pool, suffix, spec)
        output = await handle.result()  # type: ignore[attr-defined]
    assert output.outcome == "succeeded", output.reason
    assert output.result == "finished after 50 steps"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, min(length(content)) AS shortest FROM run_messages WHERE run_id = %s AND role = 'tool'",
            (run_id,),
        )
        row = await cur.fetchone()
    assert row is not None and row["n"] == 500 and row["shortest"] == BLOB  # stored whole
    # The model saw bounded tool output, with a note.
    last = model_server.chat_requests()[-1]
    assert all(len(m["content"]) < 20_000 for m in last.messages if m["role"] == "tool")
    assert f"full output at colony://runs/{run_id}/messages/" in last.messages[-1]["content"]
    history = await handle.fetch_history()  # type: ignore[attr-defined]
    sizes = [len(e.SerializeToString()) for e in history.events]
    # Temporal warns at 10 MB / 10K events and stops at 50 MB / 50K: far away.
    assert max(sizes) < 20_000, f"an event of {max(sizes)} bytes: payloads should be references"
    assert sum(sizes) < 2_000_000 and len(sizes) < 5_000


@pytest.fixture(scope="module")
async def eager_can_temporal(services_dir: Path) -> AsyncIterator[TemporalServer]:
    # Suggest continue-as-new after 60 events, so a short run crosses it several times.
    async with temporal_dev_server(
        services_dir, {"limit.historyCount.suggestContinueAsNew": "60"}
    ) as server:
        yield server


@pytest.mark.timeout(180)
async def test_continue_as_new_keeps_the_conversation(
    eager_can_temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    model_server.responder = steps_of(2, 20, "calculator")
    temporal = eager_can_temporal
    settings = make_settings(
        TEMPORAL_ADDRESS=temporal.address, OPENAI_BASE_URL=model_server.base_url
    )
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
    suffix = "-" + uuid.uuid4().hex[:8]
    spec = AgentSpec(instructions="x", model="openai/scripted-model", tools=["calculator"])
    async with running_workers(client, settings, pool, suffix=suffix):
        run_id, handle = await start(client, pool, suffix, spec)
        output = await handle.result()  # type: ignore[attr-defined]
    assert output.outcome == "succeeded" and output.result == "finished after 20 steps"
    assert output.progress.step == 21 and output.progress.seq == 1 + 20 * 3 + 1
    description = await handle.describe()  # type: ignore[attr-defined]
    first_run = client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)  # type: ignore[attr-defined]
    assert description.run_id != handle.first_execution_run_id  # type: ignore[attr-defined]
    # The conversation has no gaps or repeats across runs of the workflow.
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq FROM run_messages WHERE run_id = %s ORDER BY seq", (run_id,)
        )
        assert [r["seq"] for r in await cur.fetchall()] == list(range(1, output.progress.seq + 1))
        cur = await conn.execute("SELECT count(*) AS n FROM llm_calls WHERE run_id = %s", (run_id,))
        row = await cur.fetchone()
    assert row is not None and row["n"] == 21
    # Every model call saw the whole conversation so far.
    assert [len(r.messages) for r in model_server.chat_requests()] == [2 + 3 * k for k in range(21)]
    await assert_replays(first_run)
