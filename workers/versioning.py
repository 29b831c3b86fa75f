"""Worker versioning: the Temporal worker deployment version this process's workers are.

With `COLONY_DEPLOYMENT_NAME` set, every worker of every lane polls as version
`{deployment}.{build id}` of that worker deployment. Temporal then sends a workflow's
tasks, and the activity tasks it schedules on the lanes, only to workers of the version
it is bound to: a PINNED workflow stays on the version it started on until it ends, an
AUTO_UPGRADE one moves to the deployment's current version at its next workflow task.
New workflows start on the current version (or the ramping one, for a share of them),
which `colony deploy promote` / `colony deploy ramp` set. So new code never replays a
pinned history, and replays an auto-upgrading one only after `colony replay` said it can.

Without a deployment name the workers are unversioned, as the embedded `colony up`: one
process, restarted with new code, replays what the old code wrote (`workflow.patched`).

The build id defaults to a hash of the code that decides what a workflow does
(`workflows/` and `core/`): a release that changes only activities keeps its build id,
so its workers join the running version as a plain rolling update, while one that
changes workflow code becomes a new version that old runs never see.
"""

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

import core
import workflows
from core.settings import Settings

log = logging.getLogger("colony.versioning")

Request = TypeVar("Request")
Response = TypeVar("Response")

BUSY_RETRIES = 8
"""Attempts of a routing change while Temporal answers that the deployment is busy."""

IDENTITY = "colony deploy"
"""Who changed the deployment's routing, as Temporal records it."""

SOURCE_ROOTS: tuple[Path, ...] = (
    Path(workflows.__file__).parent,
    Path(core.__file__).parent,
)
"""The code whose changes can change a workflow's commands: the build id hashes it."""


def code_build_id(roots: Sequence[Path] = SOURCE_ROOTS) -> str:
    """`{package version}-{12 hex digits}`: a hash of the Python sources under `roots`.

    Paths are hashed relative to their root, so the same code gives the same build id in
    any checkout or image.
    """
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}".encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return f"{_package_version()}-{digest.hexdigest()[:12]}"


def _package_version() -> str:
    try:
        return metadata.version("colony")
    except metadata.PackageNotFoundError:
        return "0"


@functools.cache
def _this_code_build_id() -> str:
    return code_build_id()


def build_id(settings: Settings) -> str:
    """`COLONY_BUILD_ID`, or the hash of this process's workflow code."""
    return settings.build_id or _this_code_build_id()


def worker_version(settings: Settings) -> WorkerDeploymentVersion | None:
    """The version this process's workers poll as; None when versioning is off."""
    if not settings.deployment_name:
        return None
    return WorkerDeploymentVersion(settings.deployment_name, build_id(settings))


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Every lane's `Worker(deployment_config=...)`; None when versioning is off.

    No default behavior: each workflow declares its own in `@workflow.defn`, and the SDK
    fails the workflow task of one that does not (tests/unit/test_versioning.py checks).
    """
    version = worker_version(settings)
    if version is None:
        return None
    return WorkerDeploymentConfig(version=version, use_worker_versioning=True)


@dataclass(frozen=True)
class VersionState:
    """One version of a deployment, as Temporal reports it."""

    build_id: str
    status: str
    """`current`, `ramping`, `draining` (pinned runs still on it), `drained`, `inactive`..."""


@dataclass(frozen=True)
class DeploymentState:
    """A worker deployment's routing: where new runs go, and the versions it knows."""

    name: str
    current_build_id: str | None
    """None: new runs go to unversioned workers."""
    ramping_build_id: str | None
    ramping_percentage: float
    versions: tuple[VersionState, ...]
    conflict_token: bytes


