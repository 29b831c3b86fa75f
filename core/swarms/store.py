"""Swarms in Postgres: the swarm row, its plan, events, blackboard and the queen's ledger.

Writes are keyed so that a retried activity writes once: subtasks by (swarm, id), events
and blackboard posts by key, the queen's calls by key. Subtask attempts are ordinary
runs (`runs.swarm_id`), so their messages, events and costs live where every run's do.
"""

import secrets
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core import event_log, idempotency
from core.errors import NotFound
from core.event_log import SWARM_EVENTS, EventRecord
from core.payloads import ModelUsage, RunEvent
from core.runs import agents
from core.runs.payloads import AgentSpec
from core.runs.store import Conn
from core.swarms.plan import (
    BUILTIN_ROLE_TOOLS,
    BUILTIN_ROLES,
    QUEEN_AGENT,
    QUEEN_INSTRUCTIONS,
    Complexity,
    SubtaskSpec,
    SubtaskStatusName,
    SwarmMode,
    SwarmOutcome,
    SwarmPhase,
    SwarmSettings,
    SwarmStatusName,
)

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
_SWARM_COLUMNS = (
    "id, tenant_id, workflow_id, objective, mode, queen_agent, queen_version, settings,"
    " user_plan, status, phase, outcome, reason, result, attribution, plan_version,"
    " queen_cost_usd, cost_complete, created_at, updated_at, finished_at, recipe, parent_run_id"
)
_SUBTASK_COLUMNS = (
    "id, position, plan_version, description, role, depends_on, expected_output, complexity,"
    " status, attempts, run_id, agent_name, agent_version, model, budget_usd, cost_usd,"
    " cost_complete, reason, started_at, finished_at"
)


class SwarmRecord(BaseModel):
    """A swarm row."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    workflow_id: str
    objective: str
    mode: SwarmMode
    queen_agent: str
    queen_version: int
    settings: SwarmSettings
    user_plan: bool
    status: SwarmStatusName
    phase: SwarmPhase | None
    outcome: SwarmOutcome | None
    reason: str | None
    result: str | None
    attribution: list[str]
    plan_version: int
    queen_cost_usd: float
    cost_complete: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    recipe: str | None = None  # the recipe it runs, if any
    parent_run_id: str | None = None  # the run whose `recipe:` tool call started it


class SubtaskRecord(BaseModel):
    """A subtask row."""

    model_config = ConfigDict(frozen=True)

    id: str
    position: int
    plan_version: int
    description: str
    role: str
    depends_on: list[str]
    expected_output: str
    complexity: Complexity
    status: SubtaskStatusName
    attempts: int
    run_id: str | None
    agent_name: str | None
    agent_version: int | None
    model: str | None
    budget_usd: float | None
    cost_usd: float
    cost_complete: bool
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


class BlackboardPost(BaseModel):
    """One finding on a swarm's blackboard."""

    model_config = ConfigDict(frozen=True)

    id: int
    subtask_id: str | None
    run_id: str | None
    topic: str | None
    content: str
    created_at: datetime


def new_swarm_id() -> str:
    """A fresh swarm id (`swarm_` + 24 hex chars)."""
    return "swarm_" + secrets.token_hex(12)


def workflow_id_for(swarm_id: str) -> str:
    """The workflow id of a swarm: a business key, so a repeated start is harmless."""
    return f"swarm-{swarm_id}"


# -- agents of a swarm ---------------------------------------------------------------


async def known_roles(conn: Conn, tenant_id: str) -> dict[str, str]:
    """Roles a plan may use: {name: instructions}; the tenant's agents over built-ins."""
    roles = dict(BUILTIN_ROLES)
    for agent in await agents.list_agents(conn, tenant_id):
        if not agent.name.startswith("inline-") and agent.name != QUEEN_AGENT:
            roles[agent.name] = agent.spec.instructions
    return roles


