"""EvolutionWorkflow: one evolution cycle of one agent, from evidence to a gated decision."""

import asyncio
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import ActivityError, ChildWorkflowError, is_cancelled_exception

from core.evolution.payloads import (
    WORKFLOW_NAME,
    ApprovalWaitInput,
    CaseRef,
    DecideInput,
    DecideOutput,
    Decision,
    DiagnoseInput,
    EvalRunInput,
    EvolutionInput,
    EvolutionOutput,
    EvolutionPhase,
    EvolutionResume,
    EvolutionSetup,
    EvolutionStatus,
    FinishEvolutionInput,
    JudgePairsInput,
    PendingInput,
    PendingOutput,
    PromotionDecision,
    ProposeInput,
    ProposeOutput,
    ScoreInput,
    ScoreOutput,
)
from core.evolution.store import eval_workflow_id
from core.runs.payloads import AgentRunInput

with workflow.unsafe.imports_passed_through():
    from activities.evolution.growth import GrowthActivities
    from activities.evolution.models import EvolutionModelActivities
    from activities.evolution.store import EvolutionStoreActivities
    from workflows._agent_tools import failure_reason
    from workflows._options import LLM_CALL, RUN_STORE, TOOL_TESTS
    from workflows.agent_run import run_child


GROWTH_PATCH = "evolution-generated-tools"
"""Cycles from before generated code tools never test any."""


