"""Rollouts in Postgres: policies, canaries and degradations, and their live evidence.

A canary row is created when an evolution cycle promotes a version of an agent that has
a rollout policy asking for one; the version stays a candidate until the controller's
sequential test promotes it (then it is released) or rolls it back. A degradation row
records an automatic rollback of a live version. Decisions are conditional updates of
an active row, so a retried activity or a replayed controller decides once.
"""

import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from core import search_attributes
from core.errors import NotFound
from core.evolution.rollout_payloads import (
    ROLLOUT_WORKFLOW,
    Observation,
    ObservationSource,
    RolloutInput,
    RolloutSettings,
    RolloutStatusName,
)
from core.evolution.schedules import agent_key
from core.queues import TaskQueue
from core.runs import agents
from core.settings import Settings

Conn = psycopg.AsyncConnection[Any]
RolloutKind = Literal["canary", "degradation"]

_COLUMNS = (
    "id, tenant_id, agent_name, kind, stable_version, canary_version, share, sticky_key,"
    " evolution_id, diagnostic_evolution_id, settings, status, reason, evidence, started_at,"
    " decided_at"
)


class RolloutRecord(BaseModel):
    """A rollouts row."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    agent_name: str
    kind: RolloutKind
    stable_version: int
    canary_version: int
    share: float
    sticky_key: str
    evolution_id: str | None
    diagnostic_evolution_id: str | None
    settings: RolloutSettings
    status: RolloutStatusName
    reason: str | None
    evidence: dict[str, Any]
    started_at: datetime
    decided_at: datetime | None


def new_rollout_id() -> str:
    """A fresh rollout id (`rol_` + 24 hex chars)."""
    return "rol_" + secrets.token_hex(12)


def controller_id(tenant_id: str, agent_name: str) -> str:
    """The workflow id of the agent's rollout controller (one per agent)."""
    return f"rollout-{agent_key(tenant_id, agent_name)}"


# -- policies ------------------------------------------------------------------------


async def get_policy(conn: Conn, tenant_id: str, agent_name: str) -> RolloutSettings | None:
    """The agent's rollout policy, if it has one."""
    cur = await conn.execute(
        "SELECT settings FROM rollout_policies WHERE tenant_id = %s AND agent_name = %s",
        (tenant_id, agent_name),
    )
    row = await cur.fetchone()
    return None if row is None else RolloutSettings.model_validate(row["settings"])


async def put_policy(
    conn: Conn, tenant_id: str, agent_name: str, settings: RolloutSettings
) -> RolloutSettings:
    """Create or replace the agent's rollout policy.

    Raises:
        NotFound: no such agent for this tenant.
    """
    try:
        await conn.execute(
            "INSERT INTO rollout_policies (tenant_id, agent_name, settings) VALUES (%s, %s, %s)"
            " ON CONFLICT (tenant_id, agent_name) DO UPDATE SET settings = excluded.settings,"
            " updated_at = now()",
            (tenant_id, agent_name, Jsonb(settings.model_dump(mode="json"))),
        )
    except psycopg.errors.ForeignKeyViolation:
        raise NotFound(f"agent {agent_name!r} not found") from None
    return settings


async def delete_policy(conn: Conn, tenant_id: str, agent_name: str) -> bool:
    """Remove the agent's rollout policy; False when it had none."""
    cur = await conn.execute(
        "DELETE FROM rollout_policies WHERE tenant_id = %s AND agent_name = %s",
        (tenant_id, agent_name),
    )
    return cur.rowcount > 0


# -- rollouts ------------------------------------------------------------------------


def _record(row: dict[str, Any]) -> RolloutRecord:
    return RolloutRecord.model_validate(row)


async def start_canary(
    conn: Conn,
    tenant_id: str,
    agent_name: str,
    *,
    stable: int,
    canary: int,
    evolution_id: str,
    settings: RolloutSettings,
) -> RolloutRecord:
    """The canary of a cycle's winner (created once per cycle; a retry returns it).

    A canary still active for the agent is cancelled: the new one starts from the same
    stable version with a newer candidate.
    """
    async with conn.transaction():
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM rollouts WHERE evolution_id = %s", (evolution_id,)
        )
        row = await cur.fetchone()
        if row is not None:
            return _record(row)
        await conn.execute(
            "UPDATE rollouts SET status = 'cancelled', decided_at = now(),"
            " reason = %s WHERE tenant_id = %s AND agent_name = %s AND kind = 'canary'"
            " AND status = 'active'",
            (f"superseded by the canary of v{canary}", tenant_id, agent_name),
        )
        cur = await conn.execute(
            "INSERT INTO rollouts (id, tenant_id, agent_name, kind, stable_version,"
            " canary_version, share, sticky_key, evolution_id, settings)"
            " VALUES (%s, %s, %s, 'canary', %s, %s, %s, %s, %s, %s)"
            f" RETURNING {_COLUMNS}",
            (new_rollout_id(), tenant_id, agent_name, stable, canary, settings.canary_share,
             settings.sticky_key, evolution_id, Jsonb(settings.model_dump(mode="json"))),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        return _record(row)


async def get_rollout(conn: Conn, tenant_id: str, rollout_id: str) -> RolloutRecord:
    """A rollout of the tenant.

    Raises:
        NotFound: no such rollout for this tenant.
    """
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM rollouts WHERE tenant_id = %s AND id = %s",
        (tenant_id, rollout_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"rollout {rollout_id!r} not found")
    return _record(row)


async def active_canary(conn: Conn, tenant_id: str, agent_name: str) -> RolloutRecord | None:
    """The agent's canary in progress, if any."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM rollouts WHERE tenant_id = %s AND agent_name = %s"
        " AND kind = 'canary' AND status = 'active'",
        (tenant_id, agent_name),
    )
    row = await cur.fetchone()
    return None if row is None else _record(row)


async def of_evolution(conn: Conn, evolution_id: str) -> RolloutRecord | None:
    """The canary a cycle's winner started, if it did."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM rollouts WHERE evolution_id = %s", (evolution_id,)
    )
    row = await cur.fetchone()
    return None if row is None else _record(row)


