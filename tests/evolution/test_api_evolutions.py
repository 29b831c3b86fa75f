"""Evolution cycles over HTTP and the CLI: real Postgres and a real Temporal dev server.

No worker runs `EvolutionWorkflow` here: a started cycle stays queued in Temporal, and
its candidates, results and events are written with the store as the workflow would. One
test runs a stub under the workflow's registered name, to answer the approval update.
"""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from api.cli import evolution as cli_evolution
from api.cli.main import cli
from api.client import ColonyClient
from api.live import orchestration_queue
from api.main import create_app
from api.routes.evolution import case_table
from core import search_attributes, tenants
from core import temporal as temporal_support
from core.db import Pool
from core.evolution import cases, store
from core.evolution.cases import EvalCaseSpec, Split, split_of
from core.evolution.payloads import (
    EvolutionInput,
    EvolutionSettings,
    EvolutionStatus,
    PromotionDecision,
)
from core.payloads import RunEvent
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec, RunProgress
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.api.test_runs import parse_sse
from tests.conftest import make_settings
from tests.support.api import in_process_api
from tests.support.services import TemporalServer

ONE, TWO = "evo-one", "evo-two"
UI = "http://temporal-ui.test"
CHECK = [{"kind": "exact", "value": "ok"}]
DIFF = "--- v2\n+++ v3\n Compute.\n+Always show your work.\n"

Api = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    """Tenant ONE's agents `learner` (v2 is live) and `sized`; TWO's `other`."""
    out = {}
    async with pool.connection() as conn:
        for tenant in (ONE, TWO):
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="member")
        for instructions in ("Compute.", "Compute carefully."):
            await agents.create_version(
                conn, ONE, "learner", AgentSpec(instructions=instructions, model="openai/m")
            )
        await agents.create_version(conn, ONE, "sized", AgentSpec(instructions="x", model="o/m"))
        await agents.create_version(conn, TWO, "other", AgentSpec(instructions="x", model="o/m"))
    return out


@pytest.fixture
def settings(database_url: str, temporal: TemporalServer, tmp_path: Path) -> Settings:
    return make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        COLONY_DATA_DIR=str(tmp_path / "data"),
        COLONY_TEMPORAL_UI_URL=UI,
        COLONY_TASK_QUEUE_SUFFIX="-" + uuid.uuid4().hex[:8],
    )


@pytest.fixture
async def client(settings: Settings) -> Client:
    return await temporal_support.connect(settings)


@pytest.fixture
async def api(settings: Settings, keys: dict[str, str]) -> AsyncIterator[Api]:
    """`async with api(tenant) as http:` an HTTP client of the app with that tenant's key."""
    async with in_process_api(settings) as client_for:
        yield lambda tenant: client_for(keys[tenant])


def case_id_in(split: Split, n: int, prefix: str = "case") -> str:
    """The n-th case id (of a stable sequence) that falls in `split`."""
    found = (f"{prefix}-{i}" for i in range(10_000))
    return [c for c in found if split_of(c) == split][n]


async def add_cases(pool: Pool, agent: str, counts: dict[Split, int]) -> None:
    async with pool.connection() as conn:
        for split, count in counts.items():
            for n in range(count):
                await cases.add_case(
                    conn, ONE, agent, EvalCaseSpec(objective=f"{split} {n}", checks=CHECK),
                    case_id=case_id_in(split, n, prefix=agent),
                )  # fmt: skip


@pytest.fixture(scope="module")
async def learner_cases(pool: Pool, keys: dict[str, str]) -> None:
    """One case of each split for `learner`."""
    await add_cases(pool, "learner", {"train": 1, "validation": 1, "holdout": 1})


async def new_cycle(pool: Pool, agent: str = "learner") -> store.EvolutionRecord:
    """A cycle row with no workflow behind it."""
    async with pool.connection() as conn:
        return await store.create_evolution(
            conn, tenant_id=ONE, agent_name=agent, incumbent_version=2,
            settings=EvolutionSettings(candidates=2),
        )  # fmt: skip


def conflict(response: httpx.Response) -> str:
    """The message of a 409 error body."""
    return str(assert_error(response, 409, "conflict")["message"])


