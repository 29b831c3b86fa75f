"""Client behaviour that needs no MCP server: rendering, unreachable servers."""

import time
from collections.abc import AsyncIterator

import pytest
from mcp import types

from activities.tools.mcp_client import McpSessionPool, McpUnavailableError, render_result
from tests.mcp._servers import http_config
from workers.process import free_port


@pytest.fixture
async def pool() -> AsyncIterator[McpSessionPool]:
    pool = McpSessionPool(connect_timeout_s=10)
    yield pool
    await pool.close()


@pytest.mark.timeout(30)
async def test_nothing_listening_is_a_clear_bounded_error(pool: McpSessionPool) -> None:
    config = http_config(f"http://127.0.0.1:{free_port()}/mcp", name="gone")
    started = time.perf_counter()
    with pytest.raises(McpUnavailableError) as info:
        await pool.call_tool(config, "echo", {"message": "x"}, 10)
    assert time.perf_counter() - started < 5
    assert "MCP server 'gone' is unavailable (http://127.0.0.1:" in info.value.message
    assert "connection refused" in info.value.message
    assert info.value.retryable


def test_render_result_shapes() -> None:
    only_structured = types.CallToolResult(content=[], structured_content={"a": 1})
    assert render_result(only_structured) == '{"a":1}'
    summary = types.CallToolResult(
        content=[types.TextContent(type="text", text="Done.")], structured_content={"a": 1}
    )
    assert render_result(summary) == 'Done.\n{"a":1}'
    blob = types.CallToolResult(
        content=[
            types.EmbeddedResource(
                type="resource",
                resource=types.BlobResourceContents(
                    uri="file:///x.bin", mime_type="application/zip", blob="AAAA" * 300
                ),
            ),
            types.AudioContent(type="audio", data="AAAA", mime_type="audio/wav"),
        ]
    )
    assert render_result(blob) == (
        "[resource file:///x.bin, application/zip, 900 bytes not shown]\n"
        "[audio audio/wav, 3 bytes not shown]"
    )
    assert render_result(types.CallToolResult(content=[])) == "(no output)"
