"""Colony and its peers side by side: `make bench-peers` (`python -m tests.bench.peers`).

One process tree on one machine: this process owns the Temporal dev server, Postgres and
the scripted model server (in a thread, fixed latency per call); each framework runs in
processes of its own (`tests.bench.peers._run`), one framework at a time, on the same
task: an agent that makes `--steps` calculator tool calls, one per model turn, then
answers. Prints a Markdown report with ratios to Colony; `--json PATH` keeps the raw
figures. `--quick` is a smoke run (small counts, no SIGKILL phase).
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.bench.agent import _agent, environment
from tests.bench.peers._common import CRASH, SLOW, Config
from tests.support.model_server import (
    RecordedRequest,
    ScriptedModelServer,
    Step,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.services import child_env, fresh_database

FRAMEWORKS = {
    "colony": "colony_agent",
    "pydantic-ai": "pydantic_ai_temporal",
    "openai-agents": "openai_agents_temporal",
    "langgraph": "langgraph_postgres",
}
"""Name on the command line and in the report -> module under tests/bench/peers."""
HAS_WORKER = {"colony": True, "pydantic-ai": True, "openai-agents": True, "langgraph": False}
PACKAGES = (
    "temporalio",
    "pydantic-ai-slim",
    "openai-agents",
    "temporalio-openai-agents",
    "langgraph",
    "langgraph-checkpoint-postgres",
    "openai",
    "litellm",
)


class Script:
    """The scripted server's responder: `steps` calculator calls, then an answer, every
    reply after `latency` s; a SLOW prompt's first call takes `slow` s and every call of
    a CRASH prompt `crash_latency` s (a SLOW run answers right after its slow call)."""

    def __init__(self, steps: int, latency: float, slow: float, crash_latency: float) -> None:
        self.steps, self.latency, self.slow, self.crash_latency = (
            steps, latency, slow, crash_latency,
        )  # fmt: skip

    def __call__(self, request: RecordedRequest) -> Step:
        done = sum(1 for m in request.messages if m.get("role") == "assistant")
        delay = self.latency
        if CRASH.encode() in request.raw_body:
            delay = self.crash_latency
        elif SLOW.encode() in request.raw_body:
            if done > 0:  # held runs answer after the slow call: only the wait is measured
                return reply("done", delay=delay)
            delay = self.slow
        if done < self.steps:
            return tool_calls(tool_call("calculator", {"expression": "1+1"}), delay=delay)
        return reply("done", delay=delay)


def _tree_rss_kb(pid: int) -> int:
    """VmRSS of `pid` and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
    return total


class Child:
    """One framework process speaking the protocol of tests.bench.peers._common."""

    def __init__(self, module: str, phase: str, cfg: Config, log: Path, *extra: str) -> None:
        env = child_env(BENCH_PEERS_CONFIG=json.dumps(asdict(cfg)), OPENAI_API_KEY="x")
        env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.peers._run", module, phase, *extra],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    async def expect(self, kind: str, timeout: float) -> Any:
        """The next protocol line of `kind` (its JSON value, if any)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(
                asyncio.to_thread(self.proc.stdout.readline), deadline - time.monotonic()
            )
            if not line:
                raise RuntimeError(f"child exited ({self.proc.wait()}) before {kind}")
            if line.split(" ", 1)[0].strip() == kind:
                rest = line[len(kind) :].strip()
                return json.loads(rest) if rest else None
        raise TimeoutError(kind)

    def send(self, text: str) -> None:
        """A line on the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the child (SIGKILL: the crash under test)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def close(self) -> None:
        """Stop the child if it still runs."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait()
        self._log.close()


@contextlib.asynccontextmanager
async def child(
    module: str, phase: str, cfg: Config, log: Path, *extra: str
) -> AsyncIterator[Child]:
    c = Child(module, phase, cfg, log, *extra)
    try:
        yield c
    finally:
        c.close()


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load_level(
    name: str, cfg: Config, level: int, runs: int, args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """Runs at one concurrency level, in a fresh process (after one warm-up run)."""
    tq = f"peers-{name}-{uuid.uuid4().hex[:6]}"
    lcfg = _with(cfg, task_queue=tq, concurrency=[level], runs={str(level): runs})
    async with child(FRAMEWORKS[name], "load", lcfg, log) as c:
        await c.expect("BEGIN", args.timeout)
        servers = _cpu_s(_server_pids(cfg))
        load = await c.expect("RESULT", args.timeout)
        servers = _cpu_s(_server_pids(cfg)) - servers
    return {**load[str(level)], "server_cpu_s": servers}


def _server_pids(cfg: Config) -> list[int]:
    """The Temporal server and the postmaster: the processes whose command line names the
    benchmark's work directory."""
    workdir = str(Path(cfg.tool_log).parent)
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if any(workdir.encode() in a for a in argv) and b"tests.bench" not in b" ".join(
                    argv
                ):
                    pids.append(int(proc.name))
    return pids


