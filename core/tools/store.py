"""The tool registry in Postgres: registered tools, call statistics, secrets, egress, MCP servers.

Registered tools are a name plus immutable, numbered versions per tenant, like agents:
registering an existing name adds a version unless the spec is identical to the latest.
Colony's own tools (`core.tools.names.RESERVED_TOOL_NAMES`): their names are reserved.

Tool records never hold secrets, only secret names (`{"secret": "NAME"}`); values live
in `secrets`, encrypted with AES-256-GCM (`SecretCipher`) under a key from
`COLONY_SECRETS_KEY`, or, when that is unset, a key file in the data dir created on
first use (fine for one machine; set the variable when the API and workers run on
different hosts). Each ciphertext is bound to its tenant and name, so a row copied to
another tenant or name does not decrypt.

Every function takes the tenant explicitly and only ever touches that tenant's rows.
"""

import base64
import binascii
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import ConfigError, Conflict, InvalidInput, NotFound
from core.settings import Settings
from core.specs import Spec
from core.tools.mcp import SECRET_NAME_PATTERN, SERVER_NAME_PATTERN
from core.tools.names import RESERVED_TOOL_NAMES
from core.tools.policy import EgressRule, ToolPolicyDefaults

Conn = psycopg.AsyncConnection[Any]

"""Names of tools that are code; no tenant may register them."""

ToolKind = Literal["builtin", "http", "mcp", "code", "agent"]
StoredToolKind = Literal["http", "mcp", "code", "agent"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
McpTransport = Literal["stdio", "http", "streamable_http"]
"""As core/tools/mcp.py spells them ("streamable_http" is an alias of "http")."""
McpStatus = Literal["pending", "ready", "error", "disabled"]

TOOL_NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
"""Names of HTTP (and other non-MCP) tools: what every model provider accepts."""
MCP_TOOL_PREFIX: Final = "mcp:"
MCP_SERVER_NAME_PATTERN: Final = SERVER_NAME_PATTERN
LATENCY_WINDOW: Final = 256
"""Latencies kept per tool for p50/p95: the most recent calls."""
MAX_SECRET_BYTES: Final = 64 * 1024


# -- HTTP tool configuration ---------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ARGUMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Headers the HTTP client owns; a tool must not set them.
_RESERVED_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)
# Header names whose values are credentials: they must come from secrets.
_SENSITIVE_WORDS = re.compile(
    r"auth|token|secret|key|password|passwd|cookie|credential|session|signature", re.IGNORECASE
)


class HttpHeader(Spec):
    """One request header: a secret's name (resolved at call time) or a literal value."""

    secret: str | None = Field(default=None, pattern=SECRET_NAME_PATTERN)
    value: str | None = Field(default=None, max_length=8192)

    @model_validator(mode="after")
    def _exactly_one(self) -> "HttpHeader":
        if (self.secret is None) == (self.value is None):
            raise ValueError("a header is either {'secret': NAME} or {'value': TEXT}")
        if self.value is not None and any(c in self.value for c in "\r\n\0"):
            raise ValueError("header values must not contain line breaks")
        return self


