"""The audit log: who changed what in a tenant, through which route, and how it ended."""

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods whose calls are audited."""


class AuditEntry(BaseModel):
    """One audited call."""

    model_config = ConfigDict(frozen=True)

    id: int
    key_id: str
    method: str
    route: str
    path: str
    resource: dict[str, Any]
    status: int
    created_at: datetime


async def record(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant_id: str,
    key_id: str,
    method: str,
    route: str,
    path: str,
    resource: dict[str, Any],
    status: int,
) -> None:
    """Append one entry."""
    await conn.execute(
        "INSERT INTO audit_log (tenant_id, key_id, method, route, path, resource, status)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (tenant_id, key_id, method, route, path, Jsonb(resource), status),
    )


async def entries(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, limit: int = 100
) -> list[AuditEntry]:
    """The tenant's most recent entries, newest first."""
    cur = await conn.execute(
        "SELECT id, key_id, method, route, path, resource, status, created_at FROM audit_log"
        " WHERE tenant_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
        (tenant_id, limit),
    )
    return [AuditEntry.model_validate(row) for row in await cur.fetchall()]
