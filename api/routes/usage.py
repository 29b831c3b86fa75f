"""The tenant's spend and model usage: `GET /v1/usage`."""

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PoolDep, PrincipalDep, SettingsDep
from api.schemas.limits import SpendWindowPublic, UsagePublic
from core import limits
from core.limits import UsageGroup

router = APIRouter(prefix="/v1", tags=["usage"])

DEFAULT_WINDOW = timedelta(days=30)


@router.get("/usage", response_model=UsagePublic)
async def get_usage(
    principal: PrincipalDep,
    pool: PoolDep,
    settings: SettingsDep,
    since: Annotated[
        datetime | None, Query(description="start of the breakdown (default: 30 days ago)")
    ] = None,
) -> UsagePublic:
    """Spend caps, spend today and this month, and cost and tokens by agent, model and day."""
    now = datetime.now(UTC)
    start = since or now - DEFAULT_WINDOW
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    async with pool.connection() as conn:
        caps = await limits.effective(conn, settings, principal.tenant_id)
        spent = await limits.spend(conn, principal.tenant_id)
        groups = await limits.usage(conn, principal.tenant_id, start)
    by_source = groups["source"]
    total = UsageGroup(
        name="total",
        calls=sum(g.calls for g in by_source),
        prompt_tokens=sum(g.prompt_tokens for g in by_source),
        completion_tokens=sum(g.completion_tokens for g in by_source),
        cost_usd=sum(g.cost_usd for g in by_source),
        unpriced_calls=sum(g.unpriced_calls for g in by_source),
    )
    return UsagePublic(
        tenant_id=principal.tenant_id,
        today=_window(caps.daily_usd, spent.today_usd, now, spent.day_resets_in_s),
        month=_window(caps.monthly_usd, spent.month_usd, now, spent.month_resets_in_s),
        since=start,
        total=total,
        by_source=by_source,
        by_agent=groups["agent"],
        by_model=groups["model"],
        by_day=groups["day"],
    )


def _window(
    cap: float | None, spent: float, now: datetime, resets_in_s: float
) -> SpendWindowPublic:
    return SpendWindowPublic(
        cap_usd=cap,
        spent_usd=spent,
        remaining_usd=None if cap is None else max(0.0, cap - spent),
        resets_at=(now + timedelta(seconds=resets_in_s)).replace(microsecond=0),
    )
