"""The queen's model calls, on the LLM lane: plan (and re-plan) a swarm, synthesize its answer.

Every call is stored in `swarm_llm_calls` under a key (`plan-<version>-<attempt>`,
`summary-<subtask>-<attempt>`, `synthesis`) together with its cost; a retried activity
finds its answer there and never calls the model twice for the same thing.
"""

import re
from collections.abc import Sequence
from typing import Any

from temporalio import activity

from activities.providers import json_protocol
from activities.providers.client import ModelClient
from activities.providers.routing import resolve
from activities.runs.llm import check_budget, complete_any
from activities.spend import check_spend
from activities.swarms.blackboard import format_post
from core import metrics
from core.db import Pool
from core.payloads import ChatMessage, ModelRequest, ModelResult, RunEvent
from core.runs import agents
from core.runs import store as runs
from core.settings import Settings
from core.swarms import store as swarm_store
from core.swarms.plan import (
    PlanInput,
    PlannedSubtask,
    PlanOutput,
    SubtaskSpec,
    SwarmMode,
    SynthesizeInput,
    SynthesizeOutput,
    check_plan,
    parse_plan,
    shape,
)
from core.swarms.store import SubtaskRecord, SwarmRecord

MAX_ROLE_DESCRIPTION = 300
MAX_RESULT_IN_PROMPT = 6000
"""Characters of one subtask's result the queen reads; longer results are summarized."""
MAX_RESULTS_IN_PROMPT = 60_000
"""Characters of all results together in the synthesis prompt."""
MAX_EVIDENCE = 2000
_CITATION = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9_-]{0,39})\]")

_SHAPES: dict[SwarmMode, str] = {
    "hierarchical": "Give each subtask the ids of the subtasks whose results it needs in "
    "`depends_on`; independent subtasks run in parallel.",
    "parallel": "Make the subtasks independent of each other (`depends_on` empty): they all "
    "run at once, and you combine their results at the end.",
    "sequential": "List the subtasks in the order they must run: each one receives the "
    "result of the one before it.",
}

SYNTHESIS_PROTOCOL = """Your team has worked on the objective below; their results follow.
Write the final answer to the objective from them. Cite the subtask each statement comes
from by its id in square brackets, e.g. [t1]. Say plainly what the results leave open."""

SUMMARY_PROMPT = """Summarize this result of a subtask for the person who combines the
team's results: keep every fact, number, name and conclusion; drop repetition. At most
300 words."""


