"""A recipe called as a tool, on the memory lane: its swarm's row, and its answer."""

from temporalio import activity

from core.db import Pool
from core.errors import InvalidInput, NotFound
from core.payloads import RunEvent
from core.providers import default_model
from core.runs import store as runs
from core.settings import Settings
from core.swarms import recipes
from core.swarms import store as swarm_store
from core.swarms.plan import (
    RecipeAnswerInput,
    RecipeAnswerOutput,
    StartRecipeInput,
    StartRecipeOutput,
)


class RecipeActivities:
    """Postgres side of a `recipe:<name>` tool call; every write is idempotent."""

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool

    @activity.defn(name="start_recipe")
    async def start_recipe(self, input: StartRecipeInput) -> StartRecipeOutput:
        """Create the swarm of a recipe call (once per call: a retry finds it).

        An unknown recipe or a plan that cannot run now is an answer for the model.
        """
        async with self._pool.connection() as conn:
            try:
                recipe = await recipes.get_recipe(conn, input.tenant_id, input.recipe)
                swarm, _ = await recipes.create_recipe_swarm(
                    conn, tenant_id=input.tenant_id, recipe=recipe, objective=input.objective,
                    default_model=default_model(self._settings),
                    idempotency_key=f"recipe:{input.run_id}:{input.call_id}",
                    workflow_id=input.workflow_id, parent_run_id=input.run_id,
                )  # fmt: skip
            except NotFound as exc:
                return StartRecipeOutput(error=exc.message)
            except InvalidInput as exc:
                errors = "; ".join(str(e) for e in exc.details.get("errors", [])[:5])
                return StartRecipeOutput(
                    error=f"{exc.message}: {errors}" if errors else exc.message
                )
            await runs.append_event(
                conn, input.tenant_id, input.run_id,
                RunEvent(key=f"recipe-{input.call_id}", type="recipe.started", data={
                    "call_id": input.call_id, "recipe": recipe.name, "swarm_id": swarm.id,
                    "workflow_id": swarm.workflow_id,
                }),
            )  # fmt: skip
        return StartRecipeOutput(
            swarm_id=swarm.id,
            workflow_id=swarm.workflow_id,
            queen_agent=swarm.queen_agent,
            queen_version=swarm.queen_version,
        )

    @activity.defn(name="recipe_answer")
    async def recipe_answer(self, input: RecipeAnswerInput) -> RecipeAnswerOutput:
        """The ended swarm's answer (or how it failed), as the calling agent reads it."""
        async with self._pool.connection() as conn:
            swarm = await swarm_store.get_swarm(conn, input.tenant_id, input.swarm_id)
        text, ok = recipes.answer_text(swarm)
        return RecipeAnswerOutput(text=text, ok=ok)
