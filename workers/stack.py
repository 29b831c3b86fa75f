"""`colony up`: the embedded stack supervisor.

Starts, health-checks and supervises, in this order: Postgres (unless DATABASE_URL is
set), migrations and the local admin key, Temporal + UI (unless TEMPORAL_ADDRESS is
set), the workers, the API. A child that dies is restarted with exponential backoff
and the reason is logged. SIGINT/SIGTERM stop everything in reverse order; children
also get SIGTERM if the supervisor itself is killed (see workers.process), so nothing
is left behind. An exclusive lock on the data dir makes a second `colony up` report
the running stack instead of starting a second one on the same files.
"""

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Self, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
from temporalio.client import Client

from core import db, health, tenants
from core.errors import ColonyError, StackError
from core.providers import LOCAL_MODEL, default_model, describe_provider, local_model_installed
from core.queues import TaskQueue
from core.settings import LOCAL_HOST, Settings
from workers import model_server, postgres_server, temporal_server
from workers.process import (
    ManagedProcess,
    ProcessSpec,
    check_port_free,
    describe_exit,
    free_port,
)

log = logging.getLogger("colony.stack")

LOCK_FILE = "colony-up.lock"
STATE_FILE = "stack.json"
_BACKOFF_START = 1.0
_BACKOFF_MAX = 30.0
_STABLE_AFTER = 60.0  # a child that ran this long gets its backoff reset


class AlreadyRunning(ColonyError):
    """Another `colony up` holds the data dir."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__("Colony is already running on this data dir", details=state)
        self.state = state


@dataclass
class _Child:
    process: ManagedProcess
    backoff: float = _BACKOFF_START
    restarts: int = 0
    restart_at: float | None = None


@dataclass
class StackOptions:
    """How `colony up` runs (CLI flags)."""

    split_lanes: bool = False
    start_api: bool = True
    fsync: bool = True
    ready_timeout: float = 120.0


# The secret settings a stack records by name only: whether each is set, never its value.
KEY_VARIABLES = {
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "OPENAI_API_KEY": "openai_api_key",
    "E2B_API_KEY": "e2b_api_key",
}


def without_credentials(url: str | None) -> str | None:
    """`url` without user info, query and fragment, the parts that may hold credentials."""
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


@dataclass(frozen=True)
class WorkerConfig:
    """The settings a stack's workers run with, minus secrets (`stack.json` "config")."""

    default_model: str
    openai_base_url: str | None
    local_model_url: str
    keys_set: list[str]  # names from KEY_VARIABLES that are set
    task_queue_suffix: str = ""
    qdrant_url: str | None = None
    postgres_port: int | None = None  # the embedded Postgres; None: DATABASE_URL

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """What a process with `settings` (a worker, or the shell running the doctor) uses."""
        return cls(
            default_model=default_model(settings),
            openai_base_url=without_credentials(settings.openai_base_url),
            local_model_url=settings.effective_local_model_url,
            keys_set=[k for k, f in KEY_VARIABLES.items() if getattr(settings, f) is not None],
            task_queue_suffix=settings.task_queue_suffix,
            qdrant_url=without_credentials(settings.qdrant_url),
            postgres_port=settings.postgres_port if settings.database_url is None else None,
        )


