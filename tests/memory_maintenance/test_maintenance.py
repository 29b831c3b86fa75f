"""MemoryMaintenanceWorkflow through real Temporal, Postgres, Qdrant (local) and workers.

Tests use a tenant each. The first one runs the pass over every tenant (a child per
tenant), the others run the workflow for their own tenant; the schedule test, last,
triggers the schedule once, which covers every tenant again (and changes nothing).
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    WorkflowHandle,
)

from activities.memory.store import MemoryStore, collection_for
from activities.providers.embeddings import MODEL_ID
from core import temporal as temporal_support
from core import tenants
from core.db import Pool
from core.memory.maintenance import CONSUMED_BY, MaintenanceInput, MaintenanceOutput
from core.memory.payloads import MemoryItem, RecallInput, WriteMemoriesInput
from core.queues import TaskQueue
from core.settings import Settings
from tests.conftest import make_settings
from tests.support.model_server import RecordedRequest, ScriptedModelServer, Step, fault, reply
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from workers.registry import Resources
from workers.schedules import (
    DISABLED_NOTE,
    ensure_maintenance_schedule,
    ensure_schedules,
    maintenance_schedule_id,
)
from workflows.memory_maintenance import MemoryMaintenanceWorkflow, child_workflow_id

AGENT = "travel"
Handle = WorkflowHandle[MemoryMaintenanceWorkflow, MaintenanceOutput]

CURRENCY = {
    "name": "Convert currencies",
    "trigger": "The user asks how much an amount of money is in another currency.",
    "procedure": "1. Fetch today's rate with http_fetch.\n2. Multiply with calculator.",
}
WEATHER = {
    "name": "Check the weather forecast",
    "trigger": "The user asks about the weather somewhere.",
    "procedure": ["Call weather_forecast for the city", "Report temperature and rain"],
}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as scripted:
        yield scripted


@pytest.fixture(scope="module")
async def stack(
    temporal: TemporalServer,
    database_url: str,
    pool: Pool,
    server: ScriptedModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, Client, Resources]]:
    settings = make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=server.base_url,
        COLONY_DEFAULT_MODEL="openai/scripted-model",
        COLONY_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        COLONY_TASK_QUEUE_SUFFIX="-" + uuid.uuid4().hex[:8],
    )
    client = await temporal_support.connect(settings)
    async with running_workers(client, settings, pool, suffix=settings.task_queue_suffix) as res:
        yield settings, client, res


def answers(**by_word: Step) -> Any:
    """A responder: the step of the first word found in the prompt's episodes."""

    def respond(request: RecordedRequest) -> Step | None:
        prompt = str(request.messages[-1].get("content", "")) if request.messages else ""
        for word, step in by_word.items():
            if word in prompt:
                return step
        return reply("I do not know.")

    return respond


def episode(
    n: str, objective: str, tools: list[str], outcome: str = "succeeded", **meta: Any
) -> MemoryItem:
    return MemoryItem(
        key=f"episode:{n}",
        agent_name=meta.pop("agent", AGENT),
        kind="episode",
        content=f"Objective: {objective}\nOutcome: {outcome}\nSummary: did it with {tools}",
        metadata={"objective": objective, "outcome": outcome, "tools": tools, "steps": 3, **meta},
    )


async def seed(res: Resources, pool: Pool, tenant: str, *items: MemoryItem) -> list[str]:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, tenant, tenant)
    out = await res.memory.write(WriteMemoriesInput(tenant_id=tenant, items=list(items)))
    return out.ids


async def run(
    stack: tuple[Settings, Client, Resources], tenant: str | None, **fields: Any
) -> tuple[Handle, MaintenanceOutput]:
    settings, client, _ = stack
    handle = await client.start_workflow(
        MemoryMaintenanceWorkflow.run,
        MaintenanceInput(tenant_id=tenant, **fields),
        id=f"test-memory-maintenance-{uuid.uuid4().hex[:8]}",
        task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
        execution_timeout=timedelta(seconds=60),
    )
    return handle, await handle.result()


async def skills(pool: Pool, tenant: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id::text AS id, agent_name, scope, content, metadata, retired FROM memories"
            " WHERE tenant_id = %s AND kind = 'skill' ORDER BY metadata->>'name'",
            (tenant,),
        )
        return [dict(row) for row in await cur.fetchall()]


async def recall(res: Resources, tenant: str, query: str, **fields: Any) -> list[str]:
    found = await res.memory.recall(
        RecallInput(tenant_id=tenant, query=query, agent_name=AGENT, **fields)
    )
    return [hit.content for hit in found.hits]