class QueenActivities:
    """Activities of a swarm's queen, served by the `llm` lane."""

    def __init__(self, settings: Settings, pool: Pool, models: ModelClient) -> None:
        self._settings = settings
        self._pool = pool
        self._models = models

    @activity.defn(name="plan_swarm")
    async def plan_swarm(self, input: PlanInput) -> PlanOutput:
        """One queen answer for the swarm's plan `plan_version`, validated.

        A valid plan is installed (the subtasks' texts go to Postgres; the workflow gets
        their ids, roles, dependencies and complexity). An invalid one comes back with
        its errors, for the next attempt to correct.
        """
        key = f"plan-{input.plan_version}-{input.attempt}"
        async with self._pool.connection() as conn:
            swarm = await swarm_store.get_swarm(conn, input.tenant_id, input.swarm_id)
            roles = await swarm_store.known_roles(conn, input.tenant_id)
            subtasks = await swarm_store.list_subtasks(conn, input.swarm_id)
            stored = await swarm_store.find_call(conn, input.swarm_id, key)
            request = None
            if stored is None:
                request = await self._plan_request(conn, input, swarm, roles, subtasks)
        if stored is not None:
            answer, model, cost = stored.answer, stored.model, stored.cost_usd
        else:
            assert request is not None
            check_budget(request, input.models[0], input.budget_remaining_usd, self._settings)
            await check_spend(self._pool, self._settings, input.tenant_id, request)
            result = await complete_any(self._models, input.models, request)
            answer, model, cost = result.message.content or "", result.model, result.cost_usd
        completed = {s.id for s in subtasks if s.status == "succeeded"} if input.replan else set()
        specs, errors = parse_plan(answer)
        if not errors:
            errors = check_plan(
                specs,
                roles=roles,
                max_subtasks=swarm.settings.limits.max_subtasks,
                completed=completed,
            )
        plan = [] if errors else shape(specs, swarm.mode)
        if errors:
            event = RunEvent(
                key=f"plan-invalid-{input.plan_version}-{input.attempt}",
                type="plan.invalid",
                data={
                    "plan_version": input.plan_version,
                    "attempt": input.attempt,
                    "errors": errors,
                },
            )
        else:
            event = planned_event(
                input.plan_version, plan, replan=input.replan, failures=input.failures
            )
        async with self._pool.connection() as conn, conn.transaction():
            if stored is None:
                await self._ledger(
                    conn, input.tenant_id, input.swarm_id, key, "plan", result, errors
                )
            if plan:
                await swarm_store.install_plan(
                    conn, input.tenant_id, input.swarm_id, input.plan_version, plan
                )
            await swarm_store.append_events(conn, input.tenant_id, input.swarm_id, [event])
        return PlanOutput(
            subtasks=[
                PlannedSubtask(
                    id=s.id, role=s.role, depends_on=s.depends_on, complexity=s.complexity
                )
                for s in plan
            ],
            errors=errors,
            model=model,
            cost_usd=cost,
        )

    async def _plan_request(
        self,
        conn: runs.Conn,
        input: PlanInput,
        swarm: SwarmRecord,
        roles: dict[str, str],
        subtasks: list[SubtaskRecord],
    ) -> ModelRequest:
        queen = await agents.get_version(
            conn, input.tenant_id, swarm.queen_agent, swarm.queen_version
        )
        limits = swarm.settings.limits
        role_lines = "\n".join(
            f"- {name}: {_one_line(text, MAX_ROLE_DESCRIPTION)}" for name, text in roles.items()
        )
        system = (
            f"{queen.spec.instructions}\n\n"
            "Split the objective into subtasks for a team of agents. Answer with one JSON "
            "object and nothing else:\n"
            '{"subtasks": [{"id": "t1", "description": "what to do, with everything the '
            'agent needs to know", "role": "researcher", "depends_on": [], '
            '"expected_output": "what the result must contain", "complexity": "low"}]}\n'
            f"Rules: at most {limits.max_subtasks} subtasks; ids are short and unique "
            "(letters, digits, '-', '_'); `complexity` is low, medium or high (low runs on "
            f"a cheaper model). {_SHAPES[swarm.mode]} No cycles.\n"
            f"Roles (the agents you can give subtasks to):\n{role_lines}"
        )
        user = f"Objective:\n{swarm.objective}"
        if input.replan:
            user += "\n\n" + await _replan_context(conn, input, subtasks)
        messages = [
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=user),
        ]
        # Earlier answers for this plan version that did not validate, with their errors.
        for attempt in range(1, input.attempt):
            earlier = await swarm_store.find_call(
                conn, input.swarm_id, f"plan-{input.plan_version}-{attempt}"
            )
            if earlier is None or not earlier.errors:
                continue
            messages += [
                ChatMessage(role="assistant", content=earlier.answer[:20_000]),
                ChatMessage(
                    role="user",
                    content="That plan cannot run:\n"
                    + "\n".join(f"- {e}" for e in earlier.errors)
                    + "\nAnswer again with the whole corrected plan, as JSON only.",
                ),
            ]
        return ModelRequest(
            model=input.models[0],
            messages=messages,
            max_tokens=4000,
            temperature=0.0,
            json_schema=plan_schema(list(roles), limits.max_subtasks),
        )

    @activity.defn(name="synthesize_swarm")
    async def synthesize_swarm(self, input: SynthesizeInput) -> SynthesizeOutput:
        """The final answer from the subtasks' results, citing them ([t1]).

        Results longer than `MAX_RESULT_IN_PROMPT` are summarized first (one call each,
        stored like the synthesis).
        """
        async with self._pool.connection() as conn:
            swarm = await swarm_store.get_swarm(conn, input.tenant_id, input.swarm_id)
            stored = await swarm_store.find_call(conn, input.swarm_id, "synthesis")
            subtasks = await swarm_store.list_subtasks(conn, input.swarm_id)
            results = await swarm_store.subtask_results(
                conn, input.swarm_id, [s.id for s in subtasks]
            )
            posts = await swarm_store.read_posts(conn, input.tenant_id, input.swarm_id)
            queen = await agents.get_version(
                conn, input.tenant_id, swarm.queen_agent, swarm.queen_version
            )
        cost: float | None = 0.0
        if stored is not None:
            answer, cost = stored.answer, stored.cost_usd
        else:
            texts: dict[str, str] = {}
            for sid, (record, text) in results.items():
                texts[sid], spent = await self._condensed(input, record, text)
                cost = None if cost is None or spent is None else cost + spent
            share = MAX_RESULTS_IN_PROMPT // max(1, len(texts))
            blocks = [
                f'<subtask_result id="{sid}" role="{results[sid][0].role}">\n'
                f"Task: {_one_line(results[sid][0].description, 500)}\n"
                f"{runs.preview(text, share)}\n</subtask_result>"
                for sid, text in texts.items()
            ]
            board = "\n".join(format_post(p) for p in posts)
            user = f"Objective:\n{swarm.objective}\n\nResults:\n" + "\n\n".join(blocks)
            if board:
                user += f"\n\nThe team's blackboard:\n{board}"
            request = ModelRequest(
                model=input.models[0],
                messages=[
                    ChatMessage(
                        role="system", content=f"{queen.spec.instructions}\n\n{SYNTHESIS_PROTOCOL}"
                    ),
                    ChatMessage(role="user", content=user),
                ],
                max_tokens=queen.spec.max_output_tokens,
                temperature=queen.spec.temperature,
                json_schema=self._grounded(input.models[0], list(texts.values())),
            )
            remaining = input.budget_remaining_usd
            if remaining is not None:
                remaining -= cost or 0.0
            check_budget(request, input.models[0], remaining, self._settings)
            await check_spend(self._pool, self._settings, input.tenant_id, request)
            result = await complete_any(self._models, input.models, request)
            answer = result.message.content or ""
            if request.json_schema is not None:
                answer = json_protocol.answer_text(answer)
            cost = None if cost is None or result.cost_usd is None else cost + result.cost_usd
        cited = [c for c in dict.fromkeys(_CITATION.findall(answer)) if c in results]
        async with self._pool.connection() as conn, conn.transaction():
            if stored is None:
                # The answer as decoded: a retry after a lost completion reuses it as is.
                await self._ledger(
                    conn,
                    input.tenant_id,
                    input.swarm_id,
                    "synthesis",
                    "synthesis",
                    result,
                    answer=answer,
                )
            await swarm_store.set_result(conn, input.swarm_id, answer, cited)
            await swarm_store.append_events(
                conn, input.tenant_id, input.swarm_id,
                [RunEvent(key="synthesized", type="swarm.synthesized", data={
                    "result": runs.preview(answer), "attribution": cited,
                    "subtasks": list(results),
                })],
            )  # fmt: skip
        return SynthesizeOutput(result=runs.preview(answer), attribution=cited, cost_usd=cost)

    def _grounded(self, model: str, results: Sequence[str]) -> dict[str, Any] | None:
        """For a small local model, an answer schema that must quote each short result.

        SmolLM2 left to itself garbles the numbers it combines; the grammar makes it
        quote every subtask's clear result value (json_protocol.salient), in order.
        """
        if resolve(model, self._settings).provider not in json_protocol.PROVIDERS:
            return None
        values = [v for v in map(json_protocol.salient, results) if v is not None]
        return json_protocol.answer_schema(values)

    async def _condensed(
        self, input: SynthesizeInput, record: SubtaskRecord, text: str
    ) -> tuple[str, float | None]:
        """A result short enough for the synthesis prompt, and what shortening it cost."""
        if len(text) <= MAX_RESULT_IN_PROMPT:
            return text, 0.0
        key = f"summary-{record.id}-{record.attempts}"
        async with self._pool.connection() as conn:
            stored = await swarm_store.find_call(conn, input.swarm_id, key)
        if stored is not None:
            return stored.answer, stored.cost_usd
        await check_spend(self._pool, self._settings, input.tenant_id)
        result = await complete_any(
            self._models,
            input.models,
            ModelRequest(
                model=input.models[0],
                messages=[
                    ChatMessage(role="system", content=SUMMARY_PROMPT),
                    ChatMessage(
                        role="user",
                        content=f"Subtask: {record.description}\n\nResult:\n{text[:200_000]}",
                    ),
                ],
                max_tokens=800,
                temperature=0.0,
            ),
        )
        summary = (result.message.content or "").strip() or text[:MAX_RESULT_IN_PROMPT]
        async with self._pool.connection() as conn:
            await self._ledger(
                conn, input.tenant_id, input.swarm_id, key, "summary", result, answer=summary
            )
        return summary, result.cost_usd

    async def _ledger(
        self,
        conn: runs.Conn,
        tenant_id: str,
        swarm_id: str,
        key: str,
        purpose: str,
        result: ModelResult,
        errors: list[str] | None = None,
        answer: str | None = None,
    ) -> None:
        new = await swarm_store.record_call(
            conn, tenant_id=tenant_id, swarm_id=swarm_id, key=key, purpose=purpose,
            model=result.model, provider=resolve(result.model, self._settings).provider,
            usage=result.usage, cost_usd=result.cost_usd, latency_ms=result.latency_ms,
            answer=answer if answer is not None else result.message.content or "",
            errors=errors or [],
        )  # fmt: skip
        # Counted before its transaction commits (queen calls are few; a rolled-back
        # attempt that is retried would count twice).
        metrics.model_call(tenant_id, result, "queen", recorded=new)


