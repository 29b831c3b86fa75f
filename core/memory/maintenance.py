"""Memory maintenance: payloads of `MemoryMaintenanceWorkflow` and its Postgres queries.

Per tenant the workflow (1) deletes memories past the tenant's retention, (2) re-embeds
memories written with another embedding model, (3) distills clusters of similar
successful episodes into skills and (4) retires skills that keep failing. The queries
here read and mark rows of the `memories` table; vectors are the memory store's
business (`activities/memory/store.py`).

An episode a skill was distilled from carries the skill's id in its metadata
(`CONSUMED_BY`), so it joins no later cluster and a rerun distills nothing twice.
"""

import hashlib
from datetime import datetime
from typing import Any, Final

import psycopg
from pydantic import Field

from core.memory.payloads import MemoryScope
from core.payloads import Payload

SKILL_KEY_PREFIX: Final = "skill:"
CONSUMED_BY: Final = "skill_id"
"""Metadata field of an episode that was distilled into a skill: the skill's id."""
MAX_CLUSTER_TEXT: Final = 400
"""Characters of each objective or summary a cluster carries to the model."""
MAX_CLUSTER_SHOWN: Final = 6
"""Episodes of a cluster shown to the model (the cluster may hold more)."""
RATING_FLOOR: Final = 3
"""Episodes rated below this (1-5) never become skills; unrated ones may."""


# -- payloads ----------------------------------------------------------------------------


class MaintenanceOutput(Payload):
    """What one maintenance pass did: counts summed over the tenants it covered."""

    tenant_id: str | None = None  # the tenant, or None for a pass over every tenant
    tenants: int = 0
    expired: int = 0  # memories deleted by retention (rows and vectors)
    reembedded: int = 0
    skills_written: int = 0
    fallback_skills: int = 0  # of those, built without a usable model answer
    episodes_consumed: int = 0
    skills_retired: int = 0
    failed_tenants: list[str] = Field(default_factory=list)

    def plus(self, other: "MaintenanceOutput") -> "MaintenanceOutput":
        """The sum of two reports (keeps this one's `tenant_id`)."""
        return MaintenanceOutput(
            tenant_id=self.tenant_id,
            tenants=self.tenants + other.tenants,
            expired=self.expired + other.expired,
            reembedded=self.reembedded + other.reembedded,
            skills_written=self.skills_written + other.skills_written,
            fallback_skills=self.fallback_skills + other.fallback_skills,
            episodes_consumed=self.episodes_consumed + other.episodes_consumed,
            skills_retired=self.skills_retired + other.skills_retired,
            failed_tenants=[*self.failed_tenants, *other.failed_tenants],
        )


class MaintenanceInput(Payload):
    """Input of `MemoryMaintenanceWorkflow`.

    `tenant_id` None covers every tenant that has memories (the schedule's pass): one
    child workflow per tenant. The other fields tune the pass; their defaults are the
    platform's policy.
    """

    tenant_id: str | None = None
    skill_similarity: float = Field(default=0.75, gt=0, le=1)
    skill_min_episodes: int = Field(default=2, ge=2)
    max_skills: int = Field(default=20, ge=0, le=200)  # per tenant and pass
    skill_scope: MemoryScope = "private"
    retire_min_uses: int = Field(default=5, ge=1)
    retire_below: float = Field(default=0.4, ge=0, le=1)  # success rate
    # Continue-as-new state of a pass over every tenant.
    after_tenant: str | None = None
    carried: MaintenanceOutput | None = None


class ListTenantsInput(Payload):
    """Input of `list_memory_tenants`: a page of tenants with memories, by id."""

    after: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ListTenantsOutput(Payload):
    """Tenant ids in order; `more` when another page may follow."""

    tenant_ids: list[str]
    more: bool = False


class RetentionInput(Payload):
    """Input of `apply_memory_retention`: `now` is the workflow's clock (stable on retry)."""

    tenant_id: str
    now: datetime


class RetentionOutput(Payload):
    """How many memories retention deleted; `retention_days` None: the tenant keeps all."""

    deleted: int = 0
    retention_days: int | None = None
    done: bool = True  # False: the time budget ran out, call again


class ReembedInput(Payload):
    """Input of `reembed_memories`."""

    tenant_id: str
    batch: int = Field(default=128, ge=1, le=1000)


