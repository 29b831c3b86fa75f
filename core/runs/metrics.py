"""Metrics per agent version, computed in Postgres from the runs that used the version.

Only live runs count: `mode = 'normal'` and no evolution cycle behind them (an evolution's
evaluation runs have `evolution_id` set and mode `evaluation`). `since` keeps the runs
created at or after it. Per version (`VersionMetrics`):

- runs: how many; `running` those not finished yet (queued, running or waiting);
  `finished` those with an outcome.
- outcomes: succeeded, failed, limit_reached, cancelled, each a count and its share of
  the finished runs.
- ratings (run_feedback): `rated` runs, their `avg_rating`, and `rating_distribution`,
  the count of each rating 1-5.
- cost (runs.cost_usd) of the finished runs: `cost_usd_total`, `cost_usd_avg` per run,
  and `cost_complete`, false when any of them had a model call of unknown price.
- latency (finished_at - created_at, seconds) of the finished runs: `latency_s_avg`,
  `latency_s_p50`, `latency_s_p95` (linear interpolation, as `percentile_cont`).
- `steps_avg` and `tokens_avg` (prompt + completion) per finished run.
- tools: from the runs' `tool.result` events (one per tool call, written with the
  result, see activities/runs/tool_results.py), per tool name: `calls`, `denied` (refused
  by policy or a human, so the tool never ran), `errors` (results that are not ok, other
  than denials) and `error_rate` = errors / (calls - denied).

Averages and rates are None when there is nothing to average over. Three queries for
all versions together, whatever their number.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict

from core.errors import ErrorType, NotFound

Conn = psycopg.AsyncConnection[Any]

RATINGS = (1, 2, 3, 4, 5)

_LIVE_RUNS = (
    "r.tenant_id = %(tenant)s AND r.agent_name = %(agent)s"
    " AND r.mode = 'normal' AND r.evolution_id IS NULL"
    " AND (%(version)s::int IS NULL OR r.agent_version = %(version)s::int)"
    " AND (%(since)s::timestamptz IS NULL OR r.created_at >= %(since)s::timestamptz)"
)

_RUNS_SQL = f"""
WITH live AS (
    SELECT r.agent_version, r.outcome, r.steps, r.prompt_tokens + r.completion_tokens AS tokens,
           r.cost_usd, r.cost_complete, f.rating,
           CASE WHEN r.outcome IS NOT NULL
                THEN extract(epoch FROM r.finished_at - r.created_at)::float8 END AS latency
    FROM runs r LEFT JOIN run_feedback f ON f.run_id = r.id
    WHERE {_LIVE_RUNS}
)
SELECT agent_version AS version,
       count(*) AS runs,
       count(*) FILTER (WHERE outcome IS NULL) AS running,
       count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE outcome = 'failed') AS failed,
       count(*) FILTER (WHERE outcome = 'limit_reached') AS limit_reached,
       count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,
       count(rating) AS rated,
       avg(rating)::float8 AS avg_rating,
       {", ".join(f"count(*) FILTER (WHERE rating = {n}) AS rating_{n}" for n in RATINGS)},
       sum(cost_usd) FILTER (WHERE outcome IS NOT NULL) AS cost_total,
       avg(cost_usd) FILTER (WHERE outcome IS NOT NULL) AS cost_avg,
       coalesce(bool_and(cost_complete) FILTER (WHERE outcome IS NOT NULL), true) AS cost_complete,
       avg(latency) AS latency_avg,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) AS latency_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) AS latency_p95,
       avg(steps) FILTER (WHERE outcome IS NOT NULL)::float8 AS steps_avg,
       avg(tokens) FILTER (WHERE outcome IS NOT NULL)::float8 AS tokens_avg
FROM live
GROUP BY agent_version
"""

_TOOLS_SQL = f"""
SELECT r.agent_version AS version, e.data->>'tool' AS tool,
       count(*) AS calls,
       count(*) FILTER (WHERE e.data->>'error_type' = %(denied)s) AS denied,
       count(*) FILTER (WHERE NOT (e.data->>'ok')::boolean
                          AND e.data->>'error_type' IS DISTINCT FROM %(denied)s) AS errors
