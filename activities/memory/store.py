"""Long-term memory: Qdrant vectors plus Postgres rows, behind one class, on the memory lane.

`MemoryStore` is the one implementation; other memory-lane activities (a run's recall,
the maintenance workflow's) use it directly, and `MemoryStoreActivities` exposes it as
`write_memories`, `recall_memories`, `delete_memories` and `record_skill_use`.

Where things live:

    Postgres  `memories`: content, provenance, counters, retired flag, and the model the
              vector was made with (`embedding_model`); see core/memory/store.py
    Qdrant    one collection per embedding model, `colony_memories_<model slug>` (the
              MiniLM default: `colony_memories_all_minilm_l6_v2_onnx_int8`, 384
              dimensions, cosine). The name records the model and the collection its
              dimension, so a new model never mixes its vectors with the old ones'. Point
              id = row id; payload {tenant_id, agent_name, kind, scope, retired,
              source_run_id, created_at (epoch seconds)} with payload indexes on a server
              (tenant_id as Qdrant's tenant index). No content: it stays in Postgres.

Writes mask secrets and personal data first (`core.redact`), then embed in batches (in a
thread), upsert the vectors, then insert the rows. Ids are uuid5(tenant, key): a retried
write finds its rows and adds nothing; a write whose vectors were stored but whose rows
were not (Postgres failed) re-embeds and overwrites the same points on retry. Deletes
remove vectors before rows, so a retried delete still finds what it has to remove.

Changing the model (`model_id`) makes the current collection another one. Recall then
sees only memories re-embedded into it: `reembed` moves a tenant's memories batch by
batch (the maintenance workflow's job), deleting their old points.
"""

import asyncio
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.memory.vectors import (
    TENANT_FIELD,
    Embedder,
    IndexKind,
    Match,
    Range,
    VectorPoint,
    VectorStore,
    VectorStoreError,
)
from activities.memory.vectors import point_id as make_point_id
from activities.providers.embeddings import DIMENSION, MODEL_ID
from core import tenants, tracing
from core.db import Pool
from core.errors import ColonyError, ConfigError, ErrorType, InvalidInput
from core.memory import store as rows
from core.memory.payloads import (
    DeleteMemoriesInput,
    DeleteMemoriesOutput,
    MemoryItem,
    RecallInput,
    RecallOutput,
    SkillUse,
    WriteMemoriesInput,
    WriteMemoriesOutput,
)
from core.memory.store import MemoryRecord, NewMemory
from core.redact import mask_sensitive
from core.settings import Settings

COLLECTION_PREFIX: Final = "colony_memories"
EMBED_BATCH: Final = 64
"""Texts per embedding call (and per Qdrant upsert)."""
EXTRA_CANDIDATES: Final = 8
"""Nearest points fetched beyond `limit`, so hits whose row is gone can be dropped."""
PAYLOAD_INDEXES: Final[dict[str, IndexKind]] = {
    "agent_name": "keyword",
    "kind": "keyword",
    "scope": "keyword",
    "retired": "bool",
    "source_run_id": "keyword",
    "created_at": "float",
}


def collection_for(model_id: str) -> str:
    """The Qdrant collection of memories embedded by `model_id`."""
    slug = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")
    return f"{COLLECTION_PREFIX}_{slug}"


def memory_id(tenant_id: str, key: str) -> str:
    """The id of the tenant's memory `key`: uuid5, so a retried write finds its row."""
    return make_point_id(tenant_id, key)


def mask_value(value: Any) -> Any:
    """`value` with every string in it (nested in lists and dicts) masked."""
    if isinstance(value, str):
        return mask_sensitive(value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item) for item in value]
    return value


