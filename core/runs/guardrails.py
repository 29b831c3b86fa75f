"""Guardrails of an agent: checks on what goes into its runs and what comes out.

An agent spec's `guardrails` holds any of:

    topics        blocked topics: keywords (whole words or phrases, any case) and
                  regular expressions, each topic with its own stages and action
    pii           personal data and secrets, as `core.redact` recognises them
    moderation    a moderation check: the local lexicon classifier below, or an
                  OpenAI-compatible `/v1/moderations` endpoint when one is configured
    output_size   a maximum size of the final answer, in characters

Stages: `input` (the objective and user messages), `output` (the final answer) and
`tool_output` (a tool's result, before the model reads it). Actions: `block` (the run
fails and says which guardrail fired; a blocked tool output is withheld from the model),
`mask` (the matched text is replaced where it is stored and returned) and `flag` (only
recorded). Every trigger is recorded (a `guardrail.triggered` run event, a safety log
row, a metric); activities enforce them (activities/runs/guardrails.py), this module
only decides.

The local classifier is a small keyword lexicon shipped here (`LEXICON`): deterministic,
no model, no network. It catches the blatant phrasing of a few categories and nothing
subtle; a provider's moderation model is the real check.
"""

import functools
import re
import re._parser as re_parser  # the stdlib's own parser, to refuse nested repeats
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from core.redact import mask_sensitive
from core.specs import Spec

GuardrailAction = Literal["block", "mask", "flag"]
GuardrailStage = Literal["input", "output", "tool_output"]

REDACTED: Final = "[REDACTED]"
EXCERPT_CHARS: Final = 200
_NAME: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"

LEXICON: Final[dict[str, tuple[str, ...]]] = {
    "violence": (
        r"kill (?:him|her|them|you|everyone|people)",
        r"murder(?:ing)? (?:him|her|them|someone)",
        r"build (?:a|an) (?:bomb|explosive)",
        r"make (?:a|an) (?:bomb|explosive|pipe bomb)",
        r"mass shooting",
        r"stab (?:him|her|them|someone)",
    ),
    "self_harm": (
        r"kill myself",
        r"end my life",
        r"suicide (?:method|plan)s?",
        r"hurt myself",
        r"self[- ]harm",
    ),
    "hate": (r"(?:all|those) \w+ (?:are|should be) (?:vermin|subhuman|exterminated)",),
    "sexual": (r"explicit sex(?:ual)? (?:content|story|scene)", r"\bporn(?:ography)?\b"),
    "illicit": (
        r"(?:synthesi[sz]e|cook|make) (?:meth|methamphetamine|fentanyl|heroin)",
        r"launder(?:ing)? money",
        r"buy (?:a )?stolen credit cards?",
    ),
    "prompt_injection": (
        r"ignore (?:all |any |the )?(?:previous|prior|above|earlier) instructions",
        r"disregard (?:all |any |the )?(?:previous|prior|above|earlier) instructions",
        r"you are now (?:in )?(?:developer|dan|jailbreak) mode",
        r"reveal your system prompt",
    ),
}
"""Local moderation: category -> phrases (regular expressions, any case)."""


def _input_and_output() -> list[GuardrailStage]:
    return ["input", "output"]


def _output_only() -> list[GuardrailStage]:
    return ["output"]


class TopicGuardrail(Spec):
    """A blocked topic: any of its keywords or patterns in the text triggers it."""

    name: str = Field(pattern=_NAME, description="reported as topic:NAME")
    keywords: list[str] = Field(default_factory=list, max_length=200)
    patterns: list[str] = Field(default_factory=list, max_length=50)
    stages: list[GuardrailStage] = Field(default_factory=_input_and_output, min_length=1)
    action: GuardrailAction = "block"

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        for keyword in value:
            if not 1 <= len(keyword.strip()) <= 200:
                raise ValueError("keywords are 1 to 200 characters")
        return value

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not 1 <= len(pattern) <= 500:
                raise ValueError("patterns are 1 to 500 characters")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") from exc
            if _nested_repeat(re_parser.parse(pattern).data):
                raise ValueError(
                    f"pattern {pattern!r} repeats a repetition (like (a+)+): such patterns can "
                    "take exponential time; write it without the nesting"
                )
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> "TopicGuardrail":
        if not self.keywords and not self.patterns:
            raise ValueError(f"topic {self.name!r} needs keywords or patterns")
        return self

    def regex(self) -> re.Pattern[str]:
        """One expression matching any keyword (as whole words) or pattern."""
        return _topic_regex(tuple(self.keywords), tuple(self.patterns))