async def list_rollouts(
    conn: Conn, tenant_id: str, agent_name: str, *, limit: int = 100
) -> list[RolloutRecord]:
    """The agent's canaries and degradations, newest first."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM rollouts WHERE tenant_id = %s AND agent_name = %s"
        " ORDER BY started_at DESC, id LIMIT %s",
        (tenant_id, agent_name, limit),
    )
    return [_record(r) for r in await cur.fetchall()]


async def decide(
    conn: Conn,
    rollout_id: str,
    status: Literal["promoted", "rolled_back", "cancelled"],
    reason: str,
    evidence: dict[str, Any],
) -> bool:
    """End an active rollout; False when it had already ended (nothing changes)."""
    cur = await conn.execute(
        "UPDATE rollouts SET status = %s, reason = %s, evidence = %s, decided_at = now()"
        " WHERE id = %s AND status = 'active'",
        (status, reason, Jsonb(evidence), rollout_id),
    )
    return cur.rowcount > 0


async def record_degradation(
    conn: Conn,
    tenant_id: str,
    agent_name: str,
    *,
    rollout_id: str,
    degraded: int,
    restored: int,
    reason: str,
    evidence: dict[str, Any],
    settings: RolloutSettings,
) -> RolloutRecord:
    """Record an automatic rollback of `degraded` to `restored` (once per id)."""
    cur = await conn.execute(
        "INSERT INTO rollouts (id, tenant_id, agent_name, kind, stable_version, canary_version,"
        " settings, status, reason, evidence, decided_at)"
        " VALUES (%s, %s, %s, 'degradation', %s, %s, %s, 'rolled_back', %s, %s, now())"
        " ON CONFLICT (id) DO NOTHING",
        (rollout_id, tenant_id, agent_name, restored, degraded,
         Jsonb(settings.model_dump(mode="json")), reason, Jsonb(evidence)),
    )  # fmt: skip
    del cur
    return await get_rollout(conn, tenant_id, rollout_id)


async def set_diagnostic(conn: Conn, rollout_id: str, evolution_id: str) -> None:
    """The evolution cycle a degradation started."""
    await conn.execute(
        "UPDATE rollouts SET diagnostic_evolution_id = %s WHERE id = %s",
        (evolution_id, rollout_id),
    )


async def last_good_version(
    conn: Conn, tenant_id: str, agent_name: str, live: agents.AgentVersion
) -> int | None:
    """The newest released version before `live` that is worth going back to.

    Skipped: versions with the same spec as `live` (going back to them changes nothing)
    and versions that were themselves rolled back (as a canary or after degrading).
    """
    cur = await conn.execute(
        "SELECT canary_version FROM rollouts WHERE tenant_id = %s AND agent_name = %s"
        " AND status = 'rolled_back'",
        (tenant_id, agent_name),
    )
    bad = {r["canary_version"] for r in await cur.fetchall()}
    bad_hashes = {live.spec.spec_hash()}
    for version in await agents.list_versions(conn, tenant_id, agent_name):
        if version.version in bad:
            bad_hashes.add(version.spec.spec_hash())
    for version in await agents.list_versions(conn, tenant_id, agent_name):
        if (
            version.version < live.version
            and version.status == "released"
            and version.spec.spec_hash() not in bad_hashes
        ):
            return version.version
    return None


# -- evidence ------------------------------------------------------------------------


_OBSERVATION_COLUMNS = "run_id, version, success, detail, judged_score, cost_usd"


def _observation(row: dict[str, Any]) -> Observation:
    return Observation(
        run_id=row["run_id"], version=row["version"], success=row["success"],
        detail=row["detail"], judged_score=row["judged_score"], cost_usd=float(row["cost_usd"]),
    )  # fmt: skip


async def get_observation(conn: Conn, run_id: str) -> Observation | None:
    """The stored verdict of a run, if it was observed."""
    cur = await conn.execute(
        f"SELECT {_OBSERVATION_COLUMNS} FROM live_observations WHERE run_id = %s", (run_id,)
    )
    row = await cur.fetchone()
    return None if row is None else _observation(row)


async def rollout_observations(conn: Conn, rollout_id: str) -> list[Observation]:
    """The verdicts stored for a rollout's runs (live and shadow), oldest first."""
    cur = await conn.execute(
        f"SELECT {_OBSERVATION_COLUMNS} FROM live_observations WHERE rollout_id = %s"
        " ORDER BY created_at, run_id",
        (rollout_id,),
    )
    return [_observation(row) for row in await cur.fetchall()]


