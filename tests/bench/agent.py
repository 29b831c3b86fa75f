"""Agent-run benchmarks: per-step orchestration overhead and concurrent waiting runs."""

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from core import db
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentRunInput, AgentSpec
from core.temporal import ColonyPlugin
from tests.bench._workflows import SequentialActivities, noop
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, reply
from tests.support.services import (
    PostgresServer,
    child_env,
    fresh_database,
    postgres,
    world_traversable_tempdir,
)
from tests.support.workers import running_workers
from workers import temporal_server
from workers.process import ManagedProcess, free_port

TENANT = "bench"


@dataclass
class Env:
    """Servers shared by the agent benchmarks."""

    temporal_address: str
    pg: PostgresServer
    workdir: Path


@asynccontextmanager
async def environment() -> AsyncIterator[Env]:
    """Temporal (SQLite file, WAL: the embedded configuration) and Postgres."""
    workdir = world_traversable_tempdir("colony-bench-agent-")
    port = free_port()
    spec = temporal_server.server_spec(
        port=port,
        ui_port=None,
        namespace="default",
        db_file=workdir / "temporal.db",
        log_path=workdir / "t.log",
    )
    temporal = ManagedProcess(spec)
    await temporal.start()
    try:
        async with postgres(workdir) as pg:
            yield Env(f"127.0.0.1:{port}", pg, workdir)
    finally:
        await temporal.stop()


async def _agent(url: str) -> None:
    async with await db.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (TENANT,)
        )
        spec = AgentSpec(
            instructions="bench", model="openai/scripted-model", tools=["calculator"],
            limits={"max_steps": 10_000, "parallel_tool_calls": False},
        )  # fmt: skip
        await agents.create_version(conn, TENANT, "bench", spec)


async def _start_run(
    client: Client, url: str, suffix: str, objective: str, pool: db.Pool | None = None
) -> WorkflowHandle[Any, Any]:
    async with pool.connection() if pool else await db.connect(url, autocommit=True) as conn:
        record, inbox, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name="bench", agent_version=1, objective=objective
        )
    return await client.start_workflow(
        "AgentRunWorkflow",
        AgentRunInput(
            tenant_id=TENANT,
            run_id=record.id,
            agent_name="bench",
            agent_version=1,
            inbox_ids=[inbox],
        ),
        id=record.workflow_id + suffix,
        task_queue=TaskQueue.ORCHESTRATION.value + suffix,
    )


