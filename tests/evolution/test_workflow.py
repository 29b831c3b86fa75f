"""EvolutionWorkflow end to end: real Temporal, Postgres, workers and the scripted model."""

import asyncio
import itertools
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from temporalio.client import WorkflowHandle

from core.db import Pool
from core.evolution import cases as eval_cases
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec, Split, split_of
from core.evolution.payloads import (
    EvolutionInput,
    EvolutionOutput,
    EvolutionSettings,
    PromotionDecision,
)
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import RunProgress
from core.tools import egress as tool_egress
from core.tools import policy
from core.tools import store as tool_store
from core.tools.spec import ToolSpec
from tests.support.model_server import (
    RecordedRequest,
    ScriptedModelServer,
    Step,
    hang,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.workflows.harness import TENANT, Harness, running_harness, spec
from workflows.evolution import EvolutionWorkflow

EvolutionHandle = WorkflowHandle[EvolutionWorkflow, EvolutionOutput]
RULE = "End every answer with the word DONE."
FEEDBACK = "The answer was right but it must end with DONE, as our parser expects."


async def rated_live_run(conn: runs.Conn, tenant: str, agent: str, version: int) -> None:
    """A finished live run of `agent` whose user rated it 1 with `FEEDBACK`: the evidence
    a cycle starts from."""
    live, _, _ = await runs.create_run(
        conn, tenant_id=tenant, agent_name=agent, agent_version=version,
        objective="live: what is 6 times 7?",
    )  # fmt: skip
    await runs.finish(
        conn, live.id, outcome="succeeded", reason=None, result="The answer is 42",
        progress=RunProgress(),
    )  # fmt: skip
    await runs.record_feedback(conn, tenant, live.id, 1, FEEDBACK)


LESSON = "Users complained that my answers lack a closing marker."


@pytest.fixture(scope="module", autouse=True)
async def tenant(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Agents') ON CONFLICT DO NOTHING",
            (TENANT,),
        )


@pytest.fixture
async def harness(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> AsyncIterator[Harness]:
    async with running_harness(temporal, pool, model_server) as running:
        yield running


def case_ids(counts: dict[Split, int]) -> dict[Split, list[str]]:
    """Case ids that fall in each split (the split follows from the id)."""
    out: dict[Split, list[str]] = {split: [] for split in counts}
    prefix = uuid.uuid4().hex[:6]
    for i in itertools.count():
        case_id = f"case-{prefix}-{i}"
        split = split_of(case_id)
        if len(out.get(split, ())) < counts.get(split, 0):
            out[split].append(case_id)
        if all(len(out[s]) == n for s, n in counts.items()):
            return out
    raise AssertionError("unreachable")


def system_text(request: RecordedRequest) -> str:
    return " ".join(str(m.get("content") or "") for m in request.messages if m["role"] == "system")


def user_text(request: RecordedRequest) -> str:
    return " ".join(str(m.get("content") or "") for m in request.messages if m["role"] == "user")


def responder(agent_reply: Callable[[RecordedRequest], Step]) -> Callable[[RecordedRequest], Step]:
    """The proposer adds the rule, the diagnoser blames missing knowledge, agents answer."""

    def respond(request: RecordedRequest) -> Step:
        system = system_text(request)
        if system.startswith("You improve the instructions"):
            return reply(json.dumps({"bullets": [RULE], "rationale": "users need DONE"}))
        if system.startswith("You find why"):
            return reply(json.dumps({"cause": "missing_knowledge", "explanation": "no rule"}))
        if system.startswith("You sort feedback"):
            return reply(json.dumps({"category": "quality_issue"}))
        return agent_reply(request)

    return respond


def done_if_told(request: RecordedRequest) -> Step:
    return reply("The answer is 42 DONE" if "DONE" in system_text(request) else "The answer is 42")


async def setup(
    harness: Harness,
    counts: dict[Split, int],
    *,
    guard: str | None = None,
    **settings: Any,
) -> tuple[str, str, dict[Split, list[str]]]:
    """An agent that omits DONE, cases that check for it, a rated run; a queued cycle."""
    name = "calc-" + uuid.uuid4().hex[:6]
    ids = case_ids(counts)
    async with harness.pool.connection() as conn:
        version, _ = await agents.create_version(
            conn, TENANT, name, spec(instructions="You answer questions about numbers.", tools=[])
        )
        for split, split_ids in ids.items():
            for i, case_id in enumerate(split_ids):
                await eval_cases.add_case(
                    conn, TENANT, name,
                    EvalCaseSpec(
                        objective=f"{split} question {i}: what is 6 times 7?",
                        checks=[{"kind": "contains", "value": "DONE"}],  # type: ignore[list-item]
                    ),
                    case_id=case_id,
                )  # fmt: skip
        if guard is not None:
            await eval_cases.add_case(
                conn, TENANT, name,
                EvalCaseSpec(
                    objective="guard: answer exactly as before",
                    checks=[{"kind": "regex", "value": "^The answer is 42$", "case_sensitive": True}],  # type: ignore[list-item]
                    guard=True,
                ),
                case_id=guard,
            )  # fmt: skip
        await rated_live_run(conn, TENANT, name, version.version)
        record = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=name, incumbent_version=version.version,
            settings=EvolutionSettings.model_validate(
                {"candidates": 1, "kinds": ["instruction_edit"], **settings}
            ),
        )  # fmt: skip
    return name, record.id, ids


async def start(harness: Harness, evolution_id: str) -> EvolutionHandle:
    return await harness.client.start_workflow(
        EvolutionWorkflow.run,
        EvolutionInput(tenant_id=TENANT, evolution_id=evolution_id),
        id=evolutions.workflow_id_for(evolution_id),
        task_queue=TaskQueue.ORCHESTRATION.value + harness.suffix,
    )


COUNTS: dict[Split, int] = {"train": 2, "validation": 6, "holdout": 3}


async def test_feedback_that_exposes_a_missing_rule_leads_to_a_promoted_candidate(
    harness: Harness,
) -> None:
    harness.server.responder = responder(done_if_told)
    name, evolution_id, ids = await setup(harness, COUNTS)
    async with harness.pool.connection() as conn:  # a lesson the agent wrote after a run
        await conn.execute(
            "INSERT INTO memories (id, tenant_id, key, agent_name, kind, content, embedding_model)"
            " VALUES (gen_random_uuid(), %s, %s, %s, 'reflexion', %s, 'test')",
            (TENANT, f"reflexion:{name}", name, LESSON),
        )
    handle = await start(harness, evolution_id)
    output = await handle.result()
    assert output.decision == "promote", output.reasons
    assert output.version is not None
    async with harness.pool.connection() as conn:
        live = await agents.get_version(conn, TENANT, name)
        record = await evolutions.get_evolution(conn, TENANT, evolution_id)
        results = await evolutions.list_results(conn, evolution_id)
        candidates = await evolutions.list_candidates(conn, evolution_id)
    # The candidate carries the rule, is the live version now, and records its lineage.
    assert live.version == output.version and RULE in live.spec.instructions
    assert live.cause == "evolution" and live.evolution_id == evolution_id
    assert live.parent_version == record.incumbent_version
    assert candidates[0].diff and RULE in candidates[0].diff
    assert record.status == "succeeded" and record.decision == "promote"
    assert record.gate is not None and record.gate["best"] == output.version
    async with harness.pool.connection() as conn:
        scores = await evolutions.version_scores(conn, TENANT, name)
    assert scores[output.version].validation == 1.0 and scores[output.version].holdout == 1.0
    assert scores[record.incumbent_version].validation == 0.0
    # Every validation and holdout case ran under both versions, the train cases once.
    measured = len(ids["validation"]) + len(ids["holdout"])
    assert len(results) == len(ids["train"]) + 2 * measured
    assert all(r.passed for r in results if r.version == output.version)
    assert not any(r.passed for r in results if r.version == record.incumbent_version)
    # The proposer saw the live feedback and the train cases, never a validation or
    # holdout case.
    proposer = [
        r for r in harness.server.chat_requests()
        if system_text(r).startswith("You improve the instructions")
    ]  # fmt: skip
    assert len(proposer) == 1
    prompt = user_text(proposer[0])
    assert FEEDBACK in prompt and "train question" in prompt and LESSON in prompt
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT f.category FROM run_feedback f JOIN runs r ON r.id = f.run_id"
            " WHERE r.agent_name = %s",
            (name,),
        )
        assert [row["category"] for row in await cur.fetchall()] == ["quality_issue"]
    assert "validation question" not in prompt and "holdout question" not in prompt
    await assert_replays(handle)
    record_history("evolution_v1_promote", await handle.fetch_history())


