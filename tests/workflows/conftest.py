"""Fixtures of the workflow tests: the tenant and a running harness."""

from collections.abc import AsyncIterator

import pytest

from core.db import Pool
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer
from tests.workflows.harness import TENANT, Harness, running_harness


@pytest.fixture(scope="module", autouse=True)
async def tenant(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Agents') ON CONFLICT DO NOTHING",
            (TENANT,),
        )


@pytest.fixture
async def harness(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> AsyncIterator[Harness]:
    async with running_harness(temporal, pool, model_server) as running:
        yield running
