"""The memory lane's vector store: Qdrant as a server (`QDRANT_URL`) or in local mode.

Local mode, the embedded default, keeps its data in `$COLONY_DATA_DIR/qdrant` and
holds an exclusive file lock on it, so only one process may open it: that is why every
vector read and write runs as an activity on the memory lane. Within a process, stores
on the same path share one client. Local mode is brute force and not thread-safe, so
calls to it are serialised; a server takes calls in parallel.

Nothing is opened until the first call. Every call blocks (run them in a thread from
async code), and every read is filtered by tenant: `search` and `scroll` take the
tenant (or tenants) as a required argument.

Filters: `where` conditions must all hold (a value, a list of which any may match, or a
`Range` of numbers); `any_of` conditions add "at least one of these holds" (e.g. the
agent's own memories or shared ones).

Errors from Qdrant come out as `VectorStoreError`, worth retrying (a server restarting,
a local store another process still holds); a collection made for vectors of another
size is a `ConfigError`.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np

from core.errors import ConfigError
from core.settings import Settings

if TYPE_CHECKING:
    from qdrant_client import QdrantClient, models

TENANT_FIELD: Final = "tenant_id"
"""Payload field every point carries and every read filters on."""
MEMORY: Final = ":memory:"
"""A location for tests: local mode in memory, nothing on disk."""

_ID_NAMESPACE: Final = uuid.UUID("6f1d3c52-8a4b-4e55-9d7a-3c0b9e2f7a11")


@dataclass(frozen=True)
class Range:
    """A payload filter on a number: every bound given must hold."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


Match = str | int | bool | Sequence[str] | Sequence[int] | Range
"""A payload filter value: one value, a list of which any may match, or a `Range`."""
IndexKind = Literal["keyword", "bool", "float", "integer", "datetime"]
"""Payload index types `ensure_collection` can create on a server."""


class VectorStoreError(Exception):
    """Qdrant failed or cannot be reached; retrying may help."""


class Embedder(Protocol):
    """What vector users need from an embedding model."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 rows, one per text."""
        ...


class LazyEmbedder:
    """The local MiniLM embedder, loaded on first use (about 0.3 s) and shared by threads."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: Embedder | None = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch (see `MiniLmEmbedder.embed`)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from activities.embeddings import MiniLmEmbedder

                    self._model = MiniLmEmbedder(self._threads)
        return self._model.embed(texts)


def point_id(*parts: str) -> str:
    """A deterministic point id for a key (e.g. tenant and tool name): a UUIDv5 string."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(parts)))


@dataclass(frozen=True)
class VectorPoint:
    """A point to write: its id (see `point_id`), vector and payload (with `tenant_id`)."""

    id: str
    vector: Sequence[float] | np.ndarray
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class VectorRecord:
    """A point read back: its id, payload, and similarity score when searched."""

    id: str
    payload: dict[str, Any] = field(default_factory=dict)
    score: float = 0.0


@dataclass
class _Shared:
    client: QdrantClient
    lock: threading.RLock
    users: int = 0


_local_lock = threading.Lock()
_local: dict[str, _Shared] = {}  # by resolved path: one client per local store per process


