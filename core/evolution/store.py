"""Evolution cycles in Postgres: the cycle, its candidates, per-case results and events.

Every function takes the tenant explicitly (or an evolution id the caller got for its
tenant) and writes idempotently, so activities may retry.
"""

import hashlib
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core import event_log
from core.errors import NotFound
from core.event_log import EVOLUTION_EVENTS, EventRecord
from core.evolution.cases import Split
from core.evolution.payloads import (
    CandidateKind,
    Decision,
    EvolutionSettings,
    EvolutionStatusName,
    EvolutionTriggers,
    Trigger,
)
from core.payloads import RunEvent

Conn = psycopg.AsyncConnection[Any]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
"""Statuses of a cycle that has ended."""

_COLUMNS = (
    "id, tenant_id, agent_name, workflow_id, incumbent_version, trigger, settings, status,"
    " phase, decision, promoted_version, reasons, evidence, diagnoses, gate, judge, cost_usd,"
    " created_at, updated_at, finished_at"
)


class EvolutionRecord(BaseModel):
    """An evolutions row."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    agent_name: str
    workflow_id: str
    incumbent_version: int
    trigger: Trigger
    settings: EvolutionSettings
    status: EvolutionStatusName
    phase: str | None
    decision: Decision | None
    promoted_version: int | None
    reasons: list[str]
    evidence: dict[str, Any]
    diagnoses: list[dict[str, Any]]
    gate: dict[str, Any] | None
    judge: dict[str, Any] | None
    cost_usd: float
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class CandidateRecord(BaseModel):
    """A candidate version of a cycle."""

    model_config = ConfigDict(frozen=True)

    version: int
    kind: CandidateKind
    rationale: str
    diff: str
    rejected: str | None
    score: dict[str, Any] | None
    cost_usd: float


class ResultRecord(BaseModel):
    """One case evaluated under one version."""

    model_config = ConfigDict(frozen=True)

    version: int
    case_id: str
    split: Split
    run_id: str | None
    score: float | None
    passed: bool
    detail: str
    cost_usd: float
    latency_s: float | None


def new_evolution_id() -> str:
    """A fresh evolution id (`evo_` + 24 hex chars)."""
    return "evo_" + secrets.token_hex(12)


def workflow_id_for(evolution_id: str) -> str:
    """The workflow id of a cycle."""
    return f"evolution-{evolution_id}"


def eval_workflow_id(evolution_id: str, version: int, case_id: str) -> str:
    """The child workflow evaluating `version` on a case: the same id after any crash."""
    return f"{workflow_id_for(evolution_id)}/v{version}/{case_id}"


def _record(row: dict[str, Any]) -> EvolutionRecord:
    return EvolutionRecord.model_validate({**row, "cost_usd": float(row["cost_usd"])})


async def create_evolution(
    conn: Conn,
    *,
    tenant_id: str,
    agent_name: str,
    incumbent_version: int,
    settings: EvolutionSettings,
    trigger: Trigger = "manual",
    workflow_id: str | None = None,
) -> EvolutionRecord:
    """Create a queued cycle for the agent's live version.

    A cycle that a schedule or a trigger started already has its workflow: its id comes
    from the workflow id, so creating it again returns the same row.
    """
    evolution_id = (
        new_evolution_id()
        if workflow_id is None
        else "evo_" + hashlib.sha256(workflow_id.encode()).hexdigest()[:24]
    )
    cur = await conn.execute(
        "INSERT INTO evolutions (id, tenant_id, agent_name, workflow_id, incumbent_version,"
        " trigger, settings) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING"
        f" RETURNING {_COLUMNS}",
        (evolution_id, tenant_id, agent_name, workflow_id or workflow_id_for(evolution_id),
         incumbent_version, trigger, Jsonb(settings.model_dump(mode="json"))),
    )  # fmt: skip
    row = await cur.fetchone()
    if row is None:
        return await get_evolution(conn, tenant_id, evolution_id)
    return _record(row)


async def get_evolution(conn: Conn, tenant_id: str, evolution_id: str) -> EvolutionRecord:
    """A cycle of the tenant.

    Raises:
        NotFound: no such cycle for this tenant.
    """
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM evolutions WHERE tenant_id = %s AND id = %s",
        (tenant_id, evolution_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"evolution {evolution_id!r} not found")
    return _record(row)


async def list_evolutions(
    conn: Conn, tenant_id: str, agent_name: str, *, limit: int = 50
) -> list[EvolutionRecord]:
    """An agent's cycles, newest first."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM evolutions WHERE tenant_id = %s AND agent_name = %s"
        " ORDER BY created_at DESC LIMIT %s",
        (tenant_id, agent_name, limit),
    )
    return [_record(r) for r in await cur.fetchall()]


