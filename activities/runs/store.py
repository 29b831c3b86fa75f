"""Run bookkeeping in Postgres, on the memory lane: start, adopt messages, events, finish."""

import json

from temporalio import activity

from activities.runs import tool_results
from activities.tools.catalog import AGENT_TOOL_PREFIX, CatalogEntry, ToolCatalog
from core import metrics
from core.db import Pool
from core.errors import NotFound
from core.payloads import RunEvent, RunMode
from core.runs import agents, rollout
from core.runs import store as runs
from core.runs.agents import AgentsAsTools
from core.runs.hooks import RunFinishedHook
from core.runs.payloads import (
    AdoptMessagesInput,
    AgentSpec,
    ChildRunInput,
    ChildRunOutput,
    FinishRunInput,
    RecordEventsInput,
    RunPlan,
    StartRunInput,
    ToolCallOutput,
    ToolResultInput,
)
from core.tools.names import BLACKBOARD_TOOL_NAMES, FIND_TOOLS, WORKSPACE_TOOL_NAMES
from core.tools.payloads import ToolPolicy


class StoreActivities:
    """Postgres reads and writes of the run lifecycle; every write is idempotent."""

    def __init__(
        self,
        pool: Pool,
        catalog: ToolCatalog | None = None,
        *,
        after_finish: RunFinishedHook | None = None,
    ) -> None:
        """`after_finish` runs once a run's outcome is stored (evolution triggers use it)."""
        self._pool = pool
        self._catalog = catalog or ToolCatalog(agents=AgentsAsTools())
        self._after_finish = after_finish

    @activity.defn(name="start_run")
    async def start_run(self, input: StartRunInput) -> RunPlan:
        """Load the pinned agent version, adopt the first messages, mark the run running."""
        async with self._pool.connection() as conn:
            version = await agents.get_version(
                conn, input.tenant_id, input.agent_name, input.agent_version
            )
            texts = await runs.adopt_inbox(
                conn, input.tenant_id, input.run_id, input.inbox_ids, input.first_seq
            )
            await runs.set_status(conn, input.run_id, "running")
            spec = version.spec
            events = [
                RunEvent(
                    key="run-started",
                    type="run.started",
                    data={
                        "agent": input.agent_name,
                        "version": input.agent_version,
                        "model": spec.model,
                    },
                ),
                *_received(input.inbox_ids, texts, input.first_seq),
            ]
            await runs.append_events(conn, input.tenant_id, input.run_id, events)
            tools = await self._catalog.expand(conn, input.tenant_id, spec.tools)
            record = await runs.get_run(conn, input.tenant_id, input.run_id)
            if record.swarm_id is not None:
                tools += [t for t in BLACKBOARD_TOOL_NAMES if t not in tools]
            entries = await self._catalog.entries(
                conn, input.tenant_id, tools, drafts_of=(input.agent_name, input.agent_version)
            )
        plan = _plan(spec, tools, entries, input.mode)
        if record.swarm_id is None:
            return plan
        # A swarm's subtask: the model chain of its tier, and at most its budget share.
        cap, own = record.max_cost_usd, spec.limits.max_cost_usd
        limits = spec.limits.model_copy(
            update={"max_cost_usd": cap if own is None else own if cap is None else min(cap, own)}
        )
        return plan.model_copy(update={"models": record.models or plan.models, "limits": limits})

    @activity.defn(name="create_child_run")
    async def create_child_run(self, input: ChildRunInput) -> ChildRunOutput:
        """Create the run of an agent called as a tool (once per call: retries find it).

        Bad arguments or an unknown agent are answers for the model, not failures.
        """
        try:
            data = json.loads(input.arguments)
        except ValueError:
            data = None
        task = data.get("task") if isinstance(data, dict) else None
        if not isinstance(task, str) or not task.strip():
            return ChildRunOutput(
                error='Invalid arguments: send {"task": "..."} describing what the agent should do.'
            )
        key = f"child:{input.parent_run_id}:{input.call_id}"
        async with self._pool.connection() as conn:
            parent = await runs.get_run(conn, input.tenant_id, input.parent_run_id)
            try:
                if input.mode == "normal":  # a canary of the agent may take it, sticky per user
                    version, rollout_id = await rollout.resolve_version(
                        conn, input.tenant_id, input.agent_name, end_user=parent.end_user,
                        idempotency_key=key,
                    )  # fmt: skip
                else:
                    version = await agents.get_version(conn, input.tenant_id, input.agent_name)
                    rollout_id = None
            except NotFound:
                return ChildRunOutput(error=f"Agent '{input.agent_name}' does not exist.")
            record, inbox_id, _ = await runs.create_run(
                conn,
                tenant_id=input.tenant_id,
                agent_name=input.agent_name,
                agent_version=version.version,
                objective=task,
                mode=input.mode,
                idempotency_key=key,
                parent=(input.parent_run_id, input.call_id),
                end_user=parent.end_user,
                rollout_id=rollout_id,
            )
            await runs.append_event(
                conn, input.tenant_id, input.parent_run_id,
                RunEvent(key=f"child-{input.call_id}", type="child.started", data={
                    "call_id": input.call_id, "agent": input.agent_name, "run_id": record.id,
                }),
            )  # fmt: skip
        return ChildRunOutput(
            run_id=record.id,
            workflow_id=record.workflow_id,
            agent_version=record.agent_version,
            inbox_id=inbox_id,
        )

    @activity.defn(name="adopt_messages")
    async def adopt_messages(self, input: AdoptMessagesInput) -> int:
        """Move user messages from the inbox into the conversation. Returns how many."""
        async with self._pool.connection() as conn:
            texts = await runs.adopt_inbox(
                conn, input.tenant_id, input.run_id, input.inbox_ids, input.first_seq
            )
            await runs.append_events(
                conn,
                input.tenant_id,
                input.run_id,
                _received(input.inbox_ids, texts, input.first_seq),
            )
        return len(texts)

    @activity.defn(name="record_tool_result")
    async def record_tool_result(self, input: ToolResultInput) -> ToolCallOutput:
        """Store a tool call's result that the workflow holds; nothing is run."""
        return await tool_results.record(self._pool, input)

    @activity.defn(name="record_events")
    async def record_events(self, input: RecordEventsInput) -> None:
        """Append events the workflow originates, and move the run's status if asked."""
        async with self._pool.connection() as conn:
            if input.status is not None:
                await runs.set_status(conn, input.run_id, input.status)
            await runs.append_events(conn, input.tenant_id, input.run_id, input.events)

    @activity.defn(name="finish_run")
    async def finish_run(self, input: FinishRunInput) -> None:
        """Record the outcome, the final answer and the totals; emit `run.finished`.

        Then the `after_finish` hook, if any, sees the outcome.
        """
        async with self._pool.connection() as conn:
            result = None
            if input.result_seq is not None:
                result = (await runs.get_message(conn, input.run_id, input.result_seq)).content
            p = input.progress
            finished = await runs.finish(
                conn,
                input.run_id,
                outcome=input.outcome,
                reason=input.reason,
                result=result,
                progress=p,
            )
            data = {
                "outcome": input.outcome,
                "reason": input.reason,
                "result": runs.preview(result),
                "steps": p.step,
                "prompt_tokens": p.prompt_tokens,
                "completion_tokens": p.completion_tokens,
                "cost_usd": p.cost_usd,
                "cost_complete": p.cost_complete,
            }
            await runs.append_events(
                conn,
                input.tenant_id,
                input.run_id,
                [RunEvent(key="run-finished", type="run.finished", data=data)],
            )
        metrics.run_finished(input.tenant_id, input.outcome, recorded=finished)
        if self._after_finish is not None:
            await self._after_finish(input.tenant_id, input.run_id, input.outcome)


