"""Colony's own spans, inside the ones Temporal's tracing interceptor makes.

One trace runs from the API request to the last activity (docs/observability.md):

    POST /v1/runs                              FastAPI instrumentation (api/main.py)
      StartWorkflow:AgentRunWorkflow           client interceptor: context into the headers
        RunWorkflow:AgentRunWorkflow           zero-length; never made again on replay
        StartActivity:call_llm
          RunActivity:call_llm
            chat {model}                       `chat`: gen_ai.* attributes and cost
        StartActivity:execute_tool             (execute_local_tool for calculator, get_time)
          RunActivity:execute_tool
            execute_tool {name}                `tool_span`
        ...                                    memory {op}, swarm_subtask {id}, evolution {stage}

Every span here is made in activity code, never in a workflow: a replayed workflow task
would make it again. They use the global tracer provider (`core.telemetry.setup_tracing`),
as the interceptor and the FastAPI instrumentation do by default, so one provider's
processors see them all. Attribute names follow the OpenTelemetry GenAI and database
semantic conventions where one exists, `colony.*` otherwise.
"""

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from core.payloads import ModelResult

_TRACER = trace.get_tracer("colony")
"""A proxy until the process installs its provider; it then uses that provider."""

P = ParamSpec("P")
O = TypeVar("O")  # noqa: E741


def _run_attributes(run_id: str, tenant: str) -> dict[str, AttributeValue]:
    return {"colony.run_id": run_id, "colony.tenant": tenant}


def _error_type(exc: BaseException) -> str:
    # An ApplicationError's type is Colony's ErrorType (RateLimited, ToolFailed...).
    kind = getattr(exc, "type", None)
    return kind if isinstance(kind, str) and kind else type(exc).__name__


@contextmanager
def _span(
    name: str, attributes: dict[str, AttributeValue], kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    with _TRACER.start_as_current_span(name, kind=kind, attributes=attributes) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", _error_type(exc))
            raise


async def chat(
    call: Awaitable[ModelResult],
    model: str,
    *,
    provider: str,
    run_id: str | None = None,
    tenant: str | None = None,
) -> ModelResult:
    """Await one model call inside a `chat {model}` span (GenAI semantic conventions).

    The span gets the call's usage, finish reason and cost (`colony.cost_usd`, absent
    when the model's price is unknown); a failed call gets `error.type`.

    Args:
        call: The model call, not yet awaited.
        model: The model asked for (e.g. `openai/gpt-4o-mini`).
        provider: Its provider as routing resolved it (`openai`, `anthropic`...).
        run_id: The run the call is a step of (none for a queen's or a grader's call;
            the span's parents name its workflow).
        tenant: The run's tenant.
    """
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the attribute's name before semconv 1.37
        "gen_ai.request.model": model,
    }
    if run_id is not None:
        attributes["colony.run_id"] = run_id
    if tenant is not None:
        attributes["colony.tenant"] = tenant
    with _span(f"chat {model}", attributes, SpanKind.CLIENT) as span:
        result = await call
        span.set_attributes(
            {
                "gen_ai.response.model": result.model,
                "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": result.usage.completion_tokens,
                "gen_ai.response.finish_reasons": [result.finish_reason or "unknown"],
                "colony.latency_ms": result.latency_ms,
            }
        )
        if result.cost_usd is not None:
            span.set_attribute("colony.cost_usd", result.cost_usd)
        return result


