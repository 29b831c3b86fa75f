"""Idempotency keys: a key names one request, so it cannot be reused for another.

A run or swarm started through the API with an `Idempotency-Key` stores the SHA-256 of
its request (`request_hash`). The same key with the same request returns what the first
request made; with a different request it is refused, as Stripe does ("Keys are
reused with different parameters"). Rows without a hash (older, or made inside
workflows with keys of their own) accept any request.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

import psycopg
from psycopg import sql

from core.errors import IdempotencyConflict


def request_hash(request: Mapping[str, Any]) -> bytes:
    """SHA-256 of the request's canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


async def check(
    conn: psycopg.AsyncConnection[Any],
    table: Literal["runs", "swarms"],
    tenant_id: str,
    key: str | None,
    hashed: bytes | None,
) -> None:
    """Pass when `key` is new, or was first used by a request with hash `hashed`.

    Raises:
        IdempotencyConflict: the key was used with a different request.
    """
    if key is None or hashed is None:
        return
    query = sql.SQL(
        "SELECT request_hash FROM {} WHERE tenant_id = %s AND idempotency_key = %s"
    ).format(sql.Identifier(table))
    cur = await conn.execute(query, (tenant_id, key))
    row = await cur.fetchone()
    stored = row["request_hash"] if row else None
    if stored is not None and bytes(stored) != hashed:
        kind = table.removesuffix("s")
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used for a different request; the same key "
            f"returns the {kind} it started only when the request is the same. Use a new key.",
            details={"idempotency_key": key},
        )
