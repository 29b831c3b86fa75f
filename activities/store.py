"""Run bookkeeping in Postgres, on the memory lane: start, adopt messages, events, finish."""

from temporalio import activity

from core import agents, runs
from core.db import Pool
from core.models import (
    AdoptMessagesInput,
    FinishRunInput,
    RecordEventsInput,
    RunEvent,
    RunPlan,
    StartRunInput,
)


class StoreActivities:
    """Postgres reads and writes of the run lifecycle; every write is idempotent."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

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
        return RunPlan(
            models=[spec.model, *spec.fallback_models],
            tools=list(spec.tools),
            policies=dict(spec.tool_policies),
            limits=spec.limits,
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

    @activity.defn(name="record_events")
    async def record_events(self, input: RecordEventsInput) -> None:
        """Append events the workflow originates, and move the run's status if asked."""
        async with self._pool.connection() as conn:
            if input.status is not None:
                await runs.set_status(conn, input.run_id, input.status)
            await runs.append_events(conn, input.tenant_id, input.run_id, input.events)

    @activity.defn(name="finish_run")
    async def finish_run(self, input: FinishRunInput) -> None:
        """Record the outcome, the final answer and the totals; emit `run.finished`."""
        async with self._pool.connection() as conn:
            result = None
            if input.result_seq is not None:
                result = (await runs.get_message(conn, input.run_id, input.result_seq)).content
            p = input.progress
            await runs.finish(
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


def _received(inbox_ids: list[int], texts: list[str], first_seq: int) -> list[RunEvent]:
    return [
        RunEvent(
            key=f"message-{inbox_id}",
            type="message.received",
            data={"seq": first_seq + i, "content": runs.preview(text)},
        )
        for i, (inbox_id, text) in enumerate(zip(inbox_ids, texts, strict=True))
    ]
