"""Memory in agent runs: recall before, episode and reflexion after, remember/recall tools,
the conversation window. Real Temporal, Postgres, Qdrant (embedded Edge), MiniLM embeddings;
the model is scripted (its replies depend on what is asked)."""

import json
from typing import Any

from activities.runs.context import REFLECT_PROMPT, SUMMARY_PROMPT
from core.runs import store as runs
from tests.support.model_server import RecordedRequest, Step, reply, tool_call, tool_calls
from tests.support.replay import assert_replays, record_history
from tests.workflows.harness import TENANT, Harness, spec

LESSON = "Quote the exchange rate you used next to the converted amount."


def _system(request: RecordedRequest) -> str:
    first = request.messages[0] if request.messages else {}
    return str(first.get("content") or "") if first.get("role") == "system" else ""


def responder(answer: str, *, calls: list[Any] | None = None) -> Any:
    """Critiques and summaries by their prompts; the agent's own steps: `calls`, then `answer`."""

    def respond(request: RecordedRequest) -> Step:
        system = _system(request)
        if system.startswith(REFLECT_PROMPT[:40]):
            return reply(
                json.dumps({"summary": "Converted money.", "lesson": LESSON, "reward": 0.8})
            )
        if system.startswith(SUMMARY_PROMPT[:40]):
            return reply("The user converts currencies; blob results were long and boring.")
        done = sum(1 for m in request.messages if m.get("role") == "assistant")
        if calls and done < len(calls):
            return tool_calls(calls[done])
        return reply(answer)

    return respond


def memory_spec(**overrides: Any) -> Any:
    return spec(
        instructions="You convert currencies.",
        tools=["calculator"],
        memory={"enabled": True, **overrides.pop("memory", {})},
        **overrides,
    )


async def test_a_second_similar_run_recalls_the_first_runs_episode_and_lesson(
    harness: Harness,
) -> None:
    harness.server.responder = responder(
        "About 92 EUR.", calls=[tool_call("calculator", {"expression": "100*0.92"})]
    )
    first, first_id = await harness.start(
        memory_spec(), "Convert 100 USD to EUR at 0.92.", name="fx"
    )
    assert (await first.result()).outcome == "succeeded"
    events = {e.type: e for e in await harness.events(first_id)}
    assert events["memory.reflected"].data["lesson"] == LESSON
    written = events["memory.written"].data["memories"]
    assert [m["kind"] for m in written] == ["episode", "reflexion"]
    # The critique is ledgered and counted in the run's cost.
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT purpose FROM llm_calls WHERE run_id = %s ORDER BY step, purpose", (first_id,)
        )
        assert [r["purpose"] for r in await cur.fetchall()] == ["step", "step", "reflexion"]

    harness.server.reset()
    harness.server.responder = responder("About 230 EUR.")
    second, second_id = await harness.start(
        memory_spec(), "Convert 250 USD to EUR at 0.92.", name="fx"
    )
    assert (await second.result()).outcome == "succeeded"
    recalled = next(e for e in await harness.events(second_id) if e.type == "memory.recalled")
    kinds = {m["kind"] for m in recalled.data["memories"]}
    assert {"episode", "reflexion"} <= kinds
    assert all(m["source_run_id"] == first_id for m in recalled.data["memories"])
    system = _system(harness.server.chat_requests()[0])
    assert LESSON in system and "Similar earlier runs" in system
    assert "Convert 100 USD to EUR" in system

    # Feedback rates the episode and rewards the lesson.
    async with harness.pool.connection() as conn:
        await runs.record_feedback(conn, TENANT, first_id, 5, "spot on")
        cur = await conn.execute(
            "SELECT kind, reward, metadata->>'rating' AS rating FROM memories"
            " WHERE source_run_id = %s ORDER BY kind",
            (first_id,),
        )
        rows = [dict(r) for r in await cur.fetchall()]
    assert rows == [
        {"kind": "episode", "reward": 1.0, "rating": "5"},
        {"kind": "reflexion", "reward": 1.0, "rating": None},
    ]
    await assert_replays(second)
    record_history("agent_run_v3_memory", await second.fetch_history())


async def test_memory_is_private_to_the_agent_unless_shared(harness: Harness) -> None:
    harness.server.responder = responder("noted")
    remember = tool_call("remember", {"content": "The user's favourite colour is teal."})
    harness.server.responder = responder("noted", calls=[remember])
    handle, _ = await harness.start(
        spec(tools=["remember", "recall"]), "Remember my favourite colour.", name="keeper"
    )
    assert (await handle.result()).outcome == "succeeded"

    recall = tool_call("recall", {"query": "what colour does the user like"})
    harness.server.responder = responder("teal", calls=[recall])
    same, same_id = await harness.start(
        spec(tools=["remember", "recall"]), "Which colour?", name="keeper"
    )
    assert (await same.result()).outcome == "succeeded"
    assert "teal" in ((await harness.messages(same_id))[2].content or "")

    harness.server.responder = responder("no idea", calls=[recall])
    other, other_id = await harness.start(
        spec(tools=["remember", "recall"]), "Which colour?", name="stranger"
    )
    assert (await other.result()).outcome == "succeeded"
    assert "teal" not in ((await harness.messages(other_id))[2].content or "")


async def test_the_conversation_window_is_summarized_past_its_budget(harness: Harness) -> None:
    calls = [tool_call("calculator", {"expression": f"{i}+{i}"}) for i in range(8)]
    harness.server.responder = responder("done", calls=calls)
    # A tiny budget: ~500 tokens of conversation before older turns are summarized.
    handle, run_id = await harness.start(
        spec(memory={"window_tokens": 500}, instructions="x" * 10),
        "Add numbers. " + "Context: " + "lorem ipsum " * 120,
    )
    assert (await handle.result()).outcome == "succeeded"
    requests = harness.server.chat_requests()
    summaries = [r for r in requests if _system(r).startswith(SUMMARY_PROMPT[:40])]
    assert summaries, "no summary call was made"
    last_step = [r for r in requests if not _system(r).startswith(SUMMARY_PROMPT[:40])][-1]
    assert "Summary of the earlier conversation" in _system(last_step)
    # The prompt starts at a user or assistant turn, never at an orphaned tool result.
    assert last_step.messages[1]["role"] in ("user", "assistant")
    assert len(last_step.messages) < 2 + 2 * len(calls)
    # The full transcript is still stored, and the summary is recorded once per cut.
    assert len(await harness.messages(run_id)) == 2 + 2 * len(calls)
    events = [e for e in await harness.events(run_id) if e.type == "conversation.summarized"]
    assert events and len({e.data["upto_seq"] for e in events}) == len(events)
