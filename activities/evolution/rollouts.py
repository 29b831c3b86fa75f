"""The rollout controller's activities: live evidence, shadow runs, decisions, rollbacks.

`observe_live_run` runs on the LLM lane (it may ask the judge); the rest are Postgres
work on the store lane. Every write is keyed, so a retried activity writes once and a
retried decision changes nothing the second time.
"""

import hashlib
from datetime import timedelta
from typing import Literal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.evolution import grading
from activities.evolution.store import activate_grown_tools
from activities.providers.client import ModelClient
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.evolution import cases as eval_cases
from core.evolution import rollouts, triggers
from core.evolution import store as evolutions
from core.evolution.checks import run_checks
from core.evolution.payloads import LOW_RATING, EvolutionSettings
from core.evolution.rollout_payloads import (
    CanaryEvidence,
    CanaryState,
    ControllerSetup,
    DegradationInput,
    DegradationOutput,
    LiveRun,
    Observation,
    ObserveInput,
    RolloutDecided,
    RolloutDecisionInput,
    RolloutRef,
    RolloutSettings,
    SetupInput,
    ShadowInput,
    ShadowPairInput,
    ShadowRun,
)
from core.payloads import RunEvent
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import RunOutcome
from core.settings import Settings

MIN_RUNS_FOR_MEDIANS = 5
"""A version's cost and latency bounds apply once it has this many observed runs."""


