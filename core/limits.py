"""Per-tenant limits held in Postgres: request rates, active runs and swarms, spend caps.

Everything is read from and written to Postgres on every check, never cached in a
process, so the limits hold across API replicas and workers (migration 0015).

- **Request rates**: a GCRA bucket per API key and per tenant (`rate_buckets`). One
  atomic `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` admits a request or not.
- **Concurrency**: active runs and swarms of the tenant, counted when one is started.
- **Spend**: USD per UTC day and calendar month, summed from the cost ledgers
  (`llm_calls`, `swarm_llm_calls`, `evolution_llm_calls`). Calls of unknown price count 0.

Defaults come from settings; a tenant's admins override them (`tenant_limits`).
"""

import math
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from core.settings import Settings

Conn = psycopg.AsyncConnection[Any]
ActiveKind = Literal["runs", "swarms"]

_OVERRIDES = (
    "requests_per_second",
    "burst",
    "key_requests_per_second",
    "key_burst",
    "max_active_runs",
    "max_active_swarms",
    "daily_usd",
    "monthly_usd",
)


MIN_REQUEST_RATE = 1 / 86_400
"""One request a day: slower rates make bucket intervals Postgres cannot hold (a 500)."""


class LimitOverrides(BaseModel):
    """A tenant's own limits; None: the default from settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_second: float | None = Field(default=None, ge=MIN_REQUEST_RATE, le=1_000_000)
    burst: int | None = Field(default=None, ge=1, le=1_000_000)
    key_requests_per_second: float | None = Field(default=None, ge=MIN_REQUEST_RATE, le=1_000_000)
    key_burst: int | None = Field(default=None, ge=1, le=1_000_000)
    max_active_runs: int | None = Field(default=None, ge=0, le=1_000_000)
    max_active_swarms: int | None = Field(default=None, ge=0, le=1_000_000)
    daily_usd: float | None = Field(default=None, ge=0, le=1e8)
    monthly_usd: float | None = Field(default=None, ge=0, le=1e8)


class TenantLimits(BaseModel):
    """The limits in force for a tenant. 0 rates and counts mean no limit; None caps none."""

    model_config = ConfigDict(frozen=True)

    requests_per_second: float
    burst: int
    key_requests_per_second: float
    key_burst: int
    max_active_runs: int
    max_active_swarms: int
    daily_usd: float | None
    monthly_usd: float | None


class Spend(BaseModel):
    """What a tenant spent this UTC day and calendar month, and when each window resets."""

    model_config = ConfigDict(frozen=True)

    today_usd: float
    month_usd: float
    day_resets_in_s: float
    month_resets_in_s: float


def defaults(settings: Settings) -> TenantLimits:
    """The limits of a tenant without overrides."""
    return TenantLimits(
        requests_per_second=settings.rate_limit_rps,
        burst=settings.rate_limit_burst,
        key_requests_per_second=settings.key_rate_limit_rps,
        key_burst=settings.key_rate_limit_burst,
        max_active_runs=settings.max_active_runs,
        max_active_swarms=settings.max_active_swarms,
        daily_usd=settings.spend_cap_daily_usd,
        monthly_usd=settings.spend_cap_monthly_usd,
    )


async def get_overrides(conn: Conn, tenant_id: str) -> LimitOverrides:
    """The tenant's overrides (all None when it set none)."""
    cur = await conn.execute(
        f"SELECT {', '.join(_OVERRIDES)} FROM tenant_limits WHERE tenant_id = %s", (tenant_id,)
    )
    row = await cur.fetchone()
    if row is None:
        return LimitOverrides()
    values = {k: float(v) if isinstance(v, Decimal) else v for k, v in dict(row).items()}
    return LimitOverrides.model_validate(values)


async def set_overrides(conn: Conn, tenant_id: str, overrides: LimitOverrides) -> None:
    """Replace the tenant's overrides (None fields go back to the defaults)."""
    values = overrides.model_dump()
    columns = ", ".join(_OVERRIDES)
    await conn.execute(
        f"INSERT INTO tenant_limits (tenant_id, {columns})"
        f" VALUES (%(tenant)s, {', '.join(f'%({k})s' for k in _OVERRIDES)})"
        " ON CONFLICT (tenant_id) DO UPDATE SET updated_at = now(), "
        + ", ".join(f"{k} = excluded.{k}" for k in _OVERRIDES),
        {"tenant": tenant_id, **values},
    )


async def effective(conn: Conn, settings: Settings, tenant_id: str) -> TenantLimits:
    """The limits in force for the tenant: its overrides over the defaults."""
    overrides = await get_overrides(conn, tenant_id)
    given = {k: v for k, v in overrides.model_dump().items() if v is not None}
    return defaults(settings).model_copy(update=given)


# -- request rates ---------------------------------------------------------------------

