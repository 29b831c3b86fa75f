"""The tools the agent-run workflow answers itself, and the human in the loop.

A workflow tool's call never reaches the tools lane: the workflow answers it with memory
or tool-search activities, or by asking a human, and `record_tool_result` stores the
answer as the call's result.

To add a workflow tool: its name and schema go in `core/tools/names.py` (`WORKFLOW_TOOLS`)
and its handler goes in `HANDLERS` below (`tests/unit/test_tool_names.py` checks that the
two agree). A handler gets the call in context and returns the result text, plus any tools
to offer the model from then on. A family of tools named by a prefix (`recipe:<name>`) has
its handler under the prefix (`WORKFLOW_TOOL_PREFIXES`); `handler_for` finds either.

Approvals and `ask_human` questions share one path (`HumanDesk`): a pending approval is
a call waiting for a human's decision (a question waits for an answer), announced as a run
event, decided by the `approve_tool_call` update or denied when its timeout passes.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

from core import search_attributes
from core.memory.payloads import (
    MemoryItem,
    RecallInput,
    RecallOutput,
    WriteMemoriesInput,
    WriteMemoriesOutput,
)
from core.payloads import RunEvent, arguments_object
from core.runs.payloads import (
    AgentRunInput,
    ApprovalDecision,
    PendingApproval,
    RunPlan,
    ToolCallRef,
)
from core.swarms.plan import (
    RecipeAnswerInput,
    RecipeAnswerOutput,
    StartRecipeInput,
    StartRecipeOutput,
    SwarmInput,
    SwarmOutput,
)
from core.tools.names import ASK_HUMAN, FIND_TOOLS, RECALL, RECIPE_TOOL_PREFIX, REMEMBER
from core.tools.payloads import ToolPolicy
from core.tools.search import ToolSearchInput, ToolSearchOutput

with workflow.unsafe.imports_passed_through():
    from activities.memory.store import MemoryStoreActivities
    from activities.swarms.recipes import RecipeActivities
    from activities.tools.search import ToolSearchActivities
    from workflows._options import MEMORY_RECALL, MEMORY_WRITE, RUN_STORE, TOOL_SEARCH

MAX_AGENT_DEPTH = 3
"""How deep agents may call agents and recipes (a run's child's child's child, at most)."""


@dataclass(frozen=True)
class ToolCallContext:
    """A workflow tool's call, with the run and plan it belongs to."""

    run: AgentRunInput
    plan: RunPlan
    call: ToolCallRef

    @property
    def arguments(self) -> dict[str, Any]:
        """The call's arguments as an object ({} when they do not parse)."""
        return call_arguments(self.call)


@dataclass(frozen=True)
class Answer:
    """A workflow tool's result text, and tools to offer the model from now on."""

    text: str
    offer: tuple[str, ...] = ()


async def remember(context: ToolCallContext) -> Answer:
    """The `remember` tool: a fact for later runs (memory lane)."""
    run, args = context.run, context.arguments
    content = args.get("content")
    if not isinstance(content, str) or not content.strip():
        return Answer('Error: send {"content": "..."} with what to remember.')
    shared = args.get("shared") is True or context.plan.memory.scope == "shared"
    written: WriteMemoriesOutput = await workflow.execute_activity_method(
        MemoryStoreActivities.write_memories,
        WriteMemoriesInput(
            tenant_id=run.tenant_id,
            items=[
                MemoryItem(
                    key=f"fact:{run.run_id}:{context.call.id}",
                    agent_name=run.agent_name,
                    kind="fact",
                    content=content[:4000],
                    scope="shared" if shared else "private",
                    source_run_id=run.run_id,
                )
            ],
        ),
        **MEMORY_WRITE.kwargs(),
    )
    return Answer(f"Remembered (memory {written.ids[0]}).")


async def recall(context: ToolCallContext) -> Answer:
    """The `recall` tool: the agent's memories closest to a query."""
    query, limit = _search(context)
    if query is None:
        return Answer('Error: send {"query": "..."} describing what to recall.')
    found: RecallOutput = await workflow.execute_activity_method(
        MemoryStoreActivities.recall_memories,
        RecallInput(
            tenant_id=context.run.tenant_id,
            query=query[:1000],
            agent_name=context.run.agent_name,
            limit=limit,
        ),
        **MEMORY_RECALL.kwargs(),
    )
    if not found.hits:
        return Answer(f"Nothing in memory matches {query!r}.")
    return Answer(
        "\n".join(
            f"- [{h.kind}, {h.created_at:%Y-%m-%d}] {' '.join(h.content.split())[:500]}"
            for h in found.hits
        )
    )


async def find_tools(context: ToolCallContext) -> Answer:
    """The `find_tools` tool: search the run's tools; the ones found are offered from now on."""
    query, limit = _search(context)
    if query is None:
        return Answer('Error: send {"query": "..."} describing the tool you need.')
    found: ToolSearchOutput = await workflow.execute_activity_method(
        ToolSearchActivities.search_tools,
        ToolSearchInput(
            tenant_id=context.run.tenant_id,
            query=query[:500],
            limit=limit,
            names=[n for n in context.plan.tools if n != FIND_TOOLS],
        ),
        **TOOL_SEARCH.kwargs(),
    )
    if not found.hits:
        return Answer(f"No tool matches {query!r}.")
    lines = [f"- {h.name}: {h.description}" for h in found.hits]
    return Answer(
        "Tools you can use now:\n" + "\n".join(lines),
        offer=tuple(h.name for h in found.hits),
    )


def _search(context: ToolCallContext) -> tuple[str | None, int]:
    """A search call's query (None when missing or blank) and limit (1-20, default 5)."""
    args = context.arguments
    query = args.get("query")
    limit = args.get("limit", 5)
    return (
        query if isinstance(query, str) and query.strip() else None,
        limit if isinstance(limit, int) and 1 <= limit <= 20 else 5,
    )


async def run_recipe(context: ToolCallContext) -> Answer:
    """`recipe:<name>`: the saved plan runs as a child `SwarmWorkflow` on the given objective.

    The child's id is `{run workflow}/recipe-{call id}` and its swarm row is created once
    per call, so a retried activity or a replay never starts a second swarm. The queen
    does not plan (the plan is the recipe's); the swarm's answer is the result. Refused
    beyond `MAX_AGENT_DEPTH` and in evaluation runs (subtasks have no dry-run mode).
    """
    run, call = context.run, context.call
    recipe = call.name.removeprefix(RECIPE_TOOL_PREFIX)
    objective = context.arguments.get("objective")
    if not isinstance(objective, str) or not objective.strip():
        return Answer(
            'Error: send {"objective": "..."} with what the recipe\'s team should work on.'
        )
    if run.depth >= MAX_AGENT_DEPTH:
        return Answer(
            f"Error: agents may call agents and recipes only {MAX_AGENT_DEPTH} levels deep; "
            "do this part yourself."
        )
    if run.mode == "evaluation":
        # A swarm's subtasks run in normal mode: their side effects would be real.
        return Answer("Error: recipes do not run in evaluation runs; do this part yourself.")
    started: StartRecipeOutput = await workflow.execute_activity_method(
        RecipeActivities.start_recipe,
        StartRecipeInput(
            tenant_id=run.tenant_id, run_id=run.run_id, call_id=call.id, recipe=recipe,
            objective=objective, workflow_id=f"{workflow.info().workflow_id}/recipe-{call.id}",
        ),
        **RUN_STORE.kwargs(),
    )  # fmt: skip
    if started.error is not None:
        return Answer(f"Error: {started.error}")
    try:
        # By name: workflows/swarm.py imports the agent-run workflow, which imports us. The
        # id is the stored one (as a swarm's subtasks take theirs from `start_subtasks`).
        await workflow.execute_child_workflow(
            "SwarmWorkflow",
            SwarmInput(tenant_id=run.tenant_id, swarm_id=started.swarm_id, depth=run.depth + 1),
            id=started.workflow_id,
            task_queue=workflow.info().task_queue,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            search_attributes=search_attributes.for_run(
                run.tenant_id, started.queen_agent, started.queen_version, kind="swarm"
            ),
            result_type=SwarmOutput,
        )
    except ChildWorkflowError:
        # Terminated, timed out or cancelled by someone else (our own cancellation arrives
        # as CancelledError instead): the swarm's row says how far it got.
        pass
    answer: RecipeAnswerOutput = await workflow.execute_activity_method(
        RecipeActivities.recipe_answer,
        RecipeAnswerInput(tenant_id=run.tenant_id, swarm_id=started.swarm_id),
        **RUN_STORE.kwargs(),
    )
    return Answer(answer.text)


Handler = Callable[[ToolCallContext], Awaitable[Answer]]

HANDLERS: Final[dict[str, Handler]] = {
    FIND_TOOLS: find_tools,
    REMEMBER: remember,
    RECALL: recall,
}
"""Workflow tools answered by a handler, by name (`ask_human` goes through `HumanDesk`)."""

PREFIX_HANDLERS: Final[dict[str, Handler]] = {
    RECIPE_TOOL_PREFIX: run_recipe,
}
"""Tool families answered by a handler, by prefix (`agent:` runs are the workflow's own)."""


def handler_for(name: str) -> Handler | None:
    """The handler of a workflow tool's call, by its name or its family's prefix."""
    found = HANDLERS.get(name)
    if found is not None:
        return found
    return next((h for p, h in PREFIX_HANDLERS.items() if name.startswith(p)), None)


Announce = Callable[[list[RunEvent], Literal["running", "waiting"]], Awaitable[None]]
"""Records run events and the run's status (the workflow's store-lane write)."""


class HumanDesk:
    """Calls waiting for a human: approvals of gated tools, and `ask_human` questions.

    The workflow owns one; its `approve_tool_call` update calls `decide` (validated by
    `check`), and its `status` query shows `waiting`.
    """

    def __init__(self) -> None:
        self.pending: dict[str, PendingApproval] = {}
        self.decisions: dict[str, ApprovalDecision] = {}

    def check(self, decision: ApprovalDecision) -> None:
        """Reject a decision on a call that is not waiting for one."""
        if decision.call_id not in self.pending or decision.call_id in self.decisions:
            waiting = ", ".join(sorted(set(self.pending) - set(self.decisions))) or "none"
            raise ValueError(
                f"tool call {decision.call_id!r} is not waiting for approval (waiting: {waiting})"
            )

    def decide(self, decision: ApprovalDecision) -> None:
        """Take a human's decision on a pending call."""
        self.decisions[decision.call_id] = decision

    def waiting(self) -> list[PendingApproval]:
        """The calls still waiting for a decision."""
        return [p for call_id, p in self.pending.items() if call_id not in self.decisions]

    async def ask(
        self, plan: RunPlan, calls: list[ToolCallRef], announce: Announce
    ) -> dict[str, str]:
        """Put each `ask_human` question to the human; returns the results by call id."""
        timeout = plan.policies.get(ASK_HUMAN, ToolPolicy()).approval_timeout_s
        decisions = await self._wait(calls, {c.id: timeout for c in calls}, announce, asks=True)
        return {
            d.call_id: (
                f"The human answered: {d.answer}"
                if d.approved and d.answer
                else f"The human did not answer ({d.reason or 'no reason given'})."
            )
            for d in decisions
        }

    async def approve(
        self, plan: RunPlan, calls: list[ToolCallRef], announce: Announce
    ) -> dict[str, str]:
        """Wait for a decision on each call; a timeout counts as a denial. Returns denials."""
        timeouts = {c.id: plan.policies[c.name].approval_timeout_s for c in calls}
        decisions = await self._wait(calls, timeouts, announce, asks=False)
        return {
            d.call_id: f"a human denied this call: {d.reason or 'no reason given'}"
            for d in decisions
            if not d.approved
        }

    async def _wait(
        self,
        calls: list[ToolCallRef],
        timeouts: dict[str, float],
        announce: Announce,
        *,
        asks: bool,
    ) -> list[ApprovalDecision]:
        """Make each call pending (a question when it `asks`), announce them, and wait."""
        now = workflow.now()
        for call in calls:
            self.pending[call.id] = PendingApproval(
                call_id=call.id, tool=call.name,
                deadline=now + timedelta(seconds=timeouts[call.id]),
                question=_question(call) if asks else None,
            )  # fmt: skip
        await announce([_requested(self.pending[call.id]) for call in calls], "waiting")

        async def decide(call: ToolCallRef) -> ApprovalDecision:
            timeout = timeouts[call.id]
            try:
                await workflow.wait_condition(lambda: call.id in self.decisions, timeout=timeout)
            except TimeoutError:
                return ApprovalDecision(
                    call_id=call.id,
                    approved=False,
                    reason=f"no decision within {timeout:.0f}s (timed out)",
                )
            return self.decisions[call.id]

        decisions = await asyncio.gather(*(decide(call) for call in calls))
        await announce([_resolved(d) for d in decisions], "running")
        for call in calls:
            self.pending.pop(call.id, None)
        return list(decisions)


def _requested(pending: PendingApproval) -> RunEvent:
    question = {"question": pending.question} if pending.question is not None else {}
    return RunEvent(
        key=f"approval-requested-{pending.call_id}",
        type="approval.requested",
        data={
            "call_id": pending.call_id,
            "tool": pending.tool,
            "deadline": pending.deadline.isoformat(),
            **question,
        },
    )


def _resolved(decision: ApprovalDecision) -> RunEvent:
    answer = {"answer": decision.answer} if decision.answer is not None else {}
    return RunEvent(
        key=f"approval-resolved-{decision.call_id}",
        type="approval.resolved",
        data={
            "call_id": decision.call_id,
            "approved": decision.approved,
            "reason": decision.reason,
            **answer,
        },
    )


def failure_reason(exc: ActivityError) -> str:
    """What an activity's failure says, for a result or outcome reason."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}" if cause.type else cause.message
    return str(cause or exc)


def call_arguments(call: ToolCallRef) -> dict[str, Any]:
    """A workflow-answered call's arguments as an object ({} when they do not parse)."""
    return arguments_object(call.arguments)


def _question(call: ToolCallRef) -> str:
    """The question of an `ask_human` call (its raw arguments when they hold none)."""
    question = call_arguments(call).get("question")
    return question if isinstance(question, str) else call.arguments or ""
