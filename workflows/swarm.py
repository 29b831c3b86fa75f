"""SwarmWorkflow: a queen plans a DAG of subtasks, agents run them in parallel, the queen answers."""

import asyncio
from dataclasses import dataclass

from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)

from core import search_attributes
from core.errors import ErrorType
from core.runs.payloads import AgentRunInput
from core.swarms.plan import (
    Complexity,
    FinishSubtaskInput,
    FinishSubtaskOutput,
    FinishSwarmInput,
    PlanInput,
    PlannedSubtask,
    PlanOutput,
    StartSubtasksInput,
    StartSubtasksOutput,
    SubtaskRun,
    SubtaskStart,
    SubtaskState,
    SubtaskStatusName,
    SwarmInput,
    SwarmOutcome,
    SwarmOutput,
    SwarmPhase,
    SwarmSetup,
    SwarmStatus,
    SynthesizeInput,
    SynthesizeOutput,
    child_workflow_id,
)

with workflow.unsafe.imports_passed_through():
    from activities.swarms.queen import QueenActivities
    from activities.swarms.store import SwarmActivities
    from workflows._options import LLM_CALL, RUN_STORE
    from workflows.agent_run import run_child

MIN_SHARE_USD = 1e-6
"""A subtask is not started with less budget than this: the swarm's budget is spent."""

Ending = tuple[SwarmOutcome, str]


@dataclass
class _Subtask:
    """The workflow's mutable view of one subtask (texts stay in Postgres)."""

    id: str
    role: str
    depends_on: list[str]
    complexity: Complexity
    status: SubtaskStatusName = "pending"
    attempt: int = 0
    run_id: str | None = None
    cost_usd: float = 0.0
    budget_usd: float | None = None

    def state(self) -> SubtaskState:
        return SubtaskState(
            id=self.id, role=self.role, depends_on=self.depends_on, complexity=self.complexity,
            status=self.status, attempt=self.attempt, run_id=self.run_id, cost_usd=self.cost_usd,
            budget_usd=self.budget_usd,
        )  # fmt: skip


