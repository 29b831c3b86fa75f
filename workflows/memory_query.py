"""MemoryQueryWorkflow and MemoryDeleteWorkflow: the API's memory requests, on the memory lane."""

from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from activities.memory.store import MemoryStoreActivities
    from core.memory.payloads import (
        DeleteMemoriesInput,
        DeleteMemoriesOutput,
        RecallInput,
        RecallOutput,
    )
    from workflows._options import MEMORY_DELETE, MEMORY_QUERY


@workflow.defn(name="MemoryQueryWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class MemoryQueryWorkflow:
    """Run `recall_memories` once and return its hits.

    Exists so the API, which must not open the memory lane's Qdrant itself, can query
    memory (`POST /v1/memory/query`). Runs on the orchestration lane. No signals, updates
    or queries. Ends with a `RecallOutput`, or fails when the memory lane cannot answer
    within the `MEMORY_QUERY` preset's schedule-to-close timeout.
    """

    @workflow.run
    async def run(self, input: RecallInput) -> RecallOutput:
        """Recall."""
        return await workflow.execute_activity_method(
            MemoryStoreActivities.recall_memories, input, **MEMORY_QUERY.kwargs()
        )


@workflow.defn(name="MemoryDeleteWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class MemoryDeleteWorkflow:
    """Run `delete_memories` once and return how many memories it deleted.

    For `DELETE /v1/memory` and `DELETE /v1/memory/{id}`. Runs on the orchestration lane.
    No signals, updates or queries. Ends with a `DeleteMemoriesOutput`, or fails with the
    activity's error (a request without filters is non-retryable) or when the memory lane
    cannot finish within the `MEMORY_DELETE` preset's schedule-to-close timeout.
    """

    @workflow.run
    async def run(self, input: DeleteMemoriesInput) -> DeleteMemoriesOutput:
        """Delete."""
        return await workflow.execute_activity_method(
            MemoryStoreActivities.delete_memories, input, **MEMORY_DELETE.kwargs()
        )
