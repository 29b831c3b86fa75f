"""Settings and limits of the caller's tenant: `GET|PUT /v1/tenant/settings|limits`."""

from fastapi import APIRouter

from api.deps import AdminDep, PoolDep, PrincipalDep, SettingsDep
from api.schemas.limits import LimitsPublic, TenantLimitsPublic, TenantLimitsUpdate
from api.schemas.ops import TenantSettingsPublic, TenantSettingsUpdate
from core import limits, tenants
from core.limits import LimitOverrides
from core.settings import Settings

router = APIRouter(prefix="/v1/tenant", tags=["tenant"])


@router.get("/settings", response_model=TenantSettingsPublic)
async def get_settings(principal: PrincipalDep, pool: PoolDep) -> TenantSettingsPublic:
    """The tenant's settings: how its agents share what they learn."""
    async with pool.connection() as conn:
        sharing = await tenants.get_sharing(conn, principal.tenant_id)
    return TenantSettingsPublic(tenant_id=principal.tenant_id, sharing=sharing)


@router.put("/settings", response_model=TenantSettingsPublic)
async def put_settings(
    body: TenantSettingsUpdate, principal: AdminDep, pool: PoolDep
) -> TenantSettingsPublic:
    """Change the tenant's settings (admin only); runs that start afterwards follow them."""
    async with pool.connection() as conn:
        sharing = await tenants.set_sharing(conn, principal.tenant_id, body.sharing)
    return TenantSettingsPublic(tenant_id=principal.tenant_id, sharing=sharing)


@router.get("/limits", response_model=TenantLimitsPublic)
async def get_limits(
    principal: PrincipalDep, pool: PoolDep, settings: SettingsDep
) -> TenantLimitsPublic:
    """The tenant's rate, concurrency and spend limits: in force, and its own overrides."""
    async with pool.connection() as conn:
        return await _limits(conn, settings, principal.tenant_id)


@router.put("/limits", response_model=TenantLimitsPublic)
async def put_limits(
    body: TenantLimitsUpdate, principal: AdminDep, pool: PoolDep, settings: SettingsDep
) -> TenantLimitsPublic:
    """Replace the tenant's overrides (admin only); null fields use the defaults again.

    They apply from the next request, run start or model call on.
    """
    async with pool.connection() as conn:
        await limits.set_overrides(
            conn, principal.tenant_id, LimitOverrides.model_validate(body.model_dump())
        )
        return await _limits(conn, settings, principal.tenant_id)


async def _limits(conn: limits.Conn, settings: Settings, tenant_id: str) -> TenantLimitsPublic:
    in_force = await limits.effective(conn, settings, tenant_id)
    return TenantLimitsPublic(
        tenant_id=tenant_id,
        limits=LimitsPublic(**in_force.model_dump()),
        overrides=await limits.get_overrides(conn, tenant_id),
    )