@asynccontextmanager
async def model_process(*args: str) -> AsyncIterator[str]:
    """A scripted model server in a process of its own (the model is not the worker's
    CPU); yields its base URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.model_server", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"scripted model server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        await proc.wait()


async def step_overhead(env: Env, steps: int, runs_: int) -> dict[str, float]:
    """Per-step time of an agent run (call_llm + execute_tool, instant model) vs two bare activities."""
    client = await Client.connect(env.temporal_address, plugins=[ColonyPlugin()])
    async with model_process("--tool-loop", str(steps)) as base_url:
        async with fresh_database(env.pg, "bench_steps") as url:
            await _agent(url)
            settings = make_settings(
                TEMPORAL_ADDRESS=env.temporal_address,
                DATABASE_URL=url,
                OPENAI_BASE_URL=base_url,
            )
            suffix = "-" + uuid.uuid4().hex[:6]
            agent_per_step: list[float] = []
            llm_round_trips: list[float] = []
            async with (
                db.open_pool(url) as pool,
                running_workers(client, settings, pool, suffix=suffix, cache=True),
            ):
                await (await _start_run(client, url, suffix, "warm-up")).result()
                cpu_before = _cpu_by_process()
                for i in range(runs_):
                    started = time.perf_counter()
                    handle = await _start_run(client, url, suffix, f"run {i}")
                    await handle.result()
                    agent_per_step.append((time.perf_counter() - started) / (steps + 1))
                    llm_round_trips += await _activity_latencies(handle, "call_llm")
                cpu_after = _cpu_by_process()
    cpu = {
        f"cpu_{kind}_ms": (cpu_after.get(kind, 0.0) - cpu_before.get(kind, 0.0))
        * 1000 / (runs_ * (steps + 1))
        for kind in ("workers", "temporal", "postgres", "other")
    }  # fmt: skip
    same = await _bare_steps(client, steps, runs_, cross_queue=False)
    cross = await _bare_steps(client, steps, runs_, cross_queue=True)
    return {
        "agent_step_ms": statistics.median(agent_per_step) * 1000,
        "llm_rt_p50_ms": _pct(llm_round_trips, 0.5),
        "llm_rt_p95_ms": _pct(llm_round_trips, 0.95),
        "samples": len(llm_round_trips),
        **cpu,
        **{f"same_{k}": v for k, v in same.items()},
        **{f"cross_{k}": v for k, v in cross.items()},
    }


async def _bare_steps(
    client: Client, steps: int, runs_: int, *, cross_queue: bool
) -> dict[str, float]:
    """Pairs of no-op activities: on the workflow's own task queue (Temporal dispatches
    them eagerly, with the workflow task's completion) or on another one, as every lane's
    activities are."""
    queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
    lane = f"{queue}-lane" if cross_queue else None
    per_step: list[float] = []
    round_trips: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            Worker(client, task_queue=queue, workflows=[SequentialActivities], activities=[noop])
        )
        if lane is not None:
            await stack.enter_async_context(Worker(client, task_queue=lane, activities=[noop]))
        for _ in range(runs_):
            started = time.perf_counter()
            bare = await client.start_workflow(
                SequentialActivities.run,
                args=[2 * steps, False, lane],
                id=f"bare-{uuid.uuid4()}",
                task_queue=queue,
            )
            await bare.result()
            per_step.append((time.perf_counter() - started) / steps)
            round_trips += await _activity_latencies(bare, "bench_noop")
    return {
        "step_ms": statistics.median(per_step) * 1000,
        "rt_p50_ms": _pct(round_trips, 0.5),
        "rt_p95_ms": _pct(round_trips, 0.95),
    }


def _cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process (the workers) and its
    descendants by kind: the Temporal server, Postgres, other (the model server).

    CPU per step is what contention on a shared machine distorts least: wall time there
    includes waiting for a core.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    stats: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        stats[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    me = os.getpid()
    out = {"workers": stats.get(me, ("", 0.0))[1]}
    for pid, (name, seconds) in stats.items():
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, me):
            ancestor = parents.get(ancestor)
        if ancestor != me or pid == me:
            continue
        kind = "temporal" if name == "temporal" else "postgres" if name == "postgres" else "other"
        out[kind] = out.get(kind, 0.0) + seconds
    return out


def _pct(samples: list[float], q: float) -> float:
    """The q-quantile of samples in seconds, in ms (nearest rank below)."""
    ordered = sorted(samples)
    return ordered[int(q * (len(ordered) - 1))] * 1000


async def _activity_latencies(handle: WorkflowHandle[Any, Any], activity_type: str) -> list[float]:
    """Scheduled-to-completed time of each activity of that type, from the history."""
    history = await handle.fetch_history()
    scheduled: dict[int, float] = {}
    out = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == activity_type:
                scheduled[event.event_id] = event.event_time.ToDatetime().timestamp()
        elif event.HasField("activity_task_completed_event_attributes"):
            sid = event.activity_task_completed_event_attributes.scheduled_event_id
            if sid in scheduled:
                out.append(event.event_time.ToDatetime().timestamp() - scheduled[sid])
    return out


async def waiting_runs(env: Env, count: int, model_delay: float) -> dict[str, float]:
    """Start `count` runs whose model call takes `model_delay` s; measure one worker process."""
    client = await Client.connect(env.temporal_address, plugins=[ColonyPlugin()])
    with ScriptedModelServer() as server:
        server.default = reply("eventually", delay=model_delay)
        async with fresh_database(env.pg, "bench_waiting") as url:
            await _agent(url)
            suffix = "-" + uuid.uuid4().hex[:6]
            env_vars = child_env(
                TEMPORAL_ADDRESS=env.temporal_address, DATABASE_URL=url, OPENAI_BASE_URL=server.base_url,
                COLONY_TASK_QUEUE_SUFFIX=suffix, COLONY_LLM_MAX_CONCURRENCY=str(count + 100),
            )  # fmt: skip
            log = (env.workdir / "worker.log").open("ab")
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers.main",
                "--lane",
                "all",
                env=env_vars,
                stdout=log,
                stderr=log,
            )
            try:
                await asyncio.sleep(3)  # imports and connections: the idle baseline
                idle_kb = _rss_kb(worker.pid)
                started = time.perf_counter()
                gate = asyncio.Semaphore(32)

                async def start_one(i: int) -> WorkflowHandle[Any, Any]:
                    async with gate:
                        return await _start_run(client, url, suffix, f"slow {i}", pool)

                async with db.open_pool(url, max_size=32) as pool:
                    handles = await asyncio.gather(*(start_one(i) for i in range(count)))
                # Measured while the first runs still wait: every call must be in flight by then.
                with contextlib.suppress(TimeoutError):
                    await asyncio.to_thread(server.wait_for_requests, count, model_delay - 10)
                waiting = len(server.chat_requests())
                ramp_s = time.perf_counter() - started
                loaded_kb = _rss_kb(worker.pid)
                results = await asyncio.gather(*(h.result() for h in handles))
                succeeded = sum(1 for r in results if r["outcome"] == "succeeded")
            finally:
                worker.terminate()
                await worker.wait()
                log.close()
    return {
        "runs": count,
        "waiting_at_once": waiting,
        "succeeded": succeeded,
        "ramp_s": ramp_s,
        "idle_mb": idle_kb / 1024,
        "loaded_mb": loaded_kb / 1024,
        "kb_per_run": (loaded_kb - idle_kb) / max(waiting, 1),
    }


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run_all(steps: int, runs_: int, waiting: int, model_delay: float) -> list[str]:
    """Both benchmarks; Markdown table rows."""
    async with environment() as env:
        overhead = await step_overhead(env, steps, runs_)
        held = await waiting_runs(env, waiting, model_delay)
    o = overhead
    return [
        f"| agent step (call_llm + execute_tool on their lanes, instant scripted model in its own process), median of {runs_} runs x {steps} steps | {o['agent_step_ms']:.1f} ms |",
        f"| bare step: two no-op activities on the workflow's own queue (eager dispatch) | {o['same_step_ms']:.1f} ms |",
        f"| bare step: two no-op activities on another queue (as every lane call) | {o['cross_step_ms']:.1f} ms |",
        f"| ratio agent step / bare step, same queue | {o['agent_step_ms'] / o['same_step_ms']:.2f}x |",
        f"| ratio agent step / bare step, other queue | {o['agent_step_ms'] / o['cross_step_ms']:.2f}x |",
        f"| call_llm round trip (scheduled to completed), p50 / p95 of {o['samples']:.0f} | {o['llm_rt_p50_ms']:.1f} / {o['llm_rt_p95_ms']:.1f} ms |",
        f"| CPU per agent step: workers / Temporal server / Postgres / model server | {o['cpu_workers_ms']:.1f} / {o['cpu_temporal_ms']:.1f} / {o['cpu_postgres_ms']:.1f} / {o['cpu_other_ms']:.1f} ms |",
        f"| no-op round trip, same queue, p50 / p95 | {o['same_rt_p50_ms']:.1f} / {o['same_rt_p95_ms']:.1f} ms |",
        f"| no-op round trip, other queue, p50 / p95 | {o['cross_rt_p50_ms']:.1f} / {o['cross_rt_p95_ms']:.1f} ms |",
        f"| runs waiting on a {model_delay:.0f} s model at once, one worker process | {held['waiting_at_once']:.0f} of {held['runs']:.0f} ({held['succeeded']:.0f} succeeded) |",
        f"| time to start them all and have every model call in flight | {held['ramp_s']:.1f} s |",
        f"| worker RSS idle / holding them | {held['idle_mb']:.0f} / {held['loaded_mb']:.0f} MB |",
        f"| memory per waiting run | {held['kb_per_run']:.0f} KB |",
    ]


if __name__ == "__main__":
    print("\n".join(asyncio.run(run_all(20, 3, 1000, 90))))
