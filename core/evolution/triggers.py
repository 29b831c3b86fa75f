"""Triggers: a cycle that starts by itself on repeated failure or enough new feedback.

An agent whose evolution policy sets `triggers.failures` (N failed, limit-reached or
low-rated runs within `window_hours`) or `triggers.feedback` (M feedback items since its
last cycle started, or since the policy was set) gets a cycle when a check finds the
threshold met, no cycle of the agent unfinished, and `cooldown_hours` passed since its
last cycle started. Checks run after a run fails (the `finish_run` activity, through a
hook the worker registry installs) and after feedback is recorded (the API).

`claim` does the check in one transaction that locks the policy row, so concurrent
checks start one cycle at most; the claim creates the cycle's row (queued, with the id of
its workflow), and `start` starts the workflow under that id. A start that failed (a
crash, Temporal away) leaves the row queued: the next check starts it again, and a
workflow already started is no error, so every step may repeat.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core import metrics, search_attributes
from core.db import Pool
from core.errors import NotFound
from core.evolution import store
from core.evolution.payloads import (
    FAILING_OUTCOMES,
    LOW_RATING,
    WORKFLOW_NAME,
    EvolutionInput,
    EvolutionSettings,
    EvolutionTriggers,
    Trigger,
)
from core.evolution.schedules import agent_key
from core.queues import TaskQueue
from core.runs import agents
from core.settings import Settings

log = logging.getLogger("colony.evolution.triggers")

STALE_QUEUED: Final = timedelta(hours=1)
"""A cycle still queued after this long never started (its workflow failed to start, or
ended before its first activity): it no longer blocks triggers, nor is started again."""


@dataclass(frozen=True)
class TriggeredCycle:
    """A cycle a trigger claimed: its row exists; its workflow may not have started yet."""

    tenant_id: str
    agent_name: str
    evolution_id: str
    workflow_id: str
    trigger: Trigger
    incumbent_version: int


async def agent_with_failure_trigger(conn: store.Conn, tenant_id: str, run_id: str) -> str | None:
    """The agent of a normal-mode run when its policy has a failure trigger (one query)."""
    cur = await conn.execute(
        "SELECT r.agent_name FROM runs r JOIN evolution_policies p"
        " ON p.tenant_id = r.tenant_id AND p.agent_name = r.agent_name"
        " WHERE r.tenant_id = %s AND r.id = %s AND r.mode = 'normal'"
        " AND p.triggers ->> 'failures' IS NOT NULL",
        (tenant_id, run_id),
    )
    row = await cur.fetchone()
    return None if row is None else str(row["agent_name"])


async def claim(conn: store.Conn, tenant_id: str, agent_name: str) -> TriggeredCycle | None:
    """The cycle to start for the agent now, if a trigger fires (or one waits to start).

    Runs in its own transaction; see the module docstring.
    """
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT settings, triggers, last_triggered_at, created_at, now() AS now"
            " FROM evolution_policies WHERE tenant_id = %s AND agent_name = %s FOR UPDATE",
            (tenant_id, agent_name),
        )
        policy = await cur.fetchone()
        if policy is None:
            return None
        triggers = EvolutionTriggers.model_validate(policy["triggers"])
        if triggers.failures is None and triggers.feedback is None:
            return None
        now: datetime = policy["now"]
        cur = await conn.execute(
            "SELECT id, workflow_id, trigger, incumbent_version, status, created_at,"
            " finished_at FROM evolutions WHERE tenant_id = %s AND agent_name = %s"
            " ORDER BY created_at DESC LIMIT 20",
            (tenant_id, agent_name),
        )
        recent = await cur.fetchall()
        for row in recent:
            if row["finished_at"] is not None:
                continue
            if row["status"] != "queued":
                return None  # a cycle of the agent runs
            if now - row["created_at"] >= STALE_QUEUED:
                continue  # its start failed for good
            if row["trigger"] in ("failures", "feedback"):
                return _cycle(tenant_id, agent_name, row)  # claimed before; start it again
            return None  # just started by hand
        last_start = max(
            (t for t in (recent[0]["created_at"] if recent else None, policy["last_triggered_at"])
             if t is not None),
            default=None,
        )  # fmt: skip
        if last_start is not None and now - last_start < timedelta(hours=triggers.cooldown_hours):
            return None
        trigger = await _fired(
            conn, tenant_id, agent_name, triggers, now, last_start, policy["created_at"]
        )
        if trigger is None:
            return None
        try:
            live = await agents.get_version(conn, tenant_id, agent_name)
        except NotFound:
            return None
        await conn.execute(
            "UPDATE evolution_policies SET last_triggered_at = %s"
            " WHERE tenant_id = %s AND agent_name = %s",
            (now, tenant_id, agent_name),
        )
        record = await store.create_evolution(
            conn, tenant_id=tenant_id, agent_name=agent_name, incumbent_version=live.version,
            settings=EvolutionSettings.model_validate(policy["settings"]),
            trigger=trigger, workflow_id=trigger_workflow_id(tenant_id, agent_name, now),
        )  # fmt: skip
    log.info("evolution trigger %r fired for %s/%s: %s", trigger, tenant_id, agent_name, record.id)
    return TriggeredCycle(
        tenant_id, agent_name, record.id, record.workflow_id, trigger, record.incumbent_version
    )


def trigger_workflow_id(tenant_id: str, agent_name: str, at: datetime) -> str:
    """`evolution-trigger-{tenant}-{agent}-{time of the claim}`: one per claim, never reused."""
    return f"evolution-trigger-{agent_key(tenant_id, agent_name)}-{at:%Y%m%dT%H%M%S%fZ}"


async def _fired(
    conn: store.Conn,
    tenant_id: str,
    agent_name: str,
    triggers: EvolutionTriggers,
    now: datetime,
    last_start: datetime | None,
    policy_set: datetime,
) -> Trigger | None:
    """Which trigger's threshold the agent's evidence meets: failures first."""
    window = now - timedelta(hours=triggers.window_hours)
    failures_since = max(window, last_start) if last_start is not None else window
    feedback_since = last_start or policy_set
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE (r.outcome = ANY(%(failing)s)"
        "   AND r.finished_at > %(failures)s) OR (f.rating <= %(low)s"
        "   AND f.updated_at > %(failures)s)) AS failures,"
        " count(f.run_id) FILTER (WHERE f.created_at > %(feedback)s) AS feedback"
        " FROM runs r LEFT JOIN run_feedback f ON f.run_id = r.id"
        " WHERE r.tenant_id = %(tenant)s AND r.agent_name = %(agent)s AND r.mode = 'normal'"
        " AND (r.finished_at > %(oldest)s OR f.updated_at > %(oldest)s)",
        {"tenant": tenant_id, "agent": agent_name, "low": LOW_RATING,
         "failing": list(FAILING_OUTCOMES),
         "failures": failures_since, "feedback": feedback_since,
         "oldest": min(failures_since, feedback_since)},
    )  # fmt: skip
    counts = await cur.fetchone()
    assert counts is not None
    if triggers.failures is not None and counts["failures"] >= triggers.failures:
        return "failures"
    if triggers.feedback is not None and counts["feedback"] >= triggers.feedback:
        return "feedback"
    return None


def _cycle(tenant_id: str, agent_name: str, row: dict[str, Any]) -> TriggeredCycle:
    return TriggeredCycle(
        tenant_id, agent_name, row["id"], row["workflow_id"], row["trigger"],
        row["incumbent_version"],
    )  # fmt: skip


async def start(client: Client, settings: Settings, cycle: TriggeredCycle) -> None:
    """Start the claimed cycle's workflow on the orchestration lane, once.

    A workflow of that id that already exists, or existed, is left as it is.
    """
    try:
        await client.start_workflow(
            WORKFLOW_NAME,
            EvolutionInput(
                tenant_id=cycle.tenant_id, evolution_id=cycle.evolution_id,
                agent_name=cycle.agent_name, trigger=cycle.trigger,
            ),
            id=cycle.workflow_id,
            task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=search_attributes.for_run(
                cycle.tenant_id, cycle.agent_name, cycle.incumbent_version, kind="evolution"
            ),
        )  # fmt: skip
        metrics.WORKFLOWS_STARTED.labels(kind="evolution").inc()
    except WorkflowAlreadyStartedError:
        pass


ClientSource = Callable[[], Awaitable[Client]]
"""How a check gets its Temporal client: only when it has a cycle to start."""


async def check_and_start(
    pool: Pool, client: ClientSource, settings: Settings, tenant_id: str, agent_name: str
) -> TriggeredCycle | None:
    """Claim a cycle for the agent if a trigger fires, and start it; the started cycle."""
    async with pool.connection() as conn:
        cycle = await claim(conn, tenant_id, agent_name)
    if cycle is not None:
        await start(await client(), settings, cycle)
    return cycle


async def check_quietly(
    pool: Pool, client: ClientSource, settings: Settings, tenant_id: str, agent_name: str
) -> TriggeredCycle | None:
    """`check_and_start`, with any error logged: a trigger never fails what called it.

    A claimed cycle whose start failed stays queued, and the next check starts it.
    """
    try:
        return await check_and_start(pool, client, settings, tenant_id, agent_name)
    except Exception:
        log.warning("evolution trigger check for %s/%s failed", tenant_id, agent_name,
                    exc_info=True)  # fmt: skip
        return None


async def check_after_run(
    pool: Pool, client: ClientSource, settings: Settings, tenant_id: str, run_id: str, outcome: str
) -> TriggeredCycle | None:
    """After a run ended: check its agent's failure trigger, quietly.

    A run that did not fail costs nothing; a failed one, one query when its agent has no
    failure trigger.
    """
    if outcome not in FAILING_OUTCOMES:
        return None
    try:
        async with pool.connection() as conn:
            agent = await agent_with_failure_trigger(conn, tenant_id, run_id)
    except Exception:
        log.warning("evolution trigger lookup for run %s failed", run_id, exc_info=True)
        return None
    if agent is None:
        return None
    return await check_quietly(pool, client, settings, tenant_id, agent)
