"""HTTP bodies of the evolution routes (`XxxCreate` in, `XxxPublic` out): eval cases."""

from datetime import datetime

from pydantic import ConfigDict, Field

from api.schemas.base import Body
from core.evolution.cases import EvalCaseSpec, Split
from core.evolution.checks import Check


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
