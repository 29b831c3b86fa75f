"""Identity, API keys and the audit log of the caller's tenant."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import AdminDep, PoolDep, PrincipalDep
from api.schemas.ops import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    AuditEntryPublic,
    WhoAmIPublic,
)
from core import audit, tenants

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/whoami", response_model=WhoAmIPublic)
async def whoami(principal: PrincipalDep) -> WhoAmIPublic:
    """The tenant and key this request authenticated as."""
    return WhoAmIPublic(**principal.model_dump())


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_key(body: ApiKeyCreate, principal: AdminDep, pool: PoolDep) -> ApiKeyCreated:
    """Create a key for the caller's tenant (admin only). The secret is shown once.

    An expiry must lie in the future (422).
    """
    async with pool.connection() as conn:
        record, key = await tenants.create_api_key(
            conn, principal.tenant_id, body.name,
            scopes=body.chosen_scopes(), expires_at=body.expiry(),
        )  # fmt: skip
    return ApiKeyCreated(**record.model_dump(exclude={"tenant_id"}), key=key)


@router.get("/api-keys", response_model=list[ApiKeyPublic])
async def list_keys(principal: AdminDep, pool: PoolDep) -> list[ApiKeyPublic]:
    """Every key of the caller's tenant (admin only)."""
    async with pool.connection() as conn:
        records = await tenants.list_api_keys(conn, principal.tenant_id)
    return [ApiKeyPublic(**r.model_dump(exclude={"tenant_id"})) for r in records]


@router.delete("/api-keys/{key_id}", response_model=ApiKeyPublic)
async def revoke_key(key_id: str, principal: AdminDep, pool: PoolDep) -> ApiKeyPublic:
    """Revoke a key of the caller's tenant (admin only); it stops working at once.

    The tenant's last usable admin key cannot be revoked (409), not even by itself:
    create another admin key first.
    """
    async with pool.connection() as conn:
        record = await tenants.revoke_api_key(conn, principal.tenant_id, key_id)
    return ApiKeyPublic(**record.model_dump(exclude={"tenant_id"}))


@router.get("/audit", response_model=list[AuditEntryPublic])
async def list_audit(
    principal: AdminDep, pool: PoolDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AuditEntryPublic]:
    """The tenant's audit log, newest first (admin only).

    Every authenticated call that could change something (POST, PUT, PATCH, DELETE), with
    its key, route, resource, time and status, refused ones included.
    """
    async with pool.connection() as conn:
        found = await audit.entries(conn, principal.tenant_id, limit=limit)
    return [AuditEntryPublic.model_validate(e.model_dump()) for e in found]
