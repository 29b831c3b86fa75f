"""A recipe called as a tool: the saved plan runs as a child SwarmWorkflow of the agent's run."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.db import Pool
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentRunInput
from core.swarms import recipes
from core.swarms import store as swarm_store
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.swarm_script import SwarmScript, plan_json, requests_for, subtask
from tests.workflows.harness import TENANT, Harness, RunHandle, running_harness, spec
from tests.workflows.test_swarm import start_swarm, user_text
from workflows._agent_tools import MAX_AGENT_DEPTH
from workflows.agent_run import AgentRunWorkflow

SOURCE = "Write a short report on the bees of Berlin."
PLAN = (
    subtask("a", "researcher", description=f"Gather the facts for: {SOURCE}"),
    subtask("b", "writer", ["a"], description="Write the report from [a]'s facts."),
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


async def saved_recipe(harness: Harness) -> str:
    """A recipe saved from a swarm the queen planned (the plan request is the only one)."""
    SwarmScript(plans=[plan_json(*PLAN)], synthesis="Bees [a][b].").install(harness.server)
    handle, swarm_id = await start_swarm(harness, SOURCE)
    assert (await handle.result()).outcome == "succeeded"
    name = "bee-report-" + uuid.uuid4().hex[:6]
    async with harness.pool.connection() as conn:
        recipe, created = await recipes.save_recipe(conn, TENANT, name, swarm_id, "Bee reports")
    assert created and recipe.plan[0].description == "Gather the facts for: {objective}"
    harness.server.reset()
    return name


async def test_an_agent_runs_a_recipe_as_a_child_swarm(harness: Harness) -> None:
    name = await saved_recipe(harness)
    objective = "Write a short report on the bees of Paris."
    SwarmScript(
        subtasks={"b": [reply("Paris has 700 hives.")]},
        synthesis="Paris has 700 hives [b].",
    ).install(harness.server)
    # The agent's own requests are neither the queen's nor a subtask's: the queue answers.
    harness.server.script(
        tool_calls(tool_call(f"recipe__{name}", {"objective": objective}, id="r1")),
        reply("The team says: Paris has 700 hives."),
    )
    handle, run_id = await harness.start(spec(tools=[f"recipe:{name}"]), "Bees of Paris?")
    output = await handle.result()
    assert output.outcome == "succeeded"

    # The model was offered the recipe under its provider-safe name, with its description.
    first = next(r for r in harness.server.chat_requests() if r.body.get("tools"))
    (offered,) = first.body["tools"]
    assert offered["function"]["name"] == f"recipe__{name}"
    assert "Bee reports" in offered["function"]["description"]
    assert offered["function"]["parameters"]["required"] == ["objective"]

    # The saved plan ran as a child swarm, with the new objective; the queen only synthesized.
    async with harness.pool.connection() as conn:
        cur = await conn.execute("SELECT id FROM swarms WHERE parent_run_id = %s", (run_id,))
        (row,) = await cur.fetchall()
        swarm = await swarm_store.get_swarm(conn, TENANT, row["id"])
        subtasks = await swarm_store.list_subtasks(conn, swarm.id)
    assert (swarm.recipe, swarm.status, swarm.user_plan) == (name, "succeeded", True)
    assert swarm.objective == objective and swarm.result == "Paris has 700 hives [b]."
    assert swarm.workflow_id == f"{handle.id}/recipe-r1"
    assert [(s.id, s.status) for s in subtasks] == [("a", "succeeded"), ("b", "succeeded")]
    assert subtasks[0].description == f"Gather the facts for: {objective}"
    assert requests_for(harness.server, "plan") == []
    assert len(requests_for(harness.server, "synthesis")) == 1
    (a_request,) = requests_for(harness.server, "subtask", "a")
    assert objective in user_text(a_request) and SOURCE not in user_text(a_request)
    child = harness.client.get_workflow_handle(swarm.workflow_id)
    described = await child.describe()
    assert described.workflow_type == "SwarmWorkflow"
    assert described.parent_id == handle.id

    # The swarm's answer is the tool's result, and the agent answered from it.
    messages = await harness.messages(run_id)
    assert messages[2].content == "Paris has 700 hives [b]."
    assert messages[-1].content == "The team says: Paris has 700 hives."
    events = [e for e in await harness.events(run_id) if e.type == "recipe.started"]
    assert [e.data["swarm_id"] for e in events] == [swarm.id]
    await assert_replays(handle)
    await assert_replays(child)
    record_history("agent_run_v5_recipe", await handle.fetch_history())
    record_history("swarm_v2_recipe", await child.fetch_history())


async def test_bad_recipe_calls_are_errors_for_the_model(harness: Harness) -> None:
    name = await saved_recipe(harness)
    SwarmScript().install(harness.server)
    harness.server.script(
        tool_calls(
            tool_call(f"recipe__{name}", {"objective": "  "}, id="e1"),
            tool_call(f"recipe__{name}", "not json", id="e2"),
            tool_call("recipe:gone", {"objective": "anything"}, id="e3"),
        ),
        reply("I could not use the recipes."),
    )
    handle, run_id = await harness.start(spec(tools=[f"recipe:{name}", "recipe:gone"]))
    assert (await handle.result()).outcome == "succeeded"
    results = [m.content or "" for m in (await harness.messages(run_id))[2:5]]
    assert 'send {"objective": "..."}' in results[0] and 'send {"objective"' in results[1]
    assert results[2] == "Error: recipe 'gone' not found"
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM swarms WHERE parent_run_id = %s", (run_id,)
        )
        assert (await cur.fetchone())["n"] == 0  # type: ignore[index]
    await assert_replays(handle)


async def start_run(harness: Harness, tools: list[str], **input: Any) -> tuple[RunHandle, str]:
    """A run started as a nested or evaluation run would be (`input`: depth, mode)."""
    name = "agent-" + uuid.uuid4().hex[:6]
    async with harness.pool.connection() as conn:
        version, _ = await agents.create_version(conn, TENANT, name, spec(tools=tools))
        record, inbox_id, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name=name, agent_version=version.version,
            objective="Bees?", mode=input.get("mode", "normal"),
        )  # fmt: skip
    handle = await harness.client.start_workflow(
        AgentRunWorkflow.run,
        AgentRunInput(
            tenant_id=TENANT, run_id=record.id, agent_name=name, agent_version=version.version,
            inbox_ids=[inbox_id], **input,
        ),
        id=record.workflow_id + harness.suffix,
        task_queue=TaskQueue.ORCHESTRATION.value + harness.suffix,
    )  # fmt: skip
    return handle, record.id


@pytest.mark.parametrize(
    ("input", "refusal"),
    [({"depth": MAX_AGENT_DEPTH}, "levels deep"), ({"mode": "evaluation"}, "evaluation runs")],
)
async def test_deep_and_evaluation_runs_do_not_run_recipes(
    harness: Harness, input: dict[str, Any], refusal: str
) -> None:
    name = "never-run-" + uuid.uuid4().hex[:6]  # refused before the recipe is looked up
    harness.server.script(
        tool_calls(tool_call(f"recipe:{name}", {"objective": "anything"}, id="d1")),
        reply("I did it myself."),
    )
    handle, run_id = await start_run(harness, [f"recipe:{name}"], **input)
    assert (await handle.result()).outcome == "succeeded"
    result = (await harness.messages(run_id))[2].content or ""
    assert result.startswith("Error:") and refusal in result
    await assert_replays(handle)