class ReembedOutput(Payload):
    """Memories re-embedded by this call; `done` when none is left on an old model."""

    reembedded: int = 0
    done: bool = True


class FindClustersInput(Payload):
    """Input of `find_skill_clusters`."""

    tenant_id: str
    similarity: float = 0.75
    min_episodes: int = 2
    max_clusters: int = 20
    max_episodes_per_agent: int = Field(default=500, ge=2, le=5000)
    max_cluster_size: int = Field(default=12, ge=2, le=100)


class SkillCluster(Payload):
    """Similar successful episodes of one agent, to be distilled into one skill.

    `episode_ids` are all the cluster's episodes (sorted); the texts are of the first
    `MAX_CLUSTER_SHOWN`, the representative (most central) one first, clipped.
    """

    agent_name: str
    episode_ids: list[str]
    objectives: list[str]
    summaries: list[str] = Field(default_factory=list)
    tool_sequences: list[list[str]] = Field(default_factory=list)
    model: str | None = None  # the agent's current model, if the agent still exists

    @property
    def key(self) -> str:
        """The skill's memory key: the same episodes always make the same skill."""
        digest = hashlib.sha256("\n".join(sorted(self.episode_ids)).encode()).hexdigest()
        return f"{SKILL_KEY_PREFIX}{self.agent_name}:{digest[:32]}"


class FindClustersOutput(Payload):
    """Clusters found, largest first."""

    clusters: list[SkillCluster] = Field(default_factory=list)
    candidates: int = 0  # episodes considered


class DistillSkillInput(Payload):
    """Input of `distill_skill`."""

    tenant_id: str
    cluster: SkillCluster


class DistilledSkill(Payload):
    """A skill: its name, when to use it and how."""

    name: str
    trigger: str
    procedure: str
    tools: list[str] = Field(default_factory=list)
    fallback: bool = False  # built from the cluster alone (no usable model answer)
    model: str | None = None  # the model that distilled it

    @property
    def content(self) -> str:
        """The memory's text: what recall matches and the agent reads."""
        return f"Skill: {self.name}\nWhen: {self.trigger}\nHow: {self.procedure}"


class WriteSkillInput(Payload):
    """Input of `write_skill`; `skill` None: the model call failed, build the fallback."""

    tenant_id: str
    cluster: SkillCluster
    skill: DistilledSkill | None = None
    scope: MemoryScope = "private"


class WriteSkillOutput(Payload):
    """The skill's memory id, whether it is new, and how many episodes it consumed."""

    skill_id: str
    created: bool
    fallback: bool = False
    consumed: int = 0


class RetireSkillsInput(Payload):
    """Input of `retire_failing_skills`: used at least `min_uses` times, success < `below`."""

    tenant_id: str
    min_uses: int = 5
    below: float = 0.4


class RetireSkillsOutput(Payload):
    """Ids of the skills retired now."""

    retired: list[str] = Field(default_factory=list)


# -- queries -----------------------------------------------------------------------------

Conn = psycopg.AsyncConnection[Any]


async def tenants_with_memories(conn: Conn, after: str | None, limit: int) -> list[str]:
    """Ids of tenants that have memories, in order, after `after`."""
    cur = await conn.execute(
        """
        SELECT t.id FROM tenants t
        WHERE (%(after)s::text IS NULL OR t.id > %(after)s)
          AND EXISTS (SELECT 1 FROM memories m WHERE m.tenant_id = t.id)
        ORDER BY t.id LIMIT %(limit)s
        """,
        {"after": after, "limit": limit},
    )
    return [str(row["id"]) for row in await cur.fetchall()]


async def retention_days(conn: Conn, tenant_id: str) -> int | None:
    """The tenant's memory retention in days (None: keep forever, or no such tenant)."""
    cur = await conn.execute(
        "SELECT memory_retention_days FROM tenants WHERE id = %s", (tenant_id,)
    )
    row = await cur.fetchone()
    value = None if row is None else row["memory_retention_days"]
    return None if value is None else int(value)


async def expired_memory_ids(
    conn: Conn, tenant_id: str, older_than: datetime, limit: int
) -> list[str]:
    """Ids of the tenant's memories created before `older_than`, oldest first."""
    cur = await conn.execute(
        """
        SELECT id::text AS id FROM memories
        WHERE tenant_id = %s AND created_at < %s
        ORDER BY created_at, id LIMIT %s
        """,
        (tenant_id, older_than, limit),
    )
    return [str(row["id"]) for row in await cur.fetchall()]


