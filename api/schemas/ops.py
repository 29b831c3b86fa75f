"""HTTP bodies of the operational routes: health, identity, API keys, audit, stack checks."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.base import Body
from core.stack_check import LaneReport
from core.tenants import SharingMode


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
    role: Literal["admin", "member"]


class ApiKeyCreate(Body):
    """Create an API key for the caller's tenant."""

    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "member"] = "member"


class ApiKeyPublic(BaseModel):
    """An API key as listed (never the secret)."""

    id: str
    name: str
    prefix: str
    role: Literal["admin", "member"]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


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
