"""call_llm and execute_tool as plain activities (ActivityEnvironment, real Postgres + HTTP)."""

import dataclasses
from collections.abc import AsyncIterator

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.client import ModelClient
from activities.runs.llm import LlmActivities
from activities.runs.tool_calls import ToolActivities
from core.db import Pool
from core.payloads import ChatMessage, ModelUsage, ToolCallRequest
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec, LlmCallInput, ToolCallInput
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls

TENANT = "acts"


@pytest.fixture(scope="module")
async def run_id(pool: Pool) -> str:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'A')", (TENANT,))
        spec = AgentSpec(
            instructions="be brief", model="openai/scripted-model", tools=["calculator"]
        )
        await agents.create_version(conn, TENANT, "a", spec)
        record, inbox, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name="a", agent_version=1, objective="2+2?"
        )
        await runs.adopt_inbox(conn, TENANT, record.id, [inbox], 1)
        return record.id


@pytest.fixture
async def llm_activities(
    pool: Pool, model_server: ScriptedModelServer
) -> AsyncIterator[LlmActivities]:
    settings = make_settings(OPENAI_BASE_URL=model_server.base_url)
    async with ModelClient(settings) as models:
        yield LlmActivities(settings, pool, models)


def llm_input(run_id: str, step: int, upto: int) -> LlmCallInput:
    return LlmCallInput(
        tenant_id=TENANT, run_id=run_id, agent_name="a", agent_version=1, step=step,
        upto_seq=upto, write_seq=upto + 1, models=["openai/scripted-model"], tools=["calculator"],
    )  # fmt: skip


async def test_call_llm_stores_the_answer_and_is_idempotent(
    pool: Pool, run_id: str, model_server: ScriptedModelServer, llm_activities: LlmActivities
) -> None:
    activities = llm_activities
    model_server.script(
        tool_calls(
            tool_call("calculator", {"expression": "2+2"}, id="dup"),
            tool_call("calculator", {"expression": "3+3"}, id="dup"),
        )
    )
    env = ActivityEnvironment()
    first = await env.run(activities.call_llm, llm_input(run_id, 1, 1))
    assert first.message_seq == 2 and first.tool_calls[0].name == "calculator"
    # A repeated id from the model is replaced: each result must map to one call.
    assert [c.id for c in first.tool_calls] == ["dup", "call_1_1"]
    assert first.usage.prompt_tokens > 0
    # The same step again (a retry after the worker died having written it): no model call.
    again = await env.run(activities.call_llm, llm_input(run_id, 1, 1))
    assert len(model_server.chat_requests()) == 1
    assert again.message_seq == first.message_seq and again.tool_calls == first.tool_calls
    assert again.usage == first.usage

    tools = ToolActivities(make_settings(), pool)
    call = ToolCallInput(
        tenant_id=TENANT, run_id=run_id, step=1, message_seq=2, call_index=0, result_seq=3
    )
    result = await env.run(tools.execute_tool, call)
    assert result.ok and result.preview == "4"
    assert (await env.run(tools.execute_tool, call)).preview == "4"
    async with pool.connection() as conn:
        messages = await runs.load_messages(conn, run_id, 10)
        events = [e.type for e in await runs.list_events(conn, TENANT, run_id)]
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert events.count("tool.result") == 1 and events.count("model.message") == 1


async def test_streamed_text_becomes_delta_events(
    pool: Pool, run_id: str, model_server: ScriptedModelServer, llm_activities: LlmActivities
) -> None:
    activities = llm_activities
    text = "The answer is four. " * 40
    model_server.script(reply(text, chunk_delay=0.002))
    output = await ActivityEnvironment().run(activities.call_llm, llm_input(run_id, 2, 3))
    assert output.text is not None and output.text.strip() == text.strip()
    async with pool.connection() as conn:
        deltas = [
            e
            for e in await runs.list_events(conn, TENANT, run_id)
            if e.type == "model.delta" and e.data["step"] == 2
        ]
    assert len(deltas) >= 2  # batched, not one event per token and not one for everything
    assert "".join(e.data["text"] for e in deltas) == text


async def test_stored_message_shapes_round_trip(pool: Pool, run_id: str) -> None:
    message = ChatMessage(
        role="assistant",
        content=None,
        tool_calls=[ToolCallRequest(id="x", name="calculator", arguments='{"a": 1}')],
    )
    async with pool.connection() as conn:
        await runs.write_message(conn, TENANT, run_id, 50, message)
        await runs.write_message(
            conn, TENANT, run_id, 50, ChatMessage(role="user", content="ignored")
        )
        assert await runs.get_message(conn, run_id, 50) == message
        assert await runs.record_llm_call(
            conn, tenant_id=TENANT, run_id=run_id, step=50, model="m", provider="p",
            usage=ModelUsage(prompt_tokens=1), cost_usd=None, latency_ms=1.0,
        )  # fmt: skip
        assert not await runs.record_llm_call(
            conn, tenant_id=TENANT, run_id=run_id, step=50, model="m", provider="p",
            usage=ModelUsage(prompt_tokens=1), cost_usd=None, latency_ms=1.0,
        )  # fmt: skip


