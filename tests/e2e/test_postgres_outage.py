"""Postgres killed in the middle of ten runs: no model call is repeated, no request is lost.

Marker `chaos` (make test-all). The test owns its Postgres: it SIGKILLs it while model
answers are in flight and starts it again after `OUTAGE_S`, as `colony up`'s supervisor
would (slower, so that the API's wait for a connection runs out during the outage).
"""

import asyncio
import os
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core import db, tenants
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, reply
from tests.support.services import (
    PostgresServer,
    TemporalServer,
    fresh_database,
    world_traversable_tempdir,
)
from tests.support.workers import api_with_workers
from workers import postgres_server
from workers.process import ManagedProcess, free_port

pytestmark = pytest.mark.chaos

RUNS = 10
OUTAGE_S = 14.0
"""Longer than the pool's wait for a connection (10 s), shorter than the 60 s for which
a finished model answer is kept and its write retried (activities/persistence.py)."""
TENANT = "t-chaos"


class KillablePostgres:
    """A Postgres cluster whose server can be SIGKILLed and started again on its port."""

    def __init__(self, workdir: Path) -> None:
        self._pgdata = workdir / "pgdata"
        self._log = workdir / "postgres.log"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self._process: ManagedProcess | None = None

    async def start(self) -> None:
        spec = postgres_server.server_spec(
            self._pgdata, self.port, self._log, fsync=False, password=self.password
        )
        self._process = ManagedProcess(spec)
        await self._process.start()

    def kill(self) -> None:
        assert self._process is not None and self._process.pid is not None
        os.kill(self._process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self._process is not None:
            await self._process.stop()

    async def __aenter__(self) -> "KillablePostgres":
        await asyncio.to_thread(postgres_server.init_cluster, self._pgdata, self.password)
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@pytest.fixture
async def killable() -> AsyncIterator[KillablePostgres]:
    workdir = world_traversable_tempdir("colony-chaos-")
    try:
        async with KillablePostgres(workdir) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def test_runs_survive_a_postgres_kill_without_repeating_model_calls(
    killable: KillablePostgres, temporal: TemporalServer, model_server: ScriptedModelServer
) -> None:
    # Each run is one model call that answers after a second: most are in flight when
    # Postgres dies, and their answers arrive while it is down.
    model_server.script(*(reply(f"answer {i}", delay=1.0) for i in range(RUNS)))
    async with fresh_database(
        PostgresServer(port=killable.port, password=killable.password), "chaos"
    ) as url:
        async with db.open_pool(url, min_size=1, max_size=10) as pool:
            async with pool.connection() as conn:
                await tenants.ensure_tenant(conn, TENANT, TENANT)
                _, key = await tenants.create_api_key(conn, TENANT, "k", role="admin")
            settings = make_settings(
                DATABASE_URL=url,
                TEMPORAL_ADDRESS=temporal.address,
                OPENAI_BASE_URL=model_server.base_url,
                COLONY_DEFAULT_MODEL="openai/scripted-model",
            )
            async with api_with_workers(settings, pool, key, timeout=60) as api:
                await outage(api, killable)
    # Every model call was made once: answers that arrived during the outage were kept.
    assert len(model_server.chat_requests()) == RUNS


async def outage(api: httpx.AsyncClient, killable: KillablePostgres) -> None:
    agent = {"name": "chaos", "instructions": "Answer.", "model": "openai/scripted-model"}
    assert (await api.post("/v1/agents", json=agent)).status_code == 201
    ids = []
    for i in range(RUNS):
        created = await api.post("/v1/runs", json={"agent": "chaos", "objective": f"q{i}"})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    await asyncio.sleep(0.5)

    killable.kill()
    started = time.monotonic()
    during = await api.get(f"/v1/runs/{ids[0]}")
    assert during.status_code == 503, during.text
    assert during.json()["error"]["type"] == "dependency_unavailable"
    assert during.headers["Retry-After"] == "2"
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
    await killable.start()

    # Back: the pool replaces its dead connections; no request fails.
    statuses = [(await api.get(f"/v1/runs/{ids[i % RUNS]}")).status_code for i in range(20)]
    assert all(s < 500 for s in statuses), statuses

    deadline = time.monotonic() + 180
    finished: dict[str, dict[str, object]] = {}
    while len(finished) < RUNS and time.monotonic() < deadline:
        for run_id in ids:
            body = (await api.get(f"/v1/runs/{run_id}")).json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                finished[run_id] = body
        await asyncio.sleep(1)
    assert len(finished) == RUNS, f"{RUNS - len(finished)} runs did not finish"
    assert {b["status"] for b in finished.values()} == {"succeeded"}
    assert sorted(str(b["result"]) for b in finished.values()) == sorted(
        f"answer {i}" for i in range(RUNS)
    )
