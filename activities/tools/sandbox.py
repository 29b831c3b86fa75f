"""Sandboxed code execution: limits, backends, and the run_python/run_shell/file tools.

Model-written code runs in a `Sandbox`. The default backend is bubblewrap (a fresh set
of Linux namespaces per call, see docs/decisions/0003-sandbox.md); E2B (remote
microVMs) is used when `E2B_API_KEY` is set. When no backend can run, the tools refuse
with `SandboxUnavailable`: nothing ever falls back to running unsandboxed.

    select_backend(settings) -> Sandbox.run(workspace, language, code, limits) -> ExecResult

Each call is a new process tree; what persists between calls of a run is its workspace
directory (activities.tools.workspace), mounted at /workspace.
"""

import asyncio
import contextlib
import functools
import io
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from activities.tools import workspace as ws
from activities.tools.framework import ToolContext, ToolDefinition, ToolError, ToolExecutionError
from core.errors import ErrorType
from core.settings import Settings
from core.tools.builtins import MIB, SandboxLimits
from core.tools.builtins import sandbox_tools as describe_sandbox_tools
from core.tools.names import LIST_FILES, READ_FILE, RUN_PYTHON, RUN_SHELL, WRITE_FILE

Language = Literal["python", "shell"]

OUTPUT_KILL_FACTOR: Final = 16
"""A stream this many times over `max_output_bytes` gets the sandbox killed."""

_KILL_GRACE_SECONDS: Final = 5.0


