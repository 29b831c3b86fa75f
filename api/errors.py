"""One JSON error shape for every failure: `{"error": {"type", "message", "details"}}`."""

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from core.errors import ColonyError, TooManyRequests

log = logging.getLogger("colony.api")

POSTGRES_RETRY_AFTER_S = 2
"""Retry-After of a 503 while Postgres is unreachable (its supervisor restarts it in ~2 s)."""

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def error_response(
    status: int,
    type_: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The standard error body."""
    body = {
        "error": {"type": type_, "message": message, "details": jsonable_encoder(details or {})}
    }
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the standard shape."""

    @app.exception_handler(ColonyError)
    async def colony_error(_: Request, exc: ColonyError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(exc.status_code, exc.error_type, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(
                400, "invalid_json", "request body is not valid JSON", {"errors": errors}
            )
        return error_response(
            422, "invalid_request", "request validation failed", {"errors": errors}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(
            exc.status_code,
            _HTTP_TYPES.get(exc.status_code, "http_error"),
            message,
            headers=exc.headers,
        )

    @app.exception_handler(RPCError)
    async def temporal_error(_: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return error_response(
                503, "dependency_unavailable", "Temporal is unavailable; retry shortly"
            )
        log.error("Temporal RPC error: %s", exc)
        return error_response(
            502, "temporal_error", f"Temporal rejected the request: {exc.message}"
        )

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def postgres_unreachable(_: Request, exc: Exception) -> JSONResponse:
        # Postgres restarting or down: nothing was done; the same request works later.
        log.warning("Postgres unreachable: %s", exc)
        return error_response(
            503,
            "dependency_unavailable",
            "Postgres is unavailable; retry shortly",
            headers={"Retry-After": str(POSTGRES_RETRY_AFTER_S)},
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal server error")
