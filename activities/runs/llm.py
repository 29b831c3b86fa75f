"""The LLM lane's activities: `call_llm` (one step of the agent loop) and the lane probe."""

import asyncio
import contextlib
import logging
import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import persistence
from activities._common import PinnedVersions, append_run_event, worker_identity
from activities.heartbeats import heartbeat_every
from activities.providers.client import ModelClient
from activities.providers.pricing import estimate_prompt_cost
from activities.providers.routing import resolve
from activities.runs import context as llm_context
from activities.runs.guardrails import Guard, raise_if_withheld
from activities.spend import refuse_over_cap, spend_state
from activities.tools.catalog import ToolCatalog, answered_by_workflow, model_names
from core import metrics
from core.db import Pool
from core.errors import ErrorType
from core.memory.payloads import ReflectInput, ReflectOutput
from core.payloads import (
    ChatMessage,
    ModelRequest,
    ModelResult,
    ModelUsage,
    RunEvent,
    ToolCallRequest,
    wrap_untrusted,
)
from core.providers import ping_provider
from core.runs import agents
from core.runs import store as runs
from core.runs.agents import AgentsAsTools
from core.runs.payloads import LlmCallInput, LlmCallOutput, ToolCallRef
from core.settings import Settings
from core.stack_check import LaneReport, ProbeInput

ATTEMPTS_PER_MODEL = 4
"""Retryable failures of one model before the fallback chain moves on (Temporal retries);
after that many attempts on the last model the call fails for good."""

MAX_TOOL_RESULT_IN_PROMPT = 16_000
"""Characters of one tool result the model sees; the whole output stays in Postgres."""

MAX_WORKFLOW_ARGUMENTS = 20_000
"""Argument characters carried in the workflow for the tools it answers itself (ask_human,
find_tools, agents); the whole text stays in Postgres."""

log = logging.getLogger(__name__)
_DELTA_FLUSH_SECONDS = 0.25
_DELTA_FLUSH_CHARS = 400
_DELTA_CONNECTION_TIMEOUT_S = 1.0
"""Longest wait for a connection to publish live text (the stream is not held up long)."""
_HEARTBEAT_SECONDS = 5.0


