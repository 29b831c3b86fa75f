"""Benchmarks of the embedded stack: `make bench` (or `python -m tests.bench`).

Prints a Markdown report; docs/benchmarks.md records one run with its command.
`--only SECTION ...` runs some sections (e.g. `--only swarm`); by default all run.
`--fc-path/--fc-category/--fc-limit/--fc-case/--fc-resume/--fc-threads` shape the
function_calling section.
"""

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from tests.bench import (
    agent,
    evolution,
    function_calling,
    mcp,
    memory,
    sandbox,
    swarm,
    tool_search,
    tools,
)
from tests.bench._workflows import SequentialActivities, noop
from tests.support.services import child_env, world_traversable_tempdir
from workers import temporal_server
from workers.process import ManagedProcess, free_port


async def activity_round_trip(
    journal: str, steps: int, runs: int, concurrency: int
) -> dict[str, float]:
    """Per-step time of sequential no-op activities (and local activities) on a dev server."""
    workdir = Path(tempfile.mkdtemp(prefix="colony-bench-"))
    port = free_port()
    argv = temporal_server.server_argv(
        port=port, ui_port=None, namespace="default", db_file=workdir / "t.db"
    )
    if journal == "default":
        # Same server without our pragmas: the SQLite defaults (rollback journal, full sync).
        argv = [
            a
            for a in argv
            if a not in ("--sqlite-pragma", "journal_mode=wal", "synchronous=normal")
        ]
    spec = temporal_server.server_spec(
        port=port, ui_port=None, namespace="default", db_file=None, log_path=workdir / "log"
    )
    spec.argv = argv
    process = ManagedProcess(spec)
    await process.start()
    try:
        client = await Client.connect(f"127.0.0.1:{port}")
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        results: dict[str, float] = {}
        async with Worker(
            client, task_queue=queue, workflows=[SequentialActivities], activities=[noop]
        ):
            for local in (False, True):
                per_step: list[float] = []
                for _ in range(runs):
                    started = time.perf_counter()
                    await client.execute_workflow(
                        SequentialActivities.run,
                        args=[steps, local],
                        id=f"bench-{uuid.uuid4()}",
                        task_queue=queue,
                    )
                    per_step.append((time.perf_counter() - started) / steps * 1000)
                key = "local" if local else "activity"
                results[f"{key}_ms_median"] = statistics.median(per_step)
                results[f"{key}_ms_min"] = min(per_step)
            # Throughput: many workflows at once, so the store's write path is the limit.
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    client.execute_workflow(
                        SequentialActivities.run,
                        args=[20, False],
                        id=f"bench-{uuid.uuid4()}",
                        task_queue=queue,
                    )
                    for _ in range(concurrency)
                )
            )
            results["activities_per_s"] = concurrency * 20 / (time.perf_counter() - started)
        return results
    finally:
        await process.stop()


def stack_start(repeats: int) -> dict[str, float]:
    """Seconds from `colony up` to "Colony is up": first start (initdb) and warm restarts."""
    data = world_traversable_tempdir("colony-bench-up-") / "data"
    env = child_env(
        COLONY_DATA_DIR=str(data),
        COLONY_TEMPORAL_PORT=str(free_port()),
        COLONY_TEMPORAL_UI_PORT=str(free_port()),
        COLONY_POSTGRES_PORT=str(free_port()),
        COLONY_API_PORT=str(free_port()),
        COLONY_LOCAL_MODEL_PORT=str(free_port()),
    )
    times: list[float] = []
    check_ms: list[float] = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Colony is up" in line:
                break
        else:
            raise RuntimeError("colony up exited before it was ready")
        times.append(time.perf_counter() - started)
        key = (data / "admin-key").read_text().strip()
        url = f"http://127.0.0.1:{env['COLONY_API_PORT']}/v1/stack-checks"
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            for _ in range(5):
                t = time.perf_counter()
                body = http.post(url, params={"wait": 30}).json()
                assert body["status"] == "succeeded", body
                check_ms.append((time.perf_counter() - t) * 1000)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "first_start_s": times[0],
        "warm_start_s_median": statistics.median(times[1:]),
        "stack_check_ms_median": statistics.median(check_ms),
    }


SECTIONS = (
    "activities",
    "start",
    "agent",
    "tools",
    "sandbox",
    "mcp",
    "tool-search",
    "memory",
    "swarm",
    "function_calling",
    "evolution",
)
"""What `--only` can select, in the order they run (all of them by default)."""


