"""Evolution's model work on the llm lane.

It scores evaluation runs, diagnoses failures and proposes candidate versions.

What the proposer sees is the train split only: the incumbent's train evaluations and the
feedback and failures of live runs that are not the source of a validation or holdout
case. Validation and holdout cases never reach its prompt, and a candidate whose added
text copies their objectives or answers is rejected (`core.evolution.proposals`).

Every activity stores its output before returning and finds it again on a retry, so a
finished step is not redone (a retry of an unfinished one may call the model again).
"""

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, get_args

from pydantic import ValidationError
from temporalio import activity

from activities.evolution import grading
from activities.providers import json_protocol, tool_ranking
from activities.providers.client import ModelClient
from activities.tools.catalog import AGENT_TOOL_PREFIX, ToolCatalog
from core import tenants
from core.db import Pool
from core.errors import Conflict
from core.evolution import cases as eval_cases
from core.evolution import frontier, growth, proposals
from core.evolution import store as evolutions
from core.evolution.cases import EvalCase
from core.evolution.checks import run_checks
from core.evolution.growth import GeneratedTool, SubAgentDraft
from core.evolution.payloads import (
    FAILING_OUTCOMES,
    LOW_RATING,
    CandidateKind,
    CategorizeOutput,
    DiagnoseInput,
    DiagnoseOutput,
    FailureCause,
    FeedbackCategory,
    JudgePairsInput,
    JudgePairsOutput,
    ProposeInput,
    ProposeOutput,
    ScoreInput,
    ScoreOutput,
)
from core.evolution.store import EvolutionRecord, ResultRecord
from core.payloads import RunEvent
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentLimits, AgentSpec
from core.runs.store import RunRecord
from core.settings import Settings
from core.tools import store as tool_store
from core.tools.names import WORKFLOW_TOOL_PREFIXES, WORKFLOW_TOOLS
from core.tools.store import ToolStats

PAIR_PROMPT: Final = (
    "You compare two answers of AI agents to the same request against a rubric. Read the "
    "request, the rubric and answers A and B, then reply with one JSON object: "
    '{"better": "A" | "B" | "tie", "reason": "one sentence"}. Judge only what the rubric '
    "asks; the order of the answers means nothing."
)
JUDGE_PROMPT_ID: Final = hashlib.sha256((grading.JUDGE_PROMPT + PAIR_PROMPT).encode()).hexdigest()[
    :12
]
"""Recorded with every judged decision: which judge prompt scored it."""

_PAIR_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "better": {"type": "string", "enum": ["A", "B", "tie"]},
        "reason": {"type": "string"},
    },
    "required": ["better", "reason"],
}
_CAUSES: Final[tuple[FailureCause, ...]] = (
    "missing_knowledge", "wrong_approach", "tool_problem", "missing_capability",
    "model_too_weak", "misunderstood_objective",
)  # fmt: skip
_DIAGNOSE_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "cause": {"type": "string", "enum": list(_CAUSES)},
        "explanation": {"type": "string"},
    },
    "required": ["cause", "explanation"],
}
_EDIT_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "bullets": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5},
        "rationale": {"type": "string"},
    },
    "required": ["bullets", "rationale"],
}
_REWRITE_SCHEMA: Final = {
    "type": "object",
    "properties": {"instructions": {"type": "string"}, "rationale": {"type": "string"}},
    "required": ["instructions", "rationale"],
}
MAX_FAILURES: Final = 8
"""Failures shown to the diagnosing and proposing model (the most recent)."""
MAX_FEEDBACK: Final = 20
"""Feedback items one cycle sorts into categories at most (the most recent first)."""
_FEEDBACK_CATEGORIES: Final = get_args(FeedbackCategory)
_CATEGORY_SCHEMA: Final = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": list(_FEEDBACK_CATEGORIES)}},
    "required": ["category"],
}
MIN_CALLS_TO_JUDGE: Final = 5
"""Calls a tool needs before a tool-set candidate may remove it for failing."""
MAX_REFLEXIONS: Final = 5
"""Reflexions (the agent's own lessons after its runs) shown to the proposer."""
MAX_GAP_TOOLS: Final = 3
"""Tools one tool-set candidate adds at most."""
_SIDE_EFFECTS_NOTE: Final = "adds tools with side effects"
_NETWORK_NOTE: Final = "asks for network access, which generated tools never get"
_NO_GAP: Final = "no diagnosis of this cycle says the agent lacks a capability"
CODE_TOOL_PROMPT: Final = (
    "You write a new tool for an AI agent that lacks a capability. The tool is a Python 3 "
    "program (standard library only) run in a sandbox without network access, secrets or "
    "files of the agent's: the dict `args` holds its arguments, already checked against "
    "input_schema, and it prints its result to stdout. Write tests that show it works. "
    'Reply with one JSON object: {"name": "snake_case_name", "description": "what it does, '
    'for the agent", "input_schema": {a JSON Schema of type object}, "source": "python code", '
    '"tests": [{"arguments": {...}, "checks": [{"kind": "exact" | "contains" | "regex" | '
    '"numeric", "value": ...}]}], "needs_network": false, "rationale": "one sentence"}. '
    "Give 1 to 10 tests; a check runs on the tool's stdout."
)
SUB_AGENT_PROMPT: Final = (
    "You design a sub-agent that an AI agent will call, as a tool, for what it cannot do "
    "itself. Write the sub-agent's instructions and choose its tools, only from the list "
    'given. Reply with one JSON object: {"slug": "short-lowercase-name", "instructions": '
    '"...", "tools": ["..."], "max_steps": N, "rationale": "one sentence"}.'
)
_CODE_TOOL_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "input_schema": {"type": "object"},
        "source": {"type": "string"},
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "arguments": {"type": "object"},
                    "checks": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["arguments", "checks"],
            },
        },
        "needs_network": {"type": "boolean"},
        "rationale": {"type": "string"},
    },
    "required": ["name", "description", "input_schema", "source", "tests"],
}
_SUB_AGENT_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "slug": {"type": "string"},
        "instructions": {"type": "string"},
        "tools": {"type": "array", "items": {"type": "string"}},
        "max_steps": {"type": "integer"},
        "rationale": {"type": "string"},
    },
    "required": ["slug", "instructions", "tools"],
}


