"""Evolution benchmarks (issue #13).

`real`: one cycle with the real local model (SmolLM2-135M through llama.cpp, no provider
key). The task family is two-digit multiplication ("What is 47 * 86?"), each case
checked exactly (`numeric`, tolerance 0), split by id into train, validation and
holdout. The agent starts weak: plain instructions and no tools. The cycle proposes
its candidates (by default a tool-set change and few-shot demonstrations), evaluates
them against the incumbent, and the gate decides. Reported: success rates per split
before and after, the holdout's paired sign test, the decision, wall time.

`scaling`: wall time and cost of a cycle by number of candidates and cases, on the
scripted model (each agent answer takes `--delay` seconds), and the speedup of
parallel evaluation over sequential (`parallelism` 8 against 1).

`canary`: canaries decided by the rollout controller on live runs of the scripted model
(each version succeeds at a set rate), against the runs a fixed-sample test at the same
error rates needs.

`python -m tests.bench.evolution real --cases 66`, `... scaling`, `... sequential` and
`... canary` run them alone.
"""

import argparse
import asyncio
import hashlib
import itertools
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from core import db
from core.evolution import cases as eval_cases
from core.evolution import rollouts
from core.evolution import store as evolutions
from core.evolution.cases import EvalCaseSpec
from core.evolution.gate import sign_test_p
from core.evolution.payloads import EvolutionInput, EvolutionOutput, EvolutionSettings
from core.evolution.rollout_payloads import CanaryRef, RolloutSettings
from core.evolution.sequential import (
    SequentialPolicy,
    SprtState,
    canary_hypotheses,
    fixed_sample_size,
    observe,
)
from core.providers import LOCAL_MODEL, local_model_installed
from core.queues import TaskQueue
from core.runs import agents
from core.runs import store as agent_runs
from core.runs.payloads import AgentRunInput, AgentSpec
from core.runs.rollout import resolve_version
from core.temporal import ColonyPlugin
from tests.bench.agent import Env, environment
from tests.bench.function_calling import llama_server
from tests.conftest import make_settings
from tests.support.model_server import (
    RecordedRequest,
    ScriptedModelServer,
    Step,
    reply,
    tool_call,
    tool_calls,
)
from tests.support.services import fresh_database
from tests.support.workers import running_workers
from workflows.evolution import EvolutionWorkflow

TENANT = "bench"
CANARY_CASES = ((0.9, 0.9), (0.9, 0.5), (0.9, 0.7))
"""(stable, canary) true success rates of the canary benchmark."""
AGENT = "multiplier"
INSTRUCTIONS = "You answer arithmetic questions."


@dataclass
class SplitRate:
    """Cases passed by the incumbent and by the winning (or best) candidate."""

    cases: int
    incumbent: int
    candidate: int
    wins: int
    losses: int

    @property
    def p_value(self) -> float:
        return sign_test_p(self.wins, self.losses)


@dataclass
class RealResult:
    output: EvolutionOutput
    wall_s: float
    candidate: int | None
    splits: dict[str, SplitRate]
    kinds: dict[int, str]


def multiplication_cases(count: int, seed: int) -> list[tuple[str, int]]:
    """`count` distinct questions "What is A * B?" with A, B two-digit (12-98)."""
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    while len(seen) < count:
        seen.add((rng.randint(12, 98), rng.randint(12, 98)))
    return [(f"What is {a} * {b}?", a * b) for a, b in sorted(seen)]


async def _agent_and_cases(pool: db.Pool, model: str, count: int, seed: int) -> int:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (TENANT,)
        )
        version, _ = await agents.create_version(
            conn, TENANT, AGENT, AgentSpec(instructions=INSTRUCTIONS, model=model, tools=[])
        )
        for i, (question, product) in enumerate(multiplication_cases(count, seed)):
            await eval_cases.add_case(
                conn, TENANT, AGENT,
                EvalCaseSpec(
                    objective=question, expected=str(product),
                    checks=[{"kind": "numeric", "value": product}],  # type: ignore[list-item]
                ),
                case_id=f"mul-{seed}-{i:03d}",
            )  # fmt: skip
    return version.version


