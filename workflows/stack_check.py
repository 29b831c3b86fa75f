"""StackCheckWorkflow: one activity on every lane, to prove the stack end to end."""

from temporalio import workflow
from temporalio.common import VersioningBehavior

from core import search_attributes
from core.queues import TaskQueue

with workflow.unsafe.imports_passed_through():
    from activities.runs.llm import LlmActivities
    from activities.runs.tool_calls import ToolActivities
    from activities.stack_check import MemoryActivities
    from core.stack_check import ProbeInput, StackCheckInput, StackCheckOutput, StackCheckRecord
    from workflows._options import LANE_PROBE, MEMORY_WRITE


@workflow.defn(name="StackCheckWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class StackCheckWorkflow:
    """Probe the llm and tools lanes in parallel, then record the result on the memory lane.

    Runs on the orchestration lane. No signals, updates or queries. Ends with a
    `StackCheckOutput` (one report per lane, including this orchestration lane) and sets
    the `ColonyStatus` search attribute to `succeeded` or `failed`; it fails only if a
    lane stays unreachable past the probes' schedule-to-close timeout.
    """

    @workflow.run
    async def run(self, input: StackCheckInput) -> StackCheckOutput:
        """Run the probes."""
        info = workflow.info()
        probe = ProbeInput(tenant_id=input.tenant_id, workflow_id=info.workflow_id)
        started = workflow.now()
        # Started together: the two probes run in parallel on their lanes.
        llm = workflow.start_activity_method(
            LlmActivities.probe_llm_lane, probe, **LANE_PROBE[TaskQueue.LLM].kwargs()
        )
        tools = workflow.start_activity_method(
            ToolActivities.probe_tools_lane, probe, **LANE_PROBE[TaskQueue.TOOLS].kwargs()
        )
        reports = [await llm, await tools]
        memory = await workflow.execute_activity_method(
            MemoryActivities.record_stack_check,
            StackCheckRecord(
                tenant_id=input.tenant_id, workflow_id=info.workflow_id, lanes=reports
            ),
            **MEMORY_WRITE.kwargs(),
        )
        orchestration = {
            "lane": "orchestration",
            "ok": True,
            "detail": f"workflow ran on task queue {info.task_queue}",
            "duration_ms": (workflow.now() - started).total_seconds() * 1000,
        }
        output = StackCheckOutput.model_validate(
            {
                "workflow_id": info.workflow_id,
                "lanes": [orchestration, *(r.model_dump() for r in reports), memory.model_dump()],
                "finished_at": workflow.now(),
            }
        )
        workflow.upsert_search_attributes(
            [search_attributes.STATUS.value_set("succeeded" if output.ok else "failed")]
        )
        return output
