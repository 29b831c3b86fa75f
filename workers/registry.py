"""What each lane runs: workflows and activity factories per task queue.

The worker builds each lane's activities from the shared resources it opens once per
process (settings, Postgres pool); tests build the same objects with their own.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from activities.builtin_tools import BUILTIN, ToolRegistry
from activities.llm import LlmActivities
from activities.memory import MemoryActivities
from activities.store import StoreActivities
from activities.tools import ToolActivities
from core.db import Pool
from core.queues import TaskQueue
from core.settings import Settings
from workflows.agent_run import AgentRunWorkflow
from workflows.stack_check import StackCheckWorkflow


@dataclass(frozen=True)
class Resources:
    """Process-wide clients handed to activity classes."""

    settings: Settings
    pool: Pool
    tools: ToolRegistry = BUILTIN


ActivityFactory = Callable[[Resources], Sequence[Callable[..., Any]]]


@dataclass(frozen=True)
class Lane:
    """One task queue's workflows and activities."""

    queue: TaskQueue
    workflows: Sequence[type] = ()
    activities: ActivityFactory = field(default=lambda _: ())


def _llm(res: Resources) -> Sequence[Callable[..., Any]]:
    llm = LlmActivities(res.settings, res.pool, res.tools)
    return [llm.probe_llm_lane, llm.call_llm]


def _tools(res: Resources) -> Sequence[Callable[..., Any]]:
    tools = ToolActivities(res.settings, res.pool, res.tools)
    return [tools.probe_tools_lane, tools.execute_tool]


def _memory(res: Resources) -> Sequence[Callable[..., Any]]:
    store = StoreActivities(res.pool)
    return [
        MemoryActivities(res.pool).record_stack_check,
        store.start_run,
        store.adopt_messages,
        store.record_events,
        store.finish_run,
    ]


LANES: dict[TaskQueue, Lane] = {
    TaskQueue.ORCHESTRATION: Lane(
        TaskQueue.ORCHESTRATION, workflows=[StackCheckWorkflow, AgentRunWorkflow]
    ),
    TaskQueue.LLM: Lane(TaskQueue.LLM, activities=_llm),
    TaskQueue.TOOLS: Lane(TaskQueue.TOOLS, activities=_tools),
    TaskQueue.MEMORY: Lane(TaskQueue.MEMORY, activities=_memory),
}

ALL_WORKFLOWS: list[type] = [w for lane in LANES.values() for w in lane.workflows]
"""Every workflow class, for replay tests."""


def parse_lanes(names: Sequence[str]) -> list[TaskQueue]:
    """Lane names from the command line (`all` means every lane); order kept, no repeats."""
    queues: list[TaskQueue] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            chosen = list(TaskQueue) if part == "all" else [TaskQueue.from_lane(part)]
            queues += [q for q in chosen if q not in queues]
    if not queues:
        raise ValueError("no lanes given")
    return queues
