"""AgentRunWorkflow: one agent's tool-calling loop for one objective (or conversation)."""

import asyncio
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

from core import search_attributes
from core.errors import ErrorType
from core.memory.payloads import (
    ReflectInput,
    ReflectOutput,
    RunMemoryInput,
    RunRecallOutput,
    SkillUse,
)
from core.payloads import RunEvent
from core.runs.payloads import (
    AdoptMessagesInput,
    AgentRunInput,
    AgentRunOutput,
    ApprovalDecision,
    ChildRunInput,
    ChildRunOutput,
    FinishRunInput,
    LlmCallInput,
    LlmCallOutput,
    RecordEventsInput,
    RunOutcome,
    RunPhase,
    RunPlan,
    RunProgress,
    RunStatus,
    StartRunInput,
    SubmitMessage,
    ToolCallInput,
    ToolCallOutput,
    ToolCallRef,
    ToolResultInput,
)
from core.tools.names import ASK_HUMAN, LOCAL_TOOL_NAMES
from workflows._agent_tools import (
    MAX_AGENT_DEPTH,
    HumanDesk,
    ToolCallContext,
    failure_reason,
    handler_for,
)

with workflow.unsafe.imports_passed_through():
    from activities.memory.store import MemoryStoreActivities
    from activities.runs.llm import LlmActivities
    from activities.runs.memory import RunMemoryActivities
    from activities.runs.store import StoreActivities
    from activities.runs.tool_calls import ToolActivities
    from workflows._options import (
        LLM_CALL,
        LOCAL_TOOL_CALL,
        MEMORY_RECALL,
        MEMORY_WRITE,
        RUN_STORE,
        TOOL_CALL,
    )
    from workflows._workspace import RunWorkspace


_PATCH_TOOL_FAILURES = "tool-failures-are-results-v1"
"""A tool call whose retries are spent becomes an error result; before, it failed the run."""
_PATCH_WORKFLOW_TOOLS = "workflow-answered-tools-v1"
"""ask_human and agents as tools: before it, such calls went to the tools lane."""
_PATCH_RECORDED_RESULTS = "known-tool-results-on-store-lane-v1"
"""Results the workflow holds (denials, its own answers, a child run's, spent retries) are
stored by `record_tool_result` on the store lane; before, `execute_tool` carried them."""
_PATCH_LOCAL_TOOLS = "local-tool-calls-v1"
"""Calls of tools that need no isolation (`LOCAL_TOOL_NAMES`) are local activities of this
workflow's worker; before, they went to the tools lane."""