def _cpu_s(roots: list[int]) -> float:
    """CPU seconds (user + system) of `roots`, their live descendants and the children
    they have reaped (Postgres backends that have exited)."""
    ticks, stack, seen = 0, list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        with contextlib.suppress(OSError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
    return ticks / os.sysconf("SC_CLK_TCK")


def load_figures(load: dict[int, dict[str, Any]], args: argparse.Namespace) -> dict[str, float]:
    """Overhead per model turn (at the first level), runs/s and latency percentiles."""
    out: dict[str, float] = {}
    turns = args.steps + 1
    one = load[args.concurrency[0]]["latencies_s"]
    out["run_s_c1_median"] = statistics.median(one)
    out["overhead_ms_per_turn"] = (statistics.median(one) - turns * args.latency) / turns * 1000
    for level in args.concurrency:
        r = load[level]
        n = len(r["latencies_s"])
        out[f"rps_c{level}"] = n / r["wall_s"]
        out[f"cpu_ms_per_turn_c{level}"] = r["cpu_s"] / n / turns * 1000
        out[f"server_cpu_ms_per_turn_c{level}"] = r["server_cpu_s"] / n / turns * 1000
        out[f"p50_s_c{level}"] = _pct(r["latencies_s"], 0.5)
        out[f"p99_s_c{level}"] = _pct(r["latencies_s"], 0.99)
    return out


async def hold(
    name: str, cfg: Config, server: ScriptedModelServer, args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """RSS of the framework's process tree idle, then with `--waiting` runs held on a slow
    first model call."""
    tq = f"peers-{name}-{uuid.uuid4().hex[:6]}"
    async with child(FRAMEWORKS[name], "hold", _with(cfg, task_queue=tq), log) as c:
        await c.expect("READY", args.timeout)
        await asyncio.sleep(1)
        idle = _tree_rss_kb(c.proc.pid)
        mark = len(server.requests)
        c.send("GO")
        deadline = time.monotonic() + args.slow - 5
        waiting = 0
        while time.monotonic() < deadline:
            waiting = sum(
                1
                for r in server.requests[mark:]
                if r.is_chat and SLOW.encode() in r.raw_body and r.status is None
            )
            if waiting >= args.waiting:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        loaded = _tree_rss_kb(c.proc.pid)
        await c.expect("RESULT", args.timeout + args.slow)
    return {
        "waiting": waiting, "idle_mb": idle / 1024, "loaded_mb": loaded / 1024,
        "kb_per_waiting_run": (loaded - idle) / max(waiting, 1),
    }  # fmt: skip


def _with(cfg: Config, **changes: Any) -> Config:
    return Config(**{**asdict(cfg), **changes})


async def crash(
    name: str, cfg: Config, server: ScriptedModelServer, args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """SIGKILL the worker (LangGraph: the process running the graph) while the model call
    after `--kill-after` completed ones is in flight; restart it; count what repeats."""
    module = FRAMEWORKS[name]
    tool_log = Path(cfg.tool_log).with_suffix(f".crash-{name}")
    tq = f"peers-{name}-{uuid.uuid4().hex[:6]}"
    run_id = f"crash-{name}-{uuid.uuid4().hex[:6]}"
    ccfg = _with(cfg, task_queue=tq, tool_log=str(tool_log), run_id=run_id)
    mark = len(server.requests)

    def model_calls() -> list[RecordedRequest]:
        return [r for r in server.requests[mark:] if r.is_chat and CRASH.encode() in r.raw_body]

    def tools() -> int:
        return len(tool_log.read_text().splitlines()) if tool_log.exists() else 0

    async with contextlib.AsyncExitStack() as stack:
        worker: Child | None = None
        if HAS_WORKER[name]:
            worker = await stack.enter_async_context(child(module, "worker", ccfg, log))
            await worker.expect("READY", args.timeout)
        starter = await stack.enter_async_context(child(module, "start", ccfg, log))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            calls = model_calls()
            done = sum(1 for r in calls if r.status == 200)
            if done >= args.kill_after and len(calls) > done:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.crash_latency / 3)
        completed_models = sum(1 for r in model_calls() if r.status == 200)
        completed_tools = tools()
        (worker or starter).kill()
        killed_at = time.monotonic()
        if worker is not None:
            await stack.enter_async_context(child(module, "worker", ccfg, log))
            result = await starter.expect("RESULT", args.timeout)
        else:
            resumed = await stack.enter_async_context(child(module, "start", ccfg, log, "--resume"))
            result = await resumed.expect("RESULT", args.timeout)
        recovered_s = time.monotonic() - killed_at
    total_models = len(model_calls())
    total_tools = result.get("tool_calls", tools())
    return {
        "crash_finished": True,
        "crash_recovery_s": recovered_s,
        "crash_models_before_kill": completed_models,
        "crash_tools_before_kill": result.get("tools_before_kill", completed_tools),
        "crash_model_calls": total_models,
        "crash_tool_calls": total_tools,
        "crash_repeated_model_calls": total_models - (args.steps + 1) - 1,
        "crash_repeated_tool_calls": total_tools - args.steps,
    }


@contextlib.asynccontextmanager
async def _phase(result: dict[str, Any], label: str) -> AsyncIterator[None]:
    """A phase that fails is reported in the table and the run goes on."""
    try:
        yield
    except Exception as e:
        result.setdefault("errors", []).append(f"{label}: {type(e).__name__} {e}")
    _progress(label)


def _save(args: argparse.Namespace, results: dict[str, Any], loads: dict[str, Any]) -> None:
    """The raw figures so far (`--json`), so a failure later loses nothing."""
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "loads": loads}, indent=2))