async def record_observation(
    conn: Conn,
    tenant_id: str,
    agent_name: str,
    observation: Observation,
    *,
    rollout_id: str | None,
    source: ObservationSource,
    latency_s: float | None,
) -> Observation:
    """Store a run's verdict once; the verdict stored first wins (a retry returns it)."""
    await conn.execute(
        "INSERT INTO live_observations (run_id, tenant_id, agent_name, version, rollout_id,"
        " source, success, judged_score, detail, cost_usd, latency_s)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
        (observation.run_id, tenant_id, agent_name, observation.version, rollout_id, source,
         observation.success, observation.judged_score, observation.detail,
         Decimal(str(round(observation.cost_usd, 6))), latency_s),
    )  # fmt: skip
    stored = await get_observation(conn, observation.run_id)
    assert stored is not None
    return stored


async def medians(
    conn: Conn, tenant_id: str, agent_name: str, version: int, *, limit: int
) -> tuple[float | None, float | None, int]:
    """(median cost, median latency, runs) over the version's latest live observations."""
    cur = await conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY cost_usd) AS cost,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s) AS latency, count(*) AS n"
        " FROM (SELECT cost_usd, latency_s FROM live_observations"
        "  WHERE tenant_id = %s AND agent_name = %s AND version = %s AND source = 'live'"
        "  ORDER BY created_at DESC LIMIT %s) recent",
        (tenant_id, agent_name, version, limit),
    )
    row = await cur.fetchone()
    assert row is not None
    cost = None if row["cost"] is None else float(row["cost"])
    latency = None if row["latency"] is None else float(row["latency"])
    return cost, latency, int(row["n"])


async def success_rate(
    conn: Conn,
    tenant_id: str,
    agent_name: str,
    version: int,
    *,
    limit: int,
    excluding: str | None = None,
) -> tuple[int, int]:
    """(successes, runs) over the version's latest live observations (but a rollout's)."""
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE success) AS ok, count(*) AS n FROM (SELECT success"
        " FROM live_observations WHERE tenant_id = %s AND agent_name = %s AND version = %s"
        " AND source = 'live' AND rollout_id IS DISTINCT FROM %s"
        " ORDER BY created_at DESC LIMIT %s) recent",
        (tenant_id, agent_name, version, excluding, limit),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["ok"]), int(row["n"])


async def record_shadow_pair(
    conn: Conn,
    tenant_id: str,
    rollout_id: str,
    live_run_id: str,
    shadow_run_id: str,
    *,
    live_success: bool | None,
    shadow_success: bool | None,
) -> None:
    """Record (or complete) a shadow run's comparison with its live run."""
    await conn.execute(
        "INSERT INTO shadow_pairs (tenant_id, rollout_id, live_run_id, shadow_run_id,"
        " live_success, shadow_success) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (rollout_id, live_run_id) DO UPDATE SET"
        " live_success = coalesce(excluded.live_success, shadow_pairs.live_success),"
        " shadow_success = coalesce(excluded.shadow_success, shadow_pairs.shadow_success)",
        (tenant_id, rollout_id, live_run_id, shadow_run_id, live_success, shadow_success),
    )


async def shadow_summary(conn: Conn, rollout_id: str) -> dict[str, int]:
    """Counts of a canary's shadow comparisons: both, only live, only shadow, neither."""
    cur = await conn.execute(
        "SELECT count(*) AS pairs,"
        " count(*) FILTER (WHERE live_success AND shadow_success) AS both_succeeded,"
        " count(*) FILTER (WHERE live_success AND NOT shadow_success) AS only_live,"
        " count(*) FILTER (WHERE NOT live_success AND shadow_success) AS only_shadow,"
        " count(*) FILTER (WHERE NOT live_success AND NOT shadow_success) AS neither"
        " FROM shadow_pairs WHERE rollout_id = %s AND shadow_success IS NOT NULL",
        (rollout_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return {key: int(value) for key, value in row.items()}


# -- the controller ------------------------------------------------------------------


async def signal_controller(
    client: Client,
    settings: Settings,
    tenant_id: str,
    agent_name: str,
    signal: str,
    arg: object | None = None,
) -> None:
    """Signal the agent's rollout controller, starting it first if it does not run."""
    await client.start_workflow(
        ROLLOUT_WORKFLOW,
        RolloutInput(tenant_id=tenant_id, agent_name=agent_name),
        id=controller_id(tenant_id, agent_name),
        task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=signal,
        start_signal_args=[] if arg is None else [arg],
        search_attributes=search_attributes.for_run(
            tenant_id, agent_name, None, kind="rollout"
        ),
    )  # fmt: skip
