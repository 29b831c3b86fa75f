"""Escape suite: sandboxed code tries to get out, and must fail; the host must be unharmed.

Every attack runs in the real bubblewrap sandbox the tools use, with the worker's
privileges (root here), and the checks look at the host side, not only at what the code
printed.
"""

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.tools.sandbox import BubblewrapSandbox, Language
from activities.tools.workspace import sandbox_owner, workspace_for
from core.settings import Settings
from core.tools.builtins import SandboxLimits
from tests.sandbox.conftest import FAST, TENANT


async def run(
    bwrap: BubblewrapSandbox, workspace: Path, code: str, limits: SandboxLimits = FAST
) -> tuple[str, str]:
    result = await bwrap.run(workspace, "python", code, limits)
    return result.stdout, result.stderr


def sandboxes() -> dict[str, list[int]]:
    """Host pids of sandboxed programs, by pid namespace (one namespace per call)."""
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            namespace = os.readlink(entry / "ns" / "pid")
        except OSError:
            continue
        if cmdline.split(b"\x00")[1:2] in ([b"/run/colony/main.py"], [b"/run/colony/main.sh"]):
            found.setdefault(namespace, []).append(int(entry.name))
    return found


def cmdlines_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(cmdline)
    return found


# -- network ---------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def host_addresses() -> list[str]:
    addresses = {"127.0.0.1"}
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("10.255.255.255", 1))  # no packet is sent; picks the outbound address
        addresses.add(probe.getsockname()[0])
        probe.close()
    except OSError:
        pass
    return sorted(addresses)