class HttpToolConfig(Spec):
    """How an HTTP tool turns validated arguments into a request.

    `url_template` holds `{argument}` placeholders in its path and query only (never in
    the scheme, host or port, so arguments cannot choose where the request goes);
    values are percent-encoded. The other arguments go to the query string (`query`), a
    JSON body (`json`) or a form body (`form`); `auto` means query for GET and DELETE, JSON
    otherwise.
    """

    url_template: str = Field(min_length=8, max_length=4096)
    method: HttpMethod = "GET"
    headers: dict[str, HttpHeader] = Field(default_factory=dict, max_length=50)
    arguments_in: Literal["auto", "query", "json", "form"] = "auto"

    @field_validator("url_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        match = re.match(r"^(https?)://([^/?#]*)", value, re.IGNORECASE)
        if match is None:
            raise ValueError("url_template must start with http:// or https://")
        authority = match.group(2)
        if not authority:
            raise ValueError("url_template has no host")
        if "{" in authority or "}" in authority:
            raise ValueError(
                "placeholders are allowed in the path and query only, not in the host or port"
            )
        if "@" in authority:
            raise ValueError("url_template must not contain user info ('user@host')")
        if "#" in value:
            raise ValueError("url_template must not contain a fragment ('#')")
        for name in _PLACEHOLDER.findall(value):
            if not _ARGUMENT_NAME.fullmatch(name):
                raise ValueError(
                    f"placeholder {{{name}}} must name an argument (letters, digits, '_')"
                )
        stripped = _PLACEHOLDER.sub("", value)
        if "{" in stripped or "}" in stripped:
            raise ValueError("url_template has an unbalanced '{' or '}'")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, HttpHeader]) -> dict[str, HttpHeader]:
        seen: set[str] = set()
        for name, header in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            lower = name.lower()
            if lower in seen:
                raise ValueError(f"header {name!r} is listed twice")
            seen.add(lower)
            if lower in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the HTTP client, not by tools")
            if header.value is not None and _SENSITIVE_WORDS.search(name):
                raise ValueError(
                    f"header {name!r} looks like a credential: store it with "
                    f"PUT /v1/secrets/NAME and use {{'secret': 'NAME'}}"
                )
        return value

    @property
    def placeholders(self) -> list[str]:
        """Argument names used in the URL template, in order, once each."""
        return list(dict.fromkeys(_PLACEHOLDER.findall(self.url_template)))

    @property
    def secret_names(self) -> list[str]:
        """Secrets the headers refer to."""
        return sorted({h.secret for h in self.headers.values() if h.secret is not None})


# -- tool specs and records ------------------------------------------------------------


def check_json_schema(schema: dict[str, Any], *, what: str, object_only: bool) -> None:
    """Validate a JSON Schema (draft 2020-12).

    Raises:
        ValueError: the schema is invalid (or, with `object_only`, not of type object).
    """
    if object_only and schema.get("type") != "object":
        raise ValueError(f'{what} must be a JSON Schema with "type": "object"')
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError(
            f"{what} is not a valid JSON Schema"
            f"{f' at {where!r}' if where else ''}: {exc.message[:300]}"
        ) from None


class ToolSpec(Spec):
    """Everything a registered tool version fixes, besides its name."""

    kind: StoredToolKind
    description: str = Field(min_length=1, max_length=4000)
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    side_effects: bool = False
    policy: ToolPolicyDefaults = ToolPolicyDefaults()
    enabled: bool = True

    @model_validator(mode="after")
    def _check(self) -> "ToolSpec":
        check_tool_schemas(self.input_schema, self.output_schema)
        if self.kind == "http":
            http = HttpToolConfig.model_validate(self.config)
            check_placeholders(http, self.input_schema)
        if self.kind == "code" and (
            self.config.get("language") not in ("python", "shell")
            or not isinstance(self.config.get("source"), str)
            or not self.config["source"].strip()
        ):
            raise ValueError('a code tool needs config {"language": "python"|"shell", "source"}')
        return self

    def http(self) -> HttpToolConfig:
        """The HTTP configuration (kind `http` only)."""
        if self.kind != "http":
            raise ValueError(f"a {self.kind} tool has no HTTP configuration")
        return HttpToolConfig.model_validate(self.config)

    def spec_hash(self) -> str:
        """Stable hash, to detect an unchanged re-registration."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def check_tool_schemas(input_schema: dict[str, Any], output_schema: dict[str, Any] | None) -> None:
    """Check a tool's schemas: input for an object (up to 100,000 characters), output any.

    Raises:
        ValueError: with what is wrong.
    """
    check_json_schema(input_schema, what="input_schema", object_only=True)
    if output_schema is not None:
        check_json_schema(output_schema, what="output_schema", object_only=False)
    if len(json.dumps(input_schema)) > 100_000:
        raise ValueError("input_schema is too large (over 100,000 characters)")


def check_placeholders(http: HttpToolConfig, input_schema: dict[str, Any]) -> None:
    """Every URL placeholder must be a required property of the input schema.

    Raises:
        ValueError: naming the placeholders that are not.
    """
    properties = input_schema.get("properties", {})
    required = set(input_schema.get("required", []))
    unknown = [p for p in http.placeholders if p not in properties]
    if unknown:
        raise ValueError(
            f"url_template placeholders {unknown} are not properties of input_schema "
            f"(properties: {sorted(properties)})"
        )
    optional = [p for p in http.placeholders if p not in required]
    if optional:
        raise ValueError(f"url_template placeholders {optional} must be listed in 'required'")


class StoredTool(BaseModel):
    """One version of a registered tool."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    kind: StoredToolKind
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    config: dict[str, Any] = {}
    timeout_s: float
    side_effects: bool
    policy: ToolPolicyDefaults
    enabled: bool
    created_at: datetime

    def spec(self) -> ToolSpec:
        """The spec of this version."""
        return ToolSpec.model_validate(self.model_dump(exclude={"name", "version", "created_at"}))

    def http(self) -> HttpToolConfig:
        """The HTTP configuration (kind `http` only)."""
        if self.kind != "http":
            raise ValueError(f"a {self.kind} tool has no HTTP configuration")
        return HttpToolConfig.model_validate(self.config)


