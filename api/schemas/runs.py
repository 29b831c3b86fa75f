"""HTTP bodies of the agent and run routes (`XxxCreate` in, `XxxPublic` out).

Agents are the runs domain's (core/runs): their versions, then runs, a run's messages,
approvals, feedback and events (swarms stream theirs as `EventPublic` too).
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.base import Body
from api.schemas.rollouts import RolloutPublic
from core.evolution.store import VersionScore
from core.payloads import RunMode
from core.runs.agents import VersionCause, VersionStatus
from core.runs.bootstrap import MAX_OBJECTIVE_CHARS, BootstrapEvidence
from core.runs.metrics import AgentMetrics
from core.runs.payloads import AGENT_NAME_PATTERN, AgentSpec, PendingApproval


class AgentCreate(AgentSpec):
    """An agent: a name plus the spec of its next version."""

    name: str = Field(pattern=AGENT_NAME_PATTERN)


class AgentBootstrapCreate(Body):
    """What a new agent is for; the draft is made from the tenant's lessons, tools and agents."""

    objective: str = Field(
        min_length=1, max_length=MAX_OBJECTIVE_CHARS, description="what the agent should do"
    )
    name: str | None = Field(
        default=None,
        pattern=AGENT_NAME_PATTERN,
        description="default: drawn from the objective (an existing agent's name drafts a "
        "new version of it, from its own lessons too)",
    )


class AgentDraftPublic(BaseModel):
    """A drafted agent, not created: `spec` is a valid body for `POST /v1/agents`."""

    spec: AgentCreate
    evidence: BootstrapEvidence
    rationale: str
    exists: bool = Field(description="an agent of this name exists: creating adds a version")


class AgentPublic(AgentSpec):
    """An agent version, with its lineage: the version it came from and why."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: int
    created_at: datetime
    status: VersionStatus = Field(
        default="released", description="candidate: proposed by an evolution cycle, not live"
    )
    parent_version: int | None = None
    cause: VersionCause = "manual"
    evolution_id: str | None = Field(default=None, description="the cycle that proposed it")
    rationale: str | None = None
    scores: VersionScore | None = Field(
        default=None,
        description="mean validation and holdout scores in the latest cycle that evaluated it",
    )
    rollouts: list[RolloutPublic] = Field(
        default_factory=list,
        description="its canaries (the version as the canary) and automatic rollbacks "
        "(the version that degraded), newest first",
    )


class AgentMetricsPublic(AgentMetrics):
    """An agent's metrics per version over its live runs (evaluation runs left out).

    Per version: runs, outcome counts and shares, ratings, cost, latency, steps, tokens
    and tool error rates; `core.runs.metrics` says how each one is computed.
    """


class AgentRollback(Body):
    """Which version to make the latest again."""

    version: int = Field(gt=0)


class UserMessage(Body):
    """A user message in a run request."""

    role: Literal["user"] = "user"
    content: str = Field(min_length=1, max_length=1_000_000)


class RunCreate(Body):
    """Start a run: an agent (by name, or an inline spec) and an objective or messages."""

    agent: str | None = Field(
        default=None,
        pattern=AGENT_NAME_PATTERN,
        description="default: the tenant's `assistant` agent",
    )
    agent_version: int | None = Field(
        default=None, gt=0, description="pin a version (default: latest)"
    )
    agent_spec: AgentSpec | None = Field(
        default=None, description="an inline agent instead of a name"
    )
    objective: str | None = Field(default=None, min_length=1, max_length=1_000_000)
    messages: list[UserMessage] | None = Field(default=None, min_length=1, max_length=100)
    conversation: bool = Field(
        default=False, description="stay open for more messages until ended or idle"
    )
    mode: RunMode = "normal"
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    end_user: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="who the run is for: keeps them on one version while a canary runs",
    )  # fmt: skip


class RunPublic(BaseModel):
    """A run."""

    id: str
    status: Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
    outcome: Literal["succeeded", "failed", "cancelled", "limit_reached"] | None
    reason: str | None
    result: str | None
    agent: str
    agent_version: int
    end_user: str | None = None
    rollout_id: str | None = Field(default=None, description="the canary that picked its version")
    mode: RunMode
    conversation: bool
    objective: str
    phase: str | None = None
    steps: int
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    cost_usd: float
    cost_complete: bool = Field(description="false when a model call had an unknown price")
    pending_approvals: list[PendingApproval] = []
    temporal_ui: str | None
    created_at: datetime
    finished_at: datetime | None


class MessageCreate(Body):
    """A further user message for a conversation run."""

    content: str = Field(min_length=1, max_length=1_000_000)
    end_conversation: bool = False


class MessageAccepted(BaseModel):
    """The message was stored and handed to the run."""

    run_id: str
    inbox_id: int


class ApprovalCreate(Body):
    """Approve or deny a tool call waiting for a human (or answer its question)."""

    call_id: str = Field(min_length=1)
    approved: bool
    reason: str | None = Field(default=None, max_length=10_000)
    answer: str | None = Field(
        default=None, max_length=100_000, description="The answer to an ask_human question."
    )


class FeedbackCreate(Body):
    """A rating of a finished run (it replaces any earlier one)."""

    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=10_000)
    expected: str | None = Field(
        default=None,
        min_length=1,
        max_length=20_000,
        description="the answer the run should have given (POST /v1/runs/{id}/eval-case "
        "makes a check of it)",
    )


class FeedbackPublic(BaseModel):
    """The run's feedback as stored."""

    run_id: str
    rating: int
    comment: str | None = None
    expected: str | None = None


class MessagePublic(BaseModel):
    """One message of a run's transcript (tool results whole, as stored)."""

    seq: int
    role: Literal["user", "assistant", "tool"]
    content: str | None
    tool_calls: list[dict[str, Any]] = []
    tool_call_id: str | None = None
    name: str | None = None
    created_at: datetime


class EventPublic(BaseModel):
    """One run event."""

    seq: int
    type: str
    data: dict[str, Any]
    created_at: datetime