async def test_no_network_connection_reaches_the_host(
    bwrap: BubblewrapSandbox, workspace: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    code = f"""
import socket
import sys
for host in {host_addresses()!r}:
    try:
        socket.create_connection((host, {port}), timeout=2)
        print("CONNECTED", host)
    except OSError as exc:
        print("refused", host, type(exc).__name__)
print(open("/proc/net/dev").read())
"""
    stdout, _ = await run(bwrap, workspace, code)
    assert "refused 127.0.0.1" in stdout and "CONNECTED" not in stdout
    interfaces = [line.split(":")[0].strip() for line in stdout.splitlines() if ":" in line]
    assert interfaces == ["lo"]
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing arrived on the host side


async def test_no_dns(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    code = """
import socket, time
start = time.monotonic()
for name in ("pypi.org", "example.com"):
    try:
        print("RESOLVED", socket.getaddrinfo(name, 443))
    except socket.gaierror as exc:
        print("no dns", exc.errno)
print(f"{time.monotonic() - start:.1f}s")
"""
    stdout, _ = await run(bwrap, workspace, code)
    assert "RESOLVED" not in stdout and stdout.count("no dns") == 2
    assert float(stdout.splitlines()[-1].rstrip("s")) < 2  # fails fast, no resolver timeouts


# -- reading the host ----------------------------------------------------------------------


async def test_cannot_read_etc_shadow(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    code = """
for path in ("/etc/shadow", "/proc/1/root/etc/shadow", "/etc/gshadow", "/root/.bash_history"):
    try:
        print("READ", path, open(path).read()[:20])
    except OSError as exc:
        print("denied", path, type(exc).__name__)
import os
print(sorted(os.listdir("/etc")))
"""
    stdout, _ = await run(bwrap, workspace, code)
    assert "READ" not in stdout and stdout.count("denied") == 4
    assert "['alternatives', 'group', 'hosts', 'ld.so.cache', 'nsswitch.conf', 'passwd']" in stdout


async def test_worker_environment_is_invisible(
    bwrap: BubblewrapSandbox, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"colony-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("COLONY_TEST_SECRET", secret)
    monkeypatch.setenv("E2B_API_KEY", secret)
    code = f"""
import glob, os
hits = [k for k, v in os.environ.items() if {secret!r} in v]
for path in glob.glob("/proc/*/environ") + ["/proc/{os.getpid()}/environ", "/proc/1/environ"]:
    try:
        data = open(path, "rb").read()
    except OSError:
        continue
    if {secret!r}.encode() in data:
        hits.append(path)
print("HITS", hits)
print(sorted(os.environ))
"""
    stdout, stderr = await run(bwrap, workspace, code)
    assert "HITS []" in stdout, stdout + stderr
    assert secret not in stdout.replace(f"{secret!r}", "")
    assert "COLONY_TEST_SECRET" not in stdout and "E2B_API_KEY" not in stdout


async def test_host_processes_are_invisible(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    code = f"""
import os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(pids)
print("VISIBLE" if os.path.exists("/proc/{os.getpid()}") else "hidden")
"""
    stdout, _ = await run(bwrap, workspace, code)
    pids = json.loads(stdout.splitlines()[0])
    assert len(pids) <= 3 and max(pids) < 10  # bwrap's init, python, nothing else
    assert stdout.splitlines()[1] == ("VISIBLE" if os.getpid() in pids else "hidden")


async def test_cannot_read_another_runs_workspace(
    bwrap: BubblewrapSandbox, settings: Settings, workspace: Path
) -> None:
    other = workspace_for(settings, TENANT, "run_other")
    (other / "private.txt").write_text("other run's data")
    neighbour = workspace_for(settings, "tenant-b", "run_x")
    (neighbour / "private.txt").write_text("other tenant's data")
    code = f"""
import os
paths = ["{other}/private.txt", "{neighbour}/private.txt", "/workspace/../run_other/private.txt",
         "{settings.data_path}", "/tmp/workspace"]
for path in paths:
    try:
        print("READ", path, os.listdir(path) if os.path.isdir(path) else open(path).read())
    except OSError as exc:
        print("denied", type(exc).__name__)
print(os.listdir("/workspace"), os.listdir("/"))
"""
    stdout, _ = await run(bwrap, workspace, code)
    assert "READ" not in stdout and stdout.count("denied") == 5, stdout
    assert "other run's data" not in stdout and "other tenant's data" not in stdout


# -- writing the host ---------------------------------------------------------------------


async def test_cannot_write_outside_the_workspace(
    bwrap: BubblewrapSandbox, settings: Settings, workspace: Path
) -> None:
    other = workspace_for(settings, TENANT, "run_other")
    (other / "data.txt").write_text("intact")
    marker = f"colony-escape-{uuid.uuid4().hex}"
    targets = [
        "/usr/" + marker,
        "/" + marker,
        "/workspace/../" + marker,
        "/etc/passwd",
        "/etc/" + marker,
        "/proc/sys/kernel/hostname",
        "/run/colony/main.py",
        f"{other}/data.txt",
        "/workspace/../run_other/data.txt",
    ]
    code = f"""
for path in {targets!r}:
    try:
        with open(path, "a") as f:
            f.write("pwned")
        print("WROTE", path)
    except OSError as exc:
        print("denied", type(exc).__name__)
open("/tmp/{marker}", "w").write("private tmp")
print("tmp ok")
"""
    stdout, _ = await run(bwrap, workspace, code)
    assert "WROTE" not in stdout and stdout.count("denied") == len(targets), stdout
    assert "tmp ok" in stdout
    assert (other / "data.txt").read_text() == "intact"
    assert not Path("/tmp", marker).exists() and not Path("/", marker).exists()
    assert not Path("/usr", marker).exists() and not Path("/etc", marker).exists()
    assert not (workspace.parent / marker).exists()


async def test_no_privileges_inside(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    code = """
import os, subprocess
print(dict(l.split(":\\t") for l in open("/proc/self/status").read().splitlines()
           if l.startswith(("CapEff", "CapPrm", "CapBnd", "NoNewPrivs"))))
for attempt in (lambda: os.setuid(0), lambda: os.chroot("/tmp")):
    try:
        attempt()
        print("GAINED")
    except OSError:
        print("denied")
for argv in (["unshare", "-Ur", "id"], ["unshare", "-n", "true"], ["mount", "-t", "tmpfs", "x", "/tmp"]):
    r = subprocess.run(argv, capture_output=True)
    print("denied" if r.returncode else "GAINED " + " ".join(argv))
print(open("/proc/self/oom_score_adj").read().strip())
"""
    stdout, _ = await run(bwrap, workspace, code)
    assert "GAINED" not in stdout and stdout.count("denied") == 5
    assert (
        "'CapPrm': '0000000000000000', 'CapEff': '0000000000000000', "
        "'CapBnd': '0000000000000000', 'NoNewPrivs': '1'"
    ) in stdout
    if bwrap._choom is not None:
        assert stdout.endswith("\n1000\n")  # the OOM killer takes sandboxes first


# -- exhausting the host -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "bomb"),
    [
        (
            "python",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        ),
        ("shell", "f() { f | f & }; f; sleep 30"),
    ],
)
async def test_fork_bomb_is_contained(
    bwrap: BubblewrapSandbox, workspace: Path, language: Language, bomb: str
) -> None:
    limits = FAST.model_copy(update={"wall_seconds": 2.5, "max_processes": 32})
    before = set(sandboxes())
    task = asyncio.create_task(bwrap.run(workspace, language, bomb, limits))
    await asyncio.sleep(1.2)
    ours = {ns: pids for ns, pids in sandboxes().items() if ns not in before}
    host = await asyncio.create_subprocess_exec("true")  # the host can still start processes
    assert await host.wait() == 0
    result = await task
    assert result.killed_reason in ("wall clock", "cpu"), result
    namespace, pids = max(ours.items(), key=lambda item: len(item[1]))
    assert 2 < len(pids) <= 32  # the bomb went off, and hit the per-sandbox cap
    await asyncio.sleep(0.2)
    assert namespace not in sandboxes()  # nothing of it survives the call


async def test_memory_bomb_is_killed_and_reported(
    bwrap: BubblewrapSandbox, workspace: Path
) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))"
    limits = FAST.model_copy(update={"memory_mb": 256})
    result = await bwrap.run(workspace, "python", code, limits)
    assert result.killed_reason == "memory" and "MemoryError" in result.stderr
    assert "out of memory" in result.render()


async def test_infinite_loop_is_stopped(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    limits = FAST.model_copy(update={"cpu_seconds": 1, "wall_seconds": 10})
    started = time.monotonic()
    result = await bwrap.run(workspace, "shell", "while :; do :; done", limits)
    assert result.killed_reason == "cpu" and time.monotonic() - started < 8


async def test_background_processes_do_not_outlive_the_call(
    bwrap: BubblewrapSandbox, workspace: Path
) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"
    code = f"nohup setsid sleep {marker} >/dev/null 2>&1 &\n(trap '' HUP TERM; sleep {marker}.5) &\necho spawned"
    result = await bwrap.run(workspace, "shell", code, FAST)
    assert result.stdout == "spawned\n"
    await asyncio.sleep(0.3)
    assert cmdlines_with(f"sleep {marker}") == []


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"),
        ("python", "import sys\nsys.stderr.write('y' * 10**8)"),
        ("shell", "yes"),
        ("shell", "cat /dev/zero"),
    ],
)
async def test_huge_output_is_capped_and_fast(
    bwrap: BubblewrapSandbox, workspace: Path, language: Language, code: str
) -> None:
    started = time.monotonic()
    result = await bwrap.run(workspace, language, code, FAST)
    assert time.monotonic() - started < 4
    assert result.killed_reason == "output limit"
    assert len(result.stdout.encode()) <= FAST.max_output_bytes
    assert len(result.stderr.encode()) <= FAST.max_output_bytes
    assert len(result.render()) < 2 * FAST.max_output_bytes + 1000


# -- attacking the worker -------------------------------------------------------------------


async def test_cannot_kill_the_worker(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    me = os.getpid()
    code = f"""
import os, signal
for pid in ({me}, {os.getppid()}, 1, -1):
    try:
        os.kill(pid, signal.SIGKILL)
        print("sent", pid)
    except OSError as exc:
        print("denied", pid, type(exc).__name__)
"""
    result = await bwrap.run(workspace, "python", code, FAST)
    # kill(-1) takes the sandbox down with it; the worker does not notice.
    assert result.exit_code == 137 or "denied -1" in result.stdout
    assert f"sent {me}" not in result.stdout or me < 10
    shell = await bwrap.run(
        workspace, "shell", f"kill -9 {me} {os.getppid()}; kill -9 -1; echo alive", FAST
    )
    assert shell.exit_code is not None
    assert os.getpid() == me
    sibling = await asyncio.create_subprocess_exec("true")
    assert await sibling.wait() == 0
    follow_up = await bwrap.run(workspace, "python", "print('still working')", FAST)
    assert follow_up.stdout == "still working\n"


async def test_cancelling_the_call_kills_the_sandbox(
    bwrap: BubblewrapSandbox, workspace: Path
) -> None:
    # Temporal cancels activities (heartbeat timeout, workflow cancelled): nothing may linger.
    marker = f"{uuid.uuid4().int % 10**6 + 2 * 10**6}"
    task = asyncio.create_task(bwrap.run(workspace, "shell", f"sleep {marker}", FAST))
    await asyncio.sleep(0.5)
    assert cmdlines_with(f"sleep {marker}")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert cmdlines_with(f"sleep {marker}") == []


async def test_sandbox_dies_with_the_worker(tmp_path: Path) -> None:
    # A worker killed with SIGKILL cannot clean up: the namespaces must take care of it.
    marker = f"{uuid.uuid4().int % 10**6 + 3 * 10**6}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    owner = sandbox_owner()
    if owner is not None:
        os.chown(workspace, *owner)
    worker = f"""
import asyncio
from pathlib import Path
from activities.tools.sandbox import BubblewrapSandbox, Language
from core.tools.builtins import SandboxLimits
asyncio.run(BubblewrapSandbox().run(Path({str(workspace)!r}), "shell", "sleep {marker}", SandboxLimits()))
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", worker, cwd=Path(__file__).resolve().parents[2]
    )
    for _ in range(100):
        if cmdlines_with(f"sleep {marker}"):
            break
        await asyncio.sleep(0.05)
    assert cmdlines_with(f"sleep {marker}")
    proc.kill()
    await proc.wait()
    await asyncio.sleep(0.3)
    assert cmdlines_with(f"sleep {marker}") == []
