"""Agents that grow: generated code tools and sub-agents, end to end.

Real Temporal, Postgres, workers, bubblewrap and the scripted model: a diagnosis of a
missing capability leads to a code tool tested in the sandbox (registered as a draft, then
active on promotion) or to a sub-agent the candidate calls as `agent:<name>`.
"""

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from activities.tools.sandbox import probe
from core.db import Pool
from core.errors import Conflict
from core.evolution import cases as eval_cases
from core.evolution import growth
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec, Split
from core.evolution.growth import GeneratedTool
from core.evolution.payloads import EvolutionOutput, EvolutionSettings, PromotionDecision
from core.runs import agents
from core.tools import store as tool_store
from tests.conftest import make_settings
from tests.evolution.test_workflow import case_ids, start, system_text, user_text
from tests.support.model_server import (
    RecordedRequest,
    ScriptedModelServer,
    Step,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.workflows.harness import TENANT, Harness, running_harness, spec
from workflows.evolution import EvolutionWorkflow

WORDS = ["banana", "sky", "education", "rhythm", "queue", "onomatopoeia", "strength", "aeiou"]
COUNTS: dict[Split, int] = {"train": 2, "validation": 6, "holdout": 3}
VOWELS = "print(sum(c in 'aeiou' for c in args['word'].lower()))"


def vowels(word: str) -> int:
    return sum(c in "aeiou" for c in word)


def word_in(text: str) -> str:
    found = re.search(r"'([a-z]+)'", text)
    assert found is not None, text
    return found.group(1)


def last_number(text: str) -> str:
    numbers = re.findall(r"\d+", text)
    return numbers[-1] if numbers else "?"


def tool_names(request: RecordedRequest) -> list[str]:
    return [t["function"]["name"] for t in (request.body or {}).get("tools") or []]


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


@pytest.fixture(scope="module")
def sandbox() -> None:
    status = probe(make_settings())
    if not status.ok:
        pytest.skip(f"bubblewrap cannot run here: {status.detail}")


def responder(
    written: dict[str, Any], agent_reply: Callable[[RecordedRequest], Step]
) -> Callable[[RecordedRequest], Step]:
    """The diagnoser blames a missing capability; the proposer writes `written`."""

    def respond(request: RecordedRequest) -> Step:
        system = system_text(request)
        if system.startswith("You find why"):
            return reply(
                json.dumps({"cause": "missing_capability", "explanation": "it cannot count"})
            )
        if system.startswith(("You write a new tool", "You design a sub-agent")):
            return reply(json.dumps(written))
        return agent_reply(request)

    return respond


async def setup(harness: Harness, kind: str) -> tuple[str, str]:
    """An agent that cannot count vowels, cases that need it, a queued cycle of `kind`."""
    name = "words-" + uuid.uuid4().hex[:6]
    ids = case_ids(COUNTS)
    async with harness.pool.connection() as conn:
        version, _ = await agents.create_version(
            conn, TENANT, name, spec(instructions="You answer questions about words.", tools=[])
        )
        n = 0
        for split, split_ids in ids.items():
            for i, case_id in enumerate(split_ids):
                word = WORDS[n % len(WORDS)]
                n += 1
                await eval_cases.add_case(
                    conn, TENANT, name,
                    EvalCaseSpec(
                        objective=f"{split} {i}: how many vowels are in the word '{word}'?",
                        checks=[{"kind": "numeric", "value": vowels(word)}],  # type: ignore[list-item]
                    ),
                    case_id=case_id,
                )  # fmt: skip
        record = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=name, incumbent_version=version.version,
            settings=EvolutionSettings.model_validate({"candidates": 1, "kinds": [kind]}),
        )  # fmt: skip
    return name, record.id


def tool_json(name: str, source: str = VOWELS, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Count the vowels (a, e, i, o, u) in a word.",
        "input_schema": {
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "required": ["word"],
        },
        "source": source,
        "tests": [
            {"arguments": {"word": "banana"}, "checks": [{"kind": "exact", "value": "3"}]},
            {"arguments": {"word": "rhythm"}, "checks": [{"kind": "numeric", "value": 0}]},
        ],
        "rationale": "the agent cannot count letters",
        **extra,
    }


def counting_agent(tool: str) -> Callable[[RecordedRequest], Step]:
    """An agent that counts with `tool` (its model name) when it has it, else guesses."""

    def respond(request: RecordedRequest) -> Step:
        last = request.messages[-1]
        if last["role"] == "tool":
            return reply(f"The word has {last_number(str(last['content']))} vowels.")
        if tool in tool_names(request):
            word = word_in(user_text(request))
            arguments = {"task": f"Count the vowels in the word '{word}'."}
            return tool_calls(tool_call(tool, arguments if "agent" in tool else {"word": word}))
        return reply("I cannot count letters.")

    return respond