class LlmActivities:
    """Activities served by the `llm` lane."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        models: ModelClient,
        catalog: ToolCatalog | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._models = models
        self._catalog = catalog or ToolCatalog(agents=AgentsAsTools())
        self._versions = PinnedVersions()
        self._guard = Guard(settings, pool)

    @activity.defn(name="probe_llm_lane")
    async def probe_llm_lane(self, input: ProbeInput) -> LaneReport:
        """Report the default model's provider and check its endpoint answers (no model call)."""
        started = time.perf_counter()
        provider = await ping_provider(self._settings)
        return LaneReport(
            lane="llm",
            ok=provider.configured,
            detail=f"{provider.default_model}: {provider.detail}",
            worker=worker_identity(),
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    @activity.defn(name="call_llm")
    async def call_llm(self, input: LlmCallInput) -> LlmCallOutput:
        """Call the model for one step: fallback chain, streaming, cost ledger, events.

        Idempotent: if this step's answer is already stored (a worker died after writing
        it), it is returned without calling the model again; if an earlier attempt got the
        answer but could not store it (Postgres down), it is stored now
        (activities/persistence.py).
        """
        earlier = persistence.earlier_work(1)
        if earlier is not None:
            message = ChatMessage.model_validate(earlier["message"])
            return await self._save(input, ModelResult.model_validate(earlier["result"]), message)
        async with self._pool.connection() as conn:
            history, stored = await runs.load_step(
                conn, input.run_id, input.upto_seq, input.write_seq
            )
            if stored is not None:
                return await self._stored_output(conn, input, stored)
            version = await self._version(conn, input)
            entries = await self._catalog.entries(
                conn, input.tenant_id, input.tools,
                drafts_of=(input.agent_name, input.agent_version),
            )  # fmt: skip
            memory, summary = await runs.prompt_context(conn, input.run_id, input.upto_seq)
            spend = await spend_state(conn, self._settings, input.tenant_id)
        spec = version.spec
        history = await self._guard.screen_prompt(input, spec.guardrails, history)
        names = model_names(entries.values())  # model's name -> Colony name
        to_model = {colony: model for model, colony in names.items() if model != colony}
        tail = [(seq, m) for seq, m in history if summary is None or seq > summary[0]]
        extra = ModelUsage()
        extra_cost: float | None = 0.0
        budget = llm_context.window_budget(spec, input.models[0])
        if llm_context.estimate_tokens([m for _, m in tail], MAX_TOOL_RESULT_IN_PROMPT) > budget:
            summary, extra, extra_cost = await self._summarize(input, history, summary, budget)
            tail = [(seq, m) for seq, m in history if summary is None or seq > summary[0]]
        request = ModelRequest(
            model=input.models[0],
            messages=[
                ChatMessage(
                    role="system",
                    content=llm_context.with_context(spec.instructions, memory, summary),
                ),
                *(_for_prompt(input.run_id, seq, m, to_model) for seq, m in tail),
            ],
            tools=[entry.schema for entry in entries.values()],
            max_tokens=spec.max_output_tokens,
            temperature=spec.temperature,
        )
        refuse_over_cap(spend, self._settings, request)  # the tenant's spend caps
        # An answer a guardrail checks is not streamed live: it is seen whole first.
        result = await self._with_fallbacks(
            input, request, live=not spec.guardrails.screens("output")
        )
        if extra.prompt_tokens or extra.completion_tokens:
            # The summary call is part of this step's cost (budgets see it).
            result = result.model_copy(
                update={
                    "usage": ModelUsage(
                        prompt_tokens=result.usage.prompt_tokens + extra.prompt_tokens,
                        completion_tokens=result.usage.completion_tokens + extra.completion_tokens,
                    ),
                    "cost_usd": None
                    if result.cost_usd is None or extra_cost is None
                    else result.cost_usd + extra_cost,
                }
            )
        message = _with_unique_call_ids(result.message, input.step, names)
        message = await self._guard.screen_answer(input, spec.guardrails, message)
        return await self._save(input, result, message)

    async def _save(
        self, input: LlmCallInput, result: ModelResult, message: ChatMessage
    ) -> LlmCallOutput:
        """Store the step's answer, kept in heartbeats until Postgres has it."""

        async def write() -> None:
            # One round trip: the answer, its ledger row and its events commit together.
            async with self._pool.connection() as conn, conn.pipeline():
                await runs.write_message(
                    conn, input.tenant_id, input.run_id, input.write_seq, message
                )
                await self._ledger(conn, input, result)
                await runs.append_events(
                    conn, input.tenant_id, input.run_id, _result_events(input.step, result, message)
                )

        dead = persistence.earlier_work(0) or []
        work = {
            "message": message.model_dump(mode="json"),
            "result": result.model_dump(mode="json"),
        }
        await persistence.keep(write, (dead, work))
        metrics.model_call(input.tenant_id, result)
        return _output(
            input.write_seq,
            message,
            result.model,
            result.usage,
            result.cost_usd,
            result.finish_reason,
        )

    async def _version(self, conn: runs.Conn, input: LlmCallInput) -> agents.AgentVersion:
        """The run's pinned agent version; versions never change, so they are cached."""
        return await self._versions.get(
            conn, input.tenant_id, input.agent_name, input.agent_version
        )

    async def _summarize(
        self,
        input: LlmCallInput,
        history: list[tuple[int, ChatMessage]],
        previous: tuple[int, str] | None,
        budget: int,
    ) -> tuple[tuple[int, str] | None, ModelUsage, float | None]:
        """Summarize the older messages so the rest fits `budget`; stored once per cut.

        Returns the summary to use (upto seq, text) and what the call cost.
        """
        cut = llm_context.cut_point(history, budget // 2, MAX_TOOL_RESULT_IN_PROMPT)
        if cut is None or (previous is not None and cut <= previous[0]):
            return previous, ModelUsage(), 0.0
        start = previous[0] if previous else 0
        older = [m for seq, m in history if start < seq <= cut]
        text = llm_context.render_for_summary(
            previous[1] if previous else None, older, int(budget * llm_context.CHARS_PER_TOKEN)
        )
        result = await complete_any(
            self._models,
            input.models,
            ModelRequest(
                model=input.models[0],
                messages=[
                    ChatMessage(role="system", content=llm_context.SUMMARY_PROMPT),
                    ChatMessage(role="user", content=text),
                ],
                max_tokens=1000,
                temperature=0.0,
            ),
        )
        summary = (result.message.content or "").strip() or text[-4000:]
        async with self._pool.connection() as conn:
            stored = await runs.store_summary(
                conn, input.tenant_id, input.run_id, cut, summary, result.model
            )
            await self._ledger(conn, input, result, purpose="summary")
            await runs.append_event(
                conn, input.tenant_id, input.run_id,
                RunEvent(key=f"summary-{cut}", type="conversation.summarized", data={
                    "upto_seq": cut, "summary": runs.preview(stored, 1000),
                }),
            )  # fmt: skip
        return (cut, stored), result.usage, result.cost_usd

    @activity.defn(name="reflect_on_run")
    async def reflect_on_run(self, input: ReflectInput) -> ReflectOutput:
        """Critique a finished run: a summary, a lesson for next time and a reward.

        Idempotent: the critique is stored as the run's `memory.reflected` event and a
        retry returns it. Its cost is ledgered and added to the run's totals.
        """
        async with self._pool.connection() as conn:
            done = await runs.find_event(conn, input.run_id, "reflexion")
            if done is not None:
                return ReflectOutput.model_validate(done.data)
            run = await runs.get_run(conn, input.tenant_id, input.run_id)
            messages = await runs.load_messages(conn, input.run_id, 1_000_000)
        result = await complete_any(
            self._models,
            input.models,
            ModelRequest(
                model=input.models[0],
                messages=[
                    ChatMessage(role="system", content=llm_context.REFLECT_PROMPT),
                    ChatMessage(role="user", content=llm_context.transcript(run, messages)),
                ],
                max_tokens=500,
                temperature=0.0,
            ),
        )
        critique = llm_context.parse_critique(result.message.content, run.outcome)
        output = ReflectOutput(
            summary=critique.summary,
            lesson=critique.lesson,
            reward=critique.reward,
            cost_usd=result.cost_usd,
        )
        async with self._pool.connection() as conn, conn.transaction():
            new = await self._ledger(conn, input, result, purpose="reflexion")
            if new:
                await runs.add_cost(conn, input.run_id, result.usage, result.cost_usd)
            await runs.append_event(
                conn, input.tenant_id, input.run_id,
                RunEvent(key="reflexion", type="memory.reflected", data=output.model_dump()),
            )  # fmt: skip
        metrics.model_call(input.tenant_id, result, "reflexion", recorded=new)
        return output

    async def _ledger(
        self,
        conn: runs.Conn,
        call: LlmCallInput | ReflectInput,
        result: ModelResult,
        purpose: runs.LlmPurpose = "step",
    ) -> bool:
        """The cost ledger's row for a model call of the run's step; False if already there."""
        return await runs.record_llm_call(
            conn, tenant_id=call.tenant_id, run_id=call.run_id, step=call.step,
            model=result.model, provider=resolve(result.model, self._settings).provider,
            usage=result.usage, cost_usd=result.cost_usd, latency_ms=result.latency_ms,
            purpose=purpose,
        )  # fmt: skip

    async def _with_fallbacks(
        self, input: LlmCallInput, request: ModelRequest, *, live: bool = True
    ) -> ModelResult:
        """Primary first, then each fallback; see ATTEMPTS_PER_MODEL."""
        info = activity.info()
        # Models that failed for good in an earlier attempt are remembered in heartbeats.
        dead: list[str] = list(info.heartbeat_details[0]) if info.heartbeat_details else []
        start = min((info.attempt - 1) // ATTEMPTS_PER_MODEL, len(input.models) - 1)
        candidates = [m for m in input.models[start:] if m not in dead] or input.models[-1:]
        last_error: ApplicationError | None = None
        for model in candidates:
            check_budget(request, model, input.budget_remaining_usd, self._settings)
            publisher = _DeltaPublisher(self._pool, input, model, dead, live=live)
            try:
                async with publisher:
                    return await self._models.complete_with_breaker(
                        request.model_copy(update={"model": model}), on_delta=publisher.add
                    )
            except ApplicationError as exc:
                last_error = exc
                if not exc.non_retryable:
                    if info.attempt < ATTEMPTS_PER_MODEL * len(input.models):
                        raise  # Temporal retries (after Retry-After, if the provider sent one)
                    raise ApplicationError(
                        f"retries exhausted after {info.attempt} attempts over {len(input.models)} "
                        f"model(s); last error: {exc.message}",
                        type=exc.type,
                        non_retryable=True,
                    ) from exc
                dead.append(model)
                activity.heartbeat(dead)
                await append_run_event(
                    self._pool, input.tenant_id, input.run_id, "model.fallback",
                    f"fallback-{input.step}-{model}",
                    {"step": input.step, "model": model, "error": exc.type, "message": exc.message},
                )  # fmt: skip
        assert last_error is not None
        raise ApplicationError(
            f"every model failed: {', '.join(dead)}; last error: {last_error.message}",
            type=last_error.type,
            non_retryable=True,
        )

    async def _stored_output(
        self, conn: runs.Conn, input: LlmCallInput, message: ChatMessage
    ) -> LlmCallOutput:
        call = await runs.get_llm_call(conn, input.run_id, input.step)
        model = call["model"] if call else input.models[0]
        usage = (
            ModelUsage(
                prompt_tokens=call["prompt_tokens"], completion_tokens=call["completion_tokens"]
            )
            if call
            else ModelUsage()
        )
        cost = float(call["cost_usd"]) if call and call["cost_usd"] is not None else None
        return _output(input.write_seq, message, model, usage, cost, None)


async def complete_any(
    client: ModelClient, models: list[str], request: ModelRequest
) -> ModelResult:
    """One call outside the step loop: each model in turn while they fail for good.

    Retryable failures raise (Temporal retries the activity).
    """
    last: ApplicationError | None = None
    for model in models:
        try:
            return await client.complete_with_breaker(request.model_copy(update={"model": model}))
        except ApplicationError as exc:
            if not exc.non_retryable:
                raise
            last = exc
    assert last is not None
    raise last


def check_budget(
    request: ModelRequest, model: str, remaining_usd: float | None, settings: Settings
) -> None:
    """Refuse a call whose prompt alone would cost more than what remains of a budget.

    Raises:
        ApplicationError: `BudgetExceeded` (non-retryable).
    """
    if remaining_usd is None:
        return
    estimate = estimate_prompt_cost(request.model_copy(update={"model": model}), settings)
    if estimate is not None and estimate > remaining_usd:
        raise ApplicationError(
            f"the next call to {model} would cost about ${estimate:.6f} for the prompt alone; "
            f"${remaining_usd:.6f} of max_cost_usd remains",
            type=ErrorType.BUDGET_EXCEEDED.value,
            non_retryable=True,
        )


def _output(
    seq: int,
    message: ChatMessage,
    model: str,
    usage: ModelUsage,
    cost: float | None,
    finish_reason: str | None,
) -> LlmCallOutput:
    raise_if_withheld(message)  # stored first: the notice and the call's cost stay
    return LlmCallOutput(
        message_seq=seq,
        tool_calls=[
            ToolCallRef(
                id=c.id,
                name=c.name,
                index=i,
                arguments=runs.preview(c.arguments, MAX_WORKFLOW_ARGUMENTS)
                if answered_by_workflow(c.name)
                else None,
            )
            for i, c in enumerate(message.tool_calls)
        ],
        text=runs.preview(message.content),
        finish_reason=finish_reason,
        model=model,
        usage=usage,
        cost_usd=cost,
    )


def _for_prompt(
    run_id: str, seq: int, message: ChatMessage, to_model: dict[str, str]
) -> ChatMessage:
    """A stored message as the model sees it.

    Tool output is data, never instructions: it is delimited as such and cut at
    `MAX_TOOL_RESULT_IN_PROMPT` characters with a pointer to the whole text. Tool names
    the provider would refuse are sent in their model-facing spelling.
    """
    if message.role == "tool":
        return message.model_copy(
            update={
                "content": wrap_untrusted(
                    message.name or "tool",
                    message.tool_call_id or "",
                    message.content or "",
                    MAX_TOOL_RESULT_IN_PROMPT,
                    run_id=run_id,
                    seq=seq,
                ),
                "name": to_model.get(message.name or "", message.name),
            }
        )
    if message.tool_calls and to_model:
        calls = [
            c.model_copy(update={"name": to_model.get(c.name, c.name)}) for c in message.tool_calls
        ]
        return message.model_copy(update={"tool_calls": calls})
    return message


def _with_unique_call_ids(message: ChatMessage, step: int, names: dict[str, str]) -> ChatMessage:
    """Give every call a unique id and its Colony tool name.

    Small models repeat or omit call ids; results must map back to exactly one call.
    """
    seen: set[str] = set()
    calls = []
    for i, call in enumerate(message.tool_calls):
        call_id = call.id if call.id and call.id not in seen else f"call_{step}_{i}"
        seen.add(call_id)
        name = names.get(call.name, call.name)
        calls.append(ToolCallRequest(id=call_id, name=name, arguments=call.arguments))
    return message.model_copy(update={"tool_calls": calls})


def _result_events(step: int, result: ModelResult, message: ChatMessage) -> list[RunEvent]:
    calls = [
        {"id": c.id, "name": c.name, "arguments": runs.preview(c.arguments, 500)}
        for c in message.tool_calls
    ]
    return [
        RunEvent(
            key=f"model-message-{step}",
            type="model.message",
            data={
                "step": step,
                "model": result.model,
                "content": runs.preview(message.content),
                "tool_calls": calls,
            },
        ),
        RunEvent(
            key=f"cost-{step}",
            type="cost",
            data={
                "step": step,
                "model": result.model,
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
                "cost_usd": result.cost_usd,
                "latency_ms": round(result.latency_ms, 1),
            },
        ),
        # Announced with the answer that asks for them (one write, not one per call).
        *(
            RunEvent(
                key=f"tool-call-{call['id']}",
                type="tool.call",
                data={"call_id": call["id"], "tool": call["name"], "arguments": call["arguments"]},
            )
            for call in calls
        ),
    ]


class _DeltaPublisher:
    """Batches streamed text into `model.delta` events and heartbeats while the call runs."""

    def __init__(
        self, pool: Pool, input: LlmCallInput, model: str, dead: list[str], *, live: bool = True
    ) -> None:
        self._pool = pool
        self._live = live  # False: no model.delta events (heartbeats go on)
        self._input = input
        self._model = model
        self._dead = dead
        self._buffer: list[str] = []
        self._chars = 0
        self._count = 0
        self._last_flush = time.monotonic()
        self._beat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "_DeltaPublisher":
        self._beat = asyncio.create_task(self._heartbeat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if exc[0] is None:
            await self._flush()

    async def _heartbeat(self) -> None:
        # The first token may take long; heartbeats prove the worker is alive meanwhile.
        # None at the start: each one is a server round trip and a write, and most
        # answers come before the first is due.
        while True:
            await asyncio.sleep(heartbeat_every(_HEARTBEAT_SECONDS))
            activity.heartbeat(self._dead)

    async def add(self, text: str) -> None:
        if not self._live:
            return
        self._buffer.append(text)
        self._chars += len(text)
        if (
            self._chars >= _DELTA_FLUSH_CHARS
            or time.monotonic() - self._last_flush >= _DELTA_FLUSH_SECONDS
        ):
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        text, self._buffer, self._chars = "".join(self._buffer), [], 0
        self._count += 1
        self._last_flush = time.monotonic()
        attempt = activity.info().attempt
        event = RunEvent(
            key=f"delta-{self._input.step}-{attempt}-{self._model}-{self._count}",
            type="model.delta",
            data={"step": self._input.step, "attempt": attempt, "model": self._model, "text": text},
        )
        try:
            async with self._pool.connection(timeout=_DELTA_CONNECTION_TIMEOUT_S) as conn:
                await runs.append_event(conn, self._input.tenant_id, self._input.run_id, event)
        except persistence.UNREACHABLE as exc:
            # Live text is a courtesy to watchers; the answer itself is what must be kept.
            log.warning("model.delta not published, Postgres unreachable: %s", exc)
        activity.heartbeat(self._dead)
