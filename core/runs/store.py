"""Runs in Postgres: the run row, its conversation, inbox, event log and cost ledger.

Every write that an activity makes is keyed so that a retried activity writes once:
messages by (run, seq) with seqs assigned by the workflow, events by (run, key), ledger
rows by (run, step).
"""

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core import event_log, idempotency
from core.errors import NotFound
from core.event_log import RUN_EVENTS, EventRecord
from core.payloads import ChatMessage, ModelUsage, RunEvent, RunMode, ToolCallRequest
from core.runs.payloads import RunOutcome, RunProgress

LlmPurpose = Literal["step", "summary", "reflexion"]
RunStatusName = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
_RUN_COLUMNS = (
    "id, tenant_id, agent_name, agent_version, workflow_id, mode, conversation, status, outcome,"
    " reason, objective, result, steps, prompt_tokens, completion_tokens, cost_usd, cost_complete,"
    " created_at, updated_at, finished_at, parent_run_id, swarm_id, subtask_id, models, max_cost_usd,"
    " end_user, rollout_id"
)

Conn = psycopg.AsyncConnection[Any]


class RunRecord(BaseModel):
    """A run row."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    agent_name: str
    agent_version: int
    workflow_id: str
    mode: RunMode
    conversation: bool
    status: RunStatusName
    outcome: RunOutcome | None
    reason: str | None
    objective: str
    result: str | None
    steps: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cost_complete: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    parent_run_id: str | None = None
    swarm_id: str | None = None  # the run is an attempt of a swarm's subtask
    subtask_id: str | None = None
    models: list[str] | None = None  # the swarm's model chain for it (else the agent's)
    max_cost_usd: float | None = None  # the swarm's budget share (caps the agent's limit)
    end_user: str | None = None  # who the caller said the run is for
    rollout_id: str | None = None  # the canary that picked its version


@dataclass(frozen=True)
class SwarmAttempt:
    """What a run that is a swarm subtask's attempt carries besides an ordinary run's."""

    swarm_id: str
    subtask_id: str
    workflow_id: str  # the swarm's child workflow: `{swarm workflow}/{subtask}[.attempt]`
    models: list[str]
    max_cost_usd: float | None

    def columns(self) -> tuple[object, ...]:
        """Values of the runs columns swarm_id, subtask_id, models, max_cost_usd."""
        cost = None if self.max_cost_usd is None else Decimal(str(self.max_cost_usd))
        return (self.swarm_id, self.subtask_id, Jsonb(self.models), cost)


@dataclass(frozen=True)
class EvaluationAttempt:
    """What a run that evaluates an agent version in an evolution cycle carries."""

    evolution_id: str
    workflow_id: str  # the cycle's child workflow: `{evolution workflow}/v{version}/{case}`
    max_cost_usd: float | None


def new_run_id() -> str:
    """A fresh run id (`run_` + 24 hex chars)."""
    return "run_" + secrets.token_hex(12)


def workflow_id_for(run_id: str) -> str:
    """The workflow id of a run: a business key, so a repeated start is harmless."""
    return f"run-{run_id}"


async def create_run(
    conn: Conn,
    *,
    tenant_id: str,
    agent_name: str,
    agent_version: int,
    objective: str,
    mode: RunMode = "normal",
    conversation: bool = False,
    idempotency_key: str | None = None,
    parent: tuple[str, str] | None = None,
    swarm: SwarmAttempt | None = None,
    evaluation: EvaluationAttempt | None = None,
    end_user: str | None = None,
    rollout_id: str | None = None,
    workflow_id: str | None = None,
    request_hash: bytes | None = None,
) -> tuple[RunRecord, int, bool]:
    """Create a run and put its objective in the inbox.

    `parent` is the run and call of an agent called as a tool; `swarm` the subtask
    attempt the run is; `evaluation` the evolution cycle's evaluation it is (or a
    canary's shadow run, with the `workflow_id` given). `end_user` and `rollout_id` say
    who the run is for and which canary picked its version.

    Returns (run, inbox id of the objective, created). With an idempotency key that was
    used before, returns the existing run and `created=False`.

    Raises:
        IdempotencyConflict: the key's run was started by a request of another
            `request_hash` (see `core.idempotency`).
    """
    run_id = new_run_id()
    workflow_id = workflow_id or workflow_id_for(run_id)
    attempt: tuple[object, ...] = (None, None, None, None)
    if swarm is not None:
        workflow_id, attempt = swarm.workflow_id, swarm.columns()
    elif evaluation is not None:
        cap = evaluation.max_cost_usd
        workflow_id = evaluation.workflow_id
        attempt = (None, None, None, None if cap is None else Decimal(str(cap)))
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO runs (id, tenant_id, agent_name, agent_version, workflow_id, mode,"
            " conversation, objective, idempotency_key, parent_run_id, parent_call_id,"
            " swarm_id, subtask_id, models, max_cost_usd, evolution_id, end_user, rollout_id,"
            " request_hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING {_RUN_COLUMNS}",
            (run_id, tenant_id, agent_name, agent_version, workflow_id, mode, conversation,
             objective, idempotency_key, *(parent or (None, None)), *attempt,
             evaluation.evolution_id if evaluation else None, end_user, rollout_id,
             request_hash),
        )  # fmt: skip
        row = await cur.fetchone()
        if row is None:
            await idempotency.check(conn, "runs", tenant_id, idempotency_key, request_hash)
            existing = await _by_idempotency_key(conn, tenant_id, idempotency_key)
            cur = await conn.execute(
                "SELECT min(id) AS id FROM run_inbox WHERE run_id = %s", (existing.id,)
            )
            first = await cur.fetchone()
            return existing, int(first["id"]) if first and first["id"] else 0, False
        inbox_id = await add_inbox(conn, tenant_id, run_id, objective)
    return RunRecord.model_validate(_row(row)), inbox_id, True


async def _by_idempotency_key(conn: Conn, tenant_id: str, key: str | None) -> RunRecord:
    cur = await conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant_id = %s AND idempotency_key = %s",
        (tenant_id, key),
    )
    row = await cur.fetchone()
    assert row is not None
    return RunRecord.model_validate(_row(row))


async def get_run(conn: Conn, tenant_id: str, run_id: str) -> RunRecord:
    """A run of the tenant.

    Raises:
        NotFound: no such run for this tenant.
    """
    cur = await conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant_id = %s AND id = %s", (tenant_id, run_id)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return RunRecord.model_validate(_row(row))


async def list_runs(conn: Conn, tenant_id: str, *, limit: int = 50) -> list[RunRecord]:
    """The tenant's most recent runs."""
    cur = await conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant_id = %s ORDER BY created_at DESC LIMIT %s",
        (tenant_id, limit),
    )
    return [RunRecord.model_validate(_row(r)) for r in await cur.fetchall()]