@dataclass(frozen=True)
class _GapTool:
    """A tool the agent lacks that its failures call for."""

    name: str
    score: float
    side_effects: bool
    stats: ToolStats | None


@dataclass(frozen=True)
class _Draft:
    """A candidate before it is checked: its instructions and tools, or why there is none."""

    kind: CandidateKind
    instructions: str
    tools: list[str]
    rationale: str
    parent: int | None = None  # the frontier version it grew from (None: the incumbent)
    refused: str | None = None
    model: str | None = None  # a model tier change
    tool: GeneratedTool | None = None  # a code tool to test, then register as a draft
    sub_agent: SubAgentDraft | None = None  # an agent to create and add as a tool


def _tools_draft(
    instructions: str,
    tools: list[str],
    gap: Sequence[_GapTool],
    failing: Mapping[str, ToolStats],
) -> _Draft:
    """The agent with the tools its failures call for and without those that keep failing.

    Refused when there is nothing to add or remove.
    """
    if not gap and not failing:
        return _Draft(
            "tools", instructions, tools, "no tool fits the failures, none keeps failing",
            refused="no tool the agent lacks matches its failed requests, and none of its "
            "tools keeps failing",
        )  # fmt: skip
    reasons = []
    if gap:
        evidence = []
        for tool in gap:
            line = f"{tool.name} (similarity {tool.score:.2f}"
            if tool.stats is not None and tool.stats.calls:
                line += f"; {tool.stats.successes}/{tool.stats.calls} calls succeeded"
                if tool.stats.p50_ms is not None:
                    line += f", p50 {tool.stats.p50_ms:.0f} ms"
            evidence.append(line + ")")
        reasons.append("add tools the failed requests call for: " + ", ".join(evidence))
    if failing:
        reasons.append(
            "remove tools that keep failing: "
            + ", ".join(
                f"{n} ({s.successes}/{s.calls} calls succeeded)" for n, s in failing.items()
            )
        )
    rationale = "; ".join(reasons)
    if any(tool.side_effects for tool in gap):
        rationale += f"; {_SIDE_EFFECTS_NOTE}: a human must approve its promotion"
    kept = [t for t in tools if t not in failing]
    return _Draft("tools", instructions, [*kept, *(t.name for t in gap)], rationale)


def _failing_tools(stats: Mapping[str, ToolStats]) -> dict[str, ToolStats]:
    """The agent's tools that fail more often than they work, over enough calls to tell."""
    return {
        name: s
        for name, s in stats.items()
        if s.calls >= MIN_CALLS_TO_JUDGE and s.successes / s.calls < 0.5
    }


def _model_draft(parent: AgentSpec, tiers: Sequence[str], index: int) -> _Draft:
    """The parent on another model of the configured tiers (refused without tiers)."""
    others = [m for m in tiers if m != parent.model]
    if not others:
        return _Draft(
            "model", parent.instructions, parent.tools, "no other model tier",
            refused="settings.model_tiers names no model other than the agent's",
        )  # fmt: skip
    model = others[index % len(others)]
    return _Draft(
        "model", parent.instructions, parent.tools, f"model tier: {parent.model} → {model}",
        model=model,
    )  # fmt: skip


def asks_for_approval(rationale: str) -> bool:
    """Whether a candidate may be promoted only with a human's approval.

    Its rationale says it adds side effects, or that its generated tool asks for the network.
    """
    return _SIDE_EFFECTS_NOTE in rationale or _NETWORK_NOTE in rationale


def _diff(instructions: str, tools: Sequence[str], draft: _Draft) -> str:
    """The instructions' unified diff, then the tools added and removed."""
    lines = [proposals.instruction_diff(instructions, draft.instructions)]
    if draft.tool is not None:
        lines.append(f"new code tool {draft.tool.name}: {draft.tool.description}")
        lines.append(draft.tool.source)
    if draft.sub_agent is not None:
        lines.append(f"new sub-agent instructions:\n{draft.sub_agent.instructions}")
    added = [t for t in draft.tools if t not in tools]
    removed = [t for t in tools if t not in draft.tools]
    if added or removed:
        lines.append("tools:")
        lines += [f"+ {t}" for t in added] + [f"- {t}" for t in removed]
    if draft.model is not None:
        lines.append(f"model: {draft.model}")
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class _Failure:
    """One piece of evidence against the incumbent."""

    source: str  # "case:<id>" (a train evaluation) or "run:<id>" (a live run)
    objective: str
    answer: str | None
    problem: str  # what was wrong: failed checks, the rater's comment, the run's reason
    expected: str | None = None


