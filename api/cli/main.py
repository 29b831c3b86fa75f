"""The `colony` command line: the commands that talk to the API, Postgres or Temporal.

The console script is workers/cli.py, which adds the commands that run the stack.
"""

import asyncio
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click
import httpx
from rich.markup import escape
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


@dataclass(frozen=True)
class DemoPart:
    """How one part of the demo went: its name, whether it did its job, and why not."""

    name: str
    ok: bool
    detail: str


def main_job(settings: Settings) -> bool:
    """The demo: a stack check across every lane, a real agent run, then a swarm.

    Every part runs, and each must not only finish but give the expected answer; the
    summary names each failed part and why.
    """
    parts: list[DemoPart] = []
    for name, part in (
        ("stack check", _run_stack_check),
        ("agent run", _run_demo_agent),
        ("swarm", _run_demo_swarm),
    ):
        try:
            parts.append(part(settings))
        except Exception as exc:  # any failure of a part is reported, then the next runs
            parts.append(DemoPart(name, False, f"{type(exc).__name__}: {exc}"))
    table = Table(title="Demo summary", title_justify="left")
    for column in ("part", "ok", "detail"):
        table.add_column(column, overflow="fold")
    for p in parts:
        table.add_row(p.name, "yes" if p.ok else "[red]NO[/]", escape(p.detail))
    console.print()
    console.print(table)
    return all(p.ok for p in parts)


def _run_stack_check(settings: Settings) -> DemoPart:
    from api.client import ColonyClient

    with ColonyClient(settings, timeout=90) as api_client:
        check = api_client.post("/v1/stack-checks", params={"wait": 60})
    table = Table(title=f"Stack check {check['id']}: {check['status']}", title_justify="left")
    for column in ("lane", "ok", "detail", "worker", "ms"):
        table.add_column(column, overflow="fold")
    for lane in check["lanes"]:
        table.add_row(
            lane["lane"],
            "yes" if lane["ok"] else "[red]no[/]",
            lane["detail"],
            lane["worker"],
            f"{lane['duration_ms']:.1f}",
        )
    console.print(table)
    if check.get("temporal_ui"):
        console.print(f"Temporal UI: {check['temporal_ui']}")
    failed = [lane["lane"] for lane in check["lanes"] if not lane["ok"]]
    if check["status"] != "succeeded" or failed:
        return DemoPart(
            "stack check", False, f"{check['status']}; lanes not ok: {', '.join(failed) or '-'}"
        )
    return DemoPart("stack check", True, f"{len(check['lanes'])} lanes ok")


DEMO_AGENT = {
    "name": "colony-demo",
    "instructions": (
        "You are a precise assistant. For arithmetic, call the calculator tool with the "
        "expression, then answer with the result in one short sentence."
    ),
    "tools": ["calculator", "get_time"],
    "temperature": 0,
    "max_output_tokens": 256,
    "limits": {"max_steps": 4},
}
DEMO_OBJECTIVE = "What is 17 * 23? Use the calculator tool."
DEMO_AGENT_EXPECTS = ("391",)


def _run_demo_agent(settings: Settings) -> DemoPart:
    """A real agent run with the default model; ok when it succeeded with 17 * 23 = 391."""
    from api.cli.runs import SMALL_MODEL_NOTE, render_events
    from api.client import ColonyClient, EventStream
    from core.providers import LOCAL_MODEL, default_model

    model = default_model(settings)
    with ColonyClient(settings, timeout=60) as api_client:
        agent = api_client.post("/v1/agents", json={**DEMO_AGENT, "model": model})
        console.print(
            f"\nAgent run: {agent['name']} v{agent['version']} ({model}) · {DEMO_OBJECTIVE}",
            highlight=False,
        )
        if model == LOCAL_MODEL:
            errors.print(f"[yellow]{SMALL_MODEL_NOTE}[/]", highlight=False)
        run = api_client.post(
            "/v1/runs", json={"agent": agent["name"], "objective": DEMO_OBJECTIVE}
        )
        render_events(EventStream.of_run(api_client, run["id"]), run["id"])
        if run.get("temporal_ui"):
            console.print(f"Temporal UI: {run['temporal_ui']}", highlight=False)
        finished = api_client.get(f"/v1/runs/{run['id']}")
    return _judge("agent run", finished, DEMO_AGENT_EXPECTS)


DEMO_SWARM = {
    "objective": "Work out 17 * 23 and 2 ** 10, then report both results in one sentence.",
    "mode": "parallel",
    "plan": [
        {
            "id": "product",
            "role": "analyst",
            "description": "Compute 17 * 23 with the calculator tool.",
            "expected_output": "the number",
            "complexity": "low",
        },
        {
            "id": "power",
            "role": "analyst",
            "description": "Compute 2 ** 10 with the calculator tool.",
            "expected_output": "the number",
            "complexity": "low",
        },
    ],
    "limits": {"max_parallel": 2, "max_retries": 0},
}
DEMO_SWARM_EXPECTS = ("391", "1024")


def _run_demo_swarm(settings: Settings) -> DemoPart:
    """A swarm of two parallel subtasks; ok when its answer holds 391 and 1024."""
    from api.cli.swarms import render_swarm_events
    from api.client import ColonyClient, EventStream

    with ColonyClient(settings, timeout=60) as api_client:
        swarm = api_client.post("/v1/swarms", json=DEMO_SWARM)
        console.print(
            f"\nSwarm: {swarm['id']} · {DEMO_SWARM['objective']}", highlight=False, soft_wrap=True
        )
        render_swarm_events(EventStream.of_swarm(api_client, swarm["id"]))
        if swarm.get("temporal_ui"):
            console.print(f"Temporal UI: {swarm['temporal_ui']}", highlight=False, soft_wrap=True)
        finished = api_client.get(f"/v1/swarms/{swarm['id']}")
    return _judge("swarm", finished, DEMO_SWARM_EXPECTS)


def _judge(part: str, finished: dict[str, Any], expects: Sequence[str]) -> DemoPart:
    """A finished run or swarm against the numbers its answer must contain."""
    if finished.get("outcome") != "succeeded":
        reason = finished.get("reason") or "no reason recorded"
        return DemoPart(part, False, f"{finished.get('outcome') or finished['status']}: {reason}")
    result = finished.get("result") or ""
    numbers = set(re.findall(r"\d+", result.replace(",", "")))
    missing = [n for n in expects if n not in numbers]
    if missing:
        return DemoPart(
            part, False, f"wrong answer: {', '.join(missing)} missing from {result[:300]!r}"
        )
    return DemoPart(part, True, f"answered {', '.join(expects)}")


def _register() -> None:
    from api.cli import memory as cli_memory
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
        cli_tools.tools_group,
        cli_tools.mcp_group,
        cli_tools.put_secret,
        cli_memory.memory_group,
    ):
        cli.add_command(command)


_register()