@workflow.defn(name=WORKFLOW_NAME, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class EvolutionWorkflow:
    """A cycle: gather, diagnose, propose K candidates, evaluate, decide, promote or keep.

    1. `start_evolution` loads the incumbent (the agent's live version), the settings and
       the eval cases by split. Too few validation cases, or a budget too small for
       `(K + 1) x (validation + holdout) + train` evaluation runs, ends the cycle at once
       with "keep" and says why.
    2. The incumbent runs the train cases (its failures are the proposer's evidence),
       `diagnose_failures` attributes them to causes, `propose_candidates` writes K
       candidates (stored as candidate agent versions; invalid drafts are recorded).
       Code tools it wrote are tested in the sandbox by `test_generated_tools` on the
       tools lane; each that passes every test becomes a candidate.
    3. The incumbent and every candidate run every validation and holdout case, at most
       `parallelism` at once. Each evaluation is a child `AgentRunWorkflow` in evaluation
       mode with the id `{cycle}/v{version}/{case}`, so a crash never repeats a finished
       one; one that fails or passes `eval_timeout_s` scores as a failure. When the
       spent cost reaches `max_cost_usd`, no more evaluations start and the cycle keeps
       the incumbent ("budget exhausted").
    4. `decide_evolution` runs the gate (core/evolution/gate.py) for each candidate. A
       winner is released by `finish_evolution`, after a human's approval when the
       settings ask for it (`approve_promotion`; the timeout means "keep").

    Updates:
        approve_promotion(PromotionDecision) -> EvolutionStatus: approve or reject the
            promotion waiting for a human; rejected unless one is waiting.
    Queries:
        status() -> EvolutionStatus: phase, candidates, evaluations done, cost.

    Ends with an `EvolutionOutput`: "promote" with the released version, or "keep" with
    the reasons. Cancelled: running evaluations are cancelled, the cycle is recorded as
    cancelled (keeping the incumbent), and the workflow ends cancelled.
    """

    def __init__(self) -> None:
        self._phase: EvolutionPhase = "starting"
        self._candidates: list[int] = []
        self._done = 0
        self._planned = 0
        self._cost = 0.0
        self._waiting: int | None = None
        self._approval: PromotionDecision | None = None
        self._exhausted = False
        self._handoff = False

    @workflow.query
    def status(self) -> EvolutionStatus:
        """Live state of the cycle."""
        return EvolutionStatus(
            phase=self._phase,
            candidates=self._candidates,
            evaluations_done=self._done,
            evaluations_planned=self._planned,
            cost_usd=self._cost,
            waiting_version=self._waiting,
        )

    @workflow.update
    def approve_promotion(self, decision: PromotionDecision) -> EvolutionStatus:
        """A human's answer on the promotion waiting for approval."""
        self._approval = decision
        return self.status()

    @approve_promotion.validator
    def _check_approval(self, decision: PromotionDecision) -> None:
        if self._waiting is None or self._approval is not None:
            raise ValueError("no promotion of this cycle is waiting for approval")

    @workflow.run
    async def run(self, input: EvolutionInput) -> EvolutionOutput:
        """Run the cycle to a decision."""
        self._input = input
        self._evolution_id = input.evolution_id or ""  # a scheduled cycle's comes from setup
        try:
            return await self._cycle()
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            if self._evolution_id:
                await self._finish("cancelled", "keep", None, ["cancelled by request"])
            raise

    async def _cycle(self) -> EvolutionOutput:
        setup: EvolutionSetup = await workflow.execute_activity_method(
            EvolutionStoreActivities.start_evolution, self._input, **RUN_STORE.kwargs()
        )
        self._setup = setup
        self._evolution_id = setup.evolution_id
        settings = setup.settings
        train = [c for c in setup.cases if c.split == "train"]
        measured = [c for c in setup.cases if c.split != "train"]
        validation = sum(c.split == "validation" for c in measured)
        self._planned = len(train) + (settings.candidates + 1) * len(measured)
        if validation < settings.gate.min_cases:
            return await self._keep(
                f"too little evidence: {validation} validation case(s), "
                f"at least {settings.gate.min_cases} needed"
            )
        if self._planned > settings.max_eval_runs:
            return await self._keep(
                f"budget too small: the cycle needs {self._planned} evaluation runs, "
                f"max_eval_runs is {settings.max_eval_runs}"
            )

        resume = self._input.resume
        if resume is None:
            proposed = await self._propose(train)
            if not proposed.versions:
                return await self._keep(
                    *(self._exhaustion() or [f"no valid candidate ({proposed.rejected} rejected)"])
                )
            self._planned = len(train) + (len(proposed.versions) + 1) * len(measured)
            versions = [setup.incumbent_version, *proposed.versions]
            jobs = [(v, c) for c in measured for v in versions]
        else:
            proposed = ProposeOutput(
                versions=resume.candidates, needs_approval=resume.needs_approval
            )
            self._candidates = resume.candidates
            self._cost, self._done, self._planned = resume.cost_usd, resume.done, resume.planned
            versions = [setup.incumbent_version, *resume.candidates]
            pending: PendingOutput = await workflow.execute_activity_method(
                EvolutionStoreActivities.pending_evaluations,
                PendingInput(evolution_id=self._evolution_id, versions=versions, cases=measured),
                **RUN_STORE.kwargs(),
            )
            jobs = pending.pending

        self._phase = "evaluating"
        await self._evaluate(jobs)
        if self._exhausted:
            return await self._budget_exhausted()
        if self._handoff:
            # Enough evaluations for one history: the rest run in a fresh one.
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(
                self._input.model_copy(
                    update={
                        "evolution_id": self._evolution_id,
                        "resume": EvolutionResume(
                            candidates=proposed.versions,
                            needs_approval=proposed.needs_approval,
                            cost_usd=self._cost,
                            done=self._done,
                            planned=self._planned,
                        ),
                    }
                )
            )

        self._phase = "deciding"
        judged = await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    EvolutionModelActivities.judge_pairs,
                    JudgePairsInput(
                        tenant_id=self._input.tenant_id,
                        evolution_id=self._evolution_id,
                        version=version,
                    ),
                    **LLM_CALL.kwargs(),
                )
                for version in proposed.versions
            )
        )
        self._cost += sum(j.cost_usd for j in judged)
        decided: DecideOutput = await workflow.execute_activity_method(
            EvolutionStoreActivities.decide_evolution,
            DecideInput(
                tenant_id=self._input.tenant_id,
                evolution_id=self._evolution_id,
                candidates=proposed.versions,
            ),
            **RUN_STORE.kwargs(),
        )
        if decided.decision == "keep" or decided.version is None:
            return await self._keep(*decided.reasons)
        if settings.approval == "human" or decided.version in proposed.needs_approval:
            approved = await self._ask_for_approval(decided.version, settings.approval_timeout_s)
            if approved is not None:
                return await self._keep(approved)
        return await self._finish("succeeded", "promote", decided.version, [])

    async def _propose(self, train: list[CaseRef]) -> ProposeOutput:
        """Train evaluations, feedback categories, diagnosis and the candidates."""
        self._phase = "evaluating_train"
        await self._evaluate([(self._setup.incumbent_version, c) for c in train], handoff=False)
        if self._exhausted:
            return ProposeOutput()
        ids = DiagnoseInput(tenant_id=self._input.tenant_id, evolution_id=self._evolution_id)
        self._phase = "diagnosing"
        for step in (
            EvolutionModelActivities.categorize_feedback,
            EvolutionModelActivities.diagnose_failures,
        ):
            done = await workflow.execute_activity_method(step, ids, **LLM_CALL.kwargs())
            self._cost += done.cost_usd
        self._phase = "proposing"
        proposed: ProposeOutput = await workflow.execute_activity_method(
            EvolutionModelActivities.propose_candidates,
            ProposeInput(tenant_id=self._input.tenant_id, evolution_id=self._evolution_id),
            **LLM_CALL.kwargs(),
        )
        self._cost += proposed.cost_usd
        if proposed.pending_tools and workflow.patched(GROWTH_PATCH):
            proposed = await self._test_generated_tools(proposed)
        self._candidates = proposed.versions
        return proposed

    async def _test_generated_tools(self, proposed: ProposeOutput) -> ProposeOutput:
        """The generated code tools' tests, on the tools lane; those that pass join."""
        tested: ProposeOutput = await workflow.execute_activity_method(
            GrowthActivities.test_generated_tools,
            ProposeInput(tenant_id=self._input.tenant_id, evolution_id=self._evolution_id),
            **TOOL_TESTS.kwargs(),
        )
        return proposed.model_copy(
            update={
                "versions": [*proposed.versions, *tested.versions],
                "rejected": proposed.rejected + tested.rejected,
                "needs_approval": [*proposed.needs_approval, *tested.needs_approval],
                "pending_tools": 0,
            }
        )

    def _exhaustion(self) -> list[str]:
        """Why the cycle stops for its budget (none while money is left)."""
        if not self._exhausted:
            return []
        return [
            f"budget exhausted: ${self._cost:.6f} spent of max_cost_usd "
            f"{self._setup.settings.max_cost_usd} after {self._done} of {self._planned} "
            "evaluations"
        ]

    async def _ask_for_approval(self, version: int, timeout_s: float) -> str | None:
        """Wait for a human on the promotion; None when approved, else why it is kept."""
        self._phase = "waiting_for_approval"
        await self._announce(version, waiting=True, timeout_s=timeout_s)
        self._waiting = version
        try:
            await workflow.wait_condition(lambda: self._approval is not None, timeout=timeout_s)
        except TimeoutError:
            self._waiting = None
            await self._announce(version, waiting=False, outcome="timed out")
            return f"no approval of v{version} within {timeout_s:.0f}s: kept the incumbent"
        self._waiting = None
        assert self._approval is not None
        approved = self._approval.approved
        await self._announce(version, waiting=False, outcome="approved" if approved else "rejected")
        if approved:
            return None
        return f"a human rejected v{version}: {self._approval.reason or 'no reason given'}"

    async def _announce(
        self,
        version: int,
        *,
        waiting: bool,
        timeout_s: float | None = None,
        outcome: str | None = None,
    ) -> None:
        await workflow.execute_activity_method(
            EvolutionStoreActivities.await_promotion_approval,
            ApprovalWaitInput(
                tenant_id=self._input.tenant_id, evolution_id=self._evolution_id,
                version=version, waiting=waiting, timeout_s=timeout_s, outcome=outcome,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip

    async def _evaluate(self, jobs: list[tuple[int, CaseRef]], *, handoff: bool = True) -> None:
        """Evaluate each (version, case), `parallelism` at once, until the budget runs out.

        With `handoff`, no evaluation starts once this history holds
        `evaluations_per_history` of them or Temporal suggests continuing as new; the
        caller then continues as new, and the next run evaluates what has no result.
        """
        settings = self._setup.settings
        gate = asyncio.Semaphore(settings.parallelism)
        started = 0

        async def one(version: int, case: CaseRef) -> None:
            nonlocal started
            async with gate:
                cap = settings.max_cost_usd
                if cap is not None and self._cost >= cap:
                    self._exhausted = True
                    return
                if handoff and (
                    self._handoff
                    or started >= settings.evaluations_per_history
                    or workflow.info().is_continue_as_new_suggested()
                ):
                    self._handoff = True
                    return
                started += 1
                score = await self._evaluate_one(
                    version, case, None if cap is None else cap - self._cost
                )
                self._cost += score.cost_usd
                self._done += 1

        await asyncio.gather(*(one(version, case) for version, case in jobs))

    async def _evaluate_one(
        self, version: int, case: CaseRef, budget_usd: float | None
    ) -> ScoreOutput:
        ids = self._input
        workflow_id = eval_workflow_id(self._evolution_id, version, case.id)
        failure: str | None = None
        run_id: str | None = None
        started = workflow.now()
        try:
            run = await workflow.execute_activity_method(
                EvolutionStoreActivities.create_eval_run,
                EvalRunInput(
                    tenant_id=ids.tenant_id, evolution_id=self._evolution_id,
                    agent_name=self._setup.agent_name, version=version, case_id=case.id,
                    workflow_id=workflow_id, max_cost_usd=budget_usd,
                ),
                **RUN_STORE.kwargs(),
            )  # fmt: skip
            run_id = run.run_id
            await run_child(
                AgentRunInput(
                    tenant_id=ids.tenant_id, run_id=run.run_id, agent_name=self._setup.agent_name,
                    agent_version=version, mode="evaluation", inbox_ids=[run.inbox_id],
                ),
                workflow_id,
                timedelta(seconds=self._setup.settings.eval_timeout_s),
            )  # fmt: skip
        except ChildWorkflowError as exc:
            failure = _child_failure(exc)
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            failure = f"the evaluation run could not be created: {failure_reason(exc)}"
        latency = (workflow.now() - started).total_seconds()
        score: ScoreOutput = await workflow.execute_activity_method(
            EvolutionModelActivities.score_eval_run,
            ScoreInput(
                tenant_id=ids.tenant_id, evolution_id=self._evolution_id,
                agent_name=self._setup.agent_name, version=version, case_id=case.id,
                run_id=run_id, failure=failure, latency_s=latency,
            ),
            **LLM_CALL.kwargs(),
        )  # fmt: skip
        return score

    async def _budget_exhausted(self) -> EvolutionOutput:
        return await self._keep(*self._exhaustion())

    async def _keep(self, *reasons: str) -> EvolutionOutput:
        return await self._finish("succeeded", "keep", None, list(reasons))

    async def _finish(
        self,
        status: Literal["succeeded", "failed", "cancelled"],
        decision: Decision,
        version: int | None,
        reasons: list[str],
    ) -> EvolutionOutput:
        self._phase = "finished"
        await workflow.execute_activity_method(
            EvolutionStoreActivities.finish_evolution,
            FinishEvolutionInput(
                tenant_id=self._input.tenant_id, evolution_id=self._evolution_id,
                status=status, decision=decision, version=version, reasons=reasons,
                cost_usd=self._cost,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        return EvolutionOutput(
            evolution_id=self._evolution_id,
            decision=decision,
            version=version,
            reasons=reasons,
            cost_usd=self._cost,
        )


def _child_failure(exc: ChildWorkflowError) -> str:
    """Why an evaluation run did not finish: timed out, failed or cancelled."""
    cause = exc.cause
    name = type(cause).__name__ if cause is not None else "error"
    if name == "TimeoutError":
        return "the evaluation run timed out"
    return f"the evaluation run did not finish ({name}: {cause or exc})"
