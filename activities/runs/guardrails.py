"""Enforcing an agent's guardrails in `call_llm` (core/runs/guardrails.py decides).

Before a model call, the messages the model has not read yet (those after the last
assistant message: the objective, a user's new message, tool results) are checked at
stage `input` or `tool_output`; the final answer (an assistant message without tool
calls) is checked at stage `output` before it is stored. A mask rewrites the stored
text. A blocked text is replaced by a notice where it is stored (it reaches no model,
memory or reader); a blocked input or answer then fails the call for good
(`GuardrailBlocked`: the run ends `failed` and its reason names the guardrail), and the
model reads the notice in place of a blocked tool output. Each trigger is recorded once, however often the activity is retried:
a `guardrail.triggered` run event, a safety log row and `colony_guardrail_triggers_total`.
"""

import logging
from typing import Final

import httpx
from temporalio.exceptions import ApplicationError

from core import metrics
from core.db import Pool
from core.errors import ErrorType
from core.payloads import ChatMessage, RunEvent
from core.runs import guardrails as rails
from core.runs import safety
from core.runs import store as runs
from core.runs.payloads import LlmCallInput
from core.settings import Settings

log = logging.getLogger(__name__)

WITHHELD_ANSWER: Final = "[answer withheld by guardrail "
WITHHELD_INPUT: Final = "[input withheld by guardrail "
WITHHELD_TOOL_OUTPUT: Final = "[tool output withheld by guardrail "
_MODERATION_TIMEOUT_S: Final = 30.0


