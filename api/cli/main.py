"""The `colony` command line: the commands that talk to the API, Postgres or Temporal.

The console script is workers/cli.py, which adds the commands that run the stack.
"""

import asyncio
import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
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


@cli.command("rotate-secrets")
def rotate_secrets() -> None:
    """Re-encrypt stored secrets with COLONY_SECRETS_KEY (old keys in ..._PREVIOUS_KEYS)."""
    from core import db
    from core.tools import secrets

    async def rotate() -> int:
        settings = Settings()
        cipher = secrets.cipher_from_settings(settings)
        async with await db.connect(settings.effective_database_url) as conn:
            async with conn.transaction():
                return await secrets.rotate_secrets(conn, cipher)

    try:
        count = asyncio.run(rotate())
    except ColonyError as exc:
        _fail(exc.message)
    except Exception as exc:  # connection errors from psycopg
        _fail(f"cannot reach Postgres: {exc}. Start the stack (`colony up`) or set DATABASE_URL.")
    console.print(f"{count} secret(s) re-encrypted with the current key", highlight=False)


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys directly in Postgres (bootstraps deployments)."""


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w` as a timedelta.

    Raises:
        click.BadParameter: anything else.
    """
    match = _DURATION.match(text.strip())
    if match is None or int(match[1]) == 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 12h, 30d or 2w")
    return timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant id; created when missing.")
@click.option("--name", default="cli", show_default=True, help="A label for the key.")
@click.option(
    "--scope", "scopes", multiple=True, type=click.Choice(["admin", "write", "read", "eval"]),
    help="Repeatable. admin (implies write, eval), write (implies read), eval (evolution"
    " automation; implies read), read. Default: write.",
)  # fmt: skip
@click.option(
    "--role", type=click.Choice(["admin", "member"]), default=None,
    help="Deprecated: --scope admin or --scope write.",
)  # fmt: skip
@click.option("--expires-in", default=None, help="Expire after e.g. 12h, 30d, 2w.")
def keys_create(
    tenant: str, name: str, scopes: tuple[str, ...], role: str | None, expires_in: str | None
) -> None:
    """Create a key and print it once, as the last line (the database keeps only its hash)."""
    from core import db, tenants

    if scopes and role:
        _fail("give --scope or --role, not both")
    chosen = list(scopes) if scopes else list(tenants.scopes_of_role(role or "member"))  # type: ignore[arg-type]
    expires_at = datetime.now(UTC) + parse_duration(expires_in) if expires_in else None

    async def create() -> tuple[tenants.ApiKeyRecord, str]:
        async with await db.connect(Settings().effective_database_url, autocommit=True) as conn:
            await tenants.ensure_tenant(conn, tenant, tenant)
            return await tenants.create_api_key(
                conn, tenant, name, scopes=chosen, expires_at=expires_at
            )

    try:
        record, key = asyncio.run(create())
    except ColonyError as exc:
        _fail(exc.message)
    except Exception as exc:
        _fail(f"could not create the key: {exc}")
    expiry = f", expires {record.expires_at:%Y-%m-%d %H:%M %Z}" if record.expires_at else ""
    errors.print(
        f"key {record.id} for tenant {tenant!r}, scopes {','.join(record.scopes)}{expiry}"
        " (shown once; store it now):"
    )
    console.print(key, highlight=False, soft_wrap=True)


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
    for column in ("name", "prefix", "scopes", "created", "last used", "expires", "revoked"):
        table.add_column(column)
    for k in asyncio.run(listing()):
        table.add_row(k.id, k.name, k.prefix + "...", ",".join(k.scopes), _when(k.created_at),
                      _when(k.last_used_at), _when(k.expires_at), _when(k.revoked_at))  # fmt: skip
    console.print(table)