async def test_a_candidate_that_regresses_a_guard_case_is_rejected(harness: Harness) -> None:
    harness.server.responder = responder(done_if_told)
    guard = case_ids({"validation": 1})["validation"][0]
    _, evolution_id, _ = await setup(harness, COUNTS, guard=guard)
    output = await (await start(harness, evolution_id)).result()
    assert output.decision == "keep"
    assert any("guard case(s) regress" in r and guard in r for r in output.reasons), output.reasons


async def test_a_timed_out_evaluation_is_a_failure(harness: Harness) -> None:
    def slow_when_told(request: RecordedRequest) -> Step:
        if "DONE" in system_text(request):
            return hang(30)  # the candidate never answers within eval_timeout_s
        return reply("The answer is 42")

    harness.server.responder = responder(slow_when_told)
    _, evolution_id, ids = await setup(harness, COUNTS, eval_timeout_s=3)
    output = await (await start(harness, evolution_id)).result()
    assert output.decision == "keep"
    async with harness.pool.connection() as conn:
        record = await evolutions.get_evolution(conn, TENANT, evolution_id)
        results = await evolutions.list_results(conn, evolution_id)
    candidate = [r for r in results if r.version != record.incumbent_version]
    assert len(candidate) == len(ids["validation"]) + len(ids["holdout"])
    assert all(r.score is None and not r.passed for r in candidate)
    assert all("timed out" in r.detail for r in candidate)