async def set_state(
    conn: Conn,
    evolution_id: str,
    *,
    status: EvolutionStatusName | None = None,
    phase: str | None = None,
    evidence: dict[str, Any] | None = None,
    diagnoses: list[dict[str, Any]] | None = None,
    judge: dict[str, Any] | None = None,
) -> None:
    """Update what is given (unfinished cycles only)."""
    await conn.execute(
        "UPDATE evolutions SET status = coalesce(%s, status), phase = coalesce(%s, phase),"
        " evidence = coalesce(%s, evidence), diagnoses = coalesce(%s, diagnoses),"
        " judge = coalesce(%s, judge), updated_at = now()"
        " WHERE id = %s AND finished_at IS NULL",
        (status, phase, None if evidence is None else Jsonb(evidence),
         None if diagnoses is None else Jsonb(diagnoses), None if judge is None else Jsonb(judge),
         evolution_id),
    )  # fmt: skip


async def finish(
    conn: Conn,
    evolution_id: str,
    *,
    status: Literal["succeeded", "failed", "cancelled"],
    decision: Decision,
    promoted_version: int | None,
    reasons: list[str],
    gate: dict[str, Any] | None,
    cost_usd: float,
) -> bool:
    """Record how the cycle ended (once: a retry changes nothing, and returns False)."""
    cur = await conn.execute(
        "UPDATE evolutions SET status = %s, phase = 'finished', decision = %s,"
        " promoted_version = %s, reasons = %s, gate = coalesce(%s, gate), cost_usd = %s,"
        " updated_at = now(), finished_at = now() WHERE id = %s AND finished_at IS NULL",
        (status, decision, promoted_version, Jsonb(reasons),
         None if gate is None else Jsonb(gate), Decimal(str(round(cost_usd, 6))), evolution_id),
    )  # fmt: skip
    return cur.rowcount > 0


async def set_gate(conn: Conn, evolution_id: str, gate: dict[str, Any]) -> None:
    """Store the gate's statistics for every candidate."""
    await conn.execute(
        "UPDATE evolutions SET gate = %s, updated_at = now() WHERE id = %s",
        (Jsonb(gate), evolution_id),
    )


# -- policies ------------------------------------------------------------------------


class EvolutionPolicy(BaseModel):
    """An agent's evolution policy: cycle settings, schedule and triggers."""

    model_config = ConfigDict(frozen=True)

    agent_name: str
    settings: EvolutionSettings = EvolutionSettings()
    every: str | None = None
    cron: str | None = None
    paused: bool = False
    triggers: EvolutionTriggers = EvolutionTriggers()
    last_triggered_at: datetime | None = None


async def get_policy(conn: Conn, tenant_id: str, agent_name: str) -> EvolutionPolicy | None:
    """The agent's evolution policy, if it has one."""
    cur = await conn.execute(
        "SELECT agent_name, settings, every, cron, paused, triggers, last_triggered_at"
        " FROM evolution_policies WHERE tenant_id = %s AND agent_name = %s",
        (tenant_id, agent_name),
    )
    row = await cur.fetchone()
    return None if row is None else EvolutionPolicy.model_validate(row)


async def put_policy(conn: Conn, tenant_id: str, policy: EvolutionPolicy) -> EvolutionPolicy:
    """Create or replace the agent's evolution policy (its trigger time is kept).

    Raises:
        NotFound: no such agent for this tenant.
    """
    try:
        cur = await conn.execute(
            "INSERT INTO evolution_policies (tenant_id, agent_name, settings, every, cron, paused,"
            " triggers) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, agent_name) DO UPDATE SET settings = excluded.settings,"
            " every = excluded.every, cron = excluded.cron, paused = excluded.paused,"
            " triggers = excluded.triggers, updated_at = now()"
            " RETURNING agent_name, settings, every, cron, paused, triggers, last_triggered_at",
            (tenant_id, policy.agent_name, Jsonb(policy.settings.model_dump(mode="json")),
             policy.every, policy.cron, policy.paused,
             Jsonb(policy.triggers.model_dump(mode="json"))),
        )  # fmt: skip
    except psycopg.errors.ForeignKeyViolation:
        raise NotFound(f"agent {policy.agent_name!r} not found") from None
    row = await cur.fetchone()
    assert row is not None
    return EvolutionPolicy.model_validate(row)


