"""Tenant secrets in Postgres, encrypted with AES-256-GCM, and references to them.

Values live in `secrets`, encrypted (`SecretCipher`) under a key from
`COLONY_SECRETS_KEY`, or, when that is unset, a key file in the data dir created on
first use (fine for one machine; set the variable when the API and workers run on
different hosts). Each ciphertext is bound to its tenant and name, so a row copied to
another tenant or name does not decrypt. Records that need a secret (tools, MCP servers)
hold only its name, as `{"secret": "NAME"}`; `inline_credentials` finds literals where
such a reference belongs.

Every function takes the tenant explicitly and only ever touches that tenant's rows.
"""

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, SecretStr

from core.errors import ConfigError, InvalidInput, NotFound
from core.settings import Settings
from core.tools.mcp import SECRET_NAME_PATTERN

Conn = psycopg.AsyncConnection[Any]

MAX_SECRET_BYTES: Final = 64 * 1024


class SecretInfo(BaseModel):
    """A secret as listed: its name and dates, never its value."""

    model_config = ConfigDict(frozen=True)

    name: str
    created_at: datetime
    updated_at: datetime


# -- secrets -------------------------------------------------------------------------

SECRETS_KEY_FILE: Final = "secrets-key"
_BLOB_VERSION: Final = b"\x01"


class SecretCipher:
    """AES-256-GCM for secret values; each ciphertext is bound to (tenant, name)."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        """`key` encrypts and decrypts; `previous` keys (being rotated out) only decrypt."""
        self.key_id = _key_id(key)
        self._aead = AESGCM(_checked(key))
        self._previous = {_key_id(k): AESGCM(_checked(k)) for k in previous}

    @classmethod
    def from_text(cls, text: str, previous: Sequence[str] = ()) -> "SecretCipher":
        """A cipher from url-safe base64 keys (as written by `generate_key`).

        Raises:
            ConfigError: a text is not such a key.
        """
        return cls(_decoded(text), [_decoded(t) for t in previous])

    @staticmethod
    def generate_key() -> str:
        """A new random key, url-safe base64."""
        return base64.urlsafe_b64encode(os.urandom(32)).decode()

    @staticmethod
    def _aad(tenant_id: str, name: str) -> bytes:
        return json.dumps([tenant_id, name]).encode()

    def encrypt(self, tenant_id: str, name: str, value: str) -> bytes:
        """Ciphertext of `value` for secret `name` of `tenant_id`."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), self._aad(tenant_id, name))
        return _BLOB_VERSION + nonce + sealed

    def decrypt(self, tenant_id: str, name: str, blob: bytes, key_id: str | None = None) -> str:
        """The value sealed by `encrypt` for the same tenant and name.

        `key_id` names the key it was sealed with (the current key when None).

        Raises:
            ConfigError: the blob was sealed with an unknown key, or for another secret.
        """
        if blob[:1] != _BLOB_VERSION or len(blob) < 1 + 12 + 16:
            raise ConfigError(f"secret {name!r} is stored in an unknown format")
        aead = self._aead if key_id in (None, self.key_id) else self._previous.get(key_id or "")
        if aead is None:
            raise ConfigError(
                f"secret {name!r} was encrypted with secrets key {key_id}, but this process "
                f"has key {self.key_id}: set COLONY_SECRETS_KEY to the same value everywhere "
                "(during a rotation, the old key goes in COLONY_SECRETS_PREVIOUS_KEYS)"
            )
        try:
            plain = aead.decrypt(blob[1:13], blob[13:], self._aad(tenant_id, name))
        except InvalidTag:
            raise ConfigError(
                f"secret {name!r} cannot be decrypted with this process's secrets key"
            ) from None
        return plain.decode()


def cipher_from_settings(settings: Settings) -> SecretCipher:
    """The cipher for this deployment.

    The key is `COLONY_SECRETS_KEY` (settings field `secrets_key`) when set; otherwise
    the file `$COLONY_DATA_DIR/secrets-key`, created (mode 0600) on first use.
    """
    previous = [
        k for k in (settings.secrets_previous_keys or SecretStr("")).get_secret_value().split(",")
        if k.strip()
    ]  # fmt: skip
    if settings.secrets_key is not None:
        return SecretCipher.from_text(settings.secrets_key.get_secret_value(), previous)
    return SecretCipher.from_text(_key_file(settings.data_path / SECRETS_KEY_FILE), previous)


def _decoded(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raise ConfigError(
            "a secrets key (COLONY_SECRETS_KEY, COLONY_SECRETS_PREVIOUS_KEYS) is not url-safe "
            "base64; generate one with python -c 'import base64, os; "
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
        ) from None


def _checked(key: bytes) -> bytes:
    if len(key) != 32:
        raise ConfigError("a secrets key must be 32 bytes (44 url-safe base64 characters)")
    return key


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"colony-secrets-key:" + key).hexdigest()[:12]


def _key_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once agree on one key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(SecretCipher.generate_key() + "\n")
    return path.read_text().strip()