def _progress(text: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _versions() -> str:
    found = []
    for p in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{p} {metadata.version(p)}")
    return ", ".join(found)


def _machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores (nproc), {cpu}, {ram} RAM, {platform.system()}, Python {platform.python_version()}, load average before the run {load}"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Markdown: absolute values and ratios to Colony."""
    base = results.get("colony", {})
    names = list(results)

    def cell(name: str, key: str, fmt: str) -> str:
        value = results[name].get(key)
        if value is None:
            return "—"
        text = format(value, fmt)
        ref = base.get(key)
        if name != "colony" and key != "waiting" and isinstance(ref, (int, float)) and ref:
            text += f" ({value / ref:.2f}x)"
        return text

    rows = [
        ("orchestration overhead per model turn (ms, c=1)", "overhead_ms_per_turn", ".1f"),
        ("run time at c=1, median (s)", "run_s_c1_median", ".2f"),
        *[(f"runs/s at concurrency {c}", f"rps_c{c}", ".2f") for c in args.concurrency],
        *[
            (
                f"p50 / p99 run latency at concurrency {args.concurrency[-1]} (s)",
                f"p99_s_c{args.concurrency[-1]}",
                ".2f",
            ),
        ],
        *[
            (
                f"CPU per model turn, framework process (ms, c={c})",
                f"cpu_ms_per_turn_c{c}",
                ".1f",
            )
            for c in (args.concurrency[0], args.concurrency[-1])
        ],
        *[
            (
                f"CPU per model turn, Temporal server + Postgres (ms, c={c})",
                f"server_cpu_ms_per_turn_c{c}",
                ".1f",
            )
            for c in (args.concurrency[0], args.concurrency[-1])
        ],
        (
            f"memory per run waiting on the model (KB, {args.waiting} runs)",
            "kb_per_waiting_run",
            ".0f",
        ),
        ("runs seen waiting at once", "waiting", ".0f"),
        ("process tree RSS idle / holding (MB)", "loaded_mb", ".0f"),
    ]
    lines = [
        "| measurement | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    top = args.concurrency[-1]
    for label, key, fmt in rows:
        cells = []
        for n in names:
            if key == f"p99_s_c{top}":
                r = results[n]
                c = f"{r[f'p50_s_c{top}']:.2f} / {cell(n, key, fmt)}"
            elif key == "loaded_mb":
                c = f"{results[n]['idle_mb']:.0f} / {results[n]['loaded_mb']:.0f}"
            else:
                c = cell(n, key, fmt)
            cells.append(c)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if args.crash:
        for label, key in (
            ("SIGKILL mid-run: run finished after restart", "crash_finished"),
            ("kill to end of run (s)", "crash_recovery_s"),
            ("model calls completed before the kill", "crash_models_before_kill"),
            (
                f"model calls in all (ideal {args.steps + 1} + the one in flight)",
                "crash_model_calls",
            ),
            ("completed model calls repeated", "crash_repeated_model_calls"),
            (f"tool calls in all (ideal {args.steps})", "crash_tool_calls"),
            ("completed tool calls repeated", "crash_repeated_tool_calls"),
        ):
            cells = []
            for n in names:
                v = results[n].get(key)
                cells.append("—" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v)))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    errors = [e for n in names for e in results[n].get("errors", [])]
    if errors:
        lines += ["", "Failed phases: " + "; ".join(errors)]
    return lines


