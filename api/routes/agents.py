"""Agents and their versions, and drafts of new agents (`POST /v1/agents/bootstrap`)."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.live import execute_briefly
from api.routes.tools import unknown_tools
from api.schemas.rollouts import RolloutPublic
from api.schemas.runs import (
    AgentBootstrapCreate,
    AgentCreate,
    AgentDraftPublic,
    AgentMetricsPublic,
    AgentPublic,
    AgentRollback,
)
from core.errors import InvalidInput, NotFound
from core.evolution import rollouts
from core.evolution import store as evolutions
from core.redact import mask_sensitive
from core.runs import agents, metrics
from core.runs.bootstrap import MAX_OBJECTIVE_CHARS, BootstrapInput
from core.runs.payloads import AGENT_NAME_PATTERN, AgentSpec
from workflows.agent_bootstrap import AgentBootstrapWorkflow

router = APIRouter(prefix="/v1/agents", tags=["agents"])
AgentName = Annotated[str, Path(pattern=AGENT_NAME_PATTERN)]

BOOTSTRAP_TIMEOUT: Final = timedelta(seconds=60)
"""How long a draft waits for the memory lane (a first draft may index the tool catalog)."""


def _public(version: agents.AgentVersion) -> AgentPublic:
    return AgentPublic(
        name=version.name,
        version=version.version,
        created_at=version.created_at,
        status=version.status,
        parent_version=version.parent_version,
        cause=version.cause,
        evolution_id=version.evolution_id,
        rationale=version.rationale,
        **version.spec.model_dump(),
    )


@router.post("", response_model=AgentPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": AgentPublic, "description": "identical to the latest version"},
                        404: {"description": "A listed tool does not exist (`details.unknown_tools`)."}})  # fmt: skip
async def create_agent(
    body: AgentCreate,
    principal: PrincipalDep,
    pool: PoolDep,
    settings: SettingsDep,
    response: Response,
) -> AgentPublic:
    """Create an agent, or add a version when the name exists and the spec changed."""
    spec = AgentSpec.model_validate(body.model_dump(exclude={"name"}))
    async with pool.connection() as conn:
        unknown = await unknown_tools(
            conn, principal.tenant_id, spec.tools, settings, own_agent=body.name
        )
        if unknown:
            raise NotFound(
                f"unknown tool(s): {', '.join(unknown)}; see GET /v1/tools (MCP tools appear "
                "once their server is registered, agents as agent:<name>, recipes as "
                "recipe:<name>)",
                details={"unknown_tools": unknown},
            )
        version, created = await agents.create_version(conn, principal.tenant_id, body.name, spec)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _public(version)


@router.post("/bootstrap", response_model=AgentDraftPublic)
async def bootstrap_agent(
    body: AgentBootstrapCreate,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> AgentDraftPublic:
    """Draft an agent for `objective` from what the tenant already knows; nothing is created.

    The draft holds the tenant's closest lessons and skills (as the tenant's sharing mode
    lets the agent see them), its relevant tools with a good live record and the model of
    its most similar agent; `evidence` lists what was found and `rationale` what was used
    and left out. `POST /v1/agents` with `spec` creates it.
    """
    if not body.objective.strip():
        raise InvalidInput("the objective is blank")
    # Masked before it reaches Temporal's history, the embedder or the drafted instructions.
    objective = mask_sensitive(body.objective)[:MAX_OBJECTIVE_CHARS]
    draft = await execute_briefly(
        client, settings, AgentBootstrapWorkflow.run,
        BootstrapInput(tenant_id=principal.tenant_id, objective=objective, name=body.name),
        kind="agent-bootstrap", tenant_id=principal.tenant_id, execution_timeout=BOOTSTRAP_TIMEOUT,
        what="agent bootstrap",
    )  # fmt: skip
    return AgentDraftPublic(
        spec=AgentCreate(name=draft.name, **draft.spec.model_dump()),
        evidence=draft.evidence,
        rationale=draft.rationale,
        exists=draft.exists,
    )


@router.get("", response_model=list[AgentPublic])
async def list_agents(principal: PrincipalDep, pool: PoolDep) -> list[AgentPublic]:
    """The tenant's agents at their latest versions."""
    async with pool.connection() as conn:
        return [_public(v) for v in await agents.list_agents(conn, principal.tenant_id)]


@router.get("/{name}", response_model=AgentPublic)
async def get_agent(name: AgentName, principal: PrincipalDep, pool: PoolDep) -> AgentPublic:
    """An agent at its latest version."""
    async with pool.connection() as conn:
        return _public(await agents.get_version(conn, principal.tenant_id, name))


@router.get("/{name}/versions", response_model=list[AgentPublic])
async def list_versions(
    name: AgentName, principal: PrincipalDep, pool: PoolDep
) -> list[AgentPublic]:
    """Every version of an agent, newest first, with its lineage and evaluation scores."""
    async with pool.connection() as conn:
        versions = await agents.list_versions(conn, principal.tenant_id, name)
        scores = await evolutions.version_scores(conn, principal.tenant_id, name)
        history = await rollouts.list_rollouts(conn, principal.tenant_id, name, limit=1000)
    return [
        _public(v).model_copy(
            update={
                "scores": scores.get(v.version),
                "rollouts": [RolloutPublic.of(r) for r in history if r.canary_version == v.version],
            }
        )
        for v in versions
    ]


@router.get("/{name}/metrics", response_model=AgentMetricsPublic)
async def get_metrics(
    name: AgentName,
    principal: PrincipalDep,
    pool: PoolDep,
    version: Annotated[int | None, Query(gt=0, description="one version (default: all)")] = None,
    since: Annotated[
        datetime | None,
        Query(description="only runs created at or after this ISO time (UTC if no offset)"),
    ] = None,
) -> AgentMetricsPublic:
    """Metrics per version over the agent's live runs (evaluation runs left out).

    Every version that has runs, newest first, or the one asked for (zeros if it has none).
    """
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    async with pool.connection() as conn:
        found = await metrics.agent_metrics(
            conn, principal.tenant_id, name, version=version, since=since
        )
    return AgentMetricsPublic.model_validate(found.model_dump())


@router.post("/{name}/rollback", response_model=AgentPublic, status_code=status.HTTP_201_CREATED)
async def rollback(
    name: AgentName, body: AgentRollback, principal: PrincipalDep, pool: PoolDep
) -> AgentPublic:
    """Make an earlier version's spec the latest again (as a new version)."""
    async with pool.connection() as conn:
        return _public(await agents.rollback(conn, principal.tenant_id, name, body.version))
