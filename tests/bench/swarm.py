"""Swarm benchmark (issue #6): K independent subtasks of T seconds of model time each.

The budget (DESIGN.md §5): the swarm finishes in about T, at most T + 2 s for K ≤ 16,
a speedup of at least 0.9·K against running the K subtasks one after another (K·T).

Each swarm has a user plan of K subtasks in mode "parallel" with `max_parallel=K`, all
played by the built-in researcher role on the scripted model: every subtask's one
model call answers after T seconds, the queen's synthesis at once. The wall time runs
from `start_workflow` to the workflow's result. The K values run one after another on
one Temporal server, one Postgres and one set of in-process workers with the workflow
cache on (as in production), after a warm-up swarm that is not reported.

Where the time goes comes from three clocks: the swarm's events in Postgres
(`created_at`), the arrival of each subtask's model request at the scripted server, and
the swarm's Temporal history (when its activities and children completed).

`python -m tests.bench.swarm --k 2 4 8 16 --seconds 10` runs it alone.
"""

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.client import Client, WorkflowHandle

from core import db
from core.queues import TaskQueue
from core.runs import store as runs
from core.swarms import store as swarm_store
from core.swarms.plan import (
    QUEEN_AGENT,
    SubtaskSpec,
    SwarmInput,
    SwarmLimits,
    SwarmOutput,
    SwarmSettings,
    shape,
)
from core.temporal import ColonyPlugin
from tests.bench.agent import Env, environment
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.services import fresh_database
from tests.support.swarm_script import SwarmScript, kind_of, subtask
from tests.support.workers import running_workers
from workflows.swarm import SwarmWorkflow

TENANT = "bench"
MODEL = "openai/scripted-model"


@dataclass
class SwarmTiming:
    """One swarm's measurements (seconds)."""

    k: int
    seconds: float
    wall_s: float
    outcome: str
    model_calls: int
    first_call_s: float
    last_call_s: float
    """start_workflow → the first / last subtask's model request reaching the server."""
    run_end_to_end_p50_s: float
    last_run_end_to_end_s: float
    """Each child run's `finished_at` → the swarm.finished event: median, and the last run."""
    cpu_s: float
    """CPU time of this process (workers, scripted model, client) during the swarm."""
    phases: dict[str, float]
    """From the swarm's Temporal history: seconds after the workflow started."""

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.seconds

    @property
    def speedup(self) -> float:
        return self.k * self.seconds / self.wall_s

    @property
    def speedup_ok(self) -> bool:
        return self.outcome == "succeeded" and self.speedup >= 0.9 * self.k

    @property
    def wall_ok(self) -> bool:
        return self.outcome == "succeeded" and self.wall_s <= self.seconds + 2


async def _setup(url: str) -> None:
    async with await db.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (TENANT,)
        )


async def _start(
    client: Client, pool: db.Pool, suffix: str, k: int
) -> tuple[WorkflowHandle[SwarmWorkflow, SwarmOutput], str, float]:
    """Create a swarm of K parallel researcher subtasks; start it. Returns the start time."""
    plan = [SubtaskSpec.model_validate(subtask(f"s{i}", "researcher")) for i in range(k)]
    async with pool.connection() as conn:
        queen = await swarm_store.role_agent(conn, TENANT, QUEEN_AGENT, MODEL)
        record, _ = await swarm_store.create_swarm(
            conn, tenant_id=TENANT, objective=f"Bench: {k} independent parts.", mode="parallel",
            queen=queen, plan=shape(plan, "parallel"),
            settings=SwarmSettings(limits=SwarmLimits(max_subtasks=max(k, 10), max_parallel=k)),
        )  # fmt: skip
    started = time.monotonic()
    handle = await client.start_workflow(
        SwarmWorkflow.run,
        SwarmInput(tenant_id=TENANT, swarm_id=record.id),
        id=record.workflow_id,
        task_queue=TaskQueue.ORCHESTRATION.value + suffix,
    )
    return handle, record.id, started


async def one_swarm(
    client: Client,
    pool: db.Pool,
    server: ScriptedModelServer,
    suffix: str,
    k: int,
    seconds: float,
) -> SwarmTiming:
    """Run one swarm of K subtasks of `seconds` each and measure it."""
    SwarmScript(delay=seconds, synthesis="All parts done.").install(server)
    cpu = time.process_time()
    handle, swarm_id, started = await _start(client, pool, suffix, k)
    output = await handle.result()
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu
    calls = sorted(
        r.received_at - started
        for r in server.chat_requests()
        if r.received_at >= started and kind_of(r)[0] == "subtask"
    )
    async with pool.connection() as conn:
        events = await swarm_store.list_events(conn, TENANT, swarm_id, limit=10_000)
        run_ids = [e.data["run_id"] for e in events if e.type == "subtask.started"]
        run_ends = [(await runs.get_run(conn, TENANT, r)).finished_at for r in run_ids]
    first = {e.type: e.created_at for e in reversed(events)}
    swarm_end = first["swarm.finished"]
    after_runs = [(swarm_end - end).total_seconds() for end in run_ends if end is not None]
    return SwarmTiming(
        k=k,
        seconds=seconds,
        wall_s=wall,
        outcome=output.outcome,
        model_calls=len(calls),
        first_call_s=calls[0] if calls else float("nan"),
        last_call_s=calls[-1] if calls else float("nan"),
        run_end_to_end_p50_s=statistics.median(after_runs) if after_runs else float("nan"),
        last_run_end_to_end_s=min(after_runs) if after_runs else float("nan"),
        cpu_s=cpu,
        phases=await _phases(handle),
    )


