"""Tenants and API keys against a real Postgres."""

import stat
from pathlib import Path

import pytest

from core import tenants
from core.db import Pool
from core.errors import AuthError, NotFound


async def test_key_round_trip_and_revocation(pool: Pool) -> None:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, "acme", "Acme")
        record, key = await tenants.create_api_key(conn, "acme", "ci", role="member")
        assert key.startswith(tenants.KEY_PREFIX) and record.prefix == key[: len(record.prefix)]
        principal = await tenants.authenticate(conn, key)
        assert (principal.tenant_id, principal.key_id, principal.role) == (
            "acme",
            record.id,
            "member",
        )
        # Only the hash is stored.
        cur = await conn.execute("SELECT * FROM api_keys WHERE id = %s", (record.id,))
        row = await cur.fetchone()
        assert row is not None and key.encode() not in row["key_hash"] and key not in str(row)
        assert row["last_used_at"] is not None
        await tenants.revoke_api_key(conn, "acme", record.id)
        with pytest.raises(AuthError, match="revoked"):
            await tenants.authenticate(conn, key)


async def test_bad_keys_are_refused(pool: Pool) -> None:
    async with pool.connection() as conn:
        with pytest.raises(AuthError, match="malformed"):
            await tenants.authenticate(conn, "sk-not-ours")
        with pytest.raises(AuthError, match="unknown"):
            await tenants.authenticate(conn, tenants.new_key())


async def test_tenants_cannot_touch_each_others_keys(pool: Pool) -> None:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, "t-one", "One")
        await tenants.ensure_tenant(conn, "t-two", "Two")
        record, _ = await tenants.create_api_key(conn, "t-one", "k")
        with pytest.raises(NotFound):
            await tenants.revoke_api_key(conn, "t-two", record.id)
        assert [k.id for k in await tenants.list_api_keys(conn, "t-two")] == []
        with pytest.raises(NotFound, match="tenant 'nobody-here' does not exist"):
            await tenants.create_api_key(conn, "nobody-here", "k")


async def test_admin_key_file_is_private_and_self_healing(pool: Pool, tmp_path: Path) -> None:
    async with pool.connection() as conn:
        path = await tenants.ensure_admin_key_file(conn, tmp_path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = tenants.read_key_file(tmp_path)
        assert key is not None
        principal = await tenants.authenticate(conn, key)
        assert (principal.tenant_id, principal.role) == (tenants.LOCAL_TENANT, "admin")
        # A second start keeps the same key.
        await tenants.ensure_admin_key_file(conn, tmp_path)
        assert tenants.read_key_file(tmp_path) == key
        # A key the database no longer knows (e.g. a recreated database) is replaced.
        await tenants.revoke_api_key(
            conn, tenants.LOCAL_TENANT, principal.key_id, keep_an_admin=False
        )
        await tenants.ensure_admin_key_file(conn, tmp_path)
        replacement = tenants.read_key_file(tmp_path)
        assert replacement is not None and replacement != key
        assert (await tenants.authenticate(conn, replacement)).role == "admin"
