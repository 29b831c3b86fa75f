"""The promotion gate: it promotes only on evidence, and never on missing evidence."""

import pytest

from core.evolution.gate import (
    CaseScores,
    GatePolicy,
    RunCosts,
    bootstrap_lower_bound,
    decide,
    sign_test_p,
)


def pairs(
    split: str, results: list[tuple[float | None, float | None]], guard: bool = False
) -> list[CaseScores]:
    return [
        CaseScores(f"{split}-{i}", split, inc, cand, guard)  # type: ignore[arg-type]
        for i, (inc, cand) in enumerate(results)
    ]


def test_sign_test_p_values() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(8, 2) == pytest.approx(56 / 1024)
    assert sign_test_p(2, 8) > 0.9


def test_a_clear_win_is_promoted() -> None:
    scores = pairs("validation", [(0.0, 1.0)] * 8 + [(1.0, 1.0)] * 4) + pairs(
        "holdout", [(0.0, 1.0)] * 3
    )
    decision = decide(scores, GatePolicy())
    assert decision.promote, decision.reasons
    assert decision.validation.wins == 8 and decision.validation.ties == 4
    assert decision.p_value == pytest.approx(1 / 256)


def test_no_evidence_is_never_a_pass() -> None:
    # The reference loop's bug: all() over no results is True. Here nothing is promoted.
    decision = decide([], GatePolicy())
    assert not decision.promote
    assert any("too little evidence" in r for r in decision.reasons)


def test_missing_candidate_results_count_as_failures() -> None:
    # Every candidate evaluation timed out: scores are None, which is 0, never a pass.
    scores = pairs("validation", [(1.0, None)] * 10)
    decision = decide(scores, GatePolicy())
    assert not decision.promote
    assert decision.validation.missing == 10 and decision.validation.losses == 10


def test_an_unmeasured_incumbent_keeps_it() -> None:
    scores = pairs("validation", [(None, 1.0)] * 10)
    decision = decide(scores, GatePolicy())
    assert not decision.promote
    assert any("incumbent has no valid result" in r for r in decision.reasons)


def test_a_small_gain_is_not_significant() -> None:
    scores = pairs("validation", [(0.0, 1.0)] * 3 + [(1.0, 0.0)] * 1 + [(1.0, 1.0)] * 6)
    decision = decide(scores, GatePolicy())
    assert not decision.promote
    assert any("not significant" in r for r in decision.reasons)


def test_a_regressed_guard_case_is_rejected() -> None:
    scores = [
        *pairs("validation", [(0.0, 1.0)] * 10),
        CaseScores("never-regress", "validation", 1.0, 0.0, True),
    ]
    decision = decide(scores, GatePolicy())
    assert not decision.promote
    assert decision.guard_regressions == ("never-regress",)


def test_a_holdout_regression_beyond_noise_is_rejected() -> None:
    validation = pairs("validation", [(0.0, 1.0)] * 10)
    assert decide(
        validation + pairs("holdout", [(1.0, 1.0)] * 19 + [(1.0, 0.0)]), GatePolicy()
    ).promote
    decision = decide(
        validation + pairs("holdout", [(1.0, 0.0)] * 5 + [(1.0, 1.0)] * 5), GatePolicy()
    )
    assert not decision.promote
    assert any("holdout regresses" in r for r in decision.reasons)


def test_cost_and_latency_bounds() -> None:
    scores = pairs("validation", [(0.0, 1.0)] * 10)
    cheap, pricey = RunCosts(0.01, 2.0), RunCosts(0.05, 2.0)
    assert decide(scores, GatePolicy(), cheap, cheap).promote
    decision = decide(scores, GatePolicy(), cheap, pricey)
    assert not decision.promote and any("cost per run" in r for r in decision.reasons)
    slow = RunCosts(0.01, 9.0)
    assert any("latency" in r for r in decide(scores, GatePolicy(), cheap, slow).reasons)
    # Tiny numbers: twice 0.01 s is within the slack, not a regression.
    assert decide(scores, GatePolicy(), RunCosts(0.0, 0.01), RunCosts(0.0, 0.03)).promote


def test_the_bootstrap_test_is_deterministic_and_demands_a_positive_bound() -> None:
    diffs = [1.0] * 8 + [0.0] * 2
    assert bootstrap_lower_bound(diffs, 0.95) == bootstrap_lower_bound(diffs, 0.95) > 0
    policy = GatePolicy(test="bootstrap")
    assert decide(pairs("validation", [(0.0, 1.0)] * 8 + [(1.0, 1.0)] * 2), policy).promote
    noisy = pairs("validation", [(0.0, 1.0)] * 3 + [(1.0, 0.0)] * 2 + [(1.0, 1.0)] * 5)
    decision = decide(noisy, policy)
    assert not decision.promote and decision.lower_bound is not None and decision.lower_bound <= 0
