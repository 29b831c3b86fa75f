"""The tools lane's activities: `execute_tool` (one tool call of the agent loop) and the probe.

One call goes through the same steps whatever the tool's kind:

    stored result? -> return it (a retried activity never runs a tool twice)
    policy         -> resolved again here from the agent version and the tool's defaults:
                      the workflow's view is not trusted alone (a denial is a result)
    limits         -> the tool's rate limit and concurrency cap (per worker)
    run            -> `ToolCatalog` resolves the name; arguments are checked against the
                      schema before anything runs
    record         -> the result message and its event commit together; stats updated

Errors the model can act on (unknown tool, bad arguments, a failing tool, a denial) are
results it reads on its next turn. Errors that say "not now" (a rate limit, an MCP
server that is down, a 503 from an HTTP tool) fail the activity retryably instead.
"""

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import persistence, sandbox
from activities._common import PinnedVersions, worker_identity
from activities.blackboard import BLACKBOARD_TOOLS
from activities.builtin_tools import ToolContext, ToolError
from activities.catalog import CatalogEntry, ToolCatalog, run_entry
from activities.heartbeats import heartbeat_every
from activities.tool_limits import RetryableToolError, ToolLimiter
from core import policy, runs
from core import tools as tool_store
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.models import (
    ChatMessage,
    LaneReport,
    ProbeInput,
    RunEvent,
    ToolCallInput,
    ToolCallOutput,
    ToolCallRequest,
)
from core.settings import Settings
from core.tool_names import FIND_TOOLS

MAX_RESULT_CHARS = 1_000_000
"""Tool output beyond this is cut before it is stored (prompts see less: see activities.llm)."""


