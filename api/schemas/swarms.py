"""HTTP bodies of the swarm routes (`XxxCreate` in, `XxxPublic` out)."""

from datetime import datetime

from pydantic import BaseModel, Field, ValidationError, field_validator

from api.schemas.base import Body
from core.runs.payloads import AGENT_NAME_PATTERN
from core.swarms.plan import (
    QUEEN_AGENT,
    Complexity,
    SubtaskSpec,
    SubtaskStatusName,
    SwarmLimits,
    SwarmMode,
    SwarmOutcome,
    SwarmPhase,
    SwarmSettings,
    SwarmStatusName,
)
from core.swarms.recipes import RECIPE_NAME_PATTERN

MAX_OBJECTIVE = 100_000
MAX_PLAN = 100


class SwarmCreate(Body):
    """Start a swarm: a queen splits the objective into subtasks that role agents run.

    Without `plan` the queen plans; with one, the given DAG runs as it is (its roles are
    checked now and their agents resolved when each subtask starts; the built-in roles
    researcher, coder, analyst, writer and reviewer are installed as the tenant's agents
    on first use). With `recipe` a saved plan runs on the objective (the recipe's mode;
    its limits, models and queen unless given).
    """

    objective: str = Field(min_length=1, max_length=MAX_OBJECTIVE)
    recipe: str | None = Field(
        default=None,
        pattern=RECIPE_NAME_PATTERN,
        description="run this recipe's saved plan instead of asking the queen for one",
    )
    mode: SwarmMode = Field(
        default="hierarchical",
        description="sequential: a pipeline in plan order; parallel: independent subtasks, "
        "combined at the end; hierarchical: the planned dependencies, re-planned after a "
        "failure",
    )
    plan: list[SubtaskSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PLAN,
        description="your own DAG of subtasks instead of the queen's plan",
    )
    queen: str | None = Field(
        default=None,
        pattern=AGENT_NAME_PATTERN,
        description=f"the agent that plans and synthesizes (default: the built-in "
        f"`{QUEEN_AGENT}`, installed on first use)",
    )
    limits: SwarmLimits = SwarmLimits()
    models: dict[Complexity, str] = Field(
        default_factory=dict,
        description='model per subtask complexity, e.g. {"low": "openai/gpt-4o-mini"}; '
        "tried before the role agent's own models",
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("models")
    @classmethod
    def _model_ids(cls, value: dict[Complexity, str]) -> dict[Complexity, str]:
        # The stored settings' rule, checked here so that a bad id is a 422.
        try:
            return SwarmSettings(models=value).models
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None

    def settings(self) -> SwarmSettings:
        """What the swarm is stored with besides its objective."""
        return SwarmSettings(limits=self.limits, models=self.models)


class SubtaskPublic(BaseModel):
    """One subtask of a swarm's plan and its latest attempt."""

    id: str
    description: str
    role: str
    depends_on: list[str]
    expected_output: str
    complexity: Complexity
    status: SubtaskStatusName = Field(
        description="dropped: left out of a later plan; cancelled: still open when the swarm ended"
    )
    attempts: int = Field(description="attempts started (a retry is a new run)")
    run_id: str | None = Field(description="the run of the latest attempt")
    agent: str | None = Field(description="the agent that plays the role")
    agent_version: int | None
    model: str | None = Field(description="the first model of the attempt's chain")
    budget_usd: float | None = Field(description="the attempt's share of `max_cost_usd`")
    cost_usd: float = Field(description="every attempt together")
    reason: str | None
    temporal_ui: str | None = Field(description="the latest attempt's workflow")
    started_at: datetime | None
    finished_at: datetime | None


class SwarmPublic(BaseModel):
    """A swarm: its plan, each subtask's progress, the synthesized result and the cost."""

    id: str
    status: SwarmStatusName
    phase: SwarmPhase | None = Field(
        description="starting, planning, running, replanning, synthesizing or finished"
    )
    outcome: SwarmOutcome | None
    reason: str | None
    objective: str
    mode: SwarmMode
    recipe: str | None = Field(default=None, description="the recipe whose plan it runs")
    parent_run_id: str | None = Field(
        default=None, description="the run whose `recipe:` tool call started it"
    )
    queen: str
    queen_version: int
    limits: SwarmLimits
    models: dict[Complexity, str]
    plan_version: int = Field(description="0 until planned; +1 per re-plan")
    subtasks: list[SubtaskPublic]
    result: str | None = Field(description="the queen's final answer, citing subtasks as [id]")
    attribution: list[str] = Field(description="the subtasks the result cites")
    cost_usd: float = Field(description="the queen's calls and every subtask run")
    cost_complete: bool = Field(description="false when a model call had an unknown price")
    temporal_ui: str | None
    created_at: datetime
    finished_at: datetime | None