async def delete_policy(conn: Conn, tenant_id: str, agent_name: str) -> bool:
    """Remove the agent's evolution policy; False when it had none."""
    cur = await conn.execute(
        "DELETE FROM evolution_policies WHERE tenant_id = %s AND agent_name = %s",
        (tenant_id, agent_name),
    )
    return cur.rowcount > 0


# -- candidates ----------------------------------------------------------------------


async def add_candidate(
    conn: Conn,
    tenant_id: str,
    evolution_id: str,
    *,
    version: int,
    kind: CandidateKind,
    rationale: str,
    diff: str,
    rejected: str | None = None,
) -> None:
    """Record a candidate (a rejected draft gets version 0 - n, it has no agent version)."""
    await conn.execute(
        "INSERT INTO evolution_candidates (tenant_id, evolution_id, version, kind, rationale,"
        " diff, rejected) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (evolution_id, version) DO NOTHING",
        (tenant_id, evolution_id, version, kind, rationale, diff, rejected),
    )


async def set_candidate_score(
    conn: Conn, evolution_id: str, version: int, score: dict[str, Any], cost_usd: float
) -> None:
    """A candidate's summary against the incumbent."""
    await conn.execute(
        "UPDATE evolution_candidates SET score = %s, cost_usd = %s"
        " WHERE evolution_id = %s AND version = %s",
        (Jsonb(score), Decimal(str(round(cost_usd, 6))), evolution_id, version),
    )


async def list_candidates(conn: Conn, evolution_id: str) -> list[CandidateRecord]:
    """A cycle's candidates, stored ones first by version, then rejected drafts."""
    cur = await conn.execute(
        "SELECT version, kind, rationale, diff, rejected, score, cost_usd"
        " FROM evolution_candidates WHERE evolution_id = %s"
        " ORDER BY rejected IS NOT NULL, abs(version)",
        (evolution_id,),
    )
    return [
        CandidateRecord.model_validate({**r, "cost_usd": float(r["cost_usd"])})
        for r in await cur.fetchall()
    ]


# -- results -------------------------------------------------------------------------


async def record_result(
    conn: Conn,
    tenant_id: str,
    evolution_id: str,
    *,
    version: int,
    case_id: str,
    split: Split,
    run_id: str | None,
    score: float | None,
    passed: bool,
    detail: str,
    cost_usd: float,
    latency_s: float | None,
) -> None:
    """Store one case's result under one version (the first write wins: retries agree)."""
    await conn.execute(
        "INSERT INTO evolution_results (tenant_id, evolution_id, version, case_id, split, run_id,"
        " score, passed, detail, cost_usd, latency_s)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (evolution_id, version, case_id) DO NOTHING",
        (tenant_id, evolution_id, version, case_id, split, run_id, score, passed, detail[:4000],
         Decimal(str(round(cost_usd, 6))), latency_s),
    )  # fmt: skip


async def find_result(
    conn: Conn, evolution_id: str, version: int, case_id: str
) -> ResultRecord | None:
    """A stored result, if any."""
    cur = await conn.execute(
        "SELECT version, case_id, split, run_id, score, passed, detail, cost_usd, latency_s"
        " FROM evolution_results WHERE evolution_id = %s AND version = %s AND case_id = %s",
        (evolution_id, version, case_id),
    )
    row = await cur.fetchone()
    return None if row is None else _result(row)


async def list_results(conn: Conn, evolution_id: str) -> list[ResultRecord]:
    """Every result of a cycle, by version and case."""
    cur = await conn.execute(
        "SELECT version, case_id, split, run_id, score, passed, detail, cost_usd, latency_s"
        " FROM evolution_results WHERE evolution_id = %s ORDER BY version, case_id",
        (evolution_id,),
    )
    return [_result(r) for r in await cur.fetchall()]


