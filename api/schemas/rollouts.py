"""Bodies and responses of an agent's rollout: its policy, canaries and rollbacks."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.evolution.rollout_payloads import RolloutSettings, RolloutStatusName, RolloutView
from core.evolution.rollouts import RolloutRecord


class RolloutPublic(BaseModel):
    """A canary (a candidate version on a share of live runs) or an automatic rollback."""

    id: str
    kind: Literal["canary", "degradation"] = Field(
        description="canary: stable and canary versions share the traffic; degradation: "
        "`canary_version` dropped and was rolled back to `stable_version`"
    )
    stable_version: int
    canary_version: int
    share: float
    sticky_key: str
    status: RolloutStatusName
    reason: str | None
    evidence: dict[str, Any] = Field(description="the sequential test's statistics at the decision")
    evolution_id: str | None = Field(description="the cycle whose winner is the canary")
    diagnostic_evolution_id: str | None = Field(
        description="the cycle a degradation started with its failed runs"
    )
    started_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, record: RolloutRecord) -> "RolloutPublic":
        """A rollouts row as the API shows it."""
        return cls.model_validate(
            record.model_dump(exclude={"tenant_id", "agent_name", "settings"})
        )


class RolloutStatePublic(BaseModel):
    """An agent's rollout: its policy, the live version, the canary and the controller's test."""

    agent: str
    settings: RolloutSettings | None = Field(description="the policy (None: no rollout policy)")
    live_version: int
    canary: RolloutPublic | None
    controller: RolloutView | None = Field(
        description="the controller's live state: evidence so far and the test statistic "
        "(None when it does not run or did not answer)"
    )
    controller_workflow_id: str
    temporal_ui: str | None
    history: list[RolloutPublic] = Field(description="recent canaries and rollbacks, newest first")
