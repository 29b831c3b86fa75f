"""The tenant's spend caps, checked by every activity before it calls a model.

Runs (`call_llm`), swarm queens and evolution's own calls ask `check_spend` first; it
reads the tenant's caps and spend from Postgres each time (core/limits.py), so every
worker sees the same numbers. Over a cap the activity fails with a non-retryable
`BudgetExceeded`, which the workflows already turn into the outcome `limit_reached`.
"""

from dataclasses import dataclass

from temporalio.exceptions import ApplicationError

from activities.providers.pricing import estimate_prompt_cost
from core import limits
from core.db import Pool
from core.errors import ErrorType
from core.payloads import ModelRequest
from core.settings import Settings


async def check_spend(
    pool: Pool, settings: Settings, tenant_id: str, request: ModelRequest | None = None
) -> None:
    """Refuse a model call when the tenant's daily or monthly cap is reached or would be.

    With `request`, the call's prompt is priced first: a call whose prompt alone would
    cross a cap is refused too. Calls of unknown price count $0.

    Raises:
        ApplicationError: `BudgetExceeded` (non-retryable), its message naming the cap.
    """
    async with pool.connection() as conn:
        state = await spend_state(conn, settings, tenant_id)
    refuse_over_cap(state, settings, request)


@dataclass(frozen=True)
class SpendState:
    """A tenant's caps and its spend against them, read before a model call."""

    caps: limits.TenantLimits
    spent: limits.Spend


async def spend_state(conn: limits.Conn, settings: Settings, tenant_id: str) -> SpendState | None:
    """The tenant's caps and spend; None when it has no cap (nothing to check)."""
    caps = await limits.effective(conn, settings, tenant_id)
    if caps.daily_usd is None and caps.monthly_usd is None:
        return None
    return SpendState(caps, await limits.spend(conn, tenant_id))


def refuse_over_cap(
    state: SpendState | None, settings: Settings, request: ModelRequest | None = None
) -> None:
    """`check_spend` on a state read earlier (in a connection the caller already holds).

    Raises:
        ApplicationError: `BudgetExceeded` (non-retryable), its message naming the cap.
    """
    if state is None:
        return
    estimate = 0.0
    if request is not None:
        estimate = estimate_prompt_cost(request, settings) or 0.0
    reason = limits.cap_reached(state.caps, state.spent, estimate)
    if reason is not None:
        raise ApplicationError(reason, type=ErrorType.BUDGET_EXCEEDED.value, non_retryable=True)
