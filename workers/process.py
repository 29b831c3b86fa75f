"""A child process the stack supervisor owns: started, health-checked, stopped, restarted.

Children are started through `setpriv --pdeathsig TERM` so that they get SIGTERM when
the supervisor dies, even by SIGKILL: `colony up` never leaves orphans behind. The
same wrapper drops root for programs that refuse to run as root (Postgres).
"""

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import PortInUseError, StackError

log = logging.getLogger("colony.stack")

ReadyProbe = Callable[[], Awaitable[bool]]


@dataclass
class ProcessSpec:
    """How to run one child."""

    name: str
    argv: Sequence[str]
    log_path: Path
    ready: ReadyProbe | None = None
    ready_timeout: float = 60.0
    env: dict[str, str] | None = None
    cwd: Path | None = None
    run_as: str | None = None  # a user name; only honoured when we are root
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    umask: int = 0o077
    """Files the child creates (Temporal's database, say) are private to its user."""


class ManagedProcess:
    """One running child and its log file."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self._proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """Exit status once it has exited (negative: killed by that signal)."""
        return self._proc.returncode if self._proc else None

    def running(self) -> bool:
        """Whether the child is alive."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the child and wait until its ready probe passes.

        Raises:
            StackError: it exited or did not become ready in time (with its log tail).
        """
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log_path.open("ab") as out:
            self.spec.log_path.chmod(0o600)  # logs hold objectives and errors
            out.write(
                f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.spec.name}\n".encode()
            )
            out.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *_wrap(self.spec.argv, self.spec.run_as),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self.spec.env,
                cwd=self.spec.cwd,
                # Own process group: a Ctrl-C in the terminal reaches only the supervisor,
                # which then stops children in order.
                start_new_session=True,
                umask=self.spec.umask,
            )
        self.started_at = time.monotonic()
        if self.spec.ready is None:
            return
        deadline = time.monotonic() + self.spec.ready_timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise StackError(
                    f"{self.spec.name} exited during start-up ({describe_exit(self.returncode)})"
                    f"; last lines of {self.spec.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if await self.spec.ready():
                    return
            await asyncio.sleep(0.2)
        await self.stop()
        raise StackError(
            f"{self.spec.name} did not become ready within {self.spec.ready_timeout:.0f}s; "
            f"last lines of {self.spec.log_path}:\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """Send the stop signal, wait up to `stop_timeout`, then SIGKILL the process group."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(self.spec.stop_signal)
        try:
            await asyncio.wait_for(proc.wait(), self.spec.stop_timeout)
        except TimeoutError:
            log.warning(
                "%s did not stop within %.0fs; killing it", self.spec.name, self.spec.stop_timeout
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def wait(self) -> int:
        """Wait for the child to exit; returns its exit status."""
        assert self._proc is not None
        return await self._proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's log."""
        try:
            data = self.spec.log_path.read_bytes()[-16384:]
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _wrap(argv: Sequence[str], run_as: str | None) -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if run_as and os.geteuid() == 0:
            raise StackError("setpriv (util-linux) is required to run Postgres as root")
        return list(argv)
    wrapper = [setpriv, "--pdeathsig", "TERM"]
    if run_as and os.geteuid() == 0:
        wrapper += [f"--reuid={run_as}", f"--regid={_group_of(run_as)}", "--clear-groups"]
    return [*wrapper, "--", *argv]


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def describe_exit(code: int | None) -> str:
    """`exit code 1` / `killed by SIGKILL` / `still running`."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def check_port_free(host: str, port: int, what: str, setting: str) -> None:
    """Raise PortInUseError naming the port and the setting to change if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} ({what}) is already in use; stop what uses it or set {setting} "
                "to another port",
                details={"port": port, "setting": setting},
            ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (tests, benchmarks, `colony up`'s worker metrics)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
