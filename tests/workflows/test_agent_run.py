"""AgentRunWorkflow end to end: real Temporal, Postgres, activities and HTTP to the scripted model."""

import asyncio
import json

import pytest
from temporalio.client import (
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import CancelledError

from core.runs import store as runs
from core.runs.payloads import ApprovalDecision, SubmitMessage
from tests.support.model_server import (
    fault,
    hang,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.replay import assert_replays, record_history
from tests.workflows.harness import TENANT, Harness, RunHandle, spec
from workflows.agent_run import AgentRunWorkflow


async def test_tool_loop_to_an_answer(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("calculator", {"expression": "2+2"}, id="c1")),
        reply("The answer is 4."),
    )
    handle, run_id = await harness.start(spec())
    output = await handle.result()
    assert output.outcome == "succeeded"
    assert output.result == "The answer is 4."
    assert output.progress.step == 2 and output.progress.seq == 4

    roles = [(m.role, m.content) for m in await harness.messages(run_id)]
    assert roles == [
        ("user", "What is 2+2?"),
        ("assistant", None),
        ("tool", "4"),
        ("assistant", "The answer is 4."),
    ]
    # The model saw the instructions, the tool schemas and, second time, the tool result.
    first, second = harness.server.chat_requests()
    assert first.messages[0] == {"role": "system", "content": "You are a careful calculator agent."}
    assert {t["function"]["name"] for t in first.body["tools"]} == {"calculator", "get_time"}
    # Tool output reaches the model delimited as data, never as bare instructions.
    result = second.messages[-1]
    assert result["role"] == "tool" and result["tool_call_id"] == "c1"
    assert result["content"].startswith('<tool_output tool="calculator" call_id="c1">\n')
    assert "not instructions" in result["content"]
    assert result["content"].endswith("\n4\n</tool_output>")

    row = await harness.run_row(run_id)
    assert (row.status, row.outcome, row.result, row.steps) == (
        "succeeded",
        "succeeded",
        "The answer is 4.",
        2,
    )
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    assert row.cost_complete is False  # the scripted model has no price: unknown, not zero
    types = [e.type for e in await harness.events(run_id)]
    assert types[0] == "run.started" and types[-1] == "run.finished"
    assert {"message.received", "model.message", "tool.call", "tool.result", "cost"} <= set(types)
    seqs = [e.seq for e in await harness.events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))
    await assert_replays(handle)
    history = await handle.fetch_history()
    assert not any(
        e.activity_task_scheduled_event_attributes.activity_type.name == "execute_tool"
        for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
    )  # the calculator ran as a local activity  # fmt: skip
    record_history("agent_run_v6_tool_loop", history)


async def test_parallel_tool_calls_keep_their_order(harness: Harness) -> None:
    harness.server.script(
        tool_calls(
            tool_call("calculator", {"expression": "6*7"}, id="a"),
            tool_call("calculator", {"expression": "2**10"}, id="b"),
        ),
        reply("42 and 1024"),
    )
    handle, run_id = await harness.start(spec())
    assert (await handle.result()).outcome == "succeeded"
    tools = [
        (m.tool_call_id, m.content) for m in await harness.messages(run_id) if m.role == "tool"
    ]
    assert tools == [("a", "42"), ("b", "1024")]
    history = await handle.fetch_history()
    lane_calls = [
        e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "execute_tool"
    ]  # fmt: skip
    local_calls = [
        i for i, e in enumerate(history.events) if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]  # fmt: skip
    # The calculator needs no isolation: both calls ran as local activities of the
    # workflow's worker, started together and recorded in one workflow task.
    assert lane_calls == [] and len(local_calls) == 2
    between = history.events[local_calls[0] : local_calls[1]]
    assert not any(e.HasField("workflow_task_completed_event_attributes") for e in between)
    await assert_replays(handle)


async def test_rate_limit_then_success_honours_retry_after(harness: Harness) -> None:
    harness.server.script(fault(429, retry_after=1.0), reply("done"))
    handle, _ = await harness.start(spec())
    output = await handle.result()
    assert output.outcome == "succeeded" and output.result == "done"
    first, second = harness.server.chat_requests()
    assert first.status == 429 and second.status == 200
    assert second.received_at - first.received_at >= 0.9
    await assert_replays(handle)


async def test_auth_failure_falls_back_to_the_next_model(harness: Harness) -> None:
    harness.server.script(fault(401), model="primary")
    harness.server.script(reply("from the backup"), model="backup")
    handle, run_id = await harness.start(
        spec(model="openai/primary", fallback_models=["openai/backup"])
    )
    output = await handle.result()
    assert output.outcome == "succeeded" and output.result == "from the backup"
    assert [r.model for r in harness.server.chat_requests()] == ["primary", "backup"]
    types = [e.type for e in await harness.events(run_id)]
    assert "model.fallback" in types
    await assert_replays(handle)


