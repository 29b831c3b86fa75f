"""The MCP client against a real third-party server over streamable HTTP (and stdio).

`@modelcontextprotocol/server-everything` (npm) exercises every kind of content block.
These tests skip when node or the package is missing (`npm ci --prefix tests/mcp/servers`).
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from activities.tools.framework import ToolExecutionError
from activities.tools.mcp_client import McpSessionPool, McpUnavailableError
from core.errors import ErrorType
from core.tools.mcp import StdioServerConfig, parse_server_config
from tests.mcp._servers import (
    EVERYTHING_BIN,
    EverythingServer,
    everything_missing,
    everything_server,
    http_config,
    start_everything,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(everything_missing() is not None, reason=everything_missing() or ""),
]


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EverythingServer]:
    log = tmp_path_factory.mktemp("everything") / "server.log"
    with everything_server(log=log) as server:
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[McpSessionPool]:
    pool = McpSessionPool(connect_timeout_s=10)
    yield pool
    await pool.close()


async def test_discovery_over_http(pool: McpSessionPool, everything: EverythingServer) -> None:
    tools = {t.name: t for t in await pool.list_tools(http_config(everything.url))}
    assert {"echo", "get-sum", "get-tiny-image", "get-structured-content"} <= set(tools)
    echo = tools["echo"]
    assert echo.qualified_name == "mcp:everything/echo"
    assert echo.provider_name == "mcp__everything__echo"
    assert echo.input_schema["properties"]["message"]["type"] == "string"
    assert tools["get-structured-content"].output_schema is not None
    assert not tools["get-env"].side_effects  # readOnlyHint
    assert tools["toggle-simulated-logging"].side_effects  # no hints: MCP defaults


async def test_calls_render_every_content_kind(
    pool: McpSessionPool, everything: EverythingServer
) -> None:
    config = http_config(everything.url)
    assert await pool.call_tool(config, "echo", {"message": "hi there"}, 10) == "Echo: hi there"
    assert "3" in await pool.call_tool(config, "get-sum", {"a": 1, "b": 2}, 10)

    image = await pool.call_tool(config, "get-tiny-image", {}, 10)
    assert "[image image/png, " in image and "not shown]" in image
    assert len(image) < 300  # no base64 for the model

    resource = await pool.call_tool(
        config, "get-resource-reference", {"resourceType": "Text", "resourceId": 3}, 10
    )
    assert "[resource demo://resource/dynamic/text/3]" in resource

    links = await pool.call_tool(config, "get-resource-links", {"count": 2}, 10)
    assert links.count("[resource link demo://") == 2

    structured = await pool.call_tool(config, "get-structured-content", {"location": "Chicago"}, 10)
    assert set(json.loads(structured)) == {"temperature", "conditions", "humidity"}
    assert pool.sessions_opened == 1


async def test_server_error_comes_back_as_tool_error(
    pool: McpSessionPool, everything: EverythingServer
) -> None:
    # The server validates arguments itself and answers with isError.
    with pytest.raises(ToolExecutionError, match="Input validation error") as info:
        await pool.call_tool(http_config(everything.url), "echo", {"message": 42}, 10)
    assert not info.value.retryable


async def test_slow_tool_times_out_and_the_session_survives(
    pool: McpSessionPool, everything: EverythingServer
) -> None:
    config = http_config(everything.url)
    started = time.perf_counter()
    with pytest.raises(McpUnavailableError, match=r"did not answer .* within 0\.5s") as info:
        await pool.call_tool(
            config, "trigger-long-running-operation", {"duration": 5, "steps": 5}, 0.5
        )
    assert time.perf_counter() - started < 3
    assert info.value.error_type is ErrorType.TIMEOUT and info.value.retryable
    assert await pool.call_tool(config, "echo", {"message": "still here"}, 10) == "Echo: still here"
    assert pool.sessions_opened == 1


async def test_ten_concurrent_calls_over_http(
    pool: McpSessionPool, everything: EverythingServer
) -> None:
    config = http_config(everything.url)
    texts = await asyncio.gather(
        *(pool.call_tool(config, "echo", {"message": f"m{i}"}, 10) for i in range(10))
    )
    assert texts == [f"Echo: m{i}" for i in range(10)]
    assert pool.sessions_opened == 1


async def test_header_secrets_are_resolved(everything: EverythingServer) -> None:
    config = http_config(everything.url, headers={"X-Api-Key": {"secret": "EVERYTHING_KEY"}})
    asked: list[str] = []

    def resolve(name: str) -> str:
        asked.append(name)
        return "k-123"

    async with McpSessionPool(resolve) as pool:
        assert await pool.call_tool(config, "echo", {"message": "x"}, 10) == "Echo: x"
    assert asked == ["EVERYTHING_KEY"]
    assert "k-123" not in repr(config) + config.model_dump_json()


async def test_http_server_restart_reconnects(pool: McpSessionPool, tmp_path: Path) -> None:
    server = start_everything(log=tmp_path / "server.log")
    try:
        config = http_config(server.url, name="restarting")
        assert await pool.call_tool(config, "echo", {"message": "1"}, 10) == "Echo: 1"
        server.stop()

        started = time.perf_counter()
        with pytest.raises(McpUnavailableError, match="'restarting' is unavailable"):
            await pool.call_tool(config, "echo", {"message": "2"}, 10)
        assert time.perf_counter() - started < 5

        # Back on the same port, knowing nothing of the old session.
        server = start_everything(server.port, log=tmp_path / "server.log")
        assert await pool.call_tool(config, "echo", {"message": "3"}, 10) == "Echo: 3"
        server.stop()
        server = start_everything(server.port, log=tmp_path / "server.log")
        # This time the session is stale but the port answers: one reconnect.
        assert await pool.call_tool(config, "echo", {"message": "4"}, 10) == "Echo: 4"
        assert pool.sessions_opened == 3
    finally:
        server.stop()


async def test_stdio_env_secret_reaches_the_server_process() -> None:
    config = parse_server_config(
        {
            "name": "everything-stdio",
            "transport": "stdio",
            "command": str(EVERYTHING_BIN),
            "args": ["stdio"],
            "env": {"COLONY_TEST_VALUE": {"secret": "TEST_VALUE"}, "PLAIN": "literal"},
        }
    )
    assert isinstance(config, StdioServerConfig)
    async with McpSessionPool({"TEST_VALUE": "resolved-value-42"}.__getitem__) as pool:
        env = json.loads(await pool.call_tool(config, "get-env", {}, 10))
    assert env["COLONY_TEST_VALUE"] == "resolved-value-42"
    assert env["PLAIN"] == "literal"
    assert "resolved-value-42" not in repr(config)