def _payload(tenant_id: str, memory: NewMemory | MemoryRecord, retired: bool) -> dict[str, Any]:
    return {
        TENANT_FIELD: tenant_id,
        "agent_name": memory.agent_name,
        "kind": memory.kind,
        "scope": memory.scope,
        "retired": retired,
        "source_run_id": memory.source_run_id,
        "created_at": memory.created_at.timestamp(),
    }


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class MemoryStore:
    """Write, recall, delete and re-embed a tenant's long-term memories.

    Args:
        settings: process settings.
        pool: Postgres.
        vectors: the vector store (opened lazily; see `activities/memory/vectors.py`).
        embedder: turns texts into unit vectors of `dimension` dimensions; any model
            (a provider's embeddings API too) with its own `model_id`.
        model_id: recorded on each row and naming the collection.
        dimension: of the embedder's vectors.

    Building one does no I/O. Every method is async and runs blocking work (embedding,
    local-mode Qdrant) in threads.
    """

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        vectors: VectorStore,
        embedder: Embedder,
        *,
        model_id: str = MODEL_ID,
        dimension: int = DIMENSION,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._vectors = vectors
        self._embedder = embedder
        self.model_id = model_id
        self.dimension = dimension
        self.collection = collection_for(model_id)

    @tracing.memory_operation("write")
    async def write(self, input: WriteMemoriesInput) -> WriteMemoriesOutput:
        """Store the items that are not stored yet; returns every item's id, in order.

        Content and metadata are masked (`core.redact`) before anything is embedded or
        stored. Items whose key the tenant already has are skipped, as are repeats of a
        key within `input` (the first wins).

        Raises:
            VectorStoreError: Qdrant failed (retry).
            psycopg.errors.ForeignKeyViolation: unknown tenant or source run.
        """
        ids = [memory_id(input.tenant_id, item.key) for item in input.items]
        unique: dict[str, MemoryItem] = {}
        for mid, item in zip(ids, input.items, strict=True):
            unique.setdefault(mid, item)  # the first occurrence of a key wins
        if not unique:
            return WriteMemoriesOutput(ids=[], written=0)
        async with self._pool.connection() as conn:
            stored = await rows.existing_ids(conn, input.tenant_id, list(unique))
        now = datetime.now(UTC)
        todo = [self._masked(mid, item, now) for mid, item in unique.items() if mid not in stored]
        if not todo:
            return WriteMemoriesOutput(ids=ids, written=0)
        await self._ensure_collection()
        await self._embed_and_upsert(input.tenant_id, todo, retired=lambda _: False)
        async with self._pool.connection() as conn:
            inserted = await rows.insert_memories(conn, input.tenant_id, todo, self.model_id)
        return WriteMemoriesOutput(ids=ids, written=len(inserted))

    @tracing.memory_operation("recall")
    async def recall(self, input: RecallInput) -> RecallOutput:
        """The tenant's memories nearest in meaning to `input.query`, best first.

        Filtered in Qdrant by tenant, kinds, retired (unless `include_retired`) and, with
        `agent_name`, to that agent's memories plus shared ones, or to its own alone when
        the tenant's sharing mode is `isolated` (`core.tenants.SharingMode`); then joined
        with their rows (a hit whose row is gone is dropped) and cut to `min_score` and
        `limit`.

        Raises:
            VectorStoreError: Qdrant failed (retry).
        """
        query = mask_sensitive(input.query)
        (vector,), isolated = await asyncio.gather(
            asyncio.to_thread(self._embedder.embed, [query]), self._isolated(input)
        )
        await self._ensure_collection()
        where: dict[str, Match] = {}
        if input.kinds is not None:
            if not input.kinds:
                return RecallOutput(hits=[])
            where["kind"] = list(dict.fromkeys(input.kinds))
        if not input.include_retired:
            where["retired"] = False
        any_of: dict[str, Match] | None = None
        if input.agent_name is not None and isolated:
            where["agent_name"] = input.agent_name
        elif input.agent_name is not None:
            any_of = {"agent_name": input.agent_name, "scope": "shared"}
        found = await asyncio.to_thread(
            self._vectors.search,
            self.collection,
            vector,
            tenant_id=input.tenant_id,
            where=where,
            any_of=any_of,
            limit=input.limit + EXTRA_CANDIDATES,
            fields=["kind"],
        )
        found = [record for record in found if record.score >= input.min_score]
        async with self._pool.connection() as conn:
            records = await rows.get_memories(conn, input.tenant_id, [r.id for r in found])
        hits = []
        for record in found:
            row = records.get(record.id)
            if row is None or not _visible(row, input, isolated):
                continue  # deleted (or retired) since the vector was last written
            hits.append(row.hit(record.score))
        return RecallOutput(hits=hits[: input.limit])

    @tracing.memory_operation("delete")
    async def delete(self, input: DeleteMemoriesInput) -> DeleteMemoriesOutput:
        """Delete the tenant's memories matching every filter given: vectors, then rows.

        Raises:
            InvalidInput: no filter besides the tenant.
            VectorStoreError: Qdrant failed (retry: rows not deleted yet are found again).
        """
        filters = (input.agent_name, input.source_run_id, input.ids, input.kinds, input.older_than)
        if all(f is None for f in filters):
            raise InvalidInput(
                "deleting memories needs a filter (agent, run, ids, kinds or age); "
                "to delete all of a tenant's memories, name every kind"
            )
        if input.ids is not None:
            input = input.model_copy(update={"ids": [i for i in input.ids if _is_uuid(i)]})
        if input.ids == [] or input.kinds == []:
            return DeleteMemoriesOutput(deleted=0)
        async with self._pool.connection() as conn:
            matched = await rows.matching(conn, input)
        await self._delete_vectors(matched)
        if input.ids is None and await asyncio.to_thread(
            self._vectors.collection_exists, self.collection
        ):
            # Points written without a row (a write that never finished) go too.
            await asyncio.to_thread(
                self._vectors.delete_where,
                self.collection,
                tenant_id=input.tenant_id,
                where=_point_filter(input),
            )
        async with self._pool.connection() as conn:
            deleted = await rows.delete_by_ids(conn, input.tenant_id, [mid for mid, _ in matched])
        return DeleteMemoriesOutput(deleted=len(deleted))

    async def reembed(self, tenant_id: str, limit: int = 256) -> int:
        """Re-embed up to `limit` of the tenant's memories made by another model.

        Their vectors go into the current collection, their rows record the current
        model, and their old points are deleted. Returns how many were re-embedded (a
        concurrent re-embed of the same rows counts here too); call again until it
        returns 0 (the maintenance workflow does, per tenant:
        `core.memory.store.tenants_with_stale_embeddings` lists the tenants).

        Raises:
            VectorStoreError: Qdrant failed (retry; nothing is lost, the rows still
                name the old model until their new vectors are stored).
        """
        async with self._pool.connection() as conn:
            stale = await rows.stale_embeddings(conn, tenant_id, self.model_id, limit)
        if not stale:
            return 0
        await self._ensure_collection()
        await self._embed_and_upsert(tenant_id, stale, retired=lambda row: row.retired)
        async with self._pool.connection() as conn:
            for old_model, ids in _by_model((row.id, row.embedding_model) for row in stale).items():
                await rows.set_embedding_model(conn, tenant_id, ids, self.model_id, was=old_model)
        await self._delete_vectors([(row.id, row.embedding_model) for row in stale])
        return len(stale)

    async def record_skill_use(self, input: SkillUse) -> None:
        """Count a use (and a success) of each skill for the run; once per (skill, run)."""
        ids = [i for i in input.skill_ids if _is_uuid(i)]
        async with self._pool.connection() as conn:
            await rows.record_skill_use(conn, input.tenant_id, ids, input.run_id, input.succeeded)

    async def set_retired(self, tenant_id: str, ids: Sequence[str], retired: bool = True) -> int:
        """Retire (or restore) memories: recall skips retired ones unless asked.

        Returns how many of the tenant's memories were found.
        """
        changed: list[MemoryRecord] = []
        async with self._pool.connection() as conn:
            for mid in ids:
                if _is_uuid(mid):
                    row = await rows.update_memory(conn, tenant_id, mid, retired=retired)
                    changed += [row] if row else []
        for model, of_model in _by_model((r.id, r.embedding_model) for r in changed).items():
            name = collection_for(model)
            if name == self.collection or await asyncio.to_thread(
                self._vectors.collection_exists, name
            ):
                await asyncio.to_thread(
                    self._vectors.set_payload, name, of_model, {"retired": retired}
                )
        return len(changed)

    # -- internals -------------------------------------------------------------------

    async def _isolated(self, input: RecallInput) -> bool:
        """Whether an agent's recall is cut to its own memories (the tenant is isolated)."""
        if input.agent_name is None:
            return False
        async with self._pool.connection() as conn:
            return await tenants.get_sharing(conn, input.tenant_id) == "isolated"

    def _masked(self, mid: str, item: MemoryItem, now: datetime) -> NewMemory:
        return NewMemory(
            id=mid,
            key=item.key,
            agent_name=item.agent_name,
            kind=item.kind,
            scope=item.scope,
            content=mask_sensitive(item.content),
            metadata=mask_value(item.metadata),
            source_run_id=item.source_run_id,
            reward=item.reward,
            created_at=now,
        )

    async def _ensure_collection(self) -> None:
        await asyncio.to_thread(
            self._vectors.ensure_collection,
            self.collection,
            self.dimension,
            indexes=PAYLOAD_INDEXES,
        )

    async def _embed_and_upsert(
        self,
        tenant_id: str,
        memories: Sequence[NewMemory | MemoryRecord],
        *,
        retired: Callable[[Any], bool],
    ) -> None:
        """Embed `memories` (NewMemory or MemoryRecord) in batches and upsert their points."""
        ordered: list[NewMemory | MemoryRecord] = sorted(
            memories, key=lambda m: len(m.content)
        )  # batches pad to their longest
        for start in range(0, len(ordered), EMBED_BATCH):
            batch = ordered[start : start + EMBED_BATCH]
            vectors = await asyncio.to_thread(self._embedder.embed, [m.content for m in batch])
            if vectors.shape[1] != self.dimension:
                raise ConfigError(
                    f"the embedding model {self.model_id!r} returned {vectors.shape[1]} "
                    f"dimensions, not {self.dimension}"
                )
            points = [
                VectorPoint(m.id, vector, _payload(tenant_id, m, retired(m)))
                for m, vector in zip(batch, vectors, strict=True)
            ]
            await asyncio.to_thread(self._vectors.upsert, self.collection, points)
            if activity.in_activity():
                activity.heartbeat(f"embedded {start + len(batch)}/{len(ordered)} memories")

    async def _delete_vectors(self, refs: Sequence[tuple[str, str]]) -> None:
        """Delete points by (id, embedding model): each from its model's collection."""
        for model, ids in _by_model(refs).items():
            name = collection_for(model)
            if name != self.collection and not await asyncio.to_thread(
                self._vectors.collection_exists, name
            ):
                continue
            await asyncio.to_thread(self._vectors.delete, name, ids)