async def _cycle(
    client: Client,
    pool: db.Pool,
    suffix: str,
    incumbent: int,
    settings: EvolutionSettings,
    agent: str = AGENT,
) -> tuple[EvolutionOutput, float]:
    async with pool.connection() as conn:
        record = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=agent, incumbent_version=incumbent, settings=settings
        )
    started = time.monotonic()
    handle = await client.start_workflow(
        EvolutionWorkflow.run,
        EvolutionInput(tenant_id=TENANT, evolution_id=record.id),
        id=record.workflow_id,
        task_queue=TaskQueue.ORCHESTRATION.value + suffix,
    )
    output = await handle.result()
    return output, time.monotonic() - started


async def _rates(pool: db.Pool, output: EvolutionOutput) -> tuple[int | None, dict[str, SplitRate]]:
    async with pool.connection() as conn:
        record = await evolutions.get_evolution(conn, TENANT, output.evolution_id)
        results = await evolutions.list_results(conn, output.evolution_id)
    best = output.version or (record.gate or {}).get("best")
    by: dict[tuple[int, str], bool] = {(r.version, r.case_id): r.passed for r in results}
    splits: dict[str, SplitRate] = {}
    for split in ("train", "validation", "holdout"):
        ids = sorted({r.case_id for r in results if r.split == split})
        inc = [by.get((record.incumbent_version, c), False) for c in ids]
        cand = [by.get((best, c), False) for c in ids] if best is not None else [False] * len(ids)
        splits[split] = SplitRate(
            cases=len(ids),
            incumbent=sum(inc),
            candidate=sum(cand) if split != "train" else 0,
            wins=sum(c and not i for i, c in zip(inc, cand, strict=True)),
            losses=sum(i and not c for i, c in zip(inc, cand, strict=True)),
        )
    return best, splits


async def real(env: Env, cases: int, seed: int, parallelism: int) -> RealResult | None:
    """One cycle on SmolLM2-135M from a weak agent."""
    if not local_model_installed():
        return None
    client = await Client.connect(env.temporal_address, plugins=[ColonyPlugin()])
    async with (
        llama_server(native=False) as server,
        fresh_database(env.pg, "bench_evolution") as url,
        db.open_pool(url) as pool,
    ):
        settings = make_settings(
            TEMPORAL_ADDRESS=env.temporal_address,
            DATABASE_URL=url,
            COLONY_LOCAL_MODEL_URL=server.url,
            COLONY_DATA_DIR=str(env.workdir / "data"),
        )
        suffix = "-" + uuid.uuid4().hex[:6]
        async with running_workers(client, settings, pool, suffix=suffix, cache=True):
            incumbent = await _agent_and_cases(pool, LOCAL_MODEL, cases, seed)
            output, wall = await _cycle(
                client, pool, suffix, incumbent,
                EvolutionSettings(
                    candidates=2, kinds=["tools", "few_shot"], parallelism=parallelism,
                    max_eval_runs=2000, eval_timeout_s=600,
                ),
            )  # fmt: skip
        best, splits = await _rates(pool, output)
        async with pool.connection() as conn:
            kinds = {
                c.version: c.kind
                for c in await evolutions.list_candidates(conn, output.evolution_id)
            }
    return RealResult(output, wall, best, splits, kinds)


def real_table(result: RealResult | None) -> list[str]:
    if result is None:
        return ["Evolution (real model): skipped (the local-llm extra is not installed)."]
    out = result.output
    lines = [
        f"Decision: **{out.decision}**"
        + (f" v{out.version} ({result.kinds.get(out.version, '?')})" if out.version else "")
        + f"; wall {result.wall_s:.0f} s; model cost ${out.cost_usd:.6f} (local).",
        "",
        "| split | cases | incumbent passes | candidate passes | wins / losses | sign test p |",
        "|---|---|---|---|---|---|",
    ]
    for split, rate in result.splits.items():
        if split == "train":
            lines.append(f"| train | {rate.cases} | {rate.incumbent} | (not evaluated) | - | - |")
            continue
        lines.append(
            f"| {split} | {rate.cases} | {rate.incumbent} ({rate.incumbent / max(rate.cases, 1):.0%})"
            f" | {rate.candidate} ({rate.candidate / max(rate.cases, 1):.0%})"
            f" | {rate.wins} / {rate.losses} | {rate.p_value:.2g} |"
        )
    if out.reasons:
        lines += ["", "Reasons: " + "; ".join(out.reasons)]
    return lines


