"""The `colony` command line: the commands that talk to the API, Postgres or Temporal.

The console script is workers/cli.py, which adds the commands that run the stack.
"""

import asyncio
import logging
import sys
from typing import Any

import click
import httpx
from rich.table import Table

from api.cli.output import console, errors
from api.cli.output import fail as _fail
from core.errors import ColonyError
from core.settings import Settings


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG when verbose)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Dependency chatter is not what a person watching `colony up` needs.
    for name in ("httpx", "temporalio", "psycopg", "psycopg.pool"):
        logging.getLogger(name).setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Colony: durable orchestration for AI agents on Temporal."""


@cli.command()
def migrate() -> None:
    """Apply pending Postgres migrations (DATABASE_URL, or the embedded server)."""
    from core import db

    settings = Settings()
    try:
        applied = asyncio.run(_migrate(settings))
    except ColonyError as exc:
        _fail(exc.message)
    except Exception as exc:  # connection errors from psycopg
        _fail(f"cannot reach Postgres: {exc}. Start the stack (`colony up`) or set DATABASE_URL.")
    if applied:
        for m in applied:
            console.print(f"applied {m.version:04d}_{m.name}")
    else:
        console.print(f"schema is up to date (version {db.LATEST_SCHEMA_VERSION})")


async def _migrate(settings: Settings) -> list[Any]:
    from core import db

    await db.ensure_database(settings.effective_database_url)
    return await db.migrate(settings.effective_database_url)


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys directly in Postgres (bootstraps deployments)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant id; created when missing.")
@click.option("--name", default="cli", show_default=True, help="A label for the key.")
@click.option("--role", type=click.Choice(["admin", "member"]), default="member", show_default=True)
def keys_create(tenant: str, name: str, role: str) -> None:
    """Create a key and print it once (the database keeps only its hash)."""
    from core import db, tenants

    async def create() -> str:
        async with await db.connect(Settings().effective_database_url, autocommit=True) as conn:
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, key = await tenants.create_api_key(conn, tenant, name, role)  # type: ignore[arg-type]
            return key

    try:
        key = asyncio.run(create())
    except Exception as exc:
        _fail(f"could not create the key: {exc}")
    errors.print(f"{role} key for tenant {tenant!r} (shown once; store it now):")
    console.print(key, highlight=False)


@keys.command("list")
@click.option("--tenant", required=True)
def keys_list(tenant: str) -> None:
    """List a tenant's keys (prefixes only)."""
    from core import db, tenants

    async def listing() -> list[tenants.ApiKeyRecord]:
        async with await db.connect(Settings().effective_database_url) as conn:
            return await tenants.list_api_keys(conn, tenant)

    table = Table(title=f"API keys of {tenant}", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("name", "prefix", "role", "created", "last used", "revoked"):
        table.add_column(column)
    for k in asyncio.run(listing()):
        table.add_row(k.id, k.name, k.prefix + "...", k.role, f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "-",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-")  # fmt: skip
    console.print(table)


@keys.command("revoke")
@click.option("--tenant", required=True)
@click.argument("key_id")
def keys_revoke(tenant: str, key_id: str) -> None:
    """Revoke a key; it stops working at once."""
    from core import db, tenants

    async def revoke() -> None:
        async with await db.connect(Settings().effective_database_url, autocommit=True) as conn:
            await tenants.revoke_api_key(conn, tenant, key_id)

    try:
        asyncio.run(revoke())
    except ColonyError as exc:
        _fail(exc.message)
    console.print(f"revoked {key_id}")


@cli.command()
@click.option("--host", default=None, help="Bind address (default COLONY_API_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default COLONY_API_PORT or 8000).")
def api(host: str | None, port: int | None) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    settings = Settings()
    uvicorn.run(
        "api.main:create_app", factory=True,
        host=host or settings.api_host, port=port or settings.api_port, access_log=False,
    )  # fmt: skip


async def api_is_up(settings: Settings) -> bool:
    """Whether a Colony API answers at the configured URL."""
    async with httpx.AsyncClient(timeout=2) as http:
        try:
            await http.get(settings.effective_api_url + "/healthz")
        except httpx.HTTPError:
            return False
    return True


def _register() -> None:
    from api.cli import data_rights as cli_data_rights
    from api.cli import evolution as cli_evolution
    from api.cli import memory as cli_memory
    from api.cli import recipes as cli_recipes
    from api.cli import rollouts as cli_rollouts
    from api.cli import runs as cli_runs
    from api.cli import swarms as cli_swarms
    from api.cli import tools as cli_tools

    for command in (
        cli_runs.run_command,
        cli_runs.approve_command,
        cli_runs.cancel_command,
        cli_runs.feedback_command,
        cli_runs.agents_group,
        cli_swarms.swarm_command,
        cli_swarms.swarms_group,
        cli_recipes.recipes_group,
        cli_tools.tools_group,
        cli_tools.mcp_group,
        cli_tools.put_secret,
        cli_memory.memory_group,
        cli_evolution.eval_cases_group,
        cli_evolution.evolve_command,
        cli_evolution.evolutions_group,
        cli_rollouts.rollout,
        cli_data_rights.runs_group,
        cli_data_rights.end_users_group,
        cli_data_rights.export_command,
    ):
        cli.add_command(command)


_register()
