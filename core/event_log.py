"""Append-only event logs with per-owner sequence numbers (run, swarm and evolution events).

An owner (a run, a swarm) keeps `last_event_seq`; appending bumps it and inserts the
events in one statement. Events carry a `key`, so an append retried by an activity adds
nothing the second time.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core.errors import NotFound
from core.payloads import RunEvent

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class EventLog:
    """Where one kind of owner keeps its events (trusted identifiers, never user input)."""

    table: str
    owner_table: str
    owner_column: str
    noun: str


RUN_EVENTS = EventLog("run_events", "runs", "run_id", "run")
SWARM_EVENTS = EventLog("swarm_events", "swarms", "swarm_id", "swarm")
EVOLUTION_EVENTS = EventLog("evolution_events", "evolutions", "evolution_id", "evolution")


class EventRecord(BaseModel):
    """One stored event."""

    model_config = ConfigDict(frozen=True)

    seq: int
    type: str
    data: dict[str, Any]
    created_at: datetime


_APPEND = """
WITH batch AS (
    SELECT b.key, b.type, b.data, b.ord
    FROM unnest(%(keys)s::text[], %(types)s::text[], %(datas)s::jsonb[])
         WITH ORDINALITY AS b(key, type, data, ord)
    WHERE NOT EXISTS (SELECT 1 FROM {table} e WHERE e.{owner} = %(owner)s AND e.key = b.key)
), numbered AS (
    SELECT key, type, data, row_number() OVER (ORDER BY ord) AS n, count(*) OVER () AS total
    FROM batch
), bump AS (
    UPDATE {owner_table} SET last_event_seq = last_event_seq + (SELECT count(*) FROM batch)
    WHERE id = %(owner)s
    RETURNING last_event_seq
)
INSERT INTO {table} (tenant_id, {owner}, seq, key, type, data)
SELECT %(tenant)s, %(owner)s, bump.last_event_seq - numbered.total + numbered.n,
       numbered.key, numbered.type, numbered.data
FROM numbered, bump
ON CONFLICT ({owner}, key) DO NOTHING
RETURNING seq
"""


async def append(
    conn: Conn, log: EventLog, tenant_id: str, owner_id: str, events: list[RunEvent]
) -> list[int]:
    """Append events in order with the owner's next sequence numbers, in one statement.

    Events whose key the owner already has are skipped (a retried activity), so they
    take no number. The owner's row lock taken by the sequence bump is held until the
    caller's transaction commits: appends to one owner commit in sequence order, so a
    reader that has seen seq n never later finds a new event below n. Only two writers
    racing with the same key can leave a gap, never a duplicate.

    Raises:
        NotFound: the owner does not exist.
    """
    if not events:
        return []
    query = _APPEND.format(table=log.table, owner=log.owner_column, owner_table=log.owner_table)
    cur = await conn.execute(
        query,
        {
            "tenant": tenant_id,
            "owner": owner_id,
            "keys": [e.key for e in events],
            "types": [e.type for e in events],
            "datas": [Jsonb(e.data) for e in events],
        },
    )
    seqs = sorted(int(r["seq"]) for r in await cur.fetchall())
    if not seqs:
        exists = await conn.execute(f"SELECT 1 FROM {log.owner_table} WHERE id = %s", (owner_id,))
        if await exists.fetchone() is None:
            raise NotFound(f"{log.noun} {owner_id!r} not found")
    return seqs


async def find(conn: Conn, log: EventLog, owner_id: str, key: str) -> EventRecord | None:
    """The owner's event with this key, if appended."""
    cur = await conn.execute(
        f"SELECT seq, type, data, created_at FROM {log.table}"
        f" WHERE {log.owner_column} = %s AND key = %s",
        (owner_id, key),
    )
    row = await cur.fetchone()
    return None if row is None else EventRecord.model_validate(dict(row))


async def list_after(
    conn: Conn, log: EventLog, tenant_id: str, owner_id: str, *, after: int = 0, limit: int = 500
) -> list[EventRecord]:
    """Events with seq > `after`, in order."""
    cur = await conn.execute(
        f"SELECT seq, type, data, created_at FROM {log.table} WHERE tenant_id = %s"
        f" AND {log.owner_column} = %s AND seq > %s ORDER BY seq LIMIT %s",
        (tenant_id, owner_id, after, limit),
    )
    return [EventRecord.model_validate(r) for r in await cur.fetchall()]
