"""HTTP bodies of the memory routes (`XxxCreate` in, `XxxPublic` out)."""

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from api.schemas.base import Body
from core.memory.payloads import MemoryKind, MemoryScope
from core.payloads import strip_query

MAX_QUERY_CHARS = 4000
MAX_LIMIT = 100


class MemoryQueryCreate(Body):
    """Recall the tenant's memories closest in meaning to `query`.

    With `agent`, that agent's memories plus the tenant's shared ones; without, every
    memory of the tenant.
    """

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    kinds: list[MemoryKind] | None = Field(
        default=None, description="episode, reflexion, skill, fact (default: all)"
    )
    agent: str | None = Field(default=None, min_length=1, max_length=200)
    limit: int = Field(default=10, ge=1, le=MAX_LIMIT)

    _query_not_blank = field_validator("query")(strip_query)


class MemoryHitPublic(BaseModel):
    """One recalled memory; higher scores (cosine similarity) match better."""

    id: str
    kind: MemoryKind
    content: str
    score: float
    agent: str
    scope: MemoryScope
    run_id: str | None = Field(description="the run the memory came from")
    created_at: datetime


class MemoryQueryPublic(BaseModel):
    """Recalled memories, best first (`query` as searched: secrets and e-mails masked)."""

    query: str
    hits: list[MemoryHitPublic]


class MemoryDeletedPublic(BaseModel):
    """How many memories were deleted (their rows and their vectors)."""

    deleted: int
