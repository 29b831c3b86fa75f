"""The tools lane's activities: `execute_tool` (one tool call of the agent loop) and the probe.

One call goes through the same steps whatever the tool's kind:

    stored result? -> return it (a retried activity never runs a tool twice)
    policy         -> resolved again here from the agent version and the tool's defaults:
                      the workflow's view is not trusted alone (a denial is a result)
    limits         -> the tool's rate limit and concurrency cap (per worker)
    workspace      -> a call routed to the run's workspace host fails WorkspaceLost when
                      this host does not hold the workspace (workspace_host.py)
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

from activities._common import PinnedVersions, worker_identity
from activities.heartbeats import heartbeat_every
from activities.runs import tool_results
from activities.tools import sandbox
from activities.tools import workspace as ws
from activities.tools.catalog import CatalogEntry, ToolCatalog, run_entry
from activities.tools.framework import ToolContext, ToolError
from activities.tools.limits import RetryableToolError, ToolLimiter
from core import tracing
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.payloads import ToolCallRequest
from core.runs import agents
from core.runs import store as runs
from core.runs.agents import AgentsAsTools
from core.runs.payloads import ToolCallInput, ToolCallOutput
from core.settings import Settings
from core.stack_check import LaneReport, ProbeInput
from core.tools.names import BLACKBOARD_TOOL_NAMES, FIND_TOOLS, LOCAL_TOOL_NAMES


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
        self._catalog = catalog or ToolCatalog(agents=AgentsAsTools())
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
        return await self._execute(input, local=False)

    @activity.defn(name="execute_local_tool")
    async def execute_local_tool(self, input: ToolCallInput) -> ToolCallOutput:
        """`execute_tool` as a local activity of the agent-run workflow's worker.

        Only for tools that need no isolation (`LOCAL_TOOL_NAMES`); any other is refused.
        """
        return await self._execute(input, local=True)

    async def _execute(self, input: ToolCallInput, *, local: bool) -> ToolCallOutput:
        async with self._pool.connection() as conn:
            found = await runs.read_messages(
                conn, input.run_id, [input.message_seq, input.result_seq]
            )
            done = tool_results.already_stored(found, input.result_seq)
            if done is not None:
                return done
            if input.message_seq not in found:
                raise NotFound(f"message {input.message_seq} of run {input.run_id!r} not found")
            call = found[input.message_seq].tool_calls[input.call_index]
            if local and call.name not in LOCAL_TOOL_NAMES:
                raise ApplicationError(
                    f"tool {call.name!r} runs on the tools lane, not in the workflow's worker",
                    type=ErrorType.INVALID_REQUEST.value,
                    non_retryable=True,
                )
            drafts = (input.agent_name, input.agent_version)
            entry = (
                await self._catalog.entries(conn, input.tenant_id, [call.name], drafts_of=drafts)
            ).get(call.name)
            denial = input.denied_reason or await self._policy_denial(conn, input, call, entry)
        if input.workspace_host is not None:
            await asyncio.to_thread(self._check_workspace, input, input.workspace_host)
        started = time.perf_counter()
        kept = tool_results.kept()  # run by an attempt that could not store it
        with tracing.tool_span(
            call.name, call.id, run_id=input.run_id, tenant=input.tenant_id
        ) as span:
            outcome, ran = (
                (kept, False) if kept else await self._outcome(input, call, entry, denial)
            )
            span.failed(outcome[1])
        return await tool_results.save(
            self._pool, input.tenant_id, input.run_id, input.result_seq, call, outcome,
            started=started, stats=ran and entry is not None,
        )  # fmt: skip

    async def _outcome(
        self,
        input: ToolCallInput,
        call: ToolCallRequest,
        entry: CatalogEntry | None,
        denial: str | None,
    ) -> tuple[tuple[bool, str | None, str], bool]:
        """The call's (ok, error type, content), and whether it counts in the tool's stats."""
        # Held results come from workflows from before `record_tool_result` (replayed or
        # in flight); a spent call's error counts in the tool's stats.
        held = await tool_results.held_result(
            self._pool, input.tenant_id, call, denial=denial, failure=input.failure,
            result_text=input.result_text, child_run_id=input.child_run_id,
        )  # fmt: skip
        if held is not None:
            return held, denial is None and input.failure is not None
        note = f"{WORKSPACE_RESET_NOTE}\n\n" if input.workspace_reset else ""
        try:
            return (True, None, note + await self._run(input, call, entry)), True
        except ToolError as exc:
            if exc.retryable:
                raise ApplicationError(
                    exc.message, type=exc.error_type.value, next_retry_delay=_retry_delay(exc)
                ) from exc
            return (False, exc.error_type.value, f"{note}Error: {exc}"), True

    def _check_workspace(self, input: ToolCallInput, host: str) -> None:
        """Fail for good unless this host holds the run's workspace (the run claims anew)."""
        if ws.host_id(self._settings) != host or not ws.holds_workspace(
            self._settings, input.tenant_id, input.run_id
        ):
            raise ApplicationError(
                f"this tools host does not hold the workspace of run {input.run_id!r}",
                type=ErrorType.WORKSPACE_LOST,
                non_retryable=True,
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
        if call.name in BLACKBOARD_TOOL_NAMES:
            return None  # a swarm's subtasks get them; elsewhere they refuse to work
        version = await self._versions.get(
            conn, input.tenant_id, input.agent_name, input.agent_version
        )
        effective = agents.resolve_for_agent(
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


WORKSPACE_RESET_NOTE = (
    "[Note: the workspace was reset. The tools worker holding it is gone, so this call "
    "ran in a new, empty workspace: files written earlier in this run are lost.]"
)
"""Put before a call's result when it ran in a workspace that replaced a lost one."""

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
