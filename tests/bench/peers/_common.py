"""What every framework's benchmark process shares: its configuration, the tool, and the
phases it runs (`python -m tests.bench.peers.<framework> PHASE`).

The parent (`tests/bench/peers/__main__.py`) owns the servers; a framework process gets
their addresses in `BENCH_PEERS_CONFIG` (JSON) and prints one ``RESULT {json}`` line.
Phases:

- ``load``: workers in this process; one warm-up run, then runs at each concurrency.
- ``hold``: workers in this process; prints ``READY``, waits for ``GO`` on stdin, starts
  `waiting` runs whose first model call is slow, prints ``STARTED``, waits for them all.
- ``worker``: workers in this process until killed (the SIGKILL benchmark).
- ``start``: one run with id `run_id` (``--resume`` to pick it up again where the
  framework has no worker of its own to do it), waits for its end.
"""

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

SLOW = "SLOW"
"""In a run's prompt: the scripted server makes its first model call slow (`hold`)."""
CRASH = "CRASH"
"""In a run's prompt: every model call of the run takes `crash_latency` (SIGKILL phase)."""
INSTRUCTIONS = "You are a calculator agent. Use the calculator tool."
MODEL = "scripted-model"


@dataclass(frozen=True)
class Config:
    """Addresses and sizes a framework process needs (from the parent)."""

    temporal_address: str
    base_url: str
    database_url: str
    tool_log: str
    task_queue: str
    concurrency: list[int] = field(default_factory=lambda: [1, 10, 100])
    runs: dict[str, int] = field(default_factory=dict)
    waiting: int = 100
    run_id: str = ""

    @classmethod
    def from_env(cls) -> "Config":
        """The configuration the parent passed in `BENCH_PEERS_CONFIG`."""
        return cls(**json.loads(os.environ["BENCH_PEERS_CONFIG"]))


def calculate(expression: str, log: str) -> str:
    """The benchmark's tool: adds integers ("1+1"), and appends one line to `log` per
    call so the parent can count executions across process restarts."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {expression}\n")
    return str(sum(int(part) for part in expression.split("+")))


class Framework(Protocol):
    """One framework under test."""

    def serving(self, cfg: Config) -> contextlib.AbstractAsyncContextManager[None]:
        """Its workers (or whatever runs its agents) in this process."""
        ...

    async def start(self, cfg: Config, run_id: str, prompt: str) -> Awaitable[None]:
        """Start one run (workers already serving); the awaitable is its end."""
        ...

    async def crash_run(
        self, cfg: Config, run_id: str, prompt: str, resume: bool
    ) -> dict[str, Any] | None:
        """Start (or, with `resume`, pick up) one run and wait for its end; no workers
        of this process serve it unless the framework has no workers at all. May return
        counts the parent cannot see itself (Colony's tool executions)."""
        ...


def emit(kind: str, value: Any = None) -> None:
    """One protocol line on stdout."""
    line = kind if value is None else f"{kind} {json.dumps(value)}"
    print(line, flush=True)


async def run(fw: Framework, cfg: Config, run_id: str, prompt: str) -> None:
    """One run from start to end."""
    await (await fw.start(cfg, run_id, prompt))


async def _timed(run: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


async def _load(fw: Framework, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with fw.serving(cfg):
        await run(fw, cfg, f"{cfg.task_queue}-warm", "warm-up")
        emit("BEGIN")
        for c in cfg.concurrency:
            gate = asyncio.Semaphore(c)
            n = cfg.runs.get(str(c), max(10, 2 * c))

            async def one(i: int, c: int = c, gate: asyncio.Semaphore = gate) -> float:
                async with gate:
                    return await _timed(lambda: run(fw, cfg, f"{cfg.task_queue}-c{c}-{i}", "go"))

            started, cpu = time.perf_counter(), os.times()
            latencies = await asyncio.gather(*(one(i) for i in range(n)))
            after = os.times()
            out[str(c)] = {
                "wall_s": time.perf_counter() - started,
                "latencies_s": latencies,
                "cpu_s": after.user + after.system - cpu.user - cpu.system,
            }
    return out


async def _hold(fw: Framework, cfg: Config) -> dict[str, Any]:
    async with fw.serving(cfg):
        await run(fw, cfg, f"{cfg.task_queue}-warm", "warm-up")
        emit("READY")
        await asyncio.to_thread(sys.stdin.readline)
        gate = asyncio.Semaphore(32)

        async def start(i: int) -> Awaitable[None]:
            async with gate:
                return await fw.start(cfg, f"{cfg.task_queue}-hold-{i}", f"{SLOW} {i}")

        ends = await asyncio.gather(*(start(i) for i in range(cfg.waiting)))
        emit("STARTED")
        await asyncio.gather(*ends)
    return {"finished": len(ends)}


async def _worker(fw: Framework, cfg: Config) -> None:
    async with fw.serving(cfg):
        emit("READY")
        await asyncio.Event().wait()


async def _main(fw: Framework, phase: str, resume: bool) -> None:
    cfg = Config.from_env()
    if phase == "load":
        emit("RESULT", await _load(fw, cfg))
    elif phase == "hold":
        emit("RESULT", await _hold(fw, cfg))
    elif phase == "worker":
        await _worker(fw, cfg)
    elif phase == "start":
        started = time.perf_counter()
        extra = await fw.crash_run(cfg, cfg.run_id, f"{CRASH} run", resume)
        emit("RESULT", {"seconds": time.perf_counter() - started, **(extra or {})})
    else:
        raise SystemExit(f"unknown phase {phase!r}")


def main(fw: Framework) -> None:
    """Run the phase named on the command line for `fw`."""
    args = sys.argv[1:]
    asyncio.run(_main(fw, args[0], "--resume" in args))


@contextlib.asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    """A context with nothing to serve."""
    yield