async def test_a_long_tool_call_heartbeats(
    pool: Pool, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from activities.runs import tool_calls as tools_module
    from activities.tools.catalog import ToolCatalog, builtin_registry
    from activities.tools.framework import ToolDefinition

    async def slow(args: dict[str, object], ctx: object) -> str:
        await asyncio.sleep(0.35)
        return "slept"

    nap = ToolDefinition(
        name="nap", description="Sleeps.", parameters={"type": "object", "properties": {}},
        side_effects=False, handler=slow,
    )  # fmt: skip
    monkeypatch.setattr(tools_module, "HEARTBEAT_SECONDS", 0.1)
    async with pool.connection() as conn:
        await runs.write_message(
            conn, TENANT, run_id, 700,
            ChatMessage(role="assistant", tool_calls=[ToolCallRequest(id="n1", name="nap", arguments="{}")]),
        )  # fmt: skip
    catalog = ToolCatalog(builtin_registry(make_settings(), extra=[nap]))
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    call = ToolCallInput(
        tenant_id=TENANT, run_id=run_id, step=9, message_seq=700, call_index=0, result_seq=701
    )
    result = await env.run(ToolActivities(make_settings(), pool, catalog).execute_tool, call)
    assert result.ok and result.preview == "slept"
    assert 2 <= len(beats) <= 4


async def test_read_output_pages_through_a_stored_message(pool: Pool, run_id: str) -> None:
    from datetime import UTC, datetime

    from activities.runs.outputs import PAGE_CHARS, output_tools
    from activities.tools.framework import ToolContext
    from core.payloads import ChatMessage

    long = "".join(f"{i:06d}" for i in range(5000))  # 30,000 characters
    async with pool.connection() as conn:
        await runs.write_message(
            conn,
            TENANT,
            run_id,
            900,
            ChatMessage(role="tool", content=long, tool_call_id="c", name="t"),
        )
    (tool,) = output_tools(pool)
    ctx = ToolContext(tenant_id=TENANT, run_id=run_id, step=1, now=datetime.now(UTC))
    ref = f"colony://runs/{run_id}/messages/900"
    first = await tool.handler({"ref": ref}, ctx)
    assert first.startswith(f"[{ref}: characters 0-{PAGE_CHARS} of 30000. Next page: offset=")
    assert first.endswith(long[PAGE_CHARS - 6 : PAGE_CHARS])
    last = await tool.handler({"ref": ref, "offset": PAGE_CHARS}, ctx)
    assert "This is the end." in last and last.endswith(long[-6:])
    # Another tenant's run, or no such message: nothing is read.
    other = ToolContext(tenant_id="someone-else", run_id="x", step=1, now=datetime.now(UTC))
    assert await tool.handler({"ref": ref}, other) == f"No stored output at {ref}."
    assert "No stored output" in await tool.handler({"ref": ref[:-3] + "901"}, ctx)


async def test_the_local_tool_activity_runs_only_tools_that_need_no_isolation(
    pool: Pool, model_server: ScriptedModelServer, llm_activities: LlmActivities
) -> None:
    async with pool.connection() as conn:
        record, inbox, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name="a", agent_version=1, objective="local?"
        )
        await runs.adopt_inbox(conn, TENANT, record.id, [inbox], 1)
    model_server.script(
        tool_calls(
            tool_call("calculator", {"expression": "6*7"}, id="calc"),
            tool_call("http_fetch", {"url": "http://example.com"}, id="fetch"),
        )
    )
    env = ActivityEnvironment()
    await env.run(llm_activities.call_llm, llm_input(record.id, 1, 1))
    env.info = dataclasses.replace(env.info, is_local=True)
    tools = ToolActivities(make_settings(), pool)

    def call(index: int) -> ToolCallInput:
        return ToolCallInput(
            tenant_id=TENANT, run_id=record.id, step=1, message_seq=2, call_index=index,
            result_seq=3 + index,
        )  # fmt: skip

    result = await env.run(tools.execute_local_tool, call(0))
    assert result.ok and result.preview == "42"
    assert (await env.run(tools.execute_local_tool, call(0))).preview == "42"  # stored
    with pytest.raises(ApplicationError) as refused:
        await env.run(tools.execute_local_tool, call(1))
    assert refused.value.non_retryable and "tools lane" in refused.value.message