class RolloutActivities:
    """Postgres and judge work of an agent's rollout controller."""

    def __init__(self, settings: Settings, pool: Pool, models: ModelClient | None = None) -> None:
        self._settings = settings
        self._pool = pool
        self._models = models

    @activity.defn(name="load_rollout")
    async def load_rollout(self, input: SetupInput) -> ControllerSetup:
        """The agent's policy, live version and active canary (None: no such agent)."""
        async with self._pool.connection() as conn:
            settings = await rollouts.get_policy(conn, input.tenant_id, input.agent_name)
            try:
                live = await agents.get_version(conn, input.tenant_id, input.agent_name)
            except NotFound:
                return ControllerSetup()
            canary = await rollouts.active_canary(conn, input.tenant_id, input.agent_name)
        return ControllerSetup(
            settings=settings,
            live_version=live.version,
            canary=None if canary is None else _canary_state(canary),
        )

    @activity.defn(name="canary_evidence")
    async def canary_evidence(self, input: RolloutRef) -> CanaryEvidence:
        """What a controller adopting a canary starts from.

        The stable version's success rate on live runs before the canary (smoothed; None
        when it has fewer than the policy's `baseline_runs`: the controller then takes
        the stable version's runs during the canary), and the verdicts already stored for
        the canary (a controller that restarted mid-canary counts them again, in order).
        """
        async with self._pool.connection() as conn:
            record = await rollouts.get_rollout(conn, input.tenant_id, input.rollout_id)
            ok, n = await rollouts.success_rate(
                conn, input.tenant_id, record.agent_name, record.stable_version,
                limit=record.settings.baseline_runs, excluding=record.id,
            )  # fmt: skip
            stored = await rollouts.rollout_observations(conn, record.id)
        return CanaryEvidence(
            baseline=None if n < record.settings.baseline_runs else (ok + 1) / (n + 2),
            outcomes=[o.success for o in stored if o.version == record.canary_version],
            stable_outcomes=[o.success for o in stored if o.version == record.stable_version],
            run_ids=[o.run_id for o in stored],
        )

    @activity.defn(name="observe_live_run")
    async def observe_live_run(self, input: ObserveInput) -> Observation:
        """A finished run's verdict as live evidence, stored once.

        It fails when the run did not succeed, was rated low, is judged to fail (the
        checks of an eval case with the same objective, else the rubric judge; only when
        sampled), or cost or took more than the policy's ratio times the version's median.
        """
        async with self._pool.connection() as conn:
            stored = await rollouts.get_observation(conn, input.run_id)
            if stored is not None:
                return stored
            try:
                run = await runs.get_run(conn, input.tenant_id, input.run_id)
            except NotFound:
                return Observation(run_id=input.run_id, version=0, success=False, counted=False)
            settings = (
                await rollouts.get_policy(conn, input.tenant_id, input.agent_name)
                or RolloutSettings()
            )
            cur = await conn.execute(
                "SELECT rating FROM run_feedback WHERE run_id = %s", (input.run_id,)
            )
            feedback = await cur.fetchone()
            cost_median, latency_median, n = await rollouts.medians(
                conn, input.tenant_id, input.agent_name, run.agent_version,
                limit=settings.baseline_runs,
            )  # fmt: skip
            latency = await grading.working_s(conn, run.id)
            case = None
            calls = []
            if input.judge:
                cur = await conn.execute(
                    "SELECT id FROM eval_cases WHERE tenant_id = %s AND agent_name = %s"
                    " AND objective = %s ORDER BY created_at LIMIT 1",
                    (input.tenant_id, input.agent_name, run.objective),
                )
                row = await cur.fetchone()
                if row is not None:
                    case = await eval_cases.get_case(
                        conn, input.tenant_id, input.agent_name, row["id"]
                    )
                    calls = await grading.tool_calls(conn, run.id)
            models = await _models(conn, input.tenant_id, input.agent_name)
        problems: list[str] = []
        if run.outcome != "succeeded":
            problems.append(f"the run ended {run.outcome}: {run.reason or ''}".strip())
        if feedback is not None and feedback["rating"] is not None:
            if feedback["rating"] <= LOW_RATING:
                problems.append(f"rated {feedback['rating']}/5")
        judged: float | None = None
        spent = 0.0
        if input.judge and run.outcome == "succeeded":
            if case is not None and case.spec.checks:
                checked = run_checks(case.spec.checks, run.result, calls)
                judged = checked.score
                if not checked.passed:
                    problems.append(
                        "checks of case " + case.id + ": " + "; ".join(checked.failures)
                    )
            elif self._models is not None and run.result:
                rubric = case.spec.rubric if case is not None and case.spec.rubric else None
                spender = grading.Spender(
                    self._pool, self._settings, input.tenant_id, input.agent_name
                )
                try:
                    score, passed, detail, spent = await grading.judge(
                        self._models, models, run.objective, rubric or settings.judge_rubric,
                        run.result, spender,
                    )  # fmt: skip
                except ApplicationError as exc:
                    # Over the tenant's spend cap: the run goes unjudged, not failed.
                    if exc.type != ErrorType.BUDGET_EXCEEDED:
                        raise
                else:
                    judged = score
                    if not passed:
                        problems.append(detail)
        if n >= MIN_RUNS_FOR_MEDIANS:
            ratio = settings.max_cost_ratio
            if ratio and cost_median and run.cost_usd > ratio * cost_median:
                problems.append(f"cost ${run.cost_usd:.6f}, over {ratio}x the median")
            ratio = settings.max_latency_ratio
            if ratio and latency_median and latency > ratio * latency_median:
                problems.append(f"took {latency:.2f}s, over {ratio}x the median")
        observation = Observation(
            run_id=run.id, version=run.agent_version, success=not problems,
            detail="; ".join(problems) or "ok", judged_score=judged,
            cost_usd=run.cost_usd + spent,
        )  # fmt: skip
        async with self._pool.connection() as conn:
            return await rollouts.record_observation(
                conn, input.tenant_id, input.agent_name, observation,
                rollout_id=input.rollout_id, source=input.source, latency_s=latency,
            )  # fmt: skip

    @activity.defn(name="create_shadow_run")
    async def create_shadow_run(self, input: ShadowInput) -> ShadowRun:
        """The live run's objective on the canary, in evaluation mode (no side effects)."""
        async with self._pool.connection() as conn:
            try:
                live = await runs.get_run(conn, input.tenant_id, input.live_run_id)
            except NotFound:
                return ShadowRun()
            record, inbox_id, _ = await runs.create_run(
                conn, tenant_id=input.tenant_id, agent_name=input.agent_name,
                agent_version=input.canary_version, objective=live.objective,
                mode="evaluation", idempotency_key=f"shadow:{input.rollout_id}:{live.id}",
                workflow_id=input.workflow_id, rollout_id=input.rollout_id,
            )  # fmt: skip
        return ShadowRun(run_id=record.id, inbox_id=inbox_id)

    @activity.defn(name="record_shadow_pair")
    async def record_shadow_pair(self, input: ShadowPairInput) -> None:
        """Record the shadow run's verdict beside its live run's."""
        async with self._pool.connection() as conn:
            live = await rollouts.get_observation(conn, input.live_run_id)
            await rollouts.record_shadow_pair(
                conn, input.tenant_id, input.rollout_id, input.live_run_id, input.shadow_run_id,
                live_success=None if live is None else live.success,
                shadow_success=input.shadow_success,
            )  # fmt: skip

    @activity.defn(name="decide_rollout")
    async def decide_rollout(self, input: RolloutDecisionInput) -> RolloutDecided:
        """Promote the canary (release it) or roll it back, once, with its evidence.

        A canary whose stable version is no longer the live one (someone released another
        version meanwhile) is cancelled instead: releasing it would undo their release.
        """
        async with self._pool.connection() as conn, conn.transaction():
            record = await rollouts.get_rollout(conn, input.tenant_id, input.rollout_id)
            status: Literal["promoted", "rolled_back", "cancelled"] = (
                "promoted" if input.decision == "promote" else "rolled_back"
            )
            reason = input.reason
            live_now = await agents.get_version(conn, input.tenant_id, record.agent_name)
            if live_now.version != record.stable_version:
                status = "cancelled"
                reason = (
                    f"v{live_now.version} became the live version during the canary "
                    f"(the test said: {input.reason})"
                )
            evidence = {
                **input.evidence,
                **{
                    f"shadow_{k}": v
                    for k, v in (await rollouts.shadow_summary(conn, record.id)).items()
                },
            }
            applied = await rollouts.decide(conn, record.id, status, reason, evidence)
            live = live_now.version
            if applied and status == "promoted":
                await agents.release(
                    conn, input.tenant_id, record.agent_name, record.canary_version
                )
                if record.evolution_id is not None:
                    await activate_grown_tools(
                        conn, input.tenant_id, record.evolution_id, record.agent_name,
                        record.canary_version,
                    )  # fmt: skip
                live = record.canary_version
            if applied and record.evolution_id is not None:
                await evolutions.append_events(
                    conn, input.tenant_id, record.evolution_id,
                    [RunEvent(key=f"rollout-{status}", type=f"rollout.{status}", data={
                        "rollout_id": record.id, "version": record.canary_version,
                        "reason": reason, "evidence": evidence,
                    })],
                )  # fmt: skip
        return RolloutDecided(applied=applied, live_version=live if applied else None)

    @activity.defn(name="roll_back_degraded")
    async def roll_back_degraded(self, input: DegradationInput) -> DegradationOutput:
        """Roll a degraded live version back to the last good one; start a diagnostic cycle.

        Runs in flight keep the version they were pinned to. With no good version to go
        back to, only the diagnostic cycle starts.
        """
        rollout_id = "rol_" + hashlib.sha256(input.key.encode()).hexdigest()[:24]
        async with self._pool.connection() as conn, conn.transaction():
            settings = (
                await rollouts.get_policy(conn, input.tenant_id, input.agent_name)
                or RolloutSettings()
            )
            live = await agents.get_version(conn, input.tenant_id, input.agent_name)
            try:
                done = await rollouts.get_rollout(conn, input.tenant_id, rollout_id)
            except NotFound:
                done = None
            rolled_back = False
            if done is None and live.version == input.version:
                target = await rollouts.last_good_version(
                    conn, input.tenant_id, input.agent_name, live
                )
                if target is not None:
                    canary = await rollouts.active_canary(conn, input.tenant_id, input.agent_name)
                    if canary is not None:
                        await rollouts.decide(
                            conn, canary.id, "cancelled",
                            f"its stable version v{input.version} degraded and was rolled back",
                            {},
                        )  # fmt: skip
                    live = await agents.rollback(
                        conn, input.tenant_id, input.agent_name, target,
                        cause="auto_rollback",
                        rationale=f"automatic rollback of v{input.version}: {input.reason}",
                    )  # fmt: skip
                    rolled_back = True
                done = await rollouts.record_degradation(
                    conn, input.tenant_id, input.agent_name, rollout_id=rollout_id,
                    degraded=input.version, restored=target or input.version,
                    reason=input.reason if target is not None
                    else f"{input.reason}; no earlier good version to roll back to",
                    evidence={**input.evidence, "failed_runs": input.failed_runs},
                    settings=settings,
                )  # fmt: skip
            elif done is not None:
                rolled_back = done.stable_version != done.canary_version
            cycle = None
            if done is not None and input.diagnose and settings.diagnose:
                cycle = await _diagnostic_cycle(conn, input, done, live.version)
        if cycle is not None:
            await triggers.start(activity.client(), self._settings, cycle)
        return DegradationOutput(
            live_version=live.version, rolled_back=rolled_back,
            rollout_id=None if done is None else done.id,
            evolution_id=None if cycle is None else cycle.evolution_id,
        )  # fmt: skip


