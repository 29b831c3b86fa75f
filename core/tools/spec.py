"""Tool specs and their validation: what a registered tool version fixes, checked.

`ToolSpec` is what a tenant registers under a name (kind, description, schemas, config,
policy defaults); an HTTP tool's config is an `HttpToolConfig`, whose headers hold
secret names (`{"secret": "NAME"}`), never values. `validate_tool_name` says which
names suit a kind; Colony's own tools (`core.tools.names.RESERVED_TOOL_NAMES`): their
names are reserved.
"""

import hashlib
import json
import re
from typing import Any, Final, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator, model_validator

from core.errors import Conflict, InvalidInput
from core.specs import Spec
from core.tools.mcp import SECRET_NAME_PATTERN, SERVER_NAME_PATTERN
from core.tools.names import RESERVED_TOOL_NAMES
from core.tools.policy import ToolPolicyDefaults

ToolKind = Literal["builtin", "http", "mcp", "code", "agent"]
StoredToolKind = Literal["http", "mcp", "code", "agent"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

TOOL_NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
"""Names of HTTP (and other non-MCP) tools: what every model provider accepts."""
MCP_TOOL_PREFIX: Final = "mcp:"


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


# -- tool specs ----------------------------------------------------------------------


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
            or not re.fullmatch(SERVER_NAME_PATTERN, server)
            or not re.fullmatch(r"^[A-Za-z0-9_.-]{1,128}$", remote)
        ):
            raise InvalidInput(f"MCP tool names look like 'mcp:SERVER/TOOL', not {name!r}")
    elif not re.fullmatch(TOOL_NAME_PATTERN, name):
        raise InvalidInput(
            f"tool name {name!r} must start with a letter and hold only letters, digits, "
            "'_' and '-' (at most 64 characters)"
        )