async def describe(client: Client, name: str) -> DeploymentState | None:
    """The deployment's routing and versions; None when no worker of it ever polled."""
    try:
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=name)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = response.worker_deployment_info
    routing = info.routing_config
    ramping = routing.ramping_deployment_version.build_id or None
    return DeploymentState(
        name=name,
        current_build_id=routing.current_deployment_version.build_id or None,
        ramping_build_id=ramping,
        ramping_percentage=routing.ramping_version_percentage if ramping else 0.0,
        versions=tuple(
            VersionState(
                build_id=summary.deployment_version.build_id,
                status=_status_name(summary.status),
            )
            for summary in info.version_summaries
        ),
        conflict_token=response.conflict_token,
    )


def _status_name(status: int) -> str:
    from temporalio.api.enums.v1 import WorkerDeploymentVersionStatus

    name = WorkerDeploymentVersionStatus.Name(status)  # type: ignore[arg-type]
    return name.removeprefix("WORKER_DEPLOYMENT_VERSION_STATUS_").lower()


async def set_current(
    client: Client,
    name: str,
    build_id: str,
    *,
    conflict_token: bytes = b"",
    ignore_missing_task_queues: bool = False,
) -> str | None:
    """Make `build_id` the deployment's current version; returns the previous build id.

    New runs start on it and AUTO_UPGRADE runs move to it at their next workflow task;
    PINNED runs stay where they are. Temporal refuses a version missing a task queue
    the current one has (a lane with no worker of the new build yet) unless
    `ignore_missing_task_queues`.
    """
    response = await _patiently(
        client.workflow_service.set_worker_deployment_current_version,
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace,
            deployment_name=name,
            build_id=build_id,
            conflict_token=conflict_token,
            identity=IDENTITY,
            ignore_missing_task_queues=ignore_missing_task_queues,
        ),
    )
    return response.previous_deployment_version.build_id or None


async def set_ramping(client: Client, name: str, build_id: str | None, percentage: float) -> None:
    """Send `percentage` of new runs to `build_id` (None: stop ramping)."""
    await _patiently(
        client.workflow_service.set_worker_deployment_ramping_version,
        SetWorkerDeploymentRampingVersionRequest(
            namespace=client.namespace,
            deployment_name=name,
            build_id=build_id or "",
            percentage=percentage if build_id else 0.0,
            identity=IDENTITY,
        ),
    )


async def _patiently(call: Callable[[Request], Awaitable[Response]], request: Request) -> Response:
    """`call(request)`, again while Temporal says it is busy with this deployment.

    It takes one routing change per deployment at a time and answers RESOURCE_EXHAUSTED
    to others meanwhile (also right after a version registers).
    """
    for attempt in range(BUSY_RETRIES):
        try:
            return await call(request)
        except RPCError as exc:
            if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED or attempt == BUSY_RETRIES - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


async def adopt_first_version(
    client: Client, version: WorkerDeploymentVersion, *, wait_s: float = 60.0
) -> bool:
    """Make `version` current if its deployment has no current version yet.

    A fresh deployment's first workers call this, so that it serves new runs without a
    manual promote; later versions wait for `colony deploy promote`. True if this call
    set it. Waits (up to `wait_s` seconds) for Temporal to register the version, which happens
    once its workers have polled.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            state = await describe(client, version.deployment_name)
            if state is not None and state.current_build_id is not None:
                return False
            if state is not None and any(v.build_id == version.build_id for v in state.versions):
                await set_current(
                    client,
                    version.deployment_name,
                    version.build_id,
                    conflict_token=state.conflict_token,
                )
                return True
        except RPCError as exc:
            # Another worker won the race (conflict token), the version is still being
            # registered, or Temporal asks to slow down (it limits the requests per
            # deployment while one is in flight): look again.
            if exc.status not in (
                RPCStatusCode.ABORTED,
                RPCStatusCode.FAILED_PRECONDITION,
                RPCStatusCode.NOT_FOUND,
                RPCStatusCode.RESOURCE_EXHAUSTED,
            ):
                raise
            log.debug("deployment %s not ready: %s", version.deployment_name, exc.message)
        if loop.time() >= deadline:
            raise TimeoutError(
                f"version {version.to_canonical_string()} was not registered in {wait_s:.0f} s"
            )
        await asyncio.sleep(1.0)
