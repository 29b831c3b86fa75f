"""Long-term memory: `python -m tests.bench.memory [--sizes 10000 100000] [--queries 200]
[--qdrant-url URL] [--edge-path DIR]`.

What it measures, at each size, with real all-MiniLM-L6-v2 (int8 ONNX) embeddings of
synthetic but varied memories (episodes, lessons, skills, facts; generated
deterministically) and of 200 queries phrased differently:

- recall@10 of Qdrant's answer against exact search (brute-force cosine in numpy over
  the same vectors and the same filter), and p50/p95 latency of the vector query alone
  (`VectorStore.search` as `MemoryStore.recall` calls it), with the tenant filter and with
  the agent filter (the agent's own memories or shared ones: ~15% of the points);
- p50/p95 of a whole `MemoryStore.recall` (query embedding + Qdrant + the Postgres join);
- embedding throughput (texts/s, batches of 64, one ONNX thread as the worker uses).

Modes: qdrant-client local mode (the embedded default; brute force, so recall@10 is 1.0
by construction), a Qdrant server with `--qdrant-url` (HNSW, payload indexes), and, when
`qdrant_edge` imports (`qdrant-edge-py`, or `--edge-path` to a `pip install --target`
dir), Qdrant Edge: the Qdrant engine in-process, with an HNSW index, as a candidate
replacement of local mode.

Embedding 100K texts takes minutes on 2 cores: vectors are cached in
`$COLONY_BENCH_CACHE` (default `.colony/bench-cache/`) as
`memory-<n>-<model>-<hash>.npy`, so only the first run pays. Postgres is a throwaway
embedded server; Qdrant local mode and Edge write to a temp dir.
"""

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from activities.memory.store import MemoryStore, collection_for, memory_id
from activities.memory.vectors import VectorPoint, VectorStore
from activities.providers.embeddings import MODEL_ID, MiniLmEmbedder
from core import db, tenants
from core.memory import store as rows
from core.memory.payloads import RecallInput
from core.memory.store import NewMemory
from tests.conftest import make_settings
from tests.support.services import fresh_database, postgres, world_traversable_tempdir

TENANT = "bench"
AGENTS = [f"agent-{i:02d}" for i in range(20)]
KINDS = ("episode", "reflexion", "skill", "fact")
GENERATOR = "v2"  # bump when the text generator changes: the cache key includes it
BATCH = 64
K = 10
TIE_EPS = 1e-4
LOCAL_MIN_QUERIES = 20
LOCAL_POINT_BUDGET = 500_000
"""Local mode gets max(20, 500K / n) queries per filter: it is too slow for more."""