@dataclass(frozen=True)
class ExecResult:
    """What one sandboxed call did. `exit_code` is None when the sandbox was killed."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    killed_reason: str | None = None
    """"cpu", "memory", "file size", "wall clock", "output limit", or None."""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: float = 0.0
    stdout_dropped: int = 0
    """Bytes of stdout not kept (a lower bound when the sandbox was killed for output)."""
    stderr_dropped: int = 0
    notes: tuple[str, ...] = field(default=())

    def render(self) -> str:
        """Compact text for the model: status, stdout, stderr, truncation and limit notes."""
        lines = [self._status()]
        for label, text, truncated, dropped in (
            ("stdout", self.stdout, self.stdout_truncated, self.stdout_dropped),
            ("stderr", self.stderr, self.stderr_truncated, self.stderr_dropped),
        ):
            if not text and not truncated:
                continue
            lines.append(f"--- {label} ---")
            lines.append(text.rstrip("\n"))
            if truncated:
                lines.append(f"[{label} truncated: {dropped} more bytes not shown]")
        if not self.stdout and not self.stderr:
            lines.append("(no output)")
        lines.extend(f"[{note}]" for note in self.notes)
        return "\n".join(lines)

    def _status(self) -> str:
        if self.killed_reason == "wall clock":
            return "killed: wall-clock time limit reached"
        if self.killed_reason == "output limit":
            return "killed: the program printed far more than the output limit"
        code = f"exit code: {self.exit_code}"
        if self.killed_reason == "cpu":
            return f"{code} (killed: CPU time limit reached)"
        if self.killed_reason == "file size":
            return f"{code} (killed: file size limit reached)"
        if self.killed_reason == "memory":
            return f"{code} (out of memory: memory limit reached)"
        if self.exit_code is not None and 128 < self.exit_code < 128 + 65:
            try:
                name = signal.Signals(self.exit_code - 128).name
            except ValueError:
                return code
            return f"{code} (terminated by {name})"
        return code


class SandboxUnavailable(ToolError):
    """No sandbox backend can run code here (or it failed to start); nothing was run."""

    error_type = ErrorType.SANDBOX_UNAVAILABLE


NO_BACKEND_MESSAGE: Final = (
    "No sandbox backend is available: install bubblewrap (apt-get install bubblewrap) "
    "or set E2B_API_KEY; code is never run unsandboxed."
)


class Sandbox(Protocol):
    """Runs code in isolation with `workspace` mounted read-write at /workspace."""

    name: str

    async def run(
        self, workspace: Path, language: Language, code: str, limits: SandboxLimits
    ) -> ExecResult:
        """Run `code` once; a non-zero exit is a result, not an error.

        Raises:
            SandboxUnavailable: the backend cannot run code (nothing was run).
        """
        ...


# -- bubblewrap --------------------------------------------------------------------

SYSTEM_PYTHON: Final = "/usr/bin/python3"
_CODE_DIR: Final = "/run/colony"
_INNER_UID: Final = 65534  # the uid code sees inside the user namespace
_BWRAP_ENV: Final = {"PATH": "/usr/bin:/bin"}  # nothing of the worker's environment
_INNER_ENV: Final = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/workspace",
    "USER": "sandbox",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
    "TMPDIR": "/tmp",
    "PYTHONPATH": "/workspace",
    "PYTHONUNBUFFERED": "1",  # output printed before a kill is not lost in a buffer
    "PYTHONDONTWRITEBYTECODE": "1",
}
_ETC: Final = {
    "passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"sandbox:x:{_INNER_UID}:{_INNER_UID}:sandbox:/workspace:/bin/sh\n",
    "group": f"root:x:0:\nsandbox:x:{_INNER_UID}:\n",
    "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
    # files only: name lookups fail at once instead of waiting on an unreachable DNS.
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}
_ROOT_LINKS: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@functools.cache
def _bwrap_help(bwrap: str) -> str:
    try:
        result = subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout + result.stderr


@dataclass
class _Launch:
    argv: list[str]
    fds: list[int]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _util(name: str) -> str | None:
    return shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")


class BubblewrapSandbox:
    """Runs each call in new namespaces with bubblewrap; see docs/decisions/0003-sandbox.md.

    Inside: uid 65534 in a user namespace that cannot create further ones, no
    capabilities, no network (an empty network namespace), its own pid namespace and
    /proc, read-only /usr and a synthetic /etc, small in-memory /tmp and /dev/shm, and
    the run's workspace at /workspace. rlimits are set by `prlimit` inside the user
    namespace, so the process cap counts this sandbox's processes only; the wall clock
    and output caps are enforced from here. Processes start with an OOM score of 1000, so
    the kernel's OOM killer picks them first (code could lower it again: best effort).

    A root worker runs two stages: a privileged bwrap that only makes private mount and
    pid namespaces in which the workspace appears at a path anyone can traverse, then
    `setpriv` to uid 65534 and the unprivileged bwrap above. So the code's processes
    never belong to host root (who is exempt from RLIMIT_NPROC), and the data directory
    may stay private (bwrap resolves bind sources as the uid it runs as).
    """

    name = "bubblewrap"

    def __init__(self, *, bwrap: str | None = None, python: str = SYSTEM_PYTHON) -> None:
        self._bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self._python = python
        self._shell = _util("bash") or "/bin/sh"
        self._prlimit = _util("prlimit")
        self._setpriv = _util("setpriv")
        self._choom = _util("choom")

    def missing(self) -> str | None:
        """What this machine lacks to run the backend, or None."""
        if shutil.which(self._bwrap) is None:
            return "bwrap not found (apt-get install bubblewrap)"
        if not os.access(self._python, os.X_OK):
            return f"{self._python} not found (apt-get install python3)"
        if self._prlimit is None or (os.geteuid() == 0 and self._setpriv is None):
            return "prlimit/setpriv not found (apt-get install util-linux)"
        return None

    def _launch(
        self, workspace: Path, language: Language, code: str, limits: SandboxLimits
    ) -> _Launch:
        """The command line and descriptors for one call (the caller closes the fds)."""
        help_text = _bwrap_help(self._bwrap)
        prefix: list[str] = []
        source = str(workspace)
        if os.geteuid() == 0:
            source = "/tmp/workspace"
            uid = str(ws.SANDBOX_UID)
            # Its own pid namespace: when it dies, everything started under it dies too
            # (a parent-death signal does not survive setpriv's change of uid).
            prefix = [
                self._bwrap, "--unshare-pid", "--dev-bind", "/", "/", "--tmpfs", "/tmp",
                "--bind", str(workspace), source, "--die-with-parent", "--",
                str(self._setpriv), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
            ]  # fmt: skip
        if self._choom is not None:
            # First in line, outside any pid namespace: choom names its process by pid.
            prefix = [self._choom, "-n", "1000", "--", *prefix]
        argv = [
            self._bwrap, "--unshare-all", "--unshare-user", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--uid", str(_INNER_UID),
            "--gid", str(_INNER_UID), "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        if "--disable-userns" in help_text:
            argv.append("--disable-userns")
        for name in _ROOT_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), str(host)]
        # The loader cache (libraries in multiarch dirs) and the targets of /usr/bin links.
        argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        argv += ["--ro-bind-try", "/etc/alternatives", "/etc/alternatives"]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        size = ["--size", str(limits.tmp_mb * MIB)] if "--size" in help_text else []
        argv += ["--perms", "1777", *size, "--tmpfs", "/dev/shm"]
        argv += ["--perms", "1777", *size, "--tmpfs", "/tmp"]
        argv += ["--bind", source, "/workspace"]
        script = f"{_CODE_DIR}/main.{'py' if language == 'python' else 'sh'}"
        files = {f"/etc/{name}": text.encode() for name, text in _ETC.items()}
        files[script] = code.encode("utf-8", errors="surrogatepass")
        fds: list[int] = []
        try:
            for path, data in files.items():
                fds.append(_memfd(Path(path).name, data))
                argv += ["--perms", "0444", "--ro-bind-data", str(fds[-1]), path]
        except BaseException:
            _Launch([], fds).close()
            raise
        argv += ["--remount-ro", "/", "--chdir", "/workspace", "--clearenv"]
        for key, value in _INNER_ENV.items():
            argv += ["--setenv", key, value]
        argv += [
            "--", str(self._prlimit),
            f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
            f"--as={limits.memory_mb * MIB}",
            f"--nproc={limits.max_processes}",
            f"--fsize={limits.max_workspace_mb * MIB}",
            "--core=0", "--nofile=1024", "--",
            self._python if language == "python" else self._shell, script,
        ]  # fmt: skip
        return _Launch([*prefix, *argv], fds)

    def _check(self) -> None:
        missing = self.missing()
        if missing is not None:
            raise SandboxUnavailable(f"{NO_BACKEND_MESSAGE} ({missing})")

    async def run(
        self, workspace: Path, language: Language, code: str, limits: SandboxLimits
    ) -> ExecResult:
        """Run `code` in a new sandbox; see `Sandbox.run`."""
        self._check()
        started = time.monotonic()
        launch = self._launch(workspace, language, code, limits)
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_BWRAP_ENV,
                pass_fds=launch.fds,
                start_new_session=True,
            )
        finally:
            launch.close()
        return await _supervise(proc, limits, started)

    def run_blocking(
        self, workspace: Path, language: Language, code: str, limits: SandboxLimits
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `code` synchronously with output held in memory (for probes, not for models)."""
        self._check()
        launch = self._launch(workspace, language, code, limits)
        try:
            return subprocess.run(
                launch.argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=_BWRAP_ENV,
                pass_fds=launch.fds,
                start_new_session=True,
                timeout=limits.wall_seconds,
                check=False,
            )
        finally:
            launch.close()