@workflow.defn(name="AgentRunWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class AgentRunWorkflow:
    """The loop: call the model, run the tool calls it asks for, feed results back.

    Messages, tool arguments and results live in Postgres; this workflow carries only
    message sequence numbers and counters, and continues as new when Temporal suggests.

    Signals:
        submit_message(SubmitMessage): a user message (by inbox id) for a conversation run.
    Updates:
        approve_tool_call(ApprovalDecision) -> RunStatus: approve or deny a pending call;
            rejected unless that call is waiting for approval.
    Queries:
        status() -> RunStatus: phase, step, tokens, cost and pending approvals.

    Ends with an `AgentRunOutput` whose outcome is `succeeded` (a final answer; for a
    conversation: ended or idle past its timeout), `limit_reached` (steps, cost, tokens
    or wall clock), `failed` (a non-retryable model error, every fallback exhausted), or,
    when cancelled, records `cancelled` in Postgres and ends as a cancelled workflow.
    """

    def __init__(self) -> None:
        self._phase: RunPhase = "starting"
        self._progress = RunProgress()
        self._desk = HumanDesk()
        self._inbox: list[int] = []
        self._end_requested = False
        self._outcome: RunOutcome | None = None
        self._skill_ids: list[str] = []

    # -- interface ------------------------------------------------------------------

    @workflow.signal
    def submit_message(self, message: SubmitMessage) -> None:
        """Queue a user message (stored in the run's inbox) for the next turn."""
        if message.inbox_id not in self._inbox:
            self._inbox.append(message.inbox_id)
        self._end_requested = self._end_requested or message.end_conversation

    @workflow.update
    def approve_tool_call(self, decision: ApprovalDecision) -> RunStatus:
        """Approve or deny a tool call that waits for a human."""
        self._desk.decide(decision)
        return self.status()

    @approve_tool_call.validator
    def _check_approval(self, decision: ApprovalDecision) -> None:
        self._desk.check(decision)

    @workflow.query
    def status(self) -> RunStatus:
        """Live state of the run."""
        return RunStatus(
            phase=self._phase,
            progress=self._progress,
            pending_approvals=self._desk.waiting(),
            outcome=self._outcome,
        )

    # -- the loop -------------------------------------------------------------------

    @workflow.run
    async def run(self, input: AgentRunInput) -> AgentRunOutput:
        """Run the loop to an outcome."""
        self._input = input
        self._inbox = list(input.inbox_ids) if input.plan is not None else []
        self._end_requested = self._end_requested or input.end_requested
        self._skill_ids = list(input.skill_ids)
        self._progress = input.progress or RunProgress(started_at=workflow.now())
        self._workspace = RunWorkspace(input.tenant_id, input.run_id, input.workspace, self._record)
        try:
            if input.plan is not None:
                self._plan = input.plan
            else:
                self._plan = await self._start()
                await self._recall()
            return await self._loop()
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            # Cancellation reaches us once; activities started afterwards run normally.
            await self._record_finish("cancelled", "cancelled by request", None)
            raise

    async def _start(self) -> RunPlan:
        input = self._input
        plan: RunPlan = await workflow.execute_activity_method(
            StoreActivities.start_run,
            StartRunInput(
                tenant_id=input.tenant_id, run_id=input.run_id, agent_name=input.agent_name,
                agent_version=input.agent_version, inbox_ids=input.inbox_ids,
                first_seq=self._progress.seq + 1, mode=input.mode,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        self._advance(seq=self._progress.seq + len(input.inbox_ids))
        return plan

    async def _loop(self) -> AgentRunOutput:
        while True:
            plan = self._plan  # find_tools may offer more tools as the run goes
            limits = plan.limits
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    self._input.model_copy(
                        update={
                            "progress": self._progress,
                            "plan": plan,
                            "inbox_ids": self._inbox,
                            "end_requested": self._end_requested,
                            "skill_ids": self._skill_ids,
                            "workspace": self._workspace.host,
                        }
                    )
                )
            if self._inbox:
                await self._adopt_inbox()
            limit = self._limit_reason(plan)
            if limit is not None:
                return await self._finish("limit_reached", limit, None)

            self._phase = "calling_model"
            progress = self._progress
            remaining = (
                None if limits.max_cost_usd is None else limits.max_cost_usd - progress.cost_usd
            )
            try:
                llm = await workflow.execute_activity_method(
                    LlmActivities.call_llm,
                    LlmCallInput(
                        tenant_id=self._input.tenant_id, run_id=self._input.run_id,
                        agent_name=self._input.agent_name, agent_version=self._input.agent_version,
                        step=progress.step + 1, upto_seq=progress.seq, write_seq=progress.seq + 1,
                        models=plan.models, tools=plan.tools if plan.offered is None else plan.offered,
                        budget_remaining_usd=remaining,
                    ),
                    **LLM_CALL.kwargs(),
                )  # fmt: skip
            except ActivityError as exc:
                if is_cancelled_exception(exc):
                    raise
                cause = exc.cause
                if isinstance(cause, ApplicationError) and cause.type == ErrorType.BUDGET_EXCEEDED:
                    return await self._finish("limit_reached", cause.message, None)
                return await self._finish("failed", failure_reason(exc), None)
            self._count_call(llm)

            if llm.tool_calls:
                self._phase = "running_tools"
                await self._run_tools(plan, llm)
                continue
            if self._input.conversation and not (self._end_requested and not self._inbox):
                if await self._wait_for_message(limits.conversation_idle_timeout_s):
                    continue
            return await self._finish("succeeded", None, llm)

    def _limit_reason(self, plan: RunPlan) -> str | None:
        limits, progress = plan.limits, self._progress
        if progress.step >= limits.max_steps:
            return f"max_steps ({limits.max_steps}) reached"
        if limits.max_cost_usd is not None and progress.cost_usd >= limits.max_cost_usd:
            return f"max_cost_usd ({limits.max_cost_usd}) reached: spent {progress.cost_usd:.6f}"
        if limits.max_tokens is not None:
            used = progress.prompt_tokens + progress.completion_tokens
            if used >= limits.max_tokens:
                return f"max_tokens ({limits.max_tokens}) reached: used {used}"
        if progress.started_at is not None:
            elapsed = (workflow.now() - progress.started_at).total_seconds()
            if elapsed >= limits.timeout_s:
                return f"timeout_s ({limits.timeout_s:.0f}) reached"
        return None

    def _advance(self, **changes: object) -> None:
        self._progress = self._progress.model_copy(update=changes)

    def _count_call(self, llm: LlmCallOutput) -> None:
        p = self._progress
        self._advance(
            seq=llm.message_seq,
            step=p.step + 1,
            prompt_tokens=p.prompt_tokens + llm.usage.prompt_tokens,
            completion_tokens=p.completion_tokens + llm.usage.completion_tokens,
            cost_usd=p.cost_usd + (llm.cost_usd or 0.0),
            cost_complete=p.cost_complete and llm.cost_usd is not None,
        )

    # -- tools ----------------------------------------------------------------------

    async def _run_tools(self, plan: RunPlan, llm: LlmCallOutput) -> None:
        calls = llm.tool_calls
        first_result = llm.message_seq + 1
        denied: dict[str, str] = {}
        for call in calls:
            if call.name not in plan.tools:
                denied[call.id] = f"tool {call.name!r} is not available to this agent"
            elif plan.policies.get(call.name) and plan.policies[call.name].mode == "deny":
                denied[call.id] = f"policy denies tool {call.name!r}"
        needs_approval = [
            c for c in calls
            if c.id not in denied and (p := plan.policies.get(c.name)) is not None and p.mode == "requires_approval"
        ]  # fmt: skip
        if needs_approval:
            denied.update(await self._desk.approve(plan, needs_approval, self._announce))
        approved = {c.id for c in needs_approval if c.id not in denied}
        answered: dict[str, str] = {}  # call id -> result text the workflow already has
        children: dict[str, str] = {}  # call id -> child run id
        if workflow.patched(_PATCH_WORKFLOW_TOOLS):
            answered, children, refused = await self._answer_in_workflow(plan, calls, denied)
            denied = {**denied, **refused}
        recording = workflow.patched(_PATCH_RECORDED_RESULTS)

        async def record(call: ToolCallRef, failure: str | None = None) -> ToolCallOutput:
            return await workflow.execute_activity_method(
                StoreActivities.record_tool_result,
                ToolResultInput(
                    tenant_id=self._input.tenant_id, run_id=self._input.run_id,
                    message_seq=llm.message_seq, call_index=call.index,
                    result_seq=first_result + call.index, denied_reason=denied.get(call.id),
                    result_text=answered.get(call.id), child_run_id=children.get(call.id),
                    failure=failure,
                ),
                **RUN_STORE.kwargs(),
            )  # fmt: skip

        def tool_input(call: ToolCallRef, failure: str | None = None) -> ToolCallInput:
            return ToolCallInput(
                tenant_id=self._input.tenant_id, run_id=self._input.run_id, step=self._progress.step,
                message_seq=llm.message_seq, call_index=call.index, result_seq=first_result + call.index,
                mode=self._input.mode, denied_reason=denied.get(call.id),
                agent_name=self._input.agent_name, agent_version=self._input.agent_version,
                approved=call.id in approved, result_text=answered.get(call.id),
                child_run_id=children.get(call.id), failure=failure,
            )  # fmt: skip

        async def execute(call: ToolCallRef) -> ToolCallOutput:
            if recording and (call.id in denied or call.id in answered or call.id in children):
                return await record(call)
            try:
                if call.id not in denied and self._workspace.routes(plan, call.name):
                    return await self._workspace.execute_tool(tool_input(call))
                if call.name in LOCAL_TOOL_NAMES and workflow.patched(_PATCH_LOCAL_TOOLS):
                    # Stored in Postgres before it returns, like on the tools lane: a
                    # retry after a crash finds the result instead of running it again.
                    return await workflow.execute_local_activity_method(
                        ToolActivities.execute_local_tool,
                        tool_input(call),
                        **LOCAL_TOOL_CALL.local_kwargs(),
                    )
                return await workflow.execute_activity_method(
                    ToolActivities.execute_tool, tool_input(call), **TOOL_CALL.kwargs()
                )
            except ActivityError as exc:
                if is_cancelled_exception(exc) or not workflow.patched(_PATCH_TOOL_FAILURES):
                    raise
                # Retries are spent (a dead MCP server, a tool that keeps timing out): the
                # model is told, and decides what to do without the tool.
                if recording:
                    return await record(call, failure=failure_reason(exc))
                return await workflow.execute_activity_method(
                    ToolActivities.execute_tool,
                    tool_input(call, failure=failure_reason(exc)),
                    **TOOL_CALL.kwargs(),
                )

        if plan.limits.parallel_tool_calls:
            await asyncio.gather(*(execute(call) for call in calls))
        else:
            for call in calls:
                await execute(call)
        self._advance(seq=first_result + len(calls) - 1)

    async def _answer_in_workflow(
        self, plan: RunPlan, calls: list[ToolCallRef], denied: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """Calls the workflow answers itself: workflow tools, agents as child runs.

        Returns (results by call id, child run ids by call id, denials by call id).
        """
        answered: dict[str, str] = {}
        children: dict[str, str] = {}
        refused: dict[str, str] = {}
        questions = [c for c in calls if c.name == ASK_HUMAN and c.id not in denied]
        if questions:
            answered.update(await self._desk.ask(plan, questions, self._announce))
        for call in calls:
            handler = handler_for(call.name)
            if handler is None or call.id in denied:
                continue
            try:
                answer = await handler(ToolCallContext(self._input, plan, call))
            except ActivityError as exc:
                if is_cancelled_exception(exc):
                    raise
                answered[call.id] = (
                    f"Error: {call.name} is unavailable now ({failure_reason(exc)})."
                )
                continue
            answered[call.id] = answer.text
            self._offer(answer.offer)
        delegated = [c for c in calls if c.name in plan.agent_tools and c.id not in denied]
        if delegated and self._input.depth >= MAX_AGENT_DEPTH:
            for call in delegated:
                refused[call.id] = (
                    f"agents may call agents only {MAX_AGENT_DEPTH} levels deep; "
                    "do this part yourself"
                )
            delegated = []

        async def delegate(call: ToolCallRef) -> None:
            child_run_id, error = await self._run_child(plan.agent_tools[call.name], call)
            if error is not None:
                answered[call.id] = f"Error: {error}"
            else:
                children[call.id] = child_run_id

        if plan.limits.parallel_tool_calls:
            await asyncio.gather(*(delegate(c) for c in delegated))
        else:
            for call in delegated:
                await delegate(call)
        return answered, children, refused

    def _offer(self, names: tuple[str, ...]) -> None:
        """Offer more tools to the model from now on (when the run offers a subset)."""
        offered = self._plan.offered
        new = [name for name in names if offered is not None and name not in offered]
        if offered is not None and new:
            self._plan = self._plan.model_copy(update={"offered": [*offered, *new]})

    async def _run_child(self, agent: str, call: ToolCallRef) -> tuple[str, str | None]:
        """Run `agent` on the call's task as a child run (own budget, cancelled with us).

        Returns (child run id, None), or ("", why there is no child run).
        """
        child: ChildRunOutput = await workflow.execute_activity_method(
            StoreActivities.create_child_run,
            ChildRunInput(
                tenant_id=self._input.tenant_id, parent_run_id=self._input.run_id,
                call_id=call.id, agent_name=agent, arguments=call.arguments or "{}",
                mode=self._input.mode,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        if child.error is not None:
            return "", child.error
        try:
            await run_child(
                AgentRunInput(
                    tenant_id=self._input.tenant_id, run_id=child.run_id, agent_name=agent,
                    agent_version=child.agent_version, mode=self._input.mode,
                    inbox_ids=[child.inbox_id], depth=self._input.depth + 1,
                ),
                child.workflow_id,
            )  # fmt: skip
        except ChildWorkflowError:
            # The child was cancelled, terminated or failed on its own (our own cancellation
            # arrives as CancelledError instead); its outcome is in Postgres.
            pass
        return child.run_id, None

    # -- conversation ---------------------------------------------------------------

    async def _wait_for_message(self, idle_timeout_s: float) -> bool:
        """Wait for the next user message. False when the conversation ends instead."""
        if not self._inbox and not self._end_requested:
            self._phase = "waiting_for_message"
            await self._record([], status="waiting")
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._end_requested, timeout=idle_timeout_s
                )
            except TimeoutError:
                return False
            await self._record([], status="running")
        return bool(self._inbox)

    async def _adopt_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        await workflow.execute_activity_method(
            StoreActivities.adopt_messages,
            AdoptMessagesInput(
                tenant_id=self._input.tenant_id, run_id=self._input.run_id,
                inbox_ids=inbox, first_seq=self._progress.seq + 1,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        self._advance(seq=self._progress.seq + len(inbox))

    # -- bookkeeping ----------------------------------------------------------------

    async def _announce(
        self, events: list[RunEvent], status: Literal["running", "waiting"]
    ) -> None:
        """Record approval events; the run waits for a human, or runs its tools again."""
        self._phase = "waiting_for_approval" if status == "waiting" else "running_tools"
        await self._record(events, status=status)

    async def _record(
        self, events: list[RunEvent], status: Literal["running", "waiting"] | None = None
    ) -> None:
        await workflow.execute_activity_method(
            StoreActivities.record_events,
            RecordEventsInput(
                tenant_id=self._input.tenant_id,
                run_id=self._input.run_id,
                events=events,
                status=status,
            ),
            **RUN_STORE.kwargs(),
        )

    async def _finish(
        self, outcome: RunOutcome, reason: str | None, llm: LlmCallOutput | None
    ) -> AgentRunOutput:
        await self._record_finish(outcome, reason, llm.message_seq if llm else None)
        await self._remember(outcome)
        return AgentRunOutput(
            run_id=self._input.run_id,
            outcome=outcome,
            reason=reason,
            result=llm.text if llm else None,
            progress=self._progress,
        )

    # -- long-term memory -----------------------------------------------------------

    async def _recall(self) -> None:
        """Before the first step: what the agent remembers about objectives like this one."""
        memory = self._plan.memory
        if not memory.enabled:
            return
        try:
            recalled: RunRecallOutput = await workflow.execute_activity_method(
                RunMemoryActivities.recall_for_run,
                RunMemoryInput(
                    tenant_id=self._input.tenant_id, run_id=self._input.run_id,
                    agent_name=self._input.agent_name, scope=memory.scope,
                    limit=memory.recall_limit,
                ),
                **MEMORY_RECALL.kwargs(),
            )  # fmt: skip
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            workflow.logger.warning("recall failed; the run goes on without memory: %s", exc)
            return
        self._skill_ids = list(recalled.skill_ids)

    async def _remember(self, outcome: RunOutcome) -> None:
        """After the run: critique it (reflexion), write its episode, count skill uses.

        Memory is an addition: its failures are logged, never the run's outcome.
        """
        memory = self._plan.memory
        if not memory.enabled or outcome == "cancelled":
            return
        critique = ReflectOutput()
        try:
            if memory.reflexion:
                critique = await workflow.execute_activity_method(
                    LlmActivities.reflect_on_run,
                    ReflectInput(
                        tenant_id=self._input.tenant_id, run_id=self._input.run_id,
                        models=self._plan.models, step=self._progress.step + 1,
                    ),
                    **LLM_CALL.kwargs(),
                )  # fmt: skip
            await workflow.execute_activity_method(
                RunMemoryActivities.record_episode,
                RunMemoryInput(
                    tenant_id=self._input.tenant_id, run_id=self._input.run_id,
                    agent_name=self._input.agent_name, scope=memory.scope,
                    lesson=critique.lesson, summary=critique.summary or None,
                    reward=critique.reward,
                ),
                **MEMORY_WRITE.kwargs(),
            )  # fmt: skip
            if self._skill_ids:
                await workflow.execute_activity_method(
                    MemoryStoreActivities.record_skill_use,
                    SkillUse(
                        tenant_id=self._input.tenant_id, skill_ids=self._skill_ids,
                        succeeded=outcome == "succeeded", run_id=self._input.run_id,
                    ),
                    **MEMORY_WRITE.kwargs(),
                )  # fmt: skip
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            workflow.logger.warning("writing the run's memory failed: %s", exc)

    async def _record_finish(
        self, outcome: RunOutcome, reason: str | None, result_seq: int | None
    ) -> None:
        self._phase = "finished"
        self._outcome = outcome
        await workflow.execute_activity_method(
            StoreActivities.finish_run,
            FinishRunInput(
                tenant_id=self._input.tenant_id, run_id=self._input.run_id, outcome=outcome,
                reason=reason, result_seq=result_seq, progress=self._progress,
            ),
            **RUN_STORE.kwargs(),
        )  # fmt: skip
        workflow.upsert_search_attributes([search_attributes.STATUS.value_set(outcome)])
        await self._workspace.release()


async def run_child(
    input: AgentRunInput, workflow_id: str, run_timeout: timedelta | None = None
) -> AgentRunOutput:
    """Run an agent as a child of this workflow: a delegated task or a swarm's subtask.

    Same task queue; cancelled when the parent closes; searchable by tenant and agent.
    An evolution cycle's evaluation passes `run_timeout`, a limit on the whole run.
    """
    return await workflow.execute_child_workflow(
        AgentRunWorkflow.run,
        input,
        id=workflow_id,
        task_queue=workflow.info().task_queue,
        parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        execution_timeout=run_timeout,
        search_attributes=search_attributes.for_run(
            input.tenant_id, input.agent_name, input.agent_version
        ),
    )
