"""Third-party MCP servers for the tests, and process helpers.

- `mcp-server-time`, `mcp-server-git` (PyPI, stdio): in the `dev` extra of pyproject.toml.
- `@modelcontextprotocol/server-everything` (npm, streamable HTTP): pinned in
  tests/mcp/servers/package.json + package-lock.json, installed by
  `npm ci --prefix tests/mcp/servers`; tests that need it skip without it.
"""

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.tools.mcp import HttpServerConfig, StdioServerConfig, parse_server_config
from workers.process import free_port

SERVERS_DIR = Path(__file__).parent / "servers"
EVERYTHING_BIN = SERVERS_DIR / "node_modules" / ".bin" / "mcp-server-everything"


def stdio_config(name: str, module: str, *args: str, **fields: Any) -> StdioServerConfig:
    """A stdio registration running a PyPI server module with this interpreter."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it is in the dev extra: pip install -e '.[dev]')")
    config = parse_server_config(
        {
            "name": name,
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", module, *args],
            **fields,
        }
    )
    assert isinstance(config, StdioServerConfig)
    return config


def time_config(name: str = "time", **fields: Any) -> StdioServerConfig:
    """mcp-server-time: tools get_current_time and convert_time."""
    return stdio_config(name, "mcp_server_time", **fields)


def git_config(repo: Path, name: str = "git") -> StdioServerConfig:
    """mcp-server-git, confined to `repo`."""
    return stdio_config(name, "mcp_server_git", "--repository", str(repo))


def http_config(url: str, name: str = "everything", **fields: Any) -> HttpServerConfig:
    """A streamable HTTP registration."""
    config = parse_server_config({"name": name, "transport": "http", "url": url, **fields})
    assert isinstance(config, HttpServerConfig)
    return config


def everything_missing() -> str | None:
    """Why the npm server cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not EVERYTHING_BIN.exists():
        return (
            "@modelcontextprotocol/server-everything is not installed: "
            "npm ci --prefix tests/mcp/servers"
        )
    return None


@dataclass
class EverythingServer:
    """A running `mcp-server-everything streamableHttp` on a local port."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_everything(port: int | None = None, log: Path | None = None) -> EverythingServer:
    """Start the server (on a free port unless given) and wait until it accepts connections."""
    reason = everything_missing()
    if reason is not None:
        pytest.skip(reason)
    port = port or free_port()
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [str(EVERYTHING_BIN), "streamableHttp"],
            env={**os.environ, "PORT": str(port)},
            stdout=out,
            stderr=out,
        )
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    server = EverythingServer(port, process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mcp-server-everything exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"mcp-server-everything did not listen on port {port} within 20s")


@contextmanager
def everything_server(
    port: int | None = None, log: Path | None = None
) -> Iterator[EverythingServer]:
    """`start_everything` as a context manager that always stops it."""
    server = start_everything(port, log)
    try:
        yield server
    finally:
        server.stop()


# -- processes -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


def child_pids(marker: str) -> set[int]:
    """Live children of this process whose command line contains `marker`."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[0] != os.getpid() or stat[1] == "Z":
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.add(pid)
    return found


async def wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """Wait until the process is gone (or a zombie); whether it went in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return not alive(pid)
