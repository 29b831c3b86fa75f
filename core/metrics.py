"""Prometheus metrics: one registry per process.

The API serves it at `/metrics`; each worker process on its own port
(`COLONY_METRICS_PORT`, workers/main.py).

Counters move where a fact is stored: the activity that writes the ledger row, the
result or the outcome calls one function here after its write commits, and only when
the write was new, so a retried activity is not counted twice. Gauges of state that
lives in Postgres (live runs, approvals waiting, canaries...) are read at scrape time by
the API (`state_families`), so every API replica reports the same, correct figure.
Temporal's own SDK metrics join the registry through `core.temporal_metrics`.
Labels are bounded: tenant, model, tool, lane, never a run id. docs/observability.md
lists every series.
"""

import asyncio
from collections.abc import Iterable, Iterator, Mapping

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from core.payloads import ModelResult

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "colony_http_requests_total",
    "HTTP requests served by the API",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "colony_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
)
WORKFLOWS_STARTED = Counter(
    "colony_workflows_started_total",
    "Workflows started through the API",
    ["kind"],
    registry=REGISTRY,
)
GUARDRAIL_TRIGGERS = Counter(
    "colony_guardrail_triggers_total",
    "Guardrail triggers recorded in the safety log (by the worker process that enforced them)",
    ["guardrail", "stage", "action"],
    registry=REGISTRY,
)
RUNS_FINISHED = Counter(
    "colony_runs_finished_total",
    "Runs whose outcome was stored (finish_run), by final status and outcome",
    ["tenant", "status", "outcome"],
    registry=REGISTRY,
)
STEPS = Counter(
    "colony_steps_total",
    "Agent steps whose model answer was stored (call_llm)",
    ["tenant"],
    registry=REGISTRY,
)
MODEL_CALLS = Counter(
    "colony_model_calls_total",
    "Model calls written to the cost ledger (purpose: step, reflexion, queen)",
    ["tenant", "model", "purpose"],
    registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "colony_model_tokens_total",
    "Tokens of ledgered model calls (kind: prompt or completion)",
    ["tenant", "model", "kind"],
    registry=REGISTRY,
)
MODEL_COST = Counter(
    "colony_model_cost_usd_total",
    "Cost in USD of ledgered model calls whose price is known",
    ["tenant", "model"],
    registry=REGISTRY,
)
MODEL_UNPRICED = Counter(
    "colony_model_calls_unpriced_total",
    "Ledgered model calls without a known price (their cost is not in colony_model_cost_usd)",
    ["tenant", "model"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "colony_tool_calls_total",
    "Tool call results stored in a run's conversation (status: ok or error)",
    ["tenant", "tool", "status"],
    registry=REGISTRY,
)
TOOL_ERRORS = Counter(
    "colony_tool_errors_total",
    "Tool calls that ended in an error, by error type",
    ["tenant", "tool", "error_type"],
    registry=REGISTRY,
)
ACTIVITY_LATENCY = Histogram(
    "colony_activity_duration_seconds",
    "Activity attempt duration on the worker, by lane (task queue) and activity",
    ["lane", "activity", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
SWARM_SUBTASKS = Counter(
    "colony_swarm_subtasks_finished_total",
    "Swarm subtask attempts whose end was recorded (finish_subtask)",
    ["tenant", "outcome"],
    registry=REGISTRY,
)
EVOLUTION_CYCLES = Counter(
    "colony_evolution_cycles_finished_total",
    "Evolution cycles whose end was recorded (finish_evolution), by status and decision",
    ["tenant", "status", "decision"],
    registry=REGISTRY,
)


# -- where facts are recorded (one call per site) ----------------------------------------


def model_call(
    tenant_id: str, result: ModelResult, purpose: str = "step", *, recorded: bool = True
) -> None:
    """A model call's ledger row was written (`recorded`: it was new); a step counts a step."""
    if not recorded:
        return
    if purpose == "step":
        STEPS.labels(tenant_id).inc()
    MODEL_CALLS.labels(tenant_id, result.model, purpose).inc()
    MODEL_TOKENS.labels(tenant_id, result.model, "prompt").inc(result.usage.prompt_tokens)
    MODEL_TOKENS.labels(tenant_id, result.model, "completion").inc(result.usage.completion_tokens)
    if result.cost_usd is None:
        MODEL_UNPRICED.labels(tenant_id, result.model).inc()
    else:
        MODEL_COST.labels(tenant_id, result.model).inc(result.cost_usd)


def tool_call(tenant_id: str, tool: str, ok: bool, error_type: str | None) -> None:
    """A tool call's result was stored."""
    TOOL_CALLS.labels(tenant_id, tool, "ok" if ok else "error").inc()
    if not ok:
        TOOL_ERRORS.labels(tenant_id, tool, error_type or "error").inc()


def run_finished(tenant_id: str, outcome: str, *, recorded: bool) -> None:
    """A run's outcome was stored (`recorded`: by this call, the first finish)."""
    if not recorded:
        return
    status = {"succeeded": "succeeded", "cancelled": "cancelled"}.get(outcome, "failed")
    RUNS_FINISHED.labels(tenant_id, status, outcome).inc()


def swarm_subtask(tenant_id: str, outcome: str) -> None:
    """A swarm subtask's attempt ended and its end was stored."""
    SWARM_SUBTASKS.labels(tenant_id, outcome).inc()


def evolution_finished(tenant_id: str, status: str, decision: str, *, recorded: bool) -> None:
    """An evolution cycle's end was stored (`recorded`: by this call, the first finish)."""
    if recorded:
        EVOLUTION_CYCLES.labels(tenant_id, status, decision).inc()


# -- gauges read from Postgres at scrape time -----------------------------------------

_LIVE_RUNS = (
    "SELECT tenant_id, status, count(*) AS n FROM runs"
    " WHERE status IN ('queued', 'running', 'waiting') GROUP BY tenant_id, status"
)
# A tool call waits for a human from its `approval.requested` event until its
# `approval.resolved` one (workflows/_agent_tools.py), in a run that is still live.
_APPROVALS = (
    "SELECT r.tenant_id, count(*) AS n FROM runs r JOIN run_events e ON e.run_id = r.id"
    " WHERE r.status IN ('running', 'waiting') AND e.type = 'approval.requested'"
    " AND NOT EXISTS (SELECT 1 FROM run_events x WHERE x.run_id = e.run_id"
    "   AND x.key = 'approval-resolved-' || (e.data->>'call_id'))"
    " GROUP BY r.tenant_id"
)
_PROMOTIONS = (
    "SELECT tenant_id, count(*) AS n FROM evolutions WHERE status = 'waiting' GROUP BY tenant_id"
)
_SUBTASKS = (
    "SELECT t.tenant_id, t.status, count(*) AS n FROM swarm_subtasks t"
    " JOIN swarms s ON s.id = t.swarm_id WHERE s.finished_at IS NULL"
    " GROUP BY t.tenant_id, t.status"
)
_CYCLES = (
    "SELECT tenant_id, status, count(*) AS n FROM evolutions"
    " WHERE finished_at IS NULL GROUP BY tenant_id, status"
)
_CANARIES = "SELECT tenant_id, agent_name, kind, share FROM rollouts WHERE status = 'active'"


async def state_families(conn: AsyncConnection[DictRow]) -> list[Metric]:
    """Gauges of what Postgres holds now: the same on every API replica."""
    runs = GaugeMetricFamily(
        "colony_runs", "Runs not finished yet, by status", labels=["tenant", "status"]
    )
    approvals = GaugeMetricFamily(
        "colony_approvals_waiting",
        "Decisions waiting for a human (kind: tool call, or evolution promotion)",
        labels=["tenant", "kind"],
    )
    subtasks = GaugeMetricFamily(
        "colony_swarm_subtasks",
        "Subtasks of swarms not finished yet, by status",
        labels=["tenant", "status"],
    )
    cycles = GaugeMetricFamily(
        "colony_evolution_cycles",
        "Evolution cycles not finished yet, by status (waiting: for a promotion approval)",
        labels=["tenant", "status"],
    )
    canaries = GaugeMetricFamily(
        "colony_canary_share",
        "Active rollouts (canary or degradation watch): share of runs on the new version",
        labels=["tenant", "agent", "kind"],
    )
    for family, sql, labels in (
        (runs, _LIVE_RUNS, ("tenant_id", "status")),
        (approvals, _APPROVALS, ("tenant_id",)),
        (subtasks, _SUBTASKS, ("tenant_id", "status")),
        (cycles, _CYCLES, ("tenant_id", "status")),
    ):
        cur = await conn.execute(sql)
        for row in await cur.fetchall():
            values = [str(row[k]) for k in labels]
            if family is approvals:
                values.append("tool_call")
            family.add_metric(values, float(row["n"]))
    cur = await conn.execute(_PROMOTIONS)
    for row in await cur.fetchall():
        approvals.add_metric([row["tenant_id"], "promotion"], float(row["n"]))
    cur = await conn.execute(_CANARIES)
    for row in await cur.fetchall():
        canaries.add_metric([row["tenant_id"], row["agent_name"], row["kind"]], float(row["share"]))
    return [runs, approvals, subtasks, cycles, canaries]


# -- one exposition for a process and the workers it aggregates ---------------------------

PROCESS_LABEL = "colony_process"
"""The label naming the process a series came from when `/metrics` aggregates workers."""


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(
    registry: CollectorRegistry, extra: Iterable[Metric] = (), *, tenant: str | None = None
) -> bytes:
    """Prometheus text of `registry` plus `extra` families.

    With `tenant`, samples labelled with another tenant are left out (`tenant_view`).
    """
    out = CollectorRegistry(auto_describe=False)
    out.register(_Families(tenant_view([*registry.collect(), *extra], tenant)))
    return generate_latest(out)


def tenant_view(families: Iterable[Metric], tenant: str | None) -> list[Metric]:
    """`families` without the samples of tenants other than `tenant` (None: all tenants).

    Tenant content (agent, tool and model names, spend) only appears in series labelled
    with the tenant; the unlabelled ones describe the platform (routes, lanes, Temporal).
    """
    if tenant is None:
        return list(families)
    out = []
    for family in families:
        kept = Metric(family.name, family.documentation, family.type)
        kept.samples = [s for s in family.samples if s.labels.get("tenant", tenant) == tenant]
        out.append(kept)
    return out


async def aggregate(
    own: CollectorRegistry,
    targets: Mapping[str, str],
    extra: Iterable[Metric] = (),
    *,
    tenant: str | None = None,
) -> bytes:
    """This process's metrics and those of the worker endpoints `targets` (name -> URL).

    Every sample gets `colony_process` (`api`, or the target's name); families of the same
    name merge into one. A target that does not answer is left out, and
    `colony_metrics_target_up{colony_process=...}` says so. `tenant` as in `exposition`.
    """
    async with httpx.AsyncClient(timeout=3.0) as http:
        texts = await asyncio.gather(
            *(_scrape(http, url) for url in targets.values()), return_exceptions=False
        )
    up = GaugeMetricFamily(
        "colony_metrics_target_up",
        "1 when the worker endpoint answered this scrape of the API's /metrics",
        labels=[PROCESS_LABEL],
    )
    merged: dict[str, Metric] = {}
    sources = [("api", generate_latest(own).decode())]
    for name, text in zip(targets, texts, strict=True):
        up.add_metric([name], 0.0 if text is None else 1.0)
        if text is not None:
            sources.append((name, text))
    for name, text in sources:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            into.samples += [
                Sample(s.name, {**s.labels, PROCESS_LABEL: name}, s.value, s.timestamp)
                for s in family.samples
            ]
    return exposition(CollectorRegistry(), [*merged.values(), up, *extra], tenant=tenant)


async def _scrape(http: httpx.AsyncClient, url: str) -> str | None:
    try:
        response = await http.get(url)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return response.text