class EvolutionModelActivities:
    """Model calls of an evolution cycle (the llm lane)."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        models: ModelClient,
        catalog: ToolCatalog | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._models = models
        self._catalog = catalog  # without it, no tool-set candidates

    # -- scoring ---------------------------------------------------------------------

    @activity.defn(name="score_eval_run")
    async def score_eval_run(self, input: ScoreInput) -> ScoreOutput:
        """Score an evaluation run by its case's checks, or by the judge on its rubric.

        A run that did not finish (failure given, or no run) scores None: a failure.

        The latency recorded for a finished run is the time its model and tool calls took
        (their successful attempts), not the workflow's wall time: a worker that crashed
        mid-evaluation, or a busy queue, must not make one version look slower than another.
        A run that did not finish keeps the wall time it was given.
        """
        async with self._pool.connection() as conn:
            stored = await evolutions.find_result(
                conn, input.evolution_id, input.version, input.case_id
            )
            if stored is not None:
                return ScoreOutput(
                    score=stored.score, passed=stored.passed, cost_usd=stored.cost_usd
                )
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            case = await eval_cases.get_case(conn, input.tenant_id, input.agent_name, input.case_id)
            run = None
            if input.run_id is not None:
                if input.failure is not None:
                    await runs.abandon(conn, input.run_id, f"evaluation: {input.failure}")
                run = await runs.get_run(conn, input.tenant_id, input.run_id)
            calls = [] if run is None else await grading.tool_calls(conn, run.id)
            latency = input.latency_s
            if run is not None and input.failure is None:
                latency = await grading.working_s(conn, run.id)
        cost = run.cost_usd if run is not None else 0.0
        score: float | None
        if run is None or input.failure is not None:
            score, passed, detail = (
                None,
                False,
                input.failure or "the evaluation run was not created",
            )
        elif case.spec.checks:
            answer = run.result if run.outcome == "succeeded" else None
            checked = run_checks(case.spec.checks, answer, calls)
            score, passed = checked.score, checked.passed
            detail = "; ".join(checked.failures) or "all checks pass"
        else:
            score, passed, detail, judge_cost = await self._judge(record, case, run)
            cost += judge_cost
            if record.judge is None:
                judge = {"models": await self._judge_models(record), "prompt": JUDGE_PROMPT_ID}
                async with self._pool.connection() as conn:
                    await evolutions.set_state(conn, record.id, judge=judge)
        async with self._pool.connection() as conn, conn.transaction():
            await evolutions.record_result(
                conn, input.tenant_id, input.evolution_id, version=input.version,
                case_id=input.case_id, split=case.split, run_id=input.run_id, score=score,
                passed=passed, detail=detail, cost_usd=cost, latency_s=latency,
            )  # fmt: skip
            await evolutions.append_events(
                conn, input.tenant_id, input.evolution_id,
                [RunEvent(key=f"evaluated-{input.version}-{input.case_id}", type="evaluation.scored",
                          data={"version": input.version, "case_id": input.case_id,
                                "split": case.split, "score": score, "passed": passed,
                                "run_id": input.run_id})],
            )  # fmt: skip
        return ScoreOutput(score=score, passed=passed, cost_usd=cost)

    async def _judge(
        self, record: EvolutionRecord, case: EvalCase, run: RunRecord
    ) -> tuple[float | None, bool, str, float]:
        """The rubric judge: pinned prompt and model. No answer, or no valid grade: None."""
        if run.outcome != "succeeded" or not run.result:
            return None, False, f"the run ended {run.outcome}: no answer to judge", 0.0
        return await grading.judge(
            self._models, await self._judge_models(record), case.spec.objective,
            case.spec.rubric or "", run.result, self._spender(record),
        )  # fmt: skip

    @activity.defn(name="judge_pairs")
    async def judge_pairs(self, input: JudgePairsInput) -> JudgePairsOutput:
        """Judge a candidate against the incumbent, answer beside answer, on rubric cases.

        Each pair is shown in an order fixed by a hash of the cycle, version and case, so
        the candidate comes first in about half of them (judges favour a position). A
        case where either side gave no answer keeps its pointwise scores.
        """
        async with self._pool.connection() as conn:
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            done = await evolutions.list_pairs(conn, input.evolution_id)
            results = {
                (r.version, r.case_id): r for r in await evolutions.list_results(conn, record.id)
            }
            pending = []
            for case in await eval_cases.list_cases(
                conn, input.tenant_id, record.agent_name, ("validation", "holdout")
            ):
                if case.spec.checks or (input.version, case.id) in done:
                    continue
                mine = results.get((input.version, case.id))
                theirs = results.get((record.incumbent_version, case.id))
                if mine is None or theirs is None or not (mine.run_id and theirs.run_id):
                    continue
                new = await runs.get_run(conn, input.tenant_id, mine.run_id)
                old = await runs.get_run(conn, input.tenant_id, theirs.run_id)
                if new.result and old.result:
                    pending.append((case, new.result, old.result))
        if not pending:
            return JudgePairsOutput(judged=0)
        models = await self._judge_models(record)
        cost = 0.0
        for case, candidate, incumbent in pending:
            key = f"{record.id}:{input.version}:{case.id}".encode()
            candidate_first = hashlib.sha256(key).digest()[0] % 2 == 0
            first, second = (candidate, incumbent) if candidate_first else (incumbent, candidate)
            answer, spent = await self._ask(
                record,
                models,
                PAIR_PROMPT,
                f"Request:\n{case.spec.objective}\n\nRubric:\n{case.spec.rubric}"
                f"\n\nAnswer A:\n{first[:6000]}\n\nAnswer B:\n{second[:6000]}",
                _PAIR_SCHEMA,
            )
            cost += spent
            better = answer.get("better")
            if better not in ("A", "B", "tie"):
                continue  # no valid verdict: the pointwise scores decide this case
            preferred: evolutions.Preference = (
                "tie" if better == "tie"
                else "candidate" if (better == "A") == candidate_first
                else "incumbent"
            )  # fmt: skip
            async with self._pool.connection() as conn:
                await evolutions.record_pair(
                    conn, input.tenant_id, record.id, version=input.version, case_id=case.id,
                    preferred=preferred,
                    shown_first="candidate" if candidate_first else "incumbent",
                    reason=str(answer.get("reason", "")), cost_usd=spent,
                )  # fmt: skip
        return JudgePairsOutput(judged=len(pending), cost_usd=cost)

    async def _ask(
        self,
        record: EvolutionRecord,
        models: list[str],
        system: str,
        user: str,
        schema: dict[str, Any],
        *,
        max_tokens: int = 200,
        temperature: float = 0.0,
    ) -> tuple[dict[str, Any], float]:
        """One model call answered with a JSON object ({} when the answer holds none).

        Within the tenant's spend caps (`BudgetExceeded` over them), and ledgered.
        """
        return await grading.ask(
            self._models, models, system, user, schema,
            max_tokens=max_tokens, temperature=temperature, spender=self._spender(record),
        )  # fmt: skip

    def _spender(self, record: EvolutionRecord) -> grading.Spender:
        return grading.Spender(
            self._pool, self._settings, record.tenant_id, record.agent_name, record.id
        )

    async def _judge_models(self, record: EvolutionRecord) -> list[str]:
        if record.settings.judge_model is not None:
            return [record.settings.judge_model]
        return await self._agent_models(record)

    async def _agent_models(self, record: EvolutionRecord) -> list[str]:
        async with self._pool.connection() as conn:
            version = await agents.get_version(
                conn, record.tenant_id, record.agent_name, record.incumbent_version
            )
        return [version.spec.model, *version.spec.fallback_models]

    # -- feedback --------------------------------------------------------------------

    @activity.defn(name="categorize_feedback")
    async def categorize_feedback(self, input: DiagnoseInput) -> CategorizeOutput:
        """Sort the agent's uncategorized feedback items (one model call each).

        The category is stored on the feedback and on the run's episode (its metadata).
        An item the model cannot sort stays uncategorized, for the next cycle.
        """
        async with self._pool.connection() as conn:
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            cur = await conn.execute(
                "SELECT f.run_id, f.rating, f.comment, f.expected, r.objective, r.result"
                " FROM run_feedback f JOIN runs r ON r.id = f.run_id"
                " WHERE r.tenant_id = %s AND r.agent_name = %s AND f.category IS NULL"
                " ORDER BY f.created_at DESC LIMIT %s",
                (input.tenant_id, record.agent_name, MAX_FEEDBACK),
            )
            items = await cur.fetchall()
        if not items:
            return CategorizeOutput(categorized=0)
        models = await self._agent_models(record)
        cost, done = 0.0, 0
        for item in items:
            answer, spent = await self._ask(
                record,
                models,
                "You sort feedback on an AI agent's answer into one category: "
                + ", ".join(_FEEDBACK_CATEGORIES)
                + '. Reply with one JSON object: {"category": "..."}.',
                f"Request: {str(item['objective'])[:1000]}\n"
                f"Answer: {str(item['result'] or '(none)')[:1000]}\n"
                f"Rating: {item['rating']}/5\nComment: {item['comment'] or '(none)'}"
                + (f"\nExpected: {str(item['expected'])[:500]}" if item["expected"] else ""),
                _CATEGORY_SCHEMA,
                max_tokens=50,
            )
            cost += spent
            category = answer.get("category")
            if category not in _FEEDBACK_CATEGORIES:
                continue
            done += 1
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE run_feedback SET category = %s WHERE run_id = %s AND category IS NULL",
                    (category, item["run_id"]),
                )
                await conn.execute(
                    "UPDATE memories SET metadata = metadata || jsonb_build_object("
                    "'feedback_category', %s::text), updated_at = now()"
                    " WHERE tenant_id = %s AND source_run_id = %s AND kind = 'episode'",
                    (category, input.tenant_id, item["run_id"]),
                )
        return CategorizeOutput(categorized=done, cost_usd=cost)

    # -- diagnosis -------------------------------------------------------------------

    @activity.defn(name="diagnose_failures")
    async def diagnose_failures(self, input: DiagnoseInput) -> DiagnoseOutput:
        """Attribute each recent failure of the incumbent to a cause (one model call each)."""
        async with self._pool.connection() as conn:
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            if record.diagnoses:
                return DiagnoseOutput(diagnosed=len(record.diagnoses))
            failures = await _failures(conn, record, await _Evidence.load(conn, record))
        models = await self._agent_models(record)
        diagnoses: list[dict[str, Any]] = []
        cost = 0.0
        for failure in failures:
            answer, spent = await self._ask(
                record,
                models,
                "You find why an AI agent failed a task. Causes: "
                + ", ".join(_CAUSES)
                + '. Reply with one JSON object: {"cause": "...", "explanation": "one sentence"}.',
                _failure_text(failure),
                _DIAGNOSE_SCHEMA,
            )
            cost += spent
            cause = answer.get("cause")
            diagnoses.append(
                {
                    "source": failure.source,
                    "objective": failure.objective[:300],
                    "problem": failure.problem[:300],
                    "cause": cause if cause in _CAUSES else None,
                    "explanation": str(answer.get("explanation", ""))[:500]
                    or "the diagnosing model gave no valid answer",
                }
            )
        causes: dict[str, int] = {}
        for d in diagnoses:
            causes[str(d["cause"])] = causes.get(str(d["cause"]), 0) + 1
        async with self._pool.connection() as conn, conn.transaction():
            await evolutions.set_state(conn, input.evolution_id, diagnoses=diagnoses)
            await evolutions.append_events(
                conn, input.tenant_id, input.evolution_id,
                [RunEvent(key="diagnosed", type="evolution.diagnosed",
                          data={"failures": len(diagnoses), "causes": causes})],
            )  # fmt: skip
        return DiagnoseOutput(diagnosed=len(diagnoses), cost_usd=cost)

    # -- proposals -------------------------------------------------------------------

    @activity.defn(name="propose_candidates")
    async def propose_candidates(self, input: ProposeInput) -> ProposeOutput:
        """Write up to K candidate versions; store the valid ones, record the rejected."""
        async with self._pool.connection() as conn:
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            existing = await evolutions.list_candidates(conn, input.evolution_id)
            held = await _pending_tools(conn, input.evolution_id)
            if existing or held:
                kept = [c for c in existing if c.rejected is None]
                return ProposeOutput(
                    versions=[c.version for c in kept],
                    rejected=len(existing) - len(kept),
                    needs_approval=[c.version for c in kept if asks_for_approval(c.rationale)],
                    pending_tools=held,
                )
            incumbent = await agents.get_version(
                conn, input.tenant_id, record.agent_name, record.incumbent_version
            )
            evidence = await _Evidence.load(conn, record)
            failures = await _failures(conn, record, evidence)
            lessons = await _reflexions(conn, record, evidence)
            examples = await _examples(conn, record, evidence)
            protected = _protected(evidence.cases)
            gap = _gap(record, failures)
            own_tools = await self._sub_agent_tools(conn, record)
            gap_tools = await self._gap_tools(conn, record, incumbent.spec.tools, failures)
            failing = _failing_tools(
                await tool_store.tool_stats(conn, input.tenant_id, incumbent.spec.tools)
            )
            front = frontier.frontier(
                frontier.Scored(r.version, r.case_id, r.score)
                for r in await evolutions.agent_results(conn, input.tenant_id, record.agent_name)
            )
            chain = frontier.parents(front, incumbent.version, record.settings.candidates)
            bases = {incumbent.version: incumbent.spec}
            for v in set(chain) - {incumbent.version}:
                bases[v] = (
                    await agents.get_version(conn, input.tenant_id, record.agent_name, v)
                ).spec
        models = [incumbent.spec.model, *incumbent.spec.fallback_models]
        kinds = record.settings.kinds
        drafts: list[_Draft] = []
        cost = 0.0
        for i in range(record.settings.candidates):
            kind, parent = kinds[i % len(kinds)], bases[chain[i]]
            lineage = "" if chain[i] == incumbent.version else f" (from frontier v{chain[i]})"
            if kind == "few_shot":
                chosen = examples[i // len(kinds) :] + examples[: i // len(kinds)]
                instructions = proposals.with_examples(parent.instructions, chosen)
                why = f"few-shot demonstrations from {min(len(chosen), 3)} solved train case(s)"
                drafts.append(_Draft(kind, instructions, parent.tools, why + lineage, chain[i]))
            elif kind in ("code_tool", "sub_agent"):
                grown, spent = await (
                    self._grow_tool(parent, gap, record, models, i)
                    if kind == "code_tool"
                    else self._grow_sub_agent(parent, gap, record, models, i, own_tools)
                )
                cost += spent
                drafts.append(replace(grown, rationale=grown.rationale + lineage, parent=chain[i]))
            elif kind in ("tools", "model"):
                draft = (
                    _tools_draft(parent.instructions, parent.tools, gap_tools, failing)
                    if kind == "tools"
                    else _model_draft(parent, record.settings.model_tiers, i)
                )
                drafts.append(replace(draft, rationale=draft.rationale + lineage, parent=chain[i]))
            else:
                (instructions, why), spent = await self._write(
                    kind, parent.instructions, failures, record, models, i, lessons
                )
                cost += spent
                drafts.append(_Draft(kind, instructions, parent.tools, why + lineage, chain[i]))
        versions: list[int] = []
        needs_approval: list[int] = []
        rejected = pending = 0
        seen: dict[tuple[str, tuple[str, ...], str | None], int] = {}
        async with self._pool.connection() as conn, conn.transaction():
            for index, draft in enumerate(drafts):
                reason = draft.refused
                if reason is None and draft.instructions != incumbent.spec.instructions:
                    reason = proposals.check_candidate(
                        incumbent.spec.instructions, draft.instructions,
                        max_chars=record.settings.max_instruction_chars, protected=protected,
                    )  # fmt: skip
                key = (draft.instructions, tuple(draft.tools), draft.model)
                if reason is None and key in seen:
                    reason = f"the same as candidate v{seen[key]}"
                diff = _diff(incumbent.spec.instructions, incumbent.spec.tools, draft)
                if reason is None and draft.tool is not None:
                    reason = await self._hold_tool(conn, record, index, draft, incumbent.version)
                    if reason is None:
                        pending += 1  # a candidate once its tests pass (test_generated_tools)
                        continue
                if reason is None and draft.sub_agent is not None:
                    reason = await _create_sub_agent(
                        conn,
                        record,
                        bases[draft.parent or incumbent.version],
                        draft.sub_agent,
                        gap,
                        evidence,
                    )
                if reason is not None:
                    rejected += 1
                    await evolutions.add_candidate(
                        conn, input.tenant_id, input.evolution_id, version=-(index + 1),
                        kind=draft.kind, rationale=draft.rationale, diff=diff, rejected=reason,
                    )  # fmt: skip
                    event = RunEvent(key=f"rejected-{index}", type="candidate.rejected",
                                     data={"kind": draft.kind, "reason": reason})  # fmt: skip
                else:
                    spec = incumbent.spec.model_copy(
                        update={
                            "instructions": draft.instructions,
                            "tools": draft.tools,
                            "model": draft.model or incumbent.spec.model,
                        }
                    )
                    version = await agents.add_candidate(
                        conn, input.tenant_id, record.agent_name, spec,
                        parent=draft.parent or incumbent.version,
                        evolution_id=input.evolution_id, rationale=draft.rationale,
                    )  # fmt: skip
                    seen[key] = version.version
                    versions.append(version.version)
                    if asks_for_approval(draft.rationale):
                        needs_approval.append(version.version)
                    await evolutions.add_candidate(
                        conn, input.tenant_id, input.evolution_id, version=version.version,
                        kind=draft.kind, rationale=draft.rationale, diff=diff,
                    )  # fmt: skip
                    event = RunEvent(key=f"proposed-{index}", type="candidate.proposed",
                                     data={"version": version.version, "kind": draft.kind,
                                           "rationale": draft.rationale})  # fmt: skip
                await evolutions.append_events(conn, input.tenant_id, input.evolution_id, [event])
        return ProposeOutput(
            versions=versions, rejected=rejected, cost_usd=cost, needs_approval=needs_approval,
            pending_tools=pending,
        )  # fmt: skip

    async def _gap_tools(
        self,
        conn: runs.Conn,
        record: EvolutionRecord,
        current: Sequence[str],
        failures: Sequence[_Failure],
    ) -> list[_GapTool]:
        """Registered and built-in tools the agent lacks that its failed requests call for.

        A tool qualifies when the embedding model finds one of its texts (name and
        description, example requests) as close to a failed request as the local tool
        protocol requires before it calls a tool (`json_protocol.CALL_AT`); the closest
        `MAX_GAP_TOOLS` are taken, with their live stats as evidence.
        """
        if self._catalog is None or not failures:
            return []
        names = [
            n for n in await self._catalog.available(conn, record.tenant_id)
            if n not in current and n not in WORKFLOW_TOOLS
            and not n.startswith(WORKFLOW_TOOL_PREFIXES)
        ]  # fmt: skip
        entries = await self._catalog.entries(conn, record.tenant_id, names)
        stats = await tool_store.tool_stats(conn, record.tenant_id, list(entries))
        texts = [json_protocol.tool_texts(entry.schema) for entry in entries.values()]
        best = [-1.0] * len(texts)
        for failure in failures:
            found = await asyncio.to_thread(tool_ranking.best_scores, failure.objective, texts)
            if found is None:
                return []  # no embedding model here: no evidence either way
            best = [max(a, b) for a, b in zip(best, found, strict=True)]
        ranked = sorted(zip(entries.values(), best, strict=True), key=lambda p: -p[1])
        return [
            _GapTool(entry.name, score, entry.side_effects, stats.get(entry.name))
            for entry, score in ranked[:MAX_GAP_TOOLS]
            if score >= json_protocol.CALL_AT
        ]

    # -- growth (core/evolution/growth.py) ------------------------------------------

    async def _grow_tool(
        self,
        parent: AgentSpec,
        gap: Sequence[_Failure],
        record: EvolutionRecord,
        models: list[str],
        index: int,
    ) -> tuple[_Draft, float]:
        """A model-written code tool for the failures diagnosed as a missing capability.

        The parent with the tool among its tools; refused when no failure is diagnosed so,
        or when the model's tool does not validate (`GeneratedTool`: reject, never repair).
        """
        if not gap:
            return _Draft(
                "code_tool", parent.instructions, parent.tools, _NO_GAP, refused=_NO_GAP
            ), 0.0
        answer, cost = await self._ask(
            record, models, CODE_TOOL_PROMPT, _gap_text(parent, gap, record), _CODE_TOOL_SCHEMA,
            max_tokens=3000, temperature=0.0 if index == 0 else 0.7,
        )  # fmt: skip
        try:
            tool = GeneratedTool.model_validate(answer)
        except ValidationError as exc:
            why = f"the model's tool is invalid: {_first_error(exc)}"
            return _Draft("code_tool", parent.instructions, parent.tools, why, refused=why), cost
        if tool.name in parent.tools:
            why = f"the agent already has a tool named {tool.name!r}"
            return _Draft("code_tool", parent.instructions, parent.tools, why, refused=why), cost
        rationale = f"a new code tool {tool.name}: {tool.rationale or tool.description}"
        if tool.needs_network:
            rationale += f"; it {_NETWORK_NOTE}: a human must approve its promotion"
        return (
            _Draft(
                "code_tool", parent.instructions, [*parent.tools, tool.name], rationale, tool=tool
            ),
            cost,
        )

    async def _grow_sub_agent(
        self,
        parent: AgentSpec,
        gap: Sequence[_Failure],
        record: EvolutionRecord,
        models: list[str],
        index: int,
        own_tools: Sequence[str],
    ) -> tuple[_Draft, float]:
        """A model-written sub-agent for the failures diagnosed as a missing capability.

        The parent with `agent:<parent>-<slug>` among its tools (the agent itself is
        created when the candidate is stored). Refused when no failure is diagnosed so,
        or the model's agent does not validate or names tools the tenant lacks.
        """

        def refuse(why: str) -> _Draft:
            return _Draft("sub_agent", parent.instructions, parent.tools, why, refused=why)

        if not gap:
            return refuse(_NO_GAP), 0.0
        tools = "\n".join(f"- {t}" for t in own_tools) or "(none)"
        answer, cost = await self._ask(
            record, models, SUB_AGENT_PROMPT,
            f"{_gap_text(parent, gap, record)}\n\nTools you may give it:\n{tools}",
            _SUB_AGENT_SCHEMA, max_tokens=2000, temperature=0.0 if index == 0 else 0.7,
        )  # fmt: skip
        try:
            sub = SubAgentDraft.model_validate(answer)
        except ValidationError as exc:
            return refuse(f"the model's sub-agent is invalid: {_first_error(exc)}"), cost
        if unknown := [t for t in sub.tools if t not in own_tools]:
            return refuse(f"the sub-agent's tools {unknown} are not tools it may have"), cost
        name = growth.sub_agent_name(record.agent_name, sub.slug)
        tool = AGENT_TOOL_PREFIX + name
        if len(name) > 128:
            return refuse(f"the sub-agent's name {name!r} is too long"), cost
        if tool in parent.tools:
            return refuse(f"the agent already calls {tool!r}"), cost
        rationale = (
            f"a sub-agent {name} for what the agent lacks: {sub.rationale or 'no rationale'}"
        )
        return (
            _Draft(
                "sub_agent", parent.instructions, [*parent.tools, tool], rationale, sub_agent=sub
            ),
            cost,
        )

    async def _sub_agent_tools(self, conn: runs.Conn, record: EvolutionRecord) -> list[str]:
        """Tools a sub-agent may be given: the tenant's; agents, recipes and drafts excepted."""
        if self._catalog is None or "sub_agent" not in record.settings.kinds:
            return []
        return [
            n for n in await self._catalog.available(conn, record.tenant_id)
            if not n.startswith(WORKFLOW_TOOL_PREFIXES)
        ]  # fmt: skip

    async def _hold_tool(
        self, conn: runs.Conn, record: EvolutionRecord, index: int, draft: _Draft, incumbent: int
    ) -> str | None:
        """Keep a generated tool for its tests on the tools lane; why not, if it cannot be."""
        assert draft.tool is not None
        name = draft.tool.name
        builtins = [] if self._catalog is None else self._catalog.builtin_names()
        held = {t.tool.name for t in await growth.list_tools(conn, record.id)}
        if (
            name in builtins
            or name in held
            or await tool_store.tool_name_taken(conn, record.tenant_id, name)
        ):
            return f"the generated tool's name {name!r} is taken"
        await growth.add_pending_tool(
            conn, record.tenant_id, record.id, slot=index, parent_version=draft.parent or incumbent,
            tool=draft.tool, rationale=draft.rationale,
        )  # fmt: skip
        await evolutions.append_events(
            conn, record.tenant_id, record.id,
            [RunEvent(key=f"tool-written-{index}", type="tool.written",
                      data={"name": name, "tests": len(draft.tool.tests),
                            "needs_network": draft.tool.needs_network})],
        )  # fmt: skip
        return None

    async def _write(
        self,
        kind: CandidateKind,
        instructions: str,
        failures: Sequence[_Failure],
        record: EvolutionRecord,
        models: list[str],
        index: int,
        lessons: Sequence[str] = (),
    ) -> tuple[tuple[str, str], float]:
        """One model-written draft: playbook bullets (an edit) or whole instructions."""
        evidence = "\n\n".join(_failure_text(f) for f in failures) or "(no failures recorded)"
        reflexions = "\n".join(f"- {lesson}" for lesson in lessons) or "(none)"
        diagnoses = "\n".join(
            f"- {d.get('cause') or 'unknown'}: {d.get('explanation', '')}" for d in record.diagnoses
        )
        if kind == "rewrite":
            task = (
                "Rewrite the agent's instructions so that it avoids these failures. Keep every "
                "heading and every {variable}. Reply with one JSON object: "
                '{"instructions": "...", "rationale": "one sentence"}.'
            )
            schema = _REWRITE_SCHEMA
        else:
            task = (
                "Write 1 to 5 short rules to add to the agent's playbook so that it avoids "
                "these failures. Each rule is one general instruction, not an answer to one "
                'request. Reply with one JSON object: {"bullets": ["..."], "rationale": "one sentence"}.'
            )
            schema = _EDIT_SCHEMA
        answer, cost = await self._ask(
            record,
            models,
            "You improve the instructions of an AI agent. " + task,
            f"Instructions:\n{instructions}\n\nFailures:\n{evidence}\n\n"
            f"Diagnoses:\n{diagnoses or '(none)'}\n\n"
            f"Lessons the agent wrote after its runs:\n{reflexions}",
            schema,
            max_tokens=800,
            temperature=0.0 if index == 0 else 0.7,
        )
        rationale = str(answer.get("rationale", ""))[:1000] or "model-written edit"
        if kind == "rewrite":
            written = answer.get("instructions")
            return (written if isinstance(written, str) else "", rationale), cost
        bullets = answer.get("bullets")
        items = [b for b in bullets if isinstance(b, str)] if isinstance(bullets, list) else []
        return (proposals.add_playbook_bullets(instructions, items), rationale), cost