def point_ids(res: Resources, tenant: str, collection: str | None = None) -> set[str]:
    name = collection or res.memory.collection
    if not res.vectors.collection_exists(name):
        return set()
    return {r.id for r in res.vectors.scroll(name, tenant_id=tenant, fields=[])}


async def test_successful_episodes_become_skills_once(
    stack: tuple[Settings, Client, Resources], pool: Pool, server: ScriptedModelServer
) -> None:
    _, client, res = stack
    tenant = "mm-skills"
    ids = await seed(
        res, pool, tenant,
        episode("c1", "Convert 100 US dollars to euros", ["http_fetch", "calculator"]),
        episode("c2", "Convert 250 US dollars to euros", ["http_fetch", "calculator"], rating=5),
        episode("c3", "How many euros is 80 US dollars?", ["http_fetch", "calculator"]),
        episode("w1", "What is the weather forecast for Paris tomorrow?", ["weather_forecast"]),
        episode("w2", "What is the weather forecast for Berlin tomorrow?", ["weather_forecast"]),
        # Noise, a failure and a badly rated run: none of them joins a skill.
        episode("n1", "Write a haiku about autumn leaves", []),
        episode("n2", "Will it rain in Madrid tomorrow? Check the forecast", ["weather_forecast"]),
        episode("f1", "Convert 20 US dollars to euros", ["http_fetch", "calculator"], "failed"),
        episode("r1", "Convert 60 US dollars to euros", ["http_fetch", "calculator"], rating=2),
        episode("o1", "Convert 9 US dollars to euros", ["http_fetch"], agent="other"),
    )  # fmt: skip
    currency_ids, weather_ids = sorted(ids[:3]), sorted(ids[3:5])
    server.responder = answers(
        dollars=reply(json.dumps(CURRENCY)),
        weather=reply(f"Here you go:\n```json\n{json.dumps(WEATHER)}\n```"),
    )

    handle, output = await run(stack, None)
    assert output.tenant_id is None and tenant not in output.failed_tenants
    assert output.skills_written == 2 and output.episodes_consumed == 5
    assert output.fallback_skills == 0 and output.expired == 0 and output.reembedded == 0

    rows = await skills(pool, tenant)
    assert [r["metadata"]["name"] for r in rows] == [WEATHER["name"], CURRENCY["name"]]
    weather, currency = rows
    assert currency["content"] == (
        f"Skill: {CURRENCY['name']}\nWhen: {CURRENCY['trigger']}\nHow: {CURRENCY['procedure']}"
    )
    assert currency["metadata"]["episodes"] == currency_ids
    assert currency["metadata"]["tools"] == ["http_fetch", "calculator"]
    assert currency["metadata"]["distilled_by"] == "openai/scripted-model"
    assert weather["metadata"]["episodes"] == weather_ids
    assert weather["metadata"]["procedure"].startswith("1. Call weather_forecast for the city\n2.")
    assert {r["agent_name"] for r in rows} == {AGENT} and {r["scope"] for r in rows} == {"private"}
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT key, metadata->>%s AS skill FROM memories WHERE tenant_id = %s"
            " AND kind = 'episode' ORDER BY key",
            (CONSUMED_BY, tenant),
        )
        consumed = {row["key"]: row["skill"] for row in await cur.fetchall()}
    assert consumed["episode:c1"] == consumed["episode:c3"] == currency["id"]
    assert consumed["episode:w2"] == weather["id"]
    assert all(consumed[f"episode:{k}"] is None for k in ("n1", "n2", "f1", "r1", "o1"))

    # Recalled by meaning, as skills of the agent.
    found = await recall(res, tenant, "change 30 dollars into euros", kinds=["skill"], limit=1)
    assert found == [currency["content"]]
    found = await recall(res, tenant, "is it going to rain in Oslo?", kinds=["skill"], limit=1)
    assert found == [weather["content"]]

    # A second pass finds nothing new to distill.
    requests = len(server.chat_requests())
    again, second = await run(stack, tenant)
    assert second.skills_written == 0 and second.episodes_consumed == 0
    assert len(await skills(pool, tenant)) == 2
    assert len(server.chat_requests()) == requests

    child = client.get_workflow_handle(
        child_workflow_id(tenant, (await handle.describe()).run_id or ""),
        result_type=MaintenanceOutput,
    )
    assert (await child.result()).skills_written == 2
    for h in (handle, child, again):
        await assert_replays(h)
    record_history("memory_maintenance_v1_all_tenants", await handle.fetch_history())
    record_history("memory_maintenance_v1_tenant", await child.fetch_history())


