"""Semantic tool search: tool descriptions embedded into Qdrant and ranked against a query.

One activity, `search_tools`, on the memory lane (the only process that may open the
embedded Qdrant). `GET /v1/tools/search` (through `ToolSearchWorkflow`) and an agent's
`find_tools` meta-tool both call it.

The index is the collection `colony_tools`: one point per (tenant, tool), built-ins
under the tenant `*` (they are the same code for every tenant), registered tools under
their tenant, with payload {tenant_id, name, kind, hash}. It is derived data, kept in
step lazily: before each search the tenant's enabled tools in Postgres are compared with
its points, new or changed tools (by a hash of the embedded text and the model) are
embedded, and points of deleted or disabled tools removed. So no write path has to
remember the index, and a lost index rebuilds itself.

Ranking is the cosine similarity of the query with each tool's name, description and
parameter names, plus a boost when the query contains the tool's name as a phrase
("speech to text" finds `speech_to_text` before `text_to_speech`, which embeddings alone
cannot tell apart). A boost for single shared words was tried and dropped: it ranked
`text_to_speech` first for "text my mom" and lost more than it won on the test catalog.
"""

import asyncio
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.memory.vectors import (
    TENANT_FIELD,
    Embedder,
    VectorPoint,
    VectorRecord,
    VectorStore,
    VectorStoreError,
)
from activities.memory.vectors import point_id as make_point_id
from activities.providers.embeddings import DIMENSION, MODEL_ID
from core.db import Pool
from core.errors import ConfigError, ErrorType
from core.payloads import ToolSchema
from core.settings import Settings
from core.tools import store as tool_store
from core.tools.names import FIND_TOOLS, WORKFLOW_TOOLS
from core.tools.search import ToolHit, ToolSearchInput, ToolSearchOutput, clip
from core.tools.spec import MCP_TOOL_PREFIX

COLLECTION: Final = "colony_tools"
BUILTIN_TENANT: Final = "*"
"""The tenant built-in tools are indexed under; every search includes it."""
NAME_BOOST: Final = 0.25
"""Added to the cosine score of a tool whose name the query contains (see `name_boost`)."""
NOT_INDEXED: Final = frozenset({FIND_TOOLS})
"""The search tool itself is never an answer to a search (its description's example,
'convert time zones', would otherwise rank it above `get_time`)."""
EMBED_BATCH: Final = 64
MIN_CANDIDATES: Final = 40
"""Nearest points fetched before the name boost re-ranks them."""

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True)
class ToolDoc:
    """A tool as indexed: where its point lives, what is embedded, and its hash."""

    tenant_id: str  # the tenant, or BUILTIN_TENANT
    name: str
    kind: str
    description: str
    text: str
    hash: str

    @property
    def point_id(self) -> str:
        """Deterministic: re-indexing a tool overwrites its point."""
        return make_point_id(self.tenant_id, self.name)


def words(text: str) -> list[str]:
    """Lower-case words of `text` (snake_case, kebab-case, camelCase and `mcp:a/b` split)."""
    return _WORD.findall(_CAMEL.sub(" ", text).lower())


def tool_text(name: str, description: str, parameters: dict[str, Any]) -> str:
    """What is embedded for a tool: its name as words, description and parameter names."""
    label = " ".join(words(name.removeprefix(MCP_TOOL_PREFIX)))
    text = f"{label}: {' '.join(description.split())}"
    properties = parameters.get("properties")
    if isinstance(properties, dict) and properties:
        params = ", ".join(" ".join(words(str(p))) for p in list(properties)[:20])
        text += f" (parameters: {params})"
    return text


def tool_doc(
    tenant_id: str, name: str, kind: str, description: str, parameters: dict[str, Any]
) -> ToolDoc:
    """The index entry of one tool."""
    text = tool_text(name, description, parameters)
    digest = hashlib.sha256(f"{MODEL_ID}\n{kind}\n{text}".encode()).hexdigest()[:32]
    return ToolDoc(tenant_id, name, kind, description, text, digest)


def name_boost(query: str, name: str) -> float:
    """`NAME_BOOST` when the query holds the tool's name as a phrase, else 0.

    Words are compared in order, ignoring case and separators: "Speech to text" names
    `speech_to_text`; an MCP tool is also named by its remote name alone ("create
    issue" names `mcp:github/create_issue`).
    """
    asked = f" {' '.join(words(query))} "
    full = name.removeprefix(MCP_TOOL_PREFIX)
    for candidate in {full, full.rpartition("/")[2]}:
        phrase = " ".join(words(candidate))
        if phrase and f" {phrase} " in asked:
            return NAME_BOOST
    return 0.0