# -- evidence ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Evidence:
    """What the diagnosis and the proposer read, loaded once.

    The agent's cases, this cycle's results, and when the previous cycle started.
    """

    cases: list[EvalCase]
    results: list[ResultRecord]
    since: datetime | None

    @classmethod
    async def load(cls, conn: runs.Conn, record: EvolutionRecord) -> "_Evidence":
        return cls(
            await eval_cases.list_cases(conn, record.tenant_id, record.agent_name),
            await evolutions.list_results(conn, record.id),
            await _previous_cycle(conn, record),
        )


async def _failures(
    conn: runs.Conn, record: EvolutionRecord, evidence: _Evidence
) -> list[_Failure]:
    """The incumbent's failed train evaluations and live failures the proposer may see."""
    out: list[_Failure] = []
    cases = {c.id: c for c in evidence.cases}
    for result in evidence.results:
        case = cases.get(result.case_id)
        if result.version != record.incumbent_version or result.split != "train" or case is None:
            continue
        if result.passed:
            continue
        answer = None
        if result.run_id is not None:
            answer = (await runs.get_run(conn, record.tenant_id, result.run_id)).result
        out.append(
            _Failure(
                f"case:{case.id}", case.spec.objective, answer, result.detail, case.spec.expected
            )
        )
    hidden = _hidden_runs(evidence.cases)
    since = evidence.since
    cur = await conn.execute(
        "SELECT r.id, r.objective, r.result, r.reason, r.outcome, f.rating, f.comment, f.expected"
        " FROM runs r LEFT JOIN run_feedback f ON f.run_id = r.id"
        " WHERE r.tenant_id = %s AND r.agent_name = %s AND r.mode = 'normal'"
        " AND (r.outcome = ANY(%s) OR f.rating <= %s)"
        " AND (%s::timestamptz IS NULL OR r.created_at > %s OR f.updated_at > %s)"
        " ORDER BY r.created_at DESC LIMIT %s",
        (
            record.tenant_id,
            record.agent_name,
            list(FAILING_OUTCOMES),
            LOW_RATING,
            since,
            since,
            since,
            MAX_FAILURES * 2,
        ),
    )
    for row in await cur.fetchall():
        if row["id"] in hidden:
            continue  # the source of a validation or holdout case: never shown
        problem = (
            f"rated {row['rating']}/5: {row['comment'] or 'no comment'}"
            if row["rating"] is not None
            else f"the run ended {row['outcome']}: {row['reason'] or ''}"
        )
        out.append(
            _Failure(f"run:{row['id']}", row["objective"], row["result"], problem, row["expected"])
        )
    return out[:MAX_FAILURES]


