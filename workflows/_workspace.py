"""A run's /workspace in the agent-run workflow: claimed on one tools host, calls sent there.

The workspace is a directory on the disk of the tools worker that made it, so the run's
workspace calls (sandbox, file and registered code tools) must all reach that host. The
first one claims the workspace on the shared tools queue (`claim_workspace` answers the
host); it and the later ones go to the host's own queue (Temporal's worker-specific
task queues). When the host is gone (nobody picks the call up within its wait) or no
longer holds the directory, the run claims a new, empty workspace, records a
`workspace.reset` event and runs the call again there; its result starts with a note
telling the model its files are lost. When the run ends its workspace is deleted.

Child runs and swarm subtasks are runs of their own, with workspaces of their own.
"""

import asyncio
from collections.abc import Awaitable, Callable

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    TimeoutType,
    is_cancelled_exception,
)

from core.errors import ErrorType
from core.payloads import RunEvent
from core.runs.payloads import RunPlan, ToolCallInput, ToolCallOutput
from core.tools.names import WORKSPACE_TOOL_NAMES
from core.tools.workspaces import WorkspaceHost, WorkspaceInput

with workflow.unsafe.imports_passed_through():
    from activities.runs.tool_calls import ToolActivities
    from activities.tools.workspace_host import WorkspaceActivities
    from workflows._options import (
        TOOL_CALL,
        WORKSPACE_CLAIM,
        WORKSPACE_RELEASE,
        on_workspace_host,
    )

PATCH_WORKSPACE_HOSTS = "workspace-on-its-tools-host-v1"
"""Workspace calls go to the tools host holding the workspace, deleted at the run's end;
before, they went to the shared tools queue (any worker, any disk)."""

RecordEvents = Callable[[list[RunEvent]], Awaitable[None]]


class RunWorkspace:
    """Where a run's workspace is, and the calls that use it.

    `host` is None until the first workspace call claims one (or when continuing as new
    from a run that had none).
    """

    def __init__(
        self, tenant_id: str, run_id: str, host: WorkspaceHost | None, record: RecordEvents
    ) -> None:
        self._ref = WorkspaceInput(tenant_id=tenant_id, run_id=run_id)
        self.host = host
        self._record = record
        self._lock = asyncio.Lock()  # one claim at a time, for parallel tool calls
        self._resets = 0

    def routes(self, plan: RunPlan, tool: str) -> bool:
        """Whether a call of `tool` goes to the workspace's host (from the patch on)."""
        names = plan.workspace_tools
        uses = tool in names if names is not None else tool in WORKSPACE_TOOL_NAMES
        return uses and workflow.patched(PATCH_WORKSPACE_HOSTS)

    async def execute_tool(self, input: ToolCallInput) -> ToolCallOutput:
        """Run a workspace call on its host; a new workspace (and a note) when it was lost.

        Raises:
            ActivityError: the call failed for another reason, or failed again on a
                freshly claimed workspace.
        """
        reset = False
        while True:
            host = await self._claimed()
            try:
                return await workflow.execute_activity_method(
                    ToolActivities.execute_tool,
                    input.model_copy(
                        update={"workspace_host": host.host_id, "workspace_reset": reset}
                    ),
                    **on_workspace_host(TOOL_CALL, host),
                )
            except ActivityError as exc:
                if reset or is_cancelled_exception(exc) or not _host_lost(exc):
                    raise
                await self._replace(host)
                reset = True

    async def release(self) -> None:
        """Delete the workspace on its host, if the run has one (best effort)."""
        host, self.host = self.host, None
        if host is None:
            return
        try:
            await workflow.execute_activity_method(
                WorkspaceActivities.release_workspace,
                self._ref,
                **on_workspace_host(WORKSPACE_RELEASE, host),
            )
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            workflow.logger.warning("deleting the run's workspace failed: %s", exc)

    async def _claimed(self) -> WorkspaceHost:
        async with self._lock:
            if self.host is None:
                self.host = await workflow.execute_activity_method(
                    WorkspaceActivities.claim_workspace, self._ref, **WORKSPACE_CLAIM.kwargs()
                )
            return self.host

    async def _replace(self, lost: WorkspaceHost) -> None:
        """Forget a lost workspace (once, however many calls found it lost)."""
        async with self._lock:
            if self.host is not lost:
                return  # a parallel call replaced it already
            self.host = None
            self._resets += 1
            await self._record(
                [
                    RunEvent(
                        key=f"workspace-reset-{self._resets}",
                        type="workspace.reset",
                        data={"lost_host": lost.host_id},
                    )
                ]
            )


def _host_lost(exc: ActivityError) -> bool:
    """Whether the call failed because its host is gone or does not hold the workspace."""
    cause: BaseException | None = exc.cause
    while cause is not None:
        if isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START:
            return True
        if isinstance(cause, ApplicationError) and cause.type == ErrorType.WORKSPACE_LOST:
            return True
        cause = cause.__cause__
    return False
