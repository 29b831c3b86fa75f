"""Sequential tests on live traffic: a canary's promotion or rollback, a live version's drop.

Pure logic, no I/O. Live runs arrive one at a time, and waiting for a fixed sample wastes
traffic on a bad version (or delays a good one). Wald's sequential probability ratio test
(SPRT) looks after every run and stops as soon as the evidence is strong enough, with the
same error rates a fixed-sample test would have, and on average far fewer runs.

Outcomes are Bernoulli: a run succeeded (or was judged good) or not. Both tests compare
two simple hypotheses about the success rate `p` against a baseline `p0` (the incumbent's
rate on live traffic, or the live version's own past rate):

- **Canary** (`canary_test`): H0 "the canary is worse by `delta`" (p = p0 - delta) against
  H1 "it is as good" (p = p0). Accepting H1 promotes it to 100%; accepting H0 rolls it back.
- **Degradation** (`drop_test`): H0 "the version is as good as its baseline" (p = p0)
  against H1 "it dropped by `delta`" (p = p0 - delta). Accepting H1 rolls it back.

With `alpha` the chance of wrongly accepting H1 and `beta` of wrongly accepting H0, the
log-likelihood ratio is compared with log((1 - beta) / alpha) and log(beta / (1 - alpha)).
A decision needs at least `min_samples` runs; when `max_samples` runs (or the caller's
maximum duration) pass without one, the `at_limit` rule decides.
"""

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from pydantic import Field, model_validator

from core.specs import Spec

Verdict = Literal["accept_h1", "accept_h0", "continue"]
LimitRule = Literal["keep", "rollback"]


class SequentialPolicy(Spec):
    """Error rates, effect size and sample limits of a sequential test."""

    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    beta: float = Field(default=0.1, gt=0, lt=0.5)
    delta: float = Field(default=0.1, gt=0, lt=1)
    min_samples: int = Field(default=20, ge=1, le=1_000_000)
    max_samples: int = Field(default=2000, ge=1, le=10_000_000)
    at_limit: LimitRule = "rollback"
    """What happens when the limit passes without a decision (a canary is rolled back
    unless told to keep it; a live version watched for drops is always kept)."""

    @model_validator(mode="after")
    def _ordered(self) -> "SequentialPolicy":
        if self.max_samples < self.min_samples:
            raise ValueError("max_samples must be at least min_samples")
        return self


@dataclass(frozen=True)
class SprtState:
    """The running test: samples, successes and the log-likelihood ratio so far."""

    samples: int = 0
    successes: int = 0
    llr: float = 0.0


@dataclass(frozen=True)
class SprtResult:
    """After one more observation: the new state and what the test says."""

    state: SprtState
    verdict: Verdict
    upper: float
    lower: float


def bounds(policy: SequentialPolicy) -> tuple[float, float]:
    """Wald's (lower, upper) thresholds of the log-likelihood ratio."""
    return math.log(policy.beta / (1 - policy.alpha)), math.log((1 - policy.beta) / policy.alpha)


def _clip(p: float) -> float:
    return min(max(p, 1e-6), 1 - 1e-6)


def observe(
    state: SprtState, success: bool, p0: float, p1: float, policy: SequentialPolicy
) -> SprtResult:
    """Add one outcome to a test of H0: p = p0 against H1: p = p1."""
    p0, p1 = _clip(p0), _clip(p1)
    step = math.log(p1 / p0) if success else math.log((1 - p1) / (1 - p0))
    new = SprtState(state.samples + 1, state.successes + int(success), state.llr + step)
    lower, upper = bounds(policy)
    verdict: Verdict = "continue"
    if new.samples >= policy.min_samples:
        if new.llr >= upper:
            verdict = "accept_h1"
        elif new.llr <= lower:
            verdict = "accept_h0"
    return SprtResult(new, verdict, upper, lower)


def canary_hypotheses(baseline: float, policy: SequentialPolicy) -> tuple[float, float]:
    """(p0, p1) of a canary's test: worse by delta, against as good as the baseline."""
    return _clip(baseline - policy.delta), _clip(baseline)


def drop_hypotheses(baseline: float, policy: SequentialPolicy) -> tuple[float, float]:
    """(p0, p1) of a degradation test: as good as the baseline, against worse by delta."""
    return _clip(baseline), _clip(baseline - policy.delta)


CanaryDecision = Literal["promote", "rollback", "continue"]


def canary_test(
    outcomes: list[bool], baseline: float, policy: SequentialPolicy
) -> tuple[CanaryDecision, SprtState]:
    """Replay a canary's outcomes in order; the first decision stops it.

    At `max_samples` without one, `policy.at_limit` decides (keep is a promotion).
    """
    p0, p1 = canary_hypotheses(baseline, policy)
    state = SprtState()
    for success in outcomes:
        result = observe(state, success, p0, p1, policy)
        state = result.state
        if result.verdict == "accept_h1":
            return "promote", state
        if result.verdict == "accept_h0":
            return "rollback", state
        if state.samples >= policy.max_samples:
            return ("promote" if policy.at_limit == "keep" else "rollback"), state
    return "continue", state


def drop_test(
    outcomes: list[bool], baseline: float, policy: SequentialPolicy
) -> tuple[Literal["rollback", "healthy", "continue"], SprtState]:
    """Replay a live version's recent outcomes: has it dropped below its baseline?

    "healthy" when the test accepts that it has not (the watch then starts over).
    """
    p0, p1 = drop_hypotheses(baseline, policy)
    state = SprtState()
    for success in outcomes:
        result = observe(state, success, p0, p1, policy)
        state = result.state
        if result.verdict == "accept_h1":
            return "rollback", state
        if result.verdict == "accept_h0":
            return "healthy", state
    return "continue", state


def fixed_sample_size(p0: float, p1: float, alpha: float, beta: float) -> int:
    """Runs a one-sided fixed-sample test of p0 against p1 needs for the same error rates."""
    z_a, z_b = NormalDist().inv_cdf(1 - alpha), NormalDist().inv_cdf(1 - beta)
    p0, p1 = _clip(p0), _clip(p1)
    n = ((z_a * math.sqrt(p0 * (1 - p0)) + z_b * math.sqrt(p1 * (1 - p1))) / (p1 - p0)) ** 2
    return math.ceil(n)