def _hidden_runs(cases: Iterable[EvalCase]) -> set[str]:
    """Live runs the proposer must not see: the sources of validation and holdout cases."""
    return {c.source_run_id for c in cases if c.split != "train" and c.source_run_id}


async def _previous_cycle(conn: runs.Conn, record: EvolutionRecord) -> datetime | None:
    """When the agent's previous cycle started: evidence is what came since (None: all)."""
    cur = await conn.execute(
        "SELECT max(created_at) AS at FROM evolutions WHERE tenant_id = %s AND agent_name = %s"
        " AND id <> %s AND created_at < %s",
        (record.tenant_id, record.agent_name, record.id, record.created_at),
    )
    row = await cur.fetchone()
    return None if row is None else row["at"]


async def _reflexions(conn: runs.Conn, record: EvolutionRecord, evidence: _Evidence) -> list[str]:
    """Lessons written since the previous cycle (reflexions).

    The agent's own and, when the tenant's sharing mode is `shared`, the `shared` ones of
    the tenant's other agents. Those of the runs behind validation and holdout cases are
    left out.
    """
    hidden = _hidden_runs(evidence.cases)
    since = evidence.since
    shared = await tenants.get_sharing(conn, record.tenant_id) == "shared"
    cur = await conn.execute(
        "SELECT content, source_run_id FROM memories WHERE tenant_id = %s"
        " AND (agent_name = %s OR (%s AND scope = 'shared'))"
        " AND kind = 'reflexion' AND NOT retired"
        " AND (%s::timestamptz IS NULL OR created_at > %s)"
        " ORDER BY created_at DESC LIMIT %s",
        (record.tenant_id, record.agent_name, shared, since, since, MAX_REFLEXIONS * 2),
    )
    lessons = [
        " ".join(str(row["content"]).split())[:500]
        for row in await cur.fetchall()
        if row["source_run_id"] not in hidden
    ]
    return lessons[:MAX_REFLEXIONS]