class Guard:
    """An agent's guardrails applied to one model call's prompt and answer."""

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool

    async def screen_prompt(
        self,
        input: LlmCallInput,
        guardrails: rails.Guardrails,
        history: list[tuple[int, ChatMessage]],
    ) -> list[tuple[int, ChatMessage]]:
        """`history` with the unread user and tool messages checked (masked ones rewritten).

        Raises:
            ApplicationError: `GuardrailBlocked` (non-retryable): a blocked input.
        """
        if not (guardrails.screens("input") or guardrails.screens("tool_output")):
            return history
        read = max((seq for seq, m in history if m.role == "assistant"), default=0)
        screened = []
        for seq, message in history:
            stage: rails.GuardrailStage = "input" if message.role == "user" else "tool_output"
            if seq <= read or message.role not in ("user", "tool") or not message.content:
                screened.append((seq, message))
                continue
            if stage == "input" and message.content.startswith(WITHHELD_INPUT):
                # Blocked by an earlier attempt that died before it could fail.
                raise _blocked_error(message.content.removeprefix(WITHHELD_INPUT)[:-1], "input")
            verdict = await self._check(input, guardrails, stage, message.content, seq)
            blocked = verdict.blocked
            what = "" if blocked is None else f"'{blocked.guardrail}' ({blocked.detail})"
            # Blocked text is kept nowhere: not for the model, memory or readers.
            notice = WITHHELD_INPUT if stage == "input" else WITHHELD_TOOL_OUTPUT
            text = verdict.text if blocked is None else f"{notice}{what}]"
            if text != message.content:
                async with self._pool.connection() as conn:
                    await safety.replace_content(conn, input.run_id, seq, message.content, text)
                message = message.model_copy(update={"content": text})
            if blocked is not None and stage == "input":
                raise _blocked_error(what, "input")
            screened.append((seq, message))
        return screened

    async def screen_answer(
        self, input: LlmCallInput, guardrails: rails.Guardrails, message: ChatMessage
    ) -> ChatMessage:
        """The answer as it may be stored: masked, or a notice when a guardrail blocked it.

        Only final answers (no tool calls) are checked. `raise_if_withheld` then fails the
        call for a blocked one, after the notice and the call's cost are stored.
        """
        if message.tool_calls or not message.content or not guardrails.screens("output"):
            return message
        verdict = await self._check(input, guardrails, "output", message.content, input.write_seq)
        blocked = verdict.blocked
        if blocked is not None:
            text = f"{WITHHELD_ANSWER}'{blocked.guardrail}' ({blocked.detail})]"
            return message.model_copy(update={"content": text})
        return message.model_copy(update={"content": verdict.text})

    async def _check(
        self,
        input: LlmCallInput,
        guardrails: rails.Guardrails,
        stage: rails.GuardrailStage,
        text: str,
        seq: int,
    ) -> rails.Verdict:
        scores = await self._moderate(guardrails, text) if guardrails.moderates(stage) else None
        verdict = rails.check(guardrails, stage, text, scores)
        if verdict.triggers:
            await self._record(input, guardrails, verdict.triggers, text, seq)
        return verdict

    async def _record(
        self,
        input: LlmCallInput,
        guardrails: rails.Guardrails,
        triggers: tuple[rails.Trigger, ...],
        text: str,
        seq: int,
    ) -> None:
        excerpt = rails.excerpt(guardrails, text)
        async with self._pool.connection() as conn:
            for trigger in triggers:
                key = f"{trigger.stage}-{seq}-{trigger.guardrail}"
                new = await safety.record(
                    conn, tenant_id=input.tenant_id, agent_name=input.agent_name,
                    agent_version=input.agent_version, run_id=input.run_id, key=key,
                    guardrail=trigger.guardrail, stage=trigger.stage, action=trigger.action,
                    detail=trigger.detail, excerpt=excerpt,
                )  # fmt: skip
                await runs.append_event(
                    conn, input.tenant_id, input.run_id,
                    RunEvent(key=f"guardrail-{key}", type="guardrail.triggered", data={
                        "guardrail": trigger.guardrail, "stage": trigger.stage,
                        "action": trigger.action, "detail": trigger.detail, "seq": seq,
                        "step": input.step,
                    }),
                )  # fmt: skip
                if new:
                    metrics.GUARDRAIL_TRIGGERS.labels(
                        trigger.guardrail.split(":", 1)[0], trigger.stage, trigger.action
                    ).inc()

    async def _moderate(self, guardrails: rails.Guardrails, text: str) -> dict[str, float]:
        """Moderation scores by category: the configured endpoint's, or the local lexicon's."""
        moderation = guardrails.moderation
        assert moderation is not None
        url = self._settings.moderation_base_url
        if moderation.engine == "local" or (moderation.engine == "auto" and url is None):
            return rails.classify_locally(text)
        if url is None:
            raise ApplicationError(
                "the agent's moderation guardrail asks for the endpoint, and "
                "COLONY_MODERATION_BASE_URL is not set",
                type=ErrorType.INVALID_REQUEST.value,
                non_retryable=True,
            )
        return await self._moderation_endpoint(url, text)

    async def _moderation_endpoint(self, url: str, text: str) -> dict[str, float]:
        key = self._settings.moderation_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        body = {"model": self._settings.moderation_model, "input": text}
        try:
            async with httpx.AsyncClient(timeout=_MODERATION_TIMEOUT_S) as client:
                response = await client.post(
                    url.rstrip("/") + "/moderations", json=body, headers=headers
                )
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"moderation endpoint unreachable: {type(exc).__name__}",
                type=ErrorType.DEPENDENCY_UNAVAILABLE.value,
            ) from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise ApplicationError(
                f"moderation endpoint answered {response.status_code}",
                type=ErrorType.DEPENDENCY_UNAVAILABLE.value,
            )
        if response.status_code >= 400:
            raise ApplicationError(
                f"moderation endpoint answered {response.status_code}",
                type=ErrorType.INVALID_REQUEST.value,
                non_retryable=True,
            )
        try:
            result = response.json()["results"][0]
            scores = result.get("category_scores") or {}
            flags = result.get("categories") or {}
            return {
                name: max(float(scores.get(name, 0.0)), 1.0 if flags.get(name) else 0.0)
                for name in {*scores, *flags}
            }
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ApplicationError(
                "moderation endpoint answered in an unknown shape",
                type=ErrorType.INVALID_REQUEST.value,
                non_retryable=True,
            ) from exc


def raise_if_withheld(message: ChatMessage) -> None:
    """Fail the call for good if `message` is an answer a guardrail withheld.

    Raises:
        ApplicationError: `GuardrailBlocked` (non-retryable).
    """
    content = message.content or ""
    if not message.tool_calls and content.startswith(WITHHELD_ANSWER):
        raise _blocked_error(content.removeprefix(WITHHELD_ANSWER)[:-1], "answer")


def _blocked_error(what: str, stage: str) -> ApplicationError:
    """`what`: the guardrail and what matched, `'topic:weapons' (1 distinct match(es))`."""
    return ApplicationError(
        f"the {stage} was blocked by guardrail {what}",
        type=ErrorType.GUARDRAIL_BLOCKED.value,
        non_retryable=True,
    )