FROM runs r
JOIN run_events e ON e.run_id = r.id AND e.type = 'tool.result'
WHERE {_LIVE_RUNS}
GROUP BY r.agent_version, e.data->>'tool'
ORDER BY e.data->>'tool'
"""


class Share(BaseModel):
    """A count and its share of a whole (None when the whole is empty)."""

    model_config = ConfigDict(frozen=True)

    count: int = 0
    share: float | None = None


class OutcomeShares(BaseModel):
    """How the finished runs ended: a count and a share of the finished runs each."""

    model_config = ConfigDict(frozen=True)

    succeeded: Share = Share()
    failed: Share = Share()
    limit_reached: Share = Share()
    cancelled: Share = Share()


class ToolMetrics(BaseModel):
    """One tool's calls in a version's runs."""

    model_config = ConfigDict(frozen=True)

    tool: str
    calls: int
    denied: int  # refused by policy or a human: the tool never ran
    errors: int  # results that are not ok, other than denials
    error_rate: float | None  # errors / (calls - denied)


class VersionMetrics(BaseModel):
    """The metrics of one agent version (see the module docstring for each one)."""

    model_config = ConfigDict(frozen=True)

    version: int
    runs: int = 0
    running: int = 0
    finished: int = 0
    outcomes: OutcomeShares = OutcomeShares()
    rated: int = 0
    avg_rating: float | None = None
    rating_distribution: dict[int, int] = dict.fromkeys(RATINGS, 0)
    cost_usd_total: float = 0.0
    cost_usd_avg: float | None = None
    cost_complete: bool = True
    latency_s_avg: float | None = None
    latency_s_p50: float | None = None
    latency_s_p95: float | None = None
    steps_avg: float | None = None
    tokens_avg: float | None = None
    tools: list[ToolMetrics] = []


class AgentMetrics(BaseModel):
    """An agent's metrics: one entry per version, newest first."""

    model_config = ConfigDict(frozen=True)

    agent: str
    since: datetime | None = None
    versions: list[VersionMetrics]


async def agent_metrics(
    conn: Conn,
    tenant_id: str,
    agent_name: str,
    *,
    version: int | None = None,
    since: datetime | None = None,
) -> AgentMetrics:
    """The metrics of an agent's versions over its live runs (created at or after `since`).

    Without `version`: every version that has such runs, newest first. With it: that
    version only, with zero runs if it has none.

    Raises:
        NotFound: no such agent, or no such version of it, for this tenant.
    """
    await _check_exists(conn, tenant_id, agent_name, version)
    params = {
        "tenant": tenant_id, "agent": agent_name, "version": version, "since": since,
        "denied": ErrorType.POLICY_DENIED.value,
    }  # fmt: skip
    cur = await conn.execute(_RUNS_SQL, params)
    rows = {int(row["version"]): row for row in await cur.fetchall()}
    cur = await conn.execute(_TOOLS_SQL, params)
    tools: dict[int, list[ToolMetrics]] = {}
    for row in await cur.fetchall():
        tools.setdefault(int(row["version"]), []).append(_tool(row))
    numbers = sorted(rows, reverse=True) if version is None else [version]
    return AgentMetrics(
        agent=agent_name,
        since=since,
        versions=[_version(n, rows.get(n), tools.get(n, [])) for n in numbers],
    )


async def _check_exists(conn: Conn, tenant_id: str, agent_name: str, version: int | None) -> None:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM agents WHERE tenant_id = %(t)s AND name = %(n)s) AS agent,"
        " EXISTS (SELECT 1 FROM agent_versions WHERE tenant_id = %(t)s AND agent_name = %(n)s"
        "  AND version = %(v)s) AS version",
        {"t": tenant_id, "n": agent_name, "v": version},
    )
    row = await cur.fetchone()
    assert row is not None
    if not row["agent"]:
        raise NotFound(f"agent {agent_name!r} not found")
    if version is not None and not row["version"]:
        raise NotFound(f"version {version} of agent {agent_name!r} not found")


def _tool(row: dict[str, Any]) -> ToolMetrics:
    calls, denied, errors = int(row["calls"]), int(row["denied"]), int(row["errors"])
    ran = calls - denied
    return ToolMetrics(
        tool=row["tool"] or "",
        calls=calls,
        denied=denied,
        errors=errors,
        error_rate=errors / ran if ran else None,
    )


def _version(number: int, row: dict[str, Any] | None, tools: list[ToolMetrics]) -> VersionMetrics:
    if row is None:
        return VersionMetrics(version=number, tools=tools)
    running = int(row["running"])
    finished = int(row["runs"]) - running

    def share(count: int) -> Share:
        return Share(count=count, share=count / finished if finished else None)

    return VersionMetrics(
        version=number,
        runs=int(row["runs"]),
        running=running,
        finished=finished,
        outcomes=OutcomeShares(
            succeeded=share(int(row["succeeded"])),
            failed=share(int(row["failed"])),
            limit_reached=share(int(row["limit_reached"])),
            cancelled=share(int(row["cancelled"])),
        ),
        rated=int(row["rated"]),
        avg_rating=row["avg_rating"],
        rating_distribution={n: int(row[f"rating_{n}"]) for n in RATINGS},
        cost_usd_total=_float(row["cost_total"]) or 0.0,
        cost_usd_avg=_float(row["cost_avg"]),
        cost_complete=bool(row["cost_complete"]),
        latency_s_avg=row["latency_avg"],
        latency_s_p50=row["latency_p50"],
        latency_s_p95=row["latency_p95"],
        steps_avg=row["steps_avg"],
        tokens_avg=row["tokens_avg"],
        tools=tools,
    )


def _float(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)