async def live_run_ids(conn: Conn, run_ids: list[str]) -> set[str]:
    """Those of `run_ids` that name a run not finished yet (queued, running or waiting)."""
    cur = await conn.execute(
        "SELECT id FROM runs WHERE id = ANY(%s) AND status NOT IN"
        " ('succeeded', 'failed', 'cancelled')",
        (run_ids,),
    )
    return {row["id"] for row in await cur.fetchall()}


async def set_status(conn: Conn, run_id: str, status: RunStatusName) -> None:
    """Move a live run between running and waiting (never out of a terminal state)."""
    await conn.execute(
        "UPDATE runs SET status = %s, updated_at = now() WHERE id = %s AND status NOT IN"
        " ('succeeded', 'failed', 'cancelled')",
        (status, run_id),
    )


async def finish(
    conn: Conn,
    run_id: str,
    *,
    outcome: RunOutcome,
    reason: str | None,
    result: str | None,
    progress: RunProgress,
) -> bool:
    """Record how a run ended (idempotent: the first finish wins); False if already ended."""
    status = {"succeeded": "succeeded", "cancelled": "cancelled"}.get(outcome, "failed")
    cur = await conn.execute(
        "UPDATE runs SET status = %s, outcome = %s, reason = %s, result = %s, steps = %s,"
        " prompt_tokens = %s, completion_tokens = %s, cost_usd = %s, cost_complete = %s,"
        " finished_at = now(), updated_at = now()"
        " WHERE id = %s AND finished_at IS NULL",
        (status, outcome, reason, result, progress.step, progress.prompt_tokens,
         progress.completion_tokens, progress.cost_usd, progress.cost_complete, run_id),
    )  # fmt: skip
    return cur.rowcount > 0


