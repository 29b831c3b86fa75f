"""Tenant isolation: every route of the OpenAPI document, called with tenant B's key
against tenant A's resources, answers 404 (or, without a path parameter, B's own data):
never A's data and never a 5xx (issue 15).

The walk enumerates `app.openapi()["paths"]`, so a new route is walked as soon as it
exists; one whose path parameter `Seeded.path_value` does not know, or whose required
body is not in `bodies()` (it answers 422 for its body), fails the test until it is
added. Routes it does not call are in `EXEMPT`, with the reason.
"""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow

from api.main import create_app
from core import search_attributes
from core import temporal as temporal_support
from core.db import Pool
from core.evolution import schedules
from core.memory.payloads import MemoryItem, WriteMemoriesInput
from core.settings import Settings
from tests.api.test_recipes import succeeded_swarm
from tests.api.test_runs import wait_finished
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer, reply
from tests.support.services import TemporalServer
from tests.support.workers import running_workers

A, B = "alpha-tenant", "beta-tenant"
AGENT = "alpha-agent"
TOOL = "alpha-tool"
SECRET = "ALPHA_SECRET"
RECIPE = "alpha-recipe"
MCP = "alpha-mcp"
MEMORY = "alpha-fact: the VPN must be on to reach the wiki."
OBJECTIVE = "alpha-objective: what is 6 times 7?"
END_USER = "alpha-end-user"

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
"""A path parameter, `{name}` or `{name:path}`."""

EXEMPT = {
    ("get", "/healthz"): "answers without a key and holds no tenant data",
}
"""Routes the walk does not call, with the reason."""

NOT_404 = {
    ("put", "/v1/secrets/{name}"): "secrets are named per tenant: B's PUT creates B's own"
    " secret of that name (A's is checked unchanged after the walk)",
}
"""Routes with path parameters that legitimately answer B with success, and why. They are
called last, so that what they create for B does not answer B's other calls."""

ECHOES = {
    ("get", "/v1/audit"): "B's log of B's own calls, whose paths name A's ids; checked"
    " after the walk: every entry is by B's key",
    ("get", "/v1/export"): "B's export holds B's audit log, as /v1/audit; that an export"
    " holds only its tenant's rows is tests/api/test_data_rights.py's",
}
"""Routes whose answers to B may repeat what B sent, so A's names are not searched in them."""


@dataclass
class Seeded:
    """Tenant A's resources, by what names them."""

    key_id: str = ""
    run_id: str = ""
    swarm_id: str = ""
    check_id: str = ""
    memory_id: str = ""
    case_id: str = ""
    evolution_id: str = ""
    markers: set[str] = field(default_factory=set)
    """Strings that identify A's data: none may appear in a successful answer to B."""

    def path_value(self, path: str, param: str) -> str:
        """A's resource for `param` of `path`; unknown parameters fail the test."""
        collection = path.split("/")[2] if path.startswith("/v1/") else ""
        names = {"agents": AGENT, "recipes": RECIPE, "tools": TOOL, "secrets": SECRET,
                 "mcp-servers": MCP}  # fmt: skip
        values = {
            "key_id": self.key_id, "check_id": self.check_id, "run_id": self.run_id,
            "swarm_id": self.swarm_id, "memory_id": self.memory_id, "case_id": self.case_id,
            "evolution_id": self.evolution_id, "end_user": END_USER,
            "name": names.get(collection, ""),
        }  # fmt: skip
        value = values.get(param, "")
        assert value, f"{path}: add A's resource for {{{param}}} to Seeded.path_value"
        return value


