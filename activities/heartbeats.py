"""How often a long activity heartbeats: from its own heartbeat timeout, not a constant."""

from temporalio import activity

BEATS_PER_TIMEOUT = 3
"""Heartbeats per heartbeat timeout: two may be lost before the server gives up."""


def heartbeat_every(fallback: float) -> float:
    """Seconds between heartbeats: a third of the activity's heartbeat timeout.

    `fallback` when the activity has none (or runs outside a worker, in tests).
    """
    try:
        timeout = activity.info().heartbeat_timeout
    except RuntimeError:  # not in an activity
        return fallback
    if not timeout:
        return fallback
    return timeout.total_seconds() / BEATS_PER_TIMEOUT
