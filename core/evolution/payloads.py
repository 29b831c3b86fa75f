"""Evolution payloads: a cycle's settings and one frozen model in and out per activity.

The workflow carries ids, versions and scores; objectives, transcripts, diffs and
per-case details live in Postgres.
"""

from typing import Annotated, Final, Literal

from pydantic import Field

from core.evolution.cases import Split
from core.evolution.gate import GatePolicy
from core.payloads import Payload
from core.specs import Spec

WORKFLOW_NAME: Final = "EvolutionWorkflow"
"""The registered name of the cycle's workflow (the API and schedules start it by name)."""
CandidateKind = Literal[
    "instruction_edit", "rewrite", "few_shot", "tools", "model", "code_tool", "sub_agent"
]
"""`code_tool` and `sub_agent` grow the agent (core/evolution/growth.py); they are not
among the default kinds: one runs model-written code, the other creates an agent."""
Decision = Literal["promote", "keep"]
DEFAULT_KINDS: list[CandidateKind] = ["instruction_edit", "few_shot", "tools"]
EvolutionStatusName = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
EvolutionPhase = Literal[
    "starting", "evaluating_train", "diagnosing", "proposing", "evaluating",
    "deciding", "waiting_for_approval", "finished",
]  # fmt: skip
ModelId = Annotated[str, Field(min_length=3, max_length=200, pattern=r"^[a-z0-9_-]+/.+$")]
FAILING_OUTCOMES: Final = ("failed", "limit_reached")
"""Outcomes that make a live run a failure, the evidence evolution learns from."""
LOW_RATING: Final = 2
"""A rating at or below this makes a live run count as a failure too."""
Trigger = Literal["manual", "schedule", "failures", "feedback", "degradation"]
FailureCause = Literal[
    "missing_knowledge", "wrong_approach", "tool_problem", "missing_capability",
    "model_too_weak", "misunderstood_objective",
]  # fmt: skip


class EvolutionSettings(Spec):
    """How one cycle runs: how many candidates of which kinds, the gate, the budget."""

    candidates: int = Field(default=3, ge=1, le=8)
    kinds: list[CandidateKind] = Field(default=DEFAULT_KINDS, min_length=1, max_length=7)
    model_tiers: list[ModelId] = Field(default_factory=list, max_length=5)
    """Models a `model` candidate may move the agent to (LiteLLM-style ids)."""
    gate: GatePolicy = GatePolicy()
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_eval_runs: int = Field(default=400, ge=1, le=20_000)
    parallelism: int = Field(default=4, ge=1, le=32)
    eval_timeout_s: float = Field(default=300.0, gt=0, le=6 * 3600)
    approval: Literal["auto", "human"] = "auto"
    approval_timeout_s: float = Field(default=24 * 3600.0, gt=0, le=30 * 24 * 3600)
    max_instruction_chars: int = Field(default=20_000, ge=100, le=200_000)
    judge_model: str | None = Field(default=None, min_length=3, max_length=200)
    evaluations_per_history: int = Field(default=1000, ge=1, le=100_000)
    """Evaluations one workflow run starts before it continues as new (keeps history small)."""


class EvolutionTriggers(Spec):
    """When a cycle starts on its own: repeated failure, or enough new feedback."""

    failures: int | None = Field(default=None, ge=1, le=10_000)
    """Failed, limit-reached or low-rated (<= 2) runs within `window_hours`."""
    feedback: int | None = Field(default=None, ge=1, le=100_000)
    """New feedback items since the last cycle."""
    window_hours: float = Field(default=24.0, gt=0, le=24 * 90)
    cooldown_hours: float = Field(default=24.0, ge=0, le=24 * 90)
    """No triggered cycle starts within this long of the previous cycle's start."""


class EvolutionResume(Payload):
    """Where a cycle that continued as new picks up: its evaluations of the candidates."""

    candidates: list[int]
    needs_approval: list[int] = Field(default_factory=list)
    cost_usd: float = 0.0
    done: int = 0
    planned: int = 0


class EvolutionInput(Payload):
    """Input of `EvolutionWorkflow`.

    Started by the API, it names the evolutions row that holds the agent and settings.
    Started by a schedule or a trigger, it names the agent; `start_evolution` creates
    the row from the agent's evolution policy.
    """

    tenant_id: str
    evolution_id: str | None = None
    agent_name: str | None = None
    trigger: Trigger = "manual"
    resume: EvolutionResume | None = None


class CaseRef(Payload):
    """An eval case as the workflow knows it."""

    id: str
    split: Split