def bodies(a: Seeded) -> dict[tuple[str, str], dict[str, Any]]:
    """Request arguments per route (`json`, `params`): valid requests, aimed at A's things."""
    return {
        ("post", "/v1/api-keys"): {"json": {"name": "b", "scopes": ["read"]}},
        ("put", "/v1/tenant/settings"): {"json": {"sharing": "isolated"}},
        ("put", "/v1/tenant/limits"): {"json": {}},
        ("post", "/codec/encode"): {"json": {"payloads": []}},
        ("post", "/codec/decode"): {"json": {"payloads": []}},
        ("post", "/v1/agents"): {"json": {"name": "beta-agent", "instructions": "x",
                                          "model": "openai/scripted-model", "tools": [TOOL]}},
        ("post", "/v1/agents/bootstrap"): {"json": {"objective": "What is six times seven?"}},
        ("post", "/v1/agents/{name}/rollback"): {"json": {"version": 1}},
        ("post", "/v1/runs"): {"json": {"agent": AGENT, "objective": "x"}},
        ("get", "/v1/runs"): {"params": {"agent": AGENT}},
        ("post", "/v1/runs/{run_id}/messages"): {"json": {"content": "hi"}},
        ("post", "/v1/runs/{run_id}/approvals"): {"json": {"call_id": "c1", "approved": True}},
        ("post", "/v1/runs/{run_id}/feedback"): {"json": {"rating": 1}},
        ("post", "/v1/runs/{run_id}/eval-case"): {"json": {"rubric": "Right."}},
        ("post", "/v1/swarms"): {"json": {"objective": "x", "recipe": RECIPE}},
        ("post", "/v1/recipes"): {"json": {"name": "beta-recipe", "swarm_id": a.swarm_id}},
        ("get", "/v1/tools/search"): {"params": {"q": "weather lookup"}},
        ("post", "/v1/tools"): {"json": {
            "name": "beta-tool", "description": "x",
            "http": {"url_template": "https://example.com/x",
                     "headers": {"X-Key": {"secret": SECRET}}}}},
        ("put", "/v1/secrets/{name}"): {"json": {"value": "beta-value"}},
        ("put", "/v1/egress"): {"json": {"rules": []}},
        ("post", "/v1/mcp-servers"): {
            "json": {"name": "beta-mcp", "transport": "http", "url": "http://127.0.0.1:9/mcp",
                     "headers": {"X-Key": {"secret": SECRET}}},
            "params": {"wait": 0}},
        ("post", "/v1/mcp-servers/{name}/refresh"): {"params": {"wait": 0}},
        ("post", "/v1/memory/query"): {"json": {"query": "How do I reach the wiki?",
                                                "agent": AGENT}},
        ("delete", "/v1/memory"): {"params": {"agent": AGENT}},
        ("post", "/v1/agents/{name}/eval-cases"): {"json": {"objective": "x", "rubric": "y"}},
        ("put", "/v1/agents/{name}/evolution-schedule"): {"json": {"every": "24h"}},
        ("post", "/v1/agents/{name}/evolutions/{evolution_id}/approve"): {
            "json": {"approved": True}},
        ("put", "/v1/agents/{name}/rollout"): {"json": {}},
    }  # fmt: skip


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(database_url, temporal.address, model_server.base_url, tmp_path)


@dataclass
class Stack:
    """The app with workers, HTTP clients of tenants A and B, and A's resources."""

    app: Any
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    seeded: Seeded
    temporal: Client
    started: datetime


