"""McpDiscoveryWorkflow: discover a registered MCP server's tools on the tools lane."""

from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import ActivityError

from core import search_attributes

with workflow.unsafe.imports_passed_through():
    from activities.tools.mcp_discovery import McpActivities
    from core.tools.mcp_servers import McpDiscoveryInput, McpDiscoveryOutput
    from workflows._options import MCP_DISCOVERY


@workflow.defn(name="McpDiscoveryWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class McpDiscoveryWorkflow:
    """Run `discover_mcp_server` for one server on the tools lane and return what it found.

    Runs on the orchestration lane; started by `POST /v1/mcp-servers` and
    `POST /v1/mcp-servers/{name}/refresh`. No signals, updates or queries. Ends with a
    `McpDiscoveryOutput` whose status is `ready`, `error`, or `superseded` (the server
    was deleted or registered again meanwhile; a newer discovery applies). An
    unreachable server is an `error` result (the activity records it after its last
    attempt), not a workflow failure. If the activity itself fails for good (every
    attempt timed out, Postgres unreachable) the output says so and the server record
    keeps its `pending` status until the next refresh. Sets `ColonyStatus` to the
    output's status.
    """

    @workflow.run
    async def run(self, input: McpDiscoveryInput) -> McpDiscoveryOutput:
        """Discover the server's tools."""
        output: McpDiscoveryOutput
        try:
            output = await workflow.execute_activity_method(
                McpActivities.discover_mcp_server, input, **MCP_DISCOVERY.kwargs()
            )
        except ActivityError as exc:
            cause = exc.cause or exc
            output = McpDiscoveryOutput(
                server=input.server,
                status="error",
                error=f"discovery did not complete: {getattr(cause, 'message', None) or cause}",
            )
        workflow.upsert_search_attributes([search_attributes.STATUS.value_set(output.status)])
        return output
