"""An agent's rollout: its policy, its canary in progress, its canaries and rollbacks."""

from fastapi import APIRouter, Response, status

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.live import query_named
from api.routes.agents import AgentName
from api.schemas.rollouts import RolloutPublic, RolloutStatePublic
from core.db import Pool
from core.errors import NotFound
from core.evolution import rollouts
from core.evolution.rollout_payloads import RolloutSettings, RolloutView
from core.runs import agents

router = APIRouter(prefix="/v1/agents", tags=["rollouts"])

VIEW_QUERY = "view"
"""`RolloutWorkflow.view`, by name (the API does not import workflow code)."""


@router.put("/{name}/rollout", response_model=RolloutStatePublic)
async def put_rollout(
    name: AgentName,
    body: RolloutSettings,
    principal: PrincipalDep,
    pool: PoolDep,
    client: TemporalDep,
    app_settings: SettingsDep,
) -> RolloutStatePublic:
    """Set the agent's rollout policy and start (or tell) its controller.

    From now on a version an evolution cycle promotes starts as a canary on
    `canary_share` of new runs (and/or shadow runs on `shadow_share` of the stable
    version's), decided by a sequential test; and with `watch`, the live version is rolled
    back automatically when its success drops. A canary in progress keeps the policy it
    started with.
    """
    tenant = principal.tenant_id
    async with pool.connection() as conn:
        await rollouts.put_policy(conn, tenant, name, body)  # 404 for unknown agents
    await rollouts.signal_controller(client, app_settings, tenant, name, "policy_changed")
    return await _state(pool, client, app_settings, tenant, name)


@router.get("/{name}/rollout", response_model=RolloutStatePublic)
async def get_rollout(
    name: AgentName, principal: PrincipalDep, pool: PoolDep, client: TemporalDep,
    app_settings: SettingsDep,
) -> RolloutStatePublic:  # fmt: skip
    """The live state: policy, versions and shares, evidence so far and the test statistic."""
    return await _state(pool, client, app_settings, principal.tenant_id, name)


@router.delete("/{name}/rollout", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rollout(
    name: AgentName, principal: PrincipalDep, pool: PoolDep, client: TemporalDep,
    app_settings: SettingsDep,
) -> Response:  # fmt: skip
    """Remove the policy: promotions release at once again, nothing is watched.

    A canary in progress is still decided; the controller ends after it.
    """
    tenant = principal.tenant_id
    async with pool.connection() as conn:
        if not await rollouts.delete_policy(conn, tenant, name):
            raise NotFound(f"agent {name!r} has no rollout policy")
    await rollouts.signal_controller(client, app_settings, tenant, name, "policy_changed")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/rollouts", response_model=list[RolloutPublic])
async def list_rollouts(
    name: AgentName, principal: PrincipalDep, pool: PoolDep
) -> list[RolloutPublic]:
    """The agent's canaries and automatic rollbacks, newest first."""
    async with pool.connection() as conn:
        await agents.get_version(conn, principal.tenant_id, name)  # 404 for unknown agents
        return [
            RolloutPublic.of(r)
            for r in await rollouts.list_rollouts(conn, principal.tenant_id, name)
        ]


async def _state(
    pool: Pool, client: TemporalDep, app_settings: SettingsDep, tenant_id: str, name: str
) -> RolloutStatePublic:
    async with pool.connection() as conn:
        live = await agents.get_version(conn, tenant_id, name)
        settings = await rollouts.get_policy(conn, tenant_id, name)
        canary = await rollouts.active_canary(conn, tenant_id, name)
        history = await rollouts.list_rollouts(conn, tenant_id, name, limit=20)
    workflow_id = rollouts.controller_id(tenant_id, name)
    view = await query_named(client, workflow_id, VIEW_QUERY, RolloutView)
    return RolloutStatePublic(
        agent=name, settings=settings, live_version=live.version,
        canary=None if canary is None else RolloutPublic.of(canary), controller=view,
        controller_workflow_id=workflow_id,
        temporal_ui=app_settings.workflow_ui_link(workflow_id),
        history=[RolloutPublic.of(r) for r in history],
    )  # fmt: skip
