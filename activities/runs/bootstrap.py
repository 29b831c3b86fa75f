"""`draft_agent` on the memory lane: an agent spec drafted from what the tenant knows.

It needs the three things only the memory lane has: memory recall, tool search (both in
Qdrant) and the embedding model, to compare the tenant's agents with the objective. The
draft itself is `core.runs.bootstrap.draft`; this module gathers its evidence:

    lessons, skills  `MemoryStore.recall` as the new agent (by its name) would recall,
                     so the tenant's sharing mode applies exactly as it does to runs
    tools            `search_tools` over the built-ins and the tenant's enabled tools,
                     joined with the tenant's live `tool_stats`
    similar agents   the tenant's agents at their latest versions, "name: instructions"
                     embedded (vectors cached in process by text) and ranked by cosine

Every read is filtered by the tenant. Nothing is written.
"""

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import numpy as np
from temporalio import activity

from activities.memory.store import translated_errors
from activities.memory.vectors import Embedder
from activities.tools.search import words
from core import providers, tenants
from core.db import Pool
from core.memory.payloads import RecallInput, RecallOutput
from core.runs import agents
from core.runs import bootstrap as drafts
from core.runs.agents import AgentVersion
from core.runs.bootstrap import AgentEvidence, BootstrapEvidence, BootstrapInput, BootstrapOutput
from core.settings import Settings
from core.tools import store as tool_store
from core.tools.search import MAX_QUERY_CHARS, ToolSearchInput, ToolSearchOutput

CACHE_SIZE: Final = 4096
"""Agent text vectors kept in process (cleared when full)."""


class Recaller(Protocol):
    """What this module needs of `activities.memory.store.MemoryStore`."""

    async def recall(self, input: RecallInput) -> RecallOutput: ...  # noqa: D102


class BootstrapActivities:
    """Draft an agent from the tenant's lessons, skills, proven tools and similar agents.

    Args:
        settings: process settings (the default model of a draft without similar agents).
        pool: Postgres.
        memory: the memory store (recall).
        search_tools: the tool search (`ToolSearchActivities.search_tools`).
        embedder: the embedding model that compares agents with the objective.
    """

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        memory: Recaller,
        search_tools: Callable[[ToolSearchInput], Awaitable[ToolSearchOutput]],
        embedder: Embedder,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._memory = memory
        self._search_tools = search_tools
        self._embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}

    @activity.defn(name="draft_agent")
    async def draft_agent(self, input: BootstrapInput) -> BootstrapOutput:
        """Gather the evidence for `input.objective` and draft a spec (nothing is stored)."""
        with translated_errors():
            return await self._draft(input)

    async def _draft(self, input: BootstrapInput) -> BootstrapOutput:
        objective = " ".join(input.objective.split())
        async with self._pool.connection() as conn:
            existing = await agents.list_agents(conn, input.tenant_id)
            sharing = await tenants.get_sharing(conn, input.tenant_id)
        names = {a.name for a in existing}
        name = input.name or drafts.draft_name(objective, names)
        recalled, found, similar = await asyncio.gather(
            self._memory.recall(
                RecallInput(
                    tenant_id=input.tenant_id,
                    query=objective,
                    agent_name=name,
                    kinds=["reflexion", "skill"],
                    limit=drafts.MAX_LESSONS + drafts.MAX_SKILLS,
                    min_score=drafts.MIN_MEMORY_SIMILARITY,
                )
            ),
            self._search_tools(
                ToolSearchInput(
                    tenant_id=input.tenant_id,
                    query=objective[:MAX_QUERY_CHARS],
                    limit=drafts.TOOL_CANDIDATES,
                )
            ),
            self._similar(objective, existing),
        )
        async with self._pool.connection() as conn:
            stats = await tool_store.tool_stats(
                conn, input.tenant_id, [hit.name for hit in found.hits]
            )
        lessons, skills = drafts.memory_evidence(recalled.hits)
        evidence = BootstrapEvidence(
            lessons=lessons,
            skills=skills,
            tools=drafts.tool_evidence(found.hits, stats),
            similar_agents=similar,
            sharing=sharing,
        )
        return drafts.draft(
            name,
            objective,
            evidence,
            default_model=providers.default_model(self._settings),
            exists=name in names,
        )

    async def _similar(
        self, objective: str, existing: Sequence[AgentVersion]
    ) -> list[AgentEvidence]:
        """The agents closest to the objective by cosine, at most `MAX_SIMILAR_AGENTS`."""
        compared = list(existing)[: drafts.MAX_AGENTS_COMPARED]
        if not compared:
            return []
        texts = [_agent_text(a) for a in compared]
        query, *vectors = await asyncio.to_thread(self._embed_cached, [objective, *texts])
        scored = sorted(
            ((float(np.dot(query, v)), a) for v, a in zip(vectors, compared, strict=True)),
            key=lambda pair: (-pair[0], pair[1].name),
        )
        return [
            AgentEvidence(
                name=a.name,
                version=a.version,
                model=a.spec.model,
                similarity=round(score, 4),
                instructions=a.spec.instructions[: drafts.EXCERPT_CHARS],
            )
            for score, a in scored[: drafts.MAX_SIMILAR_AGENTS]
            if score >= drafts.MIN_AGENT_SIMILARITY
        ]

    def _embed_cached(self, texts: list[str]) -> list[np.ndarray]:
        """Vectors of `texts`; agents' texts are cached, so only changed agents re-embed."""
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing = [i for i, k in enumerate(keys) if k not in self._vectors]
        if missing:
            embedded = self._embedder.embed([texts[i] for i in missing])
            if len(self._vectors) + len(missing) > CACHE_SIZE:
                self._vectors.clear()
            for i, vector in zip(missing, embedded, strict=True):
                self._vectors[keys[i]] = vector
        return [self._vectors[k] for k in keys]


def _agent_text(agent: AgentVersion) -> str:
    """What is compared with the objective: the name as words and the instructions' start."""
    instructions = " ".join(agent.spec.instructions.split())[: drafts.AGENT_TEXT_CHARS]
    return f"{' '.join(words(agent.name))}: {instructions}"
