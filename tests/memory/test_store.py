"""`MemoryStore` with real Postgres, embedded Qdrant (Edge) in a tmp dir and the real MiniLM."""

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.memory.store import (
    MemoryStore,
    MemoryStoreActivities,
    collection_for,
    mask_value,
    memory_id,
)
from activities.memory.vectors import MEMORY, VectorStore
from activities.providers.embeddings import MODEL_ID, MiniLmEmbedder
from core import tenants
from core.db import Pool
from core.errors import InvalidInput
from core.memory import store as rows
from core.memory.payloads import (
    DeleteMemoriesInput,
    MemoryItem,
    RecallInput,
    RecallOutput,
    SkillUse,
    WriteMemoriesInput,
)
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec
from tests.conftest import make_settings
from tests.support.tracing import captured_spans

TENANTS = ("m-rank", "m-idem", "m-scope", "m-del", "m-mask", "m-iso-a", "m-iso-b", "m-re", "m-err",
           "m-trace")  # fmt: skip
EPISODES = {
    "currency": "Objective: convert 250 US dollars to euros at today's rate. Outcome: succeeded."
    " Tools used: http_fetch, calculator. Summary: fetched the ECB rate, 250 USD = 231 EUR.",
    "weather": "Objective: will it rain in Paris tomorrow? Outcome: succeeded. Tools used:"
    " weather_forecast. Summary: 80% chance of rain in the afternoon.",
    "sql": "Objective: write a SQL query that lists customers with unpaid invoices. Outcome:"
    " succeeded. Summary: a LEFT JOIN of invoices on payments where payment_id IS NULL.",
    "poem": "Objective: write a short poem about autumn leaves. Outcome: succeeded. Summary:"
    " four lines of rhyming verse about falling red leaves.",
    "flight": "Objective: find the cheapest flight from Berlin to Lisbon in May. Outcome:"
    " failed. Summary: the flight search tool timed out twice.",
    "python": "Objective: fix the failing unit test in the payments module. Outcome: succeeded."
    " Tools used: run_python, read_file. Summary: an off-by-one in the date range.",
}


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    return MiniLmEmbedder()


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    store = VectorStore(str(tmp_path_factory.mktemp("qdrant") / "q"))
    yield store
    store.close()


@pytest.fixture(scope="module")
async def store(
    pool: Pool, vectors: VectorStore, embedder: MiniLmEmbedder
) -> AsyncIterator[MemoryStore]:
    async with pool.connection() as conn:
        for tenant in TENANTS:
            await tenants.ensure_tenant(conn, tenant, tenant)
    yield MemoryStore(make_settings(), pool, vectors, embedder)


def item(key: str, content: str, **fields: Any) -> MemoryItem:
    return MemoryItem.model_validate(
        {"key": key, "agent_name": "assistant", "kind": "episode", "content": content, **fields}
    )


async def write(store: MemoryStore, tenant: str, *items: MemoryItem) -> list[str]:
    out = await store.write(WriteMemoriesInput(tenant_id=tenant, items=list(items)))
    return out.ids


async def recall(store: MemoryStore, tenant: str, query: str, **fields: Any) -> RecallOutput:
    # Every hit, however weak (cosine can be negative), unless the test says otherwise.
    fields = {"min_score": -1.0, **fields}
    return await store.recall(
        RecallInput.model_validate({"tenant_id": tenant, "query": query, **fields})
    )


async def new_run(pool: Pool, tenant: str, agent: str = "assistant") -> str:
    async with pool.connection() as conn:
        await agents.create_version(
            conn, tenant, agent, AgentSpec(instructions="x", model="openai/m")
        )
        record, _, _ = await runs.create_run(
            conn, tenant_id=tenant, agent_name=agent, agent_version=1, objective="go"
        )
    return record.id


def points(vectors: VectorStore, tenant: str, **where: Any) -> int:
    return vectors.count(collection_for(MODEL_ID), tenant_id=tenant, where=where)