_TAKE = """
WITH taken AS (
    INSERT INTO rate_buckets AS b (key, tenant_id, tat, emission_s, tolerance_s)
    SELECT w.key, %(tenant)s, now() + make_interval(secs => w.emission), w.emission, w.tolerance
    FROM unnest(%(keys)s::text[], %(emission)s::float8[], %(tolerance)s::float8[])
         AS w (key, emission, tolerance)
    ON CONFLICT (key) DO UPDATE
        SET tat = CASE WHEN (b.emission_s, b.tolerance_s) = (excluded.emission_s, excluded.tolerance_s)
                       THEN greatest(b.tat, now()) ELSE now() END
                  + make_interval(secs => excluded.emission_s),
            emission_s = excluded.emission_s, tolerance_s = excluded.tolerance_s
        -- Changed limits start a full bucket; otherwise admit while within the burst.
        WHERE (b.emission_s, b.tolerance_s) <> (excluded.emission_s, excluded.tolerance_s)
           OR b.tat - now() <= make_interval(secs => excluded.tolerance_s)
    RETURNING b.key
)
SELECT r.key, extract(epoch FROM r.tat - now())::float8 AS ahead_s
FROM rate_buckets r
WHERE r.key = ANY(%(keys)s) AND r.key NOT IN (SELECT key FROM taken)
"""


async def take_request(
    conn: Conn, limits: TenantLimits, tenant_id: str, key_id: str
) -> tuple[str, int] | None:
    """Admit one request of `key_id` against the key's and the tenant's buckets.

    One statement (GCRA): a bucket admits `burst` requests at once and then one every
    1/rate seconds. Returns None when admitted, else which limit refused it ("key" or
    "tenant") and the whole seconds (at least 1) until a request would be admitted.
    When only one of the two refuses, the other has still counted the request.
    """
    buckets: dict[str, tuple[str, float, int]] = {}
    if limits.key_requests_per_second > 0:
        buckets[f"key:{key_id}"] = ("key", limits.key_requests_per_second, limits.key_burst)
    if limits.requests_per_second > 0:
        buckets[f"tenant:{tenant_id}"] = ("tenant", limits.requests_per_second, limits.burst)
    if not buckets:
        return None
    keys = list(buckets)
    emission = [1 / buckets[k][1] for k in keys]
    tolerance = [(buckets[k][2] - 1) / buckets[k][1] for k in keys]
    cur = await conn.execute(
        _TAKE, {"tenant": tenant_id, "keys": keys, "emission": emission, "tolerance": tolerance}
    )
    refused = await cur.fetchall()
    if not refused:
        return None
    waits = []
    for row in refused:
        which, rate, burst = buckets[row["key"]]
        waits.append((which, row["ahead_s"] - (burst - 1) / rate))
    which, wait = max(waits, key=lambda w: w[1])
    return which, max(1, math.ceil(wait))


# -- concurrency -----------------------------------------------------------------------

_ACTIVE = {
    "runs": "SELECT count(*) AS n FROM runs WHERE tenant_id = %s"
    " AND status IN ('queued', 'running', 'waiting')",
    "swarms": "SELECT count(*) AS n FROM swarms WHERE tenant_id = %s"
    " AND status IN ('queued', 'running')",
}


async def count_active(conn: Conn, tenant_id: str, kind: ActiveKind) -> int:
    """The tenant's runs (queued, running or waiting) or swarms (queued or running)."""
    cur = await conn.execute(_ACTIVE[kind], (tenant_id,))
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def has_idempotent(
    conn: Conn, tenant_id: str, kind: ActiveKind, idempotency_key: str | None
) -> bool:
    """Whether this idempotency key already started a run or swarm (a replay is no new one)."""
    if idempotency_key is None:
        return False
    table = "runs" if kind == "runs" else "swarms"
    cur = await conn.execute(
        f"SELECT 1 FROM {table} WHERE tenant_id = %s AND idempotency_key = %s",
        (tenant_id, idempotency_key),
    )
    return await cur.fetchone() is not None


# -- spend -----------------------------------------------------------------------------

_SPEND = """
WITH bounds AS (
    SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
           date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month
)
SELECT
    coalesce(sum(d.cost_usd) FILTER (WHERE d.day = (b.day AT TIME ZONE 'UTC')::date), 0)::float8
        AS today_usd,
    coalesce(sum(d.cost_usd), 0)::float8 AS month_usd,
    extract(epoch FROM b.day + interval '1 day' - now())::float8 AS day_resets_in_s,
    extract(epoch FROM b.month + interval '1 month' - now())::float8 AS month_resets_in_s
FROM bounds b
LEFT JOIN tenant_spend_days d
    ON d.tenant_id = %(tenant)s AND d.day >= (b.month AT TIME ZONE 'UTC')::date
GROUP BY b.day, b.month
"""


async def spend(conn: Conn, tenant_id: str) -> Spend:
    """The tenant's spend this UTC day and calendar month.

    Read from `tenant_spend_days`, which triggers on the three ledgers keep (migration
    0019): at most 31 rows per check, however many calls the month holds.
    """
    cur = await conn.execute(_SPEND, {"tenant": tenant_id})
    row = await cur.fetchone()
    assert row is not None
    return Spend.model_validate(dict(row))


