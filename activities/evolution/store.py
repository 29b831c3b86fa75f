"""Evolution bookkeeping on the store lane.

Start a cycle, create its evaluation runs, run the promotion gate over the stored
results, and finish (releasing a winner).
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, replace
from typing import Final

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import metrics
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.evolution import cases as eval_cases
from core.evolution import rollouts
from core.evolution import store as evolutions
from core.evolution.gate import CaseScores, GateDecision, RunCosts, decide
from core.evolution.payloads import (
    FAILING_OUTCOMES,
    LOW_RATING,
    ApprovalWaitInput,
    CaseRef,
    DecideInput,
    DecideOutput,
    EvalRunInput,
    EvalRunOutput,
    EvolutionInput,
    EvolutionSettings,
    EvolutionSetup,
    FinishEvolutionInput,
    PendingInput,
    PendingOutput,
)
from core.evolution.rollout_payloads import CanaryRef
from core.evolution.store import ResultRecord
from core.payloads import RunEvent
from core.runs import agents
from core.runs import store as runs
from core.settings import Settings
from core.tools import store as tool_store


class EvolutionStoreActivities:
    """Postgres work of an evolution cycle (the memory lane, like run bookkeeping)."""

    def __init__(self, pool: Pool, settings: Settings | None = None) -> None:
        """`settings` (its task queue suffix) lets a promotion signal the rollout controller."""
        self._pool = pool
        self._settings = settings

    @activity.defn(name="start_evolution")
    async def start_evolution(self, input: EvolutionInput) -> EvolutionSetup:
        """Mark the cycle running; load its settings, incumbent and cases; record evidence."""
        async with self._pool.connection() as conn, conn.transaction():
            if input.evolution_id is not None:
                record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            else:
                record = await _scheduled(conn, input, activity.info().workflow_id)
            cases = await eval_cases.list_cases(conn, input.tenant_id, record.agent_name)
            counts = {split: sum(c.split == split for c in cases) for split in eval_cases.SPLITS}
            evidence = {
                **record.evidence,  # what started it (a degradation's runs), if anything
                "cases": counts,
                "guards": sum(c.spec.guard for c in cases),
                **await _run_evidence(conn, input.tenant_id, record.agent_name),
            }
            await evolutions.set_state(
                conn, record.id, status="running", phase="starting", evidence=evidence
            )
            await evolutions.append_events(
                conn, input.tenant_id, record.id,
                [RunEvent(key="started", type="evolution.started", data={
                    "agent": record.agent_name, "incumbent_version": record.incumbent_version,
                    "evidence": evidence,
                })],
            )  # fmt: skip
        return EvolutionSetup(
            evolution_id=record.id,
            agent_name=record.agent_name,
            incumbent_version=record.incumbent_version,
            settings=record.settings,
            cases=[CaseRef(id=c.id, split=c.split) for c in cases],
        )

    @activity.defn(name="pending_evaluations")
    async def pending_evaluations(self, input: PendingInput) -> PendingOutput:
        """The evaluations of `versions` x `cases` that have no result yet."""
        async with self._pool.connection() as conn:
            done = {
                (r.version, r.case_id)
                for r in await evolutions.list_results(conn, input.evolution_id)
            }
        return PendingOutput(
            pending=[
                (version, case)
                for case in input.cases
                for version in input.versions
                if (version, case.id) not in done
            ]
        )

    @activity.defn(name="create_eval_run")
    async def create_eval_run(self, input: EvalRunInput) -> EvalRunOutput:
        """The run that evaluates a version on a case: evaluation mode, one per cycle."""
        async with self._pool.connection() as conn:
            case = await eval_cases.get_case(conn, input.tenant_id, input.agent_name, input.case_id)
            record, inbox_id, _ = await runs.create_run(
                conn,
                tenant_id=input.tenant_id,
                agent_name=input.agent_name,
                agent_version=input.version,
                objective=case.spec.objective,
                mode="evaluation",
                idempotency_key=f"evolution:{input.evolution_id}:{input.version}:{input.case_id}",
                evaluation=runs.EvaluationAttempt(
                    evolution_id=input.evolution_id,
                    workflow_id=input.workflow_id,
                    max_cost_usd=input.max_cost_usd,
                ),
            )
        return EvalRunOutput(run_id=record.id, inbox_id=inbox_id)

    @activity.defn(name="decide_evolution")
    async def decide_evolution(self, input: DecideInput) -> DecideOutput:
        """Run the gate for each candidate; the best one that passes wins.

        "Best" is the highest validation mean, then the lower version. Every candidate's
        summary and the gate's statistics are stored with the cycle.
        """
        async with self._pool.connection() as conn, conn.transaction():
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            results = await evolutions.list_results(conn, input.evolution_id)
            guards = {
                c.id
                for c in await eval_cases.list_cases(conn, input.tenant_id, record.agent_name)
                if c.spec.guard
            }
            by_version: dict[int, dict[str, ResultRecord]] = defaultdict(dict)
            for result in results:
                if result.split != "train":
                    by_version[result.version][result.case_id] = result
            incumbent = by_version.get(record.incumbent_version, {})
            pairs = await evolutions.list_pairs(conn, input.evolution_id)
            decisions: dict[int, GateDecision] = {}
            for version in input.candidates:
                scores = _paired(incumbent, by_version.get(version, {}), guards)
                scores = [_with_pair(s, pairs.get((version, s.case_id))) for s in scores]
                decisions[version] = decide(
                    scores,
                    record.settings.gate,
                    _costs(incumbent.values()),
                    _costs(by_version.get(version, {}).values()),
                )
                summary = _summary(decisions[version])
                await evolutions.set_candidate_score(
                    conn, input.evolution_id, version, summary,
                    sum(r.cost_usd for r in by_version.get(version, {}).values()),
                )  # fmt: skip
            passing = [v for v, d in decisions.items() if d.promote]
            best = max(
                passing or list(decisions),
                key=lambda v: (decisions[v].validation.candidate_mean, -v),
                default=None,
            )
            gate = {
                "policy": record.settings.gate.model_dump(mode="json"),
                "candidates": {str(v): _summary(d) for v, d in decisions.items()},
                "best": best,
            }
            await evolutions.set_gate(conn, input.evolution_id, gate)
            if best is None:
                reasons = ["no candidate was evaluated"]
            else:
                reasons = [f"v{best}: {r}" for r in decisions[best].reasons]
            out = DecideOutput(
                decision="promote" if best in passing else "keep", version=best, reasons=reasons
            )
            await evolutions.append_events(
                conn, input.tenant_id, input.evolution_id,
                [RunEvent(key="decided", type="evolution.decided", data=out.model_dump(mode="json"))],
            )  # fmt: skip
        return out

    @activity.defn(name="await_promotion_approval")
    async def await_promotion_approval(self, input: ApprovalWaitInput) -> None:
        """Mark the cycle waiting for a human on a promotion, or running again."""
        async with self._pool.connection() as conn, conn.transaction():
            await evolutions.set_state(
                conn, input.evolution_id, status="waiting" if input.waiting else "running"
            )
            if input.waiting:
                event = RunEvent(key=f"approval-requested-{input.version}",
                                 type="evolution.waiting_for_approval",
                                 data={"version": input.version,
                                       "timeout_s": input.timeout_s})  # fmt: skip
            else:
                event = RunEvent(key=f"approval-resolved-{input.version}",
                                 type="evolution.approval_resolved",
                                 data={"version": input.version, "outcome": input.outcome})  # fmt: skip
            await evolutions.append_events(conn, input.tenant_id, input.evolution_id, [event])

    @activity.defn(name="finish_evolution")
    async def finish_evolution(self, input: FinishEvolutionInput) -> None:
        """Release the winner (when promoting) and record the end of the cycle.

        When the agent's rollout policy asks for a canary (a canary or shadow share), the
        winner is not released: it starts as a canary, and the agent's rollout controller
        promotes or rolls it back on live evidence.
        """
        canary = None
        async with self._pool.connection() as conn, conn.transaction():
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            promoted = None
            if input.decision == "promote" and input.version is not None:
                policy = await rollouts.get_policy(conn, input.tenant_id, record.agent_name)
                if policy is not None and (policy.canary_share > 0 or policy.shadow_share > 0):
                    live = await agents.get_version(conn, input.tenant_id, record.agent_name)
                    canary = await rollouts.start_canary(
                        conn, input.tenant_id, record.agent_name, stable=live.version,
                        canary=input.version, evolution_id=record.id, settings=policy,
                    )  # fmt: skip
                else:
                    await agents.release(conn, input.tenant_id, record.agent_name, input.version)
                    await activate_grown_tools(
                        conn, record.tenant_id, record.id, record.agent_name, input.version
                    )
                promoted = input.version
            finished = await evolutions.finish(
                conn, input.evolution_id, status=input.status, decision=input.decision,
                promoted_version=promoted, reasons=input.reasons, gate=None,
                cost_usd=input.cost_usd,
            )  # fmt: skip
            await evolutions.append_events(
                conn, input.tenant_id, input.evolution_id,
                [RunEvent(key="finished", type="evolution.finished", data={
                    "status": input.status, "decision": input.decision,
                    "version": promoted, "reasons": input.reasons,
                    "cost_usd": input.cost_usd,
                    "canary": None if canary is None else canary.id,
                })],
            )  # fmt: skip
        metrics.evolution_finished(input.tenant_id, input.status, input.decision, recorded=finished)
        if canary is not None and canary.status == "active" and self._settings is not None:
            await rollouts.signal_controller(
                activity.client(), self._settings, input.tenant_id, record.agent_name,
                "canary_started", CanaryRef(rollout_id=canary.id),
            )  # fmt: skip


async def activate_grown_tools(
    conn: evolutions.Conn, tenant_id: str, evolution_id: str, agent_name: str, version: int
) -> None:
    """A released candidate's generated tools become active (idempotent: once only).

    Called where a candidate is released: a cycle's promotion, or its canary's.
    """
    names = await tool_store.activate_drafts(conn, tenant_id, agent_name, version)
    if names:
        await evolutions.append_events(
            conn, tenant_id, evolution_id,
            [RunEvent(key=f"tools-activated-{version}", type="tools.activated",
                      data={"version": version, "tools": names})],
        )  # fmt: skip


async def _scheduled(
    conn: evolutions.Conn, input: EvolutionInput, workflow_id: str | None
) -> evolutions.EvolutionRecord:
    """The row of a cycle a schedule or trigger started (created on its first start)."""
    if input.agent_name is None or workflow_id is None:
        raise ApplicationError(
            "an evolution cycle needs an evolution id or an agent name",
            type=ErrorType.INVALID_REQUEST.value,
            non_retryable=True,
        )
    try:
        live = await agents.get_version(conn, input.tenant_id, input.agent_name)
    except NotFound as exc:
        raise ApplicationError(
            str(exc), type=ErrorType.INVALID_REQUEST.value, non_retryable=True
        ) from None
    policy = await evolutions.get_policy(conn, input.tenant_id, input.agent_name)
    return await evolutions.create_evolution(
        conn, tenant_id=input.tenant_id, agent_name=input.agent_name,
        incumbent_version=live.version,
        settings=policy.settings if policy else EvolutionSettings(),
        trigger=input.trigger, workflow_id=workflow_id,
    )  # fmt: skip


async def _run_evidence(conn: evolutions.Conn, tenant_id: str, agent_name: str) -> dict[str, int]:
    """Counts of the agent's live evidence: runs, failures, feedback and low ratings."""
    cur = await conn.execute(
        "SELECT count(*) AS runs,"
        " count(*) FILTER (WHERE r.outcome = ANY(%s)) AS failed,"
        " count(f.run_id) AS feedback, count(f.run_id) FILTER (WHERE f.rating <= %s) AS low_rated"
        " FROM runs r LEFT JOIN run_feedback f ON f.run_id = r.id"
        " WHERE r.tenant_id = %s AND r.agent_name = %s AND r.mode = 'normal'",
        (list(FAILING_OUTCOMES), LOW_RATING, tenant_id, agent_name),
    )
    row = await cur.fetchone()
    assert row is not None
    return {key: int(value) for key, value in row.items()}