async def test_a_budget_too_small_keeps_the_incumbent_without_running_anything(
    harness: Harness,
) -> None:
    harness.server.responder = responder(done_if_told)
    _, evolution_id, _ = await setup(harness, COUNTS, max_eval_runs=5)
    output = await (await start(harness, evolution_id)).result()
    assert output.decision == "keep"
    assert "budget too small" in output.reasons[0]
    assert not harness.server.chat_requests()
    async with harness.pool.connection() as conn:
        assert await evolutions.list_results(conn, evolution_id) == []


class _Notifications(BaseHTTPRequestHandler):
    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Notifications.received.append(body.decode())
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"sent": true}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def notify_api() -> Iterator[int]:
    _Notifications.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Notifications)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_evaluation_runs_never_execute_a_side_effecting_tool(
    harness: Harness, notify_api: int
) -> None:
    def notify_then_answer(request: RecordedRequest) -> Step:
        if request.messages[-1]["role"] != "tool":
            return tool_calls(tool_call("notify", {"text": "42"}))
        return done_if_told(request)

    harness.server.responder = responder(notify_then_answer)
    name, evolution_id, ids = await setup(harness, COUNTS)
    async with harness.pool.connection() as conn:
        await tool_egress.replace_egress_rules(
            conn, TENANT, [policy.EgressRule(pattern="127.0.0.1", port=notify_api)]
        )
        await tool_store.register_tool(
            conn, TENANT, "notify",
            ToolSpec(
                kind="http", description="Send a notification to the on-call phone.",
                side_effects=True,
                input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
                config={"url_template": f"http://127.0.0.1:{notify_api}/notify", "method": "POST"},
            ),
        )  # fmt: skip
        live = await agents.get_version(conn, TENANT, name)
        await agents.create_version(
            conn, TENANT, name, live.spec.model_copy(update={"tools": ["notify"]})
        )
        await conn.execute(
            "UPDATE evolutions SET incumbent_version = %s WHERE id = %s",
            (live.version + 1, evolution_id),
        )
    # Control: a normal run really sends the notification.
    handle, _ = await harness.start(
        spec(instructions="You answer questions about numbers.", tools=["notify"])
    )
    assert (await handle.result()).outcome == "succeeded"
    assert len(_Notifications.received) == 1

    output = await (await start(harness, evolution_id)).result()
    assert output.decision == "promote", output.reasons
    assert len(_Notifications.received) == 1  # no evaluation run sent one
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.content FROM run_messages m JOIN runs r ON r.id = m.run_id"
            " WHERE r.evolution_id = %s AND m.role = 'tool'",
            (evolution_id,),
        )
        results = [row["content"] for row in await cur.fetchall()]
    assert len(results) == len(ids["train"]) + 2 * (len(ids["validation"]) + len(ids["holdout"]))
    assert all("denied" in (r or "") for r in results), results[:2]


