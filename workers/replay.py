"""`colony replay`: replay recent workflow histories against this code before deploying it.

Lists the deployment's workflows started in a window (and those still running, which
an AUTO_UPGRADE workflow would carry onto the new code), fetches each history through
a Colony client and replays it with `Replayer` over every Colony workflow class and the
`ColonyPlugin` (the payload codec decrypts what the server stores). A history the code
cannot replay is a nondeterminism error: a change that needs `workflow.patched`.
"""

import re
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecution, WorkflowHistory
from temporalio.worker import Replayer

from core.queues import TaskQueue
from core.settings import Settings
from core.temporal import ColonyPlugin

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> timedelta:
    """`30m`, `24h`, `7d` as a duration."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h or 7d)")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise ValueError(f"quotes and backslashes are not allowed here: {value!r}")
    return f"'{value}'"


def visibility_query(
    settings: Settings,
    *,
    since: datetime,
    workflow_id: str | None = None,
    workflow_type: str | None = None,
    running: bool = True,
) -> str:
    """The list filter: this deployment's orchestration queue, started since `since`.

    With `running`, workflows still running that started earlier count too.
    """
    queue = TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix
    window = f"StartTime >= '{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    if running:
        window = f"({window} OR ExecutionStatus = 'Running')"
    clauses = [f"TaskQueue = {_quoted(queue)}", window]
    if workflow_id is not None:
        clauses.append(f"WorkflowId = {_quoted(workflow_id)}")
    if workflow_type is not None:
        clauses.append(f"WorkflowType = {_quoted(workflow_type)}")
    return " AND ".join(clauses)


@dataclass(frozen=True)
class ReplayFailure:
    """One history the code could not replay."""

    workflow_id: str
    run_id: str
    workflow_type: str
    error: str


@dataclass
class ReplayReport:
    """What `replay_recent` replayed."""

    replayed: int = 0
    failures: list[ReplayFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every history replayed."""
        return not self.failures


async def replay_recent(
    client: Client,
    query: str,
    workflows: Sequence[type],
    *,
    settings: Settings | None = None,
    limit: int | None = None,
) -> ReplayReport:
    """Replay the histories of the workflows `query` lists (at most `limit`).

    Args:
        client: A client with the Colony plugin (`core.temporal.connect`).
        query: A visibility query (`visibility_query`).
        workflows: The workflow classes to replay against (every Colony workflow).
        settings: Where the payload keys come from; defaults to the environment.
        limit: Most histories to replay; None: all.
    """
    replayer = Replayer(workflows=list(workflows), plugins=[ColonyPlugin(settings)])
    listed: deque[WorkflowExecution] = deque()

    async def histories() -> AsyncIterator[WorkflowHistory]:
        async for execution in client.list_workflows(query, limit=limit):
            listed.append(execution)
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            yield await handle.fetch_history()

    report = ReplayReport()
    # One replay worker for all histories; results come back in the order they went in.
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            execution = listed.popleft()
            report.replayed += 1
            if result.replay_failure is not None:
                report.failures.append(
                    ReplayFailure(
                        workflow_id=execution.id,
                        run_id=execution.run_id,
                        workflow_type=execution.workflow_type,
                        error=str(result.replay_failure),
                    )
                )
    return report
