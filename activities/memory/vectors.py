"""The memory lane's vector store: Qdrant as a server (`QDRANT_URL`) or embedded.

Embedded mode, the default, runs Qdrant's own engine in-process through `qdrant-edge-py`
(Qdrant Edge): each collection is an Edge shard in `$COLONY_DATA_DIR/qdrant-edge/<name>`
with an HNSW index and payload indexes, so a query at 100K memories takes about a
millisecond. It replaced qdrant-client's local mode (exact search with filters evaluated
in Python point by point: ~130 ms a query at 10K memories, 2-3 s at 100K; see
docs/benchmarks.md). Their files differ, so an old `qdrant` directory is left alone.

Edge has no background optimizer: writes run it in the writing call, which builds the
HNSW index of a segment once it is large enough (small collections are searched exactly,
and filtered searches with few matching points use the payload indexes). Searches use
ACORN and `hnsw_ef` 128 so that narrow filters (an agent's own memories) keep their
recall. Each shard's write-ahead log is locked, so only one process may open the store:
that is why every vector read and write runs as an activity on the memory lane. Within a
process, stores on the same path share one set of shards, and calls to them are
serialised; a server takes calls in parallel.

Nothing is opened until the first call. Every call blocks (run them in a thread from
async code), and every read is filtered by tenant: `search` and `scroll` take the
tenant (or tenants) as a required argument.

Filters: `where` conditions must all hold (a value, a list of which any may match, or a
`Range` of numbers); `any_of` conditions add "at least one of these holds" (e.g. the
agent's own memories or shared ones).

Errors from Qdrant come out as `VectorStoreError`, worth retrying (a server restarting,
an embedded store another process still holds); a collection made for vectors of another
size is a `ConfigError`.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar, cast

import numpy as np

from core.errors import ConfigError
from core.settings import Settings

if TYPE_CHECKING:
    import qdrant_edge
    from qdrant_client import QdrantClient, models

TENANT_FIELD: Final = "tenant_id"
"""Payload field every point carries and every read filters on."""
MEMORY: Final = ":memory:"
"""A location for tests: embedded, in a temporary directory removed on close."""

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
"""Payload index types `ensure_collection` can create."""


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
                    from activities.providers.embeddings import MiniLmEmbedder

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


class _Edge:
    """The embedded store: one Edge shard per collection under `root`, used under `lock`."""

    def __init__(self, root: Path, *, temporary: bool = False) -> None:
        self.root = root
        self.temporary = temporary  # a MEMORY store's own temp dir, removed on close
        self.lock = threading.RLock()
        self.shards: dict[str, qdrant_edge.EdgeShard] = {}
        self.users = 0

    def path(self, name: str) -> Path:
        if not _COLLECTION_NAME.fullmatch(name):
            raise ValueError(f"collection name {name!r} is not a plain directory name")
        return self.root / name

    def exists(self, name: str) -> bool:
        return name in self.shards or (self.path(name) / _EDGE_CONFIG).is_file()

    def shard(self, name: str) -> qdrant_edge.EdgeShard:
        shard = self.shards.get(name)
        if shard is None:
            import qdrant_edge as qe

            if not self.exists(name):
                raise VectorStoreError(f"collection {name!r} does not exist in {self.root}")
            shard = self.shards[name] = qe.EdgeShard.load(str(self.path(name)))
        return shard

    def ensure(self, name: str, dim: int, indexes: Mapping[str, IndexKind | None]) -> None:
        """Create the shard unless it exists, check its size, add missing payload indexes."""
        import qdrant_edge as qe

        if not self.exists(name):
            config = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                hnsw_config=qe.HnswIndexConfig(
                    m=_EDGE_HNSW_M,
                    ef_construct=_EDGE_EF_CONSTRUCT,
                    full_scan_threshold=_EDGE_FULL_SCAN_KB,
                ),
            )
            self.shards[name] = qe.EdgeShard.create(str(self.path(name)), config)
        size = self.dimension(name)
        if size != dim:
            raise ConfigError(
                f"Qdrant collection {name!r} holds vectors of size {size}, not {dim}: "
                "it was made for another embedding model; delete it to rebuild"
            )
        shard = self.shard(name)
        present = shard.info().payload_schema
        for key, kind in indexes.items():
            if key not in present:
                schema: qdrant_edge.PayloadSchemaType | qdrant_edge.KeywordIndexParams = (
                    qe.KeywordIndexParams(is_tenant=True)
                    if kind is None
                    else getattr(qe.PayloadSchemaType, kind.capitalize())
                )
                shard.update(qe.UpdateOperation.create_field_index(key, schema))

    def dimension(self, name: str) -> int | None:
        """The vector size in the shard's config file (Edge has no call for it)."""
        config = json.loads((self.path(name) / _EDGE_CONFIG).read_text())
        params = config.get("vectors", {}).get("")
        size = params.get("size") if isinstance(params, dict) else None
        return size if isinstance(size, int) else None

    def close(self) -> None:
        with self.lock:
            shards, self.shards = list(self.shards.values()), {}
            for shard in shards:
                shard.close()
            if self.temporary:
                shutil.rmtree(self.root, ignore_errors=True)