class ToolActivities:
    """Activities served by the `tools` lane."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        catalog: ToolCatalog | None = None,
        limiter: ToolLimiter | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._catalog = catalog or ToolCatalog()
        self._limiter = limiter or ToolLimiter()
        self._versions = PinnedVersions()

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
        """Run one tool call and store its result as message `result_seq` (see the module)."""
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
            entry = (await self._catalog.entries(conn, input.tenant_id, [call.name])).get(call.name)
            denial = input.denied_reason or await self._policy_denial(conn, input, call, entry)
        started = time.perf_counter()
        ok, error_type = True, None
        earlier = persistence.earlier_work(0)  # run by an attempt that could not store it
        if isinstance(earlier, dict):
            ok, error_type, content = earlier["ok"], earlier["error_type"], earlier["content"]
        elif denial is not None:
            ok, error_type = False, ErrorType.POLICY_DENIED.value
            content = f"Tool call denied: {denial}"
        elif input.failure is not None:
            ok, error_type = False, ErrorType.TOOL_FAILED.value
            content = (
                f"Error: tool '{call.name}' is unavailable; it failed after retries "
                f"({input.failure}). Continue without it or try another tool."
            )
        elif input.result_text is not None:
            content = input.result_text
        elif input.child_run_id is not None:
            ok, content = await self._child_answer(input.tenant_id, input.child_run_id)
            error_type = None if ok else ErrorType.TOOL_FAILED.value
        else:
            try:
                content = await self._run(input, call, entry)
            except ToolError as exc:
                if exc.retryable:
                    raise ApplicationError(
                        exc.message,
                        type=exc.error_type.value,
                        next_retry_delay=_retry_delay(exc),
                    ) from exc
                ok, error_type = False, exc.error_type.value
                content = f"Error: {exc}"
        latency_ms = (time.perf_counter() - started) * 1000
        if len(content) > MAX_RESULT_CHARS:
            content = (
                content[:MAX_RESULT_CHARS]
                + f"\n[truncated: {len(content) - MAX_RESULT_CHARS} more characters]"
            )
        message = ChatMessage(role="tool", content=content, tool_call_id=call.id, name=call.name)
        result_event = RunEvent(
            key=f"tool-result-{call.id}", type="tool.result",
            data={"call_id": call.id, "tool": call.name, "ok": ok, "error_type": error_type,
                  "result": runs.preview(content, 1000), "duration_ms": round(latency_ms, 1)},
        )  # fmt: skip
        ran = entry is not None and denial is None and input.result_text is None
        ran = ran and input.child_run_id is None and earlier is None

        async def write() -> None:
            # One round trip: the result, its event and the tool's stats commit together.
            async with self._pool.connection() as conn, conn.pipeline():
                await runs.write_message(
                    conn, input.tenant_id, input.run_id, input.result_seq, message
                )
                await runs.append_event(conn, input.tenant_id, input.run_id, result_event)
                if ran:
                    await tool_store.record_tool_call_stats(
                        conn, input.tenant_id, call.name, ok, latency_ms
                    )

        work = {"ok": ok, "error_type": error_type, "content": content}
        await persistence.keep(write, (work,))
        return ToolCallOutput(
            result_seq=input.result_seq,
            ok=ok,
            error_type=error_type,
            preview=runs.preview(content, 500) or "",
        )

    async def _child_answer(self, tenant_id: str, child_run_id: str) -> tuple[bool, str]:
        """The result of an agent's child run, as the calling model reads it."""
        async with self._pool.connection() as conn:
            child = await runs.get_run(conn, tenant_id, child_run_id)
        if child.outcome == "succeeded":
            return True, child.result or "(the agent finished without an answer)"
        return False, (
            f"Agent '{child.agent_name}' did not finish the task (run {child.id}: "
            f"{child.outcome or child.status}{': ' + child.reason if child.reason else ''})."
        )

    async def _policy_denial(
        self,
        conn: runs.Conn,
        input: ToolCallInput,
        call: ToolCallRequest,
        entry: CatalogEntry | None,
    ) -> str | None:
        """Why the call must not run, from the agent version and the tool's own policy."""
        if not input.agent_name:
            return None  # a workflow from before the activity checked policy
        if call.name == FIND_TOOLS:
            return None  # offered to every agent with many tools; it only searches
        if call.name in BLACKBOARD_TOOLS:
            return None  # a swarm's subtasks get them; elsewhere they refuse to work
        version = await self._versions.get(
            conn, input.tenant_id, input.agent_name, input.agent_version
        )
        effective = policy.resolve_for_agent(
            version.spec,
            call.name,
            defaults=entry.policy_defaults if entry else None,
            side_effects=entry.side_effects if entry else False,
            enabled=entry.enabled if entry else True,
            run_mode=input.mode,
        )
        if effective.denied:
            return effective.explanation().removeprefix("Tool call denied by policy: ")
        if effective.mode == "requires_approval" and not input.approved:
            return f"tool {call.name!r} requires a human's approval and none was given"
        return None

    async def _run(
        self, input: ToolCallInput, call: ToolCallRequest, entry: CatalogEntry | None
    ) -> str:
        context = ToolContext(
            tenant_id=input.tenant_id, run_id=input.run_id, step=input.step, now=datetime.now(UTC)
        )
        if entry is None or entry.definition is None:
            # Unknown (or answered only by the workflow): the catalog says so in its error.
            async with self._pool.connection() as conn:
                return await self._catalog.run(conn, input.tenant_id, call, context)
        defaults = entry.policy_defaults
        async with self._limiter.acquire(
            input.tenant_id,
            call.name,
            rate_per_minute=defaults.rate_limit_per_minute if defaults else None,
            max_concurrency=defaults.max_concurrency if defaults else None,
        ):
            return await _heartbeating(run_entry(entry, call, context))


HEARTBEAT_SECONDS = 10.0
"""Heartbeat interval when the activity has no heartbeat timeout (else a third of it:
TOOL_CALL's is 60 s, so a dead worker is noticed in a minute, not at the 10-minute
start-to-close timeout)."""


async def _heartbeating(work: Awaitable[str]) -> str:
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=heartbeat_every(HEARTBEAT_SECONDS))
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()


def _retry_delay(exc: ToolError) -> timedelta | None:
    seconds = exc.retry_after_s if isinstance(exc, RetryableToolError) else None
    return None if seconds is None else timedelta(seconds=seconds)