_TASKS = [
    "convert {n} {cur} to {cur2}", "summarise the {doc} from {team}", "book a {trip} to {city}",
    "fix the failing {test} test in the {module} module", "write a SQL query for {entity}",
    "draft an email to {team} about {topic}", "find the cheapest {item} in {city}",
    "compare {item} prices across {n} shops", "plan a {n}-day itinerary for {city}",
    "translate the {doc} into {lang}", "explain {topic} to a new hire",
    "check the weather in {city} for {day}", "schedule a meeting with {team} on {day}",
    "clean up the {entity} table", "estimate the cost of {topic}", "review the {doc} for errors",
    "set up alerts for {topic}", "migrate the {module} service to {tech}",
    "debug the {tech} timeout in {module}", "collect {entity} statistics for {day}",
]  # fmt: skip
_FILL = {
    "cur": ["US dollars", "euros", "yen", "pounds", "Swiss francs", "rupees", "pesos"],
    "cur2": ["euros", "dollars", "yen", "pounds", "Canadian dollars", "won"],
    "doc": ["quarterly report", "contract", "meeting notes", "design doc", "invoice",
            "release notes", "privacy policy", "incident report", "pitch deck"],
    "team": ["finance", "legal", "the sales team", "engineering", "support", "marketing",
             "the board", "HR"],
    "trip": ["flight", "train", "hotel", "rental car", "ferry"],
    "city": ["Paris", "Tokyo", "Lisbon", "Berlin", "Nairobi", "Lima", "Toronto", "Sydney",
             "Mumbai", "Oslo", "Cairo", "Seoul"],
    "test": ["unit", "integration", "end-to-end", "load", "snapshot"],
    "module": ["payments", "billing", "search", "auth", "notifications", "reporting",
               "checkout", "inventory"],
    "entity": ["customers with unpaid invoices", "inactive users", "orders", "refunds",
               "support tickets", "shipments", "subscriptions"],
    "topic": ["the new pricing", "the outage", "vector databases", "the hiring plan",
              "cloud costs", "the roadmap", "GDPR", "the office move", "on-call duty"],
    "item": ["laptop", "office chair", "monitor", "coffee beans", "headphones", "desk"],
    "lang": ["French", "German", "Japanese", "Spanish", "Portuguese", "Korean"],
    "tech": ["Postgres", "Kafka", "Redis", "Kubernetes", "gRPC", "S3"],
    "day": ["Monday", "tomorrow", "next week", "Friday", "the 3rd", "month end"],
    "person": ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jade",
               "Kofi", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomo"],
}  # fmt: skip
_OUTCOMES = [
    "succeeded", "succeeded after a retry", "failed: the tool timed out", "succeeded with "
    "help from the user", "failed: the API returned 403", "partially succeeded",
]  # fmt: skip
_TOOLS = ["http_fetch", "calculator", "run_python", "read_file", "get_time", "sql_query",
          "send_email", "weather_forecast", "search_web"]  # fmt: skip
_LESSONS = [
    "Lesson: {task} needs {tool} first; do not guess (cost {person} {n} minutes).",
    "Lesson: when asked to {task}, confirm the {what} with {person} before acting.",
    "Lesson: {tool} fails on inputs over {n} rows; split the work when you {task}.",
]
_SKILLS = [
    "Skill ({n} uses): to {task}, call {tool}, check the {what}, then answer briefly.",
    "Skill: {task} - first {tool}, then ask {person} to confirm the {what}.",
]
_FACTS = [
    "Fact: {person} in {team} prefers answers in {lang} about {topic}.",
    "Fact: the {module} service runs on {tech} in {city}, owned by {person}.",
    "Fact: {doc} reports for {team} are due {day}, {n} pages at most.",
    "Fact: the office in {city} handles {entity}; ask {person} (ext. {n}).",
]
_QUERIES = [
    "how do I {task}?",
    "{task}",
    "what happened last time we tried to {task}",
    "any lessons about how to {task}",
    "remind me what we know about {topic}",
    "who handles {entity} in {city}",
]


def _fill(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(options) for key, options in _FILL.items()}
    values |= {"n": str(rng.randint(2, 900)), "tool": rng.choice(_TOOLS)}
    values["task"] = rng.choice(_TASKS).format(**values)
    values["what"] = rng.choice(["amount", "date", "recipient", "format", "scope"])
    return template.format(**values)


def memory_texts(n: int, seed: int = 5) -> list[tuple[str, str]]:
    """`n` (kind, text) pairs: varied, deterministic."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for _ in range(n):
        kind = rng.choices(KINDS, weights=(5, 2, 1, 2))[0]
        if kind == "episode":
            task = _fill("{task}", rng)
            tools = ", ".join(rng.sample(_TOOLS, rng.randint(1, 3)))
            text = (
                f"Objective: {task[0].upper()}{task[1:]}. Outcome: {rng.choice(_OUTCOMES)}. "
                f"Tools used: {tools}. Summary: {_fill('{task}', rng)} came up too; "
                f"took {rng.randint(1, 30)} steps."
            )
        else:
            text = _fill(
                rng.choice({"reflexion": _LESSONS, "skill": _SKILLS, "fact": _FACTS}[kind]), rng
            )
        out.append((kind, text))
    return out


def query_texts(n: int, seed: int = 11) -> list[str]:
    """`n` queries phrased unlike the memories."""
    rng = random.Random(seed)
    return [_fill(rng.choice(_QUERIES), rng) for _ in range(n)]


def cache_dir() -> Path:
    """Where embedded vectors are kept between runs."""
    default = Path(__file__).resolve().parents[2] / ".colony" / "bench-cache"
    path = Path(os.environ.get("COLONY_BENCH_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def embed_all(embedder: MiniLmEmbedder, texts: Sequence[str]) -> tuple[np.ndarray, float]:
    """Vectors of `texts` (in order) and the seconds it took, in length-sorted batches."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(order), BATCH):
        idx = order[start : start + BATCH]
        out[idx] = embedder.embed([texts[i] for i in idx])
    return out, time.perf_counter() - started