async def test_preflight_estimates_the_evaluation_runs(api: Api, pool: Pool) -> None:
    async with api(ONE) as http:
        empty = await http.post("/v1/agents/sized/evolutions/preflight")
        assert empty.status_code == 200, empty.text
        assert empty.json() == {
            "eval_runs": 0, "cases": {"train": 0, "validation": 0, "holdout": 0},
            "candidates": 3, "max_eval_runs": 400, "within_budget": True, "max_cost_usd": None, "cost_usd": None,
        }  # fmt: skip
        # Cases are counted by the split their ids put them in (the ids are picked for it).
        await add_cases(pool, "sized", {"train": 3, "validation": 2, "holdout": 4})
        default = (await http.post("/v1/agents/sized/evolutions/preflight", json={})).json()
        assert default["cases"] == {"train": 3, "validation": 2, "holdout": 4}
        assert default["eval_runs"] == (3 + 1) * (2 + 4) + 3
        tight = await http.post(
            "/v1/agents/sized/evolutions/preflight",
            json={"settings": {"candidates": 8, "max_eval_runs": 50, "max_cost_usd": 0.5}},
        )
        assert tight.json()["eval_runs"] == 9 * 6 + 3 and tight.json()["within_budget"] is False
        assert tight.json()["max_cost_usd"] == 0.5
        # With finished live runs, the estimate prices the evaluation runs at their average.
        async with pool.connection() as conn:
            live = await agents.get_version(conn, ONE, "sized")
            for cost in (0.001, 0.003):
                run, _, _ = await runs.create_run(
                    conn, tenant_id=ONE, agent_name="sized", agent_version=live.version,
                    objective="live",
                )  # fmt: skip
                await runs.finish(
                    conn, run.id, outcome="succeeded", reason=None, result="ok",
                    progress=RunProgress(cost_usd=cost),
                )  # fmt: skip
        priced = (await http.post("/v1/agents/sized/evolutions/preflight", json={})).json()
        assert priced["cost_usd"] == pytest.approx(0.002 * priced["eval_runs"])
        capped = await http.post(
            "/v1/agents/sized/evolutions/preflight", json={"settings": {"max_cost_usd": 0.01}}
        )
        assert capped.json()["within_budget"] is False  # 27 runs at $0.002 is $0.054
        # Nothing was started.
        assert (await http.get("/v1/agents/sized/evolutions")).json() == []

        assert_error(await http.post("/v1/agents/nope/evolutions/preflight"), 404, "not_found")
        for bad in ({"settings": {"candidates": 9}}, {"settings": {"candidatez": 2}}, {"x": 1}):
            response = await http.post("/v1/agents/sized/evolutions/preflight", json=bad)
            assert_error(response, 422, "invalid_request")
    async with api(TWO) as other:
        assert_error(await other.post("/v1/agents/sized/evolutions/preflight"), 404, "not_found")


