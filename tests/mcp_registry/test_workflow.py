"""McpDiscoveryWorkflow when its activity fails for good (real Temporal, a stand-in activity)."""

import uuid

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from core import search_attributes
from core import temporal as temporal_support
from core.errors import ErrorType
from core.queues import TaskQueue
from core.tools.mcp_servers import McpDiscoveryInput, McpDiscoveryOutput
from tests.conftest import make_settings
from tests.support.replay import assert_replays
from tests.support.services import TemporalServer
from workflows.mcp_discovery import McpDiscoveryWorkflow

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def client(temporal: TemporalServer) -> Client:
    return await temporal_support.connect(make_settings(TEMPORAL_ADDRESS=temporal.address))


async def _run(client: Client, error: ApplicationError) -> tuple[McpDiscoveryOutput, int]:
    suffix = f"-mcpwf-{uuid.uuid4().hex[:8]}"
    attempts = 0

    @activity.defn(name="discover_mcp_server")
    async def failing(input: McpDiscoveryInput) -> McpDiscoveryOutput:
        nonlocal attempts
        attempts += 1
        raise error

    async with (
        Worker(
            client,
            task_queue=TaskQueue.ORCHESTRATION.value + suffix,
            workflows=[McpDiscoveryWorkflow],
            max_cached_workflows=0,
        ),
        Worker(client, task_queue=TaskQueue.TOOLS.value + suffix, activities=[failing]),
    ):
        handle = await client.start_workflow(
            McpDiscoveryWorkflow.run,
            McpDiscoveryInput(tenant_id="t", server="s"),
            id=f"mcp-discovery-t-s-{uuid.uuid4().hex[:8]}",
            task_queue=TaskQueue.ORCHESTRATION.value + suffix,
        )
        output = await handle.result()
        description = await handle.describe()
        assert description.typed_search_attributes.get(search_attributes.STATUS) == "error"
        await assert_replays(handle)
    return output, attempts


async def test_a_failing_activity_ends_as_an_error_not_a_failure(client: Client) -> None:
    output, attempts = await _run(
        client,
        ApplicationError("database is gone", type=ErrorType.INVALID_REQUEST, non_retryable=True),
    )
    assert attempts == 1
    assert output.status == "error" and output.server == "s"
    assert output.error is not None and "database is gone" in output.error


async def test_retryable_failures_stop_after_the_presets_attempts(client: Client) -> None:
    output, attempts = await _run(
        client, ApplicationError("still down", type=ErrorType.MCP_UNAVAILABLE)
    )
    assert attempts == 3  # MCP_DISCOVERY.retry.maximum_attempts: never an endless loop
    assert output.status == "error" and output.error is not None
    assert "still down" in output.error
