"""Workflows used only by the benchmarks."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop(i: int) -> int:
    """Return at once: the round trip is pure orchestration."""
    return i


@workflow.defn(name="BenchSequentialActivities")
class SequentialActivities:
    """Run `n` no-op activities one after another; return nothing."""

    @workflow.run
    async def run(self, n: int, local: bool, task_queue: str | None = None) -> None:
        """Run the loop; activities go to `task_queue` (default: the workflow's own)."""
        for i in range(n):
            if local:
                await workflow.execute_local_activity(
                    noop, i, start_to_close_timeout=timedelta(seconds=10)
                )
            else:
                await workflow.execute_activity(
                    noop, i, start_to_close_timeout=timedelta(seconds=10), task_queue=task_queue
                )
