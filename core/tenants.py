"""Tenants and API keys.

Keys look like `colony_sk_<43 url-safe chars>`; only their SHA-256 is stored (a key has
256 bits of entropy, so a slow hash adds nothing). The plaintext exists once: in the
response that created it, or in `$COLONY_DATA_DIR/admin-key` (mode 0600) for the local
tenant's admin key that `colony up` creates.

A key has scopes (migration 0014). Each grants what the scopes it implies grant:

    admin   keys, audit log, tenant settings, secrets, egress, MCP servers  (+ write, eval)
    write   every other mutating call                                         (+ read)
    eval    evolution-only automation: eval cases, feedback, evolution cycles,
            schedules and rollouts                                            (+ read)
    read    every GET

`role` (admin|member) is what keys had before scopes; it is still stored and answered,
derived from the scopes, and still accepted as input (admin -> {admin}, member -> {write}).
A key may expire (`expires_at`); a revoked or expired key is refused on its next request:
nothing is cached.
"""

import hashlib
import os
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict

from core.errors import AuthError, Conflict, InvalidInput, NotFound

KEY_PREFIX = "colony_sk_"
LOCAL_TENANT = "local"
ADMIN_KEY_FILE = "admin-key"
# last_used_at is bookkeeping, not audit: write it at most this often per key.
_TOUCH_INTERVAL = timedelta(minutes=1)

Role = Literal["admin", "member"]
Scope = Literal["admin", "write", "read", "eval"]
SCOPES: tuple[Scope, ...] = ("admin", "write", "read", "eval")
_IMPLIES: dict[Scope, frozenset[Scope]] = {
    "admin": frozenset({"admin", "write", "read", "eval"}),
    "write": frozenset({"write", "read"}),
    "eval": frozenset({"eval", "read"}),
    "read": frozenset({"read"}),
}
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
    scopes: tuple[Scope, ...] = ()
    """Empty for a principal built from a role alone: the role's scopes apply."""

    def allows(self, scope: Scope) -> bool:
        """Whether the key's scopes grant `scope` (directly or by implication)."""
        return scope in granted(self.scopes or scopes_of_role(self.role))


class ApiKeyRecord(BaseModel):
    """An API key as stored (never the plaintext)."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    name: str
    prefix: str
    role: Role
    scopes: tuple[Scope, ...]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = None


class TenantRecord(BaseModel):
    """A tenant and how many keys it has."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    created_at: datetime
    active_keys: int
    admin_keys: int


