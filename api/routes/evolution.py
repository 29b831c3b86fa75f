"""Evolution: an agent's eval cases, and runs made into cases."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import PoolDep, PrincipalDep
from api.routes.agents import AgentName
from api.schemas.evolution import EvalCaseCreate, EvalCaseFromRun, EvalCasePublic
from core.evolution import cases
from core.evolution.from_runs import case_from_run
from core.runs import agents

router = APIRouter(prefix="/v1/agents", tags=["evolution"])
"""Routes under an agent: `/v1/agents/{name}/...`."""

runs_router = APIRouter(prefix="/v1/runs", tags=["evolution"])
"""Routes under a run: `/v1/runs/{run_id}/...`."""


def _case_public(case: cases.EvalCase) -> EvalCasePublic:
    return EvalCasePublic(
        id=case.id,
        agent=case.agent_name,
        split=case.split,
        source_run_id=case.source_run_id,
        created_at=case.created_at,
        **case.spec.model_dump(),
    )


# -- eval cases -----------------------------------------------------------------------


@router.post("/{name}/eval-cases", response_model=EvalCasePublic,
             status_code=status.HTTP_201_CREATED)  # fmt: skip
async def create_eval_case(
    name: AgentName, body: EvalCaseCreate, principal: PrincipalDep, pool: PoolDep
) -> EvalCasePublic:
    """Add an eval case to an agent; its id fixes its split (train, validation, holdout)."""
    async with pool.connection() as conn:
        case, _ = await cases.add_case(conn, principal.tenant_id, name, body)
    return _case_public(case)


@router.get("/{name}/eval-cases", response_model=list[EvalCasePublic])
async def list_eval_cases(
    name: AgentName,
    principal: PrincipalDep,
    pool: PoolDep,
    split: cases.Split | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
) -> list[EvalCasePublic]:
    """An agent's eval cases, oldest first (optionally of one split, or with a tag)."""
    async with pool.connection() as conn:
        await agents.get_version(conn, principal.tenant_id, name)  # 404 for unknown agents
        found = await cases.list_cases(
            conn, principal.tenant_id, name, (split,) if split else cases.SPLITS, tag
        )
    return [_case_public(case) for case in found]


@router.get("/{name}/eval-cases/{case_id}", response_model=EvalCasePublic)
async def get_eval_case(
    name: AgentName, case_id: str, principal: PrincipalDep, pool: PoolDep
) -> EvalCasePublic:
    """One eval case of an agent."""
    async with pool.connection() as conn:
        return _case_public(await cases.get_case(conn, principal.tenant_id, name, case_id))


@router.delete("/{name}/eval-cases/{case_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_eval_case(
    name: AgentName, case_id: str, principal: PrincipalDep, pool: PoolDep
) -> Response:
    """Delete an eval case (past cycles keep their per-case results)."""
    async with pool.connection() as conn:
        await cases.delete_case(conn, principal.tenant_id, name, case_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- runs as cases --------------------------------------------------------------------


@runs_router.post("/{run_id}/eval-case", response_model=EvalCasePublic,
                  status_code=status.HTTP_201_CREATED,
                  responses={200: {"model": EvalCasePublic, "description": "the case this run already is"}})  # fmt: skip
async def create_eval_case_from_run(
    run_id: str,
    principal: PrincipalDep,
    pool: PoolDep,
    response: Response,
    body: EvalCaseFromRun | None = None,
) -> EvalCasePublic:
    """Make a run an eval case of its agent, with the run's objective.

    Without checks and rubric, the run's feedback must carry an expected answer: a single
    number becomes a `numeric` check (tolerance 1e-6), other text a `contains` check. A run
    becomes a case once: asking again returns that case (200).
    """
    body = body or EvalCaseFromRun()
    async with pool.connection() as conn:
        case, created = await case_from_run(
            conn, principal.tenant_id, run_id, checks=body.checks, rubric=body.rubric,
            tags=body.tags, guard=body.guard,
        )  # fmt: skip
    if not created:
        response.status_code = status.HTTP_200_OK
    return _case_public(case)