class ToolSpan:
    """The span of one tool call; `failed` records how a call that returned went wrong."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def failed(self, error_type: str | None) -> None:
        """Mark the call failed with `error_type` (an ErrorType), if not None."""
        if error_type is not None:
            self._span.set_attribute("error.type", error_type)


@contextmanager
def tool_span(name: str, call_id: str, *, run_id: str, tenant: str) -> Iterator[ToolSpan]:
    """An `execute_tool {name}` span around one tool call (GenAI semantic conventions).

    A call that raises gets `error.type` from the exception; one whose error is a result
    the model reads (a denial, bad arguments) gets it through `ToolSpan.failed`.
    """
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        **_run_attributes(run_id, tenant),
    }
    with _span(f"execute_tool {name}", attributes) as span:
        yield ToolSpan(span)


def memory_operation(
    operation: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, O]]], Callable[P, Coroutine[Any, Any, O]]]:
    """Decorate a memory store method `(self, input)`: a `memory {operation}` span per call.

    Attributes: `colony.memory.operation`, `db.collection.name` (the store's Qdrant
    collection), `db.namespace` and `colony.tenant` (the input's tenant), the input's item
    count and the output's counts (`colony.memory.written`, `.hits`, `.deleted`).
    """

    def decorate(
        method: Callable[P, Coroutine[Any, Any, O]],
    ) -> Callable[P, Coroutine[Any, Any, O]]:
        @functools.wraps(method)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> O:
            store, input = args[0], args[1] if len(args) > 1 else kwargs.get("input")
            tenant = str(getattr(input, "tenant_id", ""))
            attributes: dict[str, AttributeValue] = {
                "colony.memory.operation": operation,
                "db.operation.name": operation,
                "db.namespace": tenant,
                "colony.tenant": tenant,
            }
            collection = getattr(store, "collection", None)
            if isinstance(collection, str):
                attributes["db.collection.name"] = collection
            items = getattr(input, "items", None)
            if isinstance(items, list):
                attributes["colony.memory.items"] = len(items)
            with _span(f"memory {operation}", attributes) as span:
                output = await method(*args, **kwargs)
                span.set_attributes(_memory_counts(output))
                return output

        return traced

    return decorate


def _memory_counts(output: Any) -> dict[str, AttributeValue]:
    counts: dict[str, AttributeValue] = {}
    for name in ("written", "deleted"):
        value = getattr(output, name, None)
        if isinstance(value, int):
            counts[f"colony.memory.{name}"] = value
    hits = getattr(output, "hits", None)
    if isinstance(hits, list):
        counts["colony.memory.hits"] = len(hits)
    return counts


class _SubtaskRun(Protocol):
    @property
    def subtask_id(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def agent_name(self) -> str: ...
    @property
    def agent_version(self) -> int: ...
    @property
    def error(self) -> str | None: ...


def subtasks_started(tenant: str, swarm_id: str, started: Sequence[_SubtaskRun]) -> None:
    """One `swarm_subtask {id}` span per subtask attempt `start_subtasks` created.

    Attributes: `colony.swarm.id`, `colony.swarm.subtask.id`, `colony.swarm.subtask.stage`
    (`start`), the agent (`gen_ai.agent.name`, `colony.agent.version`), the attempt's run,
    and `error.type` (`RoleUnfilled`) for a subtask that could not start.
    """
    for run in started:
        attributes: dict[str, AttributeValue] = {
            "colony.swarm.id": swarm_id,
            "colony.swarm.subtask.id": run.subtask_id,
            "colony.swarm.subtask.stage": "start",
            "gen_ai.agent.name": run.agent_name,
            "colony.agent.version": run.agent_version,
            **_run_attributes(run.run_id, tenant),
        }
        if run.error is not None:
            attributes["error.type"] = "RoleUnfilled"
        with _span(f"swarm_subtask {run.subtask_id}", attributes):
            pass


def subtask_finished(
    tenant: str, swarm_id: str, subtask_id: str, *, attempt: int, run_id: str, outcome: str
) -> None:
    """A `swarm_subtask {id}` span for an attempt's end.

    Stage `finish`, with `colony.swarm.subtask.outcome` and the attempt's run.
    """
    attributes: dict[str, AttributeValue] = {
        "colony.swarm.id": swarm_id,
        "colony.swarm.subtask.id": subtask_id,
        "colony.swarm.subtask.stage": "finish",
        "colony.swarm.subtask.attempt": attempt,
        "colony.swarm.subtask.outcome": outcome,
        **_run_attributes(run_id, tenant),
    }
    with _span(f"swarm_subtask {subtask_id}", attributes):
        pass


def evolution_stage(
    tenant: str,
    cycle_id: str,
    stage: str,
    *,
    decision: str | None = None,
    version: int | None = None,
) -> None:
    """An `evolution {stage}` span for a cycle's start, decision or end.

    Attributes: `colony.evolution.id`, `colony.evolution.stage`, and when given
    `colony.evolution.decision` and `colony.evolution.version`.
    """
    attributes: dict[str, AttributeValue] = {
        "colony.evolution.id": cycle_id,
        "colony.evolution.stage": stage,
        "colony.tenant": tenant,
    }
    if decision is not None:
        attributes["colony.evolution.decision"] = decision
    if version is not None:
        attributes["colony.evolution.version"] = version
    with _span(f"evolution {stage}", attributes):
        pass