async def test_every_model_failing_fails_the_run_with_the_reason(harness: Harness) -> None:
    harness.server.script(
        fault(
            400, body={"error": {"message": "bad request: nope", "type": "invalid_request_error"}}
        )
    )
    handle, run_id = await harness.start(spec())
    output = await handle.result()
    assert output.outcome == "failed"
    assert output.reason is not None and "InvalidRequest" in output.reason
    assert len(harness.server.chat_requests()) == 1  # non-retryable: no retries
    row = await harness.run_row(run_id)
    assert (row.status, row.outcome) == ("failed", "failed")


async def test_malformed_tool_arguments_are_explained_to_the_model(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("calculator", '{"expression": ', id="bad")),
        tool_calls(tool_call("calculator", {"expression": "1+1"}, id="good")),
        reply("2"),
    )
    handle, run_id = await harness.start(spec())
    output = await handle.result()
    assert output.outcome == "succeeded" and output.result == "2"
    results = {
        m.tool_call_id: m.content for m in await harness.messages(run_id) if m.role == "tool"
    }
    assert results["bad"].startswith("Error:") and "JSON" in results["bad"]
    assert results["good"] == "2"
    await assert_replays(handle)


async def test_unknown_and_unlisted_tools_are_errors_for_the_model(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("get_time", {}, id="t1"), tool_call("rm_rf", {}, id="t2")),
        reply("ok"),
    )
    handle, run_id = await harness.start(spec(tools=["calculator"]))
    assert (await handle.result()).outcome == "succeeded"
    results = {
        m.tool_call_id: m.content for m in await harness.messages(run_id) if m.role == "tool"
    }
    assert "not available to this agent" in results["t1"]
    assert "not available to this agent" in results["t2"]


async def test_max_steps_is_a_limit(harness: Harness) -> None:
    harness.server.default = tool_calls(tool_call("calculator", {"expression": "1+1"}))
    handle, run_id = await harness.start(spec(limits={"max_steps": 3}))
    output = await handle.result()
    assert output.outcome == "limit_reached" and "max_steps (3)" in (output.reason or "")
    assert len(harness.server.chat_requests()) == 3
    row = await harness.run_row(run_id)
    assert (row.status, row.outcome) == ("failed", "limit_reached")


async def test_budget_stops_the_run(harness: Harness) -> None:
    # A priced model id (routed to the scripted server): every call costs real money.
    harness.server.default = tool_calls(tool_call("calculator", {"expression": "1+1"}))
    handle, run_id = await harness.start(
        spec(model="openai/gpt-4o-mini", limits={"max_cost_usd": 0.0002})
    )
    output = await handle.result()
    assert output.outcome == "limit_reached"
    assert output.reason is not None and "max_cost_usd" in output.reason
    assert output.progress.cost_complete and output.progress.cost_usd > 0
    # It stopped on the budget, long before max_steps.
    assert 1 <= len(harness.server.chat_requests()) < 10
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sum(cost_usd) AS s FROM llm_calls WHERE run_id = %s", (run_id,)
        )
        row = await cur.fetchone()
    assert row is not None and float(row["s"]) == pytest.approx(output.progress.cost_usd)


async def test_a_call_that_would_exceed_the_budget_is_not_made(harness: Harness) -> None:
    handle, _ = await harness.start(
        spec(model="openai/gpt-4o-mini", limits={"max_cost_usd": 0.000001})
    )
    output = await handle.result()
    assert output.outcome == "limit_reached" and "would cost about" in (output.reason or "")
    assert harness.server.chat_requests() == []
    await assert_replays(handle)


async def _wait_for_pending(handle: RunHandle) -> str:
    for _ in range(200):
        status = await handle.query(AgentRunWorkflow.status)
        if status.pending_approvals:
            return status.pending_approvals[0].call_id
        await asyncio.sleep(0.05)
    raise AssertionError("no approval requested")


@pytest.mark.parametrize("approved", [True, False])
async def test_approval_granted_or_denied(harness: Harness, approved: bool) -> None:
    harness.server.script(
        tool_calls(tool_call("calculator", {"expression": "3*3"}, id="x")), reply("finished")
    )
    policy = {"calculator": {"mode": "requires_approval"}}
    handle, run_id = await harness.start(spec(tool_policies=policy))
    call_id = await _wait_for_pending(handle)
    assert call_id == "x"
    # The workflow announces the wait (a store activity) right after it starts waiting.
    for _ in range(100):
        if (await harness.run_row(run_id)).status == "waiting":
            break
        await asyncio.sleep(0.05)
    assert (await harness.run_row(run_id)).status == "waiting"
    status = await handle.execute_update(
        AgentRunWorkflow.approve_tool_call,
        ApprovalDecision(call_id="x", approved=approved, reason="checked"),
    )
    assert status.pending_approvals == []
    assert (await handle.result()).outcome == "succeeded"
    result = next(m.content for m in await harness.messages(run_id) if m.role == "tool")
    assert result == "9" if approved else "denied" in result and "checked" in result
    events = await harness.events(run_id)
    resolved = next(e for e in events if e.type == "approval.resolved")
    assert resolved.data["approved"] is approved
    await assert_replays(handle)
    record_history(f"agent_run_v4_approval_{approved}", await handle.fetch_history())


