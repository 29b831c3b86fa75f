"""`POST /v1/memory/query`, `DELETE /v1/memory[/{id}]` and `colony memory` through real
Temporal, real workers (memory lane: embedded Qdrant in a tmp data dir, real MiniLM)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from temporalio.client import Client

from api.cli import memory as cli_memory
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core import temporal as temporal_support
from core import tenants
from core.db import Pool
from core.memory.payloads import DeleteMemoriesInput, MemoryItem, RecallInput, WriteMemoriesInput
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec
from core.settings import Settings
from tests.conftest import make_settings
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from tests.tools.test_api_tools import assert_error
from workers.registry import Resources
from workflows.memory_query import MemoryDeleteWorkflow, MemoryQueryWorkflow

TENANTS = ("mem-one", "mem-two")
NOTES = [
    ("fact:vpn", "The VPN must be on to reach the internal wiki.", "alice", "fact", "shared"),
    ("fact:lang", "Alice's users want answers in French.", "alice", "fact", "private"),
    ("episode:fx", "Objective: convert 250 USD to EUR. Outcome: succeeded.", "bob", "episode",
     "private"),
    ("reflexion:fx", "Lesson: fetch today's exchange rate before converting.", "bob",
     "reflexion", "private"),
]  # fmt: skip


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    out = {}
    async with pool.connection() as conn:
        for tenant in TENANTS:
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="member")
            await agents.create_version(
                conn, tenant, "bob", AgentSpec(instructions="x", model="openai/m")
            )
    return out


@pytest.fixture(scope="module")
async def stack(
    temporal: TemporalServer,
    database_url: str,
    pool: Pool,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, Client, Resources]]:
    settings = make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        COLONY_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        COLONY_TASK_QUEUE_SUFFIX="-" + uuid.uuid4().hex[:8],
    )
    client = await temporal_support.connect(settings)
    async with running_workers(client, settings, pool, suffix=settings.task_queue_suffix) as res:
        yield settings, client, res


async def seed(res: Resources, pool: Pool, tenant: str) -> dict[str, str]:
    """The notes for `tenant` (bob's episode from a real run); ids by key."""
    async with pool.connection() as conn:
        run, _, _ = await runs.create_run(
            conn, tenant_id=tenant, agent_name="bob", agent_version=1, objective="fx"
        )
    items = [
        MemoryItem(
            key=key, content=content, agent_name=agent, kind=kind, scope=scope,
            source_run_id=run.id if agent == "bob" else None,
        )
        for key, content, agent, kind, scope in NOTES
    ]  # fmt: skip
    written = await res.memory.write(WriteMemoriesInput(tenant_id=tenant, items=items))
    return dict(zip([n[0] for n in NOTES], written.ids, strict=True)) | {"run": run.id}


def http_for(settings: Settings, key: str) -> Any:
    app = create_app(settings)

    class Api:
        async def __aenter__(self) -> httpx.AsyncClient:
            self._lifespan = app.router.lifespan_context(app)
            await self._lifespan.__aenter__()
            self._http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://colony",
                headers={"Authorization": f"Bearer {key}"}, timeout=60,
            )  # fmt: skip
            return self._http

        async def __aexit__(self, *exc: object) -> None:
            await self._http.aclose()
            await self._lifespan.__aexit__(None, None, None)

    return Api()


