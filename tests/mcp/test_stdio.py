"""The MCP client against real third-party stdio servers: mcp-server-time and mcp-server-git."""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.tools.framework import (
    BadToolArgumentsError,
    StaticToolRegistry,
    ToolContext,
    ToolExecutionError,
    run_tool,
)
from activities.tools.mcp_client import McpSessionPool, McpUnavailableError, mcp_tool_definition
from core.errors import ErrorType
from core.payloads import ToolCallRequest
from tests.mcp._servers import alive, child_pids, git_config, stdio_config, time_config, wait_gone

pytestmark = pytest.mark.timeout(60)

TIME_MARKER = "mcp_server_time"


@pytest.fixture
async def pool() -> AsyncIterator[McpSessionPool]:
    pool = McpSessionPool(connect_timeout_s=15)
    yield pool
    await pool.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (path / "hello.txt").write_text("hello\n")
    subprocess.run([*git, "add", "hello.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "First commit"], check=True)
    (path / "new.txt").write_text("untracked\n")
    return path


def _context() -> ToolContext:
    return ToolContext(tenant_id="t1", run_id="r1", step=1, now=datetime.now(UTC))


async def test_time_server_tools_are_discovered_with_schemas(pool: McpSessionPool) -> None:
    tools = {t.qualified_name: t for t in await pool.list_tools(time_config())}
    assert set(tools) == {"mcp:time/get_current_time", "mcp:time/convert_time"}
    current = tools["mcp:time/get_current_time"]
    assert current.provider_name == "mcp__time__get_current_time"
    assert current.input_schema["type"] == "object"
    assert current.input_schema["required"] == ["timezone"]
    assert current.output_schema is not None and "datetime" in current.output_schema["properties"]
    assert current.description
    # The server marks its tools read-only: no side effects.
    assert current.read_only and not current.side_effects and not current.destructive


async def test_time_call_and_server_side_error(pool: McpSessionPool) -> None:
    config = time_config()
    text = await pool.call_tool(config, "get_current_time", {"timezone": "Asia/Tokyo"}, 10)
    # structuredContent duplicated as pretty JSON text comes back as one compact JSON.
    assert text.startswith('{"timezone":"Asia/Tokyo","datetime":"')
    assert "\n" not in text

    converted = await pool.call_tool(
        config,
        "convert_time",
        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Kolkata"},
        10,
    )
    assert "17:30" in converted

    with pytest.raises(ToolExecutionError) as info:
        await pool.call_tool(config, "get_current_time", {"timezone": "Mars/Olympus_Mons"}, 10)
    assert "Invalid timezone" in info.value.message
    assert "Mars/Olympus_Mons" in info.value.message
    assert info.value.error_type is ErrorType.TOOL_FAILED and not info.value.retryable

    with pytest.raises(BadToolArgumentsError, match="Unknown tool: no_such_tool"):
        await pool.call_tool(config, "no_such_tool", {}, 10)
    assert pool.sessions_opened == 1  # errors do not cost the session


async def test_git_server_discovery_call_and_error(pool: McpSessionPool, repo: Path) -> None:
    config = git_config(repo)
    tools = {t.name: t for t in await pool.list_tools(config)}
    assert {"git_status", "git_log", "git_commit", "git_diff"} <= set(tools)
    assert tools["git_status"].qualified_name == "mcp:git/git_status"
    assert not tools["git_status"].side_effects
    assert tools["git_commit"].side_effects  # not read-only
    assert tools["git_reset"].destructive
    assert "repo_path" in tools["git_log"].input_schema["properties"]

    status = await pool.call_tool(config, "git_status", {"repo_path": str(repo)}, 10)
    assert "On branch main" in status and "new.txt" in status
    log = await pool.call_tool(config, "git_log", {"repo_path": str(repo)}, 10)
    assert "First commit" in log

    with pytest.raises(ToolExecutionError, match="outside the allowed repository"):
        await pool.call_tool(config, "git_status", {"repo_path": str(repo.parent)}, 10)


async def test_session_is_reused_by_one_process(pool: McpSessionPool) -> None:
    config = time_config()
    await pool.list_tools(config)
    [pid] = child_pids(TIME_MARKER)
    for zone in ("UTC", "Europe/Paris", "America/New_York"):
        await pool.call_tool(config, "get_current_time", {"timezone": zone}, 10)
    assert child_pids(TIME_MARKER) == {pid}
    assert pool.sessions_opened == 1 and pool.live_sessions == 1


async def test_crashed_server_is_restarted_on_the_next_call(pool: McpSessionPool) -> None:
    config = time_config()
    await pool.call_tool(config, "get_current_time", {"timezone": "UTC"}, 10)
    [pid] = child_pids(TIME_MARKER)
    os.kill(pid, signal.SIGKILL)
    assert await wait_gone(pid)

    text = await pool.call_tool(config, "get_current_time", {"timezone": "Europe/Berlin"}, 10)
    assert "Europe/Berlin" in text
    assert pool.sessions_opened == 2
    [new_pid] = child_pids(TIME_MARKER)
    assert new_pid != pid


async def test_crash_during_concurrent_calls_reconnects_once(pool: McpSessionPool) -> None:
    config = time_config()
    await pool.connect(config)
    [pid] = child_pids(TIME_MARKER)
    os.kill(pid, signal.SIGKILL)
    assert await wait_gone(pid)
    zones = ["UTC", "Asia/Tokyo", "Europe/Paris", "America/Chicago", "Australia/Sydney"]
    texts = await asyncio.gather(
        *(pool.call_tool(config, "get_current_time", {"timezone": z}, 10) for z in zones)
    )
    assert all(zone in text for zone, text in zip(zones, texts, strict=True))
    assert pool.sessions_opened == 2
    assert len(child_pids(TIME_MARKER)) == 1


async def test_ten_concurrent_calls_share_one_session(pool: McpSessionPool) -> None:
    config = time_config()
    zones = [
        "UTC",
        "Asia/Tokyo",
        "Europe/Paris",
        "America/New_York",
        "Africa/Cairo",
        "Asia/Kolkata",
        "Europe/London",
        "America/Sao_Paulo",
        "Pacific/Auckland",
        "Asia/Singapore",
    ]
    # A fresh pool: all ten race to open the session; one opens it, all use it.
    texts = await asyncio.gather(
        *(pool.call_tool(config, "get_current_time", {"timezone": z}, 10) for z in zones)
    )
    for zone, text in zip(zones, texts, strict=True):
        assert f'"timezone":"{zone}"' in text
    assert pool.sessions_opened == 1
    assert len(child_pids(TIME_MARKER)) == 1


async def test_close_stops_every_server_process(repo: Path) -> None:
    pool = McpSessionPool()
    await pool.connect(time_config())
    await pool.connect(git_config(repo))
    pids = child_pids(TIME_MARKER) | child_pids("mcp_server_git")
    assert len(pids) == 2
    started = time.perf_counter()
    await pool.close()
    assert time.perf_counter() - started < 10
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(McpUnavailableError, match="shutting down"):
        await pool.call_tool(time_config(), "get_current_time", {"timezone": "UTC"}, 10)


async def test_server_that_exits_at_once_fails_fast_naming_it(pool: McpSessionPool) -> None:
    config = stdio_config("flaky", "mcp_server_time")
    dead = config.model_copy(update={"args": ("-c", "import sys; sys.exit(3)")})
    started = time.perf_counter()
    with pytest.raises(McpUnavailableError) as info:
        await pool.call_tool(dead, "get_current_time", {"timezone": "UTC"}, 10)
    assert time.perf_counter() - started < 5
    assert "MCP server 'flaky' is unavailable" in info.value.message
    assert "closed the connection during the MCP handshake" in info.value.message
    assert info.value.retryable and info.value.error_type is ErrorType.MCP_UNAVAILABLE
    assert info.value.server == "flaky"


async def test_missing_command_is_a_clear_error(pool: McpSessionPool) -> None:
    config = time_config("nowhere").model_copy(update={"command": "/nonexistent/mcp-server"})
    with pytest.raises(McpUnavailableError, match=r"'nowhere'.*command was not found"):
        await pool.list_tools(config)


async def test_silent_server_times_out_and_is_stopped() -> None:
    config = time_config("silent").model_copy(
        update={"args": ("-c", "import time; time.sleep(60)")}
    )
    async with McpSessionPool(connect_timeout_s=1) as pool:
        started = time.perf_counter()
        with pytest.raises(McpUnavailableError, match="no answer to the MCP handshake within 1s"):
            await pool.connect(config)
        # One second of handshake, then the SDK's bounded stop (stdin closed, TERM, KILL).
        assert time.perf_counter() - started < 8
        assert not child_pids("time.sleep(60)")


async def test_env_secret_is_resolved_through_the_callable() -> None:
    asked: list[str] = []

    def resolve(name: str) -> str:
        asked.append(name)
        return {"LOCAL_TZ": "Pacific/Chatham"}[name]

    config = time_config(env={"TZ": {"secret": "LOCAL_TZ"}})
    for text in (repr(config), str(config), config.model_dump_json()):
        assert "Pacific/Chatham" not in text
    async with McpSessionPool(resolve) as pool:
        tools = await pool.list_tools(config)
    # mcp-server-time reads TZ for its local zone and names it in its schema.
    described = tools[0].input_schema["properties"]["timezone"]["description"]
    assert "Pacific/Chatham" in described
    assert asked == ["LOCAL_TZ"]

    async with McpSessionPool(dict[str, str]().__getitem__) as pool:
        with pytest.raises(ToolExecutionError) as info:
            await pool.list_tools(config)
    assert "references secret 'LOCAL_TZ', which is not set" in info.value.message
    assert not info.value.retryable


async def test_scopes_get_separate_sessions(pool: McpSessionPool) -> None:
    config = time_config()
    await pool.connect(config, scope="tenant-a")
    await pool.connect(config, scope="tenant-b")
    await pool.connect(config, scope="tenant-a")
    assert pool.sessions_opened == 2
    assert len(child_pids(TIME_MARKER)) == 2


async def test_tool_definition_runs_through_the_registry(pool: McpSessionPool) -> None:
    config = time_config()
    definitions = [mcp_tool_definition(pool, config, t) for t in await pool.list_tools(config)]
    registry = StaticToolRegistry(definitions)
    assert set(registry.names) == {"mcp__time__get_current_time", "mcp__time__convert_time"}
    schema = registry.schemas(["mcp__time__get_current_time"])[0]
    assert schema.parameters["required"] == ["timezone"]

    call = ToolCallRequest(
        id="c1", name="mcp__time__get_current_time", arguments='{"timezone": "Asia/Tokyo"}'
    )
    assert '"timezone":"Asia/Tokyo"' in await run_tool(registry, call, _context())
    # Arguments are checked against the server's schema before anything is sent.
    with pytest.raises(BadToolArgumentsError, match="missing required field 'timezone'"):
        await run_tool(registry, call.model_copy(update={"arguments": "{}"}), _context())
    # Server-side errors pass through run_tool unchanged.
    bad = call.model_copy(update={"arguments": '{"timezone": "Nowhere/Land"}'})
    with pytest.raises(ToolExecutionError, match="Invalid timezone"):
        await run_tool(registry, bad, _context())
    # The handler scopes sessions by tenant: t1's session is not the unscoped one.
    assert pool.sessions_opened == 2


async def test_caller_cancelled_while_connecting_leaks_no_process() -> None:
    config = time_config()
    pool = McpSessionPool()
    task = asyncio.create_task(pool.call_tool(config, "get_current_time", {"timezone": "UTC"}, 10))
    await asyncio.sleep(0.1)  # the server is still starting
    [pid] = child_pids(TIME_MARKER)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await pool.close()
    assert not alive(pid)


async def test_idle_sessions_are_closed() -> None:
    async with McpSessionPool(idle_timeout_s=0.3) as pool:
        await pool.connect(time_config(), scope="a")
        [pid] = child_pids(TIME_MARKER)
        await asyncio.sleep(0.4)
        await pool.connect(time_config(), scope="b")  # any acquire reaps idle sessions
        assert await wait_gone(pid)
        assert pool.live_sessions == 1
