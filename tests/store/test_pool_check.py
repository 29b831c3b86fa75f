"""The pool's checkout check: dead connections are replaced, live ones cost no round trip."""

import asyncio

import pytest
from psycopg_pool import AsyncConnectionPool

from core import db


async def _backend_pid(pool: db.Pool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT pg_backend_pid() AS pid")
        row = await cur.fetchone()
        assert row is not None
        return int(row["pid"])


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pool's round-trip checks."""
    calls: list[int] = []
    full = AsyncConnectionPool.check_connection

    async def counted(conn: object) -> None:
        calls.append(1)
        await full(conn)  # type: ignore[arg-type]

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))
    return calls


async def test_a_terminated_connection_is_replaced_on_checkout(
    database_url: str, round_trips: list[int]
) -> None:
    async with db.open_pool(database_url, min_size=1, max_size=1) as pool:
        first = await _backend_pid(pool)
        async with await db.connect(database_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            for _ in range(100):  # the backend ends on its own time
                cur = await admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (first,))
                if await cur.fetchone() is None:
                    break
                await asyncio.sleep(0.02)

        second = await _backend_pid(pool)

    assert second != first
    assert round_trips  # the closed socket was readable: the full check ran and failed


async def test_a_live_idle_connection_is_handed_out_without_a_round_trip(
    database_url: str, round_trips: list[int]
) -> None:
    async with db.open_pool(database_url, min_size=1, max_size=1) as pool:
        pids = {await _backend_pid(pool) for _ in range(5)}

    assert len(pids) == 1
    assert round_trips == []
