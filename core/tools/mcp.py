"""MCP servers: how one is configured, and how its tools are named.

A server is registered (through the API or a config file) as one of two shapes, told
apart by `transport`:

    {"name": "time", "transport": "stdio", "command": "mcp-server-time",
     "args": ["--local-timezone", "UTC"], "env": {"TIME_API_KEY": {"secret": "TIME_KEY"}}}
    {"name": "docs", "transport": "http", "url": "https://mcp.example.com/mcp",
     "headers": {"Authorization": {"secret": "DOCS_AUTH"}}}

(`"streamable_http"` is accepted for `"http"`.) An env or header value is a literal string
or a secret reference `{"secret": "NAME"}`, the form the rest of Colony's tool records use;
the secret's value is the whole value (store `Bearer abc...` as the secret for an
Authorization header). The record keeps only the reference: the value is looked up through
a `resolve_secret(name) -> str` callable when a session opens, so it never appears in the
config's repr, its `model_dump`, logs or histories. Credential-like names (Authorization,
*token*, *api_key*, *password*...) must use a reference.

Tool names:

    qualified_name("time", "get_current_time")   -> "mcp:time/get_current_time"
    provider_safe_name("mcp:time/get_current_time") -> "mcp__time__get_current_time"

The qualified name is what agents list in `tools` and `GET /v1/tools` shows. Providers
accept only `^[A-Za-z0-9_-]{1,64}$`, so the model sees `provider_safe_name(...)`: the
readable `mcp__<server>__<tool>` when that spelling decodes back unambiguously, otherwise
(characters to replace, `__` in the server name, too long) `mcp_<server>__<tool...>_<hash>`,
whose single underscore after `mcp` keeps the two spellings apart. `provider_name_map`
builds the reverse mapping and refuses collisions.
"""

import hashlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, TypeAdapter, field_validator

from core.errors import ColonyError, ConfigError, NotFound
from core.specs import Spec

SERVER_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,39}$"
SECRET_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
PROVIDER_NAME_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
QUALIFIED_PREFIX: Final = "mcp:"
MAX_TOOL_NAME_CHARS: Final = 128

SecretResolver = Callable[[str], str | Awaitable[str]]
"""Returns (or resolves to) the value of the named secret; raises `KeyError` (any
`LookupError`) or `NotFound` when there is no such secret."""

_SERVER_NAME = re.compile(SERVER_NAME_PATTERN)
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
_PROVIDER_NAME = re.compile(PROVIDER_NAME_PATTERN)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Set by the MCP client itself; a configured value would break the protocol.
_RESERVED_HEADERS: Final = frozenset(
    {
        "accept",
        "content-length",
        "content-type",
        "host",
        "last-event-id",
        "mcp-protocol-version",
        "mcp-session-id",
    }
)
# Names whose values are credentials (the same words the API's registration check uses).
_CREDENTIAL_NAME = re.compile(
    r"token|secret|password|passwd|api[_-]?key|authorization|credential|cookie", re.IGNORECASE
)
_MAX_ITEMS: Final = 100
_MAX_VALUE_CHARS: Final = 8192


class SecretRef(Spec):
    """A reference to a tenant secret, resolved when a session opens."""

    secret: str = Field(pattern=SECRET_NAME_PATTERN)


ConfigValue = str | SecretRef
"""An env or header value: a literal, or `{"secret": "NAME"}`."""


def _check_values(value: Any, what: str) -> Any:
    """Turn `{name: str | {"secret": NAME}}` input into checked values, with clear messages."""
    if not isinstance(value, Mapping):
        return value  # pydantic reports the wrong type
    if len(value) > _MAX_ITEMS:
        raise ValueError(f"at most {_MAX_ITEMS} {what} entries are allowed")
    checked: dict[Any, ConfigValue] = {}
    for key, item in value.items():
        where = f"{what} {key}"
        if isinstance(item, SecretRef):
            item = item.model_dump()
        if isinstance(item, Mapping):
            name = item.get("secret")
            if set(item) != {"secret"} or not isinstance(name, str):
                raise ValueError(f'{where} must be a string or {{"secret": "NAME"}}')
            if not _SECRET_NAME.fullmatch(name):
                raise ValueError(
                    f"{where} references secret {name!r}: a secret name is 1-128 characters "
                    "of letters, digits, '_', '.' and '-', starting with a letter or '_'"
                )
            checked[key] = SecretRef(secret=name)
        elif isinstance(item, str):
            if len(item) > _MAX_VALUE_CHARS:
                raise ValueError(f"{where} is longer than {_MAX_VALUE_CHARS} characters")
            if "\x00" in item:
                raise ValueError(f"{where} contains a NUL character")
            if item and isinstance(key, str) and _CREDENTIAL_NAME.search(key):
                raise ValueError(
                    f"{where} looks like a credential: store it as a secret and write "
                    f'{{"secret": "NAME"}} so it is not kept in the server record'
                )
            checked[key] = item
        else:
            raise ValueError(f'{where} must be a string or {{"secret": "NAME"}}')
    return checked


