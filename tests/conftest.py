"""Session-wide real services: one Temporal dev server and one Postgres per test session;
a fresh database per test module."""

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core import db
from core.db import Pool
from core.settings import Settings
from tests.support.model_server import ScriptedModelServer
from tests.support.services import (
    PostgresServer,
    TemporalServer,
    fresh_database,
    postgres,
    temporal_dev_server,
    world_traversable_tempdir,
)

TEST_PAYLOAD_KEYS = "test-1:" + "dGVzdC1wYXlsb2FkLWtleS1vZi0zMi1ieXRlcyEhISE="
"""Every Temporal client, worker and replayer of the test session (and the processes it
starts) encrypts payloads with this key (core/codec.py), whatever its data dir; tests of
the key file itself pass their own settings."""
os.environ["COLONY_PAYLOAD_KEYS"] = TEST_PAYLOAD_KEYS


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    path = world_traversable_tempdir("colony-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def temporal(services_dir: Path) -> AsyncIterator[TemporalServer]:
    async with temporal_dev_server(services_dir) as server:
        yield server


@pytest.fixture(scope="session")
async def pg(services_dir: Path) -> AsyncIterator[PostgresServer]:
    async with postgres(services_dir) as server:
        yield server


@pytest.fixture(scope="module")
async def database_url(pg: PostgresServer, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    async with fresh_database(pg, request.module.__name__.rsplit(".", 1)[-1]) as url:
        yield url


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[Pool]:
    async with db.open_pool(database_url, min_size=1, max_size=5) as p:
        yield p


@pytest.fixture
def model_server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


def make_settings(**values: object) -> Settings:
    """Settings from keywords named like the environment variables (no `.env` file)."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
