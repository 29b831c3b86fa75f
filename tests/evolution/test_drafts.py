"""Tool-set and model-tier drafts (no model involved)."""

from activities.evolution.models import _failing_tools, _GapTool, _model_draft, _tools_draft
from core.runs.payloads import AgentSpec
from core.tools.store import ToolStats


def stats(calls: int, successes: int) -> ToolStats:
    return ToolStats.model_validate(
        {"tool": "t", "calls": calls, "successes": successes, "failures": calls - successes}
    )


def test_tools_are_added_for_the_gap_and_removed_when_they_keep_failing() -> None:
    failing = _failing_tools({"flaky": stats(10, 2), "new": stats(2, 0), "fine": stats(9, 8)})
    assert list(failing) == ["flaky"]  # "new" has too few calls to judge
    gap = [_GapTool("calculator", 0.76, False, None)]
    draft = _tools_draft("x", ["flaky", "fine"], gap, failing)
    assert draft.tools == ["fine", "calculator"] and draft.refused is None
    assert "calculator (similarity 0.76)" in draft.rationale and "flaky (2/10" in draft.rationale
    assert _tools_draft("x", ["fine"], [], {}).refused is not None


def test_a_side_effecting_tool_makes_the_candidate_wait_for_a_human() -> None:
    draft = _tools_draft("x", [], [_GapTool("send_email", 0.6, True, None)], {})
    assert "a human must approve" in draft.rationale


def test_model_tiers() -> None:
    spec = AgentSpec(instructions="x", model="openai/small")
    assert _model_draft(spec, [], 0).refused is not None
    assert _model_draft(spec, ["openai/small"], 0).refused is not None
    assert (
        _model_draft(spec, ["openai/small", "openai/large", "anthropic/mid"], 1).model
        == "anthropic/mid"
    )