async def _examples(
    conn: runs.Conn, record: EvolutionRecord, evidence: _Evidence
) -> list[tuple[str, str]]:
    """Solved train cases as (request, answer).

    The incumbent's passing train evaluations first, then train cases whose expected
    answer is known.
    """
    cases = {c.id: c for c in evidence.cases if c.split == "train"}
    out: list[tuple[str, str]] = []
    for result in evidence.results:
        case = cases.get(result.case_id)
        if case is None or result.version != record.incumbent_version or not result.passed:
            continue
        if result.run_id is not None:
            answer = (await runs.get_run(conn, record.tenant_id, result.run_id)).result
            if answer:
                out.append((case.spec.objective, answer))
    solved = {objective for objective, _ in out}
    out += [
        (c.spec.objective, c.spec.expected)
        for c in cases.values()
        if c.spec.expected and c.spec.objective not in solved
    ]
    return out


def _protected(cases: Iterable[EvalCase]) -> list[str]:
    """What validation and holdout cases hold that no candidate may copy.

    Their objectives and expected answers, and the texts their checks look for when they
    are phrases: a single word a check looks for ("DONE", "meters") is a criterion a
    playbook rule may name, not an answer.
    """
    texts: list[str] = []
    for case in (c for c in cases if c.split != "train"):
        texts.append(case.spec.objective)
        if case.spec.expected:
            texts.append(case.spec.expected)
        texts += [
            c.value
            for c in case.spec.checks
            if isinstance(c.value, str) and len(c.value.split()) > 1
        ]
    return texts


