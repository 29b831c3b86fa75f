"""Sticky canary assignment."""

from core.runs.rollout import Rollout, bucket, pick_version


def test_without_a_rollout_every_run_uses_the_latest_version() -> None:
    assert pick_version(7, None, "user-1") == 7


def test_a_key_always_gets_the_same_version_and_the_share_holds() -> None:
    rollout = Rollout(stable=3, canary=4, share=0.2, salt="rollout-1")
    picks = {f"user-{i}": pick_version(3, rollout, f"user-{i}") for i in range(5000)}
    assert all(pick_version(3, rollout, key) == v for key, v in picks.items())  # sticky
    canary_share = sum(v == 4 for v in picks.values()) / len(picks)
    assert 0.18 < canary_share < 0.22


def test_a_new_rollout_reshuffles_who_goes_first() -> None:
    first = {k for k in map(str, range(2000)) if bucket(k, "a") < 0.1}
    second = {k for k in map(str, range(2000)) if bucket(k, "b") < 0.1}
    assert len(first & second) < len(first) / 2


def test_shares_of_zero_and_one() -> None:
    assert pick_version(1, Rollout(1, 2, 0.0, "s"), "k") == 1
    assert pick_version(1, Rollout(1, 2, 1.0, "s"), "k") == 2