def _canary_state(record: rollouts.RolloutRecord) -> CanaryState:
    return CanaryState(
        rollout_id=record.id,
        stable=record.stable_version,
        canary=record.canary_version,
        deadline=record.started_at + timedelta(seconds=record.settings.max_canary_s),
        settings=record.settings,
    )


async def _models(conn: runs.Conn, tenant_id: str, agent_name: str) -> list[str]:
    live = await agents.get_version(conn, tenant_id, agent_name)
    policy = await evolutions.get_policy(conn, tenant_id, agent_name)
    if policy is not None and policy.settings.judge_model is not None:
        return [policy.settings.judge_model]
    return [live.spec.model, *live.spec.fallback_models]


async def _diagnostic_cycle(
    conn: runs.Conn, input: DegradationInput, done: rollouts.RolloutRecord, live_version: int
) -> triggers.TriggeredCycle:
    """The evolution cycle a degradation starts (created once per degradation)."""
    policy = await evolutions.get_policy(conn, input.tenant_id, input.agent_name)
    workflow_id = f"evolution-degradation-{done.id}"
    record = await evolutions.create_evolution(
        conn, tenant_id=input.tenant_id, agent_name=input.agent_name,
        incumbent_version=live_version,
        settings=policy.settings if policy else EvolutionSettings(),
        trigger="degradation", workflow_id=workflow_id,
    )  # fmt: skip
    if not record.evidence:
        await evolutions.set_state(
            conn, record.id,
            evidence={"degraded_version": input.version, "degraded_runs": input.failed_runs,
                      "rollout_id": done.id, "reason": input.reason},
        )  # fmt: skip
    await rollouts.set_diagnostic(conn, done.id, record.id)
    return triggers.TriggeredCycle(
        input.tenant_id, input.agent_name, record.id, record.workflow_id, "degradation",
        live_version,
    )  # fmt: skip


class LiveEvidenceHook:
    """A `RunFinishedHook`: a live run of an agent with a rollout policy is evidence.

    It signals the agent's rollout controller (starting it if needed). A failed signal
    raises, so `finish_run` retries (its writes are idempotent) and no evidence is lost;
    the controller ignores a run it has already seen.
    """

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool

    async def __call__(self, tenant_id: str, run_id: str, outcome: RunOutcome) -> None:
        """Signal the controller when the run is a normal run of a watched agent."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT r.agent_name, r.agent_version, r.rollout_id FROM runs r"
                " JOIN rollout_policies p ON p.tenant_id = r.tenant_id"
                " AND p.agent_name = r.agent_name"
                " WHERE r.tenant_id = %s AND r.id = %s AND r.mode = 'normal'",
                (tenant_id, run_id),
            )
            row = await cur.fetchone()
        if row is None:
            return
        await rollouts.signal_controller(
            activity.client(), self._settings, tenant_id, row["agent_name"], "run_finished",
            LiveRun(run_id=run_id, version=row["agent_version"], rollout_id=row["rollout_id"]),
        )  # fmt: skip