async def skill_candidates(conn: Conn, tenant_id: str, per_agent: int) -> list[dict[str, Any]]:
    """The tenant's episodes that may become skills, per agent, newest first.

    A candidate succeeded, is rated `RATING_FLOOR` or better or not at all (the rating of
    the run's feedback wins over the one in the metadata), and no skill consumed it yet.
    Rows: id, agent_name, content, metadata, created_at.
    """
    cur = await conn.execute(
        """
        SELECT id, agent_name, content, metadata, created_at FROM (
            SELECT m.id::text AS id, m.agent_name, m.content, m.metadata, m.created_at,
                   row_number() OVER (
                       PARTITION BY m.agent_name ORDER BY m.created_at DESC, m.id
                   ) AS n
            FROM memories m
            LEFT JOIN run_feedback f
                   ON f.run_id = m.source_run_id AND f.tenant_id = m.tenant_id
            WHERE m.tenant_id = %(tenant)s AND m.kind = 'episode' AND NOT m.retired
              AND m.metadata->>'outcome' = 'succeeded'
              AND NOT (m.metadata ? %(consumed)s)
              AND COALESCE(
                    f.rating::numeric,
                    CASE WHEN jsonb_typeof(m.metadata->'rating') = 'number'
                         THEN (m.metadata->>'rating')::numeric END,
                    %(floor)s
                  ) >= %(floor)s
        ) ranked
        WHERE n <= %(per_agent)s
        ORDER BY agent_name, created_at DESC, id
        """,
        {
            "tenant": tenant_id,
            "consumed": CONSUMED_BY,
            "floor": RATING_FLOOR,
            "per_agent": per_agent,
        },
    )
    return [dict(row) for row in await cur.fetchall()]


async def agent_models(conn: Conn, tenant_id: str, names: list[str]) -> dict[str, str]:
    """The model of each named agent's latest version (agents that no longer exist: absent)."""
    if not names:
        return {}
    cur = await conn.execute(
        """
        SELECT a.name, v.spec->>'model' AS model
        FROM agents a JOIN agent_versions v
          ON v.tenant_id = a.tenant_id AND v.agent_name = a.name
         AND v.version = a.latest_version
        WHERE a.tenant_id = %s AND a.name = ANY(%s)
        """,
        (tenant_id, names),
    )
    return {str(row["name"]): str(row["model"]) for row in await cur.fetchall() if row["model"]}


async def mark_consumed(conn: Conn, tenant_id: str, episode_ids: list[str], skill_id: str) -> int:
    """Record on each episode that `skill_id` was distilled from it; returns rows updated."""
    cur = await conn.execute(
        """
        UPDATE memories
        SET metadata = metadata || jsonb_build_object(%s::text, %s::text), updated_at = now()
        WHERE tenant_id = %s AND kind = 'episode' AND id = ANY(%s::uuid[])
        """,
        (CONSUMED_BY, skill_id, tenant_id, episode_ids),
    )
    return cur.rowcount


async def failing_skill_ids(conn: Conn, tenant_id: str, min_uses: int, below: float) -> list[str]:
    """Ids of live skills used at least `min_uses` times with a success rate below `below`."""
    cur = await conn.execute(
        """
        SELECT id::text AS id FROM memories
        WHERE tenant_id = %s AND kind = 'skill' AND NOT retired
          AND uses >= %s AND successes::float8 / uses < %s
        ORDER BY id
        """,
        (tenant_id, min_uses, below),
    )
    return [str(row["id"]) for row in await cur.fetchall()]


async def retire_skills(conn: Conn, tenant_id: str, ids: list[str]) -> list[str]:
    """Mark skills retired; returns the ids that were live until now."""
    if not ids:
        return []
    cur = await conn.execute(
        """
        UPDATE memories SET retired = true, updated_at = now()
        WHERE tenant_id = %s AND kind = 'skill' AND id = ANY(%s::uuid[]) AND NOT retired
        RETURNING id::text AS id
        """,
        (tenant_id, ids),
    )
    return sorted(str(row["id"]) for row in await cur.fetchall())
