"""HTTP bodies of the recipe routes (`XxxCreate` in, `XxxPublic` out)."""

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.base import Body
from core.swarms.plan import Complexity, SubtaskSpec, SwarmLimits, SwarmMode
from core.swarms.recipes import MAX_RECIPE_DESCRIPTION, RECIPE_NAME_PATTERN


class RecipeCreate(Body):
    """Save a succeeded swarm's plan as a recipe: agents call it as the tool `recipe:<name>`."""

    name: str = Field(pattern=RECIPE_NAME_PATTERN, description="as agent names: e.g. market-report")
    swarm_id: str = Field(min_length=1, max_length=100, description="a swarm that succeeded")
    description: str | None = Field(
        default=None,
        max_length=MAX_RECIPE_DESCRIPTION,
        description="what the recipe is good for; agents read it in the tool's description",
    )


class RecipePublic(BaseModel):
    """A recipe: the saved plan (`{objective}` marks where a new objective goes)."""

    name: str
    tool: str = Field(description="the tool name agents list in their `tools`")
    description: str
    mode: SwarmMode
    plan: list[SubtaskSpec]
    limits: SwarmLimits
    models: dict[Complexity, str]
    queen: str = Field(description="the agent that synthesizes the answer")
    objective: str = Field(description="the source swarm's objective")
    source_swarm_id: str | None = Field(description="null once that swarm is deleted")
    created_at: datetime
