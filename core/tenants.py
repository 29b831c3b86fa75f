"""Tenants and API keys.

Keys look like `colony_sk_<43 url-safe chars>`; only their SHA-256 is stored (a key has
256 bits of entropy, so a slow hash adds nothing). The plaintext exists once: in the
response that created it, or in `$COLONY_DATA_DIR/admin-key` (mode 0600) for the local
tenant's admin key that `colony up` creates.
"""

import hashlib
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict

from core.errors import AuthError, NotFound

KEY_PREFIX = "colony_sk_"
LOCAL_TENANT = "local"
ADMIN_KEY_FILE = "admin-key"
# last_used_at is bookkeeping, not audit: write it at most this often per key.
_TOUCH_INTERVAL = timedelta(minutes=1)

Role = Literal["admin", "member"]
SharingMode = Literal["isolated", "shared"]
"""How a tenant's agents share what they learn (migration 0012).

`shared` (the default): lessons and skills an agent writes with scope `shared` are
recalled by, shown to the evolution of, and drafted into every agent of the tenant.
`isolated`: an agent learns only from its own runs, whatever scope its memories have.
Nothing crosses tenants in either mode.
"""
DEFAULT_SHARING: SharingMode = "shared"


class Principal(BaseModel):
    """Who is calling: the tenant and key a request authenticated as."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    key_id: str
    role: Role


class ApiKeyRecord(BaseModel):
    """An API key as stored (never the plaintext)."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


def hash_key(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def ensure_tenant(conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str) -> None:
    """Create the tenant if it does not exist."""
    await conn.execute(
        "INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
        (tenant_id, name),
    )


async def get_sharing(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> SharingMode:
    """The tenant's sharing mode (`DEFAULT_SHARING` for an unknown tenant)."""
    cur = await conn.execute("SELECT sharing FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    if row is None:
        return DEFAULT_SHARING
    return "isolated" if _as_dict(row)["sharing"] == "isolated" else "shared"


async def set_sharing(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, mode: SharingMode
) -> SharingMode:
    """Set the tenant's sharing mode; returns it.

    Raises:
        NotFound: no such tenant.
    """
    cur = await conn.execute(
        "UPDATE tenants SET sharing = %s WHERE id = %s RETURNING sharing", (mode, tenant_id)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    return mode


async def create_api_key(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, role: Role = "member"
) -> tuple[ApiKeyRecord, str]:
    """Create a key for `tenant_id`. Returns the record and the plaintext (shown once)."""
    key = new_key()
    key_id = "key_" + secrets.token_hex(8)
    try:
        cur = await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, role)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " RETURNING id, tenant_id, name, prefix, role, created_at, last_used_at, revoked_at",
            (key_id, tenant_id, name, key[: len(KEY_PREFIX) + 6], hash_key(key), role),
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    row = await cur.fetchone()
    assert row is not None
    return ApiKeyRecord.model_validate(_as_dict(row)), key


async def authenticate(conn: psycopg.AsyncConnection[Any], key: str) -> Principal:
    """The principal for a presented key.

    Raises:
        AuthError: the key is malformed, unknown or revoked.
    """
    if not key.startswith(KEY_PREFIX):
        raise AuthError("malformed API key: expected a key starting with 'colony_sk_'")
    cur = await conn.execute(
        "SELECT id, tenant_id, role, revoked_at, last_used_at FROM api_keys WHERE key_hash = %s",
        (hash_key(key),),
    )
    row = await cur.fetchone()
    if row is None:
        raise AuthError("unknown API key")
    record = _as_dict(row)
    if record["revoked_at"] is not None:
        raise AuthError("this API key was revoked")
    now = datetime.now(UTC)
    last = record["last_used_at"]
    if last is None or now - last > _TOUCH_INTERVAL:
        await conn.execute(
            "UPDATE api_keys SET last_used_at = %s WHERE id = %s", (now, record["id"])
        )
    return Principal(tenant_id=record["tenant_id"], key_id=record["id"], role=record["role"])


async def list_api_keys(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> list[ApiKeyRecord]:
    """Every key of a tenant, newest first."""
    cur = await conn.execute(
        "SELECT id, tenant_id, name, prefix, role, created_at, last_used_at, revoked_at"
        " FROM api_keys WHERE tenant_id = %s ORDER BY created_at DESC",
        (tenant_id,),
    )
    return [ApiKeyRecord.model_validate(_as_dict(r)) for r in await cur.fetchall()]


async def revoke_api_key(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, key_id: str
) -> ApiKeyRecord:
    """Revoke a key of the tenant. Revoking twice is harmless.

    Raises:
        NotFound: no such key for this tenant.
    """
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
        " WHERE id = %s AND tenant_id = %s"
        " RETURNING id, tenant_id, name, prefix, role, created_at, last_used_at, revoked_at",
        (key_id, tenant_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"API key {key_id!r} not found")
    return ApiKeyRecord.model_validate(_as_dict(row))


async def ensure_admin_key_file(conn: psycopg.AsyncConnection[Any], data_dir: Path) -> Path:
    """Make sure `data_dir/admin-key` holds a valid admin key of the local tenant.

    Creates the local tenant and a key on first start; replaces the file when its key is
    no longer valid (e.g. the database was recreated). The file is mode 0600.
    """
    path = data_dir / ADMIN_KEY_FILE
    await ensure_tenant(conn, LOCAL_TENANT, "Local")
    if path.exists():
        try:
            principal = await authenticate(conn, path.read_text().strip())
        except AuthError:
            pass
        else:
            if principal.tenant_id == LOCAL_TENANT and principal.role == "admin":
                path.chmod(0o600)
                return path
    _, key = await create_api_key(conn, LOCAL_TENANT, "admin (colony up)", role="admin")
    tmp = path.with_suffix(".tmp")
    # Created with 0600 from the start: the key is never world-readable, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    tmp.replace(path)
    return path


def read_key_file(data_dir: Path) -> str | None:
    """The admin key stored by `colony up`, if any."""
    path = data_dir / ADMIN_KEY_FILE
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _as_dict(row: Any) -> dict[str, Any]:
    # Connections are opened with dict_row (core.db); this narrows the type.
    return dict(row)