class _Capture:
    """The first `cap` bytes of a stream, and how many there were in all."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @property
    def dropped(self) -> int:
        return self.total - len(self.data)


async def _drain(
    stream: asyncio.StreamReader | None, capture: _Capture, kill_at: int, kill: Any
) -> None:
    # Keep reading to EOF even after a kill: a paused pipe would never see EOF.
    if stream is None:
        return
    while chunk := await stream.read(64 * 1024):
        capture.add(chunk)
        if capture.total > kill_at:
            kill("output limit")


_MEMORY_MARKERS: Final = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc")


def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return  # reaped: its pid (and group id) may already belong to someone else
    # The group holds bwrap (both stages); bwrap's pid namespaces take the code with them.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def _supervise(
    proc: asyncio.subprocess.Process, limits: SandboxLimits, started: float
) -> ExecResult:
    """Collect capped output, enforce the wall clock, and classify how the call ended."""
    reasons: list[str] = []

    def kill(reason: str) -> None:
        if not reasons:
            reasons.append(reason)
        _terminate(proc)

    out, err = _Capture(limits.max_output_bytes), _Capture(limits.max_output_bytes)
    kill_at = limits.max_output_bytes * OUTPUT_KILL_FACTOR
    tasks = [
        asyncio.create_task(_drain(proc.stdout, out, kill_at, kill)),
        asyncio.create_task(_drain(proc.stderr, err, kill_at, kill)),
        asyncio.create_task(proc.wait()),
    ]
    try:
        _, pending = await asyncio.wait(tasks, timeout=limits.wall_seconds)
        if pending:
            kill("wall clock")
            _, pending = await asyncio.wait(pending, timeout=_KILL_GRACE_SECONDS)
    finally:
        if proc.returncode is None:  # cancelled, or did not die within the grace period
            _terminate(proc)
            await proc.wait()
        for task in tasks:
            task.cancel()
    duration_ms = (time.monotonic() - started) * 1000
    reason = reasons[0] if reasons else None
    exit_code = None if reason else proc.returncode
    if exit_code is not None and reason is None:
        if exit_code == 1 and not out.total and err.data.startswith(b"bwrap: "):
            first = err.text().splitlines()[0][:300]
            raise SandboxUnavailable(f"The sandbox failed to start ({first}); nothing was run.")
        reason = _exit_reason(exit_code, bytes(err.data[-4096:]))
    return ExecResult(
        exit_code=exit_code,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=reason == "wall clock",
        killed_reason=reason,
        stdout_truncated=out.dropped > 0,
        stderr_truncated=err.dropped > 0,
        duration_ms=duration_ms,
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
    )


def _exit_reason(exit_code: int, stderr_tail: bytes) -> str | None:
    # bwrap (and shells) report death by signal N as exit code 128 + N.
    if exit_code == 128 + signal.SIGXCPU:
        return "cpu"
    if exit_code == 128 + signal.SIGXFSZ:
        return "file size"
    if exit_code != 0 and any(marker in stderr_tail for marker in _MEMORY_MARKERS):
        return "memory"  # a heuristic: RLIMIT_AS makes allocations fail, not a signal
    return None


# -- E2B ---------------------------------------------------------------------------

_E2B_MISSING: Final = (
    "E2B_API_KEY is set but the E2B client is not installed: pip install colony[e2b]"
)


def _import_e2b() -> Any:
    try:
        import e2b_code_interpreter  # optional dependency
    except ImportError:
        raise SandboxUnavailable(_E2B_MISSING) from None
    return e2b_code_interpreter


class E2BSandbox:
    """Runs each call in a fresh E2B microVM (internet access off).

    The run's workspace is the local directory: it is uploaded as a tar before the call
    and the VM's /workspace is downloaded and unpacked back after it (links leaving the
    workspace and special files are dropped), so the file tools and later calls see
    what the code wrote. Limits inside the VM: `ulimit` and `timeout`. Not tested here
    (no network in CI); see docs/decisions/0003-sandbox.md.
    """

    name = "e2b"

    def __init__(self, api_key: str, *, template: str | None = None) -> None:
        self._api_key = api_key
        self._template = template

    async def run(
        self, workspace: Path, language: Language, code: str, limits: SandboxLimits
    ) -> ExecResult:
        """Run `code` in a new E2B sandbox; see `Sandbox.run`."""
        e2b = _import_e2b()
        started = time.monotonic()
        limit = limits.max_workspace_mb * MIB
        archive = await asyncio.to_thread(pack_workspace, workspace, limit)
        try:
            box = await e2b.AsyncSandbox.create(
                template=self._template,
                api_key=self._api_key,
                timeout=int(limits.wall_seconds) + 300,
                allow_internet_access=False,
            )
        except TypeError:
            raise SandboxUnavailable(
                "The installed E2B client cannot turn off internet access: "
                "pip install -U colony[e2b]"
            ) from None
        try:
            script = f"/tmp/colony/main.{'py' if language == 'python' else 'sh'}"
            await box.files.write("/tmp/colony/in.tar", archive)
            await box.files.write(script, code)
            await box.commands.run(
                "mkdir -p /workspace && tar -xf /tmp/colony/in.tar -C /workspace"
                " && chown -R user:user /workspace",
                user="root",
                timeout=120,
            )
            interpreter = "python3" if language == "python" else "bash"
            command = (
                f"ulimit -c 0 -t {limits.cpu_seconds} -v {limits.memory_mb * 1024}"
                f" -u {limits.max_processes} -f {limits.max_workspace_mb * 1024};"
                f" exec timeout -s KILL {limits.wall_seconds} {interpreter} {script}"
            )
            timed_out = False
            try:
                done = await box.commands.run(
                    f"bash -c {shlex.quote(command)}",
                    cwd="/workspace",
                    envs={"HOME": "/workspace", "PYTHONUNBUFFERED": "1"},
                    timeout=limits.wall_seconds + 30,
                )
                exit_code, stdout, stderr = done.exit_code, done.stdout, done.stderr
            except e2b.CommandExitException as exc:
                exit_code, stdout, stderr = exc.exit_code, exc.stdout, exc.stderr
            except e2b.TimeoutException:
                exit_code, stdout, stderr, timed_out = None, "", "", True
            await box.commands.run(
                "tar -cf /tmp/colony/out.tar -C /workspace .", user="root", timeout=120
            )
            data = await box.files.read("/tmp/colony/out.tar", format="bytes")
            await asyncio.to_thread(unpack_workspace, bytes(data), workspace, limit)
        finally:
            with contextlib.suppress(Exception):
                await box.kill()
        if exit_code == 137 and not timed_out:
            timed_out = time.monotonic() - started >= limits.wall_seconds
        return _from_strings(exit_code, stdout or "", stderr or "", timed_out, limits, started)


def _from_strings(
    exit_code: int | None,
    stdout: str,
    stderr: str,
    timed_out: bool,
    limits: SandboxLimits,
    started: float,
) -> ExecResult:
    out, err = _Capture(limits.max_output_bytes), _Capture(limits.max_output_bytes)
    out.add(stdout.encode())
    err.add(stderr.encode())
    reason = "wall clock" if timed_out else None
    if exit_code is not None and reason is None:
        reason = _exit_reason(exit_code, bytes(err.data[-4096:]))
    return ExecResult(
        exit_code=None if timed_out else exit_code,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        killed_reason=reason,
        stdout_truncated=out.dropped > 0,
        stderr_truncated=err.dropped > 0,
        duration_ms=(time.monotonic() - started) * 1000,
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
    )


def pack_workspace(workspace: Path, limit: int) -> bytes:
    """A tar of the workspace's regular files, directories and links (links not followed).

    Raises:
        ToolExecutionError: the workspace is larger than `limit` bytes.
    """
    if ws.workspace_usage(workspace).bytes > limit:
        raise ToolExecutionError(
            f"The workspace is larger than {limit // MIB} MiB; delete files first."
        )
    buffer = io.BytesIO()

    def regular_only(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return info if info.isreg() or info.isdir() or info.issym() else None

    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(workspace, arcname=".", filter=regular_only)
    return buffer.getvalue()


def unpack_workspace(data: bytes, workspace: Path, limit: int) -> None:
    """Replace the workspace's contents with a tar made by the remote sandbox.

    Members that would land outside the workspace, links pointing out of it, and special
    files are dropped (`tarfile`'s "data" filter, per member); ownership is not restored.

    Raises:
        ToolExecutionError: the archive unpacks to more than `limit` bytes.
    """
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        if sum(m.size for m in members if m.isreg()) > limit:
            raise ToolExecutionError(
                f"The workspace grew past {limit // MIB} MiB; its changes were not kept."
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{workspace.name}.", dir=workspace.parent))
        try:

            def safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
                try:
                    return tarfile.data_filter(member, dest)
                except tarfile.FilterError:
                    return None

            tar.extractall(staging, filter=safe)
            for entry in list(workspace.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            for entry in staging.iterdir():
                entry.rename(workspace / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# -- selection and probe -----------------------------------------------------------


def select_backend(settings: Settings) -> Sandbox:
    """E2B when `E2B_API_KEY` is set, else bubblewrap when it can run here.

    Raises:
        SandboxUnavailable: neither can run; the message says what to install.
    """
    if settings.e2b_api_key is not None:
        _import_e2b()
        return E2BSandbox(settings.e2b_api_key.get_secret_value())
    bwrap = BubblewrapSandbox()
    missing = bwrap.missing()
    if missing is not None:
        raise SandboxUnavailable(f"{NO_BACKEND_MESSAGE} ({missing})")
    return bwrap


@dataclass(frozen=True)
class SandboxStatus:
    """Whether a sandbox backend can run code here."""

    backend: str
    ok: bool
    detail: str


def probe(settings: Settings) -> SandboxStatus:
    """Run a trivial program in the configured backend and report the outcome."""
    if settings.e2b_api_key is not None:
        # A remote call would cost money and time on every probe; key presence is the check.
        try:
            _import_e2b()
        except SandboxUnavailable as exc:
            return SandboxStatus("e2b", False, exc.message)
        return SandboxStatus("e2b", True, "E2B_API_KEY is set")
    bwrap = BubblewrapSandbox()
    missing = bwrap.missing()
    if missing is not None:
        return SandboxStatus("bubblewrap", False, missing)
    workdir = Path(tempfile.mkdtemp(prefix="colony-probe-"))
    try:
        owner = ws.sandbox_owner()
        if owner is not None:
            os.chown(workdir, *owner)
        limits = SandboxLimits(wall_seconds=10)
        result = bwrap.run_blocking(workdir, "python", "print('sandboxed')", limits)
    except subprocess.TimeoutExpired:
        return SandboxStatus("bubblewrap", False, "the sandbox did not finish within 10s")
    except (OSError, SandboxUnavailable) as exc:
        return SandboxStatus("bubblewrap", False, f"the sandbox cannot start: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.returncode != 0 or result.stdout.strip() != b"sandboxed":
        stderr = result.stderr.decode(errors="replace").strip()[:200]
        return SandboxStatus(
            "bubblewrap", False, f"bwrap failed (exit {result.returncode}): {stderr}"
        )
    return SandboxStatus("bubblewrap", True, "bubblewrap runs isolated processes")


# -- tools -------------------------------------------------------------------------

SANDBOX_TOOL_NAMES: Final = ("run_python", "run_shell", "read_file", "write_file", "list_files")


class _SandboxTools:
    """Handlers of the sandbox tools; the backend is chosen on first use."""

    def __init__(self, settings: Settings, backend: Sandbox | None, limits: SandboxLimits) -> None:
        self._settings = settings
        self._backend = backend
        self.limits = limits

    def backend(self) -> Sandbox:
        if self._backend is None:
            # Not cached on failure: installing bubblewrap later makes the next call work.
            self._backend = select_backend(self._settings)
        return self._backend

    async def _workspace(self, ctx: ToolContext) -> Path:
        return await asyncio.to_thread(ws.workspace_for, self._settings, ctx.tenant_id, ctx.run_id)

    async def _execute(self, language: Language, code: str, ctx: ToolContext) -> str:
        backend = self.backend()
        workspace = await self._workspace(ctx)
        result = await backend.run(workspace, language, code, self.limits)
        usage = await asyncio.to_thread(ws.workspace_usage, workspace)
        if usage.bytes > self.limits.max_workspace_mb * MIB:
            result = replace(
                result,
                notes=(
                    *result.notes,
                    f"the workspace now uses {usage.bytes // MIB} MiB, over its "
                    f"{self.limits.max_workspace_mb} MiB limit: delete files",
                ),
            )
        return result.render()

    async def run_python(self, args: dict[str, Any], ctx: ToolContext) -> str:
        return await self._execute("python", args["code"], ctx)

    async def run_shell(self, args: dict[str, Any], ctx: ToolContext) -> str:
        return await self._execute("shell", args["command"], ctx)

    async def read_file(self, args: dict[str, Any], ctx: ToolContext) -> str:
        workspace = await self._workspace(ctx)
        return await asyncio.to_thread(ws.read_file, workspace, args["path"], args["offset"])

    async def write_file(self, args: dict[str, Any], ctx: ToolContext) -> str:
        workspace = await self._workspace(ctx)
        limit = self.limits.max_workspace_mb * MIB
        return await asyncio.to_thread(
            ws.write_file, workspace, args["path"], args["content"], max_workspace_bytes=limit
        )

    async def list_files(self, args: dict[str, Any], ctx: ToolContext) -> str:
        workspace = await self._workspace(ctx)
        return await asyncio.to_thread(ws.list_files, workspace, args["path"])


def sandbox_tools(
    settings: Settings, *, backend: Sandbox | None = None, limits: SandboxLimits | None = None
) -> list[ToolDefinition]:
    """run_python, run_shell, read_file, write_file and list_files for one worker.

    All five work on the calling run's workspace (`ToolContext.tenant_id/run_id`). With
    no `backend`, `select_backend(settings)` picks one at the first code call; until one
    is available, run_python/run_shell answer with `SandboxUnavailable`. None of the
    tools has effects outside the run, so `side_effects` is False.
    """
    limits = limits or SandboxLimits()
    tools = _SandboxTools(settings, backend, limits)
    handlers = {
        RUN_PYTHON: tools.run_python, RUN_SHELL: tools.run_shell, READ_FILE: tools.read_file,
        WRITE_FILE: tools.write_file, LIST_FILES: tools.list_files,
    }  # fmt: skip
    return [ToolDefinition.serving(t, handlers[t.name]) for t in describe_sandbox_tools(limits)]
