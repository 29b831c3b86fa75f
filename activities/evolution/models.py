"""Evolution's model work on the llm lane.

It scores evaluation runs, diagnoses failures and proposes candidate versions.

What the proposer sees is the train split only: the incumbent's train evaluations and the
feedback and failures of live runs that are not the source of a validation or holdout
case. Validation and holdout cases never reach its prompt, and a candidate whose added
text copies their objectives or answers is rejected (`core.evolution.proposals`).

Every activity stores its output before returning and finds it again on a retry, so a
finished step is not redone (a retry of an unfinished one may call the model again).
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from temporalio import activity

from activities.providers.client import ModelClient
from activities.runs.llm import complete_any
from core.db import Pool
from core.evolution import cases as eval_cases
from core.evolution import proposals
from core.evolution import store as evolutions
from core.evolution.cases import EvalCase
from core.evolution.checks import ToolCallMade, run_checks
from core.evolution.payloads import (
    CandidateKind,
    DiagnoseInput,
    DiagnoseOutput,
    FailureCause,
    ProposeInput,
    ProposeOutput,
    ScoreInput,
    ScoreOutput,
)
from core.evolution.store import EvolutionRecord
from core.payloads import ChatMessage, ModelRequest, RunEvent
from core.runs import agents
from core.runs import store as runs
from core.runs.store import RunRecord
from core.settings import Settings

JUDGE_PROMPT: Final = (
    "You grade an AI agent's answer to a request against a rubric. Read the request, the "
    "rubric and the answer, then reply with one JSON object: "
    '{"score": N, "reason": "one sentence"} where N is 1 (fails the rubric) to 5 (fully '
    "meets it). Judge only what the rubric asks; ignore style unless it asks for style."
)
JUDGE_PROMPT_ID: Final = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()[:12]
"""Recorded with every judged decision: which judge prompt scored it."""

_JUDGE_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
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

    def __init__(self, settings: Settings, pool: Pool, models: ModelClient) -> None:
        self._settings = settings
        self._pool = pool
        self._models = models

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
            calls = [] if run is None else await _tool_calls(conn, run.id)
            latency = input.latency_s
            if run is not None and input.failure is None:
                latency = await _working_s(conn, run.id)
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
        models = await self._judge_models(record)
        request = ModelRequest(
            model=models[0],
            messages=[
                ChatMessage(role="system", content=JUDGE_PROMPT),
                ChatMessage(
                    role="user",
                    content=f"Request:\n{case.spec.objective}\n\nRubric:\n{case.spec.rubric}\n\n"
                    f"Answer:\n{run.result[:8000]}",
                ),
            ],
            temperature=0.0,
            max_tokens=200,
            json_schema=_JUDGE_SCHEMA,
        )
        result = await complete_any(self._models, models, request)
        grade = _json_object(result.message.content)
        value = grade.get("score")
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
            return None, False, "the judge gave no valid grade", result.cost_usd or 0.0
        reason = str(grade.get("reason", ""))[:500]
        return (value - 1) / 4, value >= 4, f"judge {value}/5: {reason}", result.cost_usd or 0.0

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

    # -- diagnosis -------------------------------------------------------------------

    @activity.defn(name="diagnose_failures")
    async def diagnose_failures(self, input: DiagnoseInput) -> DiagnoseOutput:
        """Attribute each recent failure of the incumbent to a cause (one model call each)."""
        async with self._pool.connection() as conn:
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            if record.diagnoses:
                return DiagnoseOutput(diagnosed=len(record.diagnoses))
            failures = await _failures(conn, record)
        models = await self._agent_models(record)
        diagnoses: list[dict[str, Any]] = []
        cost = 0.0
        for failure in failures:
            request = ModelRequest(
                model=models[0],
                messages=[
                    ChatMessage(
                        role="system",
                        content="You find why an AI agent failed a task. Causes: "
                        + ", ".join(_CAUSES)
                        + '. Reply with one JSON object: {"cause": "...", "explanation": "one sentence"}.',
                    ),
                    ChatMessage(role="user", content=_failure_text(failure)),
                ],
                temperature=0.0,
                max_tokens=200,
                json_schema=_DIAGNOSE_SCHEMA,
            )
            result = await complete_any(self._models, models, request)
            cost += result.cost_usd or 0.0
            answer = _json_object(result.message.content)
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
            if existing:
                kept = [c.version for c in existing if c.rejected is None]
                return ProposeOutput(versions=kept, rejected=len(existing) - len(kept))
            incumbent = await agents.get_version(
                conn, input.tenant_id, record.agent_name, record.incumbent_version
            )
            failures = await _failures(conn, record)
            examples = await _examples(conn, record)
            protected = await _protected(conn, record)
        models = [incumbent.spec.model, *incumbent.spec.fallback_models]
        kinds = record.settings.kinds
        drafts: list[tuple[CandidateKind, str, str]] = []  # kind, instructions, rationale
        cost = 0.0
        for i in range(record.settings.candidates):
            kind = kinds[i % len(kinds)]
            if kind == "few_shot":
                chosen = examples[i // len(kinds) :] + examples[: i // len(kinds)]
                instructions = proposals.with_examples(incumbent.spec.instructions, chosen)
                why = f"few-shot demonstrations from {min(len(chosen), 3)} solved train case(s)"
                drafts.append((kind, instructions, why))
                continue
            draft, spent = await self._write(
                kind, incumbent.spec.instructions, failures, record, models, i
            )
            cost += spent
            drafts.append((kind, *draft))
        versions: list[int] = []
        rejected = 0
        seen: dict[str, int] = {}
        async with self._pool.connection() as conn, conn.transaction():
            for index, (kind, instructions, rationale) in enumerate(drafts):
                reason = proposals.check_candidate(
                    incumbent.spec.instructions, instructions,
                    max_chars=record.settings.max_instruction_chars, protected=protected,
                )  # fmt: skip
                if reason is None and instructions in seen:
                    reason = f"the same as candidate v{seen[instructions]}"
                diff = proposals.instruction_diff(incumbent.spec.instructions, instructions)
                if reason is not None:
                    rejected += 1
                    await evolutions.add_candidate(
                        conn, input.tenant_id, input.evolution_id, version=-(index + 1),
                        kind=kind, rationale=rationale, diff=diff, rejected=reason,
                    )  # fmt: skip
                    event = RunEvent(key=f"rejected-{index}", type="candidate.rejected",
                                     data={"kind": kind, "reason": reason})  # fmt: skip
                else:
                    spec = incumbent.spec.model_copy(update={"instructions": instructions})
                    version = await agents.add_candidate(
                        conn, input.tenant_id, record.agent_name, spec,
                        parent=incumbent.version, evolution_id=input.evolution_id,
                        rationale=rationale,
                    )  # fmt: skip
                    seen[instructions] = version.version
                    versions.append(version.version)
                    await evolutions.add_candidate(
                        conn, input.tenant_id, input.evolution_id, version=version.version,
                        kind=kind, rationale=rationale, diff=diff,
                    )  # fmt: skip
                    event = RunEvent(key=f"proposed-{index}", type="candidate.proposed",
                                     data={"version": version.version, "kind": kind,
                                           "rationale": rationale})  # fmt: skip
                await evolutions.append_events(conn, input.tenant_id, input.evolution_id, [event])
        return ProposeOutput(versions=versions, rejected=rejected, cost_usd=cost)

    async def _write(
        self,
        kind: CandidateKind,
        instructions: str,
        failures: Sequence[_Failure],
        record: EvolutionRecord,
        models: list[str],
        index: int,
    ) -> tuple[tuple[str, str], float]:
        """One model-written draft: playbook bullets (an edit) or whole instructions."""
        evidence = "\n\n".join(_failure_text(f) for f in failures) or "(no failures recorded)"
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
        request = ModelRequest(
            model=models[0],
            messages=[
                ChatMessage(
                    role="system", content="You improve the instructions of an AI agent. " + task
                ),
                ChatMessage(
                    role="user",
                    content=f"Instructions:\n{instructions}\n\nFailures:\n{evidence}\n\n"
                    f"Diagnoses:\n{diagnoses or '(none)'}",
                ),
            ],
            temperature=0.0 if index == 0 else 0.7,
            max_tokens=800,
            json_schema=schema,
        )
        result = await complete_any(self._models, models, request)
        answer = _json_object(result.message.content)
        rationale = str(answer.get("rationale", ""))[:1000] or "model-written edit"
        if kind == "rewrite":
            written = answer.get("instructions")
            return (written if isinstance(written, str) else "", rationale), result.cost_usd or 0.0
        bullets = answer.get("bullets")
        items = [b for b in bullets if isinstance(b, str)] if isinstance(bullets, list) else []
        return (
            proposals.add_playbook_bullets(instructions, items),
            rationale,
        ), result.cost_usd or 0.0


# -- evidence ------------------------------------------------------------------------


async def _tool_calls(conn: runs.Conn, run_id: str) -> list[ToolCallMade]:
    calls = []
    for message in await runs.load_messages(conn, run_id, 1_000_000):
        for call in message.tool_calls:
            try:
                arguments = json.loads(call.arguments or "{}")
            except ValueError:
                arguments = {}
            calls.append(ToolCallMade(call.name, arguments if isinstance(arguments, dict) else {}))
    return calls


async def _working_s(conn: runs.Conn, run_id: str) -> float:
    """Seconds a run spent in its model calls (the ledger) and tool calls (their events)."""
    cur = await conn.execute(
        "SELECT (SELECT coalesce(sum(latency_ms), 0) FROM llm_calls WHERE run_id = %(run)s)"
        " + (SELECT coalesce(sum((data->>'duration_ms')::float8), 0) FROM run_events"
        "    WHERE run_id = %(run)s AND type = 'tool.result') AS ms",
        {"run": run_id},
    )
    row = await cur.fetchone()
    return float(row["ms"] if row else 0.0) / 1000


async def _failures(conn: runs.Conn, record: EvolutionRecord) -> list[_Failure]:
    """The incumbent's failed train evaluations and live failures the proposer may see."""
    out: list[_Failure] = []
    cases = {
        c.id: c for c in await eval_cases.list_cases(conn, record.tenant_id, record.agent_name)
    }
    for result in await evolutions.list_results(conn, record.id):
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
    hidden = {c.source_run_id for c in cases.values() if c.split != "train" and c.source_run_id}
    cur = await conn.execute(
        "SELECT r.id, r.objective, r.result, r.reason, r.outcome, f.rating, f.comment, f.expected"
        " FROM runs r LEFT JOIN run_feedback f ON f.run_id = r.id"
        " WHERE r.tenant_id = %s AND r.agent_name = %s AND r.mode = 'normal'"
        " AND (r.outcome IN ('failed', 'limit_reached') OR f.rating <= 2)"
        " ORDER BY r.created_at DESC LIMIT %s",
        (record.tenant_id, record.agent_name, MAX_FAILURES * 2),
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


async def _examples(conn: runs.Conn, record: EvolutionRecord) -> list[tuple[str, str]]:
    """Solved train cases as (request, answer).

    The incumbent's passing train evaluations first, then train cases whose expected
    answer is known.
    """
    cases = {
        c.id: c
        for c in await eval_cases.list_cases(conn, record.tenant_id, record.agent_name, ("train",))
    }
    out: list[tuple[str, str]] = []
    for result in await evolutions.list_results(conn, record.id):
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


async def _protected(conn: runs.Conn, record: EvolutionRecord) -> list[str]:
    """What validation and holdout cases hold that no candidate may copy.

    Their objectives and expected answers, and the texts their checks look for when they
    are phrases: a single word a check looks for ("DONE", "meters") is a criterion a
    playbook rule may name, not an answer.
    """
    texts: list[str] = []
    for case in await eval_cases.list_cases(
        conn, record.tenant_id, record.agent_name, ("validation", "holdout")
    ):
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


def _json_object(content: str | None) -> dict[str, Any]:
    """The first JSON object in a model's answer ({} when there is none)."""
    text = content or ""
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else {}
    return {}
