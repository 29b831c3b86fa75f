"""AgentBootstrapWorkflow: an agent drafted from what the tenant knows, on the memory lane."""

from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from activities.runs.bootstrap import BootstrapActivities
    from core.runs.bootstrap import BootstrapInput, BootstrapOutput
    from workflows._options import AGENT_BOOTSTRAP


@workflow.defn(name="AgentBootstrapWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class AgentBootstrapWorkflow:
    """Run `draft_agent` once and return the draft.

    Exists so the API, which must not open the memory lane's Qdrant or embedding model
    itself, can draft an agent (`POST /v1/agents/bootstrap`). Runs on the orchestration
    lane. No signals, updates or queries. Ends with a `BootstrapOutput` (nothing is
    stored), or fails when the memory lane cannot answer within the `AGENT_BOOTSTRAP`
    preset's schedule-to-close timeout.
    """

    @workflow.run
    async def run(self, input: BootstrapInput) -> BootstrapOutput:
        """Draft."""
        return await workflow.execute_activity_method(
            BootstrapActivities.draft_agent, input, **AGENT_BOOTSTRAP.kwargs()
        )
