"""HTTP bodies of the operational routes: health, identity, API keys, audit, stack checks."""

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from api.schemas.base import Body
from core.stack_check import LaneReport
from core.tenants import Scope, SharingMode, scopes_of_role


class ComponentPublic(BaseModel):
    """One dependency in `/healthz`."""

    ok: bool
    detail: str
    latency_ms: float


class HealthPublic(BaseModel):
    """`/healthz` body."""

    status: Literal["ok", "degraded"]
    version: str
    components: dict[str, ComponentPublic]


class WhoAmIPublic(BaseModel):
    """The caller's identity."""

    tenant_id: str
    key_id: str
    role: Literal["admin", "member"] = Field(description="admin when the key has the admin scope")
    scopes: list[Scope]


class ApiKeyCreate(Body):
    """Create an API key for the caller's tenant (admin only).

    `scopes`: admin (keys, audit, tenant settings, secrets, egress, MCP servers; implies
    write and eval), write (every other change; implies read), eval (evolution-only
    automation: eval cases, feedback, evolutions, schedules, rollouts; implies read),
    read (every GET). The older `role` is still accepted: admin -> [admin],
    member -> [write]. With neither the key gets [write].
    """

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] | None = Field(default=None, min_length=1, max_length=4)
    role: Literal["admin", "member"] | None = Field(
        default=None, description="deprecated: use scopes"
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="when the key stops working; must be in the future"
    )
    expires_in_s: int | None = Field(
        default=None, gt=0, le=10 * 365 * 86400, description="or: seconds from now"
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> Self:
        if self.scopes is not None and self.role is not None:
            raise ValueError("give scopes or role, not both")
        if self.expires_at is not None and self.expires_in_s is not None:
            raise ValueError("give expires_at or expires_in_s, not both")
        return self

    def chosen_scopes(self) -> list[Scope]:
        """The scopes asked for, `role` mapped."""
        if self.scopes is not None:
            return self.scopes
        return list(scopes_of_role(self.role or "member"))

    def expiry(self) -> datetime | None:
        """When the key should expire, if ever."""
        if self.expires_in_s is not None:
            return datetime.now(UTC) + timedelta(seconds=self.expires_in_s)
        return self.expires_at


class ApiKeyPublic(BaseModel):
    """An API key as listed (never the secret)."""

    id: str
    name: str
    prefix: str
    role: Literal["admin", "member"] = Field(description="admin when the key has the admin scope")
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    """The response to creating a key: the only time the secret is shown."""

    key: str


class StackCheckPublic(BaseModel):
    """A stack-check workflow and, once finished, its lane reports."""

    id: str
    status: Literal["running", "succeeded", "failed", "cancelled", "timed_out", "terminated"]
    temporal_ui: str | None
    lanes: list[LaneReport] = []
    error: str | None = None


class TenantSettingsPublic(BaseModel):
    """Settings of the caller's tenant."""

    tenant_id: str
    sharing: SharingMode = Field(
        description="shared: lessons and skills with scope `shared` reach every agent of the"
        " tenant; isolated: each agent learns only from its own runs"
    )


class TenantSettingsUpdate(Body):
    """Change settings of the caller's tenant (admin only)."""

    sharing: SharingMode


class AuditEntryPublic(BaseModel):
    """One audited call: which key did what, where, when, and how it ended."""

    id: int
    key_id: str
    method: str
    route: str = Field(description="the route's template, e.g. /v1/agents/{name}")
    path: str
    resource: dict[str, Any] = Field(description="the path parameters: which resource")
    status: int
    created_at: datetime