async def row_count(pool: Pool, tenant: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM memories WHERE tenant_id = %s", (tenant,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_a_similar_objective_recalls_the_right_episode(store: MemoryStore) -> None:
    ids = await write(
        store, "m-rank", *(item(f"episode:{name}", text) for name, text in EPISODES.items())
    )
    by_name = dict(zip(EPISODES, ids, strict=True))
    cases = {
        "how many euros is 40 dollars": "currency",
        "is it going to rain in Lyon this weekend": "weather",
        "query the database for clients who have not paid": "sql",
        "compose verses about the fall season": "poem",
        "book a cheap plane ticket to Madrid": "flight",
        "a test in the billing code is broken, debug it": "python",
    }
    for query, expected in cases.items():
        out = await recall(store, "m-rank", query, limit=3)
        assert out.hits[0].id == by_name[expected], (query, [h.content[:40] for h in out.hits])
    out = await recall(store, "m-rank", "convert dollars to euros", limit=10)
    assert len(out.hits) == len(EPISODES)
    assert [h.score for h in out.hits] == sorted((h.score for h in out.hits), reverse=True)
    top = out.hits[0]
    assert (top.kind, top.agent_name, top.scope, top.uses) == ("episode", "assistant", "private", 0)
    assert top.content == EPISODES["currency"] and top.created_at.tzinfo is not None
    # min_score drops weak matches.
    strict = await recall(store, "m-rank", "convert dollars to euros", min_score=0.5)
    assert [h.id for h in strict.hits] == [by_name["currency"]]


async def test_writes_are_idempotent(
    store: MemoryStore, pool: Pool, vectors: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await store.write(
        WriteMemoriesInput(
            tenant_id="m-idem",
            items=[item("fact:1", "The office wifi is called Colony-5G."),
                   item("fact:1", "A repeat of the key in one write: the first wins."),
                   item("fact:2", "The standup is at 9:30 every weekday.")],
        )
    )  # fmt: skip
    assert first.written == 2 and first.ids[0] == first.ids[1] == memory_id("m-idem", "fact:1")
    again = await store.write(
        WriteMemoriesInput(
            tenant_id="m-idem", items=[item("fact:2", "changed"), item("fact:1", "x")]
        )
    )
    assert again.written == 0 and again.ids == [first.ids[2], first.ids[0]]
    assert await row_count(pool, "m-idem") == 2 and points(vectors, "m-idem") == 2
    hits = (await recall(store, "m-idem", "wifi network name")).hits
    assert hits[0].content == "The office wifi is called Colony-5G."

    # Qdrant took the write, Postgres failed: the retry stores the row, no extra point.
    real_insert = rows.insert_memories

    async def failing(*args: Any, **kwargs: Any) -> set[str]:
        raise OSError("postgres went away")

    monkeypatch.setattr(rows, "insert_memories", failing)
    with pytest.raises(OSError, match="went away"):
        await write(store, "m-idem", item("fact:3", "Lunch is served at noon."))
    assert points(vectors, "m-idem") == 3 and await row_count(pool, "m-idem") == 2
    monkeypatch.setattr(rows, "insert_memories", real_insert)
    retried = await store.write(
        WriteMemoriesInput(tenant_id="m-idem", items=[item("fact:3", "Lunch is served at noon.")])
    )
    assert retried.written == 1
    assert points(vectors, "m-idem") == 3 and await row_count(pool, "m-idem") == 3
    assert (await recall(store, "m-idem", "when is lunch")).hits[0].id == retried.ids[0]


async def test_agent_scope_kinds_and_retired(store: MemoryStore) -> None:
    ids = await write(
        store,
        "m-scope",
        item("a", "Alice prefers answers in French.", agent_name="alice", kind="fact"),
        item("b", "Bob's reports go to the finance team.", agent_name="bob", kind="fact"),
        item("s", "Everyone: the VPN must be on for the wiki.", agent_name="bob", kind="fact",
             scope="shared"),
        item("l", "Lesson: check the currency before converting.", agent_name="alice",
             kind="reflexion", reward=-0.5),
        item("k", "Skill: to convert currency, fetch the ECB rate then multiply.",
             agent_name="alice", kind="skill"),
    )  # fmt: skip
    a, b, shared, lesson, skill = ids
    query = "what do I need to know"

    def found(out: RecallOutput) -> set[str]:
        return {h.id for h in out.hits}

    assert found(await recall(store, "m-scope", query, agent_name="alice")) == {
        a,
        shared,
        lesson,
        skill,
    }
    assert found(await recall(store, "m-scope", query, agent_name="bob")) == {b, shared}
    assert found(await recall(store, "m-scope", query)) == set(ids)  # the API's view
    assert found(await recall(store, "m-scope", query, agent_name="carol")) == {shared}
    facts = await recall(store, "m-scope", query, agent_name="alice", kinds=["fact"])
    assert found(facts) == {a, shared}
    lessons = await recall(store, "m-scope", query, kinds=["reflexion", "skill"])
    assert found(lessons) == {lesson, skill}
    assert [h.reward for h in lessons.hits if h.id == lesson] == [-0.5]
    assert found(await recall(store, "m-scope", query, kinds=[])) == set()

    assert await store.set_retired("m-scope", [skill, "not-a-uuid"]) == 1
    assert found(await recall(store, "m-scope", query, kinds=["skill"])) == set()
    retired = await recall(store, "m-scope", query, kinds=["skill"], include_retired=True)
    assert found(retired) == {skill}
    assert await store.set_retired("m-scope", [skill], retired=False) == 1
    assert found(await recall(store, "m-scope", query, kinds=["skill"])) == {skill}


async def test_skill_use_counts_once_per_run(store: MemoryStore, pool: Pool) -> None:
    (skill,) = await write(
        store, "m-scope", item("skill:x", "Skill: always cite sources.", kind="skill")
    )
    run_a, run_b = await new_run(pool, "m-scope"), await new_run(pool, "m-scope")
    use = SkillUse(
        tenant_id="m-scope", skill_ids=[skill, skill, "junk"], succeeded=True, run_id=run_a
    )
    await store.record_skill_use(use)
    await store.record_skill_use(use)  # a retried activity
    await store.record_skill_use(use.model_copy(update={"run_id": run_b, "succeeded": False}))
    # Another tenant cannot count uses of this tenant's skill.
    await store.record_skill_use(use.model_copy(update={"tenant_id": "m-rank", "run_id": "r"}))
    (hit,) = (await recall(store, "m-scope", "cite sources", kinds=["skill"], limit=1)).hits
    assert (hit.id, hit.uses, hit.successes) == (skill, 2, 1)


async def test_deletion_removes_rows_and_vectors(
    store: MemoryStore, pool: Pool, vectors: VectorStore
) -> None:
    run_1, run_2 = await new_run(pool, "m-del", "alice"), await new_run(pool, "m-del", "bob")
    ids = await write(
        store,
        "m-del",
        item("1", "Alice's first note about invoices.", agent_name="alice", source_run_id=run_1),
        item("2", "Alice's second note about invoices.", agent_name="alice", source_run_id=run_1,
             kind="fact"),
        item("3", "Bob's note about the roadmap.", agent_name="bob", source_run_id=run_2),
        item("4", "Bob's old note about hiring.", agent_name="bob"),
        item("5", "Bob's shared note about the office.", agent_name="bob", scope="shared"),
    )  # fmt: skip
    assert points(vectors, "m-del") == 5 and await row_count(pool, "m-del") == 5

    with pytest.raises(InvalidInput, match="needs a filter"):
        await store.delete(DeleteMemoriesInput(tenant_id="m-del"))

    by_run = await store.delete(
        DeleteMemoriesInput(tenant_id="m-del", source_run_id=run_1, kinds=["fact"])
    )
    assert by_run.deleted == 1
    assert points(vectors, "m-del") == 4 and await row_count(pool, "m-del") == 4
    assert (
        await store.delete(DeleteMemoriesInput(tenant_id="m-del", source_run_id=run_1))
    ).deleted == 1
    assert points(vectors, "m-del", agent_name="alice") == 0

    by_id = await store.delete(DeleteMemoriesInput(tenant_id="m-del", ids=[ids[2], "nope"]))
    assert by_id.deleted == 1 and points(vectors, "m-del") == 2
    assert (await store.delete(DeleteMemoriesInput(tenant_id="m-del", ids=[ids[2]]))).deleted == 0

    # Age: nothing is older than an hour ago; everything is older than an hour from now.
    hour = timedelta(hours=1)
    old = DeleteMemoriesInput(
        tenant_id="m-del", agent_name="bob", older_than=datetime.now(UTC) - hour
    )
    assert (await store.delete(old)).deleted == 0
    # An orphan point (its write never reached Postgres) goes with the agent's memories.
    vectors_only = MemoryStore(make_settings(), pool, vectors, store._embedder)
    orphan = vectors_only._masked(memory_id("m-del", "orphan"), item("orphan", "x", agent_name="bob"),
                                  datetime.now(UTC))  # fmt: skip
    await vectors_only._embed_and_upsert("m-del", [orphan], retired=lambda _: False)
    assert points(vectors, "m-del") == 3
    later = old.model_copy(update={"older_than": datetime.now(UTC) + hour})
    assert (await store.delete(later)).deleted == 2
    assert points(vectors, "m-del") == 0 and await row_count(pool, "m-del") == 0
    assert (await recall(store, "m-del", "notes")).hits == []


async def test_secrets_and_pii_are_masked_before_storing_and_embedding(
    store: MemoryStore, pool: Pool, vectors: VectorStore
) -> None:
    secret, email = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2", "jane.doe@example.com"
    content = f"Deployed with OPENAI key {secret}; questions to {email}, card 4111 1111 1111 1111."
    metadata = {"objective": f"use {secret}", "people": [email], "steps": 3}
    (mid,) = await write(store, "m-mask", item("e", content, metadata=metadata))
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT memories::text AS row FROM memories WHERE id = %s", (mid,))
        row = await cur.fetchone()
    assert row is not None
    stored = str(row["row"])
    for leaked in (secret, email, "4111"):
        assert leaked not in stored
    assert "[SECRET]" in stored and "[EMAIL]" in stored and "[CARD]" in stored
    (point,) = vectors.scroll(collection_for(MODEL_ID), tenant_id="m-mask")
    assert secret not in str(point.payload) and email not in str(point.payload)
    assert set(point.payload) == {
        "tenant_id", "agent_name", "kind", "scope", "retired", "source_run_id", "created_at"
    }  # fmt: skip
    (hit,) = (await recall(store, "m-mask", content)).hits  # the query is masked the same way
    assert hit.content == ("Deployed with OPENAI key [SECRET]; questions to [EMAIL], card [CARD].")
    assert hit.metadata == {"objective": "use [SECRET]", "people": ["[EMAIL]"], "steps": 3}
    assert hit.score > 0.999  # the vector is the masked text's
    assert mask_value({"a": (email, 1)}) == {"a": ["[EMAIL]", 1]}


async def test_one_tenant_never_sees_anothers_memories(
    store: MemoryStore, pool: Pool, vectors: VectorStore
) -> None:
    texts = [("x", "The launch code name is Bluebird."), ("y", "Quarterly goals: ship memory.")]
    a_ids = await write(store, "m-iso-a", *(item(k, t) for k, t in texts))
    b_ids = await write(store, "m-iso-b", *(item(k, t) for k, t in texts))
    assert not set(a_ids) & set(b_ids)
    for tenant, own in (("m-iso-a", a_ids), ("m-iso-b", b_ids)):
        out = await recall(store, tenant, "launch code name", limit=100)
        assert {h.id for h in out.hits} == set(own)
        shared = await recall(store, tenant, "launch code name", agent_name="assistant", limit=100)
        assert {h.id for h in shared.hits} <= set(own)
    # Deleting by another tenant's ids does nothing; by agent, only the caller's.
    assert (await store.delete(DeleteMemoriesInput(tenant_id="m-iso-a", ids=b_ids))).deleted == 0
    assert (
        await store.delete(DeleteMemoriesInput(tenant_id="m-iso-a", agent_name="assistant"))
    ).deleted == 2
    assert points(vectors, "m-iso-b") == 2 and await row_count(pool, "m-iso-b") == 2
    assert len((await recall(store, "m-iso-b", "launch code")).hits) == 2


class Shifted:
    """Another 'model': MiniLM vectors with the components rolled, so old vectors are wrong."""

    def __init__(self, inner: MiniLmEmbedder) -> None:
        self.inner = inner

    def embed(self, texts: Any) -> Any:
        import numpy as np

        return np.roll(self.inner.embed(texts), 7, axis=1)


async def test_a_model_change_is_healed_by_reembedding(
    store: MemoryStore, pool: Pool, vectors: VectorStore, embedder: MiniLmEmbedder
) -> None:
    old = MemoryStore(make_settings(), pool, vectors, Shifted(embedder), model_id="old-model/v1")
    assert old.collection == "colony_memories_old_model_v1" != store.collection
    ids = await write(
        old, "m-re",
        *(item(f"e:{n}", EPISODES[n]) for n in ("currency", "weather", "sql")),
        item("k", "Skill: retired one.", kind="skill"),
    )  # fmt: skip
    await old.set_retired("m-re", [ids[3]])
    assert (await recall(store, "m-re", "dollars to euros")).hits == []  # not in the new collection
    async with pool.connection() as conn:
        assert "m-re" in await rows.tenants_with_stale_embeddings(conn, MODEL_ID)
        stale = await rows.stale_embeddings(conn, "m-re", MODEL_ID, 10)
    assert {r.id for r in stale} == set(ids)

    assert await store.reembed("m-re", limit=2) == 2
    assert await store.reembed("m-re", limit=10) == 2
    assert await store.reembed("m-re") == 0
    async with pool.connection() as conn:
        assert "m-re" not in await rows.tenants_with_stale_embeddings(conn, MODEL_ID)
        models = {r.embedding_model for r in (await rows.get_memories(conn, "m-re", ids)).values()}
    assert models == {MODEL_ID}
    assert vectors.count(old.collection, tenant_id="m-re") == 0
    assert points(vectors, "m-re") == 4
    hits = (await recall(store, "m-re", "how many euros is 40 dollars", limit=4)).hits
    assert hits[0].id == ids[0] and ids[3] not in {h.id for h in hits}  # still retired
    deleted = await store.delete(DeleteMemoriesInput(tenant_id="m-re", kinds=["skill"]))
    assert deleted.deleted == 1 and points(vectors, "m-re") == 3


async def test_activity_errors_are_classified(
    store: MemoryStore, pool: Pool, embedder: MiniLmEmbedder
) -> None:
    acts = MemoryStoreActivities(store)
    with pytest.raises(ApplicationError) as no_filter:
        await acts.delete_memories(DeleteMemoriesInput(tenant_id="m-err"))
    assert no_filter.value.type == "InvalidRequest" and no_filter.value.non_retryable
    with pytest.raises(ApplicationError) as no_tenant:
        await acts.write_memories(WriteMemoriesInput(tenant_id="nobody", items=[item("k", "x")]))
    assert no_tenant.value.type == "InvalidRequest" and no_tenant.value.non_retryable
    with pytest.raises(ApplicationError) as no_run:
        await acts.write_memories(
            WriteMemoriesInput(tenant_id="m-err", items=[item("k", "x", source_run_id="run_gone")])
        )
    assert no_run.value.non_retryable
    down = MemoryStore(
        make_settings(), pool, VectorStore("http://127.0.0.1:1", timeout=2), embedder
    )
    with pytest.raises(ApplicationError) as unavailable:
        await MemoryStoreActivities(down).recall_memories(RecallInput(tenant_id="m-err", query="x"))
    assert unavailable.value.type == "DependencyUnavailable" and not unavailable.value.non_retryable
    written = await acts.write_memories(WriteMemoriesInput(tenant_id="m-err", items=[]))
    assert written.ids == [] and written.written == 0
    await acts.record_skill_use(
        SkillUse(tenant_id="m-err", skill_ids=[], succeeded=True, run_id="r")
    )
    out = await acts.recall_memories(RecallInput(tenant_id="m-err", query="anything"))
    assert out.hits == []


def test_memory_collections_are_named_by_model() -> None:
    assert collection_for(MODEL_ID) == "colony_memories_all_minilm_l6_v2_onnx_int8"
    assert collection_for("openai/text-embedding-3-small") == (
        "colony_memories_openai_text_embedding_3_small"
    )
    assert memory_id("t", "k") == memory_id("t", "k") != memory_id("u", "k")


def test_range_and_any_of_filters_in_the_vector_store(tmp_path: Path) -> None:
    import numpy as np

    from activities.memory.vectors import Range, VectorPoint

    vs = VectorStore(MEMORY)
    vs.ensure_collection("c", 2)
    vs.upsert("c", [
        VectorPoint(str(memory_id("t", str(i))), np.array([1.0, i / 10]), {
            "tenant_id": "t", "agent_name": f"a{i % 2}", "scope": "shared" if i == 4 else "private",
            "created_at": float(i),
        })
        for i in range(6)
    ])  # fmt: skip
    assert vs.count("c", tenant_id="t", where={"created_at": Range(gte=2, lt=4)}) == 2
    assert vs.count("c", tenant_id="t", any_of={"agent_name": "a1", "scope": "shared"}) == 4
    assert len(vs.search("c", [1.0, 0.0], tenant_id="t", any_of={"agent_name": "a1"})) == 3
    vs.set_payload("c", [memory_id("t", "0")], {"agent_name": "a1"})
    assert vs.count("c", tenant_id="t", where={"agent_name": "a1"}) == 4
    vs.delete_where("c", tenant_id="t", where={"created_at": Range(lt=3)})
    assert vs.count("c", tenant_id="t") == 3 and vs.count("c", tenant_id="other") == 0
    assert vs.collection_exists("c") and not vs.collection_exists("d")
    vs.close()


def test_a_server_collection_gets_its_payload_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    from unittest.mock import MagicMock

    from qdrant_client import models

    from activities.memory.store import PAYLOAD_INDEXES

    client = MagicMock()
    client.collection_exists.return_value = False
    client.get_collection.return_value.payload_schema = {"kind": object()}  # already there
    client.get_collection.return_value.config.params.vectors = models.VectorParams(
        size=4, distance=models.Distance.COSINE
    )
    server = VectorStore("http://qdrant.invalid:6333")
    monkeypatch.setattr(server, "_open", lambda: client)
    server.ensure_collection("c", 4, indexes=PAYLOAD_INDEXES)
    created = {c.args[1]: c.args[2] for c in client.create_payload_index.call_args_list}
    assert set(created) == {"tenant_id", *PAYLOAD_INDEXES} - {"kind"}
    assert created["tenant_id"].is_tenant  # Qdrant's tenant index: points kept per tenant
    assert created["created_at"] == models.PayloadSchemaType.FLOAT
    assert created["retired"] == models.PayloadSchemaType.BOOL
    assert created["agent_name"] == models.PayloadSchemaType.KEYWORD


async def test_memory_operations_make_spans(store: MemoryStore) -> None:
    with captured_spans() as exporter:
        await write(store, "m-trace", item("a", EPISODES["poem"]), item("b", EPISODES["sql"]))
        await write(store, "m-trace", item("a", EPISODES["poem"]))  # already there
        hits = (await recall(store, "m-trace", "autumn poem", limit=1)).hits
        await store.delete(DeleteMemoriesInput(tenant_id="m-trace", ids=[hits[0].id]))
        spans = [(s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()]
    assert [name for name, _ in spans] == [
        "memory write", "memory write", "memory recall", "memory delete"
    ]  # fmt: skip
    common = {"colony.tenant": "m-trace", "db.namespace": "m-trace",
              "db.collection.name": store.collection}  # fmt: skip
    for name, attributes in spans:
        assert attributes.items() >= common.items(), name
        assert attributes["colony.memory.operation"] == name.removeprefix("memory ")
    assert (spans[0][1]["colony.memory.items"], spans[0][1]["colony.memory.written"]) == (2, 2)
    assert (spans[1][1]["colony.memory.items"], spans[1][1]["colony.memory.written"]) == (1, 0)
    assert spans[2][1]["colony.memory.hits"] == 1 and spans[3][1]["colony.memory.deleted"] == 1