async def test_approval_of_an_unknown_call_is_rejected(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("calculator", {"expression": "1"}, id="y")), reply("ok")
    )
    handle, _ = await harness.start(
        spec(tool_policies={"calculator": {"mode": "requires_approval"}})
    )
    await _wait_for_pending(handle)
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await handle.execute_update(
            AgentRunWorkflow.approve_tool_call, ApprovalDecision(call_id="nope", approved=True)
        )
    assert "not waiting for approval (waiting: y)" in str(rejected.value.cause)
    await handle.execute_update(
        AgentRunWorkflow.approve_tool_call, ApprovalDecision(call_id="y", approved=True)
    )
    assert (await handle.result()).outcome == "succeeded"


async def test_approval_timeout_is_a_denial(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("calculator", {"expression": "1"}, id="z")), reply("gave up")
    )
    policy = {"calculator": {"mode": "requires_approval", "approval_timeout_s": 1}}
    handle, run_id = await harness.start(spec(tool_policies=policy))
    assert (await handle.result()).outcome == "succeeded"
    result = next(m.content for m in await harness.messages(run_id) if m.role == "tool")
    assert "timed out" in result
    # The model was told.
    assert "timed out" in harness.server.chat_requests()[-1].messages[-1]["content"]
    await assert_replays(handle)


async def test_multi_turn_conversation(harness: Harness) -> None:
    harness.server.script(reply("Hello! Ask me anything."), reply("6"), reply("bye"))
    handle, run_id = await harness.start(spec(), "hi", conversation=True)
    for _ in range(200):
        if (await handle.query(AgentRunWorkflow.status)).phase == "waiting_for_message":
            break
        await asyncio.sleep(0.05)
    async with harness.pool.connection() as conn:
        first = await runs.add_inbox(conn, TENANT, run_id, "what is 1+5?")
    await handle.signal(AgentRunWorkflow.submit_message, SubmitMessage(inbox_id=first))
    await asyncio.to_thread(harness.server.wait_for_requests, 2, 10)
    async with harness.pool.connection() as conn:
        second = await runs.add_inbox(conn, TENANT, run_id, "thanks")
    await handle.signal(
        AgentRunWorkflow.submit_message, SubmitMessage(inbox_id=second, end_conversation=True)
    )
    output = await handle.result()
    assert output.outcome == "succeeded" and output.result == "bye"
    contents = [(m.role, m.content) for m in await harness.messages(run_id)]
    assert contents == [
        ("user", "hi"), ("assistant", "Hello! Ask me anything."),
        ("user", "what is 1+5?"), ("assistant", "6"),
        ("user", "thanks"), ("assistant", "bye"),
    ]  # fmt: skip
    # Each model call saw the whole conversation so far.
    assert [len(r.messages) for r in harness.server.chat_requests()] == [2, 4, 6]
    await assert_replays(handle)
    record_history("agent_run_v1_conversation", await handle.fetch_history())


async def test_cancel_mid_call_records_cancelled(harness: Harness) -> None:
    harness.server.script(hang(30))
    handle, run_id = await harness.start(spec())
    await asyncio.to_thread(harness.server.wait_for_requests, 1, 10)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, CancelledError)
    row = await harness.run_row(run_id)
    assert (row.status, row.outcome) == ("cancelled", "cancelled")
    assert (await harness.events(run_id))[-1].type == "run.finished"
    await assert_replays(handle)
    record_history("agent_run_v1_cancelled", await handle.fetch_history())


async def test_status_query_reports_progress(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("calculator", {"expression": "2"}, id="q")), reply("2")
    )
    handle, _ = await harness.start(
        spec(tool_policies={"calculator": {"mode": "requires_approval"}})
    )
    await _wait_for_pending(handle)
    status = await handle.query(AgentRunWorkflow.status)
    assert status.phase == "waiting_for_approval"
    assert status.progress.step == 1 and status.progress.prompt_tokens > 0
    assert json.loads(status.model_dump_json())["pending_approvals"][0]["tool"] == "calculator"
    await handle.execute_update(
        AgentRunWorkflow.approve_tool_call, ApprovalDecision(call_id="q", approved=True)
    )
    await handle.result()


async def test_retryable_errors_are_retried(harness: Harness) -> None:
    harness.server.default = None  # every call: 500 "script exhausted"
    harness.server.script(fault(503), fault(500), reply("third time lucky"))
    handle, _ = await harness.start(spec())
    assert (await handle.result()).result == "third time lucky"
    await assert_replays(handle)


async def test_retries_are_bounded(harness: Harness) -> None:
    harness.server.script(*(fault(500) for _ in range(4)))
    handle, _ = await harness.start(spec())
    output = await handle.result()
    assert output.outcome == "failed" and "retries exhausted after 4 attempts" in (
        output.reason or ""
    )
    assert len(harness.server.chat_requests()) == 4
