"""The failure trigger's check after a run ends, given to `finish_run` as its hook."""

from temporalio import activity
from temporalio.client import Client

from core.db import Pool
from core.evolution import triggers
from core.evolution.payloads import FAILING_OUTCOMES
from core.runs.payloads import RunOutcome
from core.settings import Settings


class FailureTriggerHook:
    """A `RunFinishedHook`: after a failed or limit-reached run, check the agent's triggers.

    The worker registry gives it to `StoreActivities`, so runs code never imports
    evolution code. A cycle is started with the running activity's own Temporal client.
    """

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool

    async def __call__(self, tenant_id: str, run_id: str, outcome: RunOutcome) -> None:
        """Start a cycle of the run's agent if its failure trigger fires (never raises)."""
        if outcome in FAILING_OUTCOMES:
            await triggers.check_after_run(
                self._pool, _activity_client, self._settings, tenant_id, run_id, outcome
            )


async def _activity_client() -> Client:
    """The Temporal client of the worker running the current activity."""
    return activity.client()