@dataclass
class StackState:
    """What a running stack publishes in `stack.json`."""

    pid: int
    api_url: str
    temporal_address: str
    temporal_ui_url: str | None
    database: str
    namespace: str
    started_at: float
    children: dict[str, int] = field(default_factory=dict)
    config: WorkerConfig | None = None  # None in files written before it was recorded

    @classmethod
    def of(cls, settings: Settings, children: dict[str, int] | None = None) -> Self:
        """The state of a stack this process runs with `settings`."""
        return cls(
            pid=os.getpid(),
            api_url=settings.effective_api_url,
            temporal_address=settings.effective_temporal_address,
            temporal_ui_url=settings.effective_temporal_ui_url,
            database="embedded" if settings.database_url is None else "external (DATABASE_URL)",
            namespace=settings.temporal_namespace,
            started_at=time.time(),
            children=children or {},
            config=WorkerConfig.of(settings),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Parse `stack.json`; raises TypeError or ValueError when it is not a stack state."""
        config = record.get("config")
        own = {f.name for f in fields(cls)} - {"config"}
        names = {f.name for f in fields(WorkerConfig)}
        return cls(
            **{k: v for k, v in record.items() if k in own},
            config=WorkerConfig(**{k: v for k, v in config.items() if k in names})
            if isinstance(config, dict)
            else None,
        )


class Stack:
    """The supervisor. `await Stack(settings).run(stop_event)` runs until the event is set."""

    def __init__(self, settings: Settings, options: StackOptions | None = None) -> None:
        self.settings = settings
        self.options = options or StackOptions()
        self.data = settings.data_path
        self.logs = self.data / "logs"
        self._children: list[_Child] = []
        self._lock_handle: TextIO | None = None
        self.state: StackState | None = None
        self.metrics_targets: dict[str, str] = {}  # worker name -> its /metrics URL

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Start everything, supervise until `stop` is set, then stop everything."""
        self._acquire_lock()
        try:
            # Ctrl-C during start-up must not wait for every component to come up.
            starting = asyncio.ensure_future(self._start_all())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                return
            starting.result()  # re-raise a start-up failure
            self._write_state()
            if ready is not None:
                ready.set()
            await self._supervise(stop)
        finally:
            await self._stop_all()
            self._release_lock()

    def _acquire_lock(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        # The data dir holds the admin key and the Postgres password: private, except
        # that a root stack's unprivileged Postgres must traverse it to reach its cluster.
        self.data.chmod(0o700 if postgres_server.run_as_user() is None else 0o711)
        self.logs.mkdir(mode=0o700, exist_ok=True)
        self.logs.chmod(0o700)  # logs hold objectives, answers and errors
        handle = (self.data / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AlreadyRunning(read_state(self.data) or {}) from None
        self._lock_handle = handle

    def _release_lock(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data / STATE_FILE).unlink()
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    async def _start_all(self) -> None:
        s = self.settings
        provider = describe_provider(s)
        local_model = provider.default_model.startswith("local/") and local_model_installed()
        self._check_ports(local_model)
        if s.database_url is None:
            await self._start_postgres()
        applied = await db.migrate(s.effective_database_url)
        log.info("Postgres ready (%s migration(s) applied now)", len(applied))
        async with await db.connect(s.effective_database_url, autocommit=True) as conn:
            key_path = await tenants.ensure_admin_key_file(conn, self.data)
        log.info("admin API key for tenant %r in %s", tenants.LOCAL_TENANT, key_path)
        await self._start_temporal()
        if local_model:
            await self._start_local_model()
        elif provider.configured:
            log.info("model provider: %s (%s)", provider.default_model, provider.detail)
        else:
            log.warning("no model provider: %s", provider.detail)
        await self._start_workers()
        if self.options.start_api:
            await self._start(self._api_spec())
            log.info("API ready at %s", s.effective_api_url)

    def _check_ports(self, local_model: bool) -> None:
        """Fail before starting anything, naming the port and the setting to change."""
        s = self.settings
        wanted: list[tuple[str, int, str, str]] = []
        if s.database_url is None:
            wanted.append(
                (LOCAL_HOST, s.postgres_port, "embedded Postgres", "COLONY_POSTGRES_PORT")
            )
        if s.temporal_address is None:
            wanted.append((LOCAL_HOST, s.temporal_port, "Temporal gRPC", "COLONY_TEMPORAL_PORT"))
            wanted.append(
                (LOCAL_HOST, s.temporal_ui_port, "Temporal UI", "COLONY_TEMPORAL_UI_PORT")
            )
        if self.options.start_api:
            wanted.append((s.api_host, s.api_port, "Colony API", "COLONY_API_PORT"))
        if local_model:
            wanted.append(
                (LOCAL_HOST, s.local_model_port, "local model server", "COLONY_LOCAL_MODEL_PORT")
            )
        if s.metrics_port:
            for i in range(len(TaskQueue) if self.options.split_lanes else 1):
                port = s.metrics_port + i
                wanted.append((LOCAL_HOST, port, "worker metrics", "COLONY_METRICS_PORT"))
        for host, port, what, setting in wanted:
            check_port_free(host, port, what, setting)

    async def _start_postgres(self) -> None:
        s = self.settings
        pgdata = self.data / "postgres"
        password = postgres_server.ensure_password_file(self.data)
        if postgres_server.init_cluster(pgdata, password):
            log.info("created Postgres cluster in %s", pgdata)
        log_path = self.logs / "postgres.log"
        await self._start(
            postgres_server.server_spec(
                pgdata, s.postgres_port, log_path, fsync=self.options.fsync, password=password
            )
        )
        if await postgres_server.require_password(pgdata, s.postgres_port, password):
            log.info("Postgres now requires the password in %s", self.data / "postgres-password")
        await db.ensure_database(s.effective_database_url)

    async def _start_temporal(self) -> None:
        s = self.settings
        if s.temporal_address is not None:
            status = await health.timed("temporal", lambda: health.check_temporal(s), limit=15)
            if not status.ok:
                raise StackError(
                    f"TEMPORAL_ADDRESS is set but Temporal is not reachable: {status.detail}"
                )
            return
        state = self.data / "temporal"
        state.mkdir(mode=0o700, exist_ok=True)
        state.chmod(0o700)  # run objectives and results live in its database
        for path in state.glob("temporal.db*"):  # files an older version left readable
            path.chmod(0o600)
        await self._start(self.temporal_spec())
        log.info(
            "Temporal ready at %s, UI at %s",
            s.effective_temporal_address,
            s.effective_temporal_ui_url,
        )

    def temporal_spec(self) -> ProcessSpec:
        """The embedded dev server; its UI decodes payloads through the API's `/codec`."""
        s = self.settings
        return temporal_server.server_spec(
            port=s.temporal_port, ui_port=s.temporal_ui_port, namespace=s.temporal_namespace,
            db_file=self.data / "temporal" / "temporal.db", log_path=self.logs / "temporal.log",
            ui_codec_endpoint=f"{s.effective_api_url}/codec",
        )  # fmt: skip

    async def _start_workers(self) -> None:
        s = self.settings
        client = await Client.connect(s.effective_temporal_address, namespace=s.temporal_namespace)
        split = self.options.split_lanes
        for i, lanes in enumerate([[q] for q in TaskQueue] if split else [list(TaskQueue)]):
            name = "worker-" + (lanes[0].lane if split else "all")
            # Each worker serves its metrics on its own port (COLONY_METRICS_PORT + i, or a
            # free one); the API's /metrics includes them all (COLONY_METRICS_TARGETS).
            port = s.metrics_port + i if s.metrics_port else free_port(LOCAL_HOST)
            self.metrics_targets[name] = f"http://{LOCAL_HOST}:{port}/metrics"
            await self._start(self._worker_spec(name, lanes, client, port))
        log.info(
            "workers ready (%s)", "one process per lane" if split else "one process, all lanes"
        )

    async def _start_local_model(self) -> None:
        s = self.settings
        await self._start(
            model_server.server_spec(s.local_model_port, self.logs / "local-model.log")
        )
        log.info(
            "local model %s ready at %s. It is tiny (135M parameters): set ANTHROPIC_API_KEY or "
            "OPENAI_API_KEY (or COLONY_DEFAULT_MODEL) for real work",
            LOCAL_MODEL, s.effective_local_model_url,
        )  # fmt: skip

    def _child_env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            COLONY_DATA_DIR=str(self.data),
            TEMPORAL_ADDRESS=s.effective_temporal_address,
            TEMPORAL_NAMESPACE=s.temporal_namespace,
            DATABASE_URL=s.effective_database_url,
            COLONY_LOCAL_MODEL_URL=s.effective_local_model_url,
            PYTHONUNBUFFERED="1",
        )
        if s.temporal_address is None and s.effective_temporal_ui_url:
            # Children see an external-looking address; keep the UI links pointing home.
            env["COLONY_TEMPORAL_UI_URL"] = s.effective_temporal_ui_url
        return env

    def _worker_spec(
        self, name: str, lanes: list[TaskQueue], client: Client, metrics_port: int
    ) -> ProcessSpec:
        argv = [sys.executable, "-m", "workers.main"]
        env = {**self._child_env(), "COLONY_METRICS_PORT": str(metrics_port),
               "COLONY_METRICS_HOST": LOCAL_HOST}  # fmt: skip
        for q in lanes:
            argv += ["--lane", q.lane]

        async def ready() -> bool:
            statuses = await health.check_workers(self.settings, client)
            wanted = {f"worker:{q.lane}" for q in lanes}
            return all(st.ok for st in statuses if st.name in wanted)

        return ProcessSpec(name=name, argv=argv, env=env, log_path=self.logs / f"{name}.log",
                           ready=ready, ready_timeout=self.options.ready_timeout)  # fmt: skip

    def _api_spec(self) -> ProcessSpec:
        s = self.settings
        argv = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
                "--host", s.api_host, "--port", str(s.api_port), "--no-access-log"]  # fmt: skip
        url = s.effective_api_url + "/healthz"

        async def ready() -> bool:
            async with httpx.AsyncClient(timeout=2) as http:
                response = await http.get(url)
            return response.status_code in (200, 503)

        env = {**self._child_env(), "COLONY_METRICS_TARGETS": json.dumps(self.metrics_targets)}
        return ProcessSpec(name="api", argv=argv, env=env, log_path=self.logs / "api.log",
                           ready=ready, ready_timeout=self.options.ready_timeout)  # fmt: skip

    async def _start(self, spec: ProcessSpec) -> None:
        process = ManagedProcess(spec)
        log.info("starting %s", spec.name)
        # Tracked before it starts, so a failed or cancelled start-up still stops it.
        self._children.append(_Child(process))
        await process.start()

    async def _supervise(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for child in self._children:
                proc = child.process
                if proc.running():
                    if now - proc.started_at > _STABLE_AFTER:
                        child.backoff = _BACKOFF_START
                    continue
                if child.restart_at is None:
                    child.restart_at = now + child.backoff
                    log.warning(
                        "%s died (%s); restarting in %.0fs. Last lines of %s:\n%s",
                        proc.spec.name, describe_exit(proc.returncode), child.backoff,
                        proc.spec.log_path, proc.log_tail(10),
                    )  # fmt: skip
                elif now >= child.restart_at:
                    child.restart_at = None
                    child.restarts += 1
                    child.backoff = min(child.backoff * 2, _BACKOFF_MAX)
                    try:
                        await proc.start()
                        log.info("%s restarted (restart #%d)", proc.spec.name, child.restarts)
                        self._write_state()
                    except StackError as exc:
                        log.error("%s failed to restart: %s", proc.spec.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def kill_all(self) -> None:
        """SIGKILL every child's process group at once (second Ctrl-C)."""
        for child in self._children:
            pid = child.process.pid
            if pid is not None and child.process.running():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            if child.process.running():
                log.info("stopping %s", child.process.spec.name)
            await child.process.stop()
        self._children.clear()

    # -- state file --------------------------------------------------------------

    def _write_state(self) -> None:
        children = {c.process.spec.name: c.process.pid or 0 for c in self._children}
        self.state = StackState.of(self.settings, children)
        write_state(self.data, self.state)


def write_state(data_dir: Path, state: StackState) -> None:
    """Publish `state` in `data_dir/stack.json` (atomically)."""
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The running stack's `stack.json`, if any."""
    try:
        state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def running_stack_state(data_dir: Path) -> StackState | None:
    """The state of the stack running on `data_dir`; None when none runs (or it was killed)."""
    record = read_state(data_dir)
    if record is None:
        return None
    try:
        state = StackState.from_record(record)
        if int(state.pid) <= 0:  # os.kill would signal a whole group
            return None
        os.kill(int(state.pid), 0)
    except (TypeError, ValueError, AttributeError, ProcessLookupError):
        return None
    except PermissionError:  # alive, but another user's
        pass
    return state


async def serve(
    settings: Settings,
    options: StackOptions,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the stack until SIGINT/SIGTERM or `stop` is set (a second signal kills at once)."""
    stop = stop or asyncio.Event()
    stack = Stack(settings, options)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: killing children now")
            stack.kill_all()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stack.run(stop, ready)
