"""`colony keys` and `colony tenants`: keys with scopes and expiry, directly in Postgres."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result

from api.cli.main import cli, parse_duration
from core import db, tenants
from core.errors import AuthError


def run(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"DATABASE_URL": database_url, "COLUMNS": "200"})


async def test_keys_are_created_with_scopes_listed_and_revoked(database_url: str) -> None:
    created = await asyncio.to_thread(
        run, database_url, "keys", "create", "--tenant", "cli-new", "--scope", "eval",
        "--scope", "read", "--expires-in", "30d",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    key = created.output.splitlines()[-1]
    assert key == created.stdout.strip() and key.startswith(tenants.KEY_PREFIX)
    assert "scopes read,eval" in created.output and "shown once" in created.output
    async with await db.connect(database_url) as conn:
        principal = await tenants.authenticate(conn, key)
        (record,) = await tenants.list_api_keys(conn, "cli-new")
    assert (principal.tenant_id, principal.scopes, principal.role) == (
        "cli-new", ("read", "eval"), "member",
    )  # fmt: skip
    assert record.expires_at is not None
    assert timedelta(days=29) < record.expires_at - datetime.now(UTC) <= timedelta(days=30)

    admin = await asyncio.to_thread(
        run, database_url, "keys", "create", "--tenant", "cli-new", "--scope", "admin"
    )
    admin_key = admin.output.splitlines()[-1]
    old_style = await asyncio.to_thread(
        run, database_url, "keys", "create", "--tenant", "cli-old", "--role", "admin"
    )
    assert old_style.exit_code == 0 and "scopes admin" in old_style.output

    listed = await asyncio.to_thread(run, database_url, "keys", "list", "--tenant", "cli-new")
    assert listed.exit_code == 0 and principal.key_id in listed.output
    assert "read,eval" in listed.output and key not in listed.output

    tenants_out = await asyncio.to_thread(run, database_url, "tenants")
    assert tenants_out.exit_code == 0, tenants_out.output
    row = next(line for line in tenants_out.output.splitlines() if "cli-new" in line)
    assert [c.strip() for c in row.split("│")[4:6]] == ["2", "1"], row  # usable keys, admin

    # The CLI reaches Postgres directly and can always make another key: it may revoke a
    # tenant's last admin key, and says how to make a new one.
    async with await db.connect(database_url) as conn:
        admin_id = (await tenants.authenticate(conn, admin_key)).key_id
    revoked = await asyncio.to_thread(
        run, database_url, "keys", "revoke", "--tenant", "cli-new", admin_id
    )
    assert revoked.exit_code == 0, revoked.output
    assert "no usable admin key left" in revoked.output
    async with await db.connect(database_url) as conn:
        with pytest.raises(AuthError, match="revoked"):
            await tenants.authenticate(conn, admin_key)
    missing = await asyncio.to_thread(
        run, database_url, "keys", "revoke", "--tenant", "cli-old", admin_id
    )
    assert missing.exit_code == 1 and "not found" in missing.output


async def test_tenants_are_created_and_bad_input_is_refused(database_url: str) -> None:
    created = await asyncio.to_thread(run, database_url, "tenants", "create", "cli-empty")
    assert created.exit_code == 0 and "cli-empty" in created.output
    listed = await asyncio.to_thread(run, database_url, "tenants")
    row = next(line for line in listed.output.splitlines() if "cli-empty" in line)
    assert [c.strip() for c in row.split("│")[4:6]] == ["0", "0"], row
    bad = await asyncio.to_thread(
        run, database_url, "keys", "create", "--tenant", "cli-empty", "--expires-in", "soon"
    )
    assert bad.exit_code == 2 and "not a duration" in bad.output
    both = await asyncio.to_thread(
        run, database_url, "keys", "create", "--tenant", "cli-empty", "--scope", "read",
        "--role", "admin",
    )  # fmt: skip
    assert both.exit_code == 1 and "not both" in both.output


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(days=14)


async def test_tenants_usage_sums_the_ledger_by_tenant(database_url: str) -> None:
    async with await db.connect(database_url, autocommit=True) as conn:
        for tenant, agent, cost in (("use-a", "alpha", "0.5"), ("use-a", "beta", None),
                                    ("use-b", "alpha", "0.25")):  # fmt: skip
            await tenants.ensure_tenant(conn, tenant, tenant)
            await conn.execute(
                "INSERT INTO evolution_llm_calls (tenant_id, agent_name, model, prompt_tokens,"
                " completion_tokens, cost_usd) VALUES (%s, %s, 'openai/m', 10, 2, %s)",
                (tenant, agent, cost),
            )
    shown = await asyncio.to_thread(run, database_url, "tenants", "usage", "--json")
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    by_tenant = {g["name"]: g for g in body["by_tenant"] if g["name"].startswith("use-")}
    assert by_tenant["use-a"] == {
        "name": "use-a", "calls": 2, "prompt_tokens": 20, "completion_tokens": 4,
        "cost_usd": 0.5, "unpriced_calls": 1,
    }  # fmt: skip
    assert by_tenant["use-b"]["cost_usd"] == 0.25
    agents = {g["name"] for g in body["by_agent"]}
    assert {"use-a/alpha", "use-a/beta", "use-b/alpha"} <= agents
    table = await asyncio.to_thread(run, database_url, "tenants", "usage")
    assert table.exit_code == 0 and "by tenant since" in table.output
    assert "use-a/beta" in table.output
    later = await asyncio.to_thread(
        run, database_url, "tenants", "usage", "--json", "--since", "2999-01-01"
    )
    assert json.loads(later.output)["by_tenant"] == []
    bad = await asyncio.to_thread(run, database_url, "tenants", "usage", "--since", "soon")
    assert bad.exit_code != 0 and "not an ISO 8601 time" in bad.output