class ToolStats(BaseModel):
    """Live call statistics of one tool (all versions)."""

    model_config = ConfigDict(frozen=True)

    tool: str
    calls: int = 0
    successes: int = 0
    failures: int = 0
    success_rate: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    window: int = 0  # how many recent calls p50/p95 are computed over
    last_called_at: datetime | None = None


class SecretInfo(BaseModel):
    """A secret as listed: its name and dates, never its value."""

    model_config = ConfigDict(frozen=True)

    name: str
    created_at: datetime
    updated_at: datetime


class McpServer(BaseModel):
    """A registered MCP server (its config holds secret names, never values)."""

    model_config = ConfigDict(frozen=True)

    name: str
    transport: McpTransport
    config: dict[str, Any]
    status: McpStatus
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime


def validate_tool_name(name: str, kind: StoredToolKind) -> None:
    """Check a name for a tool of `kind`.

    Raises:
        Conflict: the name is a built-in tool's.
        InvalidInput: the name is malformed for the kind.
    """
    if name in RESERVED_TOOL_NAMES:
        raise Conflict(
            f"{name!r} is a built-in tool; choose another name",
            details={"reserved": sorted(RESERVED_TOOL_NAMES)},
        )
    if kind == "mcp":
        server, _, remote = name.removeprefix(MCP_TOOL_PREFIX).partition("/")
        if (
            not name.startswith(MCP_TOOL_PREFIX)
            or not re.fullmatch(MCP_SERVER_NAME_PATTERN, server)
            or not re.fullmatch(r"^[A-Za-z0-9_.-]{1,128}$", remote)
        ):
            raise InvalidInput(f"MCP tool names look like 'mcp:SERVER/TOOL', not {name!r}")
    elif not re.fullmatch(TOOL_NAME_PATTERN, name):
        raise InvalidInput(
            f"tool name {name!r} must start with a letter and hold only letters, digits, "
            "'_' and '-' (at most 64 characters)"
        )


# -- tools ---------------------------------------------------------------------------

_TOOL_COLUMNS = (
    "name, version, kind, description, input_schema, output_schema, config, timeout_s,"
    " side_effects, policy, enabled, created_at"
)


def _tool(row: dict[str, Any]) -> StoredTool:
    return StoredTool.model_validate(dict(row))