async def _replan_context(conn: runs.Conn, input: PlanInput, subtasks: list[SubtaskRecord]) -> str:
    """What a re-plan starts from: what is done, what failed and why, what was left."""
    done = await swarm_store.subtask_results(
        conn, input.swarm_id, [s.id for s in subtasks if s.status == "succeeded"]
    )
    lines = [
        "Part of the work is done. Completed subtasks (depend on them by id; do not plan them again):"
    ]
    lines += [
        f"- {sid} ({record.role}): {_one_line(record.description, 300)}\n"
        f"  Result: {_one_line(text, 1000)}"
        for sid, (record, text) in done.items()
    ] or ["- none"]
    failed = [s for s in subtasks if s.id in input.failures]
    lines.append("These subtasks failed:")
    lines += [
        f"- {s.id} ({s.role}): {_one_line(s.description, 300)}\n"
        f"  Failure: {_one_line(s.reason or 'unknown', MAX_EVIDENCE)}"
        for s in failed
    ]
    left = [s for s in subtasks if s.status in ("pending", "failed") and s.id not in input.failures]
    if left:
        lines.append("Not yet done:")
        lines += [f"- {s.id} ({s.role}): {_one_line(s.description, 300)}" for s in left]
    lines.append(
        "Plan the remaining work as new subtasks that get around the failure (another "
        "approach or role, smaller steps). You may reuse the ids of failed or unfinished "
        "subtasks for their replacements."
    )
    return "\n".join(lines)