class EvolutionSetup(Payload):
    """What `start_evolution` loads: the incumbent, the settings and the cases by split."""

    evolution_id: str
    agent_name: str
    incumbent_version: int
    settings: EvolutionSettings
    cases: list[CaseRef] = Field(default_factory=list)


class PendingInput(Payload):
    """Which of these evaluations have no stored result yet."""

    evolution_id: str
    versions: list[int]
    cases: list[CaseRef]


class PendingOutput(Payload):
    """The evaluations still to run, as (version, case) pairs in the order given."""

    pending: list[tuple[int, CaseRef]] = Field(default_factory=list)


class EvalRunInput(Payload):
    """Create the run that evaluates `version` on a case (idempotent per cycle)."""

    tenant_id: str
    evolution_id: str
    agent_name: str
    version: int
    case_id: str
    workflow_id: str
    max_cost_usd: float | None = None


class EvalRunOutput(Payload):
    """The evaluation run to start as a child workflow."""

    run_id: str
    inbox_id: int


class ScoreInput(Payload):
    """Score one evaluation run: its checks, or the judge on its rubric."""

    tenant_id: str
    evolution_id: str
    agent_name: str
    version: int
    case_id: str
    run_id: str | None  # None: the run could not be created
    failure: str | None = None  # the run did not finish (timed out, failed): a 0, recorded
    latency_s: float | None = None


class ScoreOutput(Payload):
    """A case's score under a version (None: no valid result, which counts as a failure)."""

    score: float | None
    passed: bool
    cost_usd: float = 0.0


FeedbackCategory = Literal[
    "complete_success", "partial_success", "failure", "wrong_approach", "missing_capability",
    "quality_issue", "performance_issue", "misunderstood_objective",
]  # fmt: skip


class CategorizeOutput(Payload):
    """How many feedback items were sorted into categories, and the cost."""

    categorized: int
    cost_usd: float = 0.0


class DiagnoseInput(Payload):
    """Attribute the incumbent's failures (train cases and real runs) to causes."""

    tenant_id: str
    evolution_id: str


class DiagnoseOutput(Payload):
    """How many failures were diagnosed, and the cost of doing it."""

    diagnosed: int
    cost_usd: float = 0.0


class ProposeInput(Payload):
    """Write candidate versions of the incumbent from the train evidence and diagnoses."""

    tenant_id: str
    evolution_id: str


class ProposeOutput(Payload):
    """The candidate versions stored (rejected drafts are recorded, not returned)."""

    versions: list[int] = Field(default_factory=list)
    rejected: int = 0
    cost_usd: float = 0.0
    needs_approval: list[int] = Field(default_factory=list)
    """Candidates that add tools with side effects: promoted only with a human's approval."""
    pending_tools: int = 0
    """Generated code tools waiting for their tests (`test_generated_tools`, tools lane)."""


class JudgePairsInput(Payload):
    """Compare a candidate's answers with the incumbent's on the rubric cases."""

    tenant_id: str
    evolution_id: str
    version: int


class JudgePairsOutput(Payload):
    """How many pairs were judged, and the cost."""

    judged: int
    cost_usd: float = 0.0


class DecideInput(Payload):
    """Run the gate for every candidate against the incumbent."""

    tenant_id: str
    evolution_id: str
    candidates: list[int]


class DecideOutput(Payload):
    """The best candidate and whether it passes the gate."""

    decision: Decision
    version: int | None = None
    reasons: list[str] = Field(default_factory=list)


class FinishEvolutionInput(Payload):
    """Record how a cycle ended; `promote` releases the version first."""

    tenant_id: str
    evolution_id: str
    status: Literal["succeeded", "failed", "cancelled"]
    decision: Decision = "keep"
    version: int | None = None
    reasons: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0


class ApprovalWaitInput(Payload):
    """The cycle starts (`waiting`) or stops waiting for a human on a promotion."""

    tenant_id: str
    evolution_id: str
    version: int
    waiting: bool
    timeout_s: float | None = None
    outcome: str | None = None  # when it stops: approved, rejected, timed out


class PromotionDecision(Payload):
    """A human's answer on a promotion waiting for approval."""

    approved: bool
    reason: str | None = Field(default=None, max_length=2000)


class EvolutionStatus(Payload):
    """Live state of a cycle (the workflow's `status` query)."""

    phase: EvolutionPhase
    candidates: list[int] = Field(default_factory=list)
    evaluations_done: int = 0
    evaluations_planned: int = 0
    cost_usd: float = 0.0
    waiting_version: int | None = None


class EvolutionOutput(Payload):
    """How a cycle ended."""

    evolution_id: str
    decision: Decision
    version: int | None = None  # the promoted version
    reasons: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0