def _failure_text(failure: _Failure) -> str:
    lines = [
        f"Request: {failure.objective[:1000]}",
        f"Answer: {(failure.answer or '(none)')[:1000]}",
    ]
    lines.append(f"Problem: {failure.problem[:500]}")
    if failure.expected:
        lines.append(f"Expected: {failure.expected[:500]}")
    return "\n".join(lines)


# -- growth --------------------------------------------------------------------------


def _gap(record: EvolutionRecord, failures: Sequence[_Failure]) -> list[_Failure]:
    """The failures this cycle's diagnosis put down to a missing capability."""
    sources = {d.get("source") for d in record.diagnoses if d.get("cause") == "missing_capability"}
    return [f for f in failures if f.source in sources]


def _gap_text(parent: AgentSpec, gap: Sequence[_Failure], record: EvolutionRecord) -> str:
    explanations = "\n".join(
        f"- {d.get('explanation', '')}"
        for d in record.diagnoses
        if d.get("cause") == "missing_capability"
    )
    return (
        f"The agent's instructions:\n{parent.instructions[:4000]}\n\n"
        f"Its tools: {', '.join(parent.tools) or '(none)'}\n\n"
        "Failures diagnosed as a missing capability:\n"
        + "\n\n".join(_failure_text(f) for f in gap)
        + f"\n\nDiagnoses:\n{explanations}"
    )


