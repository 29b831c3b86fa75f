"""Postgres access: connection helpers and versioned SQL migrations.

Migrations are the files `core/migrations/NNNN_name.sql`, applied in order, all pending
ones in one transaction together with their rows in `schema_migrations`; Postgres DDL is
transactional, so a failed migration leaves the schema exactly as it was. An advisory
lock serialises concurrent migrators (two workers starting at once). Applied files
must not change: their checksum is recorded and verified.
"""

import hashlib
import re
import select
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from core.errors import MigrationError

# Arbitrary constant: the advisory lock id shared by every migrator.
_MIGRATION_LOCK_ID = 0x636F6C6F6E79
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One versioned schema change."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read migrations from `directory` (default: the packaged `core/migrations`)."""
    root = directory if directory is not None else Path(str(resources.files("core") / "migrations"))
    found: list[Migration] = []
    for path in sorted(root.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {root}")
    return found


LATEST_SCHEMA_VERSION = max((m.version for m in load_migrations()), default=0)


async def connect(
    url: str, *, autocommit: bool = False
) -> psycopg.AsyncConnection[dict[str, object]]:
    """Open one async connection returning dict rows."""
    return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, row_factory=dict_row)


POOL_TIMEOUT_S = 10.0
"""How long a request waits for a connection (Postgres down: it then fails, retryably)."""

Pool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]
"""A connection pool whose connections return dict rows."""


@asynccontextmanager
async def open_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[Pool]:
    """An open connection pool (dict rows) for the duration of the block."""
    pool = Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        connection_class=psycopg.AsyncConnection[DictRow],
        kwargs={"row_factory": dict_row},
        # A connection is checked as it is handed out: after Postgres restarts, the
        # pool's dead connections are replaced instead of failing their next request.
        check=check_connection,
        timeout=POOL_TIMEOUT_S,
    )
    await pool.open(wait=True, timeout=30)
    try:
        yield pool
    finally:
        await pool.close()


async def check_connection(conn: psycopg.AsyncConnection[DictRow]) -> None:
    """The pool's check as it hands out a connection: raise if the connection is dead.

    An idle connection whose socket has nothing to read is alive as far as a round trip
    could tell: a server that closes it (a restart, a crash, a terminated backend) makes
    the socket readable, and an idle session is sent nothing else. Only then is the
    round trip made (`SELECT`-less empty query): most checkouts cost no round trip, where
    one per checkout was ~0.3 ms and two to four per agent step (issue #16).
    """
    if not _quiet(conn):
        await AsyncConnectionPool.check_connection(conn)


def _quiet(conn: psycopg.AsyncConnection[DictRow]) -> bool:
    pgconn = conn.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return False
    return not readable


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` when missing. Returns True if it was created."""
    dbname = conninfo_to_dict(url).get("dbname") or "postgres"
    async with await connect(with_database(url, "postgres"), autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if await cur.fetchone():
            return False
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))
        return True


async def schema_version(url: str) -> int:
    """The highest applied migration version (0 for an empty database)."""
    async with await connect(url) as conn:
        cur = await conn.execute("SELECT to_regclass('schema_migrations') AS t")
        row = await cur.fetchone()
        if row is None or row["t"] is None:
            return 0
        cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
        row = await cur.fetchone()
        return int(row["v"]) if row else 0  # type: ignore[call-overload]


async def migrate(url: str, migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Apply every pending migration, all in one transaction. Returns the ones applied now.

    Raises:
        MigrationError: a migration failed (all pending ones were rolled back) or an
            applied one was edited.
    """
    todo = list(migrations) if migrations is not None else load_migrations()
    applied_now: list[Migration] = []
    async with await connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version, name, checksum FROM schema_migrations")
            done = {int(r["version"]): r for r in await cur.fetchall()}  # type: ignore[call-overload]
            pending: list[Migration] = []
            for migration in sorted(todo, key=lambda m: m.version):
                previous = done.get(migration.version)
                if previous is None:
                    pending.append(migration)
                elif previous["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it "
                        "was applied; add a new migration instead of editing an applied one"
                    )
            current: Migration | None = None
            try:
                # One transaction for the whole batch: on failure nothing of it remains.
                async with conn.transaction():
                    for current in pending:
                        await conn.execute(current.sql.encode())  # bytes: run as a script
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (current.version, current.name, current.checksum),
                        )
            except psycopg.Error as exc:
                assert current is not None
                raise MigrationError(
                    f"migration {current.version:04d}_{current.name} failed; no pending migration "
                    f"was applied: {exc}",
                    details={"version": current.version},
                ) from exc
            applied_now = pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,))
    return applied_now