# -- inbox and messages ---------------------------------------------------------------


async def add_inbox(conn: Conn, tenant_id: str, run_id: str, content: str) -> int:
    """Store a user message for the workflow to adopt; returns its inbox id."""
    cur = await conn.execute(
        "INSERT INTO run_inbox (tenant_id, run_id, content) VALUES (%s, %s, %s) RETURNING id",
        (tenant_id, run_id, content),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def adopt_inbox(
    conn: Conn, tenant_id: str, run_id: str, inbox_ids: list[int], first_seq: int
) -> list[str]:
    """Copy inbox rows into the conversation at seqs first_seq.. (idempotent). Returns texts."""
    cur = await conn.execute(
        "SELECT id, content FROM run_inbox WHERE run_id = %s AND tenant_id = %s AND id = ANY(%s)",
        (run_id, tenant_id, inbox_ids),
    )
    by_id = {int(r["id"]): str(r["content"]) for r in await cur.fetchall()}
    texts = []
    for offset, inbox_id in enumerate(inbox_ids):
        if inbox_id not in by_id:
            raise NotFound(f"inbox message {inbox_id} of run {run_id!r} not found")
        text = by_id[inbox_id]
        await write_message(
            conn, tenant_id, run_id, first_seq + offset, ChatMessage(role="user", content=text)
        )
        texts.append(text)
    return texts


async def write_message(
    conn: Conn, tenant_id: str, run_id: str, seq: int, message: ChatMessage
) -> None:
    """Store message `seq` of the run; a second write of the same seq is ignored."""
    if message.role == "system":
        raise ValueError("system prompts are built from the agent version, not stored per run")
    await conn.execute(
        "INSERT INTO run_messages (tenant_id, run_id, seq, role, content, tool_calls, tool_call_id, name)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, seq) DO NOTHING",
        (tenant_id, run_id, seq, message.role, message.content,
         Jsonb([c.model_dump() for c in message.tool_calls]), message.tool_call_id, message.name),
    )  # fmt: skip


async def load_messages(conn: Conn, run_id: str, upto_seq: int) -> list[ChatMessage]:
    """Messages 1..upto_seq of the run, in order."""
    cur = await conn.execute(
        "SELECT role, content, tool_calls, tool_call_id, name FROM run_messages"
        " WHERE run_id = %s AND seq <= %s ORDER BY seq",
        (run_id, upto_seq),
    )
    return [_message(r) for r in await cur.fetchall()]


async def load_step(
    conn: Conn, run_id: str, upto_seq: int, answer_seq: int
) -> tuple[list[tuple[int, ChatMessage]], ChatMessage | None]:
    """Messages 1..upto_seq with their seqs, and message `answer_seq` if stored (one query)."""
    cur = await conn.execute(
        "SELECT seq, role, content, tool_calls, tool_call_id, name FROM run_messages"
        " WHERE run_id = %s AND (seq <= %s OR seq = %s) ORDER BY seq",
        (run_id, upto_seq, answer_seq),
    )
    history, answer = [], None
    for row in await cur.fetchall():
        if row["seq"] == answer_seq:
            answer = _message(row)
        else:
            history.append((int(row["seq"]), _message(row)))
    return history, answer


async def read_messages(conn: Conn, run_id: str, seqs: list[int]) -> dict[int, ChatMessage]:
    """The stored messages among `seqs`, by seq: one query."""
    cur = await conn.execute(
        "SELECT seq, role, content, tool_calls, tool_call_id, name FROM run_messages"
        " WHERE run_id = %s AND seq = ANY(%s)",
        (run_id, seqs),
    )
    return {int(row["seq"]): _message(row) for row in await cur.fetchall()}


async def list_messages(
    conn: Conn, run_id: str, *, after: int = 0, limit: int = 100
) -> list[tuple[int, ChatMessage, datetime]]:
    """The run's messages after seq `after`, in order: (seq, message, stored at)."""
    cur = await conn.execute(
        "SELECT seq, role, content, tool_calls, tool_call_id, name, created_at FROM run_messages"
        " WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (run_id, after, limit),
    )
    return [(int(r["seq"]), _message(r), r["created_at"]) for r in await cur.fetchall()]


async def find_message(conn: Conn, run_id: str, seq: int) -> ChatMessage | None:
    """Message `seq` of the run, or None if it is not stored (yet)."""
    cur = await conn.execute(
        "SELECT role, content, tool_calls, tool_call_id, name FROM run_messages WHERE run_id = %s AND seq = %s",
        (run_id, seq),
    )
    row = await cur.fetchone()
    return None if row is None else _message(row)


async def get_message(conn: Conn, run_id: str, seq: int) -> ChatMessage:
    """Message `seq` of the run.

    Raises:
        NotFound: not stored (yet).
    """
    message = await find_message(conn, run_id, seq)
    if message is None:
        raise NotFound(f"message {seq} of run {run_id!r} not found")
    return message


def _message(row: dict[str, Any]) -> ChatMessage:
    return ChatMessage(
        role=row["role"],
        content=row["content"],
        tool_calls=[ToolCallRequest.model_validate(c) for c in row["tool_calls"] or []],
        tool_call_id=row["tool_call_id"],
        name=row["name"],
    )


# -- events ---------------------------------------------------------------------------


async def append_event(conn: Conn, tenant_id: str, run_id: str, event: RunEvent) -> int | None:
    """Append an event with the run's next sequence number; None if `key` was seen before."""
    seqs = await append_events(conn, tenant_id, run_id, [event])
    return seqs[0] if seqs else None


async def append_events(
    conn: Conn, tenant_id: str, run_id: str, events: list[RunEvent]
) -> list[int]:
    """Append events to the run's log in order, once per key (see `event_log.append`).

    Raises:
        NotFound: the run does not exist.
    """
    return await event_log.append(conn, RUN_EVENTS, tenant_id, run_id, events)


async def find_event(conn: Conn, run_id: str, key: str) -> EventRecord | None:
    """The run's event with this key, if appended."""
    return await event_log.find(conn, RUN_EVENTS, run_id, key)


async def prompt_context(
    conn: Conn, run_id: str, upto_seq: int
) -> tuple[str | None, tuple[int, str] | None]:
    """The run's memory context and its latest window summary covering at most `upto_seq`."""
    cur = await conn.execute(
        "SELECT r.memory_context, s.upto_seq, s.content FROM runs r LEFT JOIN LATERAL"
        " (SELECT upto_seq, content FROM run_summaries WHERE run_id = r.id AND upto_seq <= %s"
        "  ORDER BY upto_seq DESC LIMIT 1) s ON true WHERE r.id = %s",
        (upto_seq, run_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None, None
    summary = None if row["upto_seq"] is None else (int(row["upto_seq"]), str(row["content"]))
    return row["memory_context"], summary


async def store_summary(
    conn: Conn, tenant_id: str, run_id: str, upto_seq: int, content: str, model: str
) -> str:
    """Store the window summary of messages 1..upto_seq (once); returns the stored text."""
    await conn.execute(
        "INSERT INTO run_summaries (tenant_id, run_id, upto_seq, content, model)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (run_id, upto_seq) DO NOTHING",
        (tenant_id, run_id, upto_seq, content, model),
    )
    cur = await conn.execute(
        "SELECT content FROM run_summaries WHERE run_id = %s AND upto_seq = %s", (run_id, upto_seq)
    )
    row = await cur.fetchone()
    return str(row["content"]) if row else content


async def add_cost(conn: Conn, run_id: str, usage: ModelUsage, cost_usd: float | None) -> None:
    """Add a call made for the run after its steps (a reflexion) to the run's totals."""
    await conn.execute(
        "UPDATE runs SET prompt_tokens = prompt_tokens + %s,"
        " completion_tokens = completion_tokens + %s, cost_usd = cost_usd + %s,"
        " cost_complete = cost_complete AND %s, updated_at = now() WHERE id = %s",
        (usage.prompt_tokens, usage.completion_tokens, Decimal(str(cost_usd or 0)),
         cost_usd is not None, run_id),
    )  # fmt: skip


class Feedback(BaseModel):
    """A run's feedback: a rating, a comment, the answer the rater expected."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    rating: int
    comment: str | None = None
    expected: str | None = None


async def record_feedback(
    conn: Conn,
    tenant_id: str,
    run_id: str,
    rating: int,
    comment: str | None,
    expected: str | None = None,
) -> None:
    """Store (or replace, whole) the run's feedback, and rate the run in memory.

    `expected` is the answer the rater wanted; turning the run into an eval case makes a
    check of it. The episode gets the rating; episode and reflexion get the reward
    (rating - 3) / 2, so 1 means -1 and 5 means 1.
    """
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO run_feedback (tenant_id, run_id, rating, comment, expected)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (run_id) DO UPDATE SET rating = EXCLUDED.rating,"
            " comment = EXCLUDED.comment, expected = EXCLUDED.expected, updated_at = now()",
            (tenant_id, run_id, rating, comment, expected),
        )
        await conn.execute(
            "UPDATE memories SET metadata = metadata || jsonb_build_object('rating', %s::int),"
            " updated_at = now() WHERE tenant_id = %s AND source_run_id = %s AND kind = 'episode'",
            (rating, tenant_id, run_id),
        )
        await conn.execute(
            "UPDATE memories SET reward = %s, updated_at = now()"
            " WHERE tenant_id = %s AND source_run_id = %s AND kind IN ('episode', 'reflexion')",
            ((rating - 3) / 2, tenant_id, run_id),
        )


async def get_feedback(conn: Conn, tenant_id: str, run_id: str) -> Feedback | None:
    """The run's feedback (None: not rated)."""
    cur = await conn.execute(
        "SELECT run_id, rating, comment, expected FROM run_feedback"
        " WHERE tenant_id = %s AND run_id = %s",
        (tenant_id, run_id),
    )
    row = await cur.fetchone()
    return None if row is None else Feedback.model_validate(row)


async def list_events(
    conn: Conn, tenant_id: str, run_id: str, *, after: int = 0, limit: int = 500
) -> list[EventRecord]:
    """Events with seq > `after`, in order."""
    return await event_log.list_after(conn, RUN_EVENTS, tenant_id, run_id, after=after, limit=limit)


# -- cost ledger ----------------------------------------------------------------------


async def record_llm_call(
    conn: Conn,
    *,
    tenant_id: str,
    run_id: str,
    step: int,
    model: str,
    provider: str,
    usage: ModelUsage,
    cost_usd: float | None,
    latency_ms: float,
    purpose: LlmPurpose = "step",
) -> bool:
    """Add the ledger row of step `step` (and `purpose`); False if it was already recorded."""
    cur = await conn.execute(
        "INSERT INTO llm_calls (tenant_id, run_id, step, model, provider, prompt_tokens,"
        " completion_tokens, cost_usd, latency_ms, purpose)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (run_id, step, purpose) DO NOTHING RETURNING step",
        (tenant_id, run_id, step, model, provider, usage.prompt_tokens, usage.completion_tokens,
         None if cost_usd is None else Decimal(str(cost_usd)), latency_ms, purpose),
    )  # fmt: skip
    return await cur.fetchone() is not None


async def get_llm_call(
    conn: Conn, run_id: str, step: int, purpose: LlmPurpose = "step"
) -> dict[str, Any] | None:
    """The ledger row of a step (and `purpose`), if recorded."""
    cur = await conn.execute(
        "SELECT model, provider, prompt_tokens, completion_tokens, cost_usd, latency_ms FROM llm_calls"
        " WHERE run_id = %s AND step = %s AND purpose = %s",
        (run_id, step, purpose),
    )
    row = await cur.fetchone()
    return None if row is None else dict(row)


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if isinstance(out.get("cost_usd"), Decimal):
        out["cost_usd"] = float(out["cost_usd"])
    return out


def preview(text: str | None, limit: int = 2000) -> str | None:
    """A bounded preview of a text for payloads and events."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more characters]"


async def abandon(conn: Conn, run_id: str, reason: str) -> None:
    """End a run whose workflow ended without recording it (timed out, terminated).

    Its counters stay as last recorded; a run already finished is left alone.
    """
    await conn.execute(
        "UPDATE runs SET status = 'failed', outcome = 'failed', reason = %s,"
        " finished_at = now(), updated_at = now() WHERE id = %s AND finished_at IS NULL",
        (reason, run_id),
    )
