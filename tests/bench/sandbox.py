"""Sandbox benchmarks: `python -m tests.bench.sandbox [--repeats N]`.

Measures, N times each (median and p95):

- bare bwrap: `true` in a minimal bubblewrap sandbox (new namespaces, /usr bound), the
  floor any bubblewrap backend pays;
- sandbox start: `true` through `BubblewrapSandbox` (the full configuration: synthetic
  /etc, rlimits, the two stages a root worker uses, bash);
- run_python round trip: `print(1)` through the `run_python` tool, as the agent loop
  calls it (workspace lookup, sandbox, usage check, rendering).
"""

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from activities.tools.framework import StaticToolRegistry, ToolContext, run_tool
from activities.tools.sandbox import BubblewrapSandbox, sandbox_tools
from activities.tools.workspace import workspace_for
from core.payloads import ToolCallRequest
from core.tools.builtins import SandboxLimits
from tests.conftest import make_settings

Stats = dict[str, float]


def _stats(samples_ms: list[float]) -> Stats:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered),
        "p95_ms": p95,
        "min_ms": ordered[0],
    }


async def _measure(repeats: int, once: Callable[[], Awaitable[None]]) -> Stats:
    await once()  # warm caches (bwrap --help probe, page cache)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - started) * 1000)
    return _stats(samples)


async def sandbox_bench(repeats: int = 50) -> dict[str, Stats]:
    """Median/p95 of bare bwrap, the full sandbox running `true`, and run_python `print(1)`."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError("bwrap not found: apt-get install bubblewrap")
    data = Path(tempfile.mkdtemp(prefix="colony-bench-sandbox-"))
    try:
        settings = make_settings(COLONY_DATA_DIR=str(data))
        backend = BubblewrapSandbox()
        limits = SandboxLimits()
        workspace = workspace_for(settings, "bench", "run_bench")
        bare = [
            bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--", "/usr/bin/true",
        ]  # fmt: skip

        async def bare_true() -> None:
            proc = await asyncio.create_subprocess_exec(*bare)
            if await proc.wait() != 0:
                raise RuntimeError("bare bwrap failed")

        async def sandbox_true() -> None:
            result = await backend.run(workspace, "shell", "true", limits)
            if result.exit_code != 0:
                raise RuntimeError(result.render())

        registry = StaticToolRegistry(sandbox_tools(settings, backend=backend, limits=limits))
        call = ToolCallRequest(id="b", name="run_python", arguments='{"code": "print(1)"}')
        ctx = ToolContext(tenant_id="bench", run_id="run_bench", step=1, now=datetime.now(UTC))

        async def run_python() -> None:
            text = await run_tool(registry, call, ctx)
            if text != "exit code: 0\n--- stdout ---\n1":
                raise RuntimeError(text)

        return {
            "bare_bwrap_true": await _measure(repeats, bare_true),
            "sandbox_true": await _measure(repeats, sandbox_true),
            "run_python_print": await _measure(repeats, run_python),
        }
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    """Run the sandbox benchmarks and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.sandbox")
    parser.add_argument("--repeats", type=int, default=50, help="measurements per figure")
    args = parser.parse_args()
    results = asyncio.run(sandbox_bench(args.repeats))
    labels = {
        "bare_bwrap_true": "bare bwrap, `true` (floor)",
        "sandbox_true": "sandbox start: `true` in the full sandbox",
        "run_python_print": "run_python round trip, `print(1)`",
    }
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"worker uid {os.geteuid()}",
        f"Command: python -m tests.bench.sandbox --repeats {args.repeats}",
        "",
        "| measurement | median | p95 |",
        "|---|---|---|",
        *(
            f"| {labels[key]} | {value['median_ms']:.1f} ms | {value['p95_ms']:.1f} ms |"
            for key, value in results.items()
        ),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