def main() -> None:
    """Run the benchmarks and print a Markdown report."""
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--steps", type=int, default=100, help="activities per workflow")
    parser.add_argument("--runs", type=int, default=3, help="workflows per configuration")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="concurrent workflows for throughput"
    )
    parser.add_argument(
        "--agent-steps", type=int, default=20, help="tool-calling steps per agent run"
    )
    parser.add_argument(
        "--waiting", type=int, default=1000, help="runs waiting on a slow model at once"
    )
    parser.add_argument(
        "--model-delay", type=float, default=90, help="seconds the slow model takes"
    )
    parser.add_argument("--sandbox-repeats", type=int, default=50, help="sandbox calls measured")
    parser.add_argument(
        "--memory-sizes",
        type=int,
        nargs="+",
        default=[10_000],
        help="memories per recall benchmark (100000 embeds for ~8 min the first time; cached)",
    )
    parser.add_argument(
        "--swarm-k",
        type=int,
        nargs="+",
        default=[2, 4, 8, 16],
        help="subtasks per swarm (one swarm per value)",
    )
    parser.add_argument(
        "--swarm-seconds", type=float, default=10, help="model seconds of each swarm subtask"
    )
    function_calling.add_arguments(parser, prefix="fc-")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only these sections ({', '.join(SECTIONS)}); default: all",
    )
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    rows: list[str] = []
    if "activities" in only:
        rows += _activity_rows(args)
    if "start" in only:
        start = stack_start(repeats=2)
        rows += [
            f"| `colony up` to ready, first start (initdb, migrations) | {start['first_start_s']:.1f} s |",
            f"| `colony up` to ready, warm restart (median of 2) | {start['warm_start_s_median']:.1f} s |",
            f"| stack check over the API (all four lanes, median of 15) | {start['stack_check_ms_median']:.0f} ms |",
        ]
    if "agent" in only:
        rows += asyncio.run(
            agent.run_all(args.agent_steps, args.runs, args.waiting, args.model_delay)
        )
    if "tools" in only:
        rows += asyncio.run(tools.run_all(args.agent_steps))
    if "sandbox" in only:
        box = asyncio.run(sandbox.sandbox_bench(args.sandbox_repeats))
        rows += [
            f"| sandbox start: `true` in the full bubblewrap sandbox, median / p95 of {args.sandbox_repeats} | {box['sandbox_true']['median_ms']:.1f} / {box['sandbox_true']['p95_ms']:.1f} ms |",
            f"| bare bwrap `true` (the floor), median / p95 | {box['bare_bwrap_true']['median_ms']:.1f} / {box['bare_bwrap_true']['p95_ms']:.1f} ms |",
            f"| run_python `print(1)` through the tool, median / p95 | {box['run_python_print']['median_ms']:.1f} / {box['run_python_print']['p95_ms']:.1f} ms |",
        ]
    if "mcp" in only:
        sessions = asyncio.run(mcp.mcp_round_trips(calls=20, starts=3))
        rows += [
            f"| MCP {name}: session start / call median / call p95 | {r['session_start_ms']:.0f} / {r['call_median_ms']:.1f} / {r['call_p95_ms']:.1f} ms |"
            for name, r in sessions.items()
        ]
    if "tool-search" in only:
        search = asyncio.run(tool_search.bench(200, 200, None))
        rows += [
            f"| tool search over {search['tools']:.0f} tools (Qdrant local mode): first search with indexing | {search['first_search_ms']:.0f} ms ({search['index_ms_per_tool']:.1f} ms per tool) |",
            f"| tool search p50 / p95 (index current) | {search['search_p50_ms']:.1f} / {search['search_p95_ms']:.1f} ms |",
        ]
    if "memory" in only:
        rows += asyncio.run(memory.run_all(tuple(args.memory_sizes), 200, None))
    swarm_lines: list[str] = []
    if "swarm" in only:
        swarm_lines = asyncio.run(swarm.run_all(tuple(args.swarm_k), args.swarm_seconds))
    fc_lines: list[str] = []
    if "function_calling" in only:
        fc_lines = asyncio.run(function_calling.run_options(args, prefix="fc_"))
    evolution_lines: list[str] = []
    if "evolution" in only:
        evolution_lines = asyncio.run(evolution.run_all())
    selected = f" --only {' '.join(args.only)}" if args.only else ""
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        f"Command: make bench BENCH_ARGS='--steps {args.steps} --runs {args.runs} --concurrency {args.concurrency}"
        f" --agent-steps {args.agent_steps} --waiting {args.waiting} --model-delay {args.model_delay:.0f}"
        f" --sandbox-repeats {args.sandbox_repeats} --memory-sizes {' '.join(map(str, args.memory_sizes))}"
        f" --swarm-k {' '.join(map(str, args.swarm_k))} --swarm-seconds {args.swarm_seconds:g}"
        f"{_fc_options(args)}{selected}'",
    ]
    if rows:
        lines += ["", "| measurement | value |", "|---|---|", *rows]
    if swarm_lines:
        lines += ["", *swarm_lines]
    if fc_lines:
        lines += ["", *fc_lines]
    if evolution_lines:
        lines += ["", *evolution_lines]
    print("\n".join(lines))


def _fc_options(args: argparse.Namespace) -> str:
    """The function-calling options that narrow the run, as given."""
    options = [
        ("--fc-path", args.fc_path if args.fc_path != list(function_calling.PATHS) else None),
        ("--fc-category", args.fc_category),
        ("--fc-limit", [args.fc_limit] if args.fc_limit is not None else None),
        ("--fc-case", args.fc_case),
        ("--fc-resume", [] if args.fc_resume else None),
        ("--fc-threads", [args.fc_threads] if args.fc_threads != 1 else None),
    ]
    return "".join(" ".join(["", flag, *map(str, v)]) for flag, v in options if v is not None)


def _activity_rows(args: argparse.Namespace) -> list[str]:
    """Activity round trips and throughput, SQLite WAL against the default journal."""
    wal = asyncio.run(activity_round_trip("wal", args.steps, args.runs, args.concurrency))
    default = asyncio.run(activity_round_trip("default", args.steps, args.runs, args.concurrency))
    return [
        f"| activity round trip, SQLite WAL + synchronous=normal (median of {args.runs} x {args.steps}) | {wal['activity_ms_median']:.1f} ms |",
        f"| activity round trip, SQLite default journal | {default['activity_ms_median']:.1f} ms |",
        f"| ratio default / WAL, sequential latency | {default['activity_ms_median'] / wal['activity_ms_median']:.1f}x |",
        f"| throughput, {args.concurrency} concurrent workflows x 20 activities, WAL | {wal['activities_per_s']:.0f} activities/s |",
        f"| same, SQLite default journal | {default['activities_per_s']:.0f} activities/s |",
        f"| throughput ratio WAL / default | {wal['activities_per_s'] / default['activities_per_s']:.1f}x |",
        f"| local activity step, WAL | {wal['local_ms_median']:.1f} ms |",
    ]


if __name__ == "__main__":
    main()