async def _phases(handle: WorkflowHandle[Any, Any]) -> dict[str, float]:
    """Seconds after the swarm workflow started at which each phase ended (its history)."""
    history = await handle.fetch_history()
    scheduled: dict[int, str] = {}
    out: dict[str, float] = {}
    begin: datetime | None = None
    for event in history.events:
        at = event.event_time.ToDatetime()
        if begin is None:
            begin = at
        t = (at - begin).total_seconds()
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
            out.setdefault(f"{name} scheduled", t)
        elif event.HasField("activity_task_completed_event_attributes"):
            sid = event.activity_task_completed_event_attributes.scheduled_event_id
            out[f"{scheduled.get(sid, '?')} completed"] = t  # the last one wins
        elif event.HasField("child_workflow_execution_started_event_attributes"):
            out.setdefault("first child started", t)
            out["last child started"] = t
        elif event.HasField("child_workflow_execution_completed_event_attributes"):
            out.setdefault("first child completed", t)
            out["last child completed"] = t
        elif event.HasField("workflow_execution_completed_event_attributes"):
            out["workflow completed"] = t
    return out


async def swarm_times(env: Env, ks: tuple[int, ...], seconds: float) -> list[SwarmTiming]:
    """Each K in turn on one server and one set of workers (workflow cache on)."""
    client = await Client.connect(env.temporal_address, plugins=[ColonyPlugin()])
    with ScriptedModelServer() as server:
        async with fresh_database(env.pg, "bench_swarm") as url:
            await _setup(url)
            settings = make_settings(
                TEMPORAL_ADDRESS=env.temporal_address,
                DATABASE_URL=url,
                OPENAI_BASE_URL=server.base_url,
                COLONY_DEFAULT_MODEL=MODEL,
                COLONY_DATA_DIR=str(env.workdir / "data"),
            )
            suffix = "-" + uuid.uuid4().hex[:6]
            async with (
                db.open_pool(url) as pool,
                running_workers(client, settings, pool, suffix=suffix, cache=True),
            ):
                await one_swarm(client, pool, server, suffix, 2, 0.0)  # warm-up, not reported
                return [await one_swarm(client, pool, server, suffix, k, seconds) for k in ks]


def _mark(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def table(timings: list[SwarmTiming]) -> list[str]:
    """The Markdown tables of a run: budgets, then the swarm's phases."""
    lines = [
        "| K | T | wall | overhead (wall - T) | speedup K·T / wall | budget 0.9·K | speedup ≥ 0.9·K"
        " | wall ≤ T + 2 s | subtask model calls arrive"
        " (first / last, after start) | child run end → swarm.finished, p50 / last run"
        " | CPU of the worker process |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        outcome = "" if t.outcome == "succeeded" else f" ({t.outcome})"
        calls = "" if t.model_calls == t.k else f" ({t.model_calls} calls)"
        lines.append(
            f"| {t.k} | {t.seconds:.0f} s | {t.wall_s:.2f} s{outcome} | {t.overhead_s:.2f} s"
            f" | {t.speedup:.2f}x | {0.9 * t.k:.1f}x | {_mark(t.speedup_ok)}"
            f" | {_mark(t.wall_ok)}"
            f" | {t.first_call_s:.2f} / {t.last_call_s:.2f} s{calls}"
            f" | {t.run_end_to_end_p50_s:.2f} / {t.last_run_end_to_end_s:.2f} s | {t.cpu_s:.2f} s |"
        )
    phases = [
        ("start_swarm completed", "start_swarm done"),
        ("start_subtasks completed", "start_subtasks done"),
        ("first child started", "first child started"),
        ("last child started", "last child started"),
        ("first child completed", "first child completed"),
        ("last child completed", "last child completed"),
        ("finish_subtask completed", "last finish_subtask done"),
        ("synthesize_swarm completed", "synthesis done"),
        ("workflow completed", "workflow completed"),
    ]
    lines += [
        "",
        "Seconds after the swarm workflow started (its Temporal history):",
        "",
        "| K | T | " + " | ".join(label for _, label in phases) + " |",
        "|---|---|" + "---|" * len(phases),
    ]
    for t in timings:
        cells = " | ".join(f"{t.phases[key]:.2f}" if key in t.phases else "-" for key, _ in phases)
        lines.append(f"| {t.k} | {t.seconds:.0f} s | {cells} |")
    return lines


async def run_all(ks: tuple[int, ...], seconds: float) -> list[str]:
    """The swarm benchmark on servers of its own; Markdown lines."""
    async with environment() as env:
        timings = await swarm_times(env, ks, seconds)
    return table(timings)


def main() -> None:
    """Run the swarm benchmark alone."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.swarm")
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print("\n".join(asyncio.run(run_all(tuple(args.k), args.seconds))))


if __name__ == "__main__":
    main()
