"""SwarmWorkflow end to end: real Temporal, Postgres, workers and HTTP to the scripted model."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from core.codec import codec_from_settings
from core.db import Pool
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec
from core.settings import Settings
from core.swarms import store as swarm_store
from core.swarms.plan import (
    QUEEN_AGENT,
    QUEEN_INSTRUCTIONS,
    SubtaskSpec,
    SwarmInput,
    SwarmMode,
    SwarmOutput,
    SwarmSettings,
    shape,
)
from tests.support.model_server import (
    ScriptedModelServer,
    Usage,
    fault,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.swarm_script import SwarmScript, plan_json, requests_for, subtask
from tests.workflows.harness import TENANT, Harness, running_harness, spec
from workflows.swarm import SwarmWorkflow

SwarmHandle = WorkflowHandle[SwarmWorkflow, SwarmOutput]
DIAMOND = (
    subtask("a", "researcher"),
    subtask("b", "analyst", ["a"]),
    subtask("c", "analyst", ["a"]),
    subtask("d", "writer", ["b", "c"]),
)


@pytest.fixture
async def harness(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> AsyncIterator[Harness]:
    # Built-in role agents and the queen are created with the default model.
    async with running_harness(
        temporal, pool, model_server, COLONY_DEFAULT_MODEL="openai/scripted-model"
    ) as running:
        yield running


async def start_swarm(
    harness: Harness,
    objective: str = "Write a short report on bees.",
    *,
    mode: SwarmMode = "hierarchical",
    plan: list[dict[str, Any]] | None = None,
    queen: str = QUEEN_AGENT,
    queen_model: str = "openai/scripted-model",
    models: dict[str, str] | None = None,
    **limits: Any,
) -> tuple[SwarmHandle, str]:
    async with harness.pool.connection() as conn:
        if queen == QUEEN_AGENT:
            queen_version = await swarm_store.role_agent(conn, TENANT, queen, queen_model)
        else:
            queen_spec = AgentSpec(instructions=QUEEN_INSTRUCTIONS, model=queen_model)
            queen_version, _ = await agents.create_version(conn, TENANT, queen, queen_spec)
        specs = shape([SubtaskSpec.model_validate(s) for s in plan], mode) if plan else None
        record, _ = await swarm_store.create_swarm(
            conn, tenant_id=TENANT, objective=objective, mode=mode, queen=queen_version,
            settings=SwarmSettings.model_validate({"limits": limits, "models": models or {}}),
            plan=specs,
        )  # fmt: skip
    handle = await harness.client.start_workflow(
        SwarmWorkflow.run,
        SwarmInput(tenant_id=TENANT, swarm_id=record.id),
        id=record.workflow_id,
        task_queue=TaskQueue.ORCHESTRATION.value + harness.suffix,
    )
    return handle, record.id


async def swarm_events(harness: Harness, swarm_id: str) -> list[Any]:
    async with harness.pool.connection() as conn:
        return await swarm_store.list_events(conn, TENANT, swarm_id)


async def subtask_rows(harness: Harness, swarm_id: str) -> dict[str, swarm_store.SubtaskRecord]:
    async with harness.pool.connection() as conn:
        return {s.id: s for s in await swarm_store.list_subtasks(conn, swarm_id)}


def user_text(request: Any) -> str:
    return next(str(m["content"]) for m in request.messages if m["role"] == "user")


async def test_the_queen_plans_a_diamond_and_synthesizes(harness: Harness) -> None:
    SwarmScript(
        plans=[plan_json(*DIAMOND)],
        subtasks={
            "b": [reply("B found 42 bees.", delay=0.5)],
            "c": [reply("C found 7 hives.", delay=0.5)],
        },
        synthesis="There are 42 bees [b] in 7 hives [c], written up by [d].",
    ).install(harness.server)
    handle, swarm_id = await start_swarm(harness)
    output = await handle.result()
    assert output.outcome == "succeeded", output.reason
    assert output.result == "There are 42 bees [b] in 7 hives [c], written up by [d]."
    assert output.attribution == ["b", "c", "d"]
    assert {s.id: s.status for s in output.subtasks} == dict.fromkeys("abcd", "succeeded")

    events = await swarm_events(harness, swarm_id)
    types = [e.type for e in events]
    assert types[:2] == ["swarm.started", "swarm.planned"]
    assert types[-2:] == ["swarm.synthesized", "swarm.finished"]
    order = [(e.type, e.data.get("subtask_id")) for e in events if e.type.startswith("subtask.")]
    position = {item: i for i, item in enumerate(order)}
    # b and c wait for a; d waits for both; b and c run at the same time.
    assert position[("subtask.finished", "a")] < position[("subtask.started", "b")]
    assert position[("subtask.finished", "a")] < position[("subtask.started", "c")]
    assert position[("subtask.started", "c")] < position[("subtask.finished", "b")]
    assert position[("subtask.finished", "b")] < position[("subtask.started", "d")]
    assert position[("subtask.finished", "c")] < position[("subtask.started", "d")]

    # d's objective carries its dependencies' results; d's start in the swarm's history
    # does not (an activity builds the objective from the stored results).
    (d_request,) = requests_for(harness.server, "subtask", "d")
    assert '<subtask_result id="b"' in user_text(d_request)
    assert "B found 42 bees." in user_text(d_request) and "C found 7 hives." in user_text(d_request)
    history = await handle.fetch_history()
    codec = codec_from_settings(Settings())
    started_d = []
    for event in history.events:
        codec.decrypt_message(event)  # as the workflow sees it, not as the server stores it
        start = event.start_child_workflow_execution_initiated_event_attributes
        if start.workflow_id.endswith("/d"):
            started_d.append(start.input.SerializeToString())
    assert len(started_d) == 1 and b"B found 42 bees." not in started_d[0]
    # ... while the history does hold b's result (its child's completion): the search works.
    assert b"B found 42 bees." in b"".join(e.SerializeToString() for e in history.events)
    (synthesis,) = requests_for(harness.server, "synthesis")
    assert "C found 7 hives." in user_text(synthesis)

    # Every subtask ran once, as a child run with a deterministic workflow id.
    rows = await subtask_rows(harness, swarm_id)
    assert all(rows[s].attempts == 1 for s in "abcd")
    assert {rows[s].agent_name for s in "abcd"} == {"researcher", "analyst", "writer"}
    async with harness.pool.connection() as conn:
        record = await swarm_store.get_swarm(conn, TENANT, swarm_id)
        run = await runs.get_run(conn, TENANT, rows["b"].run_id or "")
    assert (record.status, record.result) == ("succeeded", output.result)
    assert run.workflow_id == f"{record.workflow_id}/b" and run.swarm_id == swarm_id
    assert len(requests_for(harness.server, "plan")) == 1
    await assert_replays(handle)
    record_history("swarm_v1_diamond", await handle.fetch_history())


async def test_a_user_plan_runs_as_given(harness: Harness) -> None:
    SwarmScript().install(harness.server)
    plan = [subtask("x", "researcher"), subtask("y", "writer"), subtask("z", "reviewer")]
    handle, swarm_id = await start_swarm(harness, mode="sequential", plan=plan)
    output = await handle.result()
    assert output.outcome == "succeeded", output.reason
    assert requests_for(harness.server, "plan") == []  # the queen did not plan
    # Sequential mode made a pipeline of the plan: each subtask got the one before's result.
    rows = await subtask_rows(harness, swarm_id)
    assert (rows["y"].depends_on, rows["z"].depends_on) == (["x"], ["y"])
    (z_request,) = requests_for(harness.server, "subtask", "z")
    assert "result of y" in user_text(z_request)
    starts = [
        e.data["subtask_id"]
        for e in await swarm_events(harness, swarm_id)
        if e.type == "subtask.started"
    ]
    assert starts == ["x", "y", "z"]
    await assert_replays(handle)


async def test_an_invalid_plan_is_sent_back_and_corrected(harness: Harness) -> None:
    cyclic = plan_json(
        subtask("a", "researcher", ["b"]),
        subtask("b", "astrologer", ["a"]),
        subtask("c", depends_on=["zz"]),
    )
    SwarmScript(plans=[cyclic, plan_json(subtask("a"), subtask("b", depends_on=["a"]))]).install(
        harness.server
    )
    handle, swarm_id = await start_swarm(harness)
    output = await handle.result()
    assert output.outcome == "succeeded", output.reason
    invalid = [e for e in await swarm_events(harness, swarm_id) if e.type == "plan.invalid"]
    assert len(invalid) == 1
    errors = " | ".join(invalid[0].data["errors"])
    assert "unknown role 'astrologer'" in errors and "cycle" in errors and "'zz'" in errors
    first, second = requests_for(harness.server, "plan")
    # The second request shows the queen its own answer and what was wrong with it.
    assert second.messages[-2] == {"role": "assistant", "content": cyclic}
    assert "That plan cannot run" in second.messages[-1]["content"]
    assert "astrologer" in second.messages[-1]["content"]
    assert len(first.messages) == 2
    assert first.body["response_format"] == {"type": "json_object"}
    await assert_replays(handle)


async def test_a_plan_that_never_validates_fails_the_swarm(harness: Harness) -> None:
    SwarmScript(plans=["not json at all"] * 2).install(harness.server)
    handle, swarm_id = await start_swarm(harness, max_plan_attempts=2)
    output = await handle.result()
    assert output.outcome == "failed"
    assert output.reason is not None and "invalid 2 time(s)" in output.reason
    assert "holds no JSON" in output.reason
    async with harness.pool.connection() as conn:
        record = await swarm_store.get_swarm(conn, TENANT, swarm_id)
    assert (record.status, record.outcome) == ("failed", "failed")


async def test_a_failed_subtask_is_retried(harness: Harness) -> None:
    SwarmScript(subtasks={"b": [fault(400), reply("b, second time")]}).install(harness.server)
    plan = [subtask("a"), subtask("b", depends_on=["a"])]
    handle, swarm_id = await start_swarm(harness, plan=plan, failure_policy="retry", max_retries=1)
    output = await handle.result()
    assert output.outcome == "succeeded", output.reason
    rows = await subtask_rows(harness, swarm_id)
    assert rows["b"].attempts == 2 and rows["a"].attempts == 1
    events = [
        (e.type, e.data.get("subtask_id"), e.data.get("attempt"))
        for e in await swarm_events(harness, swarm_id)
    ]
    assert ("subtask.failed", "b", 1) in events and ("subtask.started", "b", 2) in events
    async with harness.pool.connection() as conn:
        retry = await runs.get_run(conn, TENANT, rows["b"].run_id or "")
        record = await swarm_store.get_swarm(conn, TENANT, swarm_id)
    assert retry.workflow_id == f"{record.workflow_id}/b.2"
    assert len(requests_for(harness.server, "subtask", "a")) == 1
    await assert_replays(handle)


async def test_a_failed_subtask_is_replanned_around(harness: Harness) -> None:
    replan = plan_json(subtask("b2", "analyst", ["a"]), subtask("d", "writer", ["b2"]))
    SwarmScript(
        plans=[
            plan_json(subtask("a"), subtask("b", "coder", ["a"]), subtask("d", "writer", ["b"])),
            replan,
        ],
        subtasks={
            "b": [
                fault(
                    400,
                    body={
                        "error": {"message": "the coder is broken", "type": "invalid_request_error"}
                    },
                )
            ]
        },
        synthesis="Done [a][b2][d].",
    ).install(harness.server)
    handle, swarm_id = await start_swarm(harness, failure_policy="replan", max_retries=0)
    output = await handle.result()
    assert output.outcome == "succeeded", output.reason
    states = {s.id: s.status for s in output.subtasks}
    assert states == {"a": "succeeded", "b": "dropped", "b2": "succeeded", "d": "succeeded"}
    _, second = requests_for(harness.server, "plan")
    evidence = user_text(second)
    assert "Completed subtasks" in evidence and "- a (researcher)" in evidence
    assert "the coder is broken" in evidence  # the failure is the evidence
    # The completed subtask is not re-run after the re-plan.
    assert len(requests_for(harness.server, "subtask", "a")) == 1
    types = [e.type for e in await swarm_events(harness, swarm_id)]
    assert types.count("swarm.replanned") == 1
    rows = await subtask_rows(harness, swarm_id)
    assert (rows["b"].status, rows["b2"].plan_version, rows["d"].plan_version) == ("dropped", 2, 2)
    await assert_replays(handle)
    record_history("swarm_v1_replan", await handle.fetch_history())


async def test_a_subtask_failing_for_good_fails_the_swarm_and_stops_the_rest(
    harness: Harness,
) -> None:
    SwarmScript(subtasks={"a": [fault(400)], "b": [reply("slow", delay=30)]}).install(
        harness.server
    )
    handle, swarm_id = await start_swarm(
        harness, mode="parallel", plan=[subtask("a"), subtask("b")], failure_policy="fail"
    )
    output = await handle.result()
    assert output.outcome == "failed"
    assert output.reason is not None and output.reason.startswith(
        "subtask a failed after 1 attempt(s)"
    )
    assert {s.id: s.status for s in output.subtasks} == {"a": "failed", "b": "cancelled"}
    rows = await subtask_rows(harness, swarm_id)
    async with harness.pool.connection() as conn:
        b_run = await runs.get_run(conn, TENANT, rows["b"].run_id or "")
    assert b_run.status == "cancelled"  # the running child was cancelled, not abandoned


async def test_cancelling_a_swarm_cancels_its_children(harness: Harness) -> None:
    SwarmScript(
        subtasks={"b": [reply("never", delay=60)], "c": [reply("never", delay=60)]}
    ).install(harness.server)
    plan = [subtask("a"), subtask("b", depends_on=["a"]), subtask("c", depends_on=["a"])]
    handle, swarm_id = await start_swarm(harness, plan=plan)
    for _ in range(200):
        if len(requests_for(harness.server, "subtask", "b")) and len(
            requests_for(harness.server, "subtask", "c")
        ):
            break
        await asyncio.sleep(0.05)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    assert isinstance(raised.value.cause, CancelledError)
    async with harness.pool.connection() as conn:
        record = await swarm_store.get_swarm(conn, TENANT, swarm_id)
    assert (record.status, record.outcome) == ("cancelled", "cancelled")
    rows = await subtask_rows(harness, swarm_id)
    assert {k: r.status for k, r in rows.items()} == {
        "a": "succeeded",
        "b": "cancelled",
        "c": "cancelled",
    }
    finished = next(e for e in await swarm_events(harness, swarm_id) if e.type == "swarm.finished")
    assert finished.data["finished"] == ["a"]
    async with harness.pool.connection() as conn:
        children = [await runs.get_run(conn, TENANT, rows[s].run_id or "") for s in "bc"]
    assert [c.status for c in children] == ["cancelled", "cancelled"]
    await assert_replays(handle)


async def test_the_budget_is_shared_and_exhaustion_stops_the_swarm(harness: Harness) -> None:
    # gpt-4o-mini is priced; 100K prompt tokens cost $0.015 per call.
    expensive = {"prompt_tokens": 100_000, "completion_tokens": 10}
    SwarmScript(
        subtasks={s: [reply(f"{s} done", usage=Usage(**expensive))] for s in ("a", "b", "c")}
    ).install(harness.server)
    async with harness.pool.connection() as conn:
        spec = AgentSpec(instructions="Work.", model="openai/gpt-4o-mini")
        await agents.create_version(conn, TENANT, "priced-worker", spec)
    plan = [subtask(s, "priced-worker") for s in ("a", "b", "c")]
    handle, swarm_id = await start_swarm(
        harness, mode="parallel", plan=plan, max_parallel=1, max_cost_usd=0.02,
        queen="priced-queen", queen_model="openai/gpt-4o-mini",
    )  # fmt: skip
    output = await handle.result()
    assert output.outcome == "limit_reached"
    assert output.reason is not None and "max_cost_usd (0.02) reached" in output.reason
    assert {s.id: s.status for s in output.subtasks} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "cancelled",
    }
    assert requests_for(harness.server, "subtask", "c") == []  # never started
    assert output.cost_usd == pytest.approx(0.03, rel=0.01)
    rows = await subtask_rows(harness, swarm_id)
    # Each child got an equal share of what remained, one share kept for the synthesis.
    assert rows["a"].budget_usd == pytest.approx(0.02 / 4)
    assert rows["b"].budget_usd == pytest.approx((0.02 - 0.015) / 3, rel=0.01)
    async with harness.pool.connection() as conn:
        a_run = await runs.get_run(conn, TENANT, rows["a"].run_id or "")
        cost, complete = await swarm_store.swarm_cost(conn, swarm_id)
    assert a_run.max_cost_usd == pytest.approx(0.005)
    assert complete and cost == pytest.approx(output.cost_usd)
    await assert_replays(handle)


async def test_the_blackboard_is_shared_by_subtasks_and_the_queen(harness: Harness) -> None:
    post = tool_call("post_to_blackboard", {"content": "Bees like lavender.", "topic": "facts"})
    SwarmScript(
        subtasks={
            "a": [tool_calls(post), reply("a done")],
            "b": [tool_calls(tool_call("read_blackboard", {"topic": "facts"})), reply("b done")],
        },
        synthesis="Lavender [a][b].",
    ).install(harness.server)
    plan = [subtask("a", "researcher"), subtask("b", "writer", ["a"])]
    handle, swarm_id = await start_swarm(harness, plan=plan)
    assert (await handle.result()).outcome == "succeeded"
    # The writer has no tools of its own, yet a swarm's subtask gets the blackboard.
    _, b_second = requests_for(harness.server, "subtask", "b")
    assert "Bees like lavender." in b_second.messages[-1]["content"]
    assert "(subtask a, topic facts)" in b_second.messages[-1]["content"]
    posted = [e for e in await swarm_events(harness, swarm_id) if e.type == "blackboard.posted"]
    assert [(e.data["subtask_id"], e.data["content"]) for e in posted] == [
        ("a", "Bees like lavender.")
    ]
    (synthesis,) = requests_for(harness.server, "synthesis")
    assert "The team's blackboard" in user_text(synthesis) and "Bees like lavender." in user_text(
        synthesis
    )


async def test_blackboard_tools_refuse_outside_a_swarm(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("post_to_blackboard", {"content": "hello"})), reply("ok")
    )
    handle, run_id = await harness.start(spec(tools=["post_to_blackboard"]))
    assert (await handle.result()).outcome == "succeeded"
    result = next(m for m in await harness.messages(run_id) if m.role == "tool")
    assert result.content == (
        "Error: post_to_blackboard works only in a swarm's subtasks; this run is not part of one."
    )


async def test_a_subtask_runs_on_the_model_of_its_complexity(harness: Harness) -> None:
    SwarmScript().install(harness.server)
    plan = [subtask("easy", complexity="low"), subtask("hard", complexity="high")]
    handle, swarm_id = await start_swarm(
        harness, mode="parallel", plan=plan, models={"low": "openai/cheap-model"}
    )
    assert (await handle.result()).outcome == "succeeded"
    assert [r.model for r in requests_for(harness.server, "subtask", "easy")] == ["cheap-model"]
    assert [r.model for r in requests_for(harness.server, "subtask", "hard")] == ["scripted-model"]
    rows = await subtask_rows(harness, swarm_id)
    assert (rows["easy"].model, rows["hard"].model) == (
        "openai/cheap-model",
        "openai/scripted-model",
    )
    async with harness.pool.connection() as conn:
        easy = await runs.get_run(conn, TENANT, rows["easy"].run_id or "")
    # The tier's model goes first; the role agent's own chain follows as fallbacks.
    assert easy.models == ["openai/cheap-model", "openai/scripted-model"]


async def test_a_long_result_is_summarized_for_the_synthesis(harness: Harness) -> None:
    long = "Bees dance to say where the flowers are. " * 400  # ~16,000 characters
    SwarmScript(subtasks={"a": [reply(long)]}, synthesis="Dances [a][b].").install(harness.server)
    handle, swarm_id = await start_swarm(
        harness, mode="parallel", plan=[subtask("a"), subtask("b")]
    )
    output = await handle.result()
    assert output.outcome == "succeeded" and output.attribution == ["a", "b"]
    (summary,) = requests_for(harness.server, "summary")
    assert long.strip() in user_text(summary)
    (synthesis,) = requests_for(harness.server, "synthesis")
    # The queen reads the summary of a's result and b's result as it is, not a's 16,000 chars.
    assert "A short summary of a long result." in user_text(synthesis)
    assert "result of b" in user_text(synthesis) and long not in user_text(synthesis)
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT key, purpose FROM swarm_llm_calls WHERE swarm_id = %s ORDER BY key", (swarm_id,)
        )
        assert [(r["key"], r["purpose"]) for r in await cur.fetchall()] == [
            ("summary-a-1", "summary"),
            ("synthesis", "synthesis"),
        ]


async def test_the_swarm_timeout_stops_its_children(harness: Harness) -> None:
    SwarmScript(subtasks={"a": [reply("too late", delay=30)]}).install(harness.server)
    handle, swarm_id = await start_swarm(harness, plan=[subtask("a")], timeout_s=2)
    output = await handle.result()
    assert (output.outcome, output.reason) == ("limit_reached", "timeout_s (2) reached")
    assert [s.status for s in output.subtasks] == ["cancelled"]
    rows = await subtask_rows(harness, swarm_id)
    async with harness.pool.connection() as conn:
        run = await runs.get_run(conn, TENANT, rows["a"].run_id or "")
    assert run.status == "cancelled"
