"""Real bubblewrap sandboxes on a throwaway data directory (no mocks)."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.tools.framework import StaticToolRegistry, ToolContext, run_tool
from activities.tools.sandbox import BubblewrapSandbox, probe, sandbox_tools
from activities.tools.workspace import workspace_for
from core.payloads import ToolCallRequest
from core.settings import Settings
from core.tools.builtins import SandboxLimits
from tests.conftest import make_settings

TENANT = "tenant-a"
RUN = "run_0123456789abcdef01234567"

# Small limits keep the limit tests fast on two busy cores.
FAST = SandboxLimits(cpu_seconds=2, wall_seconds=5, max_processes=32, tmp_mb=8)


@pytest.fixture(scope="session")
def bwrap() -> BubblewrapSandbox:
    status = probe(make_settings())
    if not status.ok:
        pytest.skip(f"bubblewrap cannot run here: {status.detail}")
    return BubblewrapSandbox()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # pytest's tmp dirs are 0700 root: the sandbox must not need to traverse them.
    return make_settings(COLONY_DATA_DIR=str(tmp_path / "data"))


@pytest.fixture
def workspace(settings: Settings) -> Path:
    return workspace_for(settings, TENANT, RUN)


def ctx(run_id: str = RUN, tenant_id: str = TENANT) -> ToolContext:
    return ToolContext(tenant_id=tenant_id, run_id=run_id, step=1, now=datetime.now(UTC))


class Tools:
    """The sandbox tools of one worker, called the way the agent loop calls them."""

    def __init__(
        self, settings: Settings, backend: BubblewrapSandbox | None, limits: SandboxLimits
    ) -> None:
        self.registry = StaticToolRegistry(sandbox_tools(settings, backend=backend, limits=limits))

    async def call(self, name: str, arguments: str, run_id: str = RUN) -> str:
        request = ToolCallRequest(id="c1", name=name, arguments=arguments)
        return await run_tool(self.registry, request, ctx(run_id))


@pytest.fixture
def tools(settings: Settings, bwrap: BubblewrapSandbox) -> Iterator[Tools]:
    yield Tools(settings, bwrap, FAST)
