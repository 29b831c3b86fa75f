"""A recipe's plan as a template of its source objective (pure functions, no Postgres)."""

from datetime import UTC, datetime

from core.swarms.plan import SubtaskSpec, SwarmSettings
from core.swarms.recipes import Recipe, describe, fill, plan_for, plan_of, templatize
from core.swarms.store import SubtaskRecord

OBJECTIVE = "Compare the prices of Berlin flats"


def row(id: str, position: int, description: str, **kw: object) -> SubtaskRecord:
    data: dict[str, object] = {
        "id": id, "position": position, "plan_version": 1, "description": description,
        "role": "researcher", "depends_on": [], "expected_output": "", "complexity": "medium",
        "status": "succeeded", "attempts": 1, "run_id": None, "agent_name": None,
        "agent_version": None, "model": None, "budget_usd": None, "cost_usd": 0.0,
        "cost_complete": True, "reason": None, "started_at": None, "finished_at": None,
    }  # fmt: skip
    return SubtaskRecord.model_validate({**data, **kw})


def recipe(plan: list[SubtaskSpec], mode: str = "hierarchical", description: str = "") -> Recipe:
    return Recipe(
        tenant_id="t", name="r", description=description, mode=mode, plan=plan,  # type: ignore[arg-type]
        settings=SwarmSettings(), queen_agent="queen", objective=OBJECTIVE,
        source_swarm_id=None, created_at=datetime.now(UTC),
    )  # fmt: skip


def test_the_objective_becomes_a_placeholder_and_a_new_one_fills_it() -> None:
    text = f"Research: {OBJECTIVE}. Cite sources."
    assert templatize(text, f"  {OBJECTIVE} ") == "Research: {objective}. Cite sources."
    assert fill(templatize(text, OBJECTIVE), "Rank Lisbon cafes") == (
        "Research: Rank Lisbon cafes. Cite sources."
    )
    # A short objective would match ordinary words: the text is kept as it is.
    assert templatize("Write the summary", "summary") == "Write the summary"
    # Braces that are not the placeholder survive filling.
    assert fill("Return {json} for {objective}", "x y") == "Return {json} for x y"


def test_the_plan_of_a_swarm_keeps_order_and_leaves_out_dropped_subtasks() -> None:
    rows = [
        row("b", 2001, f"Write up {OBJECTIVE}", depends_on=["a"], role="writer",
            expected_output=f"a report on {OBJECTIVE}"),
        row("x", 1001, "An abandoned idea", status="dropped"),
        row("a", 1000, "Gather prices"),
    ]  # fmt: skip
    plan = plan_of(rows, OBJECTIVE)
    assert [s.id for s in plan] == ["a", "b"]
    assert plan[1].description == "Write up {objective}"
    assert plan[1].expected_output == "a report on {objective}"
    assert (plan[1].role, plan[1].depends_on) == ("writer", ["a"])

    filled = plan_for(recipe(plan), "Rank Lisbon cafes")
    assert filled[1].description == "Write up Rank Lisbon cafes"
    assert plan[1].description == "Write up {objective}"  # the recipe is left as it was
    # The recipe's mode shapes the dependencies.
    assert [s.depends_on for s in plan_for(recipe(plan, "parallel"), "x")] == [[], []]


def test_a_recipe_is_described_by_its_description_or_its_plan() -> None:
    plan = [SubtaskSpec(id="a", description="d", role="researcher")]
    assert describe(recipe(plan, description="  Reports   on prices ")) == "Reports on prices"
    assert describe(recipe(plan)) == "A saved hierarchical plan of 1 subtasks: a (researcher)."
