"""Colony's own processes for end-to-end tests: workers and API replicas as child processes,
killed with SIGKILL mid-work, and the check that no model call was made again after its
answer had been stored.

Every child gets `services.child_env(...)`: the session's payload keys and only the settings
the test gives it. `colony_env` adds the ones every Colony process of a test stack shares.
"""

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import httpx

from tests.support.model_server import RecordedRequest
from tests.support.services import child_env
from workers.process import ManagedProcess, ProcessSpec

ROOT = Path(__file__).resolve().parents[2]
SERVING = "worker serving lanes"
"""What a worker process logs once its Temporal workers poll (workers/main.py)."""

K = TypeVar("K", bound=Hashable)


def colony_env(
    *, temporal: str, database_url: str, model_url: str, suffix: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of one Colony process (API or worker) of a test stack."""
    return child_env(
        TEMPORAL_ADDRESS=temporal,
        DATABASE_URL=database_url,
        OPENAI_BASE_URL=model_url,
        COLONY_DEFAULT_MODEL="openai/scripted-model",
        COLONY_TASK_QUEUE_SUFFIX=suffix,
        COLONY_DATA_DIR=str(data_dir),
        COLONY_MEMORY_MAINTENANCE_EVERY="0",  # no schedule needed in tests
        PYTHONUNBUFFERED="1",
        **extra,
    )


async def start_worker(
    env: dict[str, str], log: Path, lanes: Iterable[str] = ("all",)
) -> asyncio.subprocess.Process:
    """`python -m workers.main --lane ...`, appending to `log`; not waited for."""
    argv = [arg for lane in lanes for arg in ("--lane", lane)]
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.main", *argv, env=env, cwd=ROOT,
            stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


def worker_replica(
    name: str, lane: str, env: dict[str, str], log_dir: Path, *, ready_timeout: float = 180
) -> ManagedProcess:
    """`colony worker --lane LANE` as a managed child; ready once it serves its lane."""
    log_path = log_dir / f"{name}.log"

    async def ready() -> bool:
        return SERVING in log_path.read_text(errors="replace")

    argv = [sys.executable, "-m", "workers.cli", "worker", "--lane", lane]
    spec = ProcessSpec(name=name, argv=argv, log_path=log_path, ready=ready,
                       ready_timeout=ready_timeout, env=env, cwd=ROOT)  # fmt: skip
    return ManagedProcess(spec)


def api_replica(
    name: str, port: int, env: dict[str, str], log_dir: Path, *, ready_timeout: float = 180
) -> ManagedProcess:
    """`colony api --port PORT` as a managed child; ready once /healthz answers."""

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            response = await http.get(f"http://127.0.0.1:{port}/healthz")
        return response.status_code in (200, 503)  # 503: some component is still starting

    argv = [sys.executable, "-m", "workers.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    spec = ProcessSpec(name=name, argv=argv, log_path=log_dir / f"{name}.log", ready=ready,
                       ready_timeout=ready_timeout, env=env, cwd=ROOT)  # fmt: skip
    return ManagedProcess(spec)


async def sigkill(process: ManagedProcess) -> None:
    """SIGKILL the child's process group (no shutdown of any kind) and reap it."""
    pid = process.pid
    assert pid is not None and process.running(), f"{process.spec.name} is not running"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    await process.wait()


def local_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets process `pid` holds (Linux /proc): with
    `RecordedRequest.client_port`, which process a request to a test server came from."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()  # sl local_address rem_address st ... uid timeout inode
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def calls_after_stored(
    requests: Iterable[RecordedRequest],
    stored: Mapping[K, float],
    key: Callable[[RecordedRequest], K | None],
    *,
    slack: float = 0.05,
) -> list[K]:
    """The keys of model requests made after the answer to them had been stored.

    `stored` maps a key to when its answer was stored (epoch seconds, e.g. a row's
    `created_at`); `key` names the answer a request asks for (None: not one of them).
    A request that was in flight when its worker died is fine; one made after the
    answer was stored is a completed call made again.
    """
    wall_offset = time.time() - time.monotonic()  # requests carry monotonic times
    repeated = []
    for request in requests:
        k = key(request)
        if k is not None and k in stored and request.received_at + wall_offset > stored[k] + slack:
            repeated.append(k)
    return repeated