async def role_agent(
    conn: Conn, tenant_id: str, role: str, default_model: str
) -> agents.AgentVersion:
    """The agent that plays `role`.

    The tenant's agent of that name, else the built-in role agent, installed as the
    tenant's agent on first use.

    Raises:
        NotFound: neither a tenant agent nor a built-in role.
    """
    try:
        return await agents.get_version(conn, tenant_id, role)
    except NotFound:
        if role not in BUILTIN_ROLES and role != QUEEN_AGENT:
            raise
    if role == QUEEN_AGENT:
        spec = AgentSpec(instructions=QUEEN_INSTRUCTIONS, model=default_model)
    else:
        spec = AgentSpec(
            instructions=BUILTIN_ROLES[role], model=default_model, tools=BUILTIN_ROLE_TOOLS[role]
        )
    version, _ = await agents.create_version(conn, tenant_id, role, spec)
    return version


# -- swarms --------------------------------------------------------------------------


async def create_swarm(
    conn: Conn,
    *,
    tenant_id: str,
    objective: str,
    mode: SwarmMode,
    queen: agents.AgentVersion,
    settings: SwarmSettings,
    plan: Sequence[SubtaskSpec] | None = None,
    idempotency_key: str | None = None,
    workflow_id: str | None = None,
    recipe: str | None = None,
    parent_run_id: str | None = None,
    request_hash: bytes | None = None,
) -> tuple[SwarmRecord, bool]:
    """Create a swarm, with the user's plan if given (as plan version 1).

    `workflow_id` defaults to `swarm-{id}`; a recipe called as a tool passes its child
    workflow's id (with `recipe` and `parent_run_id`).

    Returns (swarm, created); a used idempotency key returns the existing swarm.

    Raises:
        IdempotencyConflict: the key's swarm was started by a request of another
            `request_hash` (see `core.idempotency`).
    """
    swarm_id = new_swarm_id()
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO swarms (id, tenant_id, workflow_id, objective, mode, queen_agent,"
            " queen_version, settings, user_plan, idempotency_key, recipe, parent_run_id,"
            " request_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING {_SWARM_COLUMNS}",
            (swarm_id, tenant_id, workflow_id or workflow_id_for(swarm_id), objective, mode,
             queen.name, queen.version, Jsonb(settings.model_dump(mode="json")),
             plan is not None, idempotency_key, recipe, parent_run_id, request_hash),
        )  # fmt: skip
        row = await cur.fetchone()
        if row is None:
            await idempotency.check(conn, "swarms", tenant_id, idempotency_key, request_hash)
            cur = await conn.execute(
                f"SELECT {_SWARM_COLUMNS} FROM swarms WHERE tenant_id = %s AND idempotency_key = %s",
                (tenant_id, idempotency_key),
            )
            existing = await cur.fetchone()
            assert existing is not None
            return _swarm(existing), False
        if plan is not None:
            await install_plan(conn, tenant_id, swarm_id, 1, plan)
            cur = await conn.execute(
                f"SELECT {_SWARM_COLUMNS} FROM swarms WHERE id = %s", (swarm_id,)
            )
            row = await cur.fetchone()
            assert row is not None
    return _swarm(row), True


