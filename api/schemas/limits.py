"""HTTP bodies of the tenant's limits (`/v1/tenant/limits`) and usage (`/v1/usage`)."""

from datetime import datetime

from pydantic import BaseModel, Field

from core.limits import LimitOverrides, UsageGroup


class LimitsPublic(BaseModel):
    """The limits in force for the tenant (its overrides over the deployment's defaults)."""

    requests_per_second: float = Field(description="API requests per second of the tenant; 0: none")
    burst: int = Field(description="requests the tenant may send at once before the rate applies")
    key_requests_per_second: float = Field(
        description="API requests per second of one key; 0: none"
    )
    key_burst: int = Field(description="requests one key may send at once")
    max_active_runs: int = Field(description="runs queued, running or waiting at once; 0: none")
    max_active_swarms: int = Field(description="swarms queued or running at once; 0: none")
    daily_usd: float | None = Field(description="spend cap per UTC day in USD; null: none")
    monthly_usd: float | None = Field(description="spend cap per calendar month (UTC); null: none")


class TenantLimitsUpdate(LimitOverrides):
    """The tenant's own limits (admin only); a field left out or null uses the default.

    A PUT replaces every override: send all the ones to keep.
    """


class TenantLimitsPublic(BaseModel):
    """The tenant's limits: those in force and the tenant's own overrides."""

    tenant_id: str
    limits: LimitsPublic
    overrides: LimitOverrides


class SpendWindowPublic(BaseModel):
    """Spend in one cap window (the UTC day or the calendar month)."""

    cap_usd: float | None = Field(description="the cap; null: none")
    spent_usd: float = Field(description="spent so far in the window (unpriced calls count $0)")
    remaining_usd: float | None = Field(description="what remains under the cap; null: no cap")
    resets_at: datetime = Field(description="when the window starts again")


class UsagePublic(BaseModel):
    """The tenant's spend against its caps, and its model calls since `since`.

    Every model call counts: agent runs (steps, summaries, reflections), swarm queens
    and evolution's own calls (judge, diagnoses, proposals). Groups are sorted by name.
    """

    tenant_id: str
    today: SpendWindowPublic
    month: SpendWindowPublic
    since: datetime
    total: UsageGroup
    by_source: list[UsageGroup] = Field(description="runs, swarms (queen calls) or evolution")
    by_agent: list[UsageGroup]
    by_model: list[UsageGroup]
    by_day: list[UsageGroup] = Field(description="UTC days, YYYY-MM-DD")
