"""Activity presets: task queue, timeouts and retry policy for each kind of activity.

Workflows pass `**PRESET.kwargs()` to `workflow.execute_activity`; no timeout or queue
literal appears anywhere else in workflow code.

Lane queues follow the workflow's own queue: a workflow running on
`colony-orchestration<suffix>` sends activities to `colony-llm<suffix>` and so on. The
suffix is empty in deployments; tests use it to get task queues of their own.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

from core.errors import NON_RETRYABLE_ERROR_TYPES
from core.queues import TaskQueue, workspace_host_queue
from core.tools.workspaces import WorkspaceHost


def retry_policy(
    *,
    initial: timedelta = timedelta(seconds=1),
    maximum: timedelta = timedelta(seconds=30),
    attempts: int = 0,
) -> RetryPolicy:
    """Exponential backoff (x2) from `initial` to `maximum`; `attempts` 0 is unlimited.

    Colony's non-retryable error types are never retried.
    """
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=2.0,
        maximum_interval=maximum,
        maximum_attempts=attempts,
        non_retryable_error_types=NON_RETRYABLE_ERROR_TYPES,
    )


@dataclass(frozen=True)
class ActivityPreset:
    """Options shared by every call of one kind of activity."""

    task_queue: TaskQueue
    start_to_close: timedelta
    schedule_to_close: timedelta | None = None
    heartbeat: timedelta | None = None
    retry: RetryPolicy = field(default_factory=retry_policy)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `workflow.execute_activity` (call inside a workflow)."""
        return {
            "task_queue": self.task_queue.value + queue_suffix(),
            "start_to_close_timeout": self.start_to_close,
            "schedule_to_close_timeout": self.schedule_to_close,
            "heartbeat_timeout": self.heartbeat,
            "retry_policy": self.retry,
        }

    def local_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `workflow.execute_local_activity` (on the workflow's worker)."""
        return {
            "start_to_close_timeout": self.start_to_close,
            "schedule_to_close_timeout": self.schedule_to_close,
            "retry_policy": self.retry,
        }


LANE_PROBE = {
    TaskQueue.LLM: ActivityPreset(TaskQueue.LLM, timedelta(seconds=30), timedelta(minutes=2)),
    TaskQueue.TOOLS: ActivityPreset(TaskQueue.TOOLS, timedelta(seconds=30), timedelta(minutes=2)),
    TaskQueue.MEMORY: ActivityPreset(TaskQueue.MEMORY, timedelta(seconds=30), timedelta(minutes=2)),
}
"""Probes used by the stack check: short, retried for two minutes (a lane may be starting)."""

MEMORY_WRITE = ActivityPreset(TaskQueue.MEMORY, timedelta(seconds=30), timedelta(minutes=10))
"""Postgres and Qdrant writes on the memory lane."""


def queue_suffix() -> str:
    """The suffix of the current workflow's task queue after its lane's name."""
    queue = workflow.info().task_queue
    for lane in TaskQueue:
        if queue.startswith(lane.value):
            return queue.removeprefix(lane.value)
    return ""


MEMORY_RECALL = ActivityPreset(
    TaskQueue.MEMORY, timedelta(seconds=60), timedelta(minutes=5), timedelta(seconds=30)
)
"""Recall before a run: embeds the objective and searches Qdrant."""

RUN_STORE = ActivityPreset(TaskQueue.MEMORY, timedelta(seconds=30), timedelta(minutes=30))
"""Run and swarm bookkeeping in Postgres (start, messages, subtask runs, events, finish)."""

LLM_CALL = ActivityPreset(
    TaskQueue.LLM,
    start_to_close=timedelta(minutes=10),
    schedule_to_close=timedelta(minutes=30),
    heartbeat=timedelta(seconds=30),
)
"""One model call (streamed, heartbeating); the fallback chain is inside the activity."""

TOOL_CALL = ActivityPreset(
    TaskQueue.TOOLS,
    start_to_close=timedelta(minutes=10),
    schedule_to_close=timedelta(minutes=30),
    heartbeat=timedelta(seconds=60),
    retry=retry_policy(attempts=4),
)
"""One tool call: retryable failures (a rate limit, a server that is down) are tried four
times over about 7 s (longer when the tool says Retry-After); then the workflow tells the
model the tool is unavailable."""

LOCAL_TOOL_CALL = ActivityPreset(
    TaskQueue.ORCHESTRATION,
    start_to_close=timedelta(seconds=30),
    schedule_to_close=timedelta(minutes=2),
    retry=retry_policy(attempts=4),
)
"""A call of a tool that needs no isolation (`core.tools.names.LOCAL_TOOL_NAMES`), run as
a local activity by the workflow's own worker: its Postgres reads and writes are the
same as on the tools lane; only the server round trip goes."""

TOOL_TESTS = ActivityPreset(
    TaskQueue.TOOLS,
    start_to_close=timedelta(minutes=15),
    schedule_to_close=timedelta(hours=1),
    heartbeat=timedelta(minutes=2),
    retry=retry_policy(attempts=3),
)
"""The tests of an evolution cycle's generated code tools in the sandbox (heartbeats
between tests; a retry runs only the tools still untested)."""

WORKSPACE_CLAIM = ActivityPreset(
    TaskQueue.TOOLS,
    start_to_close=timedelta(seconds=30),
    schedule_to_close=timedelta(minutes=10),
    retry=retry_policy(maximum=timedelta(seconds=10)),
)
"""Claiming a run's workspace on the shared tools queue (any tools worker will do)."""

WORKSPACE_RELEASE = ActivityPreset(
    TaskQueue.TOOLS,
    start_to_close=timedelta(minutes=1),
    retry=retry_policy(attempts=3),
)
"""Deleting a run's workspace at its end, on its host; best effort (a starting tools
worker sweeps what is left)."""


def on_workspace_host(preset: ActivityPreset, host: WorkspaceHost) -> dict[str, Any]:
    """`preset`'s kwargs, sent to the queue of the tools host holding a run's workspace.

    A call no worker of that host picks up within `host.wait_s` fails with a
    schedule-to-start timeout: the host is gone.
    """
    tools_queue = TaskQueue.TOOLS.value + queue_suffix()
    return preset.kwargs() | {
        "task_queue": workspace_host_queue(tools_queue, host.host_id),
        "schedule_to_start_timeout": timedelta(seconds=host.wait_s),
    }


MCP_DISCOVERY = ActivityPreset(
    TaskQueue.TOOLS,
    start_to_close=timedelta(minutes=2),
    schedule_to_close=timedelta(minutes=5),
    retry=retry_policy(maximum=timedelta(seconds=10), attempts=3),
)
"""Discovering one MCP server's tools. An unreachable server is tried three times; the
last attempt records it as `error` and returns (the activity reads `maximum_attempts`)."""

TOOL_SEARCH = ActivityPreset(
    TaskQueue.MEMORY,
    start_to_close=timedelta(minutes=1),
    schedule_to_close=timedelta(minutes=2),
    heartbeat=timedelta(seconds=30),
)
"""Semantic tool search (`search_tools`); heartbeats while it embeds new or changed tools."""

AGENT_BOOTSTRAP = ActivityPreset(
    TaskQueue.MEMORY, start_to_close=timedelta(minutes=1), schedule_to_close=timedelta(minutes=2)
)
"""Drafting an agent from the tenant's memory, tools and agents (`draft_agent`): a recall,
a tool search (which may index new tools) and embedding the tenant's agents."""

MEMORY_QUERY = ActivityPreset(
    TaskQueue.MEMORY, start_to_close=timedelta(seconds=30), schedule_to_close=timedelta(minutes=1)
)
"""Recalling memories for the API (`recall_memories` in `MemoryQueryWorkflow`)."""

MEMORY_DELETE = ActivityPreset(
    TaskQueue.MEMORY, start_to_close=timedelta(minutes=2), schedule_to_close=timedelta(minutes=10)
)
"""Deleting memories (vectors, then rows) for the API; a retry finds what is left."""

MEMORY_MAINTENANCE = ActivityPreset(
    TaskQueue.MEMORY,
    start_to_close=timedelta(minutes=10),
    schedule_to_close=timedelta(hours=1),
    heartbeat=timedelta(minutes=2),
)
"""Memory maintenance on the memory lane (retention, re-embedding, clustering, skills,
retiring): long calls heartbeat and hand back to the workflow after about 4 minutes."""

SKILL_DISTILL = ActivityPreset(
    TaskQueue.LLM,
    start_to_close=timedelta(minutes=3),
    schedule_to_close=timedelta(minutes=15),
    retry=retry_policy(initial=timedelta(seconds=2), maximum=timedelta(seconds=60), attempts=4),
)
"""One model call distilling a skill; after four failed attempts the workflow writes the
cluster's fallback skill instead."""