def plan_schema(roles: list[str], max_subtasks: int) -> dict[str, Any]:
    """The JSON Schema of a plan (grammar-constrained models are held to it)."""
    return {
        "type": "object",
        "properties": {
            "subtasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_subtasks,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"},
                        "description": {"type": "string"},
                        "role": {"enum": roles},
                        "depends_on": {"type": "array", "items": {"type": "string"}},
                        "expected_output": {"type": "string"},
                        "complexity": {"enum": ["low", "medium", "high"]},
                    },
                    "required": [
                        "id",
                        "description",
                        "role",
                        "depends_on",
                        "expected_output",
                        "complexity",
                    ],
                },
            }
        },
        "required": ["subtasks"],
    }


def planned_event(
    plan_version: int,
    plan: Sequence[SubtaskSpec],
    *,
    replan: bool = False,
    failures: Sequence[str] = (),
) -> RunEvent:
    """The `swarm.planned` (or `swarm.replanned`) event of a plan."""
    return RunEvent(
        key=f"planned-{plan_version}",
        type="swarm.replanned" if replan else "swarm.planned",
        data={
            "plan_version": plan_version,
            "subtasks": [
                {
                    "id": s.id,
                    "role": s.role,
                    "depends_on": s.depends_on,
                    "complexity": s.complexity,
                    "description": runs.preview(s.description, 300),
                }
                for s in plan
            ],
            **({"failures": list(failures)} if replan else {}),
        },
    )


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