def cached_vectors(
    embedder: MiniLmEmbedder, texts: Sequence[str], name: str
) -> tuple[np.ndarray, float | None]:
    """Vectors of `texts` from the cache, else embedded (seconds taken, else None)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    slug = collection_for(MODEL_ID).removeprefix("colony_memories_")
    path = cache_dir() / f"{name}-{len(texts)}-{slug}-{GENERATOR}-{digest}.npy"
    if path.exists():
        return np.load(path), None
    vectors, seconds = embed_all(embedder, texts)
    np.save(path, vectors)
    return vectors, seconds


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def layout(n: int, seed: int = 3) -> tuple[list[str], list[str]]:
    """Agent and scope of each memory: 20 agents, 10% shared."""
    rng = random.Random(seed)
    agents = [rng.choice(AGENTS) for _ in range(n)]
    scopes = ["shared" if rng.random() < 0.1 else "private" for _ in range(n)]
    return agents, scopes


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray | None, k: int = K
) -> list[float]:
    """The `k`-th best exact score of each query (cosine; vectors are unit norm)."""
    out: list[float] = []
    for q in queries:
        scores = vectors @ q
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        out.append(float(np.partition(scores, len(scores) - k)[len(scores) - k]))
    return out


def measure(
    search: Callable[[np.ndarray, str | None], list[int]],
    vectors: np.ndarray,
    queries: np.ndarray,
    exact: Sequence[float],
    agent_for: Callable[[int], str | None],
) -> dict[str, float]:
    """Latency (ms) and recall@10 of `search(query, agent)` against exact search.

    A returned point counts when its exact score reaches the 10th best exact score
    (within float error): memories with identical texts are ties, and which of them a
    search returns is arbitrary, so comparing ids would count ties as misses.
    """
    for q in queries[:5]:
        search(q, agent_for(0))  # warm up
    latencies, recalls = [], []
    for i, q in enumerate(queries):
        started = time.perf_counter()
        found = search(q, agent_for(i))
        latencies.append((time.perf_counter() - started) * 1000)
        hits = sum(1 for j in set(found) if float(vectors[j] @ q) >= exact[i] - TIE_EPS)
        recalls.append(min(hits, K) / K)
    return {
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 0.95),
        "recall": statistics.fmean(recalls),
    }


def _payload(i: int, kinds: Sequence[str], agents: Sequence[str], scopes: Sequence[str],
             created: datetime) -> dict[str, Any]:  # fmt: skip
    return {
        "tenant_id": TENANT, "agent_name": agents[i], "kind": kinds[i], "scope": scopes[i],
        "retired": False, "source_run_id": None, "created_at": created.timestamp() + i,
    }  # fmt: skip


async def bench_qdrant(
    location: str,
    n: int,
    data: tuple[list[str], list[str], np.ndarray],
    queries: tuple[list[str], np.ndarray],
    embedder: MiniLmEmbedder,
    pool: db.Pool,
) -> dict[str, float]:
    """Load `n` memories into Qdrant at `location` and Postgres, then query both ways."""
    kinds, texts, vectors = data
    query_texts_, query_vectors = queries
    if VectorStore(location).local:
        # A cap from qdrant-client local mode (~1-3 s a query at 100K); Edge needs none.
        budget = max(LOCAL_MIN_QUERIES, LOCAL_POINT_BUDGET // n)
        query_texts_, query_vectors = query_texts_[:budget], query_vectors[:budget]
    agents, scopes = layout(n)
    created = datetime.now(UTC) - timedelta(days=30)
    store_vectors = VectorStore(location, timeout=60)
    store = MemoryStore(make_settings(), pool, store_vectors, embedder)
    ids = [memory_id(TENANT, f"m{i}") for i in range(n)]
    started = time.perf_counter()
    await store._ensure_collection()
    store_vectors.upsert(
        store.collection,
        [VectorPoint(ids[i], vectors[i], _payload(i, kinds, agents, scopes, created)) for i in range(n)],
        batch=1000,
    )  # fmt: skip
    load_s = time.perf_counter() - started
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM memories WHERE tenant_id = %s", (TENANT,))
        for start in range(0, n, 5000):
            await rows.insert_memories(
                conn, TENANT,
                [NewMemory(id=ids[i], key=f"m{i}", agent_name=agents[i], kind=kinds[i],
                           scope=scopes[i], content=texts[i],
                           created_at=created + timedelta(seconds=i))
                 for i in range(start, min(n, start + 5000))],
                MODEL_ID,
            )  # fmt: skip
    index = {mid: i for i, mid in enumerate(ids)}
    agent_mask = {a: np.array([x == a or s == "shared" for x, s in zip(agents, scopes, strict=True)])
                  for a in AGENTS}  # fmt: skip

    def agent_for(i: int) -> str:
        return AGENTS[i % len(AGENTS)]

    def search(q: np.ndarray, agent: str | None) -> list[int]:
        any_of: dict[str, Any] | None = {"agent_name": agent, "scope": "shared"} if agent else None
        found = store_vectors.search(
            store.collection, q, tenant_id=TENANT, where={"retired": False}, any_of=any_of,
            limit=K, fields=["kind"],
        )  # fmt: skip
        return [index[r.id] for r in found]

    exact_all = exact_top(vectors, query_vectors, None)
    exact_agent = exact_top_per_agent(vectors, query_vectors, agent_mask, agent_for)
    plain = measure(search, vectors, query_vectors, exact_all, lambda _: None)
    by_agent = measure(search, vectors, query_vectors, exact_agent, agent_for)
    # The whole recall: embed the query, search, join the rows.
    e2e: list[float] = []
    for i, text in enumerate(query_texts_[:100]):
        started = time.perf_counter()
        out = await store.recall(
            RecallInput(tenant_id=TENANT, query=text, agent_name=agent_for(i), limit=K)
        )
        e2e.append((time.perf_counter() - started) * 1000)
        assert out.hits
    store_vectors.close()
    return {
        "load_s": load_s,
        "p50": plain["p50"], "p95": plain["p95"], "recall": plain["recall"],
        "agent_p50": by_agent["p50"], "agent_p95": by_agent["p95"],
        "agent_recall": by_agent["recall"],
        "e2e_p50": statistics.median(e2e[2:]), "e2e_p95": percentile(e2e[2:], 0.95),
        "queries": len(query_vectors),
    }  # fmt: skip


def exact_top_per_agent(
    vectors: np.ndarray,
    queries: np.ndarray,
    masks: dict[str, np.ndarray],
    agent_for: Callable[[int], str],
) -> list[float]:
    """Exact top-k of each query among its agent's (and shared) points."""
    return [exact_top(vectors, q[None, :], masks[agent_for(i)])[0] for i, q in enumerate(queries)]


