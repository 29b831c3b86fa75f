"""RolloutWorkflow: an agent's canary and its live version's watch, decided on live evidence."""

import asyncio
import hashlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import ChildWorkflowError

from core.evolution.rollout_payloads import (
    ROLLOUT_WORKFLOW,
    CanaryEvidence,
    CanaryRef,
    CanaryState,
    ControllerSetup,
    ControllerState,
    DegradationInput,
    DegradationOutput,
    LiveRun,
    Observation,
    ObserveInput,
    RolloutDecided,
    RolloutDecisionInput,
    RolloutInput,
    RolloutRef,
    RolloutSettings,
    RolloutView,
    SetupInput,
    ShadowInput,
    ShadowPairInput,
    ShadowRun,
    WatchState,
)
from core.evolution.sequential import canary_test, drop_test
from core.runs.payloads import AgentRunInput

with workflow.unsafe.imports_passed_through():
    from activities.evolution.rollouts import RolloutActivities
    from workflows._options import LLM_CALL, RUN_STORE
    from workflows.agent_run import run_child

SEEN_RUNS = 2000
"""Run ids remembered to ignore a run's end signalled twice."""
OBSERVATIONS_PER_HISTORY = 500
"""Runs one workflow run observes before it continues as new (keeps the history small)."""
BATCH = 16
"""Finished runs observed at once."""
FAILED_RUNS_KEPT = 50
"""A degradation's evidence: the most recent failed runs since the watch's last reset."""
SHADOW_TIMEOUT = timedelta(hours=1)


