"""Recipes: save a succeeded swarm's plan under a name, list, show, delete.

A recipe runs as the tool `recipe:<name>` of an agent (a child swarm of its run), or
directly with `POST /v1/swarms {"recipe": name, "objective": ...}`.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.deps import PoolDep, PrincipalDep
from api.schemas.recipes import RecipeCreate, RecipePublic
from core.swarms import recipes
from core.swarms.recipes import RECIPE_NAME_PATTERN, Recipe
from core.tools.names import RECIPE_TOOL_PREFIX

router = APIRouter(prefix="/v1/recipes", tags=["recipes"])
RecipeName = Annotated[str, Path(pattern=RECIPE_NAME_PATTERN)]


def _public(recipe: Recipe) -> RecipePublic:
    return RecipePublic(
        name=recipe.name,
        tool=RECIPE_TOOL_PREFIX + recipe.name,
        description=recipe.description,
        mode=recipe.mode,
        plan=recipe.plan,
        limits=recipe.settings.limits,
        models=recipe.settings.models,
        queen=recipe.queen_agent,
        objective=recipe.objective,
        source_swarm_id=recipe.source_swarm_id,
        created_at=recipe.created_at,
    )


@router.post("", response_model=RecipePublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": RecipePublic, "description": "the same plan was saved under this name"},
                        404: {"description": "No such swarm (`not_found`)."},
                        409: {"description": "A recipe of this name has another plan."}})  # fmt: skip
async def save_recipe(
    body: RecipeCreate, principal: PrincipalDep, pool: PoolDep, response: Response
) -> RecipePublic:
    """Save a succeeded swarm's plan as a recipe.

    404 for an unknown swarm, 422 for one that has not succeeded, 409 when the name is
    taken by another plan; saving the same plan again returns it (200).
    """
    async with pool.connection() as conn:
        recipe, created = await recipes.save_recipe(
            conn, principal.tenant_id, body.name, body.swarm_id, body.description
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _public(recipe)


@router.get("", response_model=list[RecipePublic])
async def list_recipes(principal: PrincipalDep, pool: PoolDep) -> list[RecipePublic]:
    """The tenant's recipes by name."""
    async with pool.connection() as conn:
        return [_public(r) for r in await recipes.list_recipes(conn, principal.tenant_id)]


@router.get("/{name}", response_model=RecipePublic)
async def get_recipe(name: RecipeName, principal: PrincipalDep, pool: PoolDep) -> RecipePublic:
    """A recipe and its plan."""
    async with pool.connection() as conn:
        return _public(await recipes.get_recipe(conn, principal.tenant_id, name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_recipe(name: RecipeName, principal: PrincipalDep, pool: PoolDep) -> Response:
    """Delete a recipe; agents that list `recipe:<name>` get an error result when they call it."""
    async with pool.connection() as conn:
        await recipes.delete_recipe(conn, principal.tenant_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