@keys.command("revoke")
@click.option("--tenant", required=True)
@click.argument("key_id")
def keys_revoke(tenant: str, key_id: str) -> None:
    """Revoke a key; it stops working at once (even the tenant's last admin key)."""
    from core import db, tenants

    async def revoke() -> list[tenants.TenantRecord]:
        async with await db.connect(Settings().effective_database_url, autocommit=True) as conn:
            await tenants.revoke_api_key(conn, tenant, key_id, keep_an_admin=False)
            return await tenants.list_tenants(conn)

    try:
        left = asyncio.run(revoke())
    except ColonyError as exc:
        _fail(exc.message)
    console.print(f"revoked {key_id}")
    if not any(t.id == tenant and t.admin_keys for t in left):
        errors.print(
            f"tenant {tenant!r} has no usable admin key left; make one with"
            f" `colony keys create --tenant {tenant} --scope admin`"
        )


@cli.group(invoke_without_command=True)
@click.pass_context
def tenants(ctx: click.Context) -> None:
    """List tenants with their key counts (directly in Postgres); `tenants create` adds one."""
    if ctx.invoked_subcommand is not None:
        return
    from core import db
    from core import tenants as store

    async def listing() -> list[store.TenantRecord]:
        async with await db.connect(Settings().effective_database_url) as conn:
            return await store.list_tenants(conn)

    try:
        found = asyncio.run(listing())
    except Exception as exc:
        _fail(f"cannot list tenants: {exc}")
    table = Table(title="Tenants", title_justify="left")
    for column in ("id", "name", "created", "keys", "admin keys"):
        table.add_column(column)
    for t in found:
        table.add_row(t.id, t.name, _when(t.created_at), str(t.active_keys), str(t.admin_keys))
    console.print(table)


@tenants.command("usage")
@click.option(
    "--since", default=None, help="Start of the breakdown, ISO 8601 (default: 30 days ago)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the breakdown as JSON.")
def tenants_usage(since: str | None, as_json: bool) -> None:
    """Cost and tokens of every tenant's model calls by tenant, agent, model and day (Postgres)."""
    from api.cli.usage import print_groups
    from core import db, limits

    try:
        start = datetime.now(UTC) - timedelta(days=30) if since is None else _aware(since)
    except ValueError:
        _fail(f"--since {since!r} is not an ISO 8601 time")

    async def read() -> dict[str, list[limits.UsageGroup]]:
        async with await db.connect(Settings().effective_database_url) as conn:
            return await limits.usage(conn, None, start)

    try:
        groups = asyncio.run(read())
    except Exception as exc:
        _fail(f"cannot read usage: {exc}")
    body: dict[str, Any] = {
        "since": start.isoformat(),
        **{f"by_{name}": [g.model_dump() for g in found] for name, found in groups.items()},
    }
    if as_json:
        console.print_json(json.dumps(body))
        return
    print_groups(body, body["since"], ("tenant", "agent", "model", "day"))


def _aware(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@tenants.command("create")
@click.argument("tenant_id")
@click.option("--name", default=None, help="A display name (default: the id).")
def tenants_create(tenant_id: str, name: str | None) -> None:
    """Create a tenant (no keys yet: `colony keys create --tenant ID --scope admin`)."""
    from core import db
    from core import tenants as store

    async def create() -> None:
        async with await db.connect(Settings().effective_database_url, autocommit=True) as conn:
            await store.ensure_tenant(conn, tenant_id, name or tenant_id)

    try:
        asyncio.run(create())
    except Exception as exc:
        _fail(f"could not create tenant {tenant_id!r}: {exc}")
    console.print(f"tenant {tenant_id} exists")


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
    from api.cli import safety as cli_safety
    from api.cli import swarms as cli_swarms
    from api.cli import tools as cli_tools
    from api.cli import usage as cli_usage

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
        cli_safety.safety_log,
        cli_usage.usage_command,
        cli_data_rights.runs_group,
        cli_data_rights.end_users_group,
        cli_data_rights.export_command,
    ):
        cli.add_command(command)


_register()