# -- scaling (scripted model) --------------------------------------------------------


@dataclass
class ScaleResult:
    candidates: int
    cases: int
    parallelism: int
    eval_runs: int
    wall_s: float
    model_calls: int
    tokens: int
    decision: str


def _scripted(delay: float) -> Any:
    proposals = itertools.count(1)

    def respond(request: RecordedRequest) -> Step:
        system = " ".join(
            str(m.get("content") or "") for m in request.messages if m["role"] == "system"
        )
        if system.startswith("You improve the instructions"):
            rule = f"Check step {next(proposals)} of your work."  # a distinct edit per call
            return reply(json.dumps({"bullets": [rule], "rationale": "bench"}))
        if system.startswith("You find why"):
            return reply(json.dumps({"cause": "missing_knowledge", "explanation": "bench"}))
        return reply(
            "The answer is 42.", delay=delay, usage={"prompt_tokens": 100, "completion_tokens": 10}
        )

    return respond


async def scaling(
    env: Env, candidates: Sequence[int], cases: Sequence[int], delay: float
) -> list[ScaleResult]:
    """A cycle per (K, cases), parallelism 8; then K=4 and the most cases sequentially."""
    client = await Client.connect(env.temporal_address, plugins=[ColonyPlugin()])
    out: list[ScaleResult] = []
    with ScriptedModelServer(responder=_scripted(delay)) as server:
        async with (
            fresh_database(env.pg, "bench_evolution_scale") as url,
            db.open_pool(url) as pool,
        ):
            settings = make_settings(
                TEMPORAL_ADDRESS=env.temporal_address,
                DATABASE_URL=url,
                OPENAI_BASE_URL=server.base_url,
                COLONY_DATA_DIR=str(env.workdir / "data"),
            )
            suffix = "-" + uuid.uuid4().hex[:6]
            async with running_workers(client, settings, pool, suffix=suffix, cache=True):
                runs_matrix = [(k, n, 8) for n in cases for k in candidates]
                runs_matrix.append((4, max(cases), 1))
                for k, n, parallel in runs_matrix:
                    agent, incumbent = await _fresh_agent(pool, n)
                    calls_before = len(server.chat_requests())
                    output, wall = await _cycle(
                        client, pool, suffix, incumbent,
                        EvolutionSettings.model_validate({
                            "candidates": k, "kinds": ["instruction_edit", "few_shot"],
                            "parallelism": parallel, "max_eval_runs": 5000,
                            "gate": {"min_cases": 2},  # 10 cases leave 3 for validation
                        }),
                        agent,
                    )  # fmt: skip
                    async with pool.connection() as conn:
                        done = len(await evolutions.list_results(conn, output.evolution_id))
                    calls = server.chat_requests()[calls_before:]
                    tokens = 110 * len(calls)  # every scripted answer reports 100 + 10 tokens
                    out.append(
                        ScaleResult(k, n, parallel, done, wall, len(calls), tokens, output.decision)
                    )
    return out


async def _fresh_agent(pool: db.Pool, count: int) -> tuple[str, int]:
    """A new bench agent holding `count` cases of its own."""
    seed = random.randrange(1_000_000)
    name = f"{AGENT}-{seed}"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (TENANT,)
        )
        version, _ = await agents.create_version(
            conn, TENANT, name,
            AgentSpec(instructions=INSTRUCTIONS, model="openai/scripted-model", tools=[]),
        )  # fmt: skip
        for i, (question, product) in enumerate(multiplication_cases(count, seed)):
            await eval_cases.add_case(
                conn, TENANT, name,
                EvalCaseSpec(objective=question, checks=[{"kind": "numeric", "value": product}]),  # type: ignore[list-item]
                case_id=f"s{seed}-{i:03d}",
            )  # fmt: skip
    return name, version.version