async def test_query_delete_and_isolation_over_http(
    stack: tuple[Settings, Client, Resources], pool: Pool, keys: dict[str, str]
) -> None:
    settings, _, res = stack
    one, two = await seed(res, pool, "mem-one"), await seed(res, pool, "mem-two")
    assert not set(one.values()) & set(two.values())
    async with http_for(settings, keys["mem-one"]) as api:
        response = await api.post(
            "/v1/memory/query", json={"query": "  how do I convert dollars to euros  "}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["query"] == "how do I convert dollars to euros"
        hits = body["hits"]
        assert {h["id"] for h in hits} <= set(one.values())  # never the other tenant's
        assert hits[0]["id"] in (one["episode:fx"], one["reflexion:fx"])
        top = next(h for h in hits if h["id"] == one["episode:fx"])
        assert set(top) == {
            "id", "kind", "content", "score", "agent", "scope", "run_id", "created_at"
        }  # fmt: skip
        assert (top["kind"], top["agent"], top["scope"], top["run_id"]) == (
            "episode", "bob", "private", one["run"]
        )  # fmt: skip

        # Agent filter: alice sees her own and shared memories, not bob's private ones.
        alice = await api.post(
            "/v1/memory/query", json={"query": "wiki access", "agent": "alice", "limit": 10}
        )
        assert {h["id"] for h in alice.json()["hits"]} <= {one["fact:vpn"], one["fact:lang"]}
        facts = await api.post(
            "/v1/memory/query", json={"query": "exchange rates", "kinds": ["reflexion"]}
        )
        assert [h["id"] for h in facts.json()["hits"]] == [one["reflexion:fx"]]
        # A secret in a query is masked before it goes anywhere.
        masked = await api.post("/v1/memory/query", json={"query": "token=abc123def456ghi789"})
        assert masked.json()["query"] == "token=[SECRET]"

        # Deletion: another tenant's id is not found; bad filters are 4xx.
        assert_error(await api.delete(f"/v1/memory/{two['fact:vpn']}"), 404, "not_found")
        assert_error(await api.delete("/v1/memory/not-a-uuid"), 404, "not_found")
        assert_error(await api.delete("/v1/memory"), 422, "invalid_request")
        assert_error(await api.delete("/v1/memory?kind=bogus"), 422, "invalid_request")
        deleted = await api.delete(f"/v1/memory/{one['fact:lang']}")
        assert deleted.status_code == 200 and deleted.json() == {"deleted": 1}
        assert_error(await api.delete(f"/v1/memory/{one['fact:lang']}"), 404, "not_found")
        by_run = await api.delete("/v1/memory", params={"run": one["run"], "kind": "reflexion"})
        assert by_run.json() == {"deleted": 1}
        by_agent = await api.delete("/v1/memory", params={"agent": "bob"})
        assert by_agent.json() == {"deleted": 1}
        left = await api.post("/v1/memory/query", json={"query": "anything", "limit": 100})
        assert [h["id"] for h in left.json()["hits"]] == [one["fact:vpn"]]

    # The other tenant still has all of its memories, rows and vectors.
    recalled = await res.memory.recall(
        RecallInput(tenant_id="mem-two", query="anything", limit=100, min_score=-1)
    )
    assert {h.id for h in recalled.hits} == {two[n[0]] for n in NOTES}
    collection = res.memory.collection
    assert res.vectors.count(collection, tenant_id="mem-one") == 1
    assert res.vectors.count(collection, tenant_id="mem-two") == len(NOTES)


async def test_bad_requests_are_4xx(
    stack: tuple[Settings, Client, Resources], keys: dict[str, str]
) -> None:
    async with http_for(stack[0], keys["mem-two"]) as api:
        bad: list[dict[str, Any]] = [
            {},
            {"query": ""},
            {"query": "   "},
            {"query": "x" * 4001},
            {"query": "a", "limit": 0},
            {"query": "a", "limit": 101},
            {"query": "a", "kinds": ["nope"]},
            {"query": "a", "unknown": 1},
        ]
        for body in bad:
            assert_error(await api.post("/v1/memory/query", json=body), 422, "invalid_request")
        request = api.build_request("POST", "/v1/memory/query", json={"query": "a"})
        del request.headers["Authorization"]
        assert_error(await api.send(request), 401, "unauthorized")
        request = api.build_request("DELETE", "/v1/memory", params={"agent": "bob"})
        request.headers["Authorization"] = "Bearer colony_sk_wrong"
        assert_error(await api.send(request), 401, "unauthorized")


async def test_the_workflows_run_on_the_memory_lane_and_replay(
    stack: tuple[Settings, Client, Resources], pool: Pool, keys: dict[str, str]
) -> None:
    settings, client, res = stack
    await seed(res, pool, "mem-two")
    queue = TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix
    query = await client.start_workflow(
        MemoryQueryWorkflow.run,
        RecallInput(tenant_id="mem-two", query="exchange rate", kinds=["reflexion"]),
        id=f"memory-query-test-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )
    assert [h.kind for h in (await query.result()).hits] == ["reflexion"]
    await assert_replays(query)
    record_history("memory_query_v1", await query.fetch_history())
    delete = await client.start_workflow(
        MemoryDeleteWorkflow.run,
        DeleteMemoriesInput(tenant_id="mem-two", kinds=["fact"], agent_name="nobody"),
        id=f"memory-delete-test-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )
    assert (await delete.result()).deleted == 0
    await assert_replays(delete)
    record_history("memory_delete_v1", await delete.fetch_history())


async def test_the_cli(
    stack: tuple[Settings, Client, Resources],
    pool: Pool,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, _, res = stack
    ids = await seed(res, pool, "mem-one")
    app = create_app(settings)

    def run(*args: str) -> Any:
        with TestClient(app, base_url="http://colony") as http:
            api = ColonyClient(make_settings(COLONY_API_KEY=keys["mem-one"]))
            http.headers["Authorization"] = f"Bearer {keys['mem-one']}"
            api._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_memory, "api_client", lambda: api)
            return CliRunner().invoke(cli, ["memory", *args])

    # The app runs in TestClient's thread; this loop keeps serving the workers.
    found = await asyncio.to_thread(run, "query", "dollars to euros", "--kind", "episode")
    assert found.exit_code == 0, found.output
    assert "episode (bob, private" in found.output and ids["episode:fx"] in found.output
    none = await asyncio.to_thread(run, "query", "x", "--agent", "nobody", "--kind", "skill")
    assert none.exit_code == 0 and "no memories found" in none.output
    usage = await asyncio.to_thread(run, "delete")
    assert usage.exit_code == 2 and "give --agent, --run or --id" in usage.output
    gone = await asyncio.to_thread(run, "delete", "--id", ids["fact:lang"])
    assert gone.exit_code == 0 and "deleted 1 memories" in gone.output
    missing = await asyncio.to_thread(run, "delete", "--id", ids["fact:lang"])
    assert missing.exit_code == 1 and "no memory" in missing.output
    by_agent = await asyncio.to_thread(run, "delete", "--agent", "bob", "--run", ids["run"])
    assert by_agent.exit_code == 0 and "deleted 2 memories" in by_agent.output