def _received(inbox_ids: list[int], texts: list[str], first_seq: int) -> list[RunEvent]:
    return [
        RunEvent(
            key=f"message-{inbox_id}",
            type="message.received",
            data={"seq": first_seq + i, "content": runs.preview(text)},
        )
        for i, (inbox_id, text) in enumerate(zip(inbox_ids, texts, strict=True))
    ]


MAX_OFFERED_TOOLS = 20
"""Beyond this many tools the model starts with the built-ins and `find_tools`, and
loads the others by searching (sending hundreds of schemas on every call costs tokens
and confuses models)."""


def _plan(
    spec: AgentSpec, tools: list[str], entries: dict[str, CatalogEntry], mode: RunMode
) -> RunPlan:
    """The run's plan: every tool with its effective policy; agents run as child runs."""
    policies: dict[str, ToolPolicy] = {}
    for name in tools:
        if name in BLACKBOARD_TOOL_NAMES and name not in spec.tools:
            continue  # a swarm's subtask gets them whatever its agent's tools
        entry = entries.get(name)
        effective = agents.resolve_for_agent(
            spec,
            name,
            defaults=entry.policy_defaults if entry else None,
            side_effects=entry.side_effects if entry else False,
            enabled=entry.enabled if entry else True,
            run_mode=mode,
        )
        if effective.mode != "allow" or name in spec.tool_policies:
            policies[name] = effective.as_tool_policy()
    agent_tools = {
        name: name.removeprefix(AGENT_TOOL_PREFIX)
        for name, entry in entries.items()
        if entry.kind == "agent"
    }
    offered = None
    if len(tools) > MAX_OFFERED_TOOLS:
        if FIND_TOOLS not in tools:
            tools = [*tools, FIND_TOOLS]
        offered = [
            n
            for n in tools
            if n == FIND_TOOLS or (n in entries and entries[n].kind in ("builtin", "workflow"))
        ]
    return RunPlan(
        models=[spec.model, *spec.fallback_models],
        tools=tools,
        policies=policies,
        limits=spec.limits,
        agent_tools=agent_tools,
        offered=offered,
        memory=spec.memory,
        workspace_tools=[
            n
            for n in tools
            if n in WORKSPACE_TOOL_NAMES or (n in entries and entries[n].kind == "code")
        ],
    )