def _first_error(exc: ValidationError) -> str:
    """The first validation error, without the rejected input (it may be long)."""
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "the answer"
    return f"{where}: {error['msg']}"[:300]


async def _pending_tools(conn: runs.Conn, evolution_id: str) -> int:
    """How many of the cycle's generated tools wait for their tests."""
    return sum(t.status == "pending" for t in await growth.list_tools(conn, evolution_id))


async def _create_sub_agent(
    conn: runs.Conn,
    record: EvolutionRecord,
    parent: AgentSpec,
    sub: SubAgentDraft,
    gap: Sequence[_Failure],
    evidence: _Evidence,
) -> str | None:
    """Create (or add a version to) the sub-agent, owned by the parent, with its cases.

    Its cases are copies of the failing train cases that exposed the gap (their own ids,
    so their own splits); a case whose objective the sub-agent has already is not copied
    again. Returns why it cannot be created (the name belongs to another agent), or None.
    """
    name = growth.sub_agent_name(record.agent_name, sub.slug)
    spec = AgentSpec(
        instructions=sub.instructions, model=parent.model, fallback_models=parent.fallback_models,
        tools=sub.tools, limits=AgentLimits(max_steps=sub.max_steps),
        guardrails=parent.guardrails,  # a sub-agent is held to its parent's guardrails
    )  # fmt: skip
    try:
        await agents.create_owned(conn, record.tenant_id, name, spec, owner=record.agent_name)
    except Conflict as exc:
        return f"the sub-agent cannot be created: {exc}"
    have = {c.spec.objective for c in await eval_cases.list_cases(conn, record.tenant_id, name)}
    cases = {c.id: c for c in evidence.cases}
    for failure in gap:
        case = cases.get(failure.source.removeprefix("case:"))
        if case is None or case.spec.objective in have:
            continue  # a live run (no checks to copy), or copied by an earlier cycle
        copied = case.spec.model_copy(update={"guard": False})
        await eval_cases.add_case(conn, record.tenant_id, name, copied)
        have.add(case.spec.objective)
    return None
