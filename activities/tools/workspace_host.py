"""A run's workspace on its tools host: claiming it, deleting it, sweeping leftovers.

A workspace is a directory on one disk, so the run's workspace calls must reach a worker
using that disk. Every tools worker serves the shared tools queue and also its host's
own queue (`core.queues.workspace_host_queue`, named after `workspace.host_id`; Temporal's
worker-specific task queue pattern):

    claim_workspace    shared queue: makes the run's workspace here, answers this host
    execute_tool       host queue: a workspace call (fails WorkspaceLost if it is not here)
    release_workspace  host queue: deletes it when the run ends

A host that is gone (its queue has no poller) or lost the directory makes the workflow
claim a new workspace on the shared queue (workflows/_workspace.py). A starting worker
deletes what no run will use again (`sweep_workspaces`).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from temporalio import activity

from activities.tools import workspace as ws
from core.settings import Settings
from core.tools.workspaces import WorkspaceHost, WorkspaceInput

log = logging.getLogger("colony.workspaces")


class WorkspaceActivities:
    """Activities of the tools lane that place and remove run workspaces."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="claim_workspace")
    def claim_workspace(self, input: WorkspaceInput) -> WorkspaceHost:
        """Make the run's workspace on this host (keeping one that is here) and name the host."""
        ws.workspace_for(self._settings, input.tenant_id, input.run_id)
        return WorkspaceHost(
            host_id=ws.host_id(self._settings), wait_s=self._settings.workspace_host_wait_s
        )

    @activity.defn(name="release_workspace")
    def release_workspace(self, input: WorkspaceInput) -> bool:
        """Delete the run's workspace on this host; True when there was one."""
        return ws.remove_workspace(self._settings, input.tenant_id, input.run_id)


LiveRuns = Callable[[list[str]], Awaitable[set[str]]]
"""Which of these run ids name runs that are not over (Postgres, in the worker)."""


async def sweep_workspaces(settings: Settings, live_runs: LiveRuns) -> int:
    """Delete the workspaces of runs that are over (or unknown) or untouched for too long.

    A run deletes its workspace when it ends; this catches those whose host was down
    then, or whose workflow never got there. Returns how many were deleted; failures
    are logged (a worker starts anyway).
    """
    try:
        stored = await asyncio.to_thread(lambda: list(ws.stored_workspaces(settings)))
        if not stored:
            return 0
        live = await live_runs([w.run_id for w in stored])
        doomed = [
            w
            for w in stored
            if w.run_id not in live or w.age_hours() > settings.workspace_max_age_h
        ]
        for w in doomed:
            await asyncio.to_thread(ws.remove_workspace, settings, w.tenant_id, w.run_id)
    except Exception:
        log.exception("sweeping old workspaces failed")
        return 0
    if doomed:
        log.info("deleted %d workspaces of finished or idle runs", len(doomed))
    return len(doomed)