class _ServerBase(Spec):
    name: str = Field(description="Unique per tenant; the `<server>` in `mcp:<server>/<tool>`.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _SERVER_NAME.fullmatch(value):
            raise ValueError(
                f"server name {value!r} must be 1-40 characters of a-z, 0-9, '_' and '-', "
                "starting with a letter or digit (e.g. 'time', 'git-local')"
            )
        return value


class StdioServerConfig(_ServerBase):
    """A server the worker starts as a child process and talks to over stdin/stdout."""

    transport: Literal["stdio"]
    command: str = Field(description="The executable (a path, or a name looked up on PATH).")
    args: tuple[str, ...] = ()
    env: dict[str, ConfigValue] = Field(
        default_factory=dict,
        description='Extra environment: literal strings or {"secret": "NAME"}.',
    )

    @field_validator("command")
    @classmethod
    def _valid_command(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command must not be empty: name the server's executable")
        if value != value.strip():
            raise ValueError(f"command {value!r} has leading or trailing whitespace")
        if "\x00" in value:
            raise ValueError("command contains a NUL character")
        return value

    @field_validator("args")
    @classmethod
    def _valid_args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > _MAX_ITEMS:
            raise ValueError(f"at most {_MAX_ITEMS} args are allowed")
        for i, arg in enumerate(value):
            if "\x00" in arg:
                raise ValueError(f"args[{i}] contains a NUL character")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _valid_env(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for key in value:
                if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                    raise ValueError(
                        f"env name {key!r} must be letters, digits and '_', "
                        "not starting with a digit"
                    )
        return _check_values(value, "env")

    async def resolved_env(self, resolve_secret: SecretResolver | None) -> dict[str, str]:
        """The environment with every secret reference replaced by its value.

        Raises:
            ConfigError: a secret is unknown, or there is no resolver.
        """
        env = {
            key: await resolve_value(value, resolve_secret, server=self.name, where=f"env {key}")
            for key, value in self.env.items()
        }
        for key, value in env.items():
            if "\x00" in value:
                raise ConfigError(
                    f"MCP server '{self.name}': the secret for env {key} contains a NUL character"
                )
        return env


class HttpServerConfig(_ServerBase):
    """A server reached over MCP's streamable HTTP transport."""

    transport: Literal["http", "streamable_http"]
    url: str = Field(description="The MCP endpoint, e.g. https://host/mcp.")
    headers: dict[str, ConfigValue] = Field(
        default_factory=dict,
        description='Extra request headers: literal strings or {"secret": "NAME"}.',
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            port = parts.port  # raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"url {value!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url must start with http:// or https:// (got {value!r})")
        if not parts.hostname:
            raise ValueError(f"url {value!r} has no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "url must not carry credentials; send them in a header whose value is "
                '{"secret": "NAME"}'
            )
        if parts.fragment:
            raise ValueError("url must not have a #fragment")
        if port == 0:
            raise ValueError("url port must not be 0")
        if any(c.isspace() for c in value):
            raise ValueError("url must not contain whitespace")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _valid_headers(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            seen: set[str] = set()
            for key, item in value.items():
                if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key):
                    raise ValueError(f"header name {key!r} is not a valid HTTP header name")
                lower = key.lower()
                if lower in seen:
                    raise ValueError(f"header {key!r} is given twice (names are case-insensitive)")
                seen.add(lower)
                if lower in _RESERVED_HEADERS:
                    raise ValueError(
                        f"header {key!r} is set by the MCP client and cannot be configured"
                    )
                if isinstance(item, str) and any(c in item for c in "\r\n"):
                    raise ValueError(f"header {key} contains a line break")
        return _check_values(value, "header")

    async def resolved_headers(self, resolve_secret: SecretResolver | None) -> dict[str, str]:
        """The headers with every secret reference replaced by its value.

        Raises:
            ConfigError: a secret is unknown, there is no resolver, or a secret's value
                cannot be a header value.
        """
        resolved = {
            key: await resolve_value(value, resolve_secret, server=self.name, where=f"header {key}")
            for key, value in self.headers.items()
        }
        for key, value in resolved.items():
            if any(c in value for c in "\r\n\x00"):
                raise ConfigError(
                    f"MCP server '{self.name}': the secret for header {key} contains a "
                    "line break or NUL character"
                )
        return resolved


McpServerConfig = Annotated[StdioServerConfig | HttpServerConfig, Field(discriminator="transport")]
"""One MCP server registration; `transport` ("stdio" or "http") selects the shape."""

_CONFIG_ADAPTER: TypeAdapter[StdioServerConfig | HttpServerConfig] = TypeAdapter(McpServerConfig)


def parse_server_config(data: Mapping[str, Any] | str | bytes) -> McpServerConfig:
    """Validate a registration given as a mapping or JSON text.

    Raises:
        pydantic.ValidationError: naming each wrong field and how to fix it.
    """
    if isinstance(data, str | bytes):
        return _CONFIG_ADAPTER.validate_json(data)
    return _CONFIG_ADAPTER.validate_python(data)


def config_fingerprint(config: McpServerConfig) -> str:
    """A short stable hash of the registration (references, never secret values)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def secret_references(config: McpServerConfig) -> set[str]:
    """Names of the secrets the registration refers to (to check they exist up front)."""
    values = config.env if isinstance(config, StdioServerConfig) else config.headers
    return {value.secret for value in values.values() if isinstance(value, SecretRef)}


async def resolve_value(
    value: ConfigValue, resolve_secret: SecretResolver | None, *, server: str, where: str
) -> str:
    """The literal, or the value of the referenced secret (the resolver may be async).

    Raises:
        ConfigError: the secret is unknown or unreadable, or there is no resolver. The
            message names the secret and where it is used, never a value.
    """
    if isinstance(value, str):
        return value
    name = value.secret
    if resolve_secret is None:
        raise ConfigError(
            f"MCP server '{server}': {where} references secret '{name}' but no secret "
            "store is configured"
        )
    try:
        secret = resolve_secret(name)
        if inspect.isawaitable(secret):
            secret = await secret
    except (LookupError, NotFound):
        raise ConfigError(
            f"MCP server '{server}': {where} references secret '{name}', which is not set"
        ) from None
    except ColonyError as exc:
        raise ConfigError(
            f"MCP server '{server}': secret '{name}' for {where} cannot be read: {exc.message}"
        ) from None
    if not isinstance(secret, str):
        raise ConfigError(f"MCP server '{server}': secret '{name}' is not a string")
    return secret


# -- tool names ----------------------------------------------------------------------


def qualified_name(server: str, tool: str) -> str:
    """`mcp:<server>/<tool>`, the name agents list and the API shows.

    Raises:
        ValueError: the server or tool name is not acceptable.
    """
    if not _SERVER_NAME.fullmatch(server):
        raise ValueError(f"server name {server!r} must match {SERVER_NAME_PATTERN}")
    if not tool or len(tool) > MAX_TOOL_NAME_CHARS:
        raise ValueError(f"tool name must be 1-{MAX_TOOL_NAME_CHARS} characters (got {tool!r})")
    if any(c.isspace() or not c.isprintable() for c in tool):
        raise ValueError(f"tool name {tool!r} contains whitespace or control characters")
    return f"{QUALIFIED_PREFIX}{server}/{tool}"


def parse_qualified(name: str) -> tuple[str, str]:
    """`"mcp:time/get_current_time"` -> `("time", "get_current_time")`.

    Server names cannot contain `/`, so everything after the first `/` is the tool.

    Raises:
        ValueError: `name` is not a qualified MCP tool name.
    """
    if not name.startswith(QUALIFIED_PREFIX) or "/" not in name:
        raise ValueError(f"{name!r} is not an MCP tool name of the form mcp:<server>/<tool>")
    server, tool = name[len(QUALIFIED_PREFIX) :].split("/", 1)
    qualified_name(server, tool)  # validates both parts
    return server, tool


def is_qualified(name: str) -> bool:
    """Whether `name` is a well-formed `mcp:<server>/<tool>`."""
    try:
        parse_qualified(name)
    except ValueError:
        return False
    return True


def provider_safe_name(qualified: str) -> str:
    """The name a model provider accepts (`^[A-Za-z0-9_-]{1,64}$`) for a qualified name.

    `mcp__<server>__<tool>` when the tool name is already safe, the server name has no
    `__` and does not end in `_`, and the result fits: then the first `__` after the
    prefix is the separator and the name decodes exactly. Otherwise a readable, sanitized
    and truncated `mcp_<server>__<tool>` ending in `_` + 10 hex digits of SHA-256 of the
    qualified name. Deterministic, so every worker computes the same name.
    """
    server, tool = parse_qualified(qualified)
    plain = f"mcp__{server}__{tool}"
    if (
        _PROVIDER_NAME.fullmatch(plain)
        and "__" not in server
        and not server.endswith("_")
        and _PROVIDER_NAME.fullmatch(tool)
    ):
        return plain
    digest = hashlib.sha256(qualified.encode()).hexdigest()[:10]
    readable = _UNSAFE.sub("_", f"mcp_{server}__{tool}")[: 64 - len(digest) - 1]
    return f"{readable}_{digest}"


def provider_name_map(qualified_names: Iterable[str]) -> dict[str, str]:
    """`{provider_safe_name(q): q}` for the given names, the reverse of the mapping.

    Raises:
        ValueError: two different qualified names map to the same provider name.
    """
    mapping: dict[str, str] = {}
    for qualified in qualified_names:
        safe = provider_safe_name(qualified)
        other = mapping.setdefault(safe, qualified)
        if other != qualified:
            raise ValueError(f"MCP tools {other!r} and {qualified!r} both map to {safe!r}")
    return mapping
