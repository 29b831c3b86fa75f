"""MCP call round trips through `McpSessionPool`: `python -m tests.bench.mcp [--calls N]`.

For each transport: the cost of opening a session (process start or HTTP connect plus the
MCP handshake), and the median and p95 of `call_tool` on the reused session. stdio uses
mcp-server-time (PyPI); HTTP uses @modelcontextprotocol/server-everything (npm), and is
left out when node or the package is missing.
"""

import argparse
import asyncio
import statistics
import time
from typing import Any

from activities.tools.mcp_client import McpSessionPool
from core.tools.mcp import McpServerConfig
from tests.mcp._servers import everything_missing, everything_server, http_config, time_config


async def _measure(
    config: McpServerConfig, tool: str, arguments: dict[str, Any], calls: int, starts: int
) -> dict[str, float]:
    start_ms: list[float] = []
    call_ms: list[float] = []
    for _ in range(starts):
        async with McpSessionPool() as pool:
            began = time.perf_counter()
            await pool.connect(config)
            start_ms.append((time.perf_counter() - began) * 1000)
            await pool.call_tool(config, tool, arguments, 30)  # the SDK lists tools once
            for _ in range(calls):
                began = time.perf_counter()
                await pool.call_tool(config, tool, arguments, 30)
                call_ms.append((time.perf_counter() - began) * 1000)
    ordered = sorted(call_ms)
    return {
        "session_start_ms": statistics.median(start_ms),
        "call_median_ms": statistics.median(call_ms),
        "call_p95_ms": ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "calls": float(len(call_ms)),
    }


async def mcp_round_trips(calls: int = 20, starts: int = 3) -> dict[str, dict[str, float]]:
    """Session start cost and per-call latency, per transport, in milliseconds."""
    results = {
        "stdio (mcp-server-time)": await _measure(
            time_config(), "get_current_time", {"timezone": "UTC"}, calls, starts
        )
    }
    if everything_missing() is None:
        with everything_server() as server:
            results["http (server-everything)"] = await _measure(
                http_config(server.url), "echo", {"message": "ping"}, calls, starts
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.mcp")
    parser.add_argument("--calls", type=int, default=20, help="calls per session")
    parser.add_argument("--starts", type=int, default=3, help="sessions opened per transport")
    args = parser.parse_args()
    results = asyncio.run(mcp_round_trips(args.calls, args.starts))
    print("| transport | session start (median) | call median | call p95 | calls |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['session_start_ms']:.1f} ms | {r['call_median_ms']:.2f} ms "
            f"| {r['call_p95_ms']:.2f} ms | {r['calls']:.0f} |"
        )


if __name__ == "__main__":
    main()
