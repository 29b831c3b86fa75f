"""`GET /v1/tools/search?q=`: the tenant's tools and the built-ins ranked by meaning.

Included by api/routes/tools.py ahead of its `GET /v1/tools/{name:path}`, which would
otherwise take `search` for a tool name. The search itself runs as `ToolSearchWorkflow`
because only the memory lane may open the vector store.
"""

from datetime import timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import PrincipalDep, SettingsDep, TemporalDep
from api.live import execute_briefly
from core.errors import InvalidInput
from core.tools.search import MAX_LIMIT, MAX_QUERY_CHARS, ToolSearchInput
from workflows.tool_search import ToolSearchWorkflow

router = APIRouter(prefix="/tools", tags=["tools"])

SEARCH_TIMEOUT: Final = timedelta(seconds=30)
"""How long a request waits for the memory lane (the first search of a large catalog
embeds every tool; later ones only what changed)."""


class ToolHitPublic(BaseModel):
    """One matching tool; higher scores match better."""

    name: str
    kind: str
    description: str
    score: float


class ToolSearchPublic(BaseModel):
    """Search results, best first."""

    query: str
    hits: list[ToolHitPublic]


@router.get("/search", response_model=ToolSearchPublic)
async def search_tools(
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
    q: Annotated[
        str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="what the tool should do")
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10,
) -> ToolSearchPublic:
    """The built-in and enabled registered tools that best match `q`, by meaning."""
    if not q.strip():
        raise InvalidInput("the query `q` is blank")
    output = await execute_briefly(
        client, settings, ToolSearchWorkflow.run,
        ToolSearchInput(tenant_id=principal.tenant_id, query=q, limit=limit),
        kind="tool-search", tenant_id=principal.tenant_id, execution_timeout=SEARCH_TIMEOUT,
        what="tool search",
    )  # fmt: skip
    return ToolSearchPublic(
        query=q.strip(),
        hits=[
            ToolHitPublic(**hit.model_dump(include=set(ToolHitPublic.model_fields)))
            for hit in output.hits
        ],
    )