class PiiGuardrail(Spec):
    """Personal data and secrets (`core.redact`: e-mail, phone, card numbers, keys)."""

    stages: list[GuardrailStage] = Field(default_factory=_output_only, min_length=1)
    action: GuardrailAction = "mask"


class ModerationGuardrail(Spec):
    """A moderation check (`engine` auto: the endpoint when configured, else local)."""

    engine: Literal["auto", "local", "endpoint"] = "auto"
    categories: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="categories that count (empty: all but prompt_injection); the endpoint's "
        "names with '-' and '/' read as '_' (self-harm/intent is self_harm)",
    )
    threshold: float = Field(default=0.5, ge=0, le=1)
    stages: list[GuardrailStage] = Field(default_factory=_input_and_output, min_length=1)
    action: GuardrailAction = "block"


class OutputSizeGuardrail(Spec):
    """A maximum size of the final answer (mask: cut to `max_chars`)."""

    max_chars: int = Field(ge=1, le=10_000_000)
    action: GuardrailAction = "mask"


class Guardrails(Spec):
    """Every guardrail of an agent (none by default)."""

    topics: list[TopicGuardrail] = Field(default_factory=list, max_length=50)
    pii: PiiGuardrail | None = None
    moderation: ModerationGuardrail | None = None
    output_size: OutputSizeGuardrail | None = None

    @field_validator("topics")
    @classmethod
    def _unique_names(cls, value: list[TopicGuardrail]) -> list[TopicGuardrail]:
        names = [topic.name for topic in value]
        if len(set(names)) != len(names):
            raise ValueError("topic names must not repeat")
        return value

    def screens(self, stage: GuardrailStage) -> bool:
        """Whether any guardrail looks at this stage."""
        return (
            any(stage in t.stages for t in self.topics)
            or (self.pii is not None and stage in self.pii.stages)
            or self.moderates(stage)
            or (self.output_size is not None and stage == "output")
        )

    def moderates(self, stage: GuardrailStage) -> bool:
        """Whether the moderation check runs at this stage."""
        return self.moderation is not None and stage in self.moderation.stages