@workflow.defn(name="SwarmWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class SwarmWorkflow:
    """A swarm: plan (the queen, or the user's plan), run the DAG, synthesize.

    Every subtask attempt is a child `AgentRunWorkflow` with the id
    `{swarm workflow id}/{subtask}` (`.{attempt}` from the second attempt on), at most
    `max_parallel` at once. Its objective, written to Postgres by `start_subtasks`,
    carries its dependencies' results; this workflow carries ids, roles and costs only.

    A failed subtask is retried (`max_retries`); after that the failure policy re-plans
    the unfinished part of the DAG with the failure as evidence (the queen; completed
    subtasks are kept and never re-run) or fails the swarm. `max_cost_usd` is shared:
    each child gets an equal share of what remains (one share kept for the synthesis),
    and what a child leaves unspent returns to the pool.

    Queries:
        status() -> SwarmStatus: phase, plan version, every subtask's state, cost.

    Ends with a `SwarmOutput` whose outcome is `succeeded` (the queen's synthesized
    answer), `failed` (no valid plan, a subtask that failed for good, a failed
    synthesis) or `limit_reached` (budget or timeout). Cancelled: every running child
    is cancelled, the outcome (with the subtasks that had finished) is recorded, and
    the workflow ends cancelled.
    """

    def __init__(self) -> None:
        self._phase: SwarmPhase = "starting"
        self._subtasks: dict[str, _Subtask] = {}
        self._plan_version = 0
        self._queen_cost = 0.0
        self._cost_complete = True
        self._done: list[tuple[str, SwarmOutcome, str | None]] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._outcome: SwarmOutcome | None = None
        self._stopping = False

    @workflow.query
    def status(self) -> SwarmStatus:
        """Live state of the swarm."""
        return SwarmStatus(
            phase=self._phase,
            plan_version=self._plan_version,
            subtasks=[s.state() for s in self._subtasks.values()],
            cost_usd=self._spent(),
            reserved_usd=self._reserved(),
            cost_complete=self._cost_complete,
            outcome=self._outcome,
        )

    @workflow.run
    async def run(self, input: SwarmInput) -> SwarmOutput:
        """Plan, execute and synthesize to an outcome."""
        self._input = input
        self._started_at = workflow.now()
        try:
            self._setup: SwarmSetup = await workflow.execute_activity_method(
                SwarmActivities.start_swarm, input, **RUN_STORE.kwargs()
            )
            if self._setup.plan:
                self._install(self._setup.plan, self._setup.plan_version)
            else:
                self._phase = "planning"
                ending = await self._make_plan(replan=False, failures=[])
                if ending is not None:
                    return await self._finish(*ending)
            self._phase = "running"
            ending = await self._execute()
            if ending is not None:
                return await self._finish(*ending)
            return await self._synthesize()
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            # Cancellation reaches us once; what we start afterwards runs normally.
            await self._stop_children()
            await self._finish("cancelled", "cancelled by request")
            raise

    # -- planning -------------------------------------------------------------------

    async def _make_plan(self, *, replan: bool, failures: list[str]) -> Ending | None:
        """Ask the queen for plan version n+1 until it validates; an ending if it never does."""
        limits = self._setup.settings.limits
        version = self._plan_version + 1
        errors: list[str] = []
        for attempt in range(1, limits.max_plan_attempts + 1):
            try:
                out: PlanOutput = await workflow.execute_activity_method(
                    QueenActivities.plan_swarm,
                    PlanInput(
                        tenant_id=self._input.tenant_id, swarm_id=self._input.swarm_id,
                        plan_version=version, attempt=attempt, models=self._setup.queen_models,
                        replan=replan, failures=failures, budget_remaining_usd=self._remaining(),
                    ),
                    **LLM_CALL.kwargs(),
                )  # fmt: skip
            except ActivityError as exc:
                if is_cancelled_exception(exc):
                    raise
                return _ending_of(exc, "the queen could not plan")
            self._add_queen_cost(out.cost_usd)
            if not out.errors:
                self._install(out.subtasks, version)
                return None
            errors = out.errors
        return "failed", (
            f"the queen's plan was invalid {limits.max_plan_attempts} time(s); last errors: "
            + "; ".join(errors[:5])
        )

    def _install(self, plan: list[PlannedSubtask], version: int) -> None:
        """Make `plan` the DAG: succeeded subtasks stay, unfinished ones are replaced or dropped."""
        self._plan_version = version
        kept = {k: s for k, s in self._subtasks.items() if s.status == "succeeded"}
        for sid, s in self._subtasks.items():
            if sid not in kept and sid not in {p.id for p in plan}:
                s.status = "dropped"
                kept[sid] = s
        for p in plan:
            old = self._subtasks.get(p.id)
            kept[p.id] = _Subtask(
                id=p.id, role=p.role, depends_on=list(p.depends_on), complexity=p.complexity,
                attempt=old.attempt if old else 0, cost_usd=old.cost_usd if old else 0.0,
            )  # fmt: skip
        self._subtasks = kept

    # -- execution ------------------------------------------------------------------

    async def _execute(self) -> Ending | None:
        """Run the DAG to the end; an ending unless every subtask succeeded."""
        settings = self._setup.settings
        limits = settings.limits
        policy = settings.failure_policy(self._setup.mode)
        halt: Ending | None = None
        to_replan: list[str] = []
        replans = 0
        while True:
            if halt is None and not to_replan:
                halt = await self._start_ready()
            if not self._tasks:
                if to_replan:
                    replans += 1
                    self._phase = "replanning"
                    ending = await self._make_plan(replan=True, failures=to_replan)
                    if ending is not None:
                        return ending
                    self._phase = "running"
                    to_replan = []
                    continue
                if halt is not None:
                    return halt
                waiting = [s.id for s in self._active() if s.status != "succeeded"]
                if not waiting:
                    return None
                return "failed", f"subtasks {', '.join(waiting)} can never start"
            left = limits.timeout_s - (workflow.now() - self._started_at).total_seconds()
            try:
                await workflow.wait_condition(lambda: bool(self._done), timeout=max(left, 0.001))
            except TimeoutError:
                halt = "limit_reached", f"timeout_s ({limits.timeout_s:.0f}) reached"
                await self._stop_children()
                continue
            done, self._done = self._done, []
            for sid, outcome, reason in done:
                subtask = self._subtasks[sid]
                if outcome == "succeeded" or halt is not None:
                    continue
                if policy != "fail" and subtask.attempt <= limits.max_retries:
                    subtask.status = "pending"  # retried by the next _start_ready
                elif policy == "replan" and replans < limits.max_replans:
                    to_replan.append(sid)
                else:
                    halt = (
                        "failed",
                        (
                            f"subtask {sid} failed after {subtask.attempt} attempt(s): "
                            f"{reason or 'no reason given'}"
                        ),
                    )
                    await self._stop_children()

    def _active(self) -> list[_Subtask]:
        return [s for s in self._subtasks.values() if s.status != "dropped"]

    async def _start_ready(self) -> Ending | None:
        """Start the subtasks whose dependencies succeeded, up to `max_parallel` running.

        Returns an ending when the budget cannot pay for another subtask.
        """
        limits = self._setup.settings.limits
        pending = [s for s in self._active() if s.status == "pending"]
        ready = [
            s for s in pending if all(self._subtasks[d].status == "succeeded" for d in s.depends_on)
        ]
        batch = ready[: max(0, limits.max_parallel - len(self._tasks))]
        if not batch:
            return None
        share = None
        remaining = self._remaining()
        if remaining is not None:
            share = remaining / (len(pending) + 1)  # one share stays for the synthesis
            if share < MIN_SHARE_USD:
                return "limit_reached", (
                    f"max_cost_usd ({limits.max_cost_usd}) reached: spent {self._spent():.6f}, "
                    f"{len(pending)} subtask(s) not started"
                )
        parent = workflow.info().workflow_id
        starts = []
        for s in batch:
            attempt = s.attempt + 1
            starts.append(
                SubtaskStart(
                    subtask_id=s.id,
                    attempt=attempt,
                    workflow_id=child_workflow_id(parent, s.id, attempt),
                    budget_usd=share,
                )
            )
            s.status, s.attempt, s.budget_usd = "running", attempt, share
        out: StartSubtasksOutput = await workflow.execute_activity_method(
            SwarmActivities.start_subtasks,
            StartSubtasksInput(
                tenant_id=self._input.tenant_id, swarm_id=self._input.swarm_id, starts=starts
            ),
            **RUN_STORE.kwargs(),
        )
        for run in out.runs:
            subtask = self._subtasks[run.subtask_id]
            if run.error is not None:
                subtask.status = "failed"
                self._done.append((subtask.id, "failed", run.error))
                continue
            subtask.run_id = run.run_id
            self._tasks[subtask.id] = asyncio.create_task(self._run_subtask(subtask, run))
        return None

    async def _run_subtask(self, subtask: _Subtask, run: SubtaskRun) -> None:
        """One attempt as a child run, to its recorded end."""
        outcome: SwarmOutcome = "failed"
        reason: str | None = None
        try:
            output = await run_child(
                AgentRunInput(
                    tenant_id=self._input.tenant_id, run_id=run.run_id,
                    agent_name=run.agent_name, agent_version=run.agent_version,
                    inbox_ids=[run.inbox_id], depth=self._input.depth + 1,
                ),
                run.workflow_id,
            )  # fmt: skip
            outcome, reason = output.outcome, output.reason
        except ChildWorkflowError as exc:
            if self._stopping and is_cancelled_exception(exc):
                raise  # we cancelled it: `_stop_children` records that
            # Failed, terminated, timed out, or cancelled by someone else.
            reason = f"the run's workflow ended abnormally: {exc.cause or exc}"
        finished: FinishSubtaskOutput = await workflow.execute_activity_method(
            SwarmActivities.finish_subtask,
            FinishSubtaskInput(
                tenant_id=self._input.tenant_id, swarm_id=self._input.swarm_id,
                subtask_id=subtask.id, attempt=subtask.attempt, run_id=run.run_id,
                outcome=outcome, reason=reason,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        subtask.cost_usd = finished.cost_usd
        self._cost_complete = self._cost_complete and finished.cost_complete
        subtask.status = "succeeded" if outcome == "succeeded" else "failed"
        self._tasks.pop(subtask.id, None)
        self._done.append((subtask.id, outcome, reason))

    async def _stop_children(self) -> None:
        """Cancel every running child and wait until each has recorded its cancellation."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sid in list(self._tasks):
            self._subtasks[sid].status = "cancelled"
        self._tasks.clear()
        self._stopping = False

    # -- the end --------------------------------------------------------------------

    async def _synthesize(self) -> SwarmOutput:
        self._phase = "synthesizing"
        try:
            out: SynthesizeOutput = await workflow.execute_activity_method(
                QueenActivities.synthesize_swarm,
                SynthesizeInput(
                    tenant_id=self._input.tenant_id, swarm_id=self._input.swarm_id,
                    models=self._setup.queen_models, budget_remaining_usd=self._remaining(),
                ),
                **LLM_CALL.kwargs(),
            )  # fmt: skip
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            return await self._finish(*_ending_of(exc, "the synthesis failed"))
        self._add_queen_cost(out.cost_usd)
        return await self._finish("succeeded", None, out)

    async def _finish(
        self, outcome: SwarmOutcome, reason: str | None, answer: SynthesizeOutput | None = None
    ) -> SwarmOutput:
        self._phase = "finished"
        self._outcome = outcome
        for s in self._subtasks.values():
            if s.status in ("pending", "running"):
                s.status = "cancelled"  # never finished (finish_swarm records the same)
        states = [s.state() for s in self._subtasks.values()]
        await workflow.execute_activity_method(
            SwarmActivities.finish_swarm,
            FinishSwarmInput(
                tenant_id=self._input.tenant_id, swarm_id=self._input.swarm_id, outcome=outcome,
                reason=reason, subtasks=states, cost_usd=self._spent(),
                cost_complete=self._cost_complete,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        workflow.upsert_search_attributes([search_attributes.STATUS.value_set(outcome)])
        return SwarmOutput(
            swarm_id=self._input.swarm_id,
            outcome=outcome,
            reason=reason,
            result=answer.result if answer else None,
            attribution=answer.attribution if answer else [],
            cost_usd=self._spent(),
            cost_complete=self._cost_complete,
            subtasks=states,
        )

    # -- budget ---------------------------------------------------------------------

    def _spent(self) -> float:
        return self._queen_cost + sum(s.cost_usd for s in self._subtasks.values())

    def _remaining(self) -> float | None:
        """What is left of `max_cost_usd` after spending and the running children's shares."""
        cap = self._setup.settings.limits.max_cost_usd
        if cap is None:
            return None
        return cap - self._spent() - self._reserved()

    def _reserved(self) -> float:
        """The budget shares of the running children (what they may still spend)."""
        return sum(s.budget_usd or 0.0 for s in self._subtasks.values() if s.status == "running")

    def _add_queen_cost(self, cost: float | None) -> None:
        self._queen_cost += cost or 0.0
        self._cost_complete = self._cost_complete and cost is not None


def _ending_of(exc: ActivityError, what: str) -> Ending:
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type == ErrorType.BUDGET_EXCEEDED:
        return "limit_reached", f"{what}: {cause.message}"
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
    return "failed", f"{what}: {message}"
