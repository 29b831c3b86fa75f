"""Metrics per agent version from Postgres: every number, live runs only, a time window."""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from activities.runs import tool_results
from core import tenants
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.payloads import ModelUsage, ToolCallRequest
from core.runs import agents, metrics
from core.runs import store as runs
from core.runs.payloads import AgentSpec, RunOutcome, RunProgress
from core.runs.store import EvaluationAttempt

TENANT, OTHER = "t-metrics", "t-metrics-other"
AGENT = "calc"
T0 = datetime(2026, 6, 1, tzinfo=UTC)
"""Every seeded run but the first is created at or after T0 (the window tests use it)."""

OK = (True, None, "391")
FAILED = tool_results.failed("calculator", "boom")
BAD_ARGUMENTS = (False, ErrorType.BAD_TOOL_ARGUMENTS.value, "Error: bad arguments")
DENIED = tool_results.denied("a human said no")


@dataclass(frozen=True)
class Seed:
    """A run to store: how it ended, its counters, timing, rating and tool results."""

    version: int
    outcome: RunOutcome | None  # None: still running
    steps: int = 0
    tokens: tuple[int, int] = (0, 0)
    cost: float = 0.0
    cost_complete: bool = True
    created: timedelta = timedelta()  # after T0
    latency_s: float = 0.0
    rating: int | None = None
    tools: tuple[tuple[str, tuple[bool, str | None, str]], ...] = ()
    evaluation: bool = False


SEEDS = [
    # Version 1: one run before T0, then one of every outcome, one running.
    Seed(1, "succeeded", 2, (100, 20), 0.01, created=-timedelta(days=30), latency_s=10,
         rating=5, tools=(("calculator", OK), ("calculator", FAILED))),
    Seed(1, "failed", 4, (200, 40), 0.03, latency_s=30, rating=2,
         tools=(("calculator", OK), ("http_fetch", DENIED))),
    Seed(1, "limit_reached", 6, (300, 60), 0.02, cost_complete=False, latency_s=20, rating=4,
         tools=(("calculator", BAD_ARGUMENTS),)),
    Seed(1, None, tools=(("calculator", FAILED),)),
    Seed(1, "failed", 8, (400, 80), 0.04, latency_s=60, rating=2, tools=(("http_fetch", OK),)),
    Seed(1, "cancelled", latency_s=40),
    # An evolution cycle's evaluation of version 1: never counted.
    Seed(1, "failed", 9, (900, 90), 5.0, cost_complete=False, latency_s=999, rating=1,
         tools=(("calculator", FAILED), ("calculator", FAILED)), evaluation=True),
    # Version 2.
    Seed(2, "succeeded", 1, (50, 10), 0.005, latency_s=5, rating=4,
         tools=(("calculator", OK),)),
]  # fmt: skip


async def seed(pool: Pool, tenant: str = TENANT) -> None:
    """Agent `calc` with versions 1-3 and the SEEDS runs, plus runs that must not count."""
    spec = AgentSpec(instructions="x", model="openai/m")
    # The same name in another tenant and another agent of this one: not counted.
    elsewhere = [(OTHER, AGENT), (tenant, "clerk")]
    async with pool.connection() as conn:
        for t in (tenant, OTHER):
            await tenants.ensure_tenant(conn, t, t)
        for n in (1, 2, 3):
            await agents.create_version(
                conn, tenant, AGENT, spec.model_copy(update={"instructions": f"Take {n}."})
            )
        for t, name in [*elsewhere, (tenant, "idle")]:
            await agents.create_version(conn, t, name, spec)
    noise = Seed(1, "succeeded", 50, (1, 1), 9.0, rating=1, tools=(("calculator", FAILED),))
    for n, (t, name) in enumerate(elsewhere):
        await _store(pool, t, name, noise, 100 + n)
    for n, s in enumerate(SEEDS):
        await _store(pool, tenant, AGENT, s, n)


async def _store(pool: Pool, tenant: str, agent: str, s: Seed, n: int) -> None:
    async with pool.connection() as conn:
        evaluation = (
            EvaluationAttempt(
                evolution_id="evo-1", workflow_id=f"evo/{tenant}/{n}", max_cost_usd=None
            )
            if s.evaluation
            else None
        )
        run, _, _ = await runs.create_run(
            conn, tenant_id=tenant, agent_name=agent, agent_version=s.version, objective=f"#{n}",
            mode="evaluation" if s.evaluation else "normal", evaluation=evaluation,
        )  # fmt: skip
        if s.outcome is not None:
            progress = RunProgress(
                step=s.steps, prompt_tokens=s.tokens[0], completion_tokens=s.tokens[1],
                cost_usd=s.cost, cost_complete=s.cost_complete,
            )  # fmt: skip
            await runs.finish(conn, run.id, outcome=s.outcome, reason=None, result="r",
                              progress=progress)  # fmt: skip
        else:  # a running run's recorded cost (a reflexion's) is not counted
            await runs.add_cost(conn, run.id, ModelUsage(prompt_tokens=7), 0.5)
        created = T0 + s.created + timedelta(minutes=n)
        await conn.execute(
            "UPDATE runs SET created_at = %s, finished_at = CASE WHEN finished_at IS NOT NULL"
            " THEN %s END WHERE id = %s",
            (created, created + timedelta(seconds=s.latency_s), run.id),
        )
        if s.rating is not None:
            await runs.record_feedback(conn, tenant, run.id, s.rating, None)
    for i, (tool, outcome) in enumerate(s.tools):
        call = ToolCallRequest(id=f"call-{n}-{i}", name=tool)
        await tool_results.save(
            pool, tenant, run.id, 10 + i, call, outcome, started=time.perf_counter()
        )