def scaling_table(results: list[ScaleResult], delay: float) -> list[str]:
    lines = [
        f"Each agent answer takes {delay:.2f} s on the scripted model and reports 100 + 10 "
        "tokens; the scripted model has no price, so cost is given as model calls and tokens "
        "(a cycle's cost is their sum at the agent's model's price).",
        "",
        "| candidates | cases | parallelism | evaluation runs | wall | model calls | tokens | decision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.candidates} | {r.cases} | {r.parallelism} | {r.eval_runs} | {r.wall_s:.1f} s"
            f" | {r.model_calls} | {r.tokens} | {r.decision} |"
        )
    parallel = next(
        (
            r
            for r in results
            if r.candidates == 4 and r.parallelism == 8 and r.cases == max(x.cases for x in results)
        ),
        None,
    )
    sequential = next((r for r in results if r.parallelism == 1), None)
    if parallel and sequential:
        lines += ["", f"Parallel evaluation (8) against sequential (1), 4 candidates: "
                  f"{sequential.wall_s / parallel.wall_s:.1f}x faster."]  # fmt: skip
    return lines


async def run_all(
    cases: int = 66,
    seed: int = 13,
    parallelism: int = 2,
    scale_candidates: Sequence[int] = (1, 4, 8),
    scale_cases: Sequence[int] = (10, 50),
    delay: float = 0.2,
) -> list[str]:
    """Both sections, as Markdown lines (`make bench`)."""
    async with environment() as env:
        result = await real(env, cases, seed, parallelism)
        timings = await scaling(env, scale_candidates, scale_cases, delay)
        canaries, policy = await canary(env, CANARY_CASES)
    return [
        "### Evolution with the local model", "", *real_table(result), "",
        "### Evolution cycle scaling", "", *scaling_table(timings, delay), "",
        "### Sequential test against a fixed sample", "", *sequential_table(), "",
        "### Canaries on live runs", "", *canary_table(canaries, policy),
    ]  # fmt: skip


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "section", choices=["real", "scaling", "sequential", "canary", "all"], nargs="?",
        default="all",
    )  # fmt: skip
    parser.add_argument("--cases", type=int, default=66)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--scale-candidates", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--scale-cases", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args(argv)
    if args.section in ("sequential", "all"):
        print(
            "\n".join(["### Sequential test against a fixed sample", "", *sequential_table(), ""])
        )
    if args.section == "sequential":
        return
    async with environment() as env:
        if args.section in ("canary", "all"):
            results, policy = await canary(env, CANARY_CASES)
            print("\n".join(["### Canaries on live runs", "", *canary_table(results, policy), ""]))
        if args.section in ("real", "all"):
            result = await real(env, args.cases, args.seed, args.parallelism)
            print("\n".join(["### Evolution with the local model", "", *real_table(result), ""]))
        if args.section in ("scaling", "all"):
            timings = await scaling(env, args.scale_candidates, args.scale_cases, args.delay)
            print(
                "\n".join(["### Evolution cycle scaling", "", *scaling_table(timings, args.delay)])
            )


# -- sequential test against a fixed sample (simulation) -----------------------------


