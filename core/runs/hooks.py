"""Hooks other domains give the run lifecycle (runs code never imports theirs)."""

from typing import Protocol

from core.runs.payloads import RunOutcome


class RunFinishedHook(Protocol):
    """Called by `finish_run` once a run's outcome is stored (again on a retry).

    It must be idempotent. It raises only to have `finish_run` retried (its writes are
    idempotent): the run's outcome is already stored, so nothing a user sees waits on it.
    """

    async def __call__(self, tenant_id: str, run_id: str, outcome: RunOutcome) -> None:
        """React to the run's end."""


class RunFinishedHooks:
    """Several hooks as one, called in order."""

    def __init__(self, *hooks: RunFinishedHook) -> None:
        self._hooks = hooks

    async def __call__(self, tenant_id: str, run_id: str, outcome: RunOutcome) -> None:
        """Call each hook."""
        for hook in self._hooks:
            await hook(tenant_id, run_id, outcome)
