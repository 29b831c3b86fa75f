"""Recipes: a succeeded swarm's plan, saved under a name and run again on new objectives.

A recipe holds the plan as the queen made it (the subtasks that were not dropped by a
re-plan, in plan order) with the source objective replaced by `{objective}` wherever it
appeared word for word in a description or expected output. Running it fills in the
new objective and starts a swarm with that plan as a user's plan: the queen does not
plan, only synthesizes. Each subtask's run also gets the swarm's objective (as every
subtask does), so a description that paraphrased the old objective still works on the
new one.

Agents call a recipe as the tool `recipe:<name>` (`RecipesAsTools` is what the tool
catalog is given), and `POST /v1/swarms {"recipe": ...}` runs one directly.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core.errors import Conflict, InvalidInput, NotFound
from core.runs import agents
from core.runs.payloads import AGENT_NAME_PATTERN
from core.runs.store import Conn
from core.swarms import store as swarm_store
from core.swarms.plan import (
    QUEEN_AGENT,
    SubtaskSpec,
    SwarmMode,
    SwarmSettings,
    check_plan,
    shape,
)
from core.swarms.store import SubtaskRecord, SwarmRecord

RECIPE_NAME_PATTERN = AGENT_NAME_PATTERN
"""Recipe names follow the rules of agent names."""
PLACEHOLDER = "{objective}"
"""Where a recipe's plan takes the new objective."""
MIN_TEMPLATED_OBJECTIVE = 12
"""A shorter source objective is not replaced in the plan (it would match ordinary words)."""
MAX_RECIPE_DESCRIPTION = 2000

_COLUMNS = (
    "tenant_id, name, description, mode, plan, settings, queen_agent, objective,"
    " source_swarm_id, created_at"
)


class Recipe(BaseModel):
    """A recipe row."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    name: str
    description: str
    mode: SwarmMode
    plan: list[SubtaskSpec]
    settings: SwarmSettings
    queen_agent: str
    objective: str
    source_swarm_id: str | None
    created_at: datetime


# -- templates -----------------------------------------------------------------------


def templatize(text: str, objective: str) -> str:
    """`text` with the objective replaced by `{objective}` (a short objective is kept)."""
    objective = objective.strip()
    if len(objective) < MIN_TEMPLATED_OBJECTIVE:
        return text
    return text.replace(objective, PLACEHOLDER)


def fill(text: str, objective: str) -> str:
    """`text` with `{objective}` replaced by the objective."""
    return text.replace(PLACEHOLDER, objective.strip())


def plan_of(subtasks: Sequence[SubtaskRecord], objective: str) -> list[SubtaskSpec]:
    """The plan a swarm ran (dropped subtasks left out), as a template of its objective."""
    return [
        SubtaskSpec(
            id=s.id,
            description=templatize(s.description, objective),
            role=s.role,
            depends_on=list(s.depends_on),
            expected_output=templatize(s.expected_output, objective),
            complexity=s.complexity,
        )
        for s in sorted(subtasks, key=lambda s: s.position)
        if s.status != "dropped"
    ]


def plan_for(recipe: Recipe, objective: str) -> list[SubtaskSpec]:
    """The recipe's plan with `objective` filled in, shaped by the recipe's mode.

    Not re-validated: a filled-in description may exceed the length a user's may have.
    """
    filled = [
        s.model_copy(
            update={
                "description": fill(s.description, objective),
                "expected_output": fill(s.expected_output, objective),
            }
        )
        for s in recipe.plan
    ]
    return shape(filled, recipe.mode)


def describe(recipe: Recipe) -> str:
    """One line on what a recipe does: its description, else its plan's roles."""
    if recipe.description.strip():
        return " ".join(recipe.description.split())
    steps = ", ".join(f"{s.id} ({s.role})" for s in recipe.plan)
    return f"A saved {recipe.mode} plan of {len(recipe.plan)} subtasks: {steps}."


# -- the table -----------------------------------------------------------------------


async def save_recipe(
    conn: Conn, tenant_id: str, name: str, swarm_id: str, description: str | None = None
) -> tuple[Recipe, bool]:
    """Save the plan of the tenant's succeeded swarm `swarm_id` as recipe `name`.

    Returns (recipe, created): saving the same plan under the same name again returns
    the saved recipe.

    Raises:
        NotFound: no such swarm for this tenant.
        InvalidInput: the swarm has not succeeded (running, failed, cancelled).
        Conflict: the name is taken by a recipe with another plan.
    """
    swarm = await swarm_store.get_swarm(conn, tenant_id, swarm_id)
    if swarm.status != "succeeded":
        state = f"ended {swarm.status}" if swarm.finished_at else "has not finished"
        raise InvalidInput(
            f"swarm {swarm_id!r} {state}; only a succeeded swarm's plan can be saved as a recipe",
            details={"status": swarm.status},
        )
    plan = plan_of(await swarm_store.list_subtasks(conn, swarm_id), swarm.objective)
    if not plan:
        raise InvalidInput(f"swarm {swarm_id!r} has no subtasks to save")
    cur = await conn.execute(
        "INSERT INTO recipes (tenant_id, name, description, mode, plan, settings, queen_agent,"
        " objective, source_swarm_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (tenant_id, name) DO NOTHING RETURNING {_COLUMNS}",
        (tenant_id, name, description or "", swarm.mode, Jsonb(_dump(plan)),
         Jsonb(swarm.settings.model_dump(mode="json")), swarm.queen_agent, swarm.objective,
         swarm.id),
    )  # fmt: skip
    row = await cur.fetchone()
    if row is not None:
        return Recipe.model_validate(row), True
    existing = await get_recipe(conn, tenant_id, name)
    if not _same(existing, swarm, plan, description):
        raise Conflict(
            f"recipe {name!r} exists with another plan; delete it first or choose another name"
        )
    return existing, False


