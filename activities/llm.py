"""The LLM lane's activities (model calls arrive with issue #3)."""

import time

from temporalio import activity

from activities._common import worker_identity
from core.models import LaneReport, ProbeInput
from core.providers import ping_provider
from core.settings import Settings


class LlmActivities:
    """Activities served by the `llm` lane."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="probe_llm_lane")
    async def probe_llm_lane(self, input: ProbeInput) -> LaneReport:
        """Report the default model's provider and check its endpoint answers (no model call)."""
        started = time.perf_counter()
        provider = await ping_provider(self._settings)
        return LaneReport(
            lane="llm",
            ok=provider.configured,
            detail=f"{provider.default_model}: {provider.detail}",
            worker=worker_identity(),
            duration_ms=(time.perf_counter() - started) * 1000,
        )