@pytest.mark.slow
async def test_a_missing_capability_grows_a_code_tool_that_is_promoted(
    harness: Harness, sandbox: None
) -> None:
    tool = "count_vowels_" + uuid.uuid4().hex[:6]
    harness.server.responder = responder(tool_json(tool), counting_agent(tool))
    name, evolution_id = await setup(harness, "code_tool")
    handle = await start(harness, evolution_id)
    output: EvolutionOutput = await handle.result()
    assert output.decision == "promote", output.reasons
    assert output.version is not None
    async with harness.pool.connection() as conn:
        live = await agents.get_version(conn, TENANT, name)
        candidates = await evolutions.list_candidates(conn, evolution_id)
        grown = await growth.list_tools(conn, evolution_id)
        active = await tool_store.get_tool(conn, TENANT, tool)
        stats = await tool_store.tool_stats(conn, TENANT, [tool])
        events = [e.type for e in await evolutions.list_events(conn, TENANT, evolution_id)]
        cur = await conn.execute(
            "SELECT count(*) AS n FROM runs r JOIN run_messages m ON m.run_id = r.id"
            " WHERE r.evolution_id = %s AND r.agent_version = %s AND m.role = 'tool'",
            (evolution_id, output.version),
        )
        called = (await cur.fetchone() or {"n": 0})["n"]
    # The tool passed its tests in the sandbox and became the candidate's; promoted, it
    # is an active tool of the tenant and the live version calls it.
    assert [g.status for g in grown] == ["registered"] and grown[0].version == output.version
    assert all(r["passed"] for r in grown[0].results) and len(grown[0].results) == 2
    assert candidates[0].kind == "code_tool" and f"+ {tool}" in candidates[0].diff
    assert live.version == output.version and tool in live.spec.tools
    assert active.kind == "code"
    # Every validation and holdout evaluation of the candidate called the tool.
    measured = COUNTS["validation"] + COUNTS["holdout"]
    assert called == measured and stats[tool].successes == measured
    assert "tool.written" in events and "tools.activated" in events
    await assert_replays(handle)
    record_history("evolution_v2_code_tool", await handle.fetch_history())


async def test_a_generated_tool_that_fails_its_tests_is_never_registered(
    harness: Harness, sandbox: None
) -> None:
    tool = "count_vowels_" + uuid.uuid4().hex[:6]
    wrong = "print(len(args['word']))"  # counts letters, not vowels
    harness.server.responder = responder(tool_json(tool, wrong), counting_agent(tool))
    _, evolution_id = await setup(harness, "code_tool")
    handle = await start(harness, evolution_id)
    output = await handle.result()
    assert output.decision == "keep"
    assert output.reasons == ["no valid candidate (1 rejected)"]
    async with harness.pool.connection() as conn:
        candidates = await evolutions.list_candidates(conn, evolution_id)
        grown = await growth.list_tools(conn, evolution_id)
        assert not await tool_store.tool_name_taken(conn, TENANT, tool)
    assert [c.kind for c in candidates] == ["code_tool"]
    reason = candidates[0].rejected or ""
    assert "failed 2 of its 2 test(s)" in reason and "output: '6'" in reason, reason
    assert grown[0].status == "rejected" and not any(r["passed"] for r in grown[0].results)
    await assert_replays(handle)


@pytest.mark.slow
async def test_a_generated_tool_that_asks_for_the_network_waits_for_a_human(
    harness: Harness, sandbox: None
) -> None:
    tool = "count_vowels_" + uuid.uuid4().hex[:6]
    written = tool_json(tool, needs_network=True)
    harness.server.responder = responder(written, counting_agent(tool))
    _, evolution_id = await setup(harness, "code_tool")
    handle = await start(harness, evolution_id)
    for _ in range(1200):  # up to 2 minutes on a busy machine
        status = await handle.query(EvolutionWorkflow.status)
        if status.waiting_version is not None:
            break
        await asyncio.sleep(0.1)
    assert status.phase == "waiting_for_approval"
    async with harness.pool.connection() as conn:
        assert await tool_store.get_latest_tools(conn, TENANT, [tool]) == {}  # still a draft
    await handle.execute_update(
        EvolutionWorkflow.approve_promotion, PromotionDecision(approved=False, reason="no network")
    )
    output = await handle.result()
    assert output.decision == "keep"
    async with harness.pool.connection() as conn:
        assert await tool_store.get_latest_tools(conn, TENANT, [tool]) == {}  # never active
    await assert_replays(handle)