Preference = Literal["candidate", "incumbent", "tie"]


async def record_pair(
    conn: Conn,
    tenant_id: str,
    evolution_id: str,
    *,
    version: int,
    case_id: str,
    preferred: Preference,
    shown_first: Literal["candidate", "incumbent"],
    reason: str,
    cost_usd: float,
) -> None:
    """Store a pairwise judgment (the first write wins)."""
    await conn.execute(
        "INSERT INTO evolution_pairs (tenant_id, evolution_id, version, case_id, preferred,"
        " shown_first, reason, cost_usd) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (evolution_id, version, case_id) DO NOTHING",
        (tenant_id, evolution_id, version, case_id, preferred, shown_first, reason[:1000],
         Decimal(str(round(cost_usd, 6)))),
    )  # fmt: skip


async def list_pairs(conn: Conn, evolution_id: str) -> dict[tuple[int, str], Preference]:
    """The cycle's pairwise judgments by (candidate version, case)."""
    cur = await conn.execute(
        "SELECT version, case_id, preferred FROM evolution_pairs WHERE evolution_id = %s",
        (evolution_id,),
    )
    return {(r["version"], r["case_id"]): r["preferred"] for r in await cur.fetchall()}


class VersionScore(BaseModel):
    """A version's scores in the latest cycle that evaluated it (a missing result is 0)."""

    model_config = ConfigDict(frozen=True)

    evolution_id: str
    validation: float | None
    holdout: float | None
    validation_cases: int
    holdout_cases: int


async def version_scores(conn: Conn, tenant_id: str, agent_name: str) -> dict[int, VersionScore]:
    """Each evaluated version's mean scores on validation and holdout, latest cycle first."""
    cur = await conn.execute(
        "WITH per AS (SELECT r.version, r.evolution_id, e.created_at,"
        " avg(coalesce(r.score, 0)) FILTER (WHERE r.split = 'validation') AS validation,"
        " avg(coalesce(r.score, 0)) FILTER (WHERE r.split = 'holdout') AS holdout,"
        " count(*) FILTER (WHERE r.split = 'validation') AS validation_cases,"
        " count(*) FILTER (WHERE r.split = 'holdout') AS holdout_cases"
        " FROM evolution_results r JOIN evolutions e ON e.id = r.evolution_id"
        " WHERE e.tenant_id = %s AND e.agent_name = %s AND r.split <> 'train'"
        " GROUP BY r.version, r.evolution_id, e.created_at)"
        " SELECT DISTINCT ON (version) * FROM per ORDER BY version, created_at DESC",
        (tenant_id, agent_name),
    )
    return {
        row["version"]: VersionScore.model_validate(
            {**row, "validation": _float(row["validation"]), "holdout": _float(row["holdout"])}
        )
        for row in await cur.fetchall()
    }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def agent_results(
    conn: Conn, tenant_id: str, agent_name: str, split: Split = "validation"
) -> list[ResultRecord]:
    """Every result of the agent's cycles on one split (for the frontier across cycles)."""
    cur = await conn.execute(
        "SELECT r.version, r.case_id, r.split, r.run_id, r.score, r.passed, r.detail, r.cost_usd,"
        " r.latency_s FROM evolution_results r JOIN evolutions e ON e.id = r.evolution_id"
        " WHERE e.tenant_id = %s AND e.agent_name = %s AND r.split = %s",
        (tenant_id, agent_name, split),
    )
    return [_result(r) for r in await cur.fetchall()]


def _result(row: dict[str, Any]) -> ResultRecord:
    return ResultRecord.model_validate({**row, "cost_usd": float(row["cost_usd"])})


# -- events --------------------------------------------------------------------------


async def append_events(
    conn: Conn, tenant_id: str, evolution_id: str, events: list[RunEvent]
) -> list[int]:
    """Append events to the cycle's log, once per key (see `event_log.append`)."""
    return await event_log.append(conn, EVOLUTION_EVENTS, tenant_id, evolution_id, events)


async def list_events(
    conn: Conn, tenant_id: str, evolution_id: str, *, after: int = 0, limit: int = 500
) -> list[EventRecord]:
    """Events with seq > `after`, in order."""
    return await event_log.list_after(
        conn, EVOLUTION_EVENTS, tenant_id, evolution_id, after=after, limit=limit
    )
