"""The OpenAPI document lists every status an operation can answer, in the error shape.

FastAPI documents a route's success and a 422 of its own shape. The errors Colony
answers come from places the route does not declare (authentication, the body size
limit, the NUL check, Postgres or Temporal down), so they are added here, from what
each route depends on:

- every operation: 422 (validation), 503 (a dependency is down);
- with a JSON body: 400 (not JSON) and 413 (too large);
- authenticated: 401 (no, unknown or revoked key), 403 (the key may not do this) and
  429 (over a rate limit);
- with a path parameter: 404 (no such resource, or another tenant's).

A route declares the rest itself (`responses={409: {"description": ...}}`); every
4xx and 5xx without content of its own gets the error shape.
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api.deps import get_principal

ERROR_SCHEMA = "Error"
IDEMPOTENCY_CONFLICT = (
    "The `Idempotency-Key` was used before, with a different body (`idempotency_conflict`)."
)

_ERROR: dict[str, Any] = {
    "title": ERROR_SCHEMA,
    "description": "Every failure: `type` is stable and machine-readable, `message` is for "
    "people, `details` depends on the type (`errors` for `invalid_request`).",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "details"],
            "properties": {
                "type": {"type": "string", "examples": ["not_found"]},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
    },
}

_DESCRIPTIONS = {
    400: "The body is not valid JSON (`invalid_json`).",
    401: "No API key, or an unknown, malformed or revoked one (`unauthorized`).",
    403: "The key may not do this (`forbidden`).",
    404: "No such resource for this tenant (`not_found`).",
    409: "The request conflicts with the resource's state (`conflict`).",
    413: "The request body is over the size limit (`payload_too_large`).",
    422: "The request is not valid (`invalid_request`): `details.errors` lists where and why.",
    429: "Over a rate or concurrency limit (`rate_limited`); retry after `Retry-After` seconds.",
    503: "Postgres or Temporal is unavailable (`dependency_unavailable`); retry shortly.",
}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` document the error statuses of every operation."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(app, build())
        return build()

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(app: FastAPI, document: dict[str, Any]) -> None:
    """Add the error statuses of each of `app`'s routes to their operations in `document`."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_SCHEMA] = _ERROR
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    # Routes of included routers are contexts (their prefix) around the router's own route.
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not context.include_in_schema:
            continue
        statuses = {422, 503}
        if route.body_field is not None:
            statuses |= {400, 413}
        if get_principal in _calls(route.dependant):
            statuses |= {401, 403, 429}
        if route.dependant.path_params:
            statuses.add(404)
        for method in route.methods or ():
            operation = document["paths"][context.path_format].get(method.lower())
            if operation is not None:
                _add_errors(operation, statuses)


def _add_errors(operation: dict[str, Any], statuses: set[int]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for added in statuses:
        responses.setdefault(str(added), {"description": _DESCRIPTIONS[added]})
    shape = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
    for status, response in responses.items():
        # FastAPI's own 422 has another shape than the one Colony answers: replaced.
        if status[0] in "45" and (status == "422" or "content" not in response):
            response["content"] = shape
            if status == "422":
                response["description"] = _DESCRIPTIONS[422]
    operation["responses"] = dict(sorted(responses.items()))


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    """Every function `dependant` depends on, directly or through other dependencies."""
    found: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _calls(sub)
    return found
