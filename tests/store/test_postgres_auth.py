"""The embedded Postgres authenticates every connection with a generated password."""

import asyncio
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.services import world_traversable_tempdir
from workers import postgres_server
from workers.process import ManagedProcess, free_port


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = world_traversable_tempdir("colony-pgauth-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def refused(url: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        await psycopg.AsyncConnection.connect(url, connect_timeout=5)
    return str(caught.value)


def test_the_password_file_is_generated_once_and_private(tmp_path: Path) -> None:
    first = postgres_server.ensure_password_file(tmp_path)
    path = tmp_path / "postgres-password"
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    assert postgres_server.ensure_password_file(tmp_path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.timeout(120)
async def test_an_older_trust_cluster_is_switched_to_the_password(workdir: Path) -> None:
    pgdata = workdir / "pgdata"
    await asyncio.to_thread(postgres_server.init_cluster, pgdata)  # as older versions did
    assert postgres_server.trusts_connections(pgdata)
    port = free_port()
    password = postgres_server.ensure_password_file(workdir)
    process = ManagedProcess(
        postgres_server.server_spec(
            pgdata, port, workdir / "postgres.log", fsync=False, password=password
        )
    )
    await process.start()
    try:
        assert await postgres_server.require_password(pgdata, port, password)
        assert not postgres_server.trusts_connections(pgdata)
        assert "password" in await refused(postgres_server.admin_url(port))
        assert "password" in await refused(postgres_server.admin_url(port, password="wrong"))
        url = postgres_server.admin_url(port, password=password)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await conn.execute("SELECT 1")
        assert not await postgres_server.require_password(pgdata, port, password)  # done once
    finally:
        await process.stop()


@pytest.mark.timeout(120)
async def test_a_new_cluster_never_trusts(workdir: Path) -> None:
    pgdata = workdir / "pgdata"
    password = postgres_server.ensure_password_file(workdir)
    await asyncio.to_thread(postgres_server.init_cluster, pgdata, password)
    assert not postgres_server.trusts_connections(pgdata)
    assert not any(password in p.read_text(errors="replace") for p in workdir.rglob("*.conf"))