def cap_reached(limits: TenantLimits, spent: Spend, next_call_usd: float = 0.0) -> str | None:
    """Why a call costing about `next_call_usd` may not be made, or None when it may.

    A cap is reached when the spend is at it, or the next call's estimate would cross it.
    """
    for window, cap, so_far in (
        ("daily", limits.daily_usd, spent.today_usd),
        ("monthly", limits.monthly_usd, spent.month_usd),
    ):
        if cap is None:
            continue
        period = "today (UTC)" if window == "daily" else "this month (UTC)"
        if so_far >= cap:
            return (
                f"the tenant's {window} spend cap of ${cap:.6f} is reached: "
                f"${so_far:.6f} spent {period}"
            )
        if so_far + next_call_usd > cap:
            return (
                f"the next model call (about ${next_call_usd:.6f}) would cross the tenant's "
                f"{window} spend cap of ${cap:.6f}: ${so_far:.6f} spent {period}"
            )
    return None


def cap_resets_in_s(limits: TenantLimits, spent: Spend) -> float:
    """Seconds until every reached cap has reset (the Retry-After of a refused start)."""
    wait = 0.0
    if limits.daily_usd is not None and spent.today_usd >= limits.daily_usd:
        wait = max(wait, spent.day_resets_in_s)
    if limits.monthly_usd is not None and spent.month_usd >= limits.monthly_usd:
        wait = max(wait, spent.month_resets_in_s)
    return wait


async def record_evolution_call(
    conn: Conn,
    *,
    tenant_id: str,
    agent_name: str,
    evolution_id: str | None,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float | None,
) -> None:
    """Ledger one of evolution's own model calls (judge, diagnoses, proposals)."""
    await conn.execute(
        "INSERT INTO evolution_llm_calls (tenant_id, agent_name, evolution_id, model,"
        " prompt_tokens, completion_tokens, cost_usd) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (tenant_id, agent_name, evolution_id, model, prompt_tokens, completion_tokens,
         None if cost_usd is None else Decimal(str(round(cost_usd, 8)))),
    )  # fmt: skip


# -- usage -----------------------------------------------------------------------------


class UsageGroup(BaseModel):
    """Cost and tokens of the model calls of one agent, model, day or source."""

    name: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced_calls: int = Field(description="calls of unknown price (counted as $0)")


_USAGE_ROWS = """
    SELECT c.tenant_id, 'runs' AS source, coalesce(r.agent_name, '(deleted runs)') AS agent,
           c.model, c.prompt_tokens, c.completion_tokens, c.cost_usd, c.created_at
    FROM llm_calls c LEFT JOIN runs r ON r.id = c.run_id
    UNION ALL
    SELECT c.tenant_id, 'swarms', s.queen_agent, c.model, c.prompt_tokens,
           c.completion_tokens, c.cost_usd, c.created_at
    FROM swarm_llm_calls c JOIN swarms s ON s.id = c.swarm_id
    UNION ALL
    SELECT tenant_id, 'evolution', agent_name, model, prompt_tokens, completion_tokens,
           cost_usd, created_at
    FROM evolution_llm_calls
"""

_GROUPS = {
    "source": "u.source",
    "agent": "u.agent",
    "model": "u.model",
    "day": "to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


async def usage(conn: Conn, tenant_id: str | None, since: datetime) -> dict[str, list[UsageGroup]]:
    """Model calls since `since`, grouped by source, agent, model and UTC day.

    `tenant_id` None is the operator's view of every tenant: it adds a `tenant` grouping,
    and agents are named `tenant/agent`.
    """
    groups = dict(_GROUPS)
    where, params = "u.created_at >= %s", list[object]([since])
    if tenant_id is None:
        groups = {"tenant": "u.tenant_id", **groups, "agent": "u.tenant_id || '/' || u.agent"}
    else:
        where, params = "u.tenant_id = %s AND " + where, [tenant_id, since]
    out: dict[str, list[UsageGroup]] = {}
    for name, expr in groups.items():
        cur = await conn.execute(
            f"SELECT {expr} AS name, count(*) AS calls,"
            " coalesce(sum(u.prompt_tokens), 0) AS prompt_tokens,"
            " coalesce(sum(u.completion_tokens), 0) AS completion_tokens,"
            " coalesce(sum(u.cost_usd), 0)::float8 AS cost_usd,"
            " count(*) FILTER (WHERE u.cost_usd IS NULL) AS unpriced_calls"
            f" FROM ({_USAGE_ROWS}) u WHERE {where}"
            " GROUP BY 1 ORDER BY 1",
            params,
        )
        out[name] = [UsageGroup(name=row["name"], **_sums(row)) for row in await cur.fetchall()]
    return out


def _sums(row: Any) -> dict[str, Any]:
    return {
        "calls": int(row["calls"]),
        "prompt_tokens": int(row["prompt_tokens"]),
        "completion_tokens": int(row["completion_tokens"]),
        "cost_usd": float(row["cost_usd"]),
        "unpriced_calls": int(row["unpriced_calls"]),
    }
