"""The safety log (guardrail triggers) and the rewrite of a message a guardrail masked."""

from datetime import datetime
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict

from core.runs.guardrails import GuardrailAction, GuardrailStage
from core.runs.store import preview

Conn = psycopg.AsyncConnection[Any]


class SafetyEntry(BaseModel):
    """One guardrail trigger."""

    model_config = ConfigDict(frozen=True)

    id: int
    agent_name: str
    agent_version: int
    run_id: str
    guardrail: str
    stage: GuardrailStage
    action: GuardrailAction
    detail: str
    excerpt: str
    created_at: datetime


async def record(
    conn: Conn,
    *,
    tenant_id: str,
    agent_name: str,
    agent_version: int,
    run_id: str,
    key: str,
    guardrail: str,
    stage: GuardrailStage,
    action: GuardrailAction,
    detail: str,
    excerpt: str,
) -> bool:
    """Append one trigger; False if the run already has one with this key (a retry)."""
    cur = await conn.execute(
        "INSERT INTO safety_log (tenant_id, agent_name, agent_version, run_id, key, guardrail,"
        " stage, action, detail, excerpt) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (run_id, key) DO NOTHING RETURNING id",
        (tenant_id, agent_name, agent_version, run_id, key, guardrail, stage, action, detail,
         excerpt),
    )  # fmt: skip
    return await cur.fetchone() is not None


async def entries(
    conn: Conn,
    tenant_id: str,
    *,
    agent_name: str | None = None,
    run_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[SafetyEntry]:
    """The tenant's triggers, newest first, optionally of one agent or run, or since a time."""
    cur = await conn.execute(
        "SELECT id, agent_name, agent_version, run_id, guardrail, stage, action, detail, excerpt,"
        " created_at FROM safety_log WHERE tenant_id = %(t)s"
        " AND (%(agent)s::text IS NULL OR agent_name = %(agent)s)"
        " AND (%(run)s::text IS NULL OR run_id = %(run)s)"
        " AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)"
        " ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
        {"t": tenant_id, "agent": agent_name, "run": run_id, "since": since, "limit": limit},
    )
    return [SafetyEntry.model_validate(row) for row in await cur.fetchall()]


async def replace_content(conn: Conn, run_id: str, seq: int, original: str, content: str) -> None:
    """Store a guardrail's masked text in place of message `seq` and its copies.

    The copies: its inbox row, the run's objective, its `message.received` event.

    Only while the message still holds `original`, so a retry changes nothing.
    """
    await conn.execute(
        "UPDATE run_messages SET content = %s WHERE run_id = %s AND seq = %s AND content = %s",
        (content, run_id, seq, original),
    )
    await conn.execute(
        "UPDATE run_inbox SET content = %s WHERE run_id = %s AND content = %s",
        (content, run_id, original),
    )
    await conn.execute(
        "UPDATE runs SET objective = %s WHERE id = %s AND objective = %s",
        (content, run_id, original),
    )
    await conn.execute(
        "UPDATE run_events SET data = jsonb_set(data, '{content}', to_jsonb(%s::text))"
        " WHERE run_id = %s AND type = 'message.received' AND data->>'seq' = %s",
        (preview(content), run_id, str(seq)),
    )
