"""FastAPI dependencies: settings, the Postgres pool, the Temporal client, the caller."""

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from api import limits
from core import temporal as temporal_support
from core import tenants
from core.db import Pool
from core.errors import AuthError, PermissionDenied, StackError
from core.settings import Settings


class TemporalHandle:
    """Connects to Temporal on first use, so the API starts (and reports) while it is down."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        """The connected client.

        Raises:
            StackError: Temporal is unreachable.
        """
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        temporal_support.connect(self._settings), 10
                    )
                except Exception as exc:
                    raise StackError(
                        f"Temporal at {self._settings.effective_temporal_address} is unreachable: {exc}"
                    ) from exc
            return self._client


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_pool(request: Request) -> Pool:
    """The app's Postgres pool."""
    pool: Pool = request.app.state.pool
    return pool


def get_temporal_handle(request: Request) -> TemporalHandle:
    """The app's Temporal connection, for routes that need it only sometimes."""
    handle: TemporalHandle = request.app.state.temporal
    return handle


async def get_temporal(request: Request) -> Client:
    """The app's Temporal client."""
    return await get_temporal_handle(request).get()


async def get_principal(
    request: Request, pool: Annotated[Pool, Depends(get_pool)]
) -> tenants.Principal:
    """Authenticate the bearer API key."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
    async with pool.connection() as conn:
        principal = await tenants.authenticate(conn, key.strip())
        await limits.take_request(conn, request, principal)  # 429 over the rate limits
    request.state.principal = principal  # who the audit log names
    return principal


async def require_admin(
    principal: Annotated[tenants.Principal, Depends(get_principal)],
) -> tenants.Principal:
    """Only admin keys pass."""
    if principal.role != "admin":
        raise PermissionDenied("this action needs an admin API key")
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[Pool, Depends(get_pool)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
TemporalHandleDep = Annotated[TemporalHandle, Depends(get_temporal_handle)]
PrincipalDep = Annotated[tenants.Principal, Depends(get_principal)]
AdminDep = Annotated[tenants.Principal, Depends(require_admin)]
