"""Swarms: the plan (a DAG of subtasks), its validation, and the swarm's payloads.

A plan comes from the queen (a model answering with JSON) or from the user. Either way
it is checked the same way before anything runs: ids unique and well formed, known
roles, dependencies that exist, no cycle, at most `max_subtasks`. The errors are
sentences the queen can act on when its plan is sent back.

Coordination modes shape a plan's dependencies:

    sequential    a pipeline: each subtask depends on the one listed before it
    parallel      map-reduce: no dependencies; the synthesis is the reduce
    hierarchical  the dependencies as planned; the queen may re-plan after a failure
"""

import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from core.payloads import Payload
from core.specs import Spec

SwarmMode = Literal["sequential", "parallel", "hierarchical"]
Complexity = Literal["low", "medium", "high"]
FailurePolicy = Literal["retry", "replan", "fail"]
SwarmOutcome = Literal["succeeded", "failed", "cancelled", "limit_reached"]
SwarmStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
SubtaskStatusName = Literal["pending", "running", "succeeded", "failed", "cancelled", "dropped"]
SwarmPhase = Literal["starting", "planning", "running", "replanning", "synthesizing", "finished"]

SUBTASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"
_SUBTASK_ID = re.compile(SUBTASK_ID_PATTERN)

BUILTIN_ROLES: dict[str, str] = {
    "researcher": (
        "You are the researcher of a team of agents. Gather the facts the subtask needs, "
        "say where each comes from, and separate what you found from what you assume."
    ),
    "coder": (
        "You are the coder of a team of agents. Write correct, small, tested code for the "
        "subtask; run it in the sandbox when you can, and report what it printed."
    ),
    "analyst": (
        "You are the analyst of a team of agents. Work through the numbers and the "
        "evidence you are given, show your reasoning briefly, and state your conclusions."
    ),
    "writer": (
        "You are the writer of a team of agents. Turn the material you are given into "
        "clear, well-organized prose for the reader the objective names."
    ),
    "reviewer": (
        "You are the reviewer of a team of agents. Check the work you are given against "
        "the objective: list concrete errors and gaps, and say what must change."
    ),
}
"""Role agents every tenant has: installed as agents of these names on first use (a
tenant's own agent of the same name wins, and may be edited like any agent)."""

BUILTIN_ROLE_TOOLS: dict[str, list[str]] = {
    "researcher": ["http_fetch", "calculator", "get_time"],
    "coder": ["run_python", "read_file", "write_file", "list_files"],
    "analyst": ["calculator", "run_python"],
    "writer": [],
    "reviewer": ["calculator"],
}

QUEEN_AGENT = "queen"
QUEEN_INSTRUCTIONS = (
    "You are the queen of a swarm of agents: you split objectives into subtasks that "
    "specialists can do on their own, and combine their results into one answer."
)

MAX_DESCRIPTION = 20_000


class SubtaskSpec(Spec):
    """One subtask of a plan, as planned."""

    id: str = Field(pattern=SUBTASK_ID_PATTERN, description="e.g. t1, research-prices")
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    role: str = Field(min_length=1, max_length=128, description="a role agent or any agent")
    depends_on: list[str] = Field(default_factory=list, max_length=100)
    expected_output: str = Field(default="", max_length=5000)
    complexity: Complexity = "medium"


class SwarmLimits(Spec):
    """Limits and failure handling of one swarm."""

    max_subtasks: int = Field(default=10, ge=1, le=100)
    max_parallel: int = Field(default=4, ge=1, le=64)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_plan_attempts: int = Field(
        default=3, ge=1, le=10, description="queen answers per plan before the swarm fails"
    )
    failure_policy: FailurePolicy | None = Field(
        default=None,
        description="after a subtask's retries: re-plan, or fail the swarm "
        "(default: replan in hierarchical mode, retry otherwise)",
    )
    max_retries: int = Field(default=1, ge=0, le=5, description="per subtask")
    max_replans: int = Field(default=2, ge=0, le=5)
    timeout_s: float = Field(default=6 * 3600.0, gt=0, le=30 * 24 * 3600)


class SwarmSettings(Spec):
    """What a swarm was started with besides its objective (stored with the swarm)."""

    limits: SwarmLimits = SwarmLimits()
    models: dict[Complexity, str] = Field(
        default_factory=dict,
        description="model per complexity (e.g. low: a cheap model); it goes first, then "
        "the role agent's own chain",
    )

    @field_validator("models")
    @classmethod
    def _model_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for model in value.values():
            if "/" not in model or len(model) > 200:
                raise ValueError(f"model id {model!r} must look like provider/model")
        return value

    def failure_policy(self, mode: SwarmMode) -> FailurePolicy:
        """The policy after a subtask's retries are spent."""
        if self.limits.failure_policy is not None:
            return self.limits.failure_policy
        return "replan" if mode == "hierarchical" else "retry"


