"""Sequential tests of live traffic: error rates hold, and they stop early."""

import random

import pytest
from pydantic import ValidationError

from core.evolution.sequential import (
    SequentialPolicy,
    SprtState,
    bounds,
    canary_hypotheses,
    canary_test,
    drop_test,
    fixed_sample_size,
    observe,
)

POLICY = SequentialPolicy(alpha=0.05, beta=0.1, delta=0.15, min_samples=10, max_samples=5000)


def outcomes(rate: float, n: int, rng: random.Random) -> list[bool]:
    return [rng.random() < rate for _ in range(n)]


def simulate(rate: float, baseline: float, trials: int = 300) -> tuple[dict[str, int], float]:
    rng = random.Random(7)
    counts: dict[str, int] = {}
    samples = 0
    for _ in range(trials):
        decision, state = canary_test(outcomes(rate, 5000, rng), baseline, POLICY)
        counts[decision] = counts.get(decision, 0) + 1
        samples += state.samples
    return counts, samples / trials


def test_a_canary_as_good_as_the_incumbent_is_promoted_within_the_error_rate() -> None:
    counts, mean_n = simulate(rate=0.8, baseline=0.8)
    assert counts.get("rollback", 0) / 300 <= POLICY.beta + 0.03
    p0, p1 = canary_hypotheses(0.8, POLICY)
    assert mean_n < fixed_sample_size(p0, p1, POLICY.alpha, POLICY.beta)


def test_a_worse_canary_is_rolled_back_within_the_error_rate() -> None:
    counts, mean_n = simulate(rate=0.65, baseline=0.8)  # worse by delta exactly
    assert counts.get("promote", 0) / 300 <= POLICY.alpha + 0.03
    p0, p1 = canary_hypotheses(0.8, POLICY)
    assert mean_n < fixed_sample_size(p0, p1, POLICY.alpha, POLICY.beta)


def test_a_better_canary_is_promoted_fast() -> None:
    counts, mean_n = simulate(rate=0.95, baseline=0.8)
    assert counts == {"promote": 300}
    assert mean_n < 40


def test_no_decision_before_the_minimum_sample() -> None:
    p0, p1 = canary_hypotheses(0.8, POLICY)
    state = SprtState()
    for _ in range(POLICY.min_samples - 1):
        result = observe(state, False, p0, p1, POLICY)
        state = result.state
        assert result.verdict == "continue"
    assert observe(state, False, p0, p1, POLICY).verdict == "accept_h0"


def test_the_limit_rule_decides_when_the_evidence_never_does() -> None:
    keep = POLICY.model_copy(update={"max_samples": 12, "min_samples": 10, "at_limit": "keep"})
    alternating = [True, False] * 10  # a rate between the hypotheses: no decision in 12
    rng_free = canary_test(alternating, 0.6, keep)
    assert rng_free[0] == "promote" and rng_free[1].samples == 12
    roll = keep.model_copy(update={"at_limit": "rollback"})
    assert canary_test(alternating, 0.6, roll)[0] == "rollback"
    assert canary_test([True] * 3, 0.6, roll)[0] == "continue"  # too few runs yet


def test_a_live_version_that_drops_is_caught_and_a_healthy_one_is_not() -> None:
    rng = random.Random(3)
    dropped = [drop_test(outcomes(0.6, 3000, rng), 0.8, POLICY)[0] for _ in range(200)]
    assert dropped.count("rollback") / 200 >= 1 - POLICY.beta - 0.03
    healthy = [drop_test(outcomes(0.8, 3000, rng), 0.8, POLICY)[0] for _ in range(200)]
    assert healthy.count("rollback") / 200 <= POLICY.alpha + 0.03


def test_wald_bounds_and_the_fixed_sample_size() -> None:
    lower, upper = bounds(POLICY)
    assert lower < 0 < upper
    assert fixed_sample_size(0.65, 0.8, 0.05, 0.1) > fixed_sample_size(0.5, 0.8, 0.05, 0.1)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_samples"):
        SequentialPolicy(min_samples=50, max_samples=10)
    with pytest.raises(ValidationError):
        SequentialPolicy(alpha=0.7)
