"""Versioned migrations against a real Postgres."""

import asyncio
from pathlib import Path

import psycopg
import pytest

from core import db
from core.errors import MigrationError
from tests.support.services import PostgresServer, fresh_database


async def _tables(url: str) -> set[str]:
    async with await db.connect(url) as conn:
        cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in await cur.fetchall()}  # type: ignore[index]


async def test_packaged_migrations_apply_once(pg: PostgresServer) -> None:
    async with fresh_database(pg, "apply", migrate=False) as url:
        assert await db.schema_version(url) == 0
        applied = await db.migrate(url)
        assert [m.version for m in applied] == [m.version for m in db.load_migrations()]
        assert await db.schema_version(url) == db.LATEST_SCHEMA_VERSION
        assert {"tenants", "api_keys", "stack_checks", "schema_migrations"} <= await _tables(url)
        assert await db.migrate(url) == []  # idempotent


async def test_every_table_carries_its_tenant(database_url: str) -> None:
    async with await db.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT t.tablename FROM pg_tables t WHERE t.schemaname = 'public'"
            " AND t.tablename NOT IN ('tenants', 'schema_migrations')"
            " AND NOT EXISTS (SELECT 1 FROM information_schema.columns c"
            "   WHERE c.table_name = t.tablename AND c.column_name = 'tenant_id')"
        )
        assert await cur.fetchall() == []


async def test_a_failed_migration_leaves_the_schema_as_it_was(
    pg: PostgresServer, tmp_path: Path
) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE also_good (id int);\nCREATE TABLE broken (id nonsense_type);"
    )
    async with fresh_database(pg, "failed", migrate=False) as url:
        with pytest.raises(MigrationError, match="0002_bad failed"):
            await db.migrate(url, db.load_migrations(tmp_path))
        assert await db.schema_version(url) == 0
        assert await _tables(url) == {"schema_migrations"}
        # Fixing the file lets the whole batch through.
        (tmp_path / "0002_bad.sql").write_text("CREATE TABLE also_good (id int);")
        assert len(await db.migrate(url, db.load_migrations(tmp_path))) == 2
        assert {"good", "also_good"} <= await _tables(url)


async def test_an_edited_applied_migration_is_refused(pg: PostgresServer, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);")
    async with fresh_database(pg, "edited", migrate=False) as url:
        await db.migrate(url, db.load_migrations(tmp_path))
        (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await db.migrate(url, db.load_migrations(tmp_path))


async def test_concurrent_migrators_apply_each_migration_once(pg: PostgresServer) -> None:
    async with fresh_database(pg, "concurrent", migrate=False) as url:
        results = await asyncio.gather(*(db.migrate(url) for _ in range(4)))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(db.load_migrations())]
        async with await db.connect(url) as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM schema_migrations")
            row = await cur.fetchone()
            assert row is not None and row["n"] == len(db.load_migrations())


def test_badly_named_migration_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        db.load_migrations(tmp_path)


async def test_ensure_database_creates_once(pg: PostgresServer) -> None:
    url = pg.url("t_ensure_once")
    try:
        assert await db.ensure_database(url) is True
        assert await db.ensure_database(url) is False
    finally:
        async with await db.connect(pg.url(), autocommit=True) as conn:
            await conn.execute("DROP DATABASE IF EXISTS t_ensure_once")
    with pytest.raises(psycopg.OperationalError):
        await db.schema_version(url)
