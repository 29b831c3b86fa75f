"""HTTP bodies of the evolution routes (`XxxCreate` in, `XxxPublic` out): eval cases and cycles."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.base import Body
from api.schemas.rollouts import RolloutPublic
from core.evolution.cases import EvalCaseSpec, Split
from core.evolution.checks import Check
from core.evolution.payloads import (
    CandidateKind,
    Decision,
    EvolutionSettings,
    EvolutionStatus,
    EvolutionStatusName,
    EvolutionTriggers,
    Trigger,
)
from core.evolution.schedules import check_cron, parse_every

Outcome = Literal["win", "loss", "tie"]


class EvalCaseCreate(EvalCaseSpec):
    """An eval case: an objective, judged by checks or by a rubric (or both)."""


class EvalCasePublic(EvalCaseSpec):
    """A stored eval case; its split follows from its id and never changes."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    agent: str
    split: Split
    source_run_id: str | None = Field(description="the run the case was made from, if any")
    created_at: datetime


class EvalCaseFromRun(Body):
    """Make a run an eval case, judged by these checks or this rubric.

    Without both, the run's feedback must carry an expected answer: it becomes the check
    (`numeric` for a single number, else `contains`).
    """

    checks: list[Check] = Field(default_factory=list, max_length=20)
    rubric: str | None = Field(default=None, min_length=1, max_length=4000)
    tags: list[str] = Field(default_factory=list, max_length=20)
    guard: bool = Field(default=False, description="the case must never regress")


# -- evolution cycles -----------------------------------------------------------------


class EvolutionCreate(Body):
    """Start an evolution cycle of the agent's live version (the incumbent)."""

    settings: EvolutionSettings = Field(
        default_factory=EvolutionSettings,
        description="candidates and their kinds, the gate, the budget, the approval tier",
    )


class EvolutionEstimate(BaseModel):
    """What a cycle will cost in evaluation runs, from the agent's eval cases today."""

    eval_runs: int = Field(
        description="(candidates + 1) x (validation + holdout cases) + train cases"
    )
    cases: dict[Split, int] = Field(description="eval cases by split")
    candidates: int
    max_eval_runs: int = Field(description="the cycle's cap on evaluation runs")
    within_budget: bool = Field(
        description="eval_runs <= max_eval_runs, and cost_usd <= max_cost_usd when both known"
    )
    max_cost_usd: float | None = Field(description="the cycle's cap in USD, if any")
    cost_usd: float | None = Field(
        default=None,
        description="eval_runs x the live version's average cost per run (None until it has "
        "finished runs); the cycle's own model calls (diagnosis, proposals, judge) come on top",
    )


class CandidatePublic(BaseModel):
    """A candidate version of a cycle (a rejected draft has a version <= 0 and a reason)."""

    version: int
    kind: CandidateKind
    rationale: str
    diff: str
    rejected: str | None = Field(description="why it was rejected before evaluation")
    score: dict[str, Any] | None = Field(description="validation / holdout summaries")
    cost_usd: float
    wins: int = Field(description="cases where it scored above the incumbent")
    losses: int = Field(description="cases where it scored below the incumbent")
    ties: int


class CaseScorePublic(BaseModel):
    """One case's result under one version."""

    version: int
    score: float | None = Field(description="None: no valid result (counts as 0)")
    passed: bool
    versus_incumbent: Outcome | None = Field(
        default=None, description="None for the incumbent, or while it has no result"
    )


class CaseRowPublic(BaseModel):
    """A row of the per-case table: the incumbent's result and each candidate's."""

    case_id: str
    split: Split
    guard: bool | None = Field(description="None when the case has since been deleted")
    incumbent: CaseScorePublic | None
    candidates: list[CaseScorePublic]


class EvolutionPublic(BaseModel):
    """An evolution cycle: its state, evidence, candidates, per-case table and decision."""

    id: str
    agent: str
    incumbent_version: int
    trigger: Trigger
    settings: EvolutionSettings
    status: EvolutionStatusName
    phase: str | None
    decision: Decision | None
    promoted_version: int | None
    reasons: list[str]
    evidence: dict[str, Any] = Field(description="a summary of what was gathered")
    diagnoses: list[dict[str, Any]]
    gate: dict[str, Any] | None = Field(description="the gate's statistics per candidate")
    judge: dict[str, Any] | None = Field(description="the pinned judge model and prompt")
    cost_usd: float
    progress: EvolutionStatus | None = Field(
        default=None, description="the workflow's live state while it runs"
    )
    candidates: list[CandidatePublic]
    cases: list[CaseRowPublic]
    estimate: EvolutionEstimate | None = Field(
        default=None, description="the preflight estimate (in the response that starts it)"
    )
    rollout: RolloutPublic | None = Field(
        default=None,
        description="the canary the promoted version started as, and its decision",
    )
    temporal_ui: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class PromotionDecisionCreate(Body):
    """Approve or reject the promotion a cycle waits on."""

    approved: bool
    reason: str | None = Field(default=None, max_length=2000)


# -- schedules and triggers -----------------------------------------------------------


class EvolutionScheduleCreate(Body):
    """An agent's evolution policy: when cycles start (a schedule, triggers) and how they run.

    Give `every` or `cron` for a Temporal Schedule, `triggers` for cycles that start on
    repeated failure or new feedback, or both. Without `every` and `cron` the agent has
    no schedule (an existing one is deleted).
    """

    every: str | None = Field(
        default=None, max_length=32, description="an interval: 24h, 90m, 1d, 1h30m (1m..366d)"
    )
    cron: str | None = Field(
        default=None, max_length=200,
        description="5 fields (minute hour day-of-month month day-of-week), UTC, or @daily",
    )  # fmt: skip
    paused: bool = Field(default=False, description="keep the schedule but fire nothing")
    settings: EvolutionSettings = Field(
        default_factory=EvolutionSettings, description="the settings of every cycle it starts"
    )
    triggers: EvolutionTriggers = Field(
        default_factory=EvolutionTriggers,
        description="failures: N bad runs within window_hours; feedback: M new items",
    )

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | None) -> str | None:
        if value is not None:
            parse_every(value)
            value = value.strip().lower()
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @model_validator(mode="after")
    def _something(self) -> "EvolutionScheduleCreate":
        if self.every is not None and self.cron is not None:
            raise ValueError("give every or cron, not both")
        if (
            self.every is None
            and self.cron is None
            and self.triggers.failures is None
            and (self.triggers.feedback is None)
        ):
            raise ValueError(
                "nothing would start a cycle: give every, cron or a trigger "
                "(triggers.failures, triggers.feedback); DELETE removes the policy"
            )
        return self


class ScheduledCyclePublic(BaseModel):
    """A cycle the schedule started."""

    scheduled_at: datetime
    started_at: datetime
    workflow_id: str


class ScheduleStatePublic(BaseModel):
    """The agent's Temporal Schedule as Temporal has it."""

    id: str
    paused: bool
    note: str | None
    next_runs: list[datetime] = Field(description="the next times it fires (if not paused)")
    recent: list[ScheduledCyclePublic] = Field(description="cycles it started lately")
    running: list[str] = Field(description="workflow ids of its cycles still running")


class EvolutionSchedulePublic(BaseModel):
    """An agent's evolution policy, with its schedule's state in Temporal."""

    agent: str
    every: str | None
    cron: str | None
    paused: bool
    settings: EvolutionSettings
    triggers: EvolutionTriggers
    last_triggered_at: datetime | None = Field(description="when a trigger last started a cycle")
    schedule: ScheduleStatePublic | None = Field(
        description="None when the policy has no every or cron"
    )
