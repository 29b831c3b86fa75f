"""Prompt context besides the conversation: window budget, summaries, memory, critique.

The conversation window: when a run's messages outgrow the budget (the agent's
`memory.window_tokens`, else 3/4 of the model's input limit), the older messages are
summarized once by a model call and stored (`run_summaries`); prompts then carry the
summary and the messages after it. The full transcript stays in `run_messages`. The cut
never separates a tool result from the call that asked for it.
"""

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from activities.providers import pricing
from core.payloads import ChatMessage
from core.runs import store as runs
from core.runs.payloads import AgentSpec

DEFAULT_INPUT_TOKENS = 8192
"""Input limit assumed for models LiteLLM does not know (the local model's context)."""
CHARS_PER_TOKEN = 3.5  # conservative for English and code; estimates are only a trigger

SUMMARY_PROMPT = (
    "You maintain the memory of an AI agent's long conversation. Summarize the messages "
    "below for the agent's own later use: the user's goals and constraints, decisions "
    "made, tool results that matter (numbers, names, ids), and what is still open. Be "
    "factual and compact; no preamble."
)
REFLECT_PROMPT = (
    "You review an AI agent's finished run to help it do better next time. Reply with one "
    'JSON object and nothing else: {"summary": "<what the run did and how it ended, one '
    'or two sentences>", "lesson": "<one concrete, reusable lesson for similar tasks, or '
    'null>", "reward": <a number from -1 (failed badly) to 1 (succeeded well)>}'
)


@functools.lru_cache(maxsize=256)
def input_limit(model: str) -> int:
    """The model's input token limit from LiteLLM's table (DEFAULT_INPUT_TOKENS if unknown)."""
    info = pricing.model_info(model.removeprefix("local/"))
    limit = info.get("max_input_tokens") or info.get("max_tokens")
    return int(limit) if isinstance(limit, int) and limit > 0 else DEFAULT_INPUT_TOKENS


def window_budget(spec: AgentSpec, model: str) -> int:
    """Tokens the conversation may take in a prompt before older turns are summarized."""
    if spec.memory.window_tokens is not None:
        return spec.memory.window_tokens
    return int(input_limit(model) * 0.75)


def estimate_tokens(messages: Sequence[ChatMessage], tool_cap: int | None = None) -> int:
    """A cheap, conservative token estimate (characters / 3.5, plus per-message overhead).

    `tool_cap`: tool output beyond this many characters is not in prompts, so not counted.
    """
    chars = 0
    for m in messages:
        size = len(m.content or "")
        if tool_cap is not None and m.role == "tool":
            size = min(size, tool_cap + 300)  # + the delimiting note
        chars += size + 16
        chars += sum(len(c.name) + len(c.arguments) + 16 for c in m.tool_calls)
    return int(chars / CHARS_PER_TOKEN)


def cut_point(
    history: Sequence[tuple[int, ChatMessage]], keep_tokens: int, tool_cap: int | None = None
) -> int | None:
    """The last seq to summarize so that what follows fits `keep_tokens`, or None.

    The kept tail starts at a user or assistant message, so no tool result loses the call
    it answers; at least the last message is kept.
    """
    kept = 0
    cut: int | None = None
    for index in range(len(history) - 1, 0, -1):
        message = history[index][1]
        kept += estimate_tokens([message], tool_cap)
        if kept > keep_tokens:
            break
        if message.role != "tool":
            cut = history[index - 1][0]
    if cut is None:
        # Even the last turn alone is over budget: keep from the last non-tool message.
        for index in range(len(history) - 1, 0, -1):
            if history[index][1].role != "tool":
                return history[index - 1][0]
    return cut


def render_for_summary(previous: str | None, messages: Sequence[ChatMessage], limit: int) -> str:
    """The text a summary call reads: the previous summary and the messages, bounded."""
    lines = [f"Summary so far:\n{previous}\n"] if previous else []
    for m in messages:
        if m.role == "tool":
            lines.append(f"[tool {m.name} result] {runs.preview(m.content, 2000)}")
        elif m.tool_calls:
            calls = "; ".join(f"{c.name}({runs.preview(c.arguments, 300)})" for c in m.tool_calls)
            lines.append(f"[assistant] {m.content or ''} [calls: {calls}]")
        else:
            lines.append(f"[{m.role}] {m.content or ''}")
    text = "\n".join(lines)
    # Keep the end (the most recent turns) when it must be cut.
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def with_context(instructions: str, memory: str | None, summary: tuple[int, str] | None) -> str:
    """The system prompt: the agent's instructions, its memory context, the window summary."""
    parts = [instructions]
    if memory:
        parts.append(memory)
    if summary is not None:
        parts.append(
            f"Summary of the earlier conversation (messages 1-{summary[0]}; the rest follows "
            f"in full):\n{summary[1]}"
        )
    return "\n\n".join(parts)


def transcript(run: runs.RunRecord, messages: Sequence[ChatMessage], limit: int = 8000) -> str:
    """A finished run as the critique reads it."""
    head = f"Objective: {run.objective}\nOutcome: {run.outcome}" + (
        f" ({run.reason})" if run.reason else ""
    )
    body = render_for_summary(None, messages, limit)
    return f"{head}\nSteps: {run.steps}\n\nTranscript:\n{body}"


@dataclass(frozen=True)
class Critique:
    """A parsed reflexion."""

    summary: str
    lesson: str | None
    reward: float | None


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_critique(text: str | None, outcome: str | None) -> Critique:
    """The model's critique; when it is not the JSON asked for, what can be salvaged.

    The reward falls back to the outcome (succeeded 0.5, otherwise -0.5).
    """
    fallback_reward = 0.5 if outcome == "succeeded" else -0.5
    data: Any = None
    match = _OBJECT.search(text or "")
    if match:
        try:
            data = json.loads(match.group(0))
        except ValueError:
            data = None
    if not isinstance(data, dict):
        summary = " ".join((text or "").split())[:600]
        return Critique(summary=summary, lesson=None, reward=fallback_reward)
    lesson = data.get("lesson")
    reward = data.get("reward")
    return Critique(
        summary=" ".join(str(data.get("summary") or "").split())[:600],
        lesson=" ".join(lesson.split())[:2000]
        if isinstance(lesson, str) and lesson.strip()
        else None,
        reward=max(-1.0, min(1.0, float(reward)))
        if isinstance(reward, int | float) and not isinstance(reward, bool)
        else fallback_reward,
    )
