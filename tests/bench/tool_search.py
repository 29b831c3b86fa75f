"""Semantic tool search: `python -m tests.bench.tool_search [--tools 200] [--searches 200]`.

Calls the `search_tools` activity directly (no Temporal round trip) against a throwaway
Postgres and Qdrant local mode on disk (or `--qdrant-url`), with the real MiniLM
embedder. Reports the cost of indexing a catalog from nothing (per tool), of a search
once the index is current (p50/p95; each search still compares the index with
Postgres), and of a search right after one tool changed.
"""

import argparse
import asyncio
import itertools
import statistics
import time
from pathlib import Path

from activities.memory.vectors import VectorStore
from activities.providers.embeddings import MiniLmEmbedder
from activities.tools.builtins import CALCULATOR, GET_TIME
from activities.tools.search import ToolSearchActivities
from core import db, tenants
from core.payloads import ToolSchema
from core.tools import store as tools
from core.tools.names import ASK_HUMAN, FIND_TOOLS, WORKFLOW_TOOLS
from core.tools.search import ToolSearchInput
from tests.conftest import make_settings
from tests.support.services import fresh_database, postgres, world_traversable_tempdir
from tests.tool_search._catalog import QUERIES, TOOLS, http_spec

TENANT = "bench"
VARIANTS = ("", "for Europe", "for Asia", "for the Americas", "for Africa", "for Oceania")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def bench(n_tools: int, n_searches: int, qdrant_url: str | None) -> dict[str, float]:
    """Index `n_tools` tools, then time `n_searches` searches. Milliseconds."""
    workdir = world_traversable_tempdir("colony-bench-search-")
    async with postgres(workdir) as pg, fresh_database(pg, "tool_search") as url:
        async with db.open_pool(url, min_size=1, max_size=4) as pool:
            catalog = list(itertools.product(VARIANTS, TOOLS.items()))[:n_tools]
            async with pool.connection() as conn:
                await tenants.ensure_tenant(conn, TENANT, TENANT)
                for i, (variant, (name, (description, params))) in enumerate(catalog):
                    spec = http_spec(f"{description} {variant}".strip(), params)
                    await tools.register_tool(conn, TENANT, f"{name}_{i}", spec)
            store = VectorStore(qdrant_url or str(Path(workdir) / "qdrant"))
            embedder = MiniLmEmbedder()
            embedder.embed(["warm up"])

            def builtins() -> list[ToolSchema]:
                return [
                    CALCULATOR.schema(),
                    GET_TIME.schema(),
                    WORKFLOW_TOOLS[ASK_HUMAN],
                    WORKFLOW_TOOLS[FIND_TOOLS],
                ]

            acts = ToolSearchActivities(make_settings(), pool, store, embedder, builtins)
            queries = itertools.cycle(QUERIES)

            def search() -> ToolSearchInput:
                return ToolSearchInput(tenant_id=TENANT, query=next(queries), limit=5)

            started = time.perf_counter()
            first = await acts.search_tools(search())
            index_ms = (time.perf_counter() - started) * 1000
            latencies = []
            for _ in range(n_searches):
                started = time.perf_counter()
                out = await acts.search_tools(search())
                latencies.append((time.perf_counter() - started) * 1000)
                assert out.embedded == 0
            changed = []
            for i in range(5):
                async with pool.connection() as conn:
                    spec = http_spec(f"Changed description number {i}.", ["q"])
                    await tools.register_tool(conn, TENANT, "weather_forecast_0", spec)
                started = time.perf_counter()
                out = await acts.search_tools(search())
                changed.append((time.perf_counter() - started) * 1000)
                assert out.embedded == 1
            store.close()
    return {
        "tools": float(len(catalog) + 3),
        "first_search_ms": index_ms,
        "index_ms_per_tool": index_ms / max(first.embedded, 1),
        "search_p50_ms": statistics.median(latencies),
        "search_p95_ms": _percentile(latencies, 0.95),
        "search_after_one_change_ms": statistics.median(changed),
    }


def main() -> None:
    """Run and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tool_search")
    parser.add_argument("--tools", type=int, default=200)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--qdrant-url", default=None, help="a Qdrant server (default: local mode)")
    args = parser.parse_args()
    results = asyncio.run(bench(args.tools, args.searches, args.qdrant_url))
    where = args.qdrant_url or "Qdrant local mode (on disk)"
    print(f"Tool search, {int(results['tools'])} tools, {where}, {args.searches} searches\n")
    print("| measure | ms |\n|---|---|")
    for key, value in results.items():
        if key != "tools":
            print(f"| {key} | {value:.1f} |")


if __name__ == "__main__":
    main()