async def run(args: argparse.Namespace) -> None:
    """Every framework on the same servers; load levels alternate the framework order."""
    script = Script(args.steps, args.latency, args.slow, args.crash_latency)
    results: dict[str, dict[str, Any]] = {n: {} for n in args.frameworks}
    async with environment() as env, contextlib.AsyncExitStack() as stack:
        server = stack.enter_context(ScriptedModelServer(responder=script))
        log = env.workdir / "frameworks.log"
        cfgs: dict[str, Config] = {}
        for name in args.frameworks:
            url = await stack.enter_async_context(
                fresh_database(env.pg, f"peers_{name}", migrate=name == "colony")
            )
            if name == "colony":
                await _agent(url)
            cfgs[name] = Config(
                temporal_address=env.temporal_address,
                base_url=server.base_url,
                database_url=url,
                tool_log=str(env.workdir / f"tools-{name}.log"),
                task_queue="",
                waiting=args.waiting,
            )
        loads: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in args.frameworks}
        for i, (level, runs) in enumerate(zip(args.concurrency, args.runs, strict=True)):
            order = args.frameworks if i % 2 == 0 else args.frameworks[::-1]
            for name in order:
                loads[name][level] = await load_level(name, cfgs[name], level, runs, args, log)
                _progress(f"{name}: {runs} runs at concurrency {level}")
                _save(args, results, loads)
        for name in args.frameworks:
            results[name].update(load_figures(loads[name], args))
            async with _phase(results[name], f"{name}: {args.waiting} runs held"):
                results[name].update(await hold(name, cfgs[name], server, args, log))
            _save(args, results, loads)
        if args.crash:
            for name in args.frameworks:
                async with _phase(results[name], f"{name}: SIGKILL mid-run"):
                    results[name].update(await crash(name, cfgs[name], server, args, log))
                _save(args, results, loads)
    command = "make bench-peers" + (
        f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else ""
    )
    lines = [
        f"Command: `{command}`",
        f"Machine: {_machine()}",
        f"Versions: {_versions()}",
        f"Task: {args.steps} calculator calls (one per model turn) then an answer: {args.steps + 1} model calls per run, "
        f"each {args.latency * 1000:.0f} ms at the scripted server; runs per concurrency level {args.runs}.",
        "",
        *report(results, args),
    ]
    print("\n".join(lines))


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(prog="make bench-peers")
    parser.add_argument(
        "--frameworks", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS)
    )
    parser.add_argument("--steps", type=int, default=10, help="tool-calling turns per run")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per model call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--runs", type=int, nargs="+", default=None, help="runs per level")
    parser.add_argument("--waiting", type=int, default=200, help="runs held on a slow model")
    parser.add_argument(
        "--slow", type=float, default=20, help="seconds the slow call takes (at most 25)"
    )
    parser.add_argument(
        "--crash", action=argparse.BooleanOptionalAction, default=None,
        help="the SIGKILL phase (default: on, off with --quick)",
    )  # fmt: skip
    parser.add_argument("--kill-after", type=int, default=5, help="model calls before SIGKILL")
    parser.add_argument("--crash-latency", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per phase at most")
    parser.add_argument("--json", default=None, help="write the raw figures here")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small counts")
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.runs, args.waiting, args.slow = [1, 4], [2, 4], 8, 10
    if args.crash is None:
        args.crash = not args.quick
    if args.slow > 25:
        parser.error("--slow must stay under the peers' 30 s model-activity timeout")
    if args.runs is None:
        args.runs = [max(10, 2 * c) for c in args.concurrency]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
