"""Metrics move when runs happen: `/metrics` over HTTP with real Postgres, Temporal,
workers and the scripted model server; a worker process's own endpoint; the API's
aggregate of worker endpoints.
"""

import asyncio
import contextlib
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families

from core import metrics
from core.db import Pool
from core.queues import TaskQueue
from core.settings import Settings
from core.temporal_metrics import lane_of
from tests.conftest import make_settings
from tests.support.api import in_process_api, tenant_keys
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers
from workers import main as worker_main
from workers.process import free_port

TENANT = "t-metrics"
OTHER = "t-metrics-other"
PRICED = "openai/gpt-4o-mini"  # LiteLLM prices it; the scripted server answers it

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    return await tenant_keys(pool, TENANT, OTHER, role="member")


@pytest.fixture(scope="module")
def key(keys: dict[str, str]) -> str:
    return keys[TENANT]


def stack(database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer,
          **env: str) -> Settings:  # fmt: skip
    return make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL=PRICED,
        **env,
    )


@pytest.fixture
async def api(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    key: str,
    model_server: ScriptedModelServer,
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_with_workers(stack(database_url, temporal, model_server), pool, key) as http:
        yield http


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text, by name and labels; fails on duplicate families."""
    types = re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
    assert [n for n, c in Counter(types).items() if c > 1] == []
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(api: httpx.AsyncClient, key: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    response = await api.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return parse(response.text)


async def test_a_run_with_a_tool_call_moves_the_metrics(
    api: httpx.AsyncClient, model_server: ScriptedModelServer, pool: Pool, keys: dict[str, str]
) -> None:
    name = "metered-" + uuid.uuid4().hex[:6]
    created = await api.post(
        "/v1/agents",
        json={"name": name, "instructions": "Compute.", "model": PRICED, "tools": ["calculator"]},
    )
    assert created.status_code == 201, created.text
    model_server.script(
        tool_calls(tool_call("calculator", {"expression": "6*7"}, id="c1")), reply("42")
    )
    before = await scrape(api)
    started = await api.post("/v1/runs", json={"agent": name, "objective": "6 times 7?"})
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    for _ in range(300):
        run: dict[str, Any] = (await api.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            break
        await asyncio.sleep(0.1)
    assert run["outcome"] == "succeeded", run
    after = await scrape(api)

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, sum(prompt_tokens) AS p, sum(completion_tokens) AS c,"
            " sum(cost_usd)::float AS cost FROM llm_calls WHERE run_id = %s",
            (run_id,),
        )
        ledger = await cur.fetchone()
    assert ledger is not None and ledger["n"] == 2 and ledger["cost"] > 0

    t = {"tenant": TENANT}
    assert delta("colony_runs_finished_total", **t, status="succeeded", outcome="succeeded") == 1
    assert delta("colony_steps_total", **t) == 2
    assert delta("colony_model_calls_total", **t, model=PRICED, purpose="step") == 2
    assert delta("colony_model_tokens_total", **t, model=PRICED, kind="prompt") == ledger["p"]
    assert delta("colony_model_tokens_total", **t, model=PRICED, kind="completion") == ledger["c"]
    assert delta("colony_model_cost_usd_total", **t, model=PRICED) == pytest.approx(ledger["cost"])
    assert delta("colony_tool_calls_total", **t, tool="calculator", status="ok") == 1
    assert delta("colony_tool_errors_total", **t, tool="calculator") == 0
    # Every activity attempt is timed by lane: two model calls, one tool call, bookkeeping.
    latency = "colony_activity_duration_seconds_count"
    assert delta(latency, lane="llm", activity="call_llm", status="ok") == 2
    # The calculator runs as a local activity of the orchestration worker.
    assert delta(latency, lane="orchestration", activity="execute_local_tool", status="ok") == 1
    assert delta(latency, lane="memory", activity="finish_run", status="ok") == 1
    # Temporal's SDK metrics come through the same registry.
    assert any(n.startswith("temporal_") for n, _ in after)
    assert delta("temporal_activity_execution_latency_count") >= 3
    # The gauges read from Postgres are there (no run of this tenant is live any more).
    assert value(after, "colony_runs", **t) == 0
    assert value(after, "colony_approvals_waiting", **t) == 0

    # Another tenant's key sees none of this tenant's series (names, models, spend), and
    # still the series that name no tenant.
    other = await scrape(api, keys[OTHER])
    assert not [ls for _, ls in other if ("tenant", TENANT) in ls]
    assert value(other, latency, lane="llm", activity="call_llm") >= 2


async def test_a_worker_serves_its_own_metrics_and_the_api_includes_them(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    key: str,
    model_server: ScriptedModelServer,
) -> None:
    port = free_port()
    worker = stack(database_url, temporal, model_server, COLONY_METRICS_PORT=str(port))
    stop = asyncio.Event()
    serving = asyncio.create_task(worker_main.run([TaskQueue.MEMORY], worker, stop))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        text = ""
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(100):  # until the worker has polled (Temporal's series appear)
                with contextlib.suppress(httpx.TransportError):
                    text = (await http.get(url)).text
                if "\ntemporal_" in text or serving.done():
                    break
                await asyncio.sleep(0.1)
        assert not serving.done(), serving
        samples = parse(text)
        assert "# TYPE colony_activity_duration_seconds histogram" in text
        assert "# TYPE colony_model_calls_total counter" in text
        assert any(n.startswith("temporal_") for n, _ in samples), text[:2000]

        # The API's /metrics includes the worker's series, labelled by process; a target
        # that does not answer is reported down, not an error.
        targets = {"worker-memory": url, "worker-gone": f"http://127.0.0.1:{free_port()}/x"}
        settings = stack(database_url, temporal, model_server)
        settings = settings.model_copy(update={"metrics_targets": targets})
        async with in_process_api(settings) as client_for, client_for(key) as api:
            merged = await scrape(api)
        up = "colony_metrics_target_up"
        assert value(merged, up, colony_process="worker-memory") == 1
        assert value(merged, up, colony_process="worker-gone") == 0
        worker_series = {n for n, ls in merged if ("colony_process", "worker-memory") in ls}
        assert any(n.startswith("temporal_") for n in worker_series)
        assert any(("colony_process", "api") in ls for _, ls in merged)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)


def test_the_operator_tenant_sees_every_tenant_and_others_their_own() -> None:
    registry = CollectorRegistry()
    spent = PromCounter("colony_spent", "doc", ["tenant", "model"], registry=registry)
    steps = PromCounter("colony_everyone", "doc", ["lane"], registry=registry)
    spent.labels("a", "alpha-model").inc(3)
    spent.labels("b", "beta-model").inc(5)
    steps.labels("llm").inc()
    everything = parse(metrics.exposition(registry).decode())
    only_b = parse(metrics.exposition(registry, tenant="b").decode())
    assert value(everything, "colony_spent_total") == 8
    assert value(only_b, "colony_spent_total") == 5
    assert "alpha-model" not in metrics.exposition(registry, tenant="b").decode()
    assert value(only_b, "colony_everyone_total", lane="llm") == 1


def test_lanes_of_task_queues() -> None:
    assert lane_of("colony-llm") == "llm"
    assert lane_of("colony-tools-1a2b-host-h1") == "tools"
    assert lane_of("colony-orchestration-suffix") == "orchestration"
    assert lane_of("elsewhere") == "other"