@pytest.mark.parametrize("approved", [True, False])
async def test_a_promotion_can_wait_for_a_human(harness: Harness, approved: bool) -> None:
    harness.server.responder = responder(done_if_told)
    name, evolution_id, _ = await setup(harness, COUNTS, approval="human")
    handle = await start(harness, evolution_id)
    for _ in range(1200):  # up to 2 minutes on a busy machine
        status = await handle.query(EvolutionWorkflow.status)
        if status.waiting_version is not None:
            break
        await asyncio.sleep(0.1)
    assert status.phase == "waiting_for_approval"
    async with harness.pool.connection() as conn:
        waiting = await evolutions.get_evolution(conn, TENANT, evolution_id)
        assert waiting.status == "waiting"
        assert (await agents.get_version(conn, TENANT, name)).version == waiting.incumbent_version
    await handle.execute_update(
        EvolutionWorkflow.approve_promotion,
        PromotionDecision(approved=approved, reason=None if approved else "not this week"),
    )
    output = await handle.result()
    assert output.decision == ("promote" if approved else "keep")
    if not approved:
        assert output.reasons == [f"a human rejected v{status.waiting_version}: not this week"]
    async with harness.pool.connection() as conn:
        events = [e.type for e in await evolutions.list_events(conn, TENANT, evolution_id)]
    assert "evolution.waiting_for_approval" in events and "evolution.approval_resolved" in events
    await assert_replays(handle)
    record_history(f"evolution_v1_approval_{approved}", await handle.fetch_history())


async def test_a_cycle_started_by_name_creates_its_row_from_the_policy(harness: Harness) -> None:
    # As a Temporal Schedule or a trigger starts it: the agent's name, no row yet.
    harness.server.responder = responder(done_if_told)
    name, _, _ = await setup(harness, COUNTS)
    async with harness.pool.connection() as conn:
        await evolutions.put_policy(
            conn, TENANT,
            evolutions.EvolutionPolicy(
                agent_name=name,
                settings=EvolutionSettings(candidates=1, kinds=["instruction_edit"]),
            ),
        )  # fmt: skip
    workflow_id = f"evolution-schedule-{name}-{uuid.uuid4().hex[:6]}"
    handle = await harness.client.start_workflow(
        EvolutionWorkflow.run,
        EvolutionInput(tenant_id=TENANT, agent_name=name, trigger="schedule"),
        id=workflow_id,
        task_queue=TaskQueue.ORCHESTRATION.value + harness.suffix,
    )
    output = await handle.result()
    assert output.decision == "promote", output.reasons
    async with harness.pool.connection() as conn:
        record = await evolutions.get_evolution(conn, TENANT, output.evolution_id)
    assert record.trigger == "schedule" and record.workflow_id == workflow_id
    assert record.settings.candidates == 1


