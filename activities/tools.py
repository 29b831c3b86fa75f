"""The tools lane's activities: `execute_tool` (one tool call of the agent loop) and the probe."""

import time
from datetime import UTC, datetime

from temporalio import activity

from activities import sandbox
from activities._common import worker_identity
from activities.builtin_tools import BUILTIN, ToolContext, ToolError, ToolRegistry, run_tool
from core import runs
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.models import (
    ChatMessage,
    LaneReport,
    ProbeInput,
    RunEvent,
    ToolCallInput,
    ToolCallOutput,
)
from core.settings import Settings

MAX_RESULT_CHARS = 1_000_000
"""Tool output beyond this is cut before it is stored (prompts see less: see activities.llm)."""


class ToolActivities:
    """Activities served by the `tools` lane."""

    def __init__(self, settings: Settings, pool: Pool, tools: ToolRegistry = BUILTIN) -> None:
        self._settings = settings
        self._pool = pool
        self._tools = tools

    @activity.defn(name="probe_tools_lane")
    def probe_tools_lane(self, input: ProbeInput) -> LaneReport:
        """Run a command in the sandbox backend and report whether it worked."""
        started = time.perf_counter()
        status = sandbox.probe(self._settings)
        return LaneReport(
            lane="tools",
            ok=status.ok,
            detail=f"{status.backend}: {status.detail}",
            worker=worker_identity(),
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    @activity.defn(name="execute_tool")
    async def execute_tool(self, input: ToolCallInput) -> ToolCallOutput:
        """Run one tool call and store its result as message `result_seq`.

        Tool errors (unknown tool, bad arguments, a failing tool, a denial) are results
        the model sees, not activity failures. Idempotent: a stored result is returned as is.
        """
        async with self._pool.connection() as conn:
            found = await runs.read_messages(
                conn, input.run_id, [input.message_seq, input.result_seq]
            )
            stored = found.get(input.result_seq)
            if stored is not None:
                return ToolCallOutput(
                    result_seq=input.result_seq,
                    ok=True,
                    preview=runs.preview(stored.content, 500) or "",
                )
            if input.message_seq not in found:
                raise NotFound(f"message {input.message_seq} of run {input.run_id!r} not found")
            call = found[input.message_seq].tool_calls[input.call_index]
            await runs.append_event(
                conn, input.tenant_id, input.run_id,
                RunEvent(key=f"tool-call-{call.id}", type="tool.call", data={
                    "call_id": call.id, "tool": call.name,
                    "arguments": runs.preview(call.arguments, 500),
                }),
            )  # fmt: skip
        started = time.perf_counter()
        ok, error_type = True, None
        if input.denied_reason is not None:
            ok, error_type = False, ErrorType.POLICY_DENIED.value
            content = f"Tool call denied: {input.denied_reason}"
        else:
            context = ToolContext(
                tenant_id=input.tenant_id,
                run_id=input.run_id,
                step=input.step,
                now=datetime.now(UTC),
            )
            try:
                content = await run_tool(self._tools, call, context)
            except ToolError as exc:
                ok, error_type = False, exc.error_type.value
                content = f"Error: {exc}"
        if len(content) > MAX_RESULT_CHARS:
            content = (
                content[:MAX_RESULT_CHARS]
                + f"\n[truncated: {len(content) - MAX_RESULT_CHARS} more characters]"
            )
        message = ChatMessage(role="tool", content=content, tool_call_id=call.id, name=call.name)
        result_event = RunEvent(
            key=f"tool-result-{call.id}", type="tool.result",
            data={"call_id": call.id, "tool": call.name, "ok": ok, "error_type": error_type,
                  "result": runs.preview(content, 1000),
                  "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )  # fmt: skip
        # One round trip: the result and its event commit together.
        async with self._pool.connection() as conn, conn.pipeline():
            await runs.write_message(conn, input.tenant_id, input.run_id, input.result_seq, message)
            await runs.append_event(conn, input.tenant_id, input.run_id, result_event)
        return ToolCallOutput(
            result_seq=input.result_seq,
            ok=ok,
            error_type=error_type,
            preview=runs.preview(content, 500) or "",
        )
