"""The API's limits: request body size, request rates, active runs and swarms, spend caps.

Body size: an ASGI middleware (`BodySizeLimit`) refuses large bodies with 413. A declared `Content-Length` over the limit is refused before anything is read; a body
sent without one (chunked) is counted as it streams and refused once it passes the
limit, so no handler ever holds more than `max_bytes` of a request.

Rates, concurrency and spend (core/limits.py, all in Postgres): `take_request` runs
after authentication (api/deps.get_principal) and `admit_start` in the transaction that
inserts a run or swarm; over a limit they raise `TooManyRequests` (429 with Retry-After).
"""

import json
import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import limits
from core.errors import TooManyRequests
from core.settings import Settings
from core.tenants import Principal


class BodyTooLarge(HTTPException):
    """A streamed body passed the limit (the app's error handlers answer 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _message(max_bytes))


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with the standard 413 error."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self._max:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max:
                    raise BodyTooLarge(self._max)
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, counting, tracking)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": {
            "type": "payload_too_large",
            "message": _message(self._max),
            "details": {"max_bytes": self._max},
        }}).encode()  # fmt: skip
        await send({
            "type": "http.response.start", "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def _message(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes"


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


UNLIMITED_PATHS = frozenset({"/healthz", "/metrics"})
"""Paths no rate limit applies to (health checks and scrapers poll them)."""


async def take_request(conn: limits.Conn, request: Request, principal: Principal) -> None:
    """Count an authenticated request against its key's and tenant's rate limits.

    Raises:
        TooManyRequests: `rate_limited`, with the seconds until a request is admitted.
    """
    if request.url.path in UNLIMITED_PATHS:
        return
    settings: Settings = request.app.state.settings
    tenant = await limits.effective(conn, settings, principal.tenant_id)
    refused = await limits.take_request(conn, tenant, principal.tenant_id, principal.key_id)
    if refused is None:
        return
    which, wait = refused
    rate, burst = (
        (tenant.key_requests_per_second, tenant.key_burst)
        if which == "key"
        else (tenant.requests_per_second, tenant.burst)
    )
    raise TooManyRequests(
        f"too many requests for this {'API key' if which == 'key' else 'tenant'}: "
        f"at most {rate:g} per second (bursts of {burst}); retry in {wait} s",
        retry_after_s=wait,
        details={"limit": which, "requests_per_second": rate, "burst": burst},
    )


async def admit_start(
    conn: limits.Conn,
    settings: Settings,
    tenant_id: str,
    kind: limits.ActiveKind,
    idempotency_key: str | None,
) -> None:
    """Refuse a start over the tenant's spend cap or active limit, holding its place.

    Call it in the transaction that inserts the run or swarm. The tenant's starts of
    `kind` queue on a transaction-level advisory lock, and each counts the active rows
    after the one before it committed, so two starts at the same instant cannot both
    take the last place. A replay of an idempotency key that already started one always
    passes (the route returns what it started).

    Raises:
        TooManyRequests: `spend_cap_reached` or `concurrency_limited`.
    """
    if await limits.has_idempotent(conn, tenant_id, kind, idempotency_key):
        return
    tenant = await limits.effective(conn, settings, tenant_id)
    if tenant.daily_usd is not None or tenant.monthly_usd is not None:
        spent = await limits.spend(conn, tenant_id)
        reason = limits.cap_reached(tenant, spent)
        if reason is not None:
            raise TooManyRequests(
                reason,
                retry_after_s=math.ceil(limits.cap_resets_in_s(tenant, spent)),
                error_type="spend_cap_reached",
                details={
                    "daily_usd": tenant.daily_usd, "monthly_usd": tenant.monthly_usd,
                    "spent_today_usd": spent.today_usd, "spent_month_usd": spent.month_usd,
                },
            )  # fmt: skip
    most = tenant.max_active_runs if kind == "runs" else tenant.max_active_swarms
    if most <= 0:
        return
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"colony-start:{kind}:{tenant_id}",),
    )
    active = await limits.count_active(conn, tenant_id, kind)
    if active >= most:
        raise TooManyRequests(
            f"the tenant has {active} active {kind}, its limit is {most}; "
            "retry when one has finished",
            retry_after_s=CONCURRENCY_RETRY_AFTER_S,
            error_type="concurrency_limited",
            details={"kind": kind, "active": active, "limit": most},
        )


CONCURRENCY_RETRY_AFTER_S = 5
"""Retry-After of a start refused for too many active runs or swarms (a guess: runs end
on their own schedule)."""
