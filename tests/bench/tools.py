"""Tool-call round trips inside agent runs: `python -m tests.bench.tools [--steps N]`.

Each kind of tool is called by a scripted model for N steps of a real agent run
(Temporal, Postgres, workers with the real activities); the figure is `execute_tool`
from scheduled to completed, read from the run's history:

- builtin: `calculator`
- sandboxed: `run_python` with `print(1)` (a fresh bubblewrap sandbox per call)
- MCP: `get_current_time` of the third-party `mcp-server-time` over stdio (one session
  per worker, reused)
"""

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

from temporalio.client import Client

from core import db
from core.runs import agents
from core.runs.payloads import AgentSpec
from core.temporal import ColonyPlugin
from core.tools import mcp_servers
from core.tools import store as tool_store
from core.tools.spec import ToolSpec
from tests.bench.agent import TENANT, Env, _activity_latencies, _pct, _start_run, environment
from tests.bench.agent import model_process as _model_process
from tests.conftest import make_settings
from tests.support.services import fresh_database, world_traversable_tempdir
from tests.support.workers import running_workers

KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # kind: (Colony tool name, name the model calls, arguments)
    "builtin": ("calculator", "calculator", {"expression": "6*7"}),
    "sandboxed": ("run_python", "run_python", {"code": "print(1)"}),
    "mcp": (
        "mcp:time/get_current_time",
        "mcp__time__get_current_time",
        {"timezone": "Europe/Oslo"},
    ),
}


async def _setup(url: str, tool: str) -> None:
    async with await db.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (TENANT,)
        )
        if tool.startswith("mcp:"):
            await mcp_servers.upsert_mcp_server(
                conn, TENANT, "time", "stdio",
                {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
            )  # fmt: skip
            await tool_store.register_tool(
                conn, TENANT, tool,
                ToolSpec(
                    kind="mcp", description="Current time in a time zone.",
                    input_schema={"type": "object", "properties": {"timezone": {"type": "string"}}},
                    config={"server": "time", "tool": "get_current_time"},
                ),
            )  # fmt: skip
        spec = AgentSpec(
            instructions="bench", model="openai/scripted-model", tools=[tool],
            limits={"max_steps": 10_000, "parallel_tool_calls": False},
        )  # fmt: skip
        await agents.create_version(conn, TENANT, "bench", spec)


async def tool_round_trips(env: Env, steps: int) -> dict[str, dict[str, float]]:
    """execute_tool p50/p95 per kind of tool, `steps` calls each in one agent run."""
    client = await Client.connect(env.temporal_address, plugins=[ColonyPlugin()])
    out: dict[str, dict[str, float]] = {}
    for kind, (tool, model_name, arguments) in KINDS.items():
        call = f"{model_name}:{json.dumps(arguments)}"
        async with (
            _model_process("--tool-loop", str(steps), "--tool-call", call) as base_url,
            fresh_database(env.pg, f"bench_tools_{kind}") as url,
        ):
            await _setup(url, tool)
            settings = make_settings(
                TEMPORAL_ADDRESS=env.temporal_address,
                DATABASE_URL=url,
                OPENAI_BASE_URL=base_url,
                COLONY_DATA_DIR=str(world_traversable_tempdir("colony-bench-tools-")),
            )
            suffix = "-" + uuid.uuid4().hex[:6]
            async with (
                db.open_pool(url) as pool,
                running_workers(client, settings, pool, suffix=suffix, cache=True),
            ):
                await (await _start_run(client, url, suffix, "warm-up")).result()
                handle = await _start_run(client, url, suffix, "measured")
                result = await handle.result()
                assert result["outcome"] == "succeeded", result
                samples = await _activity_latencies(handle, "execute_tool")
        out[kind] = {"n": len(samples), "p50_ms": _pct(samples, 0.5), "p95_ms": _pct(samples, 0.95)}
    return out


async def run_all(steps: int) -> list[str]:
    """Markdown rows."""
    async with environment() as env:
        figures = await tool_round_trips(env, steps)
    return [
        f"| execute_tool round trip, {kind} ({KINDS[kind][0]}), p50 / p95 of {f['n']:.0f} | "
        f"{f['p50_ms']:.1f} / {f['p95_ms']:.1f} ms |"
        for kind, f in figures.items()
    ]


def main() -> None:
    """Print the rows."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tools")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print("\n".join(asyncio.run(run_all(args.steps))))


if __name__ == "__main__":
    main()
