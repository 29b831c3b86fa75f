"""Settings of the caller's tenant: `GET|PUT /v1/tenant/settings`."""

from fastapi import APIRouter

from api.deps import AdminDep, PoolDep, PrincipalDep
from api.schemas.ops import TenantSettingsPublic, TenantSettingsUpdate
from core import tenants

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
