"""The run event log: ordered, gap-free sequence numbers, idempotent by key."""

import asyncio

import pytest

from core import tenants
from core.db import Pool
from core.errors import NotFound
from core.payloads import RunEvent
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec


async def _run(pool: Pool) -> str:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, "events", "Events")
        await agents.create_version(
            conn, "events", "logger", AgentSpec(instructions="x", model="openai/m")
        )
        record, _, _ = await runs.create_run(
            conn, tenant_id="events", agent_name="logger", agent_version=1, objective="go"
        )
    return record.id


def _events(*keys: str) -> list[RunEvent]:
    return [RunEvent(key=k, type="test", data={"key": k}) for k in keys]


async def test_a_batch_takes_consecutive_numbers_in_order_and_repeats_take_none(
    pool: Pool,
) -> None:
    run_id = await _run(pool)
    async with pool.connection() as conn:
        assert await runs.append_events(conn, "events", run_id, _events("a", "b", "c")) == [1, 2, 3]
        # A retried activity appends the same keys again, with one new one among them.
        assert await runs.append_events(conn, "events", run_id, _events("b", "d", "a")) == [4]
        assert await runs.append_event(conn, "events", run_id, _events("c")[0]) is None
        assert await runs.append_events(conn, "events", run_id, []) == []
        stored = await runs.list_events(conn, "events", run_id)
    assert [(e.seq, e.data["key"]) for e in stored] == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


async def test_concurrent_writers_never_share_or_skip_a_number(pool: Pool) -> None:
    run_id = await _run(pool)

    async def writer(name: str) -> None:
        for i in range(10):
            async with pool.connection() as conn:
                await runs.append_events(
                    conn, "events", run_id, _events(f"{name}-{i}-x", f"{name}-{i}-y")
                )

    await asyncio.gather(*(writer(n) for n in "pqrs"))
    async with pool.connection() as conn:
        stored = await runs.list_events(conn, "events", run_id)
    assert [e.seq for e in stored] == list(range(1, 81))
    for name in "pqrs":  # each batch stays in order and together
        mine = [e for e in stored if e.data["key"].startswith(name)]
        assert [e.data["key"] for e in mine] == [f"{name}-{i}-{s}" for i in range(10) for s in "xy"]
        assert all(b.seq == a.seq + 1 for a, b in zip(mine[::2], mine[1::2], strict=True))


async def test_appending_to_a_missing_run_is_not_found(pool: Pool) -> None:
    async with pool.connection() as conn:
        with pytest.raises(NotFound):
            await runs.append_events(conn, "events", "run-missing", _events("a"))
