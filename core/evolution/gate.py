"""The promotion gate: does a candidate beat the incumbent, by evidence that cannot be faked?

Pure logic, no I/O. The gate reads one score in [0, 1] per case and version; a case
whose evaluation is missing, failed or timed out scores 0 (`CaseScores` holds None for
it, and the gate counts None as 0, never as a pass). A candidate is promoted only when
every one of these holds:

1. **Enough evidence**: at least `min_cases` validation cases, each with a score for the
   incumbent (a cycle whose incumbent could not be measured keeps it).
2. **Better on validation**: the mean paired difference (candidate minus incumbent) is at
   least `margin`, and a paired test says it is not chance at `confidence`:
   - `sign` (default): an exact one-sided sign test over the cases where the two differ
     (wins against losses, ties dropped); p <= 1 - confidence.
   - `bootstrap`: the lower bound of a one-sided bootstrap confidence interval of the
     mean difference (resampling cases, fixed seed, so the decision replays) is above 0.
3. **No guard regresses**: a case marked `guard` scores no lower than the incumbent's.
4. **No holdout regression beyond noise**: the holdout's mean difference is at least
   `-holdout_tolerance` (holdout cases never reach the proposer or the selection; they
   are reported on every decision).
5. **Cost and latency within bounds**: the candidate's mean cost and latency per run are at
   most `max_cost_ratio` and `max_latency_ratio` times the incumbent's, or within
   `cost_slack_usd` and `latency_slack_s` of them.

Anything else keeps the incumbent, and the decision says which rules failed.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from pydantic import Field

from core.specs import Spec

Split = Literal["train", "validation", "holdout"]
PairedTest = Literal["sign", "bootstrap"]

BOOTSTRAP_SAMPLES: Final = 2000
BOOTSTRAP_SEED: Final = 20261206


class GatePolicy(Spec):
    """How sure the gate must be before it promotes (an agent's evolution policy)."""

    margin: float = Field(default=0.05, ge=0, le=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    test: PairedTest = "sign"
    min_cases: int = Field(default=5, ge=1, le=10_000)
    holdout_tolerance: float = Field(default=0.05, ge=0, le=1)
    max_cost_ratio: float = Field(default=2.0, gt=0)
    max_latency_ratio: float = Field(default=2.0, gt=0)
    cost_slack_usd: float = Field(default=0.0001, ge=0)
    latency_slack_s: float = Field(default=1.0, ge=0)
    """A candidate within this much of the incumbent's cost or latency per run passes the
    ratio bound whatever the ratio (0.02 s against 0.01 s is noise, not twice as slow)."""


@dataclass(frozen=True)
class CaseScores:
    """One case's scores under the incumbent and the candidate (None: no valid result)."""

    case_id: str
    split: Split
    incumbent: float | None
    candidate: float | None
    guard: bool = False

    @property
    def difference(self) -> float:
        """Candidate minus incumbent, a missing score counting as 0."""
        return (self.candidate or 0.0) - (self.incumbent or 0.0)


@dataclass(frozen=True)
class RunCosts:
    """Mean cost (USD) and latency (seconds) per evaluation run of one version."""

    cost_usd: float
    latency_s: float


@dataclass(frozen=True)
class SplitSummary:
    """A split's paired comparison."""

    cases: int
    incumbent_mean: float
    candidate_mean: float
    mean_difference: float
    wins: int
    losses: int
    ties: int
    missing: int  # candidate evaluations with no valid result


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with its evidence; `reasons` say why it keeps (empty: promote)."""

    promote: bool
    reasons: tuple[str, ...]
    validation: SplitSummary
    holdout: SplitSummary
    p_value: float | None = None
    lower_bound: float | None = None
    guard_regressions: tuple[str, ...] = field(default=())


def summarize(scores: Sequence[CaseScores]) -> SplitSummary:
    """Means, wins, losses and ties of paired scores."""
    n = len(scores)
    diffs = [s.difference for s in scores]
    return SplitSummary(
        cases=n,
        incumbent_mean=sum(s.incumbent or 0.0 for s in scores) / n if n else 0.0,
        candidate_mean=sum(s.candidate or 0.0 for s in scores) / n if n else 0.0,
        mean_difference=sum(diffs) / n if n else 0.0,
        wins=sum(d > 0 for d in diffs),
        losses=sum(d < 0 for d in diffs),
        ties=sum(d == 0 for d in diffs),
        missing=sum(s.candidate is None for s in scores),
    )


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at least `wins` of `wins + losses` fair coin flips)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / float(2**n)


def bootstrap_lower_bound(
    diffs: Sequence[float], confidence: float, samples: int = BOOTSTRAP_SAMPLES
) -> float:
    """The one-sided lower confidence bound of the mean of `diffs` (percentile bootstrap).

    Seeded, so the same scores always give the same bound (a workflow replays it).
    """
    if not diffs:
        return -math.inf
    rng = random.Random(BOOTSTRAP_SEED)
    n = len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(samples))
    return means[max(0, math.floor((1 - confidence) * samples) - 1)]


def decide(
    scores: Sequence[CaseScores],
    policy: GatePolicy,
    incumbent_costs: RunCosts | None = None,
    candidate_costs: RunCosts | None = None,
) -> GateDecision:
    """Promote or keep (see the module docstring for the rules)."""
    validation = [s for s in scores if s.split == "validation"]
    holdout = [s for s in scores if s.split == "holdout"]
    val, hold = summarize(validation), summarize(holdout)
    reasons: list[str] = []
    unmeasured = sum(s.incumbent is None for s in validation)
    if len(validation) < policy.min_cases:
        reasons.append(
            f"too little evidence: {len(validation)} validation case(s), "
            f"at least {policy.min_cases} needed"
        )
    if unmeasured:
        reasons.append(f"the incumbent has no valid result on {unmeasured} validation case(s)")
    if val.mean_difference < policy.margin or val.mean_difference <= 0:
        reasons.append(
            f"validation gain {val.mean_difference:+.3f} is below the margin {policy.margin:.3f}"
        )
    p_value: float | None = None
    lower: float | None = None
    alpha = 1 - policy.confidence
    if policy.test == "sign":
        p_value = sign_test_p(val.wins, val.losses)
        if p_value > alpha:
            reasons.append(
                f"not significant: sign test p = {p_value:.4f} > {alpha:.4f} "
                f"({val.wins} wins, {val.losses} losses)"
            )
    else:
        lower = bootstrap_lower_bound([s.difference for s in validation], policy.confidence)
        if not lower > 0:
            reasons.append(
                f"not significant: the {policy.confidence:.0%} lower bound of the gain "
                f"is {lower:+.3f}"
            )
    guards = tuple(
        s.case_id for s in scores if s.guard and (s.candidate or 0.0) < (s.incumbent or 0.0)
    )
    if guards:
        reasons.append(f"guard case(s) regress: {', '.join(guards)}")
    if holdout and hold.mean_difference < -policy.holdout_tolerance:
        reasons.append(
            f"holdout regresses: {hold.mean_difference:+.3f} "
            f"(tolerance {policy.holdout_tolerance:.3f})"
        )
    reasons += _cost_reasons(policy, incumbent_costs, candidate_costs)
    return GateDecision(
        promote=not reasons,
        reasons=tuple(reasons),
        validation=val,
        holdout=hold,
        p_value=p_value,
        lower_bound=lower,
        guard_regressions=guards,
    )


def _cost_reasons(
    policy: GatePolicy, incumbent: RunCosts | None, candidate: RunCosts | None
) -> list[str]:
    if incumbent is None or candidate is None:
        return []
    reasons = []
    over_cost = candidate.cost_usd - incumbent.cost_usd > policy.cost_slack_usd
    if over_cost and candidate.cost_usd > incumbent.cost_usd * policy.max_cost_ratio:
        reasons.append(
            f"cost per run ${candidate.cost_usd:.6f} exceeds {policy.max_cost_ratio}x "
            f"the incumbent's ${incumbent.cost_usd:.6f}"
        )
    over_latency = candidate.latency_s - incumbent.latency_s > policy.latency_slack_s
    if over_latency and candidate.latency_s > incumbent.latency_s * policy.max_latency_ratio:
        reasons.append(
            f"latency per run {candidate.latency_s:.2f}s exceeds {policy.max_latency_ratio}x "
            f"the incumbent's {incumbent.latency_s:.2f}s"
        )
    return reasons
