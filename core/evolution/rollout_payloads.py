"""Payloads of the rollout controller: an agent's canary, live evidence and its watch.

The controller (`RolloutWorkflow`, one per agent) carries run ids, versions and verdicts;
objectives, answers and judgments stay in Postgres.
"""

from datetime import datetime
from typing import Final, Literal

from pydantic import Field

from core.evolution.sequential import SequentialPolicy
from core.payloads import Payload
from core.runs.rollout import StickyKey
from core.specs import Spec

ROLLOUT_WORKFLOW: Final = "RolloutWorkflow"
"""The registered name of the controller (hooks and the API start it by name)."""
ObservationSource = Literal["live", "shadow"]
RolloutStatusName = Literal["active", "promoted", "rolled_back", "cancelled"]


class RolloutSettings(Spec):
    """An agent's rollout policy: how a promoted version proves itself, how a live one is watched."""

    canary_share: float = Field(default=0.1, ge=0, le=1)
    """Share of new runs a promoted version takes while it is a canary (0: shadow only)."""
    sticky_key: StickyKey = "end_user"
    shadow_share: float = Field(default=0.0, ge=0, le=1)
    """Share of the stable version's live runs re-run on the canary in evaluation mode."""
    online_sample_rate: float = Field(default=0.2, ge=0, le=1)
    """Share of live runs judged (checks of a matching eval case, else the rubric judge)."""
    judge_rubric: str = Field(
        default="The answer fully and correctly does what the request asks.",
        min_length=1, max_length=4000,
    )  # fmt: skip
    canary_test: SequentialPolicy = SequentialPolicy()
    max_canary_s: float = Field(default=7 * 24 * 3600.0, gt=0, le=90 * 24 * 3600)
    """After this long without a decision the canary is kept or rolled back by
    `canary_test.at_limit`."""
    watch: bool = True
    """Watch the live version for a sustained drop and roll it back automatically."""
    watch_test: SequentialPolicy = SequentialPolicy(delta=0.2, min_samples=10, at_limit="keep")
    baseline_runs: int = Field(default=30, ge=1, le=100_000)
    """Live runs that set a version's own baseline before its watch starts (and the
    stable version's baseline for a canary, when it has no history)."""
    max_cost_ratio: float | None = Field(default=3.0, gt=1)
    """A run costing more than this times the version's median counts as a failure."""
    max_latency_ratio: float | None = Field(default=3.0, gt=1)
    """A run taking longer than this times the version's median counts as a failure."""
    diagnose: bool = True
    """After an automatic rollback, start an evolution cycle with the degraded runs."""


class LiveRun(Payload):
    """Signal: a live run of the agent ended (sent by the run's finish, maybe twice)."""

    run_id: str
    version: int
    rollout_id: str | None = None


class CanaryRef(Payload):
    """Signal: a canary started (its row exists)."""

    rollout_id: str


class CanaryState(Payload):
    """The canary in progress as the controller holds it."""

    rollout_id: str
    stable: int
    canary: int
    deadline: datetime
    settings: RolloutSettings = RolloutSettings()
    """The policy when the canary started (a later change applies to the next one)."""
    baseline: float | None = None
    outcomes: list[bool] = Field(default_factory=list)
    """The canary's verdicts (live and shadow), in order."""
    stable_outcomes: list[bool] = Field(default_factory=list)
    shadows: int = 0


class CanaryEvidence(Payload):
    """A canary's evidence in Postgres when a controller adopts it."""

    baseline: float | None = None
    outcomes: list[bool] = Field(default_factory=list)
    stable_outcomes: list[bool] = Field(default_factory=list)
    run_ids: list[str] = Field(default_factory=list)


class WatchState(Payload):
    """The live version's watch: its baseline, then the drop test's runs since a reset."""

    version: int
    baseline_outcomes: list[bool] = Field(default_factory=list)
    outcomes: list[bool] = Field(default_factory=list)
    failed_runs: list[str] = Field(default_factory=list)
    """Recent failed runs since the reset: the evidence of a degradation."""


class ControllerState(Payload):
    """What the controller carries into its next run (continue-as-new)."""

    canary: CanaryState | None = None
    watch: WatchState | None = None
    seen: list[str] = Field(default_factory=list)
    """Recently observed run ids (a run's end may be signalled twice)."""
    pending: list[LiveRun] = Field(default_factory=list)
    """Signals received and not yet handled when the history was handed over."""
    observed: int = 0
    decisions: int = 0


class RolloutInput(Payload):
    """Input of `RolloutWorkflow`: the agent, and the state of its previous run."""

    tenant_id: str
    agent_name: str
    state: ControllerState | None = None


class RolloutView(Payload):
    """The controller's live state (its query; `GET /v1/agents/{name}/rollout`)."""

    settings: RolloutSettings | None = None
    canary: CanaryState | None = None
    watch: WatchState | None = None
    statistic: dict[str, float | int | str | None] = Field(default_factory=dict)
    observed: int = 0
    decisions: int = 0


class RolloutRef(Payload):
    """One rollout of a tenant."""

    tenant_id: str
    rollout_id: str


class ControllerSetup(Payload):
    """What the controller loads on each start: the policy, the live version, the canary."""

    settings: RolloutSettings | None = None
    live_version: int | None = None
    canary: CanaryState | None = None


class SetupInput(Payload):
    """Load the agent's policy and rollout state."""

    tenant_id: str
    agent_name: str


class ObserveInput(Payload):
    """Score a finished run as live evidence (written once per run)."""

    tenant_id: str
    agent_name: str
    run_id: str
    rollout_id: str | None = None
    judge: bool = False
    source: ObservationSource = "live"


class Observation(Payload):
    """A run's verdict as live evidence."""

    run_id: str
    version: int
    success: bool
    detail: str = ""
    judged_score: float | None = None
    cost_usd: float = 0.0
    counted: bool = True
    """False when the run is gone (deleted): it is no evidence either way."""


class ShadowInput(Payload):
    """Create the shadow run of a live run on the canary (idempotent)."""

    tenant_id: str
    agent_name: str
    rollout_id: str
    live_run_id: str
    canary_version: int
    workflow_id: str


class ShadowRun(Payload):
    """The shadow run to start as a child workflow (None: the live run is gone)."""

    run_id: str | None = None
    inbox_id: int = 0


class ShadowPairInput(Payload):
    """Record a shadow run's comparison with its live run."""

    tenant_id: str
    rollout_id: str
    live_run_id: str
    shadow_run_id: str
    shadow_success: bool


class RolloutDecisionInput(Payload):
    """Promote or roll back a canary, with the test's evidence (once)."""

    tenant_id: str
    agent_name: str
    rollout_id: str
    decision: Literal["promote", "rollback"]
    reason: str
    evidence: dict[str, float | int | str | None] = Field(default_factory=dict)


class RolloutDecided(Payload):
    """What the decision did: the live version after it (None: nothing changed)."""

    applied: bool
    live_version: int | None = None


class DegradationInput(Payload):
    """Roll a degraded live version back and start a diagnostic cycle (once per key)."""

    tenant_id: str
    agent_name: str
    version: int
    reason: str
    failed_runs: list[str] = Field(default_factory=list)
    evidence: dict[str, float | int | str | None] = Field(default_factory=dict)
    diagnose: bool = True
    key: str
    """The controller's decision key: a retried activity does the rollback once."""


class DegradationOutput(Payload):
    """The version now live, the rollback's record and the diagnostic cycle, if any."""

    live_version: int
    rolled_back: bool
    rollout_id: str | None = None
    evolution_id: str | None = None
