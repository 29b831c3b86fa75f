"""HTTP bodies of the data-rights routes: what a deletion removed."""

from pydantic import BaseModel, Field


class DeletionPublic(BaseModel):
    """What a deletion removed.

    Runs (with their messages, events, feedback), the runs and swarms derived from them,
    their memories (rows and vectors), the eval cases made of them, and their Temporal
    histories. The cost ledger stays, detached from the runs.
    """

    run_ids: list[str] = Field(description="every run deleted: the ones asked for and derived ones")
    runs: int
    swarms: int
    memories: int
    eval_cases: int
    workflows: int = Field(description="Temporal workflow executions deleted")


class EndUserDeletionPublic(DeletionPublic):
    """What deleting an end user's data removed."""

    end_user: str