@workflow.defn(name=ROLLOUT_WORKFLOW, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class RolloutWorkflow:
    """One per agent with a rollout policy: decides canaries and rolls back degradations.

    It wakes on signals, never polls:

    - `run_finished(LiveRun)`: a live run ended (the run's finish sends it). The run is
      scored once (`observe_live_run`: outcome, rating, cost and latency against the
      version's median, and for a sampled share the checks of a matching eval case or
      the rubric judge) and counted as evidence for its version.
    - `canary_started(CanaryRef)` and `policy_changed()`: reload the policy and canary.

    **Canary.** The canary's verdicts go into Wald's SPRT (core/evolution/sequential.py)
    against the stable version's success rate: its history before the canary, else its
    runs during it. "As good" promotes the canary (it is released); "worse" rolls it
    back. A timer at the canary's maximum duration decides by the policy's rule. A
    share of the stable version's runs is re-run on the canary in evaluation mode
    (shadow runs, as child workflows; side effects are denied there) and counts as the
    canary's evidence too; each pair is recorded.

    **Watch.** The live version's first `baseline_runs` verdicts set its baseline, then
    a sequential drop test watches it. A sustained drop rolls back to the last good
    version (`roll_back_degraded`) and starts a diagnostic evolution cycle with the
    failed runs; runs in flight keep their pinned version. "Healthy" starts the test over.

    Every decision is an activity keyed by the rollout (or the controller's decision
    count), so a crash never decides twice; evidence is in the history, so none is lost.
    After `OBSERVATIONS_PER_HISTORY` runs it continues as new with its state. It ends
    when the agent has no policy and no canary left.

    Queries:
        view() -> RolloutView: policy, canary, watch, the test statistic.
    """

    def __init__(self) -> None:
        self._queue: list[LiveRun] = []
        self._shadowed: list[Observation] = []
        self._reload = True
        self._in_flight = 0
        self._settings: RolloutSettings | None = None
        self._state = ControllerState()
        self._statistic: dict[str, float | int | str | None] = {}
        self._observed_here = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @workflow.signal
    def run_finished(self, run: LiveRun) -> None:
        """A live run of the agent ended."""
        self._queue.append(run)

    @workflow.signal
    def canary_started(self, ref: CanaryRef) -> None:
        """A canary of the agent started."""
        del ref
        self._reload = True

    @workflow.signal
    def policy_changed(self) -> None:
        """The agent's rollout policy changed or was removed."""
        self._reload = True

    @workflow.query
    def view(self) -> RolloutView:
        """The controller's live state."""
        return RolloutView(
            settings=self._settings,
            canary=self._state.canary,
            watch=self._state.watch,
            statistic=self._statistic,
            observed=self._state.observed,
            decisions=self._state.decisions,
        )

    @workflow.run
    async def run(self, input: RolloutInput) -> None:
        """Observe and decide until the agent has no policy and no canary."""
        self._input = input
        if input.state is not None:
            self._state = input.state.model_copy(update={"pending": []})
            self._queue = [*input.state.pending, *self._queue]
        while True:
            if self._reload:
                self._reload = False
                if not await self._load():
                    return
            while self._shadowed:
                await self._count(self._shadowed.pop(0), shadow=True)
            if self._queue:
                batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                await self._observe(batch)
            canary = self._state.canary
            if canary is not None and workflow.now() >= canary.deadline:
                await self._at_limit(canary)
            if self._observed_here >= OBSERVATIONS_PER_HISTORY or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await self._hand_over()
            if not (self._queue or self._shadowed or self._reload):
                await self._wait()

    async def _wait(self) -> None:
        """Until a signal, a finished shadow run, or the canary's deadline."""
        canary = self._state.canary
        timeout = None
        if canary is not None:
            timeout = max((canary.deadline - workflow.now()).total_seconds(), 0.001)
        try:
            await workflow.wait_condition(
                lambda: bool(self._queue or self._shadowed or self._reload), timeout=timeout
            )
        except TimeoutError:
            pass

    async def _load(self) -> bool:
        """Reload policy, live version and canary; False when there is nothing to do."""
        setup: ControllerSetup = await workflow.execute_activity_method(
            RolloutActivities.load_rollout,
            SetupInput(tenant_id=self._input.tenant_id, agent_name=self._input.agent_name),
            **RUN_STORE.kwargs(),
        )
        self._settings = setup.settings
        state = self._state
        canary = state.canary
        if setup.canary is None:
            canary = None
        elif canary is None or canary.rollout_id != setup.canary.rollout_id:
            found: CanaryEvidence = await workflow.execute_activity_method(
                RolloutActivities.canary_evidence,
                RolloutRef(tenant_id=self._input.tenant_id, rollout_id=setup.canary.rollout_id),
                **RUN_STORE.kwargs(),
            )
            canary = setup.canary.model_copy(
                update={"baseline": found.baseline, "outcomes": found.outcomes,
                        "stable_outcomes": found.stable_outcomes}
            )  # fmt: skip
            state = state.model_copy(update={"seen": [*state.seen, *found.run_ids][-SEEN_RUNS:]})
            self._statistic = {}
        watch = state.watch
        if setup.settings is None or not setup.settings.watch or setup.live_version is None:
            watch = None
        elif watch is None or watch.version != setup.live_version:
            watch = WatchState(version=setup.live_version)
        self._state = state.model_copy(update={"canary": canary, "watch": watch})
        return setup.live_version is not None and (setup.settings is not None or canary is not None)

    async def _observe(self, batch: list[LiveRun]) -> None:
        seen = set(self._state.seen)
        fresh = []
        for run in batch:
            if run.run_id not in seen:
                seen.add(run.run_id)
                fresh.append(run)
        self._state = self._state.model_copy(
            update={"seen": [*self._state.seen, *(r.run_id for r in fresh)][-SEEN_RUNS:]}
        )
        if not fresh:
            return
        rate = self._settings.online_sample_rate if self._settings else 0.0
        observations = await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    RolloutActivities.observe_live_run,
                    ObserveInput(
                        tenant_id=self._input.tenant_id,
                        agent_name=self._input.agent_name,
                        run_id=run.run_id,
                        rollout_id=run.rollout_id,
                        judge=_sampled(run.run_id, "judge", rate),
                    ),
                    **LLM_CALL.kwargs(),
                )
                for run in fresh
            )
        )
        for observation in observations:
            await self._count(observation, shadow=False)

    async def _count(self, observation: Observation, *, shadow: bool) -> None:
        """Add one verdict to the canary's test or the watch, and act on the result."""
        if not observation.counted:
            return
        self._observed_here += 1
        self._state = self._state.model_copy(update={"observed": self._state.observed + 1})
        canary = self._state.canary
        if canary is not None and observation.version == canary.canary:
            canary = canary.model_copy(update={"outcomes": [*canary.outcomes, observation.success]})
            self._state = self._state.model_copy(update={"canary": canary})
            await self._test_canary(canary)
            return
        if shadow:
            return  # the canary it was for has ended
        if canary is not None and observation.version == canary.stable:
            limit = canary.settings.canary_test.max_samples
            canary = canary.model_copy(
                update={"stable_outcomes": [*canary.stable_outcomes, observation.success][-limit:]}
            )
            self._state = self._state.model_copy(update={"canary": canary})
            if canary.baseline is None and canary.outcomes:
                await self._test_canary(canary)  # its baseline just moved
                if self._state.canary is None:
                    return
            if canary.settings.shadow_share and _sampled(
                observation.run_id, canary.rollout_id, canary.settings.shadow_share
            ):
                self._in_flight += 1
                task = asyncio.create_task(self._shadow(canary, observation))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        watch = self._state.watch
        if watch is not None and observation.version == watch.version:
            await self._watch(watch, observation)

    async def _test_canary(self, canary: CanaryState) -> None:
        policy = canary.settings.canary_test
        baseline = canary.baseline
        if baseline is None:
            stable = canary.stable_outcomes
            if len(stable) < min(canary.settings.baseline_runs, policy.min_samples):
                self._statistic = {
                    "test": "sprt", "samples": len(canary.outcomes),
                    "note": f"waiting for the stable version's baseline ({len(stable)} runs)",
                }  # fmt: skip
                return
            baseline = (sum(stable) + 1) / (len(stable) + 2)
        decision, state = canary_test(canary.outcomes, baseline, policy)
        self._statistic = {
            "test": "sprt", "samples": state.samples, "successes": state.successes,
            "llr": round(state.llr, 4), "baseline": round(baseline, 4), "delta": policy.delta,
            "alpha": policy.alpha, "beta": policy.beta,
        }  # fmt: skip
        if decision == "continue":
            return
        rate = f"{state.successes}/{state.samples}"
        if decision == "promote":
            reason = (
                f"sequential test: the canary's success ({rate}) is not worse than the stable "
                f"version's {baseline:.2f} by {policy.delta} (alpha {policy.alpha}, "
                f"beta {policy.beta})"
            )
        else:
            reason = (
                f"sequential test: the canary's success ({rate}) is worse than the stable "
                f"version's {baseline:.2f} by {policy.delta} or more (alpha {policy.alpha}, "
                f"beta {policy.beta})"
            )
        if state.samples >= policy.max_samples:
            reason = f"{policy.max_samples} runs without a decision: {policy.at_limit} by rule"
        await self._decide(canary, decision, reason)

    async def _at_limit(self, canary: CanaryState) -> None:
        rule = canary.settings.canary_test.at_limit
        reason = (
            f"no decision within {canary.settings.max_canary_s:.0f}s "
            f"({len(canary.outcomes)} canary runs): {rule} by rule"
        )
        await self._decide(canary, "promote" if rule == "keep" else "rollback", reason)

    async def _decide(self, canary: CanaryState, decision: str, reason: str) -> None:
        decided: RolloutDecided = await workflow.execute_activity_method(
            RolloutActivities.decide_rollout,
            RolloutDecisionInput(
                tenant_id=self._input.tenant_id, agent_name=self._input.agent_name,
                rollout_id=canary.rollout_id,
                decision="promote" if decision == "promote" else "rollback",
                reason=reason, evidence=self._statistic,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        del decided
        self._state = self._state.model_copy(
            update={"canary": None, "decisions": self._state.decisions + 1}
        )
        self._reload = True

    async def _watch(self, watch: WatchState, observation: Observation) -> None:
        settings = self._settings
        if settings is None:
            return
        if len(watch.baseline_outcomes) < settings.baseline_runs:
            watch = watch.model_copy(
                update={"baseline_outcomes": [*watch.baseline_outcomes, observation.success]}
            )
            self._state = self._state.model_copy(update={"watch": watch})
            return
        failed = watch.failed_runs
        if not observation.success:
            failed = [*failed, observation.run_id][-FAILED_RUNS_KEPT:]
        watch = watch.model_copy(
            update={"outcomes": [*watch.outcomes, observation.success], "failed_runs": failed}
        )
        base = watch.baseline_outcomes
        baseline = (sum(base) + 1) / (len(base) + 2)
        policy = settings.watch_test
        verdict, state = drop_test(watch.outcomes, baseline, policy)
        if self._state.canary is None:
            self._statistic = {
                "test": "sprt-drop", "version": watch.version, "samples": state.samples,
                "successes": state.successes, "llr": round(state.llr, 4),
                "baseline": round(baseline, 4), "delta": policy.delta,
            }  # fmt: skip
        if verdict == "healthy" or (verdict == "continue" and state.samples >= policy.max_samples):
            watch = watch.model_copy(update={"outcomes": [], "failed_runs": []})
        if verdict != "rollback":
            self._state = self._state.model_copy(update={"watch": watch})
            return
        reason = (
            f"success fell to {state.successes}/{state.samples} against its baseline "
            f"{baseline:.2f} (a drop of {policy.delta} or more by the sequential test)"
        )
        out: DegradationOutput = await workflow.execute_activity_method(
            RolloutActivities.roll_back_degraded,
            DegradationInput(
                tenant_id=self._input.tenant_id, agent_name=self._input.agent_name,
                version=watch.version, reason=reason, failed_runs=watch.failed_runs,
                evidence=self._statistic, diagnose=settings.diagnose,
                key=f"{workflow.info().workflow_id}:{watch.version}:{self._state.decisions}",
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        self._state = self._state.model_copy(
            update={"watch": WatchState(version=out.live_version),
                    "decisions": self._state.decisions + 1}
        )  # fmt: skip
        self._reload = True

    async def _shadow(self, canary: CanaryState, live: Observation) -> None:
        """Re-run a live run on the canary in evaluation mode and count its verdict."""
        try:
            workflow_id = f"rollout-shadow/{canary.rollout_id}/{live.run_id}"  # unique per pair
            shadow: ShadowRun = await workflow.execute_activity_method(
                RolloutActivities.create_shadow_run,
                ShadowInput(
                    tenant_id=self._input.tenant_id, agent_name=self._input.agent_name,
                    rollout_id=canary.rollout_id, live_run_id=live.run_id,
                    canary_version=canary.canary, workflow_id=workflow_id,
                ),
                **RUN_STORE.kwargs(),
            )  # fmt: skip
            if shadow.run_id is None:
                return
            try:
                await run_child(
                    AgentRunInput(
                        tenant_id=self._input.tenant_id, run_id=shadow.run_id,
                        agent_name=self._input.agent_name, agent_version=canary.canary,
                        mode="evaluation", inbox_ids=[shadow.inbox_id],
                    ),
                    workflow_id, SHADOW_TIMEOUT,
                )  # fmt: skip
            except ChildWorkflowError:
                pass  # scored below as a run that did not succeed
            verdict: Observation = await workflow.execute_activity_method(
                RolloutActivities.observe_live_run,
                ObserveInput(
                    tenant_id=self._input.tenant_id, agent_name=self._input.agent_name,
                    run_id=shadow.run_id, rollout_id=canary.rollout_id, judge=True,
                    source="shadow",
                ),
                **LLM_CALL.kwargs(),
            )  # fmt: skip
            await workflow.execute_activity_method(
                RolloutActivities.record_shadow_pair,
                ShadowPairInput(
                    tenant_id=self._input.tenant_id, rollout_id=canary.rollout_id,
                    live_run_id=live.run_id, shadow_run_id=shadow.run_id,
                    shadow_success=verdict.success,
                ),
                **RUN_STORE.kwargs(),
            )  # fmt: skip
            self._shadowed.append(verdict)
        finally:
            self._in_flight -= 1

    async def _hand_over(self) -> None:
        """Continue as new with the state, once shadow runs and handlers are done."""
        await workflow.wait_condition(
            lambda: self._in_flight == 0 and workflow.all_handlers_finished()
        )
        while self._shadowed:
            await self._count(self._shadowed.pop(0), shadow=True)
        workflow.continue_as_new(
            RolloutInput(
                tenant_id=self._input.tenant_id,
                agent_name=self._input.agent_name,
                state=self._state.model_copy(update={"pending": self._queue}),
            )
        )


def _sampled(run_id: str, salt: str, rate: float) -> bool:
    """A run's stable draw at `rate` (the same answer on every replay)."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{salt}\x00{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate
