"""FastAPI dependencies: settings, the Postgres pool, the Temporal client, the caller.

Every authenticated call passes `get_principal`, which also decides, from the route and
method alone, which scope the call needs (`needed_scopes`), so routes do not check
scopes one by one:

- a route that depends on `require_admin` (`AdminDep`) needs `admin`;
- a route in `EVAL_ROUTES` (eval cases, feedback, evolution cycles and schedules,
  rollouts) needs `write` or `eval`;
- a route in `READS_SENT_AS_POST` and every GET or HEAD needs `read`;
- every other POST, PUT, PATCH or DELETE needs `write`.

Scopes imply others (core/tenants.py): admin > write > read, and eval > read.
"""

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from opentelemetry.trace import Tracer
from temporalio.client import Client

from api import limits
from core import logs, tenants
from core import temporal as temporal_support
from core.db import Pool
from core.errors import AuthError, PermissionDenied, StackError
from core.settings import Settings


class TemporalHandle:
    """Connects to Temporal on first use, so the API starts (and reports) while it is down."""

    def __init__(self, settings: Settings, *, tracer: Tracer | None = None) -> None:
        self._settings = settings
        self._tracer = tracer
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
                        temporal_support.connect(self._settings, tracer=self._tracer), 10
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


EVAL_ROUTES = frozenset({
    ("POST", "/v1/agents/{name}/eval-cases"),
    ("DELETE", "/v1/agents/{name}/eval-cases/{case_id}"),
    ("POST", "/v1/runs/{run_id}/eval-case"),
    ("POST", "/v1/runs/{run_id}/feedback"),
    ("PUT", "/v1/agents/{name}/evolution-schedule"),
    ("DELETE", "/v1/agents/{name}/evolution-schedule"),
    ("POST", "/v1/agents/{name}/evolutions"),
    ("POST", "/v1/agents/{name}/evolutions/{evolution_id}/approve"),
    ("POST", "/v1/agents/{name}/evolutions/{evolution_id}/cancel"),
    ("PUT", "/v1/agents/{name}/rollout"),
    ("DELETE", "/v1/agents/{name}/rollout"),
    ("POST", "/v1/agents/{name}/rollback"),
})  # fmt: skip
"""Mutating routes an `eval` key may call as well as a `write` key: what evolution-only
automation needs to grade an agent, evolve it and roll the result out. Starting runs or
swarms, changing agents, tools or memory stays with `write`."""

READS_SENT_AS_POST = frozenset({
    ("POST", "/v1/memory/query"),
    ("POST", "/v1/agents/{name}/evolutions/preflight"),
})  # fmt: skip
"""POST routes that change nothing (a query, a cost estimate): `read` is enough."""

CHECKED_PER_CALL = frozenset({"/mcp"})
"""Routes that check scopes per call, not per request: any valid key reaches `/mcp`, and
each MCP tool needs its own scope (api/mcp_server.py)."""

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def needed_scopes(method: str, route: object) -> tuple[tenants.Scope, ...]:
    """The scopes, any one of which lets a `method` call of `route` through."""
    path = getattr(route, "path", "")
    if isinstance(route, APIRoute) and _needs_admin(route):
        return ("admin",)
    if (method, path) in READS_SENT_AS_POST or method not in _MUTATING or path in CHECKED_PER_CALL:
        return ("read",)
    if (method, path) in EVAL_ROUTES:
        return ("write", "eval")
    return ("write",)


def _needs_admin(route: APIRoute) -> bool:
    # A walk over a handful of dependencies per request; APIRoute is not hashable.
    def walk(dependant: Dependant) -> bool:
        return any(d.call is require_admin or walk(d) for d in dependant.dependencies)

    return walk(route.dependant)


async def get_principal(
    request: Request, pool: Annotated[Pool, Depends(get_pool)]
) -> tenants.Principal:
    """Authenticate the bearer API key and check it has the scope the call needs.

    The key is looked up on every request (no cache): a revoked or expired key is refused
    on its next call.

    Raises:
        AuthError: no key, or a malformed, unknown, revoked or expired one (401).
        PermissionDenied: the key lacks the scope the route needs (403).
    """
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
    async with pool.connection() as conn:
        principal = await tenants.authenticate(conn, key.strip())
        await limits.take_request(conn, request, principal)  # 429 over the rate limits
    request.state.principal = principal  # who the audit log names, refusals included
    logs.bind(tenant=principal.tenant_id)  # on the request's records (its own context)
    needed = needed_scopes(request.method, request.scope.get("route"))
    if not any(principal.allows(scope) for scope in needed):
        route = getattr(request.scope.get("route"), "path", request.url.path)
        raise PermissionDenied(
            f"{request.method} {route} needs an API key with the"
            f" {' or '.join(repr(s) for s in needed)} scope; this key has"
            f" {', '.join(repr(s) for s in principal.scopes) or repr(principal.role)}",
            details={"needed_scopes": list(needed), "key_scopes": list(principal.scopes)},
        )
    return principal


async def require_admin(
    principal: Annotated[tenants.Principal, Depends(get_principal)],
) -> tenants.Principal:
    """Only keys with the admin scope pass (`get_principal` already refused the others)."""
    if not principal.allows("admin"):
        raise PermissionDenied("this action needs an API key with the 'admin' scope")
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[Pool, Depends(get_pool)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
TemporalHandleDep = Annotated[TemporalHandle, Depends(get_temporal_handle)]
PrincipalDep = Annotated[tenants.Principal, Depends(get_principal)]
AdminDep = Annotated[tenants.Principal, Depends(require_admin)]