def granted(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """Every scope that `scopes` grant, implied ones included."""
    return frozenset().union(*(_IMPLIES[s] for s in scopes))


def normalize_scopes(scopes: Iterable[str]) -> tuple[Scope, ...]:
    """Distinct known scopes in canonical order.

    Raises:
        InvalidInput: an unknown scope, or none at all.
    """
    given = set(scopes)
    unknown = sorted(given - set(SCOPES))
    if unknown:
        raise InvalidInput(
            f"unknown scope {', '.join(map(repr, unknown))}: scopes are {', '.join(SCOPES)}"
        )
    if not given:
        raise InvalidInput(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in given)


def scopes_of_role(role: Role) -> tuple[Scope, ...]:
    """The scopes a key created with the older `role` gets."""
    return ("admin",) if role == "admin" else ("write",)


def role_of(scopes: Iterable[Scope]) -> Role:
    """The older role a key with `scopes` reports."""
    return "admin" if "admin" in scopes else "member"


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


_KEY_COLUMNS = (
    "id, tenant_id, name, prefix, role, scopes, created_at, last_used_at, revoked_at, expires_at"
)


async def create_api_key(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    name: str,
    role: Role | None = None,
    *,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKeyRecord, str]:
    """Create a key for `tenant_id`. Returns the record and the plaintext (shown once).

    `scopes` wins over the older `role`; with neither the key gets `write`.

    Raises:
        InvalidInput: unknown scopes, or an expiry that is not in the future.
        NotFound: no such tenant.
    """
    if scopes is not None:
        chosen = normalize_scopes(scopes)
    else:
        chosen = scopes_of_role(role or "member")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a time zone, e.g. 2030-01-01T00:00:00Z")
        if expires_at <= datetime.now(UTC):
            raise InvalidInput(f"expires_at {expires_at.isoformat()} is not in the future")
    key = new_key()
    key_id = "key_" + secrets.token_hex(8)
    try:
        cur = await conn.execute(
            "INSERT INTO api_keys"
            " (id, tenant_id, name, prefix, key_hash, role, scopes, expires_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_KEY_COLUMNS}",
            (key_id, tenant_id, name, key[: len(KEY_PREFIX) + 6], hash_key(key),
             role_of(chosen), list(chosen), expires_at),
        )  # fmt: skip
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    row = await cur.fetchone()
    assert row is not None
    return _record(row), key


async def authenticate(conn: psycopg.AsyncConnection[Any], key: str) -> Principal:
    """The principal for a presented key.

    Raises:
        AuthError: the key is malformed, unknown, revoked or expired.
    """
    if not key.startswith(KEY_PREFIX):
        raise AuthError("malformed API key: expected a key starting with 'colony_sk_'")
    cur = await conn.execute(
        "SELECT id, tenant_id, scopes, revoked_at, expires_at, last_used_at FROM api_keys"
        " WHERE key_hash = %s",
        (hash_key(key),),
    )
    row = await cur.fetchone()
    if row is None:
        raise AuthError("unknown API key")
    record = _as_dict(row)
    if record["revoked_at"] is not None:
        raise AuthError("this API key was revoked")
    now = datetime.now(UTC)
    if record["expires_at"] is not None and record["expires_at"] <= now:
        raise AuthError(f"this API key expired at {record['expires_at'].isoformat()}")
    last = record["last_used_at"]
    if last is None or now - last > _TOUCH_INTERVAL:
        await conn.execute(
            "UPDATE api_keys SET last_used_at = %s WHERE id = %s", (now, record["id"])
        )
    scopes = normalize_scopes(record["scopes"])
    return Principal(
        tenant_id=record["tenant_id"], key_id=record["id"], role=role_of(scopes), scopes=scopes
    )


async def key_is_usable(conn: psycopg.AsyncConnection[Any], key_id: str) -> bool:
    """Whether the key is neither revoked nor expired (open streams check it)."""
    cur = await conn.execute(
        "SELECT 1 FROM api_keys WHERE id = %s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        (key_id,),
    )
    return await cur.fetchone() is not None


async def list_api_keys(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> list[ApiKeyRecord]:
    """Every key of a tenant, newest first."""
    cur = await conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = %s ORDER BY created_at DESC",
        (tenant_id,),
    )
    return [_record(r) for r in await cur.fetchall()]


async def list_tenants(conn: psycopg.AsyncConnection[Any]) -> list[TenantRecord]:
    """Every tenant, with its count of usable keys and usable admin keys."""
    cur = await conn.execute(
        "SELECT t.id, t.name, t.created_at,"
        " count(k.id) AS active_keys,"
        " count(k.id) FILTER (WHERE 'admin' = ANY (k.scopes)) AS admin_keys"
        " FROM tenants t LEFT JOIN api_keys k ON k.tenant_id = t.id AND k.revoked_at IS NULL"
        " AND (k.expires_at IS NULL OR k.expires_at > now())"
        " GROUP BY t.id ORDER BY t.id"
    )
    return [TenantRecord.model_validate(_as_dict(r)) for r in await cur.fetchall()]


async def revoke_api_key(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    key_id: str,
    *,
    keep_an_admin: bool = True,
) -> ApiKeyRecord:
    """Revoke a key of the tenant. Revoking twice is harmless.

    With `keep_an_admin` (the API), the tenant's last usable admin key cannot be revoked,
    so a tenant never locks itself out; the CLI, which reaches Postgres directly and can
    always create another key, passes False.

    Raises:
        NotFound: no such key for this tenant.
        Conflict: it is the tenant's last usable admin key.
    """
    async with conn.transaction():
        # Lock the tenant's usable admin keys: two admins revoking each other at once
        # cannot both succeed.
        cur = await conn.execute(
            "SELECT id FROM api_keys WHERE tenant_id = %s AND 'admin' = ANY (scopes)"
            " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
            " ORDER BY id FOR UPDATE",
            (tenant_id,),
        )
        admins = {_as_dict(r)["id"] for r in await cur.fetchall()}
        if keep_an_admin and admins == {key_id}:
            raise Conflict(
                f"API key {key_id!r} is the tenant's last admin key: revoking it would lock"
                " the tenant out. Create another admin key first (POST /v1/api-keys with"
                ' "scopes": ["admin"]), then revoke this one.'
            )
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            f" WHERE id = %s AND tenant_id = %s RETURNING {_KEY_COLUMNS}",
            (key_id, tenant_id),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"API key {key_id!r} not found")
    return _record(row)


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
            if principal.tenant_id == LOCAL_TENANT and principal.allows("admin"):
                path.chmod(0o600)
                return path
    _, key = await create_api_key(conn, LOCAL_TENANT, "admin (colony up)", scopes=["admin"])
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


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord.model_validate({**_as_dict(row), "scopes": tuple(row["scopes"])})


def _as_dict(row: Any) -> dict[str, Any]:
    # Connections are opened with dict_row (core.db); this narrows the type.
    return dict(row)
