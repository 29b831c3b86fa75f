"""Long-term memory payloads: what is written, recalled and deleted on the memory lane.

Kinds of memory, all in one Qdrant collection (vectors) and the `memories` table
(content, counters, provenance), always filtered by tenant:

    episode     a finished run: objective, outcome, summary, cost, tools used, rating
    reflexion   a lesson from a run's critique, with its reward
    skill       a procedure distilled from successful episodes (maintenance), with its
                usage count and success rate; retired when it keeps failing
    fact        what an agent chose to `remember`

Scope: `private` memories are recalled only by the agent that wrote them, `shared` ones
by every agent of the tenant, unless the tenant's sharing mode is `isolated`
(`core.tenants.SharingMode`): then every agent recalls only its own. Never across tenants.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from core.payloads import Payload

MemoryKind = Literal["episode", "reflexion", "skill", "fact"]
MemoryScope = Literal["private", "shared"]
MEMORY_KINDS: tuple[MemoryKind, ...] = ("episode", "reflexion", "skill", "fact")
MAX_MEMORY_CHARS = 20_000


class MemoryItem(Payload):
    """One memory to write. The same `key` (per tenant) writes once: retries are harmless."""

    key: str = Field(min_length=1, max_length=500)  # e.g. "episode:run_x", "fact:run_x:3:0"
    agent_name: str
    kind: MemoryKind
    content: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    scope: MemoryScope = "private"
    source_run_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    reward: float | None = None  # reflexions: -1 (failed) .. 1 (succeeded well)


class WriteMemoriesInput(Payload):
    """Input of `write_memories`."""

    tenant_id: str
    items: list[MemoryItem]


class WriteMemoriesOutput(Payload):
    """Ids of the memories (new or already written), in the order given."""

    ids: list[str]
    written: int = 0  # how many were new


class RecallInput(Payload):
    """Input of `recall_memories`: the memories closest in meaning to `query`.

    With `agent_name`, that agent's private memories plus the tenant's shared ones (its own
    alone when the tenant is `isolated`); without, every memory of the tenant (the API's
    view).
    """

    tenant_id: str
    query: str = Field(min_length=1, max_length=4000)
    agent_name: str | None = None
    kinds: list[MemoryKind] | None = None
    limit: int = Field(default=10, ge=1, le=100)
    min_score: float = 0.0
    include_retired: bool = False


class MemoryHit(Payload):
    """One recalled memory."""

    id: str
    kind: MemoryKind
    content: str
    score: float
    agent_name: str
    scope: MemoryScope
    source_run_id: str | None = None
    created_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    reward: float | None = None
    uses: int = 0
    successes: int = 0


class RecallOutput(Payload):
    """Recalled memories, best first."""

    hits: list[MemoryHit]


class DeleteMemoriesInput(Payload):
    """Input of `delete_memories`: every memory matching all the given filters.

    At least one filter besides the tenant must be set (deleting a tenant's whole memory
    is `kinds` = every kind, said explicitly).
    """

    tenant_id: str
    agent_name: str | None = None
    source_run_id: str | None = None
    ids: list[str] | None = None
    kinds: list[MemoryKind] | None = None
    older_than: datetime | None = None


class DeleteMemoriesOutput(Payload):
    """How many memories were deleted (rows and vectors)."""

    deleted: int


class SkillUse(Payload):
    """Input of `record_skill_use`: a run used these skills and ended so."""

    tenant_id: str
    skill_ids: list[str]
    succeeded: bool
    run_id: str


class RunMemoryInput(Payload):
    """Input of `recall_for_run` and `record_episode`: one run of one agent."""

    tenant_id: str
    run_id: str
    agent_name: str
    scope: MemoryScope = "private"
    limit: int = 5
    lesson: str | None = None  # record_episode: the reflexion's lesson, if any
    summary: str | None = None  # record_episode: the reflexion's summary of the run
    reward: float | None = None


class RunRecallOutput(Payload):
    """What a run recalled (the text itself went to the run's row, not the workflow)."""

    count: int = 0
    skill_ids: list[str] = Field(default_factory=list)


class ReflectInput(Payload):
    """Input of `reflect_on_run`: critique a finished run with the agent's models."""

    tenant_id: str
    run_id: str
    models: list[str]
    step: int  # the run's last step; the reflexion is ledgered as (step, "reflexion")


class ReflectOutput(Payload):
    """A run's critique: what happened, what to do next time, how well it went (-1..1)."""

    summary: str = ""
    lesson: str | None = None
    reward: float | None = None
    cost_usd: float | None = None
