"""`search_tools` with real embeddings, real Postgres and embedded Qdrant (Edge) in a tmp dir."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from activities.memory.vectors import VectorStore, point_id
from activities.providers.embeddings import MiniLmEmbedder
from activities.tools.builtins import CALCULATOR, GET_TIME
from activities.tools.search import (
    COLLECTION,
    NAME_BOOST,
    ToolSearchActivities,
    name_boost,
    tool_text,
    words,
)
from core import tenants
from core.db import Pool
from core.payloads import ToolSchema
from core.tools import store as tools
from core.tools.names import ASK_HUMAN, FIND_TOOLS, WORKFLOW_TOOLS
from core.tools.search import ToolSearchInput, ToolSearchOutput, clip
from tests.conftest import make_settings
from tests.tool_search._catalog import QUERIES, TOOLS, http_spec

TENANTS = ("t-rank", "t-change", "t-a", "t-b", "t-empty")


def builtin_schemas() -> list[ToolSchema]:
    return [
        CALCULATOR.schema(),
        GET_TIME.schema(),
        WORKFLOW_TOOLS[ASK_HUMAN],
        WORKFLOW_TOOLS[FIND_TOOLS],
    ]


@pytest.fixture(scope="module")
def qdrant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qdrant")


@pytest.fixture(scope="module")
def vectors(qdrant_dir: Path) -> Iterator[VectorStore]:
    store = VectorStore(str(qdrant_dir))
    yield store
    store.close()


@pytest.fixture(scope="module")
async def acts(pool: Pool, vectors: VectorStore) -> AsyncIterator[ToolSearchActivities]:
    async with pool.connection() as conn:
        for tenant in TENANTS:
            await tenants.ensure_tenant(conn, tenant, tenant)
        for name, (description, params) in TOOLS.items():
            await tools.register_tool(conn, "t-rank", name, http_spec(description, params))
    yield ToolSearchActivities(make_settings(), pool, vectors, MiniLmEmbedder(), builtin_schemas)


async def search(
    acts: ToolSearchActivities, tenant: str, query: str, limit: int = 5, **kw: object
) -> ToolSearchOutput:
    return await acts.search_tools(
        ToolSearchInput.model_validate({"tenant_id": tenant, "query": query, "limit": limit, **kw})
    )


def names(output: ToolSearchOutput) -> list[str]:
    return [hit.name for hit in output.hits]


async def test_time_zone_query_ranks_get_time_above_calculator(acts: ToolSearchActivities) -> None:
    out = await search(acts, "t-empty", "convert time zones")
    assert names(out)[0] == "get_time", out
    assert names(out).index("calculator") > 0
    # find_tools is never an answer to a search, though its example is this very query.
    assert "find_tools" not in names(out)
    assert names(await search(acts, "t-empty", "what is 17 * 23"))[0] == "calculator"
    assert names(await search(acts, "t-empty", "ask the user what they prefer"))[0] == "ask_human"
    hit = out.hits[0]
    assert hit.kind == "builtin" and hit.description.startswith("Get the current date and time")
    assert [h.score for h in out.hits] == sorted((h.score for h in out.hits), reverse=True)


async def test_paraphrased_queries_find_the_tool_in_the_top_3(acts: ToolSearchActivities) -> None:
    misses = {}
    for query, expected in QUERIES.items():
        found = names(await search(acts, "t-rank", query, limit=3))
        if expected not in found:
            misses[query] = (expected, found)
    assert not misses, misses
    out = await search(acts, "t-rank", "weather in Paris", limit=50)
    # 53 candidates (50 registered, calculator, get_time, ask_human), the 50 best kept.
    assert len(set(names(out))) == len(out.hits) == 50
    assert out.hits[0].kind == "http"


async def test_a_query_naming_a_tool_puts_it_first(acts: ToolSearchActivities) -> None:
    # Bag-of-words embeddings rank text_to_speech first for both; the name decides.
    assert names(await search(acts, "t-rank", "speech to text"))[0] == "speech_to_text"
    assert names(await search(acts, "t-rank", "text to speech"))[0] == "text_to_speech"
    assert names(await search(acts, "t-rank", "DNS lookup for example.com"))[0] == "dns_lookup"


def test_name_boost_needs_the_whole_name_as_a_phrase() -> None:
    assert name_boost("speech to text please", "speech_to_text") == NAME_BOOST
    assert name_boost("Speech-To-Text", "speech_to_text") == NAME_BOOST
    assert name_boost("text to speech", "speech_to_text") == 0
    assert name_boost("text my mom", "text_to_speech") == 0
    assert name_boost("create issue in github", "mcp:github/create_issue") == NAME_BOOST
    assert name_boost("getTime", "get_time") == NAME_BOOST
    assert name_boost("time", "get_time") == 0
    assert words("mcp:github/createIssue v2") == ["mcp", "github", "create", "issue", "v2"]
    assert tool_text("mcp:time/get_now", "Now.\n  Really.", {"properties": {"tz": {}}}) == (
        "time get now: Now. Really. (parameters: tz)"
    )
    assert clip("word " * 100, 20) == "word word word word…"
    assert clip("short") == "short"


async def test_the_index_follows_changes(acts: ToolSearchActivities, pool: Pool) -> None:
    await search(acts, "t-change", "warm up")  # built-ins may still need indexing
    async with pool.connection() as conn:
        for name in ("tide_table", "bus_times", "lottery_numbers"):
            await tools.register_tool(conn, "t-change", name, http_spec(TIDES[name], ["q"]))
    out = await search(acts, "t-change", "when is high tide")
    assert (out.embedded, out.removed) == (3, 0) and names(out)[0] == "tide_table"
    again = await search(acts, "t-change", "when is high tide")
    assert (again.embedded, again.removed) == (0, 0) and again.hits == out.hits

    # A new version with another description is re-embedded; only that tool.
    async with pool.connection() as conn:
        await tools.register_tool(
            conn, "t-change", "lottery_numbers",
            http_spec("Winning numbers of the latest EuroMillions draw.", ["q"]),
        )  # fmt: skip
        await tools.register_tool(
            conn, "t-change", "bus_times", http_spec(TIDES["bus_times"], ["q"])
        )
    out = await search(acts, "t-change", "did my euromillions ticket win")
    assert (out.embedded, out.removed) == (1, 0) and names(out)[0] == "lottery_numbers"
    assert "EuroMillions" in out.hits[0].description

    # Disabled tools leave the index and the results; enabled again, they come back.
    async with pool.connection() as conn:
        await tools.set_tool_enabled(conn, "t-change", "tide_table", False)
    out = await search(acts, "t-change", "when is high tide")
    assert (out.embedded, out.removed) == (0, 1) and "tide_table" not in names(out)
    assert not (await search(acts, "t-change", "high tide", names=["tide_table"])).hits
    async with pool.connection() as conn:
        await tools.set_tool_enabled(conn, "t-change", "tide_table", True)
    out = await search(acts, "t-change", "when is high tide")
    assert (out.embedded, out.removed) == (1, 0) and names(out)[0] == "tide_table"

    # Deleted rows too.
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM tools WHERE tenant_id = 't-change' AND name = 'bus_times'")
    out = await search(acts, "t-change", "next bus to the station")
    assert (out.embedded, out.removed) == (0, 1) and "bus_times" not in names(out)


async def test_a_lost_index_rebuilds_itself(
    acts: ToolSearchActivities, vectors: VectorStore
) -> None:
    await search(acts, "t-rank", "warm up")
    vectors.delete(COLLECTION, [point_id("t-rank", "currency_convert"), point_id("*", "get_time")])
    out = await search(acts, "t-rank", "how much is 100 dollars in euros")
    assert out.embedded == 2 and names(out)[0] == "currency_convert"


async def test_tenants_only_see_their_own_tools(acts: ToolSearchActivities, pool: Pool) -> None:
    async with pool.connection() as conn:
        await tools.register_tool(
            conn,
            "t-b",
            "secret_recipe",
            http_spec("Grandma's secret chocolate cookie recipe.", ["q"]),
        )
        # Same name in both tenants, different descriptions: each sees its own.
        await tools.register_tool(
            conn, "t-a", "lookup", http_spec("Look up a word in the Latin dictionary.", ["q"])
        )
        await tools.register_tool(
            conn,
            "t-b",
            "lookup",
            http_spec("Look up a parcel by its courier tracking code.", ["q"]),
        )
    a = await search(acts, "t-a", "chocolate cookie recipe", limit=50)
    assert "secret_recipe" not in names(a)
    b = await search(acts, "t-b", "chocolate cookie recipe")
    assert names(b)[0] == "secret_recipe"
    a_lookup = (await search(acts, "t-a", "lookup", names=["lookup"])).hits
    b_lookup = (await search(acts, "t-b", "lookup", names=["lookup"])).hits
    assert [h.description for h in a_lookup] == ["Look up a word in the Latin dictionary."]
    assert [h.description for h in b_lookup] == ["Look up a parcel by its courier tracking code."]
    # Another tenant's tools are not even candidates when named.
    assert not (await search(acts, "t-a", "cookies", names=["secret_recipe"])).hits
    # Built-ins are everyone's.
    assert names(await search(acts, "t-a", "what time is it in Tokyo"))[0] == "get_time"


async def test_names_restrict_the_candidates(acts: ToolSearchActivities) -> None:
    allowed = ["calculator", "weather_forecast", "send_sms"]
    out = await search(acts, "t-rank", "temperature in Paris", names=allowed)
    assert names(out)[0] == "weather_forecast" and set(names(out)) <= set(allowed)
    assert len(out.hits) == 3
    one = await search(acts, "t-rank", "temperature in Paris", limit=1, names=allowed)
    assert names(one) == ["weather_forecast"]
    assert not (await search(acts, "t-rank", "temperature", names=[])).hits
    assert not (await search(acts, "t-rank", "temperature", names=["no_such_tool"])).hits
    # A named tool outside the nearest candidates still gets its name boost.
    out = await search(acts, "t-rank", "qr code generate", names=["qr_code_generate", "send_sms"])
    assert names(out)[0] == "qr_code_generate"


def test_inputs_are_validated() -> None:
    for bad in ({"query": ""}, {"query": "   "}, {"limit": 0}, {"limit": 51}, {"query": "x" * 501}):
        with pytest.raises(ValueError):
            ToolSearchInput.model_validate({"tenant_id": "t", "query": "q", **bad})
    assert ToolSearchInput(tenant_id="t", query="  time  ").query == "time"


TIDES = {
    "tide_table": "High and low tide times and heights for a harbour.",
    "bus_times": "Next departures of city buses from a stop.",
    "lottery_numbers": "Results of national lottery draws.",
}