# -- plans ---------------------------------------------------------------------------


def parse_plan(text: str | None) -> tuple[list[SubtaskSpec], list[str]]:
    """The subtasks of a queen's JSON answer, or the errors that make it unusable.

    Accepts `{"subtasks": [...]}` or a bare list, also inside a Markdown code fence.
    """
    data, error = _load_json(text or "")
    if error is not None:
        return [], [error]
    items = data.get("subtasks") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return [], ['the answer must be a JSON object {"subtasks": [...]}']
    if not items:
        return [], ["the plan has no subtasks"]
    subtasks: list[SubtaskSpec] = []
    errors: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(f"subtask {index + 1} is not an object")
            continue
        item = {**item}
        # Models write the id as a number or the dependencies as one string.
        if isinstance(item.get("id"), int):
            item["id"] = str(item["id"])
        if isinstance(item.get("depends_on"), str | int):
            item["depends_on"] = [str(item["depends_on"])]
        if isinstance(item.get("depends_on"), list):
            item["depends_on"] = [str(d) if isinstance(d, int) else d for d in item["depends_on"]]
        if isinstance(item.get("complexity"), str):
            item["complexity"] = item["complexity"].strip().lower()
        try:
            subtasks.append(SubtaskSpec.model_validate(item))
        except ValidationError as exc:
            name = item.get("id") if isinstance(item.get("id"), str) else f"#{index + 1}"
            errors.extend(f"subtask {name}: {_field_error(e)}" for e in exc.errors())
    return subtasks, errors


def _load_json(text: str) -> tuple[Any, str | None]:
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text), None
    except ValueError:
        pass
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start >= 0:
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0], None
        except ValueError as exc:
            return None, f"the answer is not valid JSON ({exc})"
    return None, "the answer holds no JSON; answer with the plan as a JSON object only"