async def test_an_unusable_model_answer_still_yields_a_skill(
    stack: tuple[Settings, Client, Resources], pool: Pool, server: ScriptedModelServer
) -> None:
    _, _, res = stack
    tenant = "mm-fallback"
    await seed(
        res, pool, tenant,
        episode("a1", "Convert 12 euros to Swiss francs", ["http_fetch", "calculator"]),
        episode("a2", "Convert 40 euros to Swiss francs", ["http_fetch", "calculator"]),
        episode("b1", "List the files in the workspace", ["list_files"]),
        episode("b2", "Show me the files in my workspace", ["list_files"]),
    )  # fmt: skip
    # Prose instead of JSON for one cluster; a refused request (400) for the other.
    server.responder = answers(francs=reply("Sure! This is about money."), files=fault(400))

    handle, output = await run(stack, tenant)
    assert output.skills_written == 2 and output.fallback_skills == 2
    money, files = sorted(await skills(pool, tenant), key=lambda r: r["metadata"]["tools"])
    assert money["metadata"]["fallback"] and files["metadata"]["fallback"]
    assert money["metadata"]["name"] == "convert euros swiss francs"
    assert money["metadata"]["distilled_by"] == "openai/scripted-model"
    assert money["content"].startswith(
        "Skill: convert euros swiss francs\nWhen: Tasks like: Convert "
    )  # the cluster's central objective (here, either)
    assert money["metadata"]["procedure"] == (
        "1. Use `http_fetch`.\n2. Use `calculator`.\n3. Answer with what the tools returned."
    )
    assert files["metadata"]["distilled_by"] is None  # the model call failed
    assert files["metadata"]["procedure"].startswith("1. Use `list_files`.")
    await assert_replays(handle)


async def test_retention_deletes_old_memories_rows_and_vectors(
    stack: tuple[Settings, Client, Resources], pool: Pool, server: ScriptedModelServer
) -> None:
    _, _, res = stack
    tenant, keeper = "mm-retention", "mm-keep-all"
    facts = [
        MemoryItem(key=f"fact:{n}", agent_name=AGENT, kind="fact", content=f"Fact number {n}")
        for n in range(4)
    ]
    old, recent = [], []
    for who in (tenant, keeper):
        ids = await seed(res, pool, who, *facts)
        old += ids[:2] if who == tenant else []
        recent += ids[2:] if who == tenant else ids
    async with pool.connection() as conn:
        await conn.execute("UPDATE tenants SET memory_retention_days = 30 WHERE id = %s", (tenant,))
        # Both tenants' first two facts are 40 days old; only `tenant` has a retention.
        await conn.execute(
            "UPDATE memories SET created_at = now() - interval '40 days'"
            " WHERE tenant_id = ANY(%s) AND key IN ('fact:0', 'fact:1')",
            ([tenant, keeper],),
        )
    server.responder = answers()

    handle, output = await run(stack, tenant)
    assert output.expired == 2
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id::text AS id FROM memories WHERE tenant_id = %s", (tenant,)
        )
        assert {row["id"] for row in await cur.fetchall()} == set(recent[:2])
    assert point_ids(res, tenant) == set(recent[:2])
    assert not set(old) & point_ids(res, tenant)

    _, kept = await run(stack, keeper)
    assert kept.expired == 0 and len(point_ids(res, keeper)) == 4
    await assert_replays(handle)


async def test_failing_skills_are_retired(
    stack: tuple[Settings, Client, Resources], pool: Pool, server: ScriptedModelServer
) -> None:
    _, _, res = stack
    tenant = "mm-retire"

    def skill(name: str, how: str) -> MemoryItem:
        content = f"Skill: {name}\nWhen: the user asks to {name}\nHow: {how}"
        return MemoryItem(key=f"skill:{name}", agent_name=AGENT, kind="skill", content=content)

    failing, good, new = await seed(
        res, pool, tenant,
        skill("book a flight", "1. Search flights with http_fetch"),
        skill("book a hotel", "1. Search hotels with http_fetch"),
        skill("book a train", "1. Search trains with http_fetch"),
    )  # fmt: skip
    counters = {failing: (6, 1), good: (6, 4), new: (2, 0)}  # uses, successes
    async with pool.connection() as conn:
        for mid, (uses, successes) in counters.items():
            await conn.execute(
                "UPDATE memories SET uses = %s, successes = %s WHERE id = %s",
                (uses, successes, mid),
            )
    flight = "Skill: book a flight"
    assert any(c.startswith(flight) for c in await recall(res, tenant, "book me a flight"))
    server.responder = answers()

    handle, output = await run(stack, tenant)
    assert output.skills_retired == 1
    rows = {r["id"]: r["retired"] for r in await skills(pool, tenant)}
    assert rows == {failing: True, good: False, new: False}
    retired = res.vectors.scroll(
        res.memory.collection, tenant_id=tenant, where={"retired": True}, fields=[]
    )
    assert [r.id for r in retired] == [failing]
    found = await recall(res, tenant, "book me a flight")
    assert found and not any(c.startswith(flight) for c in found)
    assert any(
        c.startswith(flight) for c in await recall(res, tenant, "flight", include_retired=True)
    )

    _, again = await run(stack, tenant)
    assert again.skills_retired == 0
    await assert_replays(handle)