def _paired(
    incumbent: dict[str, ResultRecord], candidate: dict[str, ResultRecord], guards: set[str]
) -> list[CaseScores]:
    """One pair per case the incumbent or the candidate was evaluated on."""
    pairs = []
    for case_id in sorted(incumbent.keys() | candidate.keys()):
        mine, theirs = candidate.get(case_id), incumbent.get(case_id)
        split = (mine or theirs).split  # type: ignore[union-attr]  # one of them exists
        pairs.append(
            CaseScores(
                case_id=case_id,
                split=split,
                incumbent=theirs.score if theirs else None,
                candidate=mine.score if mine else None,
                guard=case_id in guards,
            )
        )
    return pairs


_PAIR_SCORES: Final = {"candidate": (0.0, 1.0), "incumbent": (1.0, 0.0), "tie": (0.5, 0.5)}


def _with_pair(scores: CaseScores, preferred: str | None) -> CaseScores:
    """A rubric case the judge compared side by side is scored by that comparison."""
    if preferred is None:
        return scores
    incumbent, candidate = _PAIR_SCORES[preferred]
    return replace(scores, incumbent=incumbent, candidate=candidate)


def _costs(results: Iterable[ResultRecord]) -> RunCosts | None:
    rows = list(results)
    if not rows:
        return None
    latencies = [r.latency_s for r in rows if r.latency_s is not None]
    return RunCosts(
        cost_usd=sum(r.cost_usd for r in rows) / len(rows),
        latency_s=sum(latencies) / len(latencies) if latencies else 0.0,
    )


def _summary(decision: GateDecision) -> dict[str, object]:
    return {
        "promote": decision.promote,
        "reasons": list(decision.reasons),
        "validation": asdict(decision.validation),
        "holdout": asdict(decision.holdout),
        "p_value": decision.p_value,
        "lower_bound": decision.lower_bound,
        "guard_regressions": list(decision.guard_regressions),
    }
