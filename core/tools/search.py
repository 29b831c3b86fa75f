"""Payloads of semantic tool search (`search_tools` on the memory lane, `ToolSearchWorkflow`).

The `GET /v1/tools/search` route and an agent's `find_tools` meta-tool ask the same
activity, so both rank tools the same way.
"""

from typing import Final

from pydantic import Field, field_validator

from core.payloads import Payload, strip_query

MAX_QUERY_CHARS: Final = 500
MAX_LIMIT: Final = 50
DESCRIPTION_CLIP: Final = 300
"""Characters of a tool's description returned per hit."""


class ToolSearchInput(Payload):
    """Input of `search_tools` and `ToolSearchWorkflow`.

    `names` restricts the candidates (e.g. the tools an agent may use); None means every
    enabled tool of the tenant plus the built-ins.
    """

    tenant_id: str = Field(min_length=1)
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    limit: int = Field(default=5, ge=1, le=MAX_LIMIT)
    names: list[str] | None = None

    _query_not_blank = field_validator("query")(strip_query)


class ToolHit(Payload):
    """One tool that matches a query; higher scores match better (cosine plus a name boost)."""

    name: str
    description: str = Field(description=f"clipped to {DESCRIPTION_CLIP} characters")
    score: float
    kind: str = ""  # builtin, workflow, http, mcp, code, agent


class ToolSearchOutput(Payload):
    """Result of `search_tools`: the best hits first, and what indexing this call did."""

    hits: list[ToolHit] = Field(default_factory=list)
    embedded: int = 0  # tools (re)embedded before searching: new or changed since last time
    removed: int = 0  # index entries dropped: tools deleted or disabled


def clip(text: str, limit: int = DESCRIPTION_CLIP) -> str:
    """`text` cut to `limit` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if text[limit - 1] != " " and space > limit // 2:  # mid-word: drop the partial word
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "…"
