"""The pure part of bootstrapping: names, the proven-tool threshold and the template."""

import re

from core.runs.bootstrap import (
    MIN_PROVEN_CALLS,
    AgentEvidence,
    BootstrapEvidence,
    MemoryEvidence,
    draft,
    draft_name,
    proven,
    tool_evidence,
)
from core.runs.payloads import AGENT_NAME_PATTERN
from core.tools.search import ToolHit
from core.tools.store import ToolStats


def stats(name: str, calls: int, successes: int) -> ToolStats:
    return ToolStats(tool=name, calls=calls, successes=successes, failures=calls - successes)


def test_names_come_from_the_objectives_words_and_never_take_an_existing_one() -> None:
    assert draft_name("Summarize the support tickets of the week", set()) == (
        "summarize-support-tickets-week"
    )
    taken = {"summarize-support-tickets-week", "summarize-support-tickets-week-2"}
    assert draft_name("Summarize the support tickets of the week", taken) == (
        "summarize-support-tickets-week-3"
    )
    for objective in ("???", "the of and", "Ünïcode ©", "x" * 500):
        assert re.fullmatch(AGENT_NAME_PATTERN, draft_name(objective, set()))
    assert draft_name("!!!", set()) == "agent"


def test_a_tool_is_proven_by_enough_calls_that_mostly_succeeded() -> None:
    assert not proven(None)
    assert not proven(stats("t", MIN_PROVEN_CALLS - 1, MIN_PROVEN_CALLS - 1))
    assert proven(stats("t", MIN_PROVEN_CALLS, MIN_PROVEN_CALLS))
    assert proven(stats("t", 10, 8)) and not proven(stats("t", 10, 7))


def test_tool_evidence_keeps_relevant_tools_proven_first() -> None:
    hits = [
        ToolHit(name="flaky", score=0.9, kind="http", description="d"),
        ToolHit(name="solid", score=0.5, kind="http", description="d"),
        ToolHit(name="new", score=0.6, kind="builtin", description="d"),
        ToolHit(name="off_topic", score=0.1, kind="builtin", description="d"),
    ]
    found = tool_evidence(hits, {"flaky": stats("flaky", 10, 3), "solid": stats("solid", 6, 6)})
    assert [(t.name, t.proven, t.calls, t.success_rate) for t in found] == [
        ("solid", True, 6, 1.0),
        ("flaky", False, 10, 0.3),
        ("new", False, 0, None),
    ]


def test_the_template_uses_the_evidence_and_says_what_it_left_out() -> None:
    hits = [
        ToolHit(name="solid", score=0.5, kind="http", description="Looks things up."),
        ToolHit(name="flaky", score=0.9, kind="http", description="Breaks."),
    ]
    evidence = BootstrapEvidence(
        lessons=[
            MemoryEvidence(
                id="1",
                kind="reflexion",
                content="Check the date first.",
                similarity=0.7,
                agent_name="a",
                scope="shared",
            ),
        ],
        tools=tool_evidence(hits, {"flaky": stats("flaky", 10, 3), "solid": stats("solid", 6, 6)}),
        similar_agents=[
            AgentEvidence(
                name="a",
                version=2,
                model="openai/x",
                similarity=0.6,
                instructions="You look things up.",
            ),
        ],
        sharing="isolated",
    )
    out = draft("helper", "Look things up", evidence, default_model="local/smollm2-135m")
    assert out.spec.tools == ["solid"] and out.spec.model == "openai/x"
    assert out.spec.memory.enabled and out.spec.memory.scope == "private"
    text = out.spec.instructions
    assert text.startswith("You are helper. Your job: Look things up")
    assert "- Check the date first." in text and "- solid: Looks things up." in text
    assert "You look things up." in text and "flaky" not in text
    assert "flaky (30% of 10 calls succeeded)" in out.rationale
    assert "only from this agent's own memories" in out.rationale
    alone = draft("helper", "Look things up", BootstrapEvidence(), default_model="local/m")
    assert alone.spec.model == "local/m" and alone.spec.tools == []
    assert "no similar agent" in alone.rationale