def _field_error(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


def check_plan(
    subtasks: Sequence[SubtaskSpec],
    *,
    roles: Collection[str],
    max_subtasks: int,
    completed: Collection[str] = (),
) -> list[str]:
    """Why the plan cannot run (empty when it can).

    `completed` are subtasks that already succeeded (a re-plan): the new subtasks may
    depend on them but not plan them again.
    """
    errors: list[str] = []
    if not subtasks:
        return ["the plan has no subtasks"]
    if len(subtasks) > max_subtasks:
        errors.append(f"the plan has {len(subtasks)} subtasks; at most {max_subtasks} are allowed")
    ids = [s.id for s in subtasks]
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            errors.append(f"subtask id {sid!r} is used twice")
        seen.add(sid)
    for s in subtasks:
        if s.id in completed:
            errors.append(
                f"subtask {s.id!r} has already been completed; do not plan it again (depend "
                "on it instead)"
            )
        if s.role not in roles:
            errors.append(
                f"subtask {s.id!r} has unknown role {s.role!r}; use one of: "
                + ", ".join(sorted(roles))
            )
        for dep in s.depends_on:
            if dep == s.id:
                errors.append(f"subtask {s.id!r} depends on itself")
            elif dep not in seen and dep not in completed:
                errors.append(f"subtask {s.id!r} depends on {dep!r}, which is not in the plan")
    cycle = find_cycle({s.id: [d for d in s.depends_on if d in seen] for s in subtasks})
    if cycle:
        errors.append("the dependencies form a cycle: " + " -> ".join(cycle))
    return errors


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle of `graph` (node -> dependencies) as a path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def shape(subtasks: Sequence[SubtaskSpec], mode: SwarmMode) -> list[SubtaskSpec]:
    """The plan with the dependencies its coordination mode imposes."""
    if mode == "parallel":
        return [s.model_copy(update={"depends_on": []}) for s in subtasks]
    if mode == "sequential":
        return [
            s.model_copy(update={"depends_on": [subtasks[i - 1].id] if i else []})
            for i, s in enumerate(subtasks)
        ]
    return list(subtasks)


def child_workflow_id(swarm_workflow_id: str, subtask_id: str, attempt: int) -> str:
    """The child workflow of a subtask's attempt: `{swarm}/{subtask}`, `.{n}` from attempt 2."""
    return f"{swarm_workflow_id}/{subtask_id}" + ("" if attempt == 1 else f".{attempt}")


# -- workflow and activity payloads --------------------------------------------------


class PlannedSubtask(Payload):
    """What the workflow carries of a subtask (its texts stay in Postgres)."""

    id: str
    role: str
    depends_on: list[str] = Field(default_factory=list)
    complexity: Complexity = "medium"


class SwarmInput(Payload):
    """Input of `SwarmWorkflow`: the swarm row holds the objective and settings."""

    tenant_id: str
    swarm_id: str
    depth: int = 0  # a recipe called by an agent run of depth n: n + 1 (subtasks get +1)


class SwarmSetup(Payload):
    """What `start_swarm` loads for the workflow."""

    mode: SwarmMode
    settings: SwarmSettings
    queen_models: list[str]
    plan: list[PlannedSubtask] = Field(
        default_factory=list
    )  # a user's plan; empty: the queen plans
    plan_version: int = 0


class PlanInput(Payload):
    """Input of `plan_swarm`: one queen answer for plan `plan_version`."""

    tenant_id: str
    swarm_id: str
    plan_version: int
    attempt: int
    models: list[str]
    replan: bool = False
    failures: list[str] = Field(
        default_factory=list
    )  # subtask ids whose failure is the evidence of a re-plan
    budget_remaining_usd: float | None = None


class PlanOutput(Payload):
    """The plan (when valid) or why it is not; what the queen's answer cost."""

    subtasks: list[PlannedSubtask] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    model: str = ""
    cost_usd: float | None = 0.0


class SubtaskStart(Payload):
    """One attempt of a subtask that the workflow is about to start."""

    subtask_id: str
    attempt: int
    workflow_id: str
    budget_usd: float | None = None


class StartSubtasksInput(Payload):
    """Input of `start_subtasks`: create the attempts' runs (once each)."""

    tenant_id: str
    swarm_id: str
    starts: list[SubtaskStart]


class SubtaskRun(Payload):
    """The run of one attempt, or why the subtask cannot start (a role that vanished)."""

    subtask_id: str
    run_id: str = ""
    workflow_id: str = ""
    agent_name: str = ""
    agent_version: int = 0
    inbox_id: int = 0
    error: str | None = None


class StartSubtasksOutput(Payload):
    """One `SubtaskRun` per start, in order."""

    runs: list[SubtaskRun]


class FinishSubtaskInput(Payload):
    """Input of `finish_subtask`: how one attempt ended."""

    tenant_id: str
    swarm_id: str
    subtask_id: str
    attempt: int
    run_id: str
    outcome: SwarmOutcome
    reason: str | None = None


class FinishSubtaskOutput(Payload):
    """What the attempt cost (from its run row, reflexion included)."""

    cost_usd: float = 0.0
    cost_complete: bool = True


class SynthesizeInput(Payload):
    """Input of `synthesize_swarm`."""

    tenant_id: str
    swarm_id: str
    models: list[str]
    budget_remaining_usd: float | None = None


class SynthesizeOutput(Payload):
    """The final answer (a preview; the whole text is the swarm's `result`)."""

    result: str | None = None
    attribution: list[str] = Field(default_factory=list)
    cost_usd: float | None = 0.0


class SubtaskState(Payload):
    """A subtask as the workflow sees it (query `status`, the swarm's output)."""

    id: str
    role: str
    depends_on: list[str] = Field(default_factory=list)
    complexity: Complexity = "medium"
    status: SubtaskStatusName = "pending"
    attempt: int = 0
    run_id: str | None = None
    cost_usd: float = 0.0
    budget_usd: float | None = None


class FinishSwarmInput(Payload):
    """Input of `finish_swarm`."""

    tenant_id: str
    swarm_id: str
    outcome: SwarmOutcome
    reason: str | None = None
    subtasks: list[SubtaskState] = Field(default_factory=list)
    cost_usd: float = 0.0
    cost_complete: bool = True


class SwarmStatus(Payload):
    """Query `status`: the DAG's live state."""

    phase: SwarmPhase
    plan_version: int = 0
    subtasks: list[SubtaskState] = Field(default_factory=list)
    cost_usd: float = 0.0
    reserved_usd: float = 0.0
    cost_complete: bool = True
    outcome: SwarmOutcome | None = None


class SwarmOutput(Payload):
    """How a swarm ended."""

    swarm_id: str
    outcome: SwarmOutcome
    reason: str | None = None
    result: str | None = None  # a preview; the whole answer is in Postgres
    attribution: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0
    cost_complete: bool = True
    subtasks: list[SubtaskState] = Field(default_factory=list)


class StartRecipeInput(Payload):
    """Input of `start_recipe`: the swarm of one `recipe:<name>` tool call (once per call)."""

    tenant_id: str
    run_id: str
    call_id: str
    recipe: str
    objective: str
    workflow_id: str  # the child SwarmWorkflow's id


class StartRecipeOutput(Payload):
    """The swarm to run as a child workflow, or why there is none (for the model)."""

    swarm_id: str = ""
    workflow_id: str = ""  # the swarm's, as stored (the id the first attempt asked for)
    queen_agent: str = ""
    queen_version: int = 0
    error: str | None = None


class RecipeAnswerInput(Payload):
    """Input of `recipe_answer`."""

    tenant_id: str
    swarm_id: str


class RecipeAnswerOutput(Payload):
    """How a recipe's swarm ended, as the calling agent is told."""

    text: str
    ok: bool = True