async def test_memories_of_another_embedding_model_are_reembedded(
    stack: tuple[Settings, Client, Resources], pool: Pool, server: ScriptedModelServer
) -> None:
    settings, _, res = stack
    tenant = "mm-reembed"
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, tenant, tenant)
    # Written when the deployment used another model (same dimension, for the test).
    old_store = MemoryStore(settings, pool, res.vectors, res.embedder, model_id="old-model")
    items = [
        MemoryItem(key="fact:tz", agent_name=AGENT, kind="fact", content="The user lives in Tokyo"),
        MemoryItem(key="fact:cur", agent_name=AGENT, kind="fact", content="Prices are in yen"),
        MemoryItem(key="fact:pet", agent_name=AGENT, kind="fact", content="The user has a cat"),
    ]
    ids = (await old_store.write(WriteMemoriesInput(tenant_id=tenant, items=items))).ids
    old_collection = collection_for("old-model")
    assert point_ids(res, tenant, old_collection) == set(ids)
    assert await recall(res, tenant, "Where does the user live?") == []
    server.responder = answers()

    handle, output = await run(stack, tenant)
    assert output.reembedded == 3
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT embedding_model FROM memories WHERE tenant_id = %s", (tenant,)
        )
        assert [row["embedding_model"] for row in await cur.fetchall()] == [MODEL_ID]
    assert point_ids(res, tenant) == set(ids)
    assert point_ids(res, tenant, old_collection) == set()
    found = await recall(res, tenant, "Where does the user live?", limit=1)
    assert found == ["The user lives in Tokyo"]
    await assert_replays(handle)


async def test_the_schedule_is_created_once_and_runs_the_workflow(
    stack: tuple[Settings, Client, Resources], server: ScriptedModelServer
) -> None:
    settings, client, _ = stack
    handle = client.get_schedule_handle(maintenance_schedule_id(settings))
    server.responder = answers()
    try:
        assert await ensure_maintenance_schedule(client, settings, None) == "absent"
        assert await ensure_maintenance_schedule(client, settings, timedelta(hours=1)) == "created"
        described = await handle.describe()
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "MemoryMaintenanceWorkflow"
        assert action.task_queue == TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(hours=1)]
        assert not described.schedule.state.paused

        assert (
            await ensure_maintenance_schedule(client, settings, timedelta(hours=1)) == "unchanged"
        )
        assert await ensure_maintenance_schedule(client, settings, timedelta(hours=2)) == "updated"
        described = await handle.describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(hours=2)]
        # Zero disables (pauses); a later start with an interval resumes it.
        await ensure_schedules(client, settings.model_copy(update={"memory_maintenance_every": 0}))
        described = await handle.describe()
        assert described.schedule.state.paused
        assert described.schedule.state.note == DISABLED_NOTE
        assert await ensure_maintenance_schedule(client, settings, timedelta(hours=2)) == "updated"
        assert not (await handle.describe()).schedule.state.paused
        await ensure_schedules(client, settings)  # the default day: updated again
        described = await handle.describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(days=1)]

        # Triggered now, it runs the pass over every tenant on our workers.
        await handle.trigger()
        for _ in range(100):
            actions = (await handle.describe()).info.recent_actions
            if actions:
                break
            await asyncio.sleep(0.1)
        started = actions[0].action
        assert isinstance(started, ScheduleActionExecutionStartWorkflow)
        workflow = client.get_workflow_handle(started.workflow_id, result_type=MaintenanceOutput)
        output = await workflow.result()
        assert output.tenants >= 5 and not output.failed_tenants
        assert output.skills_written == 0
        await assert_replays(workflow)
    finally:
        with contextlib.suppress(Exception):
            await handle.delete()
