"""Long-term memory rows in Postgres (`memories`, `memory_uses`).

The row is the system of record of a memory (content, provenance, counters, the model
its vector was made with); its vector lives in Qdrant under the same id, written and
deleted by `activities.memory.store.MemoryStore`, which is the only writer of both.
Ids are `memory_id(tenant, key)`: a retried write finds its row and adds nothing.

Every function takes the tenant explicitly and only touches that tenant's rows.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core.memory.payloads import DeleteMemoriesInput, MemoryHit, MemoryKind, MemoryScope

Conn = psycopg.AsyncConnection[Any]

COLUMNS: Final = (
    "id::text AS id, tenant_id, key, agent_name, kind, scope, content, metadata, source_run_id,"
    " reward, uses, successes, retired, embedding_model, created_at, updated_at"
)


class MemoryRecord(BaseModel):
    """One row of `memories`."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    key: str
    agent_name: str
    kind: MemoryKind
    scope: MemoryScope
    content: str
    metadata: dict[str, Any] = {}
    source_run_id: str | None = None
    reward: float | None = None
    uses: int = 0
    successes: int = 0
    retired: bool = False
    embedding_model: str
    created_at: datetime
    updated_at: datetime

    def hit(self, score: float) -> MemoryHit:
        """This memory as a recall result with `score`."""
        return MemoryHit(
            id=self.id,
            kind=self.kind,
            content=self.content,
            score=score,
            agent_name=self.agent_name,
            scope=self.scope,
            source_run_id=self.source_run_id,
            created_at=self.created_at,
            metadata=self.metadata,
            reward=self.reward,
            uses=self.uses,
            successes=self.successes,
        )


class NewMemory(BaseModel):
    """A row to insert: a `MemoryItem` after masking, with its id and timestamp."""

    model_config = ConfigDict(frozen=True)

    id: str
    key: str
    agent_name: str
    kind: MemoryKind
    scope: MemoryScope
    content: str
    metadata: dict[str, Any] = {}
    source_run_id: str | None = None
    reward: float | None = None
    created_at: datetime


async def insert_memories(
    conn: Conn, tenant_id: str, rows: Sequence[NewMemory], embedding_model: str
) -> set[str]:
    """Insert rows whose (tenant, key) is not stored yet; returns the ids inserted.

    One statement for the whole batch. A row whose key exists is left as it was (the
    first write of a key wins).

    Raises:
        psycopg.errors.ForeignKeyViolation: the tenant or a source run does not exist.
    """
    if not rows:
        return set()
    cur = await conn.execute(
        "INSERT INTO memories (id, tenant_id, key, agent_name, kind, scope, content, metadata,"
        " source_run_id, reward, embedding_model, created_at, updated_at)"
        " SELECT u.id, %(tenant)s, u.key, u.agent_name, u.kind, u.scope, u.content, u.metadata,"
        " u.source_run_id, u.reward, %(model)s, u.created_at, u.created_at"
        " FROM unnest(%(ids)s::uuid[], %(keys)s::text[], %(agents)s::text[], %(kinds)s::text[],"
        " %(scopes)s::text[], %(contents)s::text[], %(metadata)s::jsonb[], %(runs)s::text[],"
        " %(rewards)s::real[], %(created)s::timestamptz[])"
        " AS u(id, key, agent_name, kind, scope, content, metadata, source_run_id, reward,"
        " created_at)"
        " ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id::text AS id",
        {
            "tenant": tenant_id,
            "model": embedding_model,
            "ids": [r.id for r in rows],
            "keys": [r.key for r in rows],
            "agents": [r.agent_name for r in rows],
            "kinds": [r.kind for r in rows],
            "scopes": [r.scope for r in rows],
            "contents": [r.content for r in rows],
            "metadata": [Jsonb(r.metadata) for r in rows],
            "runs": [r.source_run_id for r in rows],
            "rewards": [r.reward for r in rows],
            "created": [r.created_at for r in rows],
        },
    )
    return {str(row["id"]) for row in await cur.fetchall()}


async def get_memories(conn: Conn, tenant_id: str, ids: Sequence[str]) -> dict[str, MemoryRecord]:
    """The tenant's rows among `ids`, by id (ids of other tenants or gone are absent)."""
    if not ids:
        return {}
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM memories WHERE tenant_id = %s AND id = ANY(%s::uuid[])",
        (tenant_id, list(ids)),
    )
    return {str(row["id"]): MemoryRecord.model_validate(row) for row in await cur.fetchall()}


async def existing_ids(conn: Conn, tenant_id: str, ids: Sequence[str]) -> set[str]:
    """Which of `ids` are stored for the tenant."""
    if not ids:
        return set()
    cur = await conn.execute(
        "SELECT id::text AS id FROM memories WHERE tenant_id = %s AND id = ANY(%s::uuid[])",
        (tenant_id, list(ids)),
    )
    return {str(row["id"]) for row in await cur.fetchall()}


def _where(filters: DeleteMemoriesInput) -> tuple[str, list[Any]]:
    clauses: list[str] = ["tenant_id = %s"]
    args: list[Any] = [filters.tenant_id]
    if filters.agent_name is not None:
        clauses.append("agent_name = %s")
        args.append(filters.agent_name)
    if filters.source_run_id is not None:
        clauses.append("source_run_id = %s")
        args.append(filters.source_run_id)
    if filters.ids is not None:
        clauses.append("id = ANY(%s::uuid[])")
        args.append(list(filters.ids))
    if filters.kinds is not None:
        clauses.append("kind = ANY(%s::text[])")
        args.append(list(filters.kinds))
    if filters.older_than is not None:
        clauses.append("created_at < %s")
        args.append(filters.older_than)
    return " AND ".join(clauses), args


