"""Tools hosts: the id of a data directory's disk, its queue, and sweeping old workspaces."""

import os
import time
from pathlib import Path

from activities.tools import workspace as ws
from activities.tools.workspace_host import WorkspaceActivities, sweep_workspaces
from core.queues import workspace_host_queue
from core.tools.workspaces import WorkspaceInput
from tests.conftest import make_settings


def test_a_data_directory_keeps_one_host_id(tmp_path: Path) -> None:
    one = make_settings(COLONY_DATA_DIR=str(tmp_path / "a"))
    again = make_settings(COLONY_DATA_DIR=str(tmp_path / "a"))
    other = make_settings(COLONY_DATA_DIR=str(tmp_path / "b"))
    assert ws.host_id(one) == ws.host_id(again) == ws.host_id(one)
    assert ws.host_id(one) != ws.host_id(other)
    assert [p.name for p in ws.workspaces_root(one).iterdir()] == [".host-id"]
    assert workspace_host_queue("colony-tools-x", "ab12") == "colony-tools-x-host-ab12"


def test_claim_and_release_make_and_delete_the_workspace(tmp_path: Path) -> None:
    settings = make_settings(COLONY_DATA_DIR=str(tmp_path), COLONY_WORKSPACE_HOST_WAIT_S="3")
    acts = WorkspaceActivities(settings)
    ref = WorkspaceInput(tenant_id="t", run_id="r1")
    host = acts.claim_workspace(ref)
    assert (host.host_id, host.wait_s) == (ws.host_id(settings), 3.0)
    (ws.workspace_path(settings, "t", "r1") / "kept.txt").write_text("x")
    acts.claim_workspace(ref)  # a second claim keeps what is there
    assert ws.holds_workspace(settings, "t", "r1")
    assert (ws.workspace_path(settings, "t", "r1") / "kept.txt").exists()
    assert acts.release_workspace(ref) is True
    assert not ws.holds_workspace(settings, "t", "r1")
    assert acts.release_workspace(ref) is False


async def test_sweep_deletes_workspaces_of_finished_and_idle_runs(tmp_path: Path) -> None:
    settings = make_settings(COLONY_DATA_DIR=str(tmp_path), COLONY_WORKSPACE_MAX_AGE_H="1")
    for run in ("live", "over", "idle"):
        ws.workspace_for(settings, "t", run)
    two_hours_ago = time.time() - 7200
    os.utime(ws.workspace_path(settings, "t", "idle"), (two_hours_ago, two_hours_ago))
    asked: list[list[str]] = []

    async def live_runs(run_ids: list[str]) -> set[str]:
        asked.append(run_ids)
        return {"live", "idle"}

    assert await sweep_workspaces(settings, live_runs) == 2
    assert sorted(asked[0]) == ["idle", "live", "over"]
    assert [w.run_id for w in ws.stored_workspaces(settings)] == ["live"]


async def test_a_failing_sweep_is_logged_not_raised(tmp_path: Path) -> None:
    settings = make_settings(COLONY_DATA_DIR=str(tmp_path))
    ws.workspace_for(settings, "t", "r")

    async def postgres_down(run_ids: list[str]) -> set[str]:
        raise OSError("connection refused")

    assert await sweep_workspaces(settings, postgres_down) == 0
    assert ws.holds_workspace(settings, "t", "r")