async def register_tool(
    conn: Conn, tenant_id: str, name: str, spec: ToolSpec
) -> tuple[StoredTool, bool]:
    """Add a version of tool `name` (or return the latest if its spec is identical).

    Returns (version, created).

    Raises:
        Conflict: `name` is a built-in tool's.
        InvalidInput: the name does not suit the kind.
    """
    validate_tool_name(name, spec.kind)
    spec_hash = spec.spec_hash()
    async with conn.transaction():
        # Serialise writers of one name so they get consecutive versions.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"tool:{tenant_id}:{name}",)
        )
        cur = await conn.execute(
            f"SELECT {_TOOL_COLUMNS}, spec_hash FROM tools WHERE tenant_id = %s AND name = %s"
            " ORDER BY version DESC LIMIT 1",
            (tenant_id, name),
        )
        latest = await cur.fetchone()
        if latest is not None and latest["spec_hash"] == spec_hash:
            return _tool({k: v for k, v in dict(latest).items() if k != "spec_hash"}), False
        version = 1 if latest is None else int(latest["version"]) + 1
        try:
            cur = await conn.execute(
                "INSERT INTO tools (tenant_id, name, version, kind, description, input_schema,"
                " output_schema, config, timeout_s, side_effects, policy, spec_hash, enabled)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_TOOL_COLUMNS}",
                (
                    tenant_id,
                    name,
                    version,
                    spec.kind,
                    spec.description,
                    Jsonb(spec.input_schema),
                    Jsonb(spec.output_schema) if spec.output_schema is not None else None,
                    Jsonb(spec.config),
                    spec.timeout_s,
                    spec.side_effects,
                    Jsonb(spec.policy.model_dump(mode="json")),
                    spec_hash,
                    spec.enabled,
                ),
            )
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
        row = await cur.fetchone()
        assert row is not None
        return _tool(row), True


async def get_tool(conn: Conn, tenant_id: str, name: str, version: int | None = None) -> StoredTool:
    """A version of a registered tool (the latest when `version` is None).

    Raises:
        NotFound: no such tool or version for this tenant.
    """
    if version is None:
        cur = await conn.execute(
            f"SELECT {_TOOL_COLUMNS} FROM tools WHERE tenant_id = %s AND name = %s"
            " ORDER BY version DESC LIMIT 1",
            (tenant_id, name),
        )
    else:
        cur = await conn.execute(
            f"SELECT {_TOOL_COLUMNS} FROM tools WHERE tenant_id = %s AND name = %s"
            " AND version = %s",
            (tenant_id, name, version),
        )
    row = await cur.fetchone()
    if row is None:
        what = f"tool {name!r}" if version is None else f"version {version} of tool {name!r}"
        raise NotFound(f"{what} not found")
    return _tool(row)


