"""Payloads of the stack check: a probe of every lane, recorded in Postgres."""

from datetime import datetime

from core.payloads import Payload


class StackCheckInput(Payload):
    """Input of `StackCheckWorkflow`."""

    tenant_id: str


class LaneReport(Payload):
    """What one lane's probe found."""

    lane: str
    ok: bool
    detail: str
    worker: str = ""
    duration_ms: float = 0.0


class StackCheckOutput(Payload):
    """Result of `StackCheckWorkflow`: one report per lane."""

    workflow_id: str
    lanes: list[LaneReport]
    finished_at: datetime

    @property
    def ok(self) -> bool:
        """True when every lane reported ok."""
        return all(lane.ok for lane in self.lanes)


class ProbeInput(Payload):
    """Input of the lane probe activities."""

    tenant_id: str
    workflow_id: str


class StackCheckRecord(Payload):
    """Input of `record_stack_check`: the lane reports to persist."""

    tenant_id: str
    workflow_id: str
    lanes: list[LaneReport]