def sequential_table(trials: int = 2000, seed: int = 5) -> list[str]:
    """Runs a canary needs before the SPRT decides, against the fixed-sample test's n.

    Baseline success rate 0.8, delta 0.1 (H0: 0.7, H1: 0.8), alpha 0.05, beta 0.1; each
    row draws `trials` canaries with the given true rate.
    """
    policy = SequentialPolicy(alpha=0.05, beta=0.1, delta=0.1, min_samples=10, max_samples=100_000)
    baseline = 0.8
    p0, p1 = canary_hypotheses(baseline, policy)
    fixed = fixed_sample_size(p0, p1, policy.alpha, policy.beta)
    rng = random.Random(seed)
    lines = [
        f"Baseline 0.8, delta 0.1, alpha 0.05, beta 0.1, {trials} simulated canaries per row;"
        f" the fixed-sample test needs {fixed} runs whatever the truth.",
        "",
        "| canary's true success rate | promoted | rolled back | SPRT runs: mean | median | p95 |"
        " mean / fixed |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate in (0.6, 0.7, 0.75, 0.8, 0.9):
        decisions, sizes = [], []
        for _ in range(trials):
            state = SprtState()
            verdict = "continue"
            while verdict == "continue":
                result = observe(state, rng.random() < rate, p0, p1, policy)
                state, verdict = result.state, result.verdict
            decisions.append(verdict)
            sizes.append(state.samples)
        sizes.sort()
        mean = sum(sizes) / trials
        lines.append(
            f"| {rate:.2f} | {decisions.count('accept_h1') / trials:.1%}"
            f" | {decisions.count('accept_h0') / trials:.1%} | {mean:.0f}"
            f" | {sizes[trials // 2]} | {sizes[int(trials * 0.95)]} | {mean / fixed:.2f} |"
        )
    return lines


# -- canaries on the real stack (scripted model) ---------------------------------------


@dataclass(frozen=True)
class CanaryResult:
    """One canary decided on live runs: its true rate, the decision, runs and time it took."""

    stable_rate: float
    canary_rate: float
    decision: str
    canary_runs: int
    live_runs: int
    wall_s: float


def _coin(text: str, rate: float) -> bool:
    """A run's stable draw at `rate` (by its objective and version)."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _live_model(rates: dict[str, float]) -> Any:
    """An agent that succeeds at its version's rate; a failure loops on a tool until its
    one-step limit ends the run `limit_reached`."""

    def respond(request: RecordedRequest) -> Step:
        system = " ".join(
            str(m.get("content") or "") for m in request.messages if m["role"] == "system"
        )
        user = " ".join(
            str(m.get("content") or "") for m in request.messages if m["role"] == "user"
        )
        marker = next((m for m in rates if m and m in system), "")
        if _coin(marker + user, rates[marker]):
            return reply("The answer is 42.", delay=0.05)
        return tool_calls(tool_call("calculator", {"expression": "6*7"}), delay=0.05)

    return respond


async def canary(
    env: Env, cases: Sequence[tuple[float, float]], concurrency: int = 8
) -> tuple[list[CanaryResult], SequentialPolicy]:
    """Canaries decided by the rollout controller on live runs of the scripted model."""
    policy = SequentialPolicy(alpha=0.05, beta=0.1, delta=0.2, min_samples=10, max_samples=5000)
    rules = RolloutSettings(
        canary_share=0.5, online_sample_rate=0.0, baseline_runs=30, canary_test=policy,
        watch=False,
    )  # fmt: skip
    client = await Client.connect(env.temporal_address, plugins=[ColonyPlugin()])
    out: list[CanaryResult] = []
    for stable_rate, canary_rate in cases:
        model = _live_model({"": stable_rate, "NEW": canary_rate})
        with ScriptedModelServer(responder=model) as server:
            async with (
                fresh_database(env.pg, "bench_canary") as url,
                db.open_pool(url) as pool,
            ):
                suffix = "-" + uuid.uuid4().hex[:6]
                settings = make_settings(
                    TEMPORAL_ADDRESS=env.temporal_address, DATABASE_URL=url,
                    OPENAI_BASE_URL=server.base_url, COLONY_DATA_DIR=str(env.workdir / "data"),
                    COLONY_TASK_QUEUE_SUFFIX=suffix,
                )  # fmt: skip
                async with running_workers(client, settings, pool, suffix=suffix, cache=True):
                    out.append(
                        await _one_canary(
                            client, pool, settings, rules, concurrency, stable_rate, canary_rate
                        )
                    )
    return out, policy


async def _one_canary(
    client: Client,
    pool: db.Pool,
    settings: Any,
    rules: RolloutSettings,
    concurrency: int,
    stable_rate: float,
    canary_rate: float,
) -> CanaryResult:
    name = "canary-" + uuid.uuid4().hex[:6]
    limits = {"max_steps": 1}
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (TENANT,)
        )
        base = AgentSpec(instructions="You answer.", model="openai/scripted-model",
                         tools=["calculator"], limits=limits)  # fmt: skip
        await agents.create_version(conn, TENANT, name, base)
        await rollouts.put_policy(conn, TENANT, name, rules)
        cycle = await evolutions.create_evolution(
            conn, tenant_id=TENANT, agent_name=name, incumbent_version=1,
            settings=EvolutionSettings(),
        )  # fmt: skip
        candidate = await agents.add_candidate(
            conn, TENANT, name, base.model_copy(update={"instructions": "NEW You answer."}),
            parent=1, evolution_id=cycle.id, rationale="bench",
        )  # fmt: skip
        record = await rollouts.start_canary(
            conn, TENANT, name, stable=1, canary=candidate.version, evolution_id=cycle.id,
            settings=rules,
        )  # fmt: skip
    await rollouts.signal_controller(
        client, settings, TENANT, name, "canary_started", CanaryRef(rollout_id=record.id)
    )
    started = time.perf_counter()
    counter = itertools.count()
    decided = asyncio.Event()

    async def driver() -> None:
        while not decided.is_set():
            i = next(counter)
            async with pool.connection() as conn:
                version, rollout_id = await resolve_version(conn, TENANT, name, end_user=f"u{i}")
                run, inbox, _ = await agent_runs.create_run(
                    conn, tenant_id=TENANT, agent_name=name, agent_version=version.version,
                    objective=f"question {i}", end_user=f"u{i}", rollout_id=rollout_id,
                )  # fmt: skip
            await client.execute_workflow(
                "AgentRunWorkflow",
                AgentRunInput(tenant_id=TENANT, run_id=run.id, agent_name=name,
                              agent_version=version.version, inbox_ids=[inbox]),
                id=run.workflow_id, task_queue=TaskQueue.ORCHESTRATION.value + settings.task_queue_suffix,
            )  # fmt: skip

    async def watcher() -> rollouts.RolloutRecord:
        while True:
            async with pool.connection() as conn:
                found = await rollouts.get_rollout(conn, TENANT, record.id)
            if found.status != "active":
                decided.set()
                return found
            await asyncio.sleep(0.1)

    drivers = [asyncio.create_task(driver()) for _ in range(concurrency)]
    final = await watcher()
    wall = time.perf_counter() - started
    await asyncio.gather(*drivers, return_exceptions=True)
    return CanaryResult(
        stable_rate, canary_rate, final.status, int(final.evidence.get("samples") or 0),
        next(counter), wall,
    )  # fmt: skip


def canary_table(results: list[CanaryResult], policy: SequentialPolicy) -> list[str]:
    lines = [
        f"Canary share 0.5, stable version's baseline from its own runs during the canary "
        f"(30), delta {policy.delta}, alpha {policy.alpha}, beta {policy.beta}, at least "
        f"{policy.min_samples} canary runs; every run one scripted model call (50 ms).",
        "",
        "| stable / canary true success | decision | canary runs to decide | live runs | wall |"
        " fixed-sample canary runs | fixed / SPRT runs | fixed-sample wall (est.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p0, p1 = canary_hypotheses(r.stable_rate, policy)
        fixed = fixed_sample_size(p0, p1, policy.alpha, policy.beta)
        rate = r.canary_runs / r.wall_s if r.wall_s else 0.0
        lines.append(
            f"| {r.stable_rate:.2f} / {r.canary_rate:.2f} | {r.decision} | {r.canary_runs} |"
            f" {r.live_runs} | {r.wall_s:.1f} s | {fixed} | {fixed / max(r.canary_runs, 1):.1f}x |"
            f" {fixed / rate if rate else float('nan'):.1f} s |"
        )
    return lines


if __name__ == "__main__":
    asyncio.run(main())