class VectorStore:
    """Qdrant collections for one deployment.

    Args:
        location: an `http(s)://` URL of a server, a directory for local mode, or
            `":memory:"` (local mode without persistence; tests).
        api_key: the server's API key, if it needs one.
        timeout: seconds per server request.
    """

    def __init__(self, location: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.location = location
        self._remote = location.startswith(("http://", "https://"))
        self._api_key = api_key
        self._timeout = timeout
        self._open_lock = threading.Lock()
        self._client: QdrantClient | None = None
        self._lock: threading.RLock | None = None  # local mode only
        self._key: str | None = None
        self._collections: dict[str, int] = {}

    @property
    def local(self) -> bool:
        """Whether this is qdrant-client local mode (brute force, one process)."""
        return not self._remote

    def ensure_collection(
        self,
        name: str,
        dim: int,
        *,
        keyword_fields: Sequence[str] = (),
        indexes: Mapping[str, IndexKind] | None = None,
    ) -> None:
        """Create collection `name` (cosine, `dim` dimensions) unless it exists.

        On a server, `tenant_id` (a tenant index: Qdrant keeps each tenant's points
        together), `keyword_fields` and `indexes` get payload indexes, also added to an
        existing collection that lacks them (local mode has none). Checked once per
        process and collection.

        Raises:
            ConfigError: the collection exists with another dimension.
            VectorStoreError: Qdrant failed.
        """
        if self._collections.get(name) == dim:
            return
        from qdrant_client import models

        def ensure(client: QdrantClient) -> None:
            if not client.collection_exists(name):
                try:
                    client.create_collection(
                        name,
                        vectors_config=models.VectorParams(
                            size=dim, distance=models.Distance.COSINE
                        ),
                    )
                except Exception:
                    if not client.collection_exists(name):
                        raise  # else another worker created it first
            info = client.get_collection(name)
            if self._remote:
                wanted: dict[str, Any] = {
                    TENANT_FIELD: models.KeywordIndexParams(
                        type=models.KeywordIndexType.KEYWORD, is_tenant=True
                    )
                }
                wanted |= dict.fromkeys(keyword_fields, models.PayloadSchemaType.KEYWORD)
                wanted |= {
                    key: models.PayloadSchemaType(kind) for key, kind in (indexes or {}).items()
                }
                for key, schema in wanted.items():
                    if key not in (info.payload_schema or {}):
                        client.create_payload_index(name, key, schema, wait=True)
            params = info.config.params.vectors
            size = params.size if isinstance(params, models.VectorParams) else None
            if size != dim:
                raise ConfigError(
                    f"Qdrant collection {name!r} holds vectors of size {size}, not {dim}: "
                    "it was made for another embedding model; delete it to rebuild"
                )

        self._call(ensure)
        self._collections[name] = dim

    def upsert(self, collection: str, points: Sequence[VectorPoint], *, batch: int = 256) -> None:
        """Write points (replacing those with the same ids)."""
        from qdrant_client import models

        for start in range(0, len(points), batch):
            structs = [
                models.PointStruct(
                    id=p.id, vector=np.asarray(p.vector, dtype=np.float32).tolist(),
                    payload=dict(p.payload),
                )
                for p in points[start : start + batch]
            ]  # fmt: skip
            self._call("upsert", collection, structs, wait=True)

    def search(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray,
        *,
        tenant_id: str | Sequence[str],
        where: Mapping[str, Match] | None = None,
        any_of: Mapping[str, Match] | None = None,
        limit: int = 10,
        fields: Sequence[str] | None = None,
    ) -> list[VectorRecord]:
        """The `limit` points nearest to `vector` (cosine) among the tenant's, best first.

        `where` adds payload conditions (all must hold; a list matches any of its values);
        `any_of` conditions of which at least one must hold. `fields` limits the payload
        returned (default: all of it).
        """
        query = np.asarray(vector, dtype=np.float32).tolist()
        selector: bool | list[str] = list(fields) if fields is not None else True
        found = self._call(
            "query_points", collection, query=query,
            query_filter=_filter(tenant_id, where, any_of), limit=limit, with_payload=selector,
        )  # fmt: skip
        return [
            VectorRecord(str(p.id), dict(p.payload or {}), float(p.score)) for p in found.points
        ]

    def scroll(
        self,
        collection: str,
        *,
        tenant_id: str | Sequence[str],
        where: Mapping[str, Match] | None = None,
        any_of: Mapping[str, Match] | None = None,
        fields: Sequence[str] | None = None,
        page: int = 1000,
    ) -> list[VectorRecord]:
        """Every point of the tenant matching the filters (payload only: `fields`, or all)."""
        records: list[VectorRecord] = []
        offset: Any = None
        selector: bool | list[str] = list(fields) if fields is not None else True
        flt = _filter(tenant_id, where, any_of)
        while True:
            batch, offset = self._call(
                "scroll", collection, scroll_filter=flt, limit=page, offset=offset,
                with_payload=selector, with_vectors=False,
            )  # fmt: skip
            records += [VectorRecord(str(p.id), dict(p.payload or {})) for p in batch]
            if offset is None:
                return records

    def count(
        self,
        collection: str,
        *,
        tenant_id: str | Sequence[str],
        where: Mapping[str, Match] | None = None,
        any_of: Mapping[str, Match] | None = None,
    ) -> int:
        """How many points of the tenant match the filters (exact)."""
        result = self._call(
            "count", collection, count_filter=_filter(tenant_id, where, any_of), exact=True
        )
        return int(result.count)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove points by id (ids that do not exist are ignored)."""
        from qdrant_client import models

        if ids:
            selector = models.PointIdsList(points=list(ids))
            self._call("delete", collection, selector, wait=True)

    def delete_where(
        self,
        collection: str,
        *,
        tenant_id: str | Sequence[str],
        where: Mapping[str, Match] | None = None,
    ) -> None:
        """Remove every point of the tenant matching `where`."""
        from qdrant_client import models

        selector = models.FilterSelector(filter=_filter(tenant_id, where))
        self._call("delete", collection, selector, wait=True)

    def set_payload(self, collection: str, ids: Sequence[str], payload: Mapping[str, Any]) -> None:
        """Set payload fields of points by id (other fields are kept)."""
        if ids:
            self._call("set_payload", collection, dict(payload), points=list(ids), wait=True)

    def collection_exists(self, name: str) -> bool:
        """Whether collection `name` exists."""
        return bool(self._call("collection_exists", name))

    def close(self) -> None:
        """Release the client (a shared local store closes with its last user)."""
        with self._open_lock:
            client, key, lock = self._client, self._key, self._lock
            self._client, self._key, self._lock = None, None, None
            self._collections.clear()
            if client is None:
                return
            if key is not None:
                with _local_lock:
                    shared = _local[key]
                    shared.users -= 1
                    if shared.users > 0:
                        return
                    del _local[key]
            if lock is None:
                client.close()
            else:
                with lock:
                    client.close()

    # -- internals -------------------------------------------------------------------

    def _open(self) -> tuple[QdrantClient, threading.RLock | None]:
        with self._open_lock:
            if self._client is not None:
                return self._client, self._lock
            from qdrant_client import QdrantClient

            try:
                if self._remote:
                    self._client = QdrantClient(
                        url=self.location,
                        api_key=self._api_key,
                        timeout=int(self._timeout),
                        check_compatibility=False,  # it warns from a thread when down
                    )
                elif self.location == MEMORY:  # private to this store
                    self._client, self._lock = QdrantClient(location=MEMORY), threading.RLock()
                else:
                    key = str(Path(self.location).resolve())
                    with _local_lock:
                        shared = _local.get(key)
                        if shared is None:
                            Path(key).mkdir(parents=True, exist_ok=True)
                            client = QdrantClient(path=key)
                            shared = _local[key] = _Shared(client, threading.RLock())
                        shared.users += 1
                    self._key, self._lock, self._client = key, shared.lock, shared.client
            except Exception as exc:
                raise VectorStoreError(f"cannot open Qdrant at {self.location}: {exc}") from exc
            return self._client, self._lock

    def _call(self, fn: str | Callable[[QdrantClient], Any], *args: Any, **kwargs: Any) -> Any:
        """`client.<fn>(*args, **kwargs)`, or `fn(client)`, with errors translated."""
        client, lock = self._open()
        call = (
            functools.partial(getattr(client, fn), *args, **kwargs)
            if isinstance(fn, str)
            else (functools.partial(fn, client))
        )
        try:
            if lock is None:
                return call()
            with lock:
                return call()
        except (VectorStoreError, ConfigError):
            raise
        except Exception as exc:
            raise VectorStoreError(f"Qdrant at {self.location} failed: {exc}") from exc


def open_vector_store(settings: Settings) -> VectorStore:
    """The deployment's store: `QDRANT_URL`, else local mode in `$COLONY_DATA_DIR/qdrant`.

    Opens nothing yet; the first call does.
    """
    return VectorStore(settings.qdrant_url or str(settings.data_path / "qdrant"))


def _filter(
    tenant_id: str | Sequence[str],
    where: Mapping[str, Match] | None,
    any_of: Mapping[str, Match] | None = None,
) -> models.Filter:
    from qdrant_client import models

    conditions: list[Any] = [_condition(TENANT_FIELD, tenant_id)]
    conditions += [_condition(key, value) for key, value in (where or {}).items()]
    if any_of:
        either = [_condition(key, value) for key, value in any_of.items()]
        conditions.append(models.Filter(should=either))
    return models.Filter(must=conditions)


def _condition(key: str, value: Match) -> models.FieldCondition:
    from qdrant_client import models

    match: Any
    if isinstance(value, Range):
        bounds = models.Range(gt=value.gt, gte=value.gte, lt=value.lt, lte=value.lte)
        return models.FieldCondition(key=key, range=bounds)
    if isinstance(value, str | int | bool):
        match = models.MatchValue(value=value)
    else:
        values = list(value)
        if not values:
            raise ValueError(f"filter on {key!r} with an empty list would match nothing")
        match = models.MatchAny(any=values)
    return models.FieldCondition(key=key, match=match)
