"""HTTP body of a run's timeline (`GET /v1/runs/{run_id}/timeline`)."""

from pydantic import BaseModel, Field

from core.timeline import TimelineEntry


class TimelinePublic(BaseModel):
    """A run's events and Temporal history in time order (core/timeline.py)."""

    run_id: str
    workflow_id: str
    entries: list[TimelineEntry]
    history_error: str | None = Field(
        default=None,
        description="why the Temporal history is missing, when it is (the events are there)",
    )
