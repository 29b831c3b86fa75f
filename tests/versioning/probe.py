"""A test-only workflow for versioning tests (its own module: the sandbox imports it)."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import VersioningBehavior

from core.stack_check import StackCheckInput


@workflow.defn(name="VersionProbe", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class LongLivedProbe:
    """Waits for `finish`, as a long-lived Colony workflow waits for people or evidence."""

    def __init__(self) -> None:
        self._done = False

    @workflow.signal
    def finish(self) -> None:
        """Let the workflow end."""
        self._done = True

    @workflow.run
    async def run(self) -> str:
        """Wait, then end."""
        await workflow.wait_condition(lambda: self._done)
        return "done"


@workflow.defn(name="StackCheckWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class OldStackCheck:
    """A StackCheckWorkflow whose commands differ from the current one's: its histories
    stand for those of a release the current code can no longer replay."""

    @workflow.run
    async def run(self, input: StackCheckInput) -> None:
        """Start a timer where the current code schedules the lane probes."""
        await workflow.sleep(timedelta(milliseconds=10))
