"""The safety log: every guardrail trigger of the caller's tenant (core/runs/guardrails.py)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PoolDep, PrincipalDep
from api.schemas.safety import SafetyEntryPublic
from core.runs import safety
from core.runs.payloads import AGENT_NAME_PATTERN

router = APIRouter(prefix="/v1", tags=["safety"])


@router.get("/safety-log", response_model=list[SafetyEntryPublic])
async def list_safety_log(
    principal: PrincipalDep,
    pool: PoolDep,
    agent: Annotated[str | None, Query(pattern=AGENT_NAME_PATTERN)] = None,
    run: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[SafetyEntryPublic]:
    """Guardrail triggers, newest first: of one agent, of one run, since a time.

    Each says which guardrail fired, at which stage (input, output, tool_output), what it
    did (block, mask, flag) and a short excerpt with the matched text and personal data
    masked. The blocked text itself is not kept here.
    """
    async with pool.connection() as conn:
        found = await safety.entries(
            conn, principal.tenant_id, agent_name=agent, run_id=run, since=since, limit=limit
        )
    return [SafetyEntryPublic.model_validate(e.model_dump()) for e in found]
