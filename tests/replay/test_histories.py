"""Histories of released workflow versions must replay against the current code."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.temporal import ColonyPlugin
from tests.support.replay import HISTORIES
from workers.registry import ALL_WORKFLOWS

FILES = sorted(HISTORIES.glob("*.json"))


def test_there_are_released_histories() -> None:
    assert FILES, f"no histories in {HISTORIES}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=ALL_WORKFLOWS, plugins=[ColonyPlugin()])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
