"""A tool call's result message: what it says, and storing it (tools and store lanes).

`execute_tool` (tools lane) runs a tool and stores what it returned. `record_tool_result`
(store lane) stores a result the workflow already holds without running anything: a
denial, an answer the workflow found itself (`ask_human`, `find_tools`, `remember`,
`recall`), a delegated agent's answer, or the error of a call whose retries are spent.
Both build the message here and store it the same way.
"""

import time
from typing import Any

from activities import persistence
from core import metrics
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.payloads import ChatMessage, RunEvent, ToolCallRequest
from core.runs import store as runs
from core.runs.payloads import ToolCallOutput, ToolResultInput
from core.tools import store as tool_store

MAX_RESULT_CHARS = 1_000_000
"""Tool output beyond this is cut before it is stored (prompts see less: see activities.runs.llm)."""


def denied(reason: str) -> tuple[bool, str | None, str]:
    """(ok, error type, content) of a call that policy or a human refused."""
    return False, ErrorType.POLICY_DENIED.value, f"Tool call denied: {reason}"


def failed(tool: str, failure: str) -> tuple[bool, str | None, str]:
    """(ok, error type, content) of a call whose retries are spent."""
    return (
        False,
        ErrorType.TOOL_FAILED.value,
        (
            f"Error: tool '{tool}' is unavailable; it failed after retries "
            f"({failure}). Continue without it or try another tool."
        ),
    )


async def child_answer(
    pool: Pool, tenant_id: str, child_run_id: str
) -> tuple[bool, str | None, str]:
    """(ok, error type, content) of an agent's child run, as the calling model reads it."""
    async with pool.connection() as conn:
        child = await runs.get_run(conn, tenant_id, child_run_id)
    if child.outcome == "succeeded":
        return True, None, child.result or "(the agent finished without an answer)"
    return (
        False,
        ErrorType.TOOL_FAILED.value,
        (
            f"Agent '{child.agent_name}' did not finish the task (run {child.id}: "
            f"{child.outcome or child.status}{': ' + child.reason if child.reason else ''})."
        ),
    )


async def save(
    pool: Pool,
    tenant_id: str,
    run_id: str,
    result_seq: int,
    call: ToolCallRequest,
    outcome: tuple[bool, str | None, str],
    *,
    started: float,
    stats: bool = False,
) -> ToolCallOutput:
    """Store the result as message `result_seq` with its event (and the tool's stats).

    Kept in heartbeat details until Postgres has it (activities/persistence.py).
    """
    ok, error_type, content = outcome
    latency_ms = (time.perf_counter() - started) * 1000
    if len(content) > MAX_RESULT_CHARS:
        content = (
            content[:MAX_RESULT_CHARS]
            + f"\n[truncated: {len(content) - MAX_RESULT_CHARS} more characters]"
        )
    message = ChatMessage(role="tool", content=content, tool_call_id=call.id, name=call.name)
    event = RunEvent(
        key=f"tool-result-{call.id}", type="tool.result",
        data={"call_id": call.id, "tool": call.name, "ok": ok, "error_type": error_type,
              "result": runs.preview(content, 1000), "duration_ms": round(latency_ms, 1)},
    )  # fmt: skip

    async def write() -> None:
        # One round trip: the result, its event and the tool's stats commit together.
        async with pool.connection() as conn, conn.pipeline():
            await runs.write_message(conn, tenant_id, run_id, result_seq, message)
            await runs.append_event(conn, tenant_id, run_id, event)
            if stats:
                await tool_store.record_tool_call_stats(conn, tenant_id, call.name, ok, latency_ms)

    work: dict[str, Any] = {"ok": ok, "error_type": error_type, "content": content}
    await persistence.keep(write, (work,))
    metrics.tool_call(tenant_id, call.name, ok, error_type)
    return ToolCallOutput(
        result_seq=result_seq,
        ok=ok,
        error_type=error_type,
        preview=runs.preview(content, 500) or "",
    )


def already_stored(found: dict[int, ChatMessage], result_seq: int) -> ToolCallOutput | None:
    """The output for a result an earlier attempt stored (`found`: messages by seq)."""
    stored = found.get(result_seq)
    if stored is None:
        return None
    return ToolCallOutput(
        result_seq=result_seq, ok=True, preview=runs.preview(stored.content, 500) or ""
    )


def kept() -> tuple[bool, str | None, str] | None:
    """The outcome an earlier attempt finished but could not store."""
    earlier = persistence.earlier_work(0)
    if not isinstance(earlier, dict):
        return None
    return earlier["ok"], earlier["error_type"], earlier["content"]


async def record(pool: Pool, input: ToolResultInput) -> ToolCallOutput:
    """Store the result the workflow holds for a call (`record_tool_result`)."""
    started = time.perf_counter()
    async with pool.connection() as conn:
        found = await runs.read_messages(conn, input.run_id, [input.message_seq, input.result_seq])
    done = already_stored(found, input.result_seq)
    if done is not None:
        return done
    if input.message_seq not in found:
        raise NotFound(f"message {input.message_seq} of run {input.run_id!r} not found")
    call = found[input.message_seq].tool_calls[input.call_index]
    outcome = kept() or await held_result(
        pool, input.tenant_id, call, denial=input.denied_reason, failure=input.failure,
        result_text=input.result_text, child_run_id=input.child_run_id,
    ) or (True, None, "")  # fmt: skip
    return await save(
        pool, input.tenant_id, input.run_id, input.result_seq, call, outcome,
        started=started, stats=input.failure is not None,
    )  # fmt: skip


async def held_result(
    pool: Pool,
    tenant_id: str,
    call: ToolCallRequest,
    *,
    denial: str | None,
    failure: str | None,
    result_text: str | None,
    child_run_id: str | None,
) -> tuple[bool, str | None, str] | None:
    """(ok, error type, content) of a call whose result the workflow holds; None: run it."""
    if denial is not None:
        return denied(denial)
    if failure is not None:
        return failed(call.name, failure)
    if result_text is not None:
        return True, None, result_text
    if child_run_id is not None:
        return await child_answer(pool, tenant_id, child_run_id)
    return None