@pytest.mark.slow
async def test_a_missing_capability_grows_a_sub_agent_the_candidate_calls(
    harness: Harness,
) -> None:
    written = {
        "slug": "counter",
        "instructions": "You count the vowels in a word and answer with the number.",
        "tools": ["calculator"],
        "max_steps": 5,
        "rationale": "counting is a task of its own",
    }

    def agent(request: RecordedRequest) -> Step:
        if system_text(request).startswith("You count the vowels"):  # the sub-agent
            return reply(str(vowels(word_in(user_text(request)))))
        names = [n for n in tool_names(request) if n.startswith("agent__")]
        return counting_agent(names[0] if names else "agent__none")(request)

    harness.server.responder = responder(written, agent)
    name, evolution_id = await setup(harness, "sub_agent")
    sub = f"{name}-counter"
    handle = await start(harness, evolution_id)
    output = await handle.result()
    assert output.decision == "promote", output.reasons
    async with harness.pool.connection() as conn:
        live = await agents.get_version(conn, TENANT, name)
        child = await agents.get_version(conn, TENANT, sub)
        owner = await agents.owner_of(conn, TENANT, sub)
        copied = await eval_cases.list_cases(conn, TENANT, sub)
        cur = await conn.execute(
            "SELECT count(*) AS n FROM runs c JOIN runs p ON p.id = c.parent_run_id"
            " WHERE p.evolution_id = %s AND p.agent_version = %s AND c.agent_name = %s",
            (evolution_id, output.version, sub),
        )
        children = (await cur.fetchone() or {"n": 0})["n"]
    assert f"agent:{sub}" in live.spec.tools and live.version == output.version
    assert owner == name and child.spec.tools == ["calculator"]
    assert child.spec.limits.max_steps == 5
    # The failing train cases that exposed the gap are the sub-agent's cases now.
    assert sorted(c.spec.objective.split(":")[0] for c in copied) == ["train 0", "train 1"]
    # Each validation and holdout evaluation of the candidate called the sub-agent.
    assert children == COUNTS["validation"] + COUNTS["holdout"]
    await assert_replays(handle)


# -- the pieces ----------------------------------------------------------------------


def test_a_generated_tool_is_validated_strictly() -> None:
    GeneratedTool.model_validate(tool_json("count_vowels"))
    for bad in (
        tool_json("Count Vowels"),  # not a tool name
        tool_json("run_python"),  # a built-in's
        tool_json("count_vowels", extra_field=1),  # unknown fields are errors
        {**tool_json("count_vowels"), "tests": []},
        {**tool_json("count_vowels"), "input_schema": {"type": "string"}},
        {**tool_json("count_vowels"), "source": "x" * 20_001},
        {
            **tool_json("count_vowels"),
            "tests": [{"arguments": {}, "checks": [{"kind": "tool_called", "tool": "x"}]}],
        },
    ):
        with pytest.raises(ValidationError):
            GeneratedTool.model_validate(bad)


async def test_a_draft_tool_is_seen_only_by_its_candidate_until_activated(pool: Pool) -> None:
    name = "draft_" + uuid.uuid4().hex[:6]
    spec_ = GeneratedTool.model_validate(tool_json(name)).tool_spec()
    async with pool.connection() as conn:
        await tool_store.register_draft_tool(
            conn, TENANT, name, spec_, agent_name="a", agent_version=2, evolution_id="evo_x"
        )
        with pytest.raises(Conflict):
            await tool_store.register_draft_tool(
                conn, TENANT, name, spec_, agent_name="a", agent_version=3, evolution_id="evo_x"
            )
        assert name not in {t.name for t in await tool_store.list_tools(conn, TENANT)}
        assert await tool_store.get_latest_tools(conn, TENANT, [name]) == {}
        assert await tool_store.get_latest_tools(conn, TENANT, [name], drafts_of=("a", 1)) == {}
        seen = await tool_store.get_latest_tools(conn, TENANT, [name], drafts_of=("a", 2))
        assert list(seen) == [name]
        assert await tool_store.activate_drafts(conn, TENANT, "a", 2) == [name]
        assert await tool_store.activate_drafts(conn, TENANT, "a", 2) == []
        assert name in {t.name for t in await tool_store.list_tools(conn, TENANT)}
        assert list(await tool_store.get_latest_tools(conn, TENANT, [name])) == [name]
