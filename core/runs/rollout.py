"""Which version of an agent a new run uses while a canary takes a share of the traffic.

Pure logic, no I/O. Assignment is sticky: the same key (a conversation, an end user, else
the run's idempotency key or id) always lands on the same version for one rollout, so a
user does not flip between versions from one run to the next. The rollout's `salt` (its
id) reshuffles the buckets when a new canary starts, so the same users are not always
the ones who try new versions first.
"""

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Rollout:
    """A canary in progress: `canary` takes `share` (0-1) of new runs, `stable` the rest."""

    stable: int
    canary: int
    share: float
    salt: str


def bucket(key: str, salt: str) -> float:
    """A key's stable position in [0, 1) for one rollout."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_version(latest: int, rollout: Rollout | None, key: str) -> int:
    """The version a new run with this sticky key uses."""
    if rollout is None:
        return latest
    return rollout.canary if bucket(key, rollout.salt) < rollout.share else rollout.stable