async def get_latest_tools(
    conn: Conn, tenant_id: str, names: Iterable[str]
) -> dict[str, StoredTool]:
    """The latest versions of those of `names` that are registered (one query)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    cur = await conn.execute(
        f"SELECT DISTINCT ON (name) {_TOOL_COLUMNS} FROM tools"
        " WHERE tenant_id = %s AND name = ANY(%s) ORDER BY name, version DESC",
        (tenant_id, wanted),
    )
    return {row["name"]: _tool(row) for row in await cur.fetchall()}


async def list_tools(
    conn: Conn, tenant_id: str, *, kind: StoredToolKind | None = None
) -> list[StoredTool]:
    """Every registered tool of the tenant at its latest version, by name."""
    cur = await conn.execute(
        f"SELECT * FROM (SELECT DISTINCT ON (name) {_TOOL_COLUMNS} FROM tools"
        " WHERE tenant_id = %s ORDER BY name, version DESC) latest"
        " WHERE %s::text IS NULL OR kind = %s ORDER BY name",
        (tenant_id, kind, kind),
    )
    return [_tool(row) for row in await cur.fetchall()]


async def list_tool_versions(conn: Conn, tenant_id: str, name: str) -> list[StoredTool]:
    """Every version of a tool, newest first.

    Raises:
        NotFound: no such tool.
    """
    cur = await conn.execute(
        f"SELECT {_TOOL_COLUMNS} FROM tools WHERE tenant_id = %s AND name = %s"
        " ORDER BY version DESC",
        (tenant_id, name),
    )
    rows = await cur.fetchall()
    if not rows:
        raise NotFound(f"tool {name!r} not found")
    return [_tool(row) for row in rows]


async def set_tool_enabled(conn: Conn, tenant_id: str, name: str, enabled: bool) -> None:
    """Enable or disable every version of a tool (a disabled tool's calls are denied).

    Raises:
        NotFound: no such tool.
    """
    cur = await conn.execute(
        "UPDATE tools SET enabled = %s WHERE tenant_id = %s AND name = %s",
        (enabled, tenant_id, name),
    )
    if cur.rowcount == 0:
        raise NotFound(f"tool {name!r} not found")


# -- statistics ----------------------------------------------------------------------


async def record_tool_call_stats(
    conn: Conn, tenant_id: str, name: str, ok: bool, latency_ms: float
) -> None:
    """Count one call of `name` and add its latency to the recent window (one statement)."""
    latency = max(0.0, float(latency_ms)) if math.isfinite(latency_ms) else 0.0
    await conn.execute(
        "INSERT INTO tool_stats AS s (tenant_id, tool_name, calls, successes, failures,"
        " total_latency_ms, recent_latency_ms, last_called_at)"
        " VALUES (%(t)s, %(n)s, 1, %(ok)s::int, 1 - %(ok)s::int, %(l)s, ARRAY[%(l)s::real], now())"
        " ON CONFLICT (tenant_id, tool_name) DO UPDATE SET"
        " calls = s.calls + 1,"
        " successes = s.successes + %(ok)s::int,"
        " failures = s.failures + 1 - %(ok)s::int,"
        " total_latency_ms = s.total_latency_ms + %(l)s,"
        " recent_latency_ms = (CASE WHEN cardinality(s.recent_latency_ms) >= %(w)s"
        "   THEN s.recent_latency_ms[cardinality(s.recent_latency_ms) - %(w)s + 2:]"
        "   ELSE s.recent_latency_ms END) || %(l)s::real,"
        " last_called_at = now()",
        {"t": tenant_id, "n": name, "ok": ok, "l": latency, "w": LATENCY_WINDOW},
    )


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The `q`-quantile (0..1) of `samples` by linear interpolation between closest ranks."""
    if not samples:
        return None
    ordered = sorted(samples)
    position = min(max(q, 0.0), 1.0) * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stats(row: dict[str, Any]) -> ToolStats:
    calls = int(row["calls"])
    window = [float(x) for x in row["recent_latency_ms"]]
    return ToolStats(
        tool=row["tool_name"],
        calls=calls,
        successes=int(row["successes"]),
        failures=int(row["failures"]),
        success_rate=row["successes"] / calls if calls else None,
        mean_ms=row["total_latency_ms"] / calls if calls else None,
        p50_ms=percentile(window, 0.5),
        p95_ms=percentile(window, 0.95),
        window=len(window),
        last_called_at=row["last_called_at"],
    )


async def tool_stats(
    conn: Conn, tenant_id: str, names: Iterable[str] | None = None
) -> dict[str, ToolStats]:
    """Statistics by tool name (all of the tenant's tools, or those in `names`)."""
    wanted = None if names is None else sorted(set(names))
    cur = await conn.execute(
        "SELECT tool_name, calls, successes, failures, total_latency_ms, recent_latency_ms,"
        " last_called_at FROM tool_stats"
        " WHERE tenant_id = %s AND (%s::text[] IS NULL OR tool_name = ANY(%s::text[]))",
        (tenant_id, wanted, wanted),
    )
    return {row["tool_name"]: _stats(row) for row in await cur.fetchall()}


# -- secrets -------------------------------------------------------------------------

SECRETS_KEY_FILE: Final = "secrets-key"
_BLOB_VERSION: Final = b"\x01"


class SecretCipher:
    """AES-256-GCM for secret values; each ciphertext is bound to (tenant, name)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the secrets key must be 32 bytes (44 url-safe base64 characters)")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"colony-secrets-key:" + key).hexdigest()[:12]

    @classmethod
    def from_text(cls, text: str) -> "SecretCipher":
        """A cipher from a url-safe base64 key (as written by `generate_key`).

        Raises:
            ConfigError: the text is not such a key.
        """
        try:
            key = base64.urlsafe_b64decode(text.strip().encode())
        except (binascii.Error, ValueError):
            raise ConfigError(
                "COLONY_SECRETS_KEY is not url-safe base64; generate one with "
                "python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
            ) from None
        return cls(key)

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

    def decrypt(self, tenant_id: str, name: str, blob: bytes) -> str:
        """The value sealed by `encrypt` for the same tenant and name.

        Raises:
            ConfigError: the blob was sealed with another key, or for another secret.
        """
        if blob[:1] != _BLOB_VERSION or len(blob) < 1 + 12 + 16:
            raise ConfigError(f"secret {name!r} is stored in an unknown format")
        try:
            plain = self._aead.decrypt(blob[1:13], blob[13:], self._aad(tenant_id, name))
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
    if settings.secrets_key is not None:
        return SecretCipher.from_text(settings.secrets_key.get_secret_value())
    return SecretCipher.from_text(_key_file(settings.data_path / SECRETS_KEY_FILE))


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
    if row["key_id"] != cipher.key_id:
        raise ConfigError(
            f"secret {name!r} was encrypted with secrets key {row['key_id']}, but this process "
            f"has key {cipher.key_id}: set COLONY_SECRETS_KEY to the same value everywhere"
        )
    return cipher.decrypt(tenant_id, name, bytes(row["ciphertext"]))


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


# -- egress --------------------------------------------------------------------------


async def get_egress_rules(conn: Conn, tenant_id: str) -> list[EgressRule]:
    """The tenant's egress allowlist (empty: no HTTP egress at all)."""
    cur = await conn.execute(
        "SELECT pattern, port FROM egress_rules WHERE tenant_id = %s ORDER BY pattern, port",
        (tenant_id,),
    )
    return [EgressRule(pattern=row["pattern"], port=row["port"]) for row in await cur.fetchall()]


async def replace_egress_rules(
    conn: Conn, tenant_id: str, rules: Sequence[EgressRule]
) -> list[EgressRule]:
    """Make `rules` the tenant's whole allowlist (duplicates collapse). Returns it."""
    unique = list(dict.fromkeys(rules))
    async with conn.transaction():
        await conn.execute("DELETE FROM egress_rules WHERE tenant_id = %s", (tenant_id,))
        if unique:
            try:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO egress_rules (tenant_id, pattern, port) VALUES (%s, %s, %s)",
                        [(tenant_id, r.pattern, r.port) for r in unique],
                    )
            except psycopg.errors.ForeignKeyViolation as exc:
                raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    return await get_egress_rules(conn, tenant_id)


