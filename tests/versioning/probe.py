"""A test-only workflow for versioning tests (its own module: the sandbox imports it)."""

from temporalio import workflow
from temporalio.common import VersioningBehavior


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
