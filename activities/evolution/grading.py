"""Grading answers: the rubric judge, one JSON-answered model call, a run's tool calls.

Shared by evolution cycles (evaluation runs) and the rollout controller (live runs).
"""

from dataclasses import dataclass
from typing import Any, Final

from activities.heartbeats import heartbeating
from activities.providers.client import ModelClient
from activities.runs.llm import complete_any
from activities.spend import check_spend
from core import limits
from core.db import Pool
from core.evolution.checks import ToolCallMade
from core.payloads import ChatMessage, ModelRequest, arguments_object, json_objects
from core.runs import store as runs
from core.settings import Settings

JUDGE_PROMPT: Final = (
    "You grade an AI agent's answer to a request against a rubric. Read the request, the "
    "rubric and the answer, then reply with one JSON object: "
    '{"score": N, "reason": "one sentence"} where N is 1 (fails the rubric) to 5 (fully '
    "meets it). Judge only what the rubric asks; ignore style unless it asks for style."
)
JUDGE_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
}


@dataclass(frozen=True)
class Spender:
    """Whose money evolution's own model calls spend.

    Each call is checked against the tenant's caps first and ledgered in
    `evolution_llm_calls` after it.
    """

    pool: Pool
    settings: Settings
    tenant_id: str
    agent_name: str
    evolution_id: str | None = None


async def ask(
    client: ModelClient,
    models: list[str],
    system: str,
    user: str,
    schema: dict[str, Any],
    *,
    max_tokens: int = 200,
    temperature: float = 0.0,
    spender: Spender | None = None,
) -> tuple[dict[str, Any], float]:
    """One model call answered with a JSON object ({} when the answer holds none).

    With a `spender`, the tenant's spend caps are checked first (`BudgetExceeded` over
    them) and the call is ledgered.
    """
    request = ModelRequest(
        model=models[0],
        messages=[
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=user),
        ],
        temperature=temperature,
        max_tokens=max_tokens,
        json_schema=schema,
    )
    if spender is not None:
        await check_spend(spender.pool, spender.settings, spender.tenant_id, request)
    async with heartbeating():  # a slow model must not look like a dead worker
        result = await complete_any(client, models, request)
    if spender is not None:
        async with spender.pool.connection() as conn:
            await limits.record_evolution_call(
                conn, tenant_id=spender.tenant_id, agent_name=spender.agent_name,
                evolution_id=spender.evolution_id, model=result.model,
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens, cost_usd=result.cost_usd,
            )  # fmt: skip
    answer = next(iter(json_objects(result.message.content or "")), {})
    return answer, result.cost_usd or 0.0


async def judge(
    client: ModelClient,
    models: list[str],
    objective: str,
    rubric: str,
    answer: str,
    spender: Spender | None = None,
) -> tuple[float | None, bool, str, float]:
    """(score 0-1, passed, detail, cost) of an answer on a rubric; no valid grade: None."""
    grade, cost = await ask(
        client, models, JUDGE_PROMPT,
        f"Request:\n{objective}\n\nRubric:\n{rubric}\n\nAnswer:\n{answer[:8000]}",
        JUDGE_SCHEMA, spender=spender,
    )  # fmt: skip
    value = grade.get("score")
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
        return None, False, "the judge gave no valid grade", cost
    reason = str(grade.get("reason", ""))[:500]
    return (value - 1) / 4, value >= 4, f"judge {value}/5: {reason}", cost


async def tool_calls(conn: runs.Conn, run_id: str) -> list[ToolCallMade]:
    """Every tool call a run's model made, in order (what `tool_called` checks look at)."""
    calls: list[ToolCallMade] = []
    for message in await runs.load_messages(conn, run_id, 1_000_000):
        calls += [
            ToolCallMade(call.name, arguments_object(call.arguments)) for call in message.tool_calls
        ]
    return calls


async def working_s(conn: runs.Conn, run_id: str) -> float:
    """Seconds a run spent in its model calls (the ledger) and tool calls (their events)."""
    cur = await conn.execute(
        "SELECT (SELECT coalesce(sum(latency_ms), 0) FROM llm_calls WHERE run_id = %(run)s)"
        " + (SELECT coalesce(sum((data->>'duration_ms')::float8), 0) FROM run_events"
        "    WHERE run_id = %(run)s AND type = 'tool.result') AS ms",
        {"run": run_id},
    )
    row = await cur.fetchone()
    return float(row["ms"] if row else 0.0) / 1000