@pytest.fixture
async def stack(
    settings: Settings, pool: Pool, model_server: ScriptedModelServer
) -> AsyncIterator[Stack]:
    started = datetime.now(UTC) - timedelta(seconds=1)
    keys = await tenant_keys(pool, A, B)
    app = create_app(settings)
    client = await temporal_support.connect(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        resources = await stack.enter_async_context(
            running_workers(client, settings, pool, suffix=settings.task_queue_suffix)
        )
        a, b = [await stack.enter_async_context(client_of(app, keys[tenant])) for tenant in (A, B)]
        seeded = await seed(a, resources, model_server)
        yield Stack(app, a, b, seeded, client, started)


def client_of(app: Any, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://colony",
        headers={"Authorization": f"Bearer {key}"}, timeout=30,
    )  # fmt: skip


async def seed(a: httpx.AsyncClient, resources: Any, model_server: ScriptedModelServer) -> Seeded:
    """Tenant A's agent, run, swarm, recipe, tool, secret, MCP server, memory, eval case,
    evolution, schedule, rollout and stack check."""
    out = Seeded()

    async def ok(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code < 300, (response.request.url, response.text)
        return response.json() if response.content else {}

    out.key_id = (await ok(await a.get("/v1/whoami")))["key_id"]
    agent = {"name": AGENT, "instructions": "Answer.", "model": "openai/scripted-model"}
    await ok(await a.post("/v1/agents", json=agent))
    model_server.script(reply("alpha-answer: 42"))
    out.run_id = (
        await ok(
            await a.post(
                "/v1/runs", json={"agent": AGENT, "objective": OBJECTIVE, "end_user": END_USER}
            )
        )
    )["id"]
    assert (await wait_finished(a, out.run_id))["outcome"] == "succeeded"
    await ok(await a.post(f"/v1/runs/{out.run_id}/feedback", json={"rating": 5}))
    out.swarm_id = await succeeded_swarm(a, model_server)
    await ok(await a.post("/v1/recipes", json={"name": RECIPE, "swarm_id": out.swarm_id}))
    await ok(await a.put(f"/v1/secrets/{SECRET}", json={"value": "alpha-secret-value"}))
    await ok(await a.post("/v1/tools", json={
        "name": TOOL, "description": "alpha weather lookup",
        "http": {"url_template": "https://example.com/weather",
                 "headers": {"X-Key": {"secret": SECRET}}}}))  # fmt: skip
    await ok(await a.post("/v1/mcp-servers", params={"wait": 0}, json={
        "name": MCP, "transport": "http", "url": "http://127.0.0.1:9/mcp"}))  # fmt: skip
    written = await resources.memory.write(WriteMemoriesInput(tenant_id=A, items=[
        MemoryItem(key="fact:alpha", content=MEMORY, agent_name=AGENT, kind="fact",
                   scope="shared")]))  # fmt: skip
    out.memory_id = written.ids[0]
    case = {"objective": "alpha-case: 6 * 7?", "checks": [{"kind": "numeric", "value": 42}]}
    out.case_id = (await ok(await a.post(f"/v1/agents/{AGENT}/eval-cases", json=case)))["id"]
    await ok(await a.put(f"/v1/agents/{AGENT}/evolution-schedule", json={"every": "24h"}))
    await ok(await a.put(f"/v1/agents/{AGENT}/rollout", json={}))
    evolution = await ok(await a.post(f"/v1/agents/{AGENT}/evolutions", json={}))
    out.evolution_id = evolution["id"]
    await a.post(f"/v1/agents/{AGENT}/evolutions/{out.evolution_id}/cancel")
    out.check_id = "alpha-check-" + uuid.uuid4().hex[:6]
    await ok(await a.post("/v1/stack-checks", headers={"Idempotency-Key": out.check_id}))
    out.markers = {
        A, AGENT, TOOL, SECRET, RECIPE, MCP, MEMORY, "alpha-fact", "alpha-objective",
        "alpha-answer", "alpha-case", "alpha weather", out.key_id, out.run_id,
        out.swarm_id, out.memory_id, out.case_id, out.evolution_id, out.check_id,
    }  # fmt: skip
    return out


@pytest.mark.timeout(600)
async def test_tenant_b_never_reaches_tenant_a(
    stack: Stack, pool: Pool, settings: Settings
) -> None:
    app, a, b, seeded = stack.app, stack.a, stack.b, stack.seeded
    args = bodies(seeded)
    routes = [
        (method, path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert len(routes) > 60
    routes.sort(key=lambda route: route in NOT_404)
    stale = (set(args) | set(NOT_404) | set(EXEMPT) | set(ECHOES)) - set(routes)
    assert not stale, f"tables name routes that no longer exist: {stale}"
    failures = []
    for method, path in routes:
        if (method, path) in EXEMPT:
            continue
        params = _PARAM.findall(path)
        url = path
        for param in params:
            url = _PARAM.sub(seeded.path_value(path, param), url, count=1)
        kwargs = args.get((method, path), {})
        try:
            response = await asyncio.wait_for(b.request(method.upper(), url, **kwargs), 30)
        except TimeoutError:
            failures.append(f"{method.upper()} {url}: no answer in 30 s (a stream of A's?)")
            continue
        where = f"{method.upper()} {url} -> {response.status_code}: {response.text[:300]}"
        if response.status_code >= 500:
            failures.append(f"5xx: {where}")
        elif response.status_code == 422 and "errors" in response.json()["error"]["details"]:
            failures.append(f"add a valid request for this route to bodies(): {where}")
        elif params and (method, path) not in NOT_404:
            if response.status_code != 404:
                failures.append(f"expected 404: {where}")
        elif response.status_code < 300 and (method, path) not in NOT_404 | ECHOES.keys():
            leaked = sorted(m for m in seeded.markers if m in response.text)
            if leaked:
                failures.append(f"A's data {leaked}: {where}")
    assert not failures, "\n".join(failures)
    await assert_intact(a, seeded)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT tenant_id, rating FROM run_feedback WHERE run_id = %s", (seeded.run_id,)
        )
        assert await cur.fetchall() == [{"tenant_id": A, "rating": 5}]
    b_key = (await b.get("/v1/whoami")).json()["key_id"]
    b_keys = {k["id"] for k in (await b.get("/v1/api-keys")).json()}
    assert b_key in b_keys and seeded.key_id not in b_keys
    assert {e["key_id"] for e in (await b.get("/v1/audit")).json()} <= b_keys
    assert b_key not in {e["key_id"] for e in (await a.get("/v1/audit")).json()}
    await assert_tenant_attributes(stack, settings)


async def assert_tenant_attributes(stack: Stack, settings: Settings) -> None:
    """Every workflow the walk and the seeding started, and the evolution schedule's
    workflows, carry their tenant as a search attribute (the Temporal UI and workflow
    listings filter on it)."""
    found = [
        wf
        async for wf in stack.temporal.list_workflows(f"StartTime >= '{stack.started.isoformat()}'")
        if wf.task_queue.endswith(settings.task_queue_suffix)
    ]
    kinds = {wf.typed_search_attributes.get(search_attributes.KIND) for wf in found}
    assert {"run", "swarm", "evolution", "stack-check", "mcp-discovery"} <= kinds, kinds
    untagged = [
        (wf.id, wf.workflow_type)
        for wf in found
        if wf.typed_search_attributes.get(search_attributes.TENANT) not in (A, B)
    ]
    assert not untagged, untagged
    assert all(
        wf.typed_search_attributes.get(search_attributes.TENANT) == A
        for wf in found
        if A in wf.id or stack.seeded.run_id in wf.id
    )
    sid = schedules.schedule_id(settings, A, AGENT)
    described = await stack.temporal.get_schedule_handle(sid).describe()
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.typed_search_attributes.get(search_attributes.TENANT) == A


async def assert_intact(a: httpx.AsyncClient, seeded: Seeded) -> None:
    """Nothing B did changed A's resources."""
    for url in (
        f"/v1/agents/{AGENT}", f"/v1/runs/{seeded.run_id}", f"/v1/swarms/{seeded.swarm_id}",
        f"/v1/recipes/{RECIPE}", f"/v1/tools/{TOOL}", f"/v1/mcp-servers/{MCP}",
        f"/v1/agents/{AGENT}/eval-cases/{seeded.case_id}",
        f"/v1/agents/{AGENT}/evolution-schedule", f"/v1/agents/{AGENT}/rollout",
        f"/v1/agents/{AGENT}/evolutions/{seeded.evolution_id}",
    ):  # fmt: skip
        response = await a.get(url)
        assert response.status_code == 200, (url, response.text)
    run = (await a.get(f"/v1/runs/{seeded.run_id}")).json()
    assert run["status"] == "succeeded", run
    assert (await a.get("/v1/agents")).json()[0]["version"] == 1
    secrets = (await a.get("/v1/secrets")).json()
    assert [s["name"] for s in secrets] == [SECRET]
    hits = (await a.post("/v1/memory/query", json={"query": "How do I reach the wiki?"})).json()
    assert [h["id"] for h in hits["hits"]] == [seeded.memory_id], hits
    keys = (await a.get("/v1/api-keys")).json()
    assert [k["revoked_at"] for k in keys] == [None]
    settings = (await a.get("/v1/tenant/settings")).json()
    assert settings["sharing"] == "shared"
