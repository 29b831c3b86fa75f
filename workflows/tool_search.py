"""ToolSearchWorkflow: semantic tool search for the API, run on the memory lane."""

from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from activities.tools.search import ToolSearchActivities
    from core.tools.search import ToolSearchInput, ToolSearchOutput
    from workflows._options import TOOL_SEARCH


@workflow.defn(name="ToolSearchWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class ToolSearchWorkflow:
    """Run `search_tools` once and return its hits.

    Exists so the API, which must not open the memory lane's Qdrant itself, can ask for
    a search (`GET /v1/tools/search`); agent runs call the activity directly for
    `find_tools`. Runs on the orchestration lane. No signals, updates or queries. Ends
    with a `ToolSearchOutput`, or fails when the memory lane cannot answer within the
    `TOOL_SEARCH` preset's schedule-to-close timeout.
    """

    @workflow.run
    async def run(self, input: ToolSearchInput) -> ToolSearchOutput:
        """Search."""
        return await workflow.execute_activity_method(
            ToolSearchActivities.search_tools, input, **TOOL_SEARCH.kwargs()
        )