def _dump(plan: Sequence[SubtaskSpec]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in plan]


def _same(
    recipe: Recipe, swarm: SwarmRecord, plan: list[SubtaskSpec], description: str | None
) -> bool:
    return (
        _dump(recipe.plan) == _dump(plan)
        and recipe.mode == swarm.mode
        and recipe.settings == swarm.settings
        and recipe.queen_agent == swarm.queen_agent
        and (description is None or description == recipe.description)
    )


async def get_recipe(conn: Conn, tenant_id: str, name: str) -> Recipe:
    """A recipe of the tenant.

    Raises:
        NotFound: no such recipe for this tenant.
    """
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM recipes WHERE tenant_id = %s AND name = %s", (tenant_id, name)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"recipe {name!r} not found")
    return Recipe.model_validate(row)


async def list_recipes(conn: Conn, tenant_id: str) -> list[Recipe]:
    """The tenant's recipes by name."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM recipes WHERE tenant_id = %s ORDER BY name", (tenant_id,)
    )
    return [Recipe.model_validate(r) for r in await cur.fetchall()]


async def delete_recipe(conn: Conn, tenant_id: str, name: str) -> None:
    """Delete a recipe (the swarms it ran stay).

    Raises:
        NotFound: no such recipe for this tenant.
    """
    cur = await conn.execute(
        "DELETE FROM recipes WHERE tenant_id = %s AND name = %s RETURNING name", (tenant_id, name)
    )
    if await cur.fetchone() is None:
        raise NotFound(f"recipe {name!r} not found")


# -- running one ---------------------------------------------------------------------


async def create_recipe_swarm(
    conn: Conn,
    *,
    tenant_id: str,
    recipe: Recipe,
    objective: str,
    default_model: str,
    queen: str | None = None,
    settings: SwarmSettings | None = None,
    idempotency_key: str | None = None,
    workflow_id: str | None = None,
    parent_run_id: str | None = None,
    request_hash: bytes | None = None,
) -> tuple[SwarmRecord, bool]:
    """Create a swarm that runs `recipe` on `objective` (the workflow is started by the caller).

    `queen` and `settings` default to the recipe's (the source swarm's).

    Raises:
        NotFound: the queen agent no longer exists.
        InvalidInput: the plan cannot run now (a role's agent was deleted, limits too small).
    """
    settings = settings or recipe.settings
    name = queen or recipe.queen_agent
    if name == QUEEN_AGENT:
        queen_version = await swarm_store.role_agent(conn, tenant_id, QUEEN_AGENT, default_model)
    else:
        queen_version = await agents.get_version(conn, tenant_id, name)
    plan = plan_for(recipe, objective)
    errors = check_plan(
        plan,
        roles=await swarm_store.known_roles(conn, tenant_id),
        max_subtasks=settings.limits.max_subtasks,
    )
    if errors:
        raise InvalidInput(f"recipe {recipe.name!r} cannot run", details={"errors": errors})
    return await swarm_store.create_swarm(
        conn, tenant_id=tenant_id, objective=objective, mode=recipe.mode, queen=queen_version,
        settings=settings, plan=plan, idempotency_key=idempotency_key, workflow_id=workflow_id,
        recipe=recipe.name, parent_run_id=parent_run_id, request_hash=request_hash,
    )  # fmt: skip


class RecipesAsTools:
    """The tenant's recipes as the tool catalog offers them (`ToolCatalog(recipes=...)`)."""

    async def recipe_names(self, conn: Conn, tenant_id: str) -> list[str]:
        """Names of the tenant's recipes."""
        cur = await conn.execute(
            "SELECT name FROM recipes WHERE tenant_id = %s ORDER BY name", (tenant_id,)
        )
        return [str(r["name"]) for r in await cur.fetchall()]

    async def recipe_description(self, conn: Conn, tenant_id: str, name: str) -> str | None:
        """What the recipe does (None: no such recipe)."""
        try:
            return describe(await get_recipe(conn, tenant_id, name))
        except NotFound:
            return None


MAX_ANSWER = 16_000
"""Characters of a recipe's answer given to the calling agent (what its prompt shows)."""


def answer_text(swarm: SwarmRecord) -> tuple[str, bool]:
    """The tool result of a recipe call whose swarm has ended: (text, succeeded)."""
    if swarm.status == "succeeded" and swarm.result is not None:
        text = swarm.result
        if len(text) > MAX_ANSWER:
            text = text[:MAX_ANSWER] + f"… [{len(text) - MAX_ANSWER} more characters]"
        return text, True
    reason = swarm.reason or "no reason given"
    return (
        f"Error: the recipe's swarm {swarm.id} ended {swarm.outcome or swarm.status}: {reason}",
        False,
    )
