"""The tools lane's activities (the tool system arrives with issue #4)."""

import time

from temporalio import activity

from activities import sandbox
from activities._common import worker_identity
from core.models import LaneReport, ProbeInput
from core.settings import Settings


class ToolActivities:
    """Activities served by the `tools` lane."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="probe_tools_lane")
    def probe_tools_lane(self, input: ProbeInput) -> LaneReport:
        """Run a command in the sandbox backend and report whether it worked."""
        started = time.perf_counter()
        status = sandbox.probe(self._settings)
        return LaneReport(
            lane="tools",
            ok=status.ok,
            detail=f"{status.backend}: {status.detail}",
            worker=worker_identity(),
            duration_ms=(time.perf_counter() - started) * 1000,
        )