def _by_model(refs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for mid, model in refs:
        grouped.setdefault(model, []).append(mid)
    return grouped


def _visible(row: MemoryRecord, input: RecallInput, isolated: bool) -> bool:
    """The row-side check of what the Qdrant filter asked (payloads may lag a retire)."""
    if row.retired and not input.include_retired:
        return False
    if input.kinds is not None and row.kind not in input.kinds:
        return False
    if input.agent_name is None or row.agent_name == input.agent_name:
        return True
    return row.scope == "shared" and not isolated


def _point_filter(input: DeleteMemoriesInput) -> dict[str, Match]:
    where: dict[str, Match] = {}
    if input.agent_name is not None:
        where["agent_name"] = input.agent_name
    if input.source_run_id is not None:
        where["source_run_id"] = input.source_run_id
    if input.kinds is not None:
        where["kind"] = list(input.kinds)
    if input.older_than is not None:
        where["created_at"] = Range(lt=input.older_than.timestamp())
    return where


@contextmanager
def translated_errors() -> Iterator[None]:
    """Errors as Temporal should see them: Qdrant or Postgres down retry, bad input not."""
    try:
        yield
    except VectorStoreError as exc:
        raise ApplicationError(str(exc), type=ErrorType.DEPENDENCY_UNAVAILABLE) from exc
    except psycopg.OperationalError as exc:
        raise ApplicationError(
            f"Postgres is unavailable: {exc}", type=ErrorType.DEPENDENCY_UNAVAILABLE
        ) from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        raise ApplicationError(
            "the tenant or a memory's source run does not exist",
            type=ErrorType.INVALID_REQUEST,
            non_retryable=True,
        ) from exc
    except ConfigError as exc:
        raise ApplicationError(
            exc.message, type=ErrorType.DEPENDENCY_UNAVAILABLE, non_retryable=True
        ) from exc
    except ColonyError as exc:
        raise ApplicationError(
            exc.message, type=ErrorType.INVALID_REQUEST, non_retryable=True
        ) from exc


class MemoryStoreActivities:
    """The memory store's activities (memory lane)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    @activity.defn(name="write_memories")
    async def write_memories(self, input: WriteMemoriesInput) -> WriteMemoriesOutput:
        """Store memories (masked, embedded); idempotent per (tenant, key)."""
        with translated_errors():
            return await self._store.write(input)

    @activity.defn(name="recall_memories")
    async def recall_memories(self, input: RecallInput) -> RecallOutput:
        """The tenant's memories nearest in meaning to the query."""
        with translated_errors():
            return await self._store.recall(input)

    @activity.defn(name="delete_memories")
    async def delete_memories(self, input: DeleteMemoriesInput) -> DeleteMemoriesOutput:
        """Delete memories (vectors and rows) matching the filters; at least one needed."""
        with translated_errors():
            return await self._store.delete(input)

    @activity.defn(name="record_skill_use")
    async def record_skill_use(self, input: SkillUse) -> None:
        """Count a use (and a success) of each skill a run used; once per run."""
        with translated_errors():
            await self._store.record_skill_use(input)