async def get_swarm(conn: Conn, tenant_id: str, swarm_id: str) -> SwarmRecord:
    """A swarm of the tenant.

    Raises:
        NotFound: no such swarm for this tenant.
    """
    cur = await conn.execute(
        f"SELECT {_SWARM_COLUMNS} FROM swarms WHERE tenant_id = %s AND id = %s",
        (tenant_id, swarm_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"swarm {swarm_id!r} not found")
    return _swarm(row)


async def list_swarms(conn: Conn, tenant_id: str, *, limit: int = 50) -> list[SwarmRecord]:
    """The tenant's most recent swarms."""
    cur = await conn.execute(
        f"SELECT {_SWARM_COLUMNS} FROM swarms WHERE tenant_id = %s"
        " ORDER BY created_at DESC LIMIT %s",
        (tenant_id, limit),
    )
    return [_swarm(r) for r in await cur.fetchall()]


async def set_status(
    conn: Conn, swarm_id: str, status: str | None = None, phase: SwarmPhase | None = None
) -> None:
    """Move a live swarm's status and/or phase (never out of a terminal state)."""
    await conn.execute(
        "UPDATE swarms SET status = coalesce(%s, status), phase = coalesce(%s, phase),"
        " updated_at = now() WHERE id = %s AND finished_at IS NULL",
        (status, phase, swarm_id),
    )


async def finish(conn: Conn, swarm_id: str, *, outcome: SwarmOutcome, reason: str | None) -> None:
    """Record how a swarm ended (idempotent: the first finish wins)."""
    status = {"succeeded": "succeeded", "cancelled": "cancelled"}.get(outcome, "failed")
    await conn.execute(
        "UPDATE swarms SET status = %s, outcome = %s, reason = %s, phase = 'finished',"
        " finished_at = now(), updated_at = now() WHERE id = %s AND finished_at IS NULL",
        (status, outcome, reason, swarm_id),
    )


async def set_result(conn: Conn, swarm_id: str, result: str, attribution: list[str]) -> None:
    """Store the synthesized answer and the subtasks it cites."""
    await conn.execute(
        "UPDATE swarms SET result = %s, attribution = %s, updated_at = now() WHERE id = %s",
        (result, Jsonb(attribution), swarm_id),
    )


async def swarm_cost(conn: Conn, swarm_id: str) -> tuple[float, bool]:
    """What the swarm has cost so far: the queen's calls and every subtask run."""
    cur = await conn.execute(
        "SELECT s.queen_cost_usd + coalesce(sum(r.cost_usd), 0) AS cost,"
        " s.cost_complete AND coalesce(bool_and(r.cost_complete), true) AS complete"
        " FROM swarms s LEFT JOIN runs r ON r.swarm_id = s.id WHERE s.id = %s"
        " GROUP BY s.id",
        (swarm_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"swarm {swarm_id!r} not found")
    return float(row["cost"]), bool(row["complete"])


# -- the plan ------------------------------------------------------------------------


async def install_plan(
    conn: Conn, tenant_id: str, swarm_id: str, plan_version: int, plan: Sequence[SubtaskSpec]
) -> None:
    """Make `plan` the swarm's plan `plan_version` (idempotent).

    Succeeded subtasks stay as they are; others of the same id are replaced (their
    attempts count on); others not in the plan are dropped.
    """
    for index, s in enumerate(plan):
        await conn.execute(
            "INSERT INTO swarm_subtasks (tenant_id, swarm_id, id, position, plan_version,"
            " description, role, depends_on, expected_output, complexity)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (swarm_id, id) DO UPDATE SET position = EXCLUDED.position,"
            " plan_version = EXCLUDED.plan_version, description = EXCLUDED.description,"
            " role = EXCLUDED.role, depends_on = EXCLUDED.depends_on,"
            " expected_output = EXCLUDED.expected_output, complexity = EXCLUDED.complexity,"
            " status = 'pending', reason = NULL, updated_at = now()"
            " WHERE swarm_subtasks.status <> 'succeeded'"
            " AND swarm_subtasks.plan_version < EXCLUDED.plan_version",
            (tenant_id, swarm_id, s.id, plan_version * 1000 + index, plan_version,
             s.description, s.role, list(s.depends_on), s.expected_output, s.complexity),
        )  # fmt: skip
    await conn.execute(
        "UPDATE swarm_subtasks SET status = 'dropped', updated_at = now()"
        " WHERE swarm_id = %s AND plan_version < %s AND status NOT IN ('succeeded', 'dropped')",
        (swarm_id, plan_version),
    )
    await conn.execute(
        "UPDATE swarms SET plan_version = greatest(plan_version, %s), updated_at = now()"
        " WHERE id = %s",
        (plan_version, swarm_id),
    )


async def list_subtasks(
    conn: Conn, swarm_id: str, ids: Sequence[str] | None = None
) -> list[SubtaskRecord]:
    """The swarm's subtasks in plan order (dropped ones included), or those of `ids`."""
    cur = await conn.execute(
        f"SELECT {_SUBTASK_COLUMNS} FROM swarm_subtasks WHERE swarm_id = %s"
        " AND (%s::text[] IS NULL OR id = ANY(%s::text[])) ORDER BY position",
        (swarm_id, ids, ids),
    )
    return [SubtaskRecord.model_validate(_floats(r)) for r in await cur.fetchall()]


async def mark_started(
    conn: Conn,
    swarm_id: str,
    subtask_id: str,
    *,
    attempt: int,
    run_id: str,
    agent: agents.AgentVersion,
    model: str,
    budget_usd: float | None,
) -> None:
    """Subtask `subtask_id` runs as `run_id` (its attempt `attempt`)."""
    await conn.execute(
        "UPDATE swarm_subtasks SET status = 'running', attempts = greatest(attempts, %s),"
        " run_id = %s, agent_name = %s, agent_version = %s, model = %s, budget_usd = %s,"
        " reason = NULL, started_at = coalesce(started_at, now()), finished_at = NULL,"
        " updated_at = now() WHERE swarm_id = %s AND id = %s",
        (attempt, run_id, agent.name, agent.version, model,
         None if budget_usd is None else Decimal(str(budget_usd)), swarm_id, subtask_id),
    )  # fmt: skip


async def mark_finished(
    conn: Conn, swarm_id: str, subtask_id: str, *, succeeded: bool, reason: str | None
) -> tuple[float, bool]:
    """Record how a subtask's attempt ended; its cost is summed over its runs.

    Returns (cost of the subtask's attempts, whether every price was known).
    """
    cur = await conn.execute(
        "UPDATE swarm_subtasks t SET status = %s, reason = %s, finished_at = now(),"
        " updated_at = now(), cost_usd = c.cost, cost_complete = c.complete"
        " FROM (SELECT coalesce(sum(cost_usd), 0) AS cost,"
        "       coalesce(bool_and(cost_complete), true) AS complete"
        "       FROM runs WHERE swarm_id = %s AND subtask_id = %s) c"
        " WHERE t.swarm_id = %s AND t.id = %s RETURNING t.cost_usd, t.cost_complete",
        ("succeeded" if succeeded else "failed", reason, swarm_id, subtask_id, swarm_id,
         subtask_id),
    )  # fmt: skip
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"subtask {subtask_id!r} of swarm {swarm_id!r} not found")
    return float(row["cost_usd"]), bool(row["cost_complete"])


async def mark_cancelled(conn: Conn, swarm_id: str) -> None:
    """Subtasks still running or pending when the swarm ends are cancelled."""
    await conn.execute(
        "UPDATE swarm_subtasks SET status = 'cancelled', updated_at = now(),"
        " finished_at = coalesce(finished_at, now())"
        " WHERE swarm_id = %s AND status IN ('running', 'pending')",
        (swarm_id,),
    )


async def subtask_results(
    conn: Conn, swarm_id: str, ids: Sequence[str]
) -> dict[str, tuple[SubtaskRecord, str]]:
    """Succeeded subtasks among `ids` with the final answer of their run."""
    cur = await conn.execute(
        f"SELECT {', '.join('t.' + c.strip() for c in _SUBTASK_COLUMNS.split(','))},"
        " r.result AS run_result FROM swarm_subtasks t JOIN runs r ON r.id = t.run_id"
        " WHERE t.swarm_id = %s AND t.id = ANY(%s) AND t.status = 'succeeded'"
        " ORDER BY t.position",
        (swarm_id, list(ids)),
    )
    out: dict[str, tuple[SubtaskRecord, str]] = {}
    for row in await cur.fetchall():
        data = _floats(row)
        result = data.pop("run_result") or ""
        record = SubtaskRecord.model_validate(data)
        out[record.id] = (record, result)
    return out


async def swarm_of_run(conn: Conn, tenant_id: str, run_id: str) -> tuple[str, str] | None:
    """(swarm id, subtask id) of a run that is a subtask's attempt, else None."""
    cur = await conn.execute(
        "SELECT swarm_id, subtask_id FROM runs WHERE tenant_id = %s AND id = %s"
        " AND swarm_id IS NOT NULL",
        (tenant_id, run_id),
    )
    row = await cur.fetchone()
    return None if row is None else (str(row["swarm_id"]), str(row["subtask_id"] or ""))


# -- events --------------------------------------------------------------------------


async def append_events(
    conn: Conn, tenant_id: str, swarm_id: str, events: list[RunEvent]
) -> list[int]:
    """Append events to the swarm's log, once per key (see `event_log.append`)."""
    return await event_log.append(conn, SWARM_EVENTS, tenant_id, swarm_id, events)


async def list_events(
    conn: Conn, tenant_id: str, swarm_id: str, *, after: int = 0, limit: int = 500
) -> list[EventRecord]:
    """Events with seq > `after`, in order."""
    return await event_log.list_after(
        conn, SWARM_EVENTS, tenant_id, swarm_id, after=after, limit=limit
    )


# -- blackboard ----------------------------------------------------------------------


async def post(
    conn: Conn,
    tenant_id: str,
    swarm_id: str,
    *,
    key: str,
    content: str,
    topic: str | None = None,
    subtask_id: str | None = None,
    run_id: str | None = None,
) -> int:
    """Post a finding (once per key); returns its id."""
    cur = await conn.execute(
        "INSERT INTO swarm_blackboard (tenant_id, swarm_id, key, subtask_id, run_id, topic, content)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (swarm_id, key) DO NOTHING RETURNING id",
        (tenant_id, swarm_id, key, subtask_id, run_id, topic, content),
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(
            "SELECT id FROM swarm_blackboard WHERE swarm_id = %s AND key = %s", (swarm_id, key)
        )
        row = await cur.fetchone()
        assert row is not None
    return int(row["id"])


async def read_posts(
    conn: Conn,
    tenant_id: str,
    swarm_id: str,
    *,
    topic: str | None = None,
    limit: int = 20,
) -> list[BlackboardPost]:
    """The latest posts (of `topic`, if given), oldest first."""
    cur = await conn.execute(
        "SELECT * FROM (SELECT id, subtask_id, run_id, topic, content, created_at"
        " FROM swarm_blackboard WHERE tenant_id = %s AND swarm_id = %s"
        " AND (%s::text IS NULL OR topic = %s) ORDER BY id DESC LIMIT %s) p ORDER BY id",
        (tenant_id, swarm_id, topic, topic, limit),
    )
    return [BlackboardPost.model_validate(r) for r in await cur.fetchall()]


# -- the queen's model calls ---------------------------------------------------------


class QueenCall(BaseModel):
    """A stored queen call."""

    model_config = ConfigDict(frozen=True)

    model: str
    answer: str
    errors: list[str]
    cost_usd: float | None


async def find_call(conn: Conn, swarm_id: str, key: str) -> QueenCall | None:
    """The queen's call `key`, if it was made."""
    cur = await conn.execute(
        "SELECT model, answer, errors, cost_usd FROM swarm_llm_calls"
        " WHERE swarm_id = %s AND key = %s",
        (swarm_id, key),
    )
    row = await cur.fetchone()
    return None if row is None else QueenCall.model_validate(_floats(row))


async def record_call(
    conn: Conn,
    *,
    tenant_id: str,
    swarm_id: str,
    key: str,
    purpose: str,
    model: str,
    provider: str,
    usage: ModelUsage,
    cost_usd: float | None,
    latency_ms: float,
    answer: str,
    errors: Sequence[str] = (),
) -> bool:
    """Ledger a queen call once (and add its cost to the swarm's); False if known."""
    cur = await conn.execute(
        "INSERT INTO swarm_llm_calls (tenant_id, swarm_id, key, purpose, model, provider,"
        " prompt_tokens, completion_tokens, cost_usd, latency_ms, answer, errors)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (swarm_id, key) DO NOTHING RETURNING key",
        (tenant_id, swarm_id, key, purpose, model, provider, usage.prompt_tokens,
         usage.completion_tokens, None if cost_usd is None else Decimal(str(cost_usd)),
         latency_ms, answer, Jsonb(list(errors))),
    )  # fmt: skip
    if await cur.fetchone() is None:
        return False
    await conn.execute(
        "UPDATE swarms SET queen_cost_usd = queen_cost_usd + %s,"
        " cost_complete = cost_complete AND %s, updated_at = now() WHERE id = %s",
        (Decimal(str(cost_usd or 0)), cost_usd is not None, swarm_id),
    )
    return True


def _swarm(row: dict[str, Any]) -> SwarmRecord:
    return SwarmRecord.model_validate(_floats(row))


def _floats(row: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
