"""Worker versioning settings, build ids and versioning behaviors; `colony replay`'s query."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.common import VersioningBehavior

from tests.conftest import make_settings
from workers import replay, versioning
from workers.registry import ALL_WORKFLOWS
from workflows.evolution import EvolutionWorkflow
from workflows.rollout import RolloutWorkflow

LONG_LIVED = {EvolutionWorkflow, RolloutWorkflow}
"""Workflows that wait for people or canary evidence for days: they must follow the
current version (AUTO_UPGRADE), or old workers could never be drained."""


def _behavior(cls: type) -> VersioningBehavior:
    return workflow._Definition.must_from_class(cls).versioning_behavior


@pytest.mark.parametrize("cls", ALL_WORKFLOWS, ids=lambda c: c.__name__)
def test_every_workflow_declares_its_versioning_behavior(cls: type) -> None:
    # Versioned workers get no default: an undeclared workflow would fail its tasks.
    expected = VersioningBehavior.AUTO_UPGRADE if cls in LONG_LIVED else VersioningBehavior.PINNED
    assert _behavior(cls) == expected


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_build_id_hashes_the_workflow_sources_wherever_they_are(tmp_path: Path) -> None:
    files = {"a.py": "x = 1\n", "sub/b.py": "y = 2\n", "notes.txt": "ignored"}
    one = _tree(tmp_path / "one" / "workflows", files)
    two = _tree(tmp_path / "two" / "workflows", files)
    assert versioning.code_build_id([one]) == versioning.code_build_id([two])
    (two / "notes.txt").write_text("still ignored")
    assert versioning.code_build_id([one]) == versioning.code_build_id([two])
    (two / "sub" / "b.py").write_text("y = 3\n")
    assert versioning.code_build_id([one]) != versioning.code_build_id([two])
    assert versioning.code_build_id([one]).startswith("0.1.0-")


def test_versioning_is_off_without_a_deployment_name() -> None:
    assert versioning.deployment_config(make_settings()) is None
    assert versioning.worker_version(make_settings(COLONY_BUILD_ID="x")) is None


def test_versioned_workers_use_the_configured_or_derived_build_id() -> None:
    config = versioning.deployment_config(
        make_settings(COLONY_DEPLOYMENT_NAME="colony-prod", COLONY_BUILD_ID="2026.12.1")
    )
    assert config is not None and config.use_worker_versioning
    assert config.version.to_canonical_string() == "colony-prod.2026.12.1"
    assert config.default_versioning_behavior == VersioningBehavior.UNSPECIFIED
    derived = versioning.worker_version(make_settings(COLONY_DEPLOYMENT_NAME="colony-prod"))
    assert derived is not None and derived.build_id == versioning.code_build_id()


def test_deployment_names_cannot_hold_a_dot() -> None:
    # `{name}.{build id}` is how Temporal names a version: the first dot splits it.
    with pytest.raises(ValueError, match="COLONY_DEPLOYMENT_NAME"):
        make_settings(COLONY_DEPLOYMENT_NAME="colony.prod")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", timedelta(minutes=30)), ("24h", timedelta(hours=24)), ("7d", timedelta(days=7))],
)
def test_parse_since(text: str, expected: timedelta) -> None:
    assert replay.parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "-1h", "1w"])
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        replay.parse_since(text)


def test_visibility_query() -> None:
    settings = make_settings(COLONY_TASK_QUEUE_SUFFIX="-blue")
    since = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)
    assert replay.visibility_query(settings, since=since) == (
        "TaskQueue = 'colony-orchestration-blue' AND "
        "(StartTime >= '2026-12-06T17:00:00Z' OR ExecutionStatus = 'Running')"
    )
    assert replay.visibility_query(
        settings, since=since, workflow_id="run-1", workflow_type="AgentRunWorkflow", running=False
    ) == (
        "TaskQueue = 'colony-orchestration-blue' AND StartTime >= '2026-12-06T17:00:00Z' "
        "AND WorkflowId = 'run-1' AND WorkflowType = 'AgentRunWorkflow'"
    )
    with pytest.raises(ValueError, match="quotes"):
        replay.visibility_query(settings, since=since, workflow_id="x' OR 'a' = 'a")
