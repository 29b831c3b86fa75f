"""Task queues: one per worker lane."""

from enum import StrEnum


class TaskQueue(StrEnum):
    """Worker lanes. Each is a Temporal task queue served by its own worker processes."""

    ORCHESTRATION = "colony-orchestration"
    LLM = "colony-llm"
    TOOLS = "colony-tools"
    MEMORY = "colony-memory"

    @property
    def lane(self) -> str:
        """Short lane name used on the command line (`colony worker --lane llm`)."""
        return self.value.removeprefix("colony-")

    @classmethod
    def from_lane(cls, lane: str) -> "TaskQueue":
        """The task queue of a lane name; raises ValueError for unknown lanes."""
        for queue in cls:
            if queue.lane == lane:
                return queue
        known = ", ".join(q.lane for q in cls)
        raise ValueError(f"unknown lane {lane!r}; known lanes: {known}")


def workspace_host_queue(tools_queue: str, host_id: str) -> str:
    """The task queue of the tools workers that share one disk (their run workspaces).

    `tools_queue` is the tools lane's queue (with its suffix, if any); `host_id` names the
    disk (`activities.tools.workspace.host_id`). A run's workspace calls go there.
    """
    return f"{tools_queue}-host-{host_id}"
