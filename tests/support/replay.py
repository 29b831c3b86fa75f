"""Replay helpers: every workflow test ends by replaying its own history."""

import os
from pathlib import Path

from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from core.codec import codec_from_settings
from core.settings import Settings
from core.temporal import ColonyPlugin
from workers.registry import ALL_WORKFLOWS


async def assert_replays(handle: WorkflowHandle) -> None:  # type: ignore[type-arg]
    """Fetch the workflow's history and replay it against the current workflow code."""
    history = await handle.fetch_history()
    replayer = Replayer(workflows=ALL_WORKFLOWS, plugins=[ColonyPlugin()])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories"


def record_history(name: str, history: WorkflowHistory) -> None:
    """With COLONY_RECORD_HISTORIES=1, save `history` as a released version's history.

    Checked-in histories are replayed by tests/replay on every run, so a change to
    workflow code that would break running workflows fails the suite.
    """
    if os.environ.get("COLONY_RECORD_HISTORIES") == "1":
        # Saved decrypted: checked-in histories must not depend on the test session's key.
        codec = codec_from_settings(Settings())
        for event in history.events:
            codec.decrypt_message(event)
        HISTORIES.mkdir(parents=True, exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json())