async def test_a_missing_tool_is_found_in_the_registry_and_added(harness: Harness) -> None:
    """Failures that call for the calculator give a tool-set candidate that adds it."""

    def calculate_if_able(request: RecordedRequest) -> Step:
        tools = [t["function"]["name"] for t in (request.body or {}).get("tools") or []]
        last = request.messages[-1]
        if "calculator" in tools and last["role"] == "user":
            question = str(last["content"])
            a, b = (int(n) for n in question.removeprefix("What is ").rstrip("?").split(" * "))
            return tool_calls(tool_call("calculator", {"expression": f"{a} * {b}"}))
        if last["role"] == "tool":
            return reply(f"The answer is {last['content']}.")
        return reply("The answer is 400.")  # a guess

    harness.server.responder = responder(calculate_if_able)
    name = "math-" + uuid.uuid4().hex[:6]
    ids = case_ids(COUNTS)
    async with harness.pool.connection() as conn:
        version, _ = await agents.create_version(
            conn, TENANT, name, spec(instructions="You answer arithmetic questions.", tools=[])
        )
        for split_ids in ids.values():
            for case_id in split_ids:
                a, b = 11 + len(case_id) % 7, int(case_id.rsplit("-", 1)[1]) + 12
                await eval_cases.add_case(
                    conn, TENANT, name,
                    EvalCaseSpec(
                        objective=f"What is {a} * {b}?",
                        checks=[{"kind": "numeric", "value": a * b}],  # type: ignore[list-item]
                    ),
                    case_id=case_id,
                )  # fmt: skip
        record = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=name, incumbent_version=version.version,
            settings=EvolutionSettings(candidates=1, kinds=["tools"]),
        )  # fmt: skip
    output = await (await start(harness, record.id)).result()
    assert output.decision == "promote", output.reasons
    async with harness.pool.connection() as conn:
        live = await agents.get_version(conn, TENANT, name)
        candidates = await evolutions.list_candidates(conn, record.id)
    assert "calculator" in live.spec.tools
    assert candidates[0].kind == "tools" and "+ calculator" in candidates[0].diff
    assert "similarity" in candidates[0].rationale


async def test_rubric_cases_are_judged_side_by_side_in_both_orders(harness: Harness) -> None:
    def judge_or_answer(request: RecordedRequest) -> Step:
        system, user = system_text(request), user_text(request)
        if system.startswith("You grade"):
            return reply(json.dumps({"score": 3, "reason": "fine"}))  # no difference alone
        if system.startswith("You compare two answers"):
            first = user.split("Answer A:", 1)[1].split("Answer B:", 1)[0]
            return reply(json.dumps({"better": "A" if "DONE" in first else "B", "reason": "DONE"}))
        return done_if_told(request)

    harness.server.responder = responder(judge_or_answer)
    name = "writer-" + uuid.uuid4().hex[:6]
    ids = case_ids(COUNTS)
    async with harness.pool.connection() as conn:
        version, _ = await agents.create_version(
            conn, TENANT, name, spec(instructions="You answer questions about numbers.", tools=[])
        )
        for split, split_ids in ids.items():
            for i, case_id in enumerate(split_ids):
                await eval_cases.add_case(
                    conn, TENANT, name,
                    EvalCaseSpec(objective=f"{split} {i}: 6 times 7?", rubric="Ends with DONE."),
                    case_id=case_id,
                )  # fmt: skip
        record = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=name, incumbent_version=version.version,
            settings=EvolutionSettings(candidates=1, kinds=["instruction_edit"]),
        )  # fmt: skip
    output = await (await start(harness, record.id)).result()
    assert output.decision == "promote", output.reasons
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT preferred, shown_first FROM evolution_pairs WHERE evolution_id = %s",
            (record.id,),
        )
        pairs = await cur.fetchall()
        judged = await evolutions.get_evolution(conn, TENANT, record.id)
    assert len(pairs) == len(ids["validation"]) + len(ids["holdout"])
    assert {p["preferred"] for p in pairs} == {"candidate"}
    assert {p["shown_first"] for p in pairs} == {"candidate", "incumbent"}
    assert judged.judge is not None and judged.judge["prompt"]


async def test_a_long_cycle_continues_as_new_without_repeating_evaluations(
    harness: Harness,
) -> None:
    harness.server.responder = responder(done_if_told)
    _, evolution_id, ids = await setup(harness, COUNTS, evaluations_per_history=5)
    handle = await start(harness, evolution_id)
    output = await handle.result()
    assert output.decision == "promote", output.reasons
    async with harness.pool.connection() as conn:
        results = await evolutions.list_results(conn, evolution_id)
        cur = await conn.execute(
            "SELECT count(*) AS n FROM runs WHERE evolution_id = %s", (evolution_id,)
        )
        row = await cur.fetchone()
    measured = len(ids["validation"]) + len(ids["holdout"])
    assert len(results) == len(ids["train"]) + 2 * measured  # each evaluation once
    assert row is not None and row["n"] == len(results)
    # 18 measured evaluations, at most 5 per history: the cycle ran in several.
    assert (await handle.describe()).run_id != handle.first_execution_run_id
    assert output.cost_usd == 0.0 and len({(r.version, r.case_id) for r in results}) == len(results)