def _check_secret_name(name: str) -> None:
    if not re.fullmatch(SECRET_NAME_PATTERN, name):
        raise InvalidInput(
            f"secret name {name!r} must start with a letter or '_' and hold only letters, "
            "digits, '_', '.' and '-' (at most 128 characters)"
        )


async def put_secret(
    conn: Conn, cipher: SecretCipher, tenant_id: str, name: str, value: str
) -> tuple[SecretInfo, bool]:
    """Create or replace a secret. Returns (info, created).

    Raises:
        InvalidInput: bad name, or an empty or too large value.
    """
    _check_secret_name(name)
    if not value or len(value.encode()) > MAX_SECRET_BYTES:
        raise InvalidInput(f"a secret's value must be 1 to {MAX_SECRET_BYTES} bytes")
    try:
        cur = await conn.execute(
            "INSERT INTO secrets AS s (tenant_id, name, ciphertext, key_id)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext,"
            " key_id = EXCLUDED.key_id, updated_at = now()"
            " RETURNING name, created_at, updated_at, (xmax = 0) AS created",
            (tenant_id, name, cipher.encrypt(tenant_id, name, value), cipher.key_id),
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    row = await cur.fetchone()
    assert row is not None
    created = bool(row["created"])
    return SecretInfo.model_validate({k: row[k] for k in ("name", "created_at", "updated_at")}), (
        created
    )


async def get_secret_value(conn: Conn, cipher: SecretCipher, tenant_id: str, name: str) -> str:
    """The plaintext of a secret, for use at call time only (never log or return it).

    Raises:
        NotFound: no such secret for this tenant.
        ConfigError: it was encrypted with another key.
    """
    cur = await conn.execute(
        "SELECT ciphertext, key_id FROM secrets WHERE tenant_id = %s AND name = %s",
        (tenant_id, name),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"secret {name!r} not found")
    return cipher.decrypt(tenant_id, name, bytes(row["ciphertext"]), row["key_id"])


async def rotate_secrets(conn: Conn, cipher: SecretCipher) -> int:
    """Re-encrypt every secret (of every tenant) not sealed with the current key.

    Run after setting the new `COLONY_SECRETS_KEY` with the old one in
    `COLONY_SECRETS_PREVIOUS_KEYS`; afterwards the old key can be dropped. Returns how
    many secrets were re-encrypted.

    Raises:
        ConfigError: a secret was sealed with a key that is neither current nor previous.
    """
    cur = await conn.execute(
        "SELECT tenant_id, name, ciphertext, key_id FROM secrets WHERE key_id <> %s"
        " ORDER BY tenant_id, name FOR UPDATE",
        (cipher.key_id,),
    )
    rows = await cur.fetchall()
    for row in rows:
        value = cipher.decrypt(
            row["tenant_id"], row["name"], bytes(row["ciphertext"]), row["key_id"]
        )
        await conn.execute(
            "UPDATE secrets SET ciphertext = %s, key_id = %s WHERE tenant_id = %s AND name = %s",
            (cipher.encrypt(row["tenant_id"], row["name"], value), cipher.key_id,
             row["tenant_id"], row["name"]),
        )  # fmt: skip
    return len(rows)


async def list_secret_names(conn: Conn, tenant_id: str) -> list[SecretInfo]:
    """The tenant's secrets by name (never their values)."""
    cur = await conn.execute(
        "SELECT name, created_at, updated_at FROM secrets WHERE tenant_id = %s ORDER BY name",
        (tenant_id,),
    )
    return [SecretInfo.model_validate(dict(row)) for row in await cur.fetchall()]


async def missing_secrets(conn: Conn, tenant_id: str, names: Iterable[str]) -> list[str]:
    """Those of `names` that are not secrets of the tenant, sorted."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    cur = await conn.execute(
        "SELECT name FROM secrets WHERE tenant_id = %s AND name = ANY(%s)", (tenant_id, wanted)
    )
    present = {row["name"] for row in await cur.fetchall()}
    return [n for n in wanted if n not in present]


async def delete_secret(conn: Conn, tenant_id: str, name: str) -> None:
    """Delete a secret.

    Raises:
        NotFound: no such secret for this tenant.
    """
    cur = await conn.execute(
        "DELETE FROM secrets WHERE tenant_id = %s AND name = %s", (tenant_id, name)
    )
    if cur.rowcount == 0:
        raise NotFound(f"secret {name!r} not found")


# -- references in records -----------------------------------------------------------

_CREDENTIAL_KEY = re.compile(
    r"token|secret|password|passwd|api[_-]?key|authorization|credential|cookie", re.IGNORECASE
)


def inline_credentials(config: Any, path: str = "") -> list[str]:
    """Paths in a config where a credential-like key holds a literal instead of a secret ref."""
    found: list[str] = []
    if isinstance(config, dict):
        if set(config) == {"secret"}:
            return found  # a secret reference
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict | list):
                found += inline_credentials(value, where)
            elif isinstance(value, str) and value and _CREDENTIAL_KEY.search(str(key)):
                found.append(where)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += inline_credentials(value, f"{path}[{i}]")
    return found
