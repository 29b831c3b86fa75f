"""A finished result's write is retried while Postgres is unreachable, and kept for retries."""

import psycopg
import pytest
from temporalio.testing import ActivityEnvironment

from activities import persistence


async def test_the_write_is_retried_until_postgres_answers() -> None:
    tries: list[int] = []

    async def write() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise psycopg.OperationalError("server closed the connection")
        return "stored"

    beats: list[tuple[object, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    async def activity_body() -> str:
        return await persistence.keep(write, ({"answer": 42},), first_delay_s=0.01)

    assert await env.run(activity_body) == "stored"
    assert len(tries) == 3
    assert beats and all(b == ({"answer": 42},) for b in beats)  # the work rides along


async def test_after_the_window_the_error_is_raised_and_other_errors_at_once() -> None:
    async def down() -> None:
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(psycopg.OperationalError):
        await persistence.keep(down, (), window_s=0.05, first_delay_s=0.01)

    calls: list[int] = []

    async def bad_sql() -> None:
        calls.append(1)
        raise psycopg.errors.SyntaxError("syntax error")

    with pytest.raises(psycopg.errors.SyntaxError):
        await persistence.keep(bad_sql, ())
    assert calls == [1]


def test_earlier_work_is_none_outside_an_activity() -> None:
    assert persistence.earlier_work(0) is None