async def test_a_cycle_starts_queued_in_temporal(
    api: Api, pool: Pool, client: Client, settings: Settings, learner_cases: None
) -> None:
    async with api(ONE) as http:
        started = await http.post(
            "/v1/agents/learner/evolutions",
            json={"settings": {"candidates": 2, "approval": "human", "max_cost_usd": 1.5}},
        )
        assert started.status_code == 201, started.text
        evolution = started.json()
        evolution_id = evolution["id"]
        assert evolution_id.startswith("evo_") and evolution["agent"] == "learner"
        assert (evolution["status"], evolution["incumbent_version"]) == ("queued", 2)
        assert (evolution["trigger"], evolution["decision"]) == ("manual", None)
        assert evolution["settings"]["candidates"] == 2
        assert evolution["settings"]["approval"] == "human"
        assert evolution["settings"]["max_cost_usd"] == 1.5
        counts = evolution["estimate"]["cases"]
        assert min(counts.values()) >= 1
        assert evolution["estimate"]["eval_runs"] == (
            3 * (counts["validation"] + counts["holdout"]) + counts["train"]
        )
        assert evolution["candidates"] == [] and evolution["cases"] == []
        assert evolution["progress"] is None
        workflow_id = f"evolution-{evolution_id}"
        assert evolution["temporal_ui"] == f"{UI}/namespaces/default/workflows/{workflow_id}"

        # Queued in Temporal under the workflow's name, on the orchestration lane.
        handle = client.get_workflow_handle(workflow_id)
        described = await handle.describe()
        assert described.workflow_type == "EvolutionWorkflow"
        assert described.task_queue == orchestration_queue(settings)
        assert described.status == WorkflowExecutionStatus.RUNNING
        attributes = described.typed_search_attributes
        assert attributes.get(search_attributes.TENANT) == ONE
        assert attributes.get(search_attributes.AGENT) == "learner"
        assert attributes.get(search_attributes.AGENT_VERSION) == 2
        assert attributes.get(search_attributes.KIND) == "evolution"
        history = await handle.fetch_history()
        started_event = history.events[0].workflow_execution_started_event_attributes
        (arg,) = await client.data_converter.decode(started_event.input.payloads, [EvolutionInput])
        assert arg == EvolutionInput(tenant_id=ONE, evolution_id=evolution_id)

        second = (await http.post("/v1/agents/learner/evolutions")).json()
        assert second["settings"] == EvolutionSettings().model_dump(mode="json")
        listed = (await http.get("/v1/agents/learner/evolutions")).json()
        assert [e["id"] for e in listed][:2] == [second["id"], evolution_id]
        assert all(e["estimate"] is None for e in listed)
        shown = (await http.get(f"/v1/agents/learner/evolutions/{evolution_id}")).json()
        assert shown == {**evolution, "estimate": None, "updated_at": shown["updated_at"]}
        assert (await http.get("/v1/agents/sized/evolutions")).json() == []

        # Nothing waits for approval in a queued cycle.
        refused = await http.post(
            f"/v1/agents/learner/evolutions/{evolution_id}/approve", json={"approved": True}
        )
        assert "queued" in conflict(refused)
        cancelled = await http.post(f"/v1/agents/learner/evolutions/{second['id']}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["id"] == second["id"]

        assert_error(await http.post("/v1/agents/nope/evolutions"), 404, "not_found")
        assert_error(
            await http.post("/v1/agents/learner/evolutions", json={"settings": {"approval": "x"}}),
            422, "invalid_request",
        )  # fmt: skip
    for workflow_id in (f"evolution-{evolution_id}", f"evolution-{second['id']}"):
        await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_the_per_case_table_compares_each_candidate_with_the_incumbent(
    api: Api, pool: Pool
) -> None:
    record = await new_cycle(pool)
    train, val_a, val_b, hold = (
        case_id_in("train", 0), case_id_in("validation", 0), case_id_in("validation", 1),
        case_id_in("holdout", 0),
    )  # fmt: skip
    async with pool.connection() as conn:
        await cases.add_case(
            conn, ONE, "learner", EvalCaseSpec(objective="guarded", checks=CHECK, guard=True),
            case_id=val_a,
        )  # fmt: skip
        await store.add_candidate(
            conn, ONE, record.id, version=3, kind="instruction_edit", rationale="show work",
            diff=DIFF,
        )  # fmt: skip
        await store.add_candidate(conn, ONE, record.id, version=4, kind="few_shot",
                                  rationale="demos", diff="+ example")  # fmt: skip
        await store.add_candidate(
            conn, ONE, record.id, version=-1, kind="rewrite", rationale="copy",
            diff="+ 391", rejected="copies expected outputs of holdout cases",
        )  # fmt: skip
        await store.set_candidate_score(conn, record.id, 3, {"validation": {"mean": 1.0}}, 0.02)
        results: list[tuple[int, str, Split, float | None, bool]] = [
            (2, train, "train", 1.0, True),
            (2, val_a, "validation", 0.5, False),
            (3, val_a, "validation", 1.0, True),  # win
            (4, val_a, "validation", None, False),  # failed: counts as 0, a loss
            (3, val_b, "validation", 1.0, True),  # the incumbent has no result yet
            (2, hold, "holdout", None, False),
            (3, hold, "holdout", 0.0, False),  # None and 0: a tie
            (4, hold, "holdout", 0.2, False),  # win
        ]
        for version, case_id, split, score, passed in results:
            await store.record_result(
                conn, ONE, record.id, version=version, case_id=case_id, split=split,
                run_id=None, score=score, passed=passed, detail="", cost_usd=0.01,
                latency_s=1.0,
            )  # fmt: skip

    async with api(ONE) as http:
        body = (await http.get(f"/v1/agents/learner/evolutions/{record.id}")).json()
    table = body["cases"]
    assert [(r["case_id"], r["split"], r["guard"]) for r in table] == [
        (train, "train", None), (val_a, "validation", True), (val_b, "validation", None),
        (hold, "holdout", None),
    ]  # fmt: skip
    assert table[0]["incumbent"] == {
        "version": 2, "score": 1.0, "passed": True, "versus_incumbent": None
    }  # fmt: skip
    assert table[0]["candidates"] == []
    assert [(s["version"], s["score"], s["versus_incumbent"]) for s in table[1]["candidates"]] == [
        (3, 1.0, "win"), (4, None, "loss"),
    ]  # fmt: skip
    assert table[2]["incumbent"] is None
    assert table[2]["candidates"][0]["versus_incumbent"] is None
    assert [s["versus_incumbent"] for s in table[3]["candidates"]] == ["tie", "win"]
    by_version = {c["version"]: c for c in body["candidates"]}
    assert [c["version"] for c in body["candidates"]] == [3, 4, -1]
    assert (by_version[3]["wins"], by_version[3]["losses"], by_version[3]["ties"]) == (1, 0, 1)
    assert (by_version[4]["wins"], by_version[4]["losses"], by_version[4]["ties"]) == (1, 1, 0)
    assert by_version[3]["diff"] == DIFF and by_version[3]["cost_usd"] == 0.02
    assert by_version[3]["score"] == {"validation": {"mean": 1.0}}
    assert by_version[-1]["rejected"] == "copies expected outputs of holdout cases"


def test_the_case_table_is_empty_without_results() -> None:
    assert case_table(2, [], {}) == []


async def test_events_stream_until_the_cycle_finishes(api: Api, pool: Pool) -> None:
    record = await new_cycle(pool)
    first = [
        RunEvent(key="started", type="evolution.started", data={"incumbent_version": 2}),
        RunEvent(key="proposed-3", type="candidate.proposed", data={"version": 3}),
    ]
    async with pool.connection() as conn:
        await store.append_events(conn, ONE, record.id, first)
    path = f"/v1/agents/learner/evolutions/{record.id}/events"
    async with api(ONE) as http:
        streaming = asyncio.create_task(http.get(path))
        await asyncio.sleep(0.5)
        assert not streaming.done()  # the stream waits for more
        async with pool.connection() as conn:
            await store.append_events(conn, ONE, record.id, [
                RunEvent(key="finished", type="evolution.finished",
                         data={"status": "succeeded", "decision": "keep"}),
                RunEvent(key="late", type="evolution.late"),
            ])  # fmt: skip
        response = await asyncio.wait_for(streaming, 10)
        assert response.status_code == 200
        events = parse_sse(response.text)
        assert [(e["id"], e["event"]) for e in events] == [
            (1, "evolution.started"), (2, "candidate.proposed"), (3, "evolution.finished"),
        ]  # fmt: skip
        assert events[2]["data"] == {"status": "succeeded", "decision": "keep"}
        resumed = parse_sse((await http.get(path, headers={"Last-Event-ID": "2"})).text)
        assert [e["event"] for e in resumed] == ["evolution.finished"]
        listed = (await http.get(path, params={"format": "json", "after": 1})).json()
        assert [e["type"] for e in listed] == [
            "candidate.proposed", "evolution.finished", "evolution.late",
        ]  # fmt: skip
        assert_error(await http.get(path, headers={"Last-Event-ID": "x"}), 422, "invalid_request")


async def test_other_tenants_and_agents_get_404(api: Api, pool: Pool) -> None:
    record = await new_cycle(pool)
    base = f"/v1/agents/learner/evolutions/{record.id}"
    async with api(TWO) as other:
        assert_error(await other.get(base), 404, "not_found")
        assert_error(await other.get(base + "/events"), 404, "not_found")
        assert_error(await other.post(base + "/approve", json={"approved": True}), 404, "not_found")
        assert_error(await other.post(base + "/cancel"), 404, "not_found")
        assert_error(await other.get("/v1/agents/learner/evolutions"), 404, "not_found")
        assert_error(await other.post("/v1/agents/learner/evolutions"), 404, "not_found")
        assert (await other.get("/v1/agents/other/evolutions")).json() == []
    async with api(ONE) as http:
        assert_error(await http.get(f"/v1/agents/sized/evolutions/{record.id}"), 404, "not_found")
        assert_error(await http.get("/v1/agents/learner/evolutions/evo_nope"), 404, "not_found")


@workflow.defn(name="EvolutionWorkflow", sandboxed=False)
class StubEvolution:
    """Waits for approval at once, then runs until cancelled."""

    def __init__(self) -> None:
        self.decision: PromotionDecision | None = None

    @workflow.run
    async def run(self, arg: EvolutionInput) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update(name="approve_promotion")
    def approve_promotion(self, decision: PromotionDecision) -> EvolutionStatus:
        self.decision = decision
        return self.status()

    @approve_promotion.validator
    def _waiting(self, decision: PromotionDecision) -> None:
        if self.decision is not None:
            raise ValueError("the cycle is not waiting for approval (phase finished)")

    @workflow.query(name="status")
    def status(self) -> EvolutionStatus:
        if self.decision is None:
            return EvolutionStatus(phase="waiting_for_approval", waiting_version=3)
        return EvolutionStatus(phase="finished")


async def test_approval_goes_to_the_workflow_as_an_update(
    api: Api, pool: Pool, client: Client, settings: Settings
) -> None:
    worker = Worker(
        client, task_queue=orchestration_queue(settings), workflows=[StubEvolution],
        max_cached_workflows=0,
    )  # fmt: skip
    async with worker, api(ONE) as http:
        evolution = (await http.post("/v1/agents/learner/evolutions")).json()
        base = f"/v1/agents/learner/evolutions/{evolution['id']}"
        async with pool.connection() as conn:  # as the workflow's first activity does
            await store.set_state(conn, evolution["id"], status="waiting", phase="waiting")
        waiting = (await http.get(base)).json()
        assert waiting["status"] == "waiting"
        assert waiting["progress"]["phase"] == "waiting_for_approval"
        assert waiting["progress"]["waiting_version"] == 3

        approved = await http.post(base + "/approve", json={"approved": True, "reason": "good"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["progress"]["phase"] == "finished"
        again = await http.post(base + "/approve", json={"approved": False})
        assert "not waiting for approval" in conflict(again)
        assert_error(await http.post(base + "/approve", json={"approve": True}), 422,
                     "invalid_request")  # fmt: skip

        cancelled = await http.post(base + "/cancel")
        assert cancelled.status_code == 202, cancelled.text
        handle = client.get_workflow_handle(f"evolution-{evolution['id']}")
        for _ in range(100):
            if (await handle.describe()).status == WorkflowExecutionStatus.CANCELED:
                break
            await asyncio.sleep(0.1)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        # The workflow has ended, though the row has not caught up: a clear 409.
        gone = await http.post(base + "/approve", json={"approved": True})
        assert "has no running workflow" in conflict(gone)

        # A cycle with no workflow at all (its start failed).
        orphan = await new_cycle(pool)
        async with pool.connection() as conn:
            await store.set_state(conn, orphan.id, status="running")
        lost = await http.post(
            f"/v1/agents/learner/evolutions/{orphan.id}/approve", json={"approved": True}
        )
        assert "has no running workflow" in conflict(lost)

        # A finished cycle can be neither approved nor cancelled.
        async with pool.connection() as conn:
            await store.finish(
                conn, orphan.id, status="succeeded", decision="keep", promoted_version=None,
                reasons=["no candidate beat the incumbent"], gate=None, cost_usd=0.0,
            )  # fmt: skip
        for action, json_body in (("approve", {"approved": True}), ("cancel", None)):
            response = await http.post(
                f"/v1/agents/learner/evolutions/{orphan.id}/{action}", json=json_body
            )
            assert "has finished (succeeded)" in conflict(response)


async def test_the_cli(
    settings: Settings,
    keys: dict[str, str],
    pool: Pool,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    learner_cases: None,
) -> None:
    app = create_app(settings)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            api_client = ColonyClient(make_settings(COLONY_API_KEY=keys[ONE]))
            http.headers["Authorization"] = f"Bearer {keys[ONE]}"
            api_client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_evolution, "api_client", lambda: api_client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})

    async def colony(*args: str) -> Result:
        return await asyncio.to_thread(run, *args)

    async def newest() -> store.EvolutionRecord | None:
        async with pool.connection() as conn:
            found = await store.list_evolutions(conn, ONE, "learner", limit=1)
        return found[0] if found else None

    before = await newest()
    started = await colony("evolve", "learner", "--candidates", "2", "--no-follow")
    assert started.exit_code == 0, started.output
    out = " ".join(started.output.split())
    assert "estimate: " in out and " evaluation runs for 2 candidates" in out
    evolution_id = re.search(r"evolution (evo_[0-9a-f]+)", out).group(1)  # type: ignore[union-attr]
    assert "of learner · incumbent v2 · 2 candidates · approval auto" in out
    assert f"Temporal UI: {UI}/namespaces/default/workflows/evolution-{evolution_id}" in out
    assert (await newest()) != before

    # Followed: the command streams events until the cycle's decision.
    following = asyncio.create_task(
        colony("evolve", "learner", "--approval", "human", "--max-cost", "2", "--max-eval-runs",
               "3")
    )  # fmt: skip
    for _ in range(100):
        latest = await newest()
        if latest is not None and latest.id != evolution_id:
            break
        await asyncio.sleep(0.1)
    assert latest is not None and latest.id != evolution_id
    assert latest.settings.approval == "human" and latest.settings.max_eval_runs == 3
    async with pool.connection() as conn:
        await store.append_events(conn, ONE, latest.id, [
            RunEvent(key="s", type="evolution.started", data={"cases": 3}),
            RunEvent(key="w", type="evolution.waiting", data={"version": 3}),
            RunEvent(key="f", type="evolution.finished", data={
                "status": "succeeded", "decision": "promote", "version": 3, "cost_usd": 0.25,
                "reasons": ["beats v2 by 0.4 on validation"]}),
        ])  # fmt: skip
    followed = await asyncio.wait_for(following, 30)
    assert followed.exit_code == 0, followed.output
    out = " ".join(followed.output.split())
    assert "more runs than the cap" in out
    assert "▶ evolution.started cases=3" in out and "▶ evolution.waiting version=3" in out
    assert f"approve with `colony evolutions approve learner {latest.id}`" in out
    assert "✔ promoted v3 · $0.250000" in out and "- beats v2 by 0.4 on validation" in out

    listed = await colony("evolutions", "list", "learner")
    assert listed.exit_code == 0, listed.output
    assert evolution_id in listed.output and latest.id in listed.output

    # A cycle with candidates and results: its diffs and per-case table.
    record = await new_cycle(pool)
    case_id = case_id_in("validation", 0)
    async with pool.connection() as conn:
        await store.add_candidate(conn, ONE, record.id, version=3, kind="instruction_edit",
                                  rationale="show the work", diff=DIFF)  # fmt: skip
        for version, score in ((2, 0.0), (3, 1.0)):
            await store.record_result(
                conn, ONE, record.id, version=version, case_id=case_id, split="validation",
                run_id=None, score=score, passed=score > 0, detail="", cost_usd=0.0,
                latency_s=None,
            )  # fmt: skip
        await store.finish(
            conn, record.id, status="succeeded", decision="promote", promoted_version=3,
            reasons=["beats v2"], gate=None, cost_usd=0.5,
        )  # fmt: skip
    shown = await colony("evolutions", "show", "learner", record.id)
    assert shown.exit_code == 0, shown.output
    out = " ".join(shown.output.split())
    assert f"evolution {record.id} of learner · succeeded" in out and "promote v3" in out
    assert "candidate v3 · instruction_edit · 1 wins, 0 losses, 0 ties" in out
    assert "+Always show your work." in shown.output and "show the work" in out
    assert case_id in out and "0.00" in out and "1.00 ✔ win" in out

    refused = await colony("evolutions", "approve", "learner", record.id)
    assert refused.exit_code == 1 and "has finished" in refused.output
    queued = await colony("evolutions", "approve", "learner", evolution_id, "--reject")
    assert queued.exit_code == 1 and "is queued" in queued.output
    cancel = await colony("evolutions", "cancel", "learner", evolution_id)
    assert cancel.exit_code == 0 and f"cancellation requested for {evolution_id}" in cancel.output
    missing = await colony("evolutions", "show", "learner", "evo_nope")
    assert missing.exit_code == 1 and "not found" in missing.output
    for workflow_id in (f"evolution-{evolution_id}", f"evolution-{latest.id}"):
        await client.get_workflow_handle(workflow_id).terminate("test over")


def test_a_stream_without_a_decision_renders_none() -> None:
    assert cli_evolution.render_evolution_events([], "a", "evo_x") is None
    started = [{"type": "evolution.started", "data": {"reasons": ["a", "b"], "nested": {}}}]
    assert cli_evolution.render_evolution_events(started, "a", "evo_x") is None
