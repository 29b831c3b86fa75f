"""Terminal output and the API client shared by the `colony` commands."""

import sys
from typing import NoReturn

from rich.console import Console

from api.client import ColonyClient
from core.errors import ColonyError
from core.settings import Settings

console = Console()
errors = Console(stderr=True)


MAX_PREVIEW = 200


def preview(text: str | None, limit: int = MAX_PREVIEW) -> str:
    """`text` on one line, cut to `limit` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error and exit with `code`."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def api_client() -> ColonyClient:
    """A client for the API the settings name (`COLONY_API_URL`, `COLONY_API_KEY`)."""
    return ColonyClient(Settings())


def fail_api(exc: ColonyError) -> NoReturn:
    """Fail with the API's message and, for a rejected body, each error in it."""
    lines = [exc.message]
    for error in exc.details.get("errors", []):
        if isinstance(error, dict):  # a request validation error
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            lines.append(f"  - {where}: {error.get('msg')}" if where else f"  - {error.get('msg')}")
        else:
            lines.append(f"  - {error}")
    fail("\n".join(lines))