_EDGE_CONFIG: Final = "edge_config.json"
_EDGE_HNSW_M: Final = 16
_EDGE_EF_CONSTRUCT: Final = 100
_EDGE_FULL_SCAN_KB: Final = 10_000
"""HNSW graph of a new shard; searches over less than this many KB of vectors are exact."""
_EDGE_HNSW_EF: Final = 128
"""Search beam: with ACORN, recall@10 1.0 at 100K for an agent's ~15% (docs/benchmarks.md)."""
_COLLECTION_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_local_lock = threading.Lock()
_local: dict[str, _Edge] = {}  # by resolved path: one set of shards per store per process

T = TypeVar("T")


class VectorStore:
    """Qdrant collections for one deployment.

    Args:
        location: an `http(s)://` URL of a server, a directory for the embedded store
            (Qdrant Edge), or `":memory:"` (embedded in a temporary directory removed on
            close; tests).
        api_key: the server's API key, if it needs one.
        timeout: seconds per server request.
    """

    def __init__(self, location: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.location = location
        self._remote = location.startswith(("http://", "https://"))
        self._api_key = api_key
        self._timeout = timeout
        self._open_lock = threading.Lock()
        self._client: QdrantClient | None = None  # server only
        self._edge: _Edge | None = None  # embedded only
        self._key: str | None = None  # embedded on disk: the shared `_Edge`'s key
        self._collections: dict[str, int] = {}

    @property
    def local(self) -> bool:
        """Whether this is the embedded store (Qdrant Edge in-process; one process)."""
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

        `tenant_id` (a tenant index: Qdrant keeps each tenant's points together),
        `keyword_fields` and `indexes` get payload indexes, also added to an existing
        collection that lacks them. Checked once per process and collection.

        Raises:
            ConfigError: the collection exists with another dimension.
            VectorStoreError: Qdrant failed.
        """
        if self._collections.get(name) == dim:
            return
        if not self._remote:
            wanted: dict[str, IndexKind | None] = {TENANT_FIELD: None}
            wanted |= dict.fromkeys(keyword_fields, "keyword")
            wanted |= dict(indexes or {})
            self._embedded(lambda edge: edge.ensure(name, dim, wanted))
            self._collections[name] = dim
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
            wanted: dict[str, Any] = {
                TENANT_FIELD: models.KeywordIndexParams(
                    type=models.KeywordIndexType.KEYWORD, is_tenant=True
                )
            }
            wanted |= dict.fromkeys(keyword_fields, models.PayloadSchemaType.KEYWORD)
            wanted |= {key: models.PayloadSchemaType(kind) for key, kind in (indexes or {}).items()}
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
        if not self._remote:
            import qdrant_edge as qe

            def write(edge: _Edge) -> None:
                shard = edge.shard(collection)
                for start in range(0, len(points), batch):
                    shard.update(qe.UpdateOperation.upsert_points([
                        qe.Point(p.id, np.asarray(p.vector, dtype=np.float32).tolist(),
                                 dict(p.payload))
                        for p in points[start : start + batch]
                    ]))  # fmt: skip
                shard.optimize()  # indexes a segment grown large enough; else a no-op

            if points:
                self._embedded(write)
            return
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
        if not self._remote:
            import qdrant_edge as qe

            request = qe.SearchRequest(
                query=qe.Query.Nearest(query), limit=limit,
                filter=_edge_filter(tenant_id, where, any_of),
                params=qe.SearchParams(
                    hnsw_ef=_EDGE_HNSW_EF, acorn=qe.AcornSearchParams(enable=True)
                ),
                with_payload=selector, with_vector=False,
            )  # fmt: skip
            found = self._embedded(lambda edge: edge.shard(collection).search(request))
            return [VectorRecord(str(p.id), dict(p.payload or {}), float(p.score)) for p in found]
        result = self._call(
            "query_points", collection, query=query,
            query_filter=_filter(tenant_id, where, any_of), limit=limit, with_payload=selector,
        )  # fmt: skip
        return [
            VectorRecord(str(p.id), dict(p.payload or {}), float(p.score)) for p in result.points
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
        if not self._remote:
            import qdrant_edge as qe

            edge_flt = _edge_filter(tenant_id, where, any_of)
            while True:
                request = qe.ScrollRequest(
                    offset=offset, limit=page, filter=edge_flt, with_payload=selector,
                    with_vector=False,
                )  # fmt: skip
                batch, offset = self._embedded(
                    functools.partial(_scroll_page, collection=collection, request=request)
                )
                records += [VectorRecord(str(p.id), dict(p.payload or {})) for p in batch]
                if offset is None:
                    return records
        flt = _filter(tenant_id, where, any_of)
        while True:
            found, offset = self._call(
                "scroll", collection, scroll_filter=flt, limit=page, offset=offset,
                with_payload=selector, with_vectors=False,
            )  # fmt: skip
            records += [VectorRecord(str(p.id), dict(p.payload or {})) for p in found]
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
        if not self._remote:
            import qdrant_edge as qe

            request = qe.CountRequest(exact=True, filter=_edge_filter(tenant_id, where, any_of))
            return int(self._embedded(lambda edge: edge.shard(collection).count(request)))
        result = self._call(
            "count", collection, count_filter=_filter(tenant_id, where, any_of), exact=True
        )
        return int(result.count)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove points by id (ids that do not exist are ignored)."""
        if not ids:
            return
        if not self._remote:
            import qdrant_edge as qe

            op = qe.UpdateOperation.delete_points(list(ids))
            self._embedded(lambda edge: _update(edge.shard(collection), op))
            return
        from qdrant_client import models

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
        if not self._remote:
            import qdrant_edge as qe

            op = qe.UpdateOperation.delete_points_by_filter(_edge_filter(tenant_id, where))
            self._embedded(lambda edge: _update(edge.shard(collection), op))
            return
        from qdrant_client import models

        selector = models.FilterSelector(filter=_filter(tenant_id, where))
        self._call("delete", collection, selector, wait=True)

    def set_payload(self, collection: str, ids: Sequence[str], payload: Mapping[str, Any]) -> None:
        """Set payload fields of points by id (other fields are kept)."""
        if not ids:
            return
        if not self._remote:
            import qdrant_edge as qe

            def write(edge: _Edge) -> None:
                shard = edge.shard(collection)
                # Edge fails on an unknown id; local mode and servers skip it.
                found = [r.id for r in shard.retrieve(list(ids), False, False)]
                if found:
                    shard.update(qe.UpdateOperation.set_payload(found, dict(payload)))

            self._embedded(write)
            return
        self._call("set_payload", collection, dict(payload), points=list(ids), wait=True)

    def collection_exists(self, name: str) -> bool:
        """Whether collection `name` exists."""
        if not self._remote:
            return self._embedded(lambda edge: edge.exists(name))
        return bool(self._call("collection_exists", name))

    def close(self) -> None:
        """Release the client or shards (a shared embedded store closes with its last user)."""
        with self._open_lock:
            client, edge, key = self._client, self._edge, self._key
            self._client, self._edge, self._key = None, None, None
            self._collections.clear()
            if client is not None:
                client.close()
            if edge is None:
                return
            if key is not None:
                with _local_lock:
                    edge.users -= 1
                    if edge.users > 0:
                        return
                    del _local[key]
            edge.close()

    # -- internals -------------------------------------------------------------------

    def _open(self) -> QdrantClient:
        with self._open_lock:
            if self._client is not None:
                return self._client
            from qdrant_client import QdrantClient

            try:
                self._client = QdrantClient(
                    url=self.location,
                    api_key=self._api_key,
                    timeout=int(self._timeout),
                    check_compatibility=False,  # it warns from a thread when down
                )
            except Exception as exc:
                raise VectorStoreError(f"cannot open Qdrant at {self.location}: {exc}") from exc
            return self._client

    def _call(self, fn: str | Callable[[QdrantClient], Any], *args: Any, **kwargs: Any) -> Any:
        """`client.<fn>(*args, **kwargs)`, or `fn(client)`, on the server, errors translated."""
        client = self._open()
        call = (
            functools.partial(getattr(client, fn), *args, **kwargs)
            if isinstance(fn, str)
            else (functools.partial(fn, client))
        )
        try:
            return call()
        except (VectorStoreError, ConfigError):
            raise
        except Exception as exc:
            raise VectorStoreError(f"Qdrant at {self.location} failed: {exc}") from exc

    def _open_edge(self) -> _Edge:
        with self._open_lock:
            if self._edge is not None:
                return self._edge
            if self.location == MEMORY:  # private to this store
                self._edge = _Edge(Path(tempfile.mkdtemp(prefix="colony-qdrant-")), temporary=True)
                return self._edge
            key = str(Path(self.location).resolve())
            with _local_lock:
                edge = _local.get(key)
                if edge is None:
                    try:
                        Path(key).mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise VectorStoreError(f"cannot open Qdrant at {key}: {exc}") from exc
                    edge = _local[key] = _Edge(Path(key))
                edge.users += 1
            self._edge, self._key = edge, key
            return edge

    def _embedded(self, fn: Callable[[_Edge], T]) -> T:
        """`fn(edge)` under the store's lock, errors translated."""
        edge = self._open_edge()
        try:
            with edge.lock:
                return fn(edge)
        except (VectorStoreError, ConfigError, ValueError):
            raise
        except Exception as exc:
            raise VectorStoreError(f"Qdrant Edge at {self.location} failed: {exc}") from exc


def _scroll_page(
    edge: _Edge, *, collection: str, request: qdrant_edge.ScrollRequest
) -> tuple[list[qdrant_edge.Record], Any]:
    return edge.shard(collection).scroll(request)


def _update(shard: qdrant_edge.EdgeShard, operation: qdrant_edge.UpdateOperation) -> None:
    shard.update(operation)
    shard.optimize()  # vacuums segments with many deleted points; else a no-op


def open_vector_store(settings: Settings) -> VectorStore:
    """The deployment's store: `QDRANT_URL`, else embedded in `$COLONY_DATA_DIR/qdrant-edge`.

    A server gets `QDRANT_API_KEY` with every request. Opens nothing yet; the first call
    does. (qdrant-client's local mode, used before, kept its data in `qdrant`: another
    format, so another directory.)
    """
    if settings.qdrant_url:
        key = settings.qdrant_api_key
        return VectorStore(
            settings.qdrant_url, api_key=key.get_secret_value() if key is not None else None
        )
    return VectorStore(str(settings.data_path / "qdrant-edge"))


def _edge_filter(
    tenant_id: str | Sequence[str],
    where: Mapping[str, Match] | None,
    any_of: Mapping[str, Match] | None = None,
) -> qdrant_edge.Filter:
    import qdrant_edge as qe

    conditions: list[Any] = [_edge_condition(TENANT_FIELD, tenant_id)]
    conditions += [_edge_condition(key, value) for key, value in (where or {}).items()]
    if any_of:
        either: list[Any] = [_edge_condition(key, value) for key, value in any_of.items()]
        conditions.append(qe.Filter(should=either))
    return qe.Filter(must=conditions)


def _edge_condition(key: str, value: Match) -> qdrant_edge.FieldCondition | qdrant_edge.Filter:
    import qdrant_edge as qe

    if isinstance(value, Range):
        bounds = qe.RangeFloat(gt=value.gt, gte=value.gte, lt=value.lt, lte=value.lte)
        return qe.FieldCondition(key, range=bounds)
    if isinstance(value, str | int | bool):
        return qe.FieldCondition(key, match=qe.MatchValue(_edge_value(value)))
    values: list[Any] = list(value)
    if not values:
        raise ValueError(f"filter on {key!r} with an empty list would match nothing")
    if any(isinstance(v, bool) for v in values):
        either: list[Any] = [
            qe.FieldCondition(key, match=qe.MatchValue(_edge_value(v))) for v in values
        ]
        return qe.Filter(should=either)
    return qe.FieldCondition(key, match=qe.MatchAny(values))


def _edge_value(value: str | int | bool) -> str | int | bool:
    """A match value for Edge, where a bool is passed as numpy's bool.

    In qdrant-edge-py 0.9.0 a Python bool arrives as an int and matches no bool payload.
    """
    return cast(bool, np.bool_(value)) if isinstance(value, bool) else value


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
