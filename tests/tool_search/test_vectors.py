"""`VectorStore`: embedded (Qdrant Edge) on disk and in memory, filters, sharing, errors."""

import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from activities.memory.vectors import (
    MEMORY,
    LazyEmbedder,
    Range,
    VectorPoint,
    VectorStore,
    VectorStoreError,
    open_vector_store,
    point_id,
)
from core.errors import ConfigError
from tests.conftest import make_settings


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def point(tenant: str, name: str, *xs: float, **payload: object) -> VectorPoint:
    return VectorPoint(
        point_id(tenant, name), unit(*xs), {"tenant_id": tenant, "name": name, **payload}
    )


def test_search_is_filtered_by_tenant_and_payload() -> None:
    store = VectorStore(MEMORY)
    store.ensure_collection("c", 3)
    store.ensure_collection("c", 3)  # idempotent
    store.upsert(
        "c",
        [
            point("a", "x", 1, 0, 0, kind="fact"),
            point("a", "y", 0, 1, 0, kind="skill"),
            point("b", "x", 1, 0, 0, kind="fact"),
            point("*", "z", 1, 0.1, 0, kind="fact"),
        ],
    )
    hits = store.search("c", unit(1, 0, 0), tenant_id="a")
    assert [h.payload["name"] for h in hits] == ["x", "y"]
    assert hits[0].score == pytest.approx(1.0) and hits[0].id == point_id("a", "x")
    both = store.search("c", unit(1, 0, 0), tenant_id=["a", "*"], where={"kind": "fact"})
    assert [(h.payload["tenant_id"], h.payload["name"]) for h in both] == [("a", "x"), ("*", "z")]
    named = store.search("c", unit(1, 0, 0), tenant_id="b", where={"name": ["x", "y"]}, limit=1)
    assert [h.payload["tenant_id"] for h in named] == ["b"]
    with pytest.raises(ValueError, match="empty list"):
        store.search("c", unit(1, 0, 0), tenant_id="a", where={"name": []})

    listed = store.scroll("c", tenant_id="a", fields=["kind"], page=1)
    assert sorted(r.payload["kind"] for r in listed) == ["fact", "skill"]
    assert all(set(r.payload) == {"kind"} for r in listed)

    # Same id: replaced, not duplicated. Deleting unknown ids is fine.
    store.upsert("c", [point("a", "x", 0, 0, 1, kind="fact")])
    store.delete("c", [point_id("a", "y"), point_id("a", "nope")])
    left = store.search("c", unit(0, 0, 1), tenant_id="a")
    assert [(h.payload["name"], round(h.score, 3)) for h in left] == [("x", 1.0)]
    store.close()


def test_a_dimension_mismatch_is_an_error() -> None:
    store = VectorStore(MEMORY)
    store.ensure_collection("c", 3)
    with pytest.raises(ConfigError, match="size 3, not 4"):
        store.ensure_collection("c", 4)
    store.close()


def test_local_stores_are_lazy_shared_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    first, second = VectorStore(str(path)), VectorStore(str(path))
    assert not path.exists()  # nothing opened yet
    first.ensure_collection("c", 3)
    # The second store on the same path shares the client: no lock conflict.
    second.upsert("c", [point("a", "x", 1, 0, 0)])
    assert [h.payload["name"] for h in first.search("c", unit(1, 0, 0), tenant_id="a")] == ["x"]
    first.close()
    assert len(second.scroll("c", tenant_id="a")) == 1
    second.close()
    # Closed by its last user, the lock is free again and the data is on disk.
    reopened = VectorStore(str(path))
    assert len(reopened.scroll("c", tenant_id="a")) == 1
    reopened.close()


def test_local_mode_is_safe_across_threads(tmp_path: Path) -> None:
    store = VectorStore(str(tmp_path / "q"))
    store.ensure_collection("c", 3)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.upsert("c", [point("t", f"p{i}", 1, i, 0)]), range(64)))
        found = list(pool.map(lambda _: store.search("c", unit(1, 0, 0), tenant_id="t"), range(16)))
    assert all(len(hits) == 10 for hits in found)
    assert len(store.scroll("c", tenant_id="t", page=10)) == 64
    store.close()


def test_an_unreachable_server_is_a_vector_store_error() -> None:
    store = VectorStore("http://127.0.0.1:1", timeout=2)
    assert not store.local
    with pytest.raises(VectorStoreError, match=r"127\.0\.0\.1:1"):
        store.search("c", unit(1, 0, 0), tenant_id="a")
    store.close()


def test_settings_choose_the_store(tmp_path: Path) -> None:
    local = open_vector_store(make_settings(COLONY_DATA_DIR=str(tmp_path)))
    assert local.local and local.location == str(tmp_path / "qdrant-edge")
    server = open_vector_store(make_settings(QDRANT_URL="http://qdrant:6333"))
    assert not server.local and server.location == "http://qdrant:6333"


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_the_api_key_goes_to_the_server() -> None:
    seen: list[str | None] = []

    class Qdrant(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("api-key"))
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Qdrant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        store = open_vector_store(make_settings(QDRANT_URL=url, QDRANT_API_KEY="s3cret"))
        with pytest.raises(VectorStoreError):
            store.search("c", unit(1, 0, 0), tenant_id="a")
        store.close()
    finally:
        server.shutdown()
        server.server_close()
    assert seen and set(seen) == {"s3cret"}


def test_point_ids_are_deterministic_uuids() -> None:
    assert point_id("a", "x") == point_id("a", "x") != point_id("b", "x")
    assert point_id("a", "bx") != point_id("ab", "x")
    assert len(point_id("a", "x")) == 36


def test_lazy_embedder_loads_once() -> None:
    embedder = LazyEmbedder()
    assert embedder._model is None
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda t: embedder.embed([t]), ["cat", "dog", "cat", "car"]))
    assert rows[0].shape == (1, 384) and np.allclose(rows[0], rows[2], atol=1e-5)
    assert np.linalg.norm(rows[1][0]) == pytest.approx(1.0, abs=1e-4)


def test_embedded_bool_filters_unknown_ids_and_reopening(tmp_path: Path) -> None:
    # qdrant-edge-py 0.9.0 turns a Python bool into an int in a match: the store converts it.
    path = tmp_path / "q"
    store = VectorStore(str(path))
    store.ensure_collection("c", 3, indexes={"retired": "bool", "n": "integer"})
    store.upsert("c", [point("t", f"p{i}", 1, i, 0, retired=i % 2 == 1, n=i) for i in range(4)])
    assert store.count("c", tenant_id="t", where={"retired": False}) == 2
    assert store.count("c", tenant_id="t", where={"retired": [True, False]}) == 4
    assert store.count("c", tenant_id="t", where={"n": Range(gte=1, lte=2)}) == 2
    store.set_payload("c", [point_id("t", "p0"), point_id("t", "nope")], {"retired": True})
    assert store.count("c", tenant_id="t", where={"retired": True}) == 3
    store.close()
    reopened = VectorStore(str(path))
    with pytest.raises(ConfigError, match="size 3, not 4"):
        reopened.ensure_collection("c", 4)
    hits = reopened.search("c", unit(1, 0, 0), tenant_id="t", where={"retired": True}, limit=2)
    assert [h.payload["name"] for h in hits] == ["p0", "p1"]
    assert not reopened.collection_exists("d")
    reopened.close()
