"""HTTP bodies of the tool routes: tools, secrets, egress (`XxxCreate` in, `XxxPublic` out)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, model_validator

from api.schemas.base import Body
from core.tools.policy import EgressRule, ToolPolicyDefaults
from core.tools.secrets import MAX_SECRET_BYTES
from core.tools.spec import (
    TOOL_NAME_PATTERN,
    HttpToolConfig,
    ToolKind,
    ToolSpec,
    check_placeholders,
    check_tool_schemas,
)


class HttpToolCreate(Body):
    """Register an HTTP tool (or a new version of it).

    Headers name secrets (`{"secret": "WEATHER_KEY"}`) or carry literal, non-secret values
    (`{"value": "application/json"}`); secret values never appear in the tool record.
    """

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    kind: Literal["http"] = "http"
    description: str = Field(min_length=1, max_length=4000)
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description='JSON Schema (draft 2020-12) with "type": "object"',
    )
    output_schema: dict[str, Any] | None = None
    http: HttpToolConfig
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    side_effects: bool | None = Field(
        default=None, description="default: true unless the method is GET"
    )
    policy: ToolPolicyDefaults = ToolPolicyDefaults()
    enabled: bool = True

    @model_validator(mode="after")
    def _check_schemas(self) -> "HttpToolCreate":
        check_tool_schemas(self.input_schema, self.output_schema)
        check_placeholders(self.http, self.input_schema)
        return self

    def to_spec(self) -> ToolSpec:
        """The stored spec of this version."""
        side_effects = self.side_effects
        if side_effects is None:
            side_effects = self.http.method != "GET"
        return ToolSpec(
            kind="http",
            description=self.description,
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            config=self.http.model_dump(mode="json", exclude_none=True),
            timeout_s=self.timeout_s,
            side_effects=side_effects,
            policy=self.policy,
            enabled=self.enabled,
        )


class CodeToolCreate(Body):
    """Register a tool implemented by code that runs in the sandbox (no network).

    Python code reads the validated arguments from the variable `args` (a dict); shell
    code from `$ARGS_JSON`. What the code prints is the result.
    """

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    kind: Literal["code"]
    description: str = Field(min_length=1, max_length=4000)
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description='JSON Schema (draft 2020-12) with "type": "object"',
    )
    output_schema: dict[str, Any] | None = None
    language: Literal["python", "shell"] = "python"
    source: str = Field(min_length=1, max_length=100_000)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    policy: ToolPolicyDefaults = ToolPolicyDefaults()
    enabled: bool = True

    @model_validator(mode="after")
    def _check_schemas(self) -> "CodeToolCreate":
        check_tool_schemas(self.input_schema, self.output_schema)
        return self

    def to_spec(self) -> ToolSpec:
        """The stored spec of this version (validated by `ToolSpec`)."""
        return ToolSpec(
            kind="code",
            description=self.description,
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            config={"language": self.language, "source": self.source},
            timeout_s=self.timeout_s,
            side_effects=False,  # the sandbox has no network and only the run's workspace
            policy=self.policy,
            enabled=self.enabled,
        )


def _tool_kind(value: Any) -> str:
    kind = value.get("kind", "http") if isinstance(value, dict) else getattr(value, "kind", "http")
    return str(kind)


ToolCreate = Annotated[
    Annotated[HttpToolCreate, Tag("http")] | Annotated[CodeToolCreate, Tag("code")],
    Discriminator(_tool_kind),
]
"""`POST /v1/tools`: an HTTP tool (the default kind) or a sandboxed code tool."""


class ToolStatsPublic(BaseModel):
    """Live call statistics (all versions; p50/p95 over the most recent `window` calls)."""

    calls: int = 0
    successes: int = 0
    failures: int = 0
    success_rate: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    window: int = 0
    last_called_at: datetime | None = None


class ToolPublic(BaseModel):
    """A tool: built-in (code; no version) or registered (its latest or a given version)."""

    name: str
    kind: ToolKind
    version: int | None = None
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    config: dict[str, Any] = {}
    timeout_s: float | None = None
    side_effects: bool
    policy: ToolPolicyDefaults = ToolPolicyDefaults()
    enabled: bool = True
    created_at: datetime | None = None
    stats: ToolStatsPublic = ToolStatsPublic()


class SecretPut(Body):
    """A secret's value (write-only: no route ever returns it)."""

    value: str = Field(min_length=1, max_length=MAX_SECRET_BYTES)


class SecretPublic(BaseModel):
    """A secret as listed: name and dates only."""

    name: str
    created_at: datetime
    updated_at: datetime


class EgressPut(Body):
    """The tenant's whole egress allowlist (replaces the current one)."""

    rules: list[EgressRule] = Field(max_length=1000)


class EgressPublic(BaseModel):
    """The tenant's egress allowlist; empty means HTTP tools reach nothing."""

    rules: list[EgressRule]