async def add_egress_rule(conn: Conn, tenant_id: str, rule: EgressRule) -> bool:
    """Add one rule. Returns False when it was already there."""
    try:
        cur = await conn.execute(
            "INSERT INTO egress_rules (tenant_id, pattern, port) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (tenant_id, rule.pattern, rule.port),
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    return cur.rowcount == 1


async def delete_egress_rule(conn: Conn, tenant_id: str, rule: EgressRule) -> None:
    """Remove one rule.

    Raises:
        NotFound: the tenant has no such rule.
    """
    cur = await conn.execute(
        "DELETE FROM egress_rules WHERE tenant_id = %s AND pattern = %s"
        " AND port IS NOT DISTINCT FROM %s",
        (tenant_id, rule.pattern, rule.port),
    )
    if cur.rowcount == 0:
        raise NotFound(f"egress rule {rule.pattern!r} (port {rule.port}) not found")


# -- MCP servers ---------------------------------------------------------------------

_CREDENTIAL_KEY = re.compile(
    r"token|secret|password|passwd|api[_-]?key|authorization|credential|cookie", re.IGNORECASE
)


def secret_refs(config: Any) -> set[str]:
    """Names of the secrets a config refers to (`{"secret": NAME}` anywhere in it)."""
    found: set[str] = set()
    if isinstance(config, dict):
        if set(config) == {"secret"} and isinstance(config["secret"], str):
            found.add(config["secret"])
        else:
            for value in config.values():
                found |= secret_refs(value)
    elif isinstance(config, list):
        for value in config:
            found |= secret_refs(value)
    return found


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


def _mcp(row: dict[str, Any]) -> McpServer:
    return McpServer.model_validate(dict(row))


_MCP_COLUMNS = "name, transport, config, status, last_error, created_at, updated_at"


async def upsert_mcp_server(
    conn: Conn, tenant_id: str, name: str, transport: McpTransport, config: dict[str, Any]
) -> tuple[McpServer, bool]:
    """Create or replace an MCP server's registration (status back to `pending`).

    Returns (server, created).

    Raises:
        InvalidInput: bad name, or a credential written inline instead of as a secret ref.
    """
    if not re.fullmatch(MCP_SERVER_NAME_PATTERN, name):
        raise InvalidInput(f"MCP server name {name!r} must match {MCP_SERVER_NAME_PATTERN}")
    inline = inline_credentials(config)
    if inline:
        raise InvalidInput(
            "credentials must be secret references ({'secret': 'NAME'}), not literals",
            details={"fields": inline},
        )
    try:
        cur = await conn.execute(
            "INSERT INTO mcp_servers AS m (tenant_id, name, transport, config)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, name) DO UPDATE SET transport = EXCLUDED.transport,"
            " config = EXCLUDED.config, status = 'pending', last_error = NULL, updated_at = now()"
            f" RETURNING {_MCP_COLUMNS}, (xmax = 0) AS created",
            (tenant_id, name, transport, Jsonb(config)),
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    row = await cur.fetchone()
    assert row is not None
    created = bool(row["created"])
    return _mcp({k: v for k, v in dict(row).items() if k != "created"}), created


async def get_mcp_server(conn: Conn, tenant_id: str, name: str) -> McpServer:
    """One MCP server.

    Raises:
        NotFound: no such server for this tenant.
    """
    cur = await conn.execute(
        f"SELECT {_MCP_COLUMNS} FROM mcp_servers WHERE tenant_id = %s AND name = %s",
        (tenant_id, name),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"MCP server {name!r} not found")
    return _mcp(row)


async def list_mcp_servers(conn: Conn, tenant_id: str) -> list[McpServer]:
    """The tenant's MCP servers, by name."""
    cur = await conn.execute(
        f"SELECT {_MCP_COLUMNS} FROM mcp_servers WHERE tenant_id = %s ORDER BY name",
        (tenant_id,),
    )
    return [_mcp(row) for row in await cur.fetchall()]


async def set_mcp_server_status(
    conn: Conn, tenant_id: str, name: str, status: McpStatus, last_error: str | None = None
) -> None:
    """Record a server's connection status (and the last error, cut to 2,000 characters).

    Raises:
        NotFound: no such server for this tenant.
    """
    cur = await conn.execute(
        "UPDATE mcp_servers SET status = %s, last_error = %s, updated_at = now()"
        " WHERE tenant_id = %s AND name = %s",
        (status, last_error[:2000] if last_error else None, tenant_id, name),
    )
    if cur.rowcount == 0:
        raise NotFound(f"MCP server {name!r} not found")


async def delete_mcp_server(conn: Conn, tenant_id: str, name: str) -> None:
    """Remove an MCP server's registration.

    Raises:
        NotFound: no such server for this tenant.
    """
    cur = await conn.execute(
        "DELETE FROM mcp_servers WHERE tenant_id = %s AND name = %s", (tenant_id, name)
    )
    if cur.rowcount == 0:
        raise NotFound(f"MCP server {name!r} not found")