@dataclass(frozen=True)
class Trigger:
    """A guardrail that fired; `detail` names what matched, never the text itself."""

    guardrail: str
    stage: GuardrailStage
    action: GuardrailAction
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The text after masking, and every guardrail that fired (a block ends the list)."""

    text: str
    triggers: tuple[Trigger, ...] = ()

    @property
    def blocked(self) -> Trigger | None:
        """The guardrail that blocked the text, if one did."""
        last = self.triggers[-1] if self.triggers else None
        return last if last is not None and last.action == "block" else None


def check(
    guardrails: Guardrails,
    stage: GuardrailStage,
    text: str,
    scores: Mapping[str, float] | None = None,
) -> Verdict:
    """Run the guardrails of `stage` over `text`, in order: topics, pii, moderation, size.

    `scores`: moderation scores by category (from `classify_locally` or an endpoint);
    None when the moderation check does not run. Stops at the first block.
    """
    triggers: list[Trigger] = []

    def fire(name: str, action: GuardrailAction, detail: str) -> bool:
        triggers.append(Trigger(name, stage, action, detail))
        return action == "block"

    for topic in guardrails.topics:
        if stage not in topic.stages:
            continue
        regex = topic.regex()
        found = sorted({m.group(0).lower() for m in regex.finditer(text)})
        if not found:
            continue
        if fire(f"topic:{topic.name}", topic.action, f"{len(found)} distinct match(es)"):
            return Verdict(text, tuple(triggers))
        if topic.action == "mask":
            text = regex.sub(REDACTED, text)
    pii = guardrails.pii
    if pii is not None and stage in pii.stages:
        masked = mask_sensitive(text)
        if masked != text:
            kinds = sorted(set(re.findall(r"\[(SECRET|EMAIL|CARD|PHONE)\]", masked)))
            if fire("pii", pii.action, ", ".join(k.lower() for k in kinds)):
                return Verdict(text, tuple(triggers))
            if pii.action == "mask":
                text = masked
    moderation = guardrails.moderation
    if moderation is not None and stage in moderation.stages and scores is not None:
        flagged = flagged_categories(moderation, scores)
        if flagged:
            if fire("moderation", moderation.action, ", ".join(flagged)):
                return Verdict(text, tuple(triggers))
            if moderation.action == "mask":
                text = f"[withheld by guardrail 'moderation': {', '.join(flagged)}]"
    size = guardrails.output_size
    if size is not None and stage == "output" and len(text) > size.max_chars:
        if fire("output_size", size.action, f"{len(text)} > {size.max_chars} characters"):
            return Verdict(text, tuple(triggers))
        if size.action == "mask":
            text = text[: size.max_chars] + f"\n[cut at {size.max_chars} characters]"
    return Verdict(text, tuple(triggers))


def flagged_categories(moderation: ModerationGuardrail, scores: Mapping[str, float]) -> list[str]:
    """Categories that count for `moderation` and score at least its threshold."""
    wanted = {category_name(c) for c in moderation.categories}
    hits = set()
    for category, score in scores.items():
        name = category_name(category)
        counts = name in wanted if wanted else name != "prompt_injection"
        if counts and score >= moderation.threshold:
            hits.add(name)
    return sorted(hits)


def category_name(category: str) -> str:
    """A moderation category by its top-level name: `self-harm/intent` is `self_harm`."""
    return category.split("/", 1)[0].strip().lower().replace("-", "_").replace(" ", "_")


def classify_locally(text: str) -> dict[str, float]:
    """The local lexicon classifier: 1.0 for each category with a phrase in `text`."""
    return {
        category: 1.0
        for category, regex in _lexicon_regexes().items()
        if regex.search(text) is not None
    }


def excerpt(guardrails: Guardrails, text: str, limit: int = EXCERPT_CHARS) -> str:
    """A safe excerpt for the safety log: topics, lexicon phrases and PII masked, then cut."""
    for topic in guardrails.topics:
        text = topic.regex().sub(REDACTED, text)
    for regex in _lexicon_regexes().values():
        text = regex.sub(REDACTED, text)
    text = mask_sensitive(text)
    return text if len(text) <= limit else text[:limit] + "…"


_REPEATS: Final = (re_parser.MAX_REPEAT, re_parser.MIN_REPEAT, re_parser.POSSESSIVE_REPEAT)


def _nested_repeat(items: object, inside: bool = False) -> bool:
    """Whether a parsed pattern repeats something that itself repeats.

    Such patterns (`(a+)+`, `((ab)*)*`) can backtrack for exponential time on a crafted
    text: a tenant could stall a worker with one. A heuristic: overlapping alternatives
    under a repeat (`(a|aa)+`) pass.
    """
    for op, arg in items:  # type: ignore[attr-defined]
        if op in _REPEATS:
            _low, high, body = arg
            repeats = high > 1  # ? is not a repetition; *, +, {2,} and MAXREPEAT are
            if repeats and inside:
                return True
            if _nested_repeat(body, inside or repeats):
                return True
        elif op is re_parser.SUBPATTERN:
            if _nested_repeat(arg[-1], inside):
                return True
        elif op is re_parser.BRANCH:
            if any(_nested_repeat(branch, inside) for branch in arg[1]):
                return True
        elif op in (re_parser.ASSERT, re_parser.ASSERT_NOT):
            if _nested_repeat(arg[1], inside):
                return True
    return False


@functools.lru_cache(maxsize=1024)
def _topic_regex(keywords: tuple[str, ...], patterns: tuple[str, ...]) -> re.Pattern[str]:
    words = [r"(?<!\w)" + re.escape(k.strip()) + r"(?!\w)" for k in keywords]
    return re.compile("|".join([*words, *(f"(?:{p})" for p in patterns)]), re.IGNORECASE)


@functools.cache
def _lexicon_regexes() -> dict[str, re.Pattern[str]]:
    return {
        category: re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)
        for category, phrases in LEXICON.items()
    }