@pytest.fixture(scope="module")
async def seeded(pool: Pool) -> None:
    await seed(pool)


def share(count: int, of: int) -> metrics.Share:
    return metrics.Share(count=count, share=count / of)


def version_1() -> metrics.VersionMetrics:
    """Version 1's metrics over all its live runs (SEEDS), computed by hand."""
    return metrics.VersionMetrics(
        version=1, runs=6, running=1, finished=5,
        outcomes=metrics.OutcomeShares(
            succeeded=share(1, 5), failed=share(2, 5), limit_reached=share(1, 5),
            cancelled=share(1, 5),
        ),
        rated=4, avg_rating=(5 + 2 + 4 + 2) / 4, rating_distribution={1: 0, 2: 2, 3: 0, 4: 1, 5: 1},
        cost_usd_total=0.10, cost_usd_avg=0.02, cost_complete=False,
        # Latencies 10, 30, 20, 60, 40: p95 interpolates between 40 and 60 at 0.8.
        latency_s_avg=32.0, latency_s_p50=30.0, latency_s_p95=56.0,
        steps_avg=(2 + 4 + 6 + 8 + 0) / 5, tokens_avg=(120 + 240 + 360 + 480 + 0) / 5,
        tools=[
            metrics.ToolMetrics(tool="calculator", calls=5, denied=0, errors=3, error_rate=0.6),
            metrics.ToolMetrics(tool="http_fetch", calls=2, denied=1, errors=0, error_rate=0.0),
        ],
    )  # fmt: skip


def version_2() -> metrics.VersionMetrics:
    """Version 2's metrics: one run."""
    return metrics.VersionMetrics(
        version=2, runs=1, running=0, finished=1,
        outcomes=metrics.OutcomeShares(
            succeeded=share(1, 1), failed=share(0, 1), limit_reached=share(0, 1),
            cancelled=share(0, 1),
        ),
        rated=1, avg_rating=4.0, rating_distribution={1: 0, 2: 0, 3: 0, 4: 1, 5: 0},
        cost_usd_total=0.005, cost_usd_avg=0.005, cost_complete=True,
        latency_s_avg=5.0, latency_s_p50=5.0, latency_s_p95=5.0, steps_avg=1.0, tokens_avg=60.0,
        tools=[metrics.ToolMetrics(tool="calculator", calls=1, denied=0, errors=0, error_rate=0.0)],
    )  # fmt: skip


def assert_same(found: metrics.VersionMetrics, expected: metrics.VersionMetrics) -> None:
    """Every field equal, floats to rounding."""
    assert found.model_dump() == _approx(expected.model_dump())


def _approx(value: object) -> object:
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value)
    return value


async def test_every_version_with_runs_newest_first_and_only_live_runs(
    pool: Pool, seeded: None
) -> None:
    async with pool.connection() as conn:
        found = await metrics.agent_metrics(conn, TENANT, AGENT)
    assert (found.agent, found.since) == (AGENT, None)
    assert [v.version for v in found.versions] == [2, 1]  # version 3 has no runs
    assert_same(found.versions[0], version_2())
    assert_same(found.versions[1], version_1())


async def test_one_version_and_a_version_without_runs(pool: Pool, seeded: None) -> None:
    async with pool.connection() as conn:
        one = await metrics.agent_metrics(conn, TENANT, AGENT, version=1)
        empty = await metrics.agent_metrics(conn, TENANT, AGENT, version=3)
        idle = await metrics.agent_metrics(conn, TENANT, "idle")
    assert [v.version for v in one.versions] == [1]
    assert_same(one.versions[0], version_1())
    assert empty.versions == [metrics.VersionMetrics(version=3)]
    none = empty.versions[0]
    assert (none.runs, none.outcomes.succeeded, none.avg_rating, none.cost_usd_avg) == (
        0, metrics.Share(count=0, share=None), None, None,
    )  # fmt: skip
    assert none.rating_distribution == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0} and none.cost_complete
    assert idle.versions == []


async def test_a_window_keeps_the_runs_created_since(pool: Pool, seeded: None) -> None:
    async with pool.connection() as conn:
        found = await metrics.agent_metrics(conn, TENANT, AGENT, version=1, since=T0)
        later = await metrics.agent_metrics(conn, TENANT, AGENT, since=T0 + timedelta(days=1))
    assert found.since == T0
    v1 = found.versions[0]
    # The succeeded run with rating 5, latency 10 and two calculator calls is before T0.
    assert (v1.runs, v1.running, v1.finished) == (5, 1, 4)
    assert v1.outcomes.succeeded == share(0, 4) and v1.outcomes.failed == share(2, 4)
    assert (v1.rated, v1.avg_rating) == (3, pytest.approx(8 / 3))
    assert v1.cost_usd_total == pytest.approx(0.09) and v1.cost_usd_avg == pytest.approx(0.0225)
    assert (v1.latency_s_avg, v1.latency_s_p50) == (pytest.approx(37.5), pytest.approx(35.0))
    assert v1.tools[0].model_dump() == {
        "tool": "calculator", "calls": 3, "denied": 0, "errors": 2,
        "error_rate": pytest.approx(2 / 3),
    }  # fmt: skip
    assert later.versions == []


async def test_unknown_agents_and_versions_are_not_found(pool: Pool, seeded: None) -> None:
    async with pool.connection() as conn:
        with pytest.raises(NotFound, match="agent 'nobody' not found"):
            await metrics.agent_metrics(conn, TENANT, "nobody")
        with pytest.raises(NotFound, match="version 9 of agent 'calc' not found"):
            await metrics.agent_metrics(conn, TENANT, AGENT, version=9)
        with pytest.raises(NotFound):  # another tenant's agent
            await metrics.agent_metrics(conn, OTHER, "clerk")