async def matching(conn: Conn, filters: DeleteMemoriesInput) -> list[tuple[str, str]]:
    """(id, embedding model) of the tenant's rows matching every filter given."""
    where, args = _where(filters)
    cur = await conn.execute(
        f"SELECT id::text AS id, embedding_model FROM memories WHERE {where} ORDER BY id", args
    )
    return [(str(row["id"]), str(row["embedding_model"])) for row in await cur.fetchall()]


async def delete_by_ids(conn: Conn, tenant_id: str, ids: Sequence[str]) -> list[str]:
    """Delete the tenant's rows among `ids`; returns the ids deleted."""
    if not ids:
        return []
    cur = await conn.execute(
        "DELETE FROM memories WHERE tenant_id = %s AND id = ANY(%s::uuid[])"
        " RETURNING id::text AS id",
        (tenant_id, list(ids)),
    )
    return [str(row["id"]) for row in await cur.fetchall()]


async def delete_matching(conn: Conn, filters: DeleteMemoriesInput) -> list[str]:
    """Delete the tenant's rows matching every filter given (rows only; see module doc)."""
    where, args = _where(filters)
    cur = await conn.execute(f"DELETE FROM memories WHERE {where} RETURNING id::text AS id", args)
    return [str(row["id"]) for row in await cur.fetchall()]


async def stale_embeddings(
    conn: Conn, tenant_id: str, model: str, limit: int
) -> list[MemoryRecord]:
    """Up to `limit` of the tenant's rows whose vector was made by a model other than `model`."""
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM memories WHERE tenant_id = %s AND embedding_model <> %s"
        " ORDER BY created_at, id LIMIT %s",
        (tenant_id, model, limit),
    )
    return [MemoryRecord.model_validate(row) for row in await cur.fetchall()]


async def tenants_with_stale_embeddings(conn: Conn, model: str) -> list[str]:
    """Tenants that have rows embedded by a model other than `model` (for maintenance)."""
    cur = await conn.execute(
        "SELECT DISTINCT tenant_id FROM memories WHERE embedding_model <> %s ORDER BY tenant_id",
        (model,),
    )
    return [str(row["tenant_id"]) for row in await cur.fetchall()]


async def set_embedding_model(
    conn: Conn, tenant_id: str, ids: Sequence[str], model: str, *, was: str | None = None
) -> list[str]:
    """Record that the rows' vectors are now made by `model`; returns the ids updated.

    With `was`, only rows still on that model change (a concurrent re-embed wins once).
    """
    if not ids:
        return []
    cur = await conn.execute(
        "UPDATE memories SET embedding_model = %s, updated_at = now()"
        " WHERE tenant_id = %s AND id = ANY(%s::uuid[]) AND (%s::text IS NULL OR embedding_model = %s)"
        " RETURNING id::text AS id",
        (model, tenant_id, list(ids), was, was),
    )
    return [str(row["id"]) for row in await cur.fetchall()]


async def record_skill_use(
    conn: Conn, tenant_id: str, skill_ids: Sequence[str], run_id: str, succeeded: bool
) -> int:
    """Count one use (and a success if `succeeded`) of each skill, once per run.

    Returns how many counters changed; ids that are not the tenant's memories, and
    (skill, run) pairs already counted, are skipped.
    """
    if not skill_ids:
        return 0
    async with conn.transaction():
        cur = await conn.execute(
            "WITH new AS ("
            " INSERT INTO memory_uses (tenant_id, memory_id, run_id, succeeded)"
            " SELECT %s, m.id, %s, %s FROM memories m"
            " WHERE m.tenant_id = %s AND m.id = ANY(%s::uuid[])"
            " ON CONFLICT (memory_id, run_id) DO NOTHING RETURNING memory_id)"
            " UPDATE memories SET uses = uses + 1,"
            " successes = successes + CASE WHEN %s THEN 1 ELSE 0 END, updated_at = now()"
            " WHERE id IN (SELECT memory_id FROM new) RETURNING id",
            (tenant_id, run_id, succeeded, tenant_id, list(dict.fromkeys(skill_ids)), succeeded),
        )
        return len(await cur.fetchall())


async def update_memory(
    conn: Conn,
    tenant_id: str,
    memory_id: str,
    *,
    metadata: dict[str, Any] | None = None,
    reward: float | None = None,
    retired: bool | None = None,
) -> MemoryRecord | None:
    """Merge `metadata` into the row's, set its reward and/or retired flag.

    Returns the updated row, or None when the tenant has no such memory. Retiring also
    needs the vector's payload changed: use `MemoryStore.set_retired`, which does both.
    """
    cur = await conn.execute(
        "UPDATE memories SET metadata = metadata || %s, reward = coalesce(%s, reward),"
        " retired = coalesce(%s, retired), updated_at = now()"
        f" WHERE tenant_id = %s AND id = %s::uuid RETURNING {COLUMNS}",
        (Jsonb(metadata or {}), reward, retired, tenant_id, memory_id),
    )
    row = await cur.fetchone()
    return MemoryRecord.model_validate(row) if row else None


async def expired_ids(conn: Conn, tenant_id: str, before: datetime) -> list[str]:
    """Ids of the tenant's memories created before `before` (retention)."""
    cur = await conn.execute(
        "SELECT id::text AS id FROM memories WHERE tenant_id = %s AND created_at < %s ORDER BY id",
        (tenant_id, before),
    )
    return [str(row["id"]) for row in await cur.fetchall()]
