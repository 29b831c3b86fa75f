"""Hooks other domains give the run lifecycle (runs code never imports theirs)."""

from typing import Protocol

from core.runs.payloads import RunOutcome


class RunFinishedHook(Protocol):
    """Called by `finish_run` once a run's outcome is stored (again on a retry).

    It must be idempotent and must not raise: a run's finish never fails because of it.
    """

    async def __call__(self, tenant_id: str, run_id: str, outcome: RunOutcome) -> None:
        """React to the run's end."""