class ToolSearchActivities:
    """The `search_tools` activity and the index it keeps.

    Args:
        settings: process settings.
        pool: Postgres, for the tenant's registered tools.
        vectors: the vector store (see `activities/memory/vectors.py`).
        embedder: turns texts into unit vectors of `DIMENSION` dimensions.
        builtin_schemas: the built-in tools of this worker, as models see them.
    """

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        vectors: VectorStore,
        embedder: Embedder,
        builtin_schemas: Callable[[], list[ToolSchema]],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._vectors = vectors
        self._embedder = embedder
        self._builtin_schemas = builtin_schemas
        # One index update per tenant at a time in this process: no tool embedded twice.
        self._sync_locks: dict[str, asyncio.Lock] = {}

    @activity.defn(name="search_tools")
    async def search_tools(self, input: ToolSearchInput) -> ToolSearchOutput:
        """Rank the tenant's enabled tools and the built-ins by relevance to `input.query`.

        Brings the tenant's index up to date first (see the module docstring). Qdrant or
        embedding failures are retryable `DependencyUnavailable` errors; configuration
        errors (model files missing, a collection made for another model) are not.
        """
        try:
            # The query is embedded while the index is brought up to date.
            (docs, (embedded, removed)), query = await asyncio.gather(
                self._update(input.tenant_id),
                asyncio.to_thread(self._embedder.embed, [input.query]),
            )
            hits = await self._rank(input, query[0], docs)
        except VectorStoreError as exc:
            raise ApplicationError(str(exc), type=ErrorType.DEPENDENCY_UNAVAILABLE) from exc
        except ConfigError as exc:
            raise ApplicationError(
                exc.message, type=ErrorType.DEPENDENCY_UNAVAILABLE, non_retryable=True
            ) from exc
        return ToolSearchOutput(hits=hits, embedded=embedded, removed=removed)

    async def _update(self, tenant_id: str) -> tuple[dict[str, ToolDoc], tuple[int, int]]:
        docs = await self._documents(tenant_id)
        return docs, await self._sync(tenant_id, docs)

    async def _documents(self, tenant_id: str) -> dict[str, ToolDoc]:
        """Every searchable tool of the tenant by point id: built-ins and enabled tools."""
        docs = [
            tool_doc(BUILTIN_TENANT, s.name, _builtin_kind(s.name), s.description, s.parameters)
            for s in self._builtin_schemas()
            if s.name not in NOT_INDEXED
        ]
        async with self._pool.connection() as conn:
            stored = await tool_store.list_tools(conn, tenant_id)
        docs += [
            tool_doc(tenant_id, tool.name, tool.kind, tool.description, tool.input_schema)
            for tool in stored
            if tool.enabled
        ]
        return {doc.point_id: doc for doc in docs}

    async def _sync(self, tenant_id: str, docs: dict[str, ToolDoc]) -> tuple[int, int]:
        """Make the points of the tenant and the built-ins match `docs`.

        Returns how many tools were embedded and how many points removed.
        """
        async with self._sync_locks.setdefault(tenant_id, asyncio.Lock()):
            await asyncio.to_thread(
                self._vectors.ensure_collection, COLLECTION, DIMENSION, keyword_fields=["name"]
            )
            indexed = await asyncio.to_thread(
                self._vectors.scroll,
                COLLECTION,
                tenant_id=[tenant_id, BUILTIN_TENANT],
                fields=["hash"],
            )
            have = {record.id: record.payload.get("hash") for record in indexed}
            stale = [doc for pid, doc in docs.items() if have.get(pid) != doc.hash]
            stale.sort(key=lambda doc: len(doc.text))  # batches pad to their longest text
            gone = [pid for pid in have if pid not in docs]
            for start in range(0, len(stale), EMBED_BATCH):
                batch = stale[start : start + EMBED_BATCH]
                vectors = await asyncio.to_thread(self._embedder.embed, [d.text for d in batch])
                points = [
                    VectorPoint(doc.point_id, vector, _payload(doc))
                    for doc, vector in zip(batch, vectors, strict=True)
                ]
                await asyncio.to_thread(self._vectors.upsert, COLLECTION, points)
                _heartbeat(start + len(batch), len(stale))
            await asyncio.to_thread(self._vectors.delete, COLLECTION, gone)
        return len(stale), len(gone)

    async def _rank(
        self, input: ToolSearchInput, query: np.ndarray, docs: dict[str, ToolDoc]
    ) -> list[ToolHit]:
        allowed = list(docs.values())
        where: dict[str, Sequence[str]] = {}
        if input.names is not None:
            wanted = set(input.names)
            allowed = [doc for doc in allowed if doc.name in wanted]
            if not allowed:
                return []
            where["name"] = sorted(doc.name for doc in allowed)
        found = await self._nearest(
            input.tenant_id, query, where, max(input.limit * 4, MIN_CANDIDATES)
        )
        # Tools the query names get their boost even when they are not among the nearest.
        named = {doc.name for doc in allowed if name_boost(input.query, doc.name)}
        missing = named - {docs[r.id].name for r in found if r.id in docs}
        if missing:
            found += await self._nearest(
                input.tenant_id, query, {"name": sorted(missing)}, len(missing)
            )
        scored: list[tuple[float, ToolDoc]] = []
        for record in found:
            doc = docs.get(record.id)
            if doc is None:  # indexed by a concurrent call for a tool we no longer see
                continue
            scored.append((record.score + name_boost(input.query, doc.name), doc))
        scored.sort(key=lambda pair: (-pair[0], pair[1].name))
        return [
            ToolHit(
                name=doc.name,
                description=clip(doc.description),
                score=round(score, 4),
                kind=doc.kind,
            )
            for score, doc in scored[: input.limit]
        ]

    async def _nearest(
        self, tenant_id: str, query: np.ndarray, where: dict[str, Sequence[str]], limit: int
    ) -> list[VectorRecord]:
        return await asyncio.to_thread(
            self._vectors.search,
            COLLECTION,
            query,
            tenant_id=[tenant_id, BUILTIN_TENANT],
            where=where,
            limit=limit,
        )


def _builtin_kind(name: str) -> str:
    return "workflow" if name in WORKFLOW_TOOLS else "builtin"


def _payload(doc: ToolDoc) -> dict[str, str]:
    return {TENANT_FIELD: doc.tenant_id, "name": doc.name, "kind": doc.kind, "hash": doc.hash}


def _heartbeat(done: int, total: int) -> None:
    if activity.in_activity():
        activity.heartbeat(f"embedded {done}/{total} tools")
