"""Checks every request gets before its route runs, whatever its pydantic models say.

Postgres text and jsonb cannot hold a NUL character (U+0000): a NUL that reached a
query would fail there, as a 500. `reject_nul` refuses it first, with a 422 naming
each place it was found, in the path, query, headers or anywhere in a JSON body
(keys too). It runs as an app-wide dependency, so no route and no model can miss it.
"""

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

NUL = "\x00"
_NUL_IN_JSON = (b"\\u0000", NUL.encode())  # escaped, or raw (invalid JSON, answered 400)
_MESSAGE = "must not contain a NUL character (\\u0000)"


async def reject_nul(request: Request) -> None:
    """Refuse a request with a NUL character in any parameter or JSON body value or key.

    Raises:
        RequestValidationError: one error per place (answered 422 `invalid_request`).
    """
    found: list[tuple[Any, ...]] = []
    found += [("path", name) for name, value in request.path_params.items() if NUL in str(value)]
    found += [("query", name) for name, value in request.query_params.multi_items()
              if NUL in name or NUL in value]  # fmt: skip
    found += [("header", name) for name, value in request.headers.items()
              if NUL in name or NUL in value]  # fmt: skip
    body = await request.body()
    if body and any(marker in body for marker in _NUL_IN_JSON):
        try:
            document = json.loads(body)
        except ValueError:
            document = None  # not JSON: the route's own validation answers
        found += [("body", *loc) for loc in _nul_paths(document, ())]
    if found:
        raise RequestValidationError(
            [{"loc": loc, "msg": _MESSAGE, "type": "nul_character"} for loc in found]
        )


def _nul_paths(value: Any, loc: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    """Where in a JSON document a string (or an object key) holds a NUL."""
    if isinstance(value, str):
        return [loc] if NUL in value else []
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _nul_paths(item, (*loc, i))]
    if isinstance(value, dict):
        paths: list[tuple[str | int, ...]] = []
        for key, item in value.items():
            paths += [(*loc, key)] if NUL in key else _nul_paths(item, (*loc, key))
        return paths
    return []