def bench_edge(
    workdir: Path,
    n: int,
    data: tuple[list[str], list[str], np.ndarray],
    query_vectors: np.ndarray,
) -> dict[str, dict[str, float]] | None:
    """The same points in a Qdrant Edge shard (HNSW built in-process); None without it."""
    try:
        import qdrant_edge as qe
    except ImportError:
        return None
    kinds, _, vectors = data
    agents, scopes = layout(n)
    created = datetime.now(UTC)
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=vectors.shape[1], distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
    )
    shard = qe.EdgeShard.create(str(workdir / f"edge-{n}"), config)
    for field, schema in (("tenant_id", qe.PayloadSchemaType.Keyword),
                          ("agent_name", qe.PayloadSchemaType.Keyword),
                          ("scope", qe.PayloadSchemaType.Keyword),
                          ("retired", qe.PayloadSchemaType.Bool)):  # fmt: skip
        shard.update(qe.UpdateOperation.create_field_index(field, schema))
    started = time.perf_counter()
    for start in range(0, n, 1000):
        points = [
            qe.Point(i, vectors[i].tolist(), _payload(i, kinds, agents, scopes, created))
            for i in range(start, min(n, start + 1000))
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.optimize()  # builds the HNSW index
    load_s = time.perf_counter() - started
    agent_mask = {a: np.array([x == a or s == "shared" for x, s in zip(agents, scopes, strict=True)])
                  for a in AGENTS}  # fmt: skip

    def agent_for(i: int) -> str:
        return AGENTS[i % len(AGENTS)]

    def search(
        q: np.ndarray, agent: str | None, ef: int | None = None, acorn: bool = False
    ) -> list[int]:
        # No `retired` condition: in qdrant-edge-py 0.9.0, MatchValue(False) matches no
        # bool payload (Python's bool arrives as an int); every point here is unretired.
        must: list[Any] = [qe.FieldCondition("tenant_id", match=qe.MatchValue(TENANT))]
        if agent:
            must.append(qe.Filter(should=[
                qe.FieldCondition("agent_name", match=qe.MatchValue(agent)),
                qe.FieldCondition("scope", match=qe.MatchValue("shared")),
            ]))  # fmt: skip
        found = shard.search(qe.SearchRequest(
            query=qe.Query.Nearest(q.tolist()), limit=K, filter=qe.Filter(must=must),
            params=qe.SearchParams(hnsw_ef=ef, acorn=qe.AcornSearchParams(enable=acorn)),
            with_payload=False,
        ))  # fmt: skip
        return [int(p.id) for p in found]

    exact_all = exact_top(vectors, query_vectors, None)
    exact_agent = exact_top_per_agent(vectors, query_vectors, agent_mask, agent_for)
    results: dict[str, dict[str, float]] = {}
    for ef, acorn in ((None, False), (128, False), (128, True)):

        def with_ef(
            q: np.ndarray, agent: str | None, ef: int | None = ef, acorn: bool = acorn
        ) -> list[int]:
            return search(q, agent, ef, acorn)

        plain = measure(with_ef, vectors, query_vectors, exact_all, lambda _: None)
        by_agent = measure(with_ef, vectors, query_vectors, exact_agent, agent_for)
        label = "default hnsw_ef" if ef is None else f"hnsw_ef={ef}"
        results[label + (" + ACORN" if acorn else "")] = {
            "load_s": load_s, "p50": plain["p50"], "p95": plain["p95"],
            "recall": plain["recall"], "agent_p50": by_agent["p50"],
            "agent_p95": by_agent["p95"], "agent_recall": by_agent["recall"],
            "queries": len(query_vectors),
        }  # fmt: skip
    shard.close()
    return results


async def run_all(
    sizes: Sequence[int] = (10_000, 100_000),
    n_queries: int = 200,
    qdrant_url: str | None = None,
) -> list[str]:
    """Run every measurement; Markdown table rows (`| measurement | value |`)."""
    embedder = MiniLmEmbedder()  # one ONNX thread, as the memory worker runs it
    bulk = MiniLmEmbedder(threads=os.cpu_count() or 1)  # for filling the cache
    lines: list[str] = []
    # Throughput on a fixed sample, so the figure exists even when vectors come from cache.
    sample = [text for _, text in memory_texts(2048, seed=99)]
    embedder.embed(sample[:8])
    _, seconds = embed_all(embedder, sample)
    lines.append(
        f"| embedding throughput, MiniLM int8 ONNX, 1 thread, batches of {BATCH} "
        f"(2,048 memories, {statistics.fmean(len(t) for t in sample):.0f} chars avg) "
        f"| {len(sample) / seconds:.0f} texts/s |"
    )
    queries = query_texts(n_queries)
    query_vectors, _ = embed_all(embedder, queries)
    workdir = Path(tempfile.mkdtemp(prefix="colony-bench-memory-"))
    pg_dir = world_traversable_tempdir("colony-bench-memory-pg-")
    async with postgres(pg_dir) as pg, fresh_database(pg, "memory") as url:
        async with db.open_pool(url, min_size=1, max_size=4) as pool:
            async with pool.connection() as conn:
                await tenants.ensure_tenant(conn, TENANT, TENANT)
            for n in sizes:
                pairs = memory_texts(n)
                kinds, texts = [k for k, _ in pairs], [t for _, t in pairs]
                vectors, took = cached_vectors(bulk, texts, "memory")
                if took is not None:
                    lines.append(
                        f"| embedding {n:,} memories, {os.cpu_count()} ONNX threads (first run "
                        "only; cached after) | "
                        f"{took:.0f} s ({n / took:.0f} texts/s) |"
                    )
                data = (kinds, texts, vectors)
                modes = [("embedded (VectorStore default: Edge)", str(workdir / f"local-{n}"))]
                if qdrant_url:
                    modes.append((f"server {qdrant_url}", qdrant_url))
                for label, location in modes:
                    r = await bench_qdrant(
                        location, n, data, (queries, query_vectors), embedder, pool
                    )
                    lines += _rows(n, f"Qdrant {label}", r)
                    if qdrant_url and location == qdrant_url:
                        VectorStore(qdrant_url)._call("delete_collection", collection_for(MODEL_ID))
                edge = bench_edge(workdir, n, data, query_vectors)
                for ef, result in (edge or {}).items():
                    label = f"Qdrant Edge in-process (HNSW m=16, ef_construct=100, {ef})"
                    lines += _rows(n, label, result)
    return lines


def _rows(n: int, label: str, r: dict[str, float]) -> list[str]:
    out = [
        f"| {n:,} memories, {label}: load (upsert + index) | {r['load_s']:.1f} s |",
        f"| {n:,}, {label}: vector query p50 / p95, tenant filter ({r['queries']:.0f} queries) | "
        f"{r['p50']:.1f} / {r['p95']:.1f} ms |",
        f"| {n:,}, {label}: recall@10 vs exact, tenant filter | {r['recall']:.3f} |",
        f"| {n:,}, {label}: vector query p50 / p95, agent filter (own or shared, ~15%) | "
        f"{r['agent_p50']:.1f} / {r['agent_p95']:.1f} ms |",
        f"| {n:,}, {label}: recall@10 vs exact, agent filter | {r['agent_recall']:.3f} |",
    ]
    if "e2e_p50" in r:
        out.append(
            f"| {n:,}, {label}: whole `MemoryStore.recall` (embed query + search + Postgres "
            f"join) p50 / p95 | {r['e2e_p50']:.1f} / {r['e2e_p95']:.1f} ms |"
        )
    return out


def main() -> None:
    """Run and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.memory")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--qdrant-url", default=None, help="also measure this Qdrant server")
    parser.add_argument("--edge-path", default=None, help="a dir where qdrant-edge-py is installed")
    args = parser.parse_args()
    if args.edge_path:
        sys.path.append(args.edge_path)
    started = time.perf_counter()
    lines = asyncio.run(run_all(args.sizes, args.queries, args.qdrant_url))
    sys.stdout.write(
        f"Long-term memory, {args.queries} queries, {os.cpu_count()} cores "
        f"({time.perf_counter() - started:.0f} s)\n\n| measurement | value |\n|---|---|\n"
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
