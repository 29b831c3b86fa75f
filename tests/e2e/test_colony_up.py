"""`colony up`, `doctor`, `demo`, `migrate` as a user runs them: real subprocesses."""

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from temporalio.client import Client

from core import db, tenants
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import (
    PostgresServer,
    TemporalServer,
    child_env,
    fresh_database,
    world_traversable_tempdir,
)
from workers import postgres_server
from workers.process import free_port

CLI = [sys.executable, "-m", "workers.cli"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    env: dict[str, str]
    data: Path
    process: asyncio.subprocess.Process | None = None
    output: bytearray | None = None

    async def cli(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *CLI, *args, env=self.env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    async def up(self, *args: str) -> None:
        self.output = bytearray()
        self.process = await asyncio.create_subprocess_exec(
            *CLI, "up", *args, env=self.env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.ensure_future(self._read())
        await self.wait_for_output("Colony is up", timeout=180)

    async def _read(self) -> None:
        assert (
            self.process is not None and self.process.stdout is not None and self.output is not None
        )
        while chunk := await self.process.stdout.read(4096):
            self.output.extend(chunk)

    @property
    def text(self) -> str:
        return (self.output or b"").decode(errors="replace")

    async def wait_for_output(self, needle: str, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.text:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"colony up exited ({self.process.returncode}):\n{self.text}")
            if loop.time() > deadline:
                raise AssertionError(f"{needle!r} not seen within {timeout}s:\n{self.text}")
            await asyncio.sleep(0.1)

    def state(self) -> dict[str, object]:
        state: dict[str, object] = json.loads((self.data / "stack.json").read_text())
        return state

    async def signal_and_wait(self, sig: int, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return code


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # zombies are gone, just unreaped
    except FileNotFoundError:
        return False


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and alive(int(entry)):
                found.append(int(entry))
    return found


async def wait_until_gone(pids: list[int], timeout: float = 20) -> list[int]:
    for _ in range(int(timeout * 10)):
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        await asyncio.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.fixture
async def stack(model_server: ScriptedModelServer) -> AsyncIterator[Stack]:
    data = world_traversable_tempdir("colony-up-") / "data"
    env = child_env(
        COLONY_DATA_DIR=str(data),
        COLUMNS="200",  # a realistic terminal width for rich's tables
        COLONY_TEMPORAL_PORT=str(free_port()),
        COLONY_TEMPORAL_UI_PORT=str(free_port()),
        COLONY_POSTGRES_PORT=str(free_port()),
        COLONY_API_PORT=str(free_port()),
        COLONY_LOCAL_MODEL_PORT=str(free_port()),
        # The scripted server stands in for a provider; the probe really calls it.
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/scripted-model",
    )
    # The demo's agent run, swarm subtasks and synthesis ask the scripted server.
    model_server.default = reply("17 * 23 = 391 and 2 ** 10 = 1024")
    s = Stack(env=env, data=data)
    yield s
    if s.process is not None and s.process.returncode is None:
        s.process.kill()
        await s.process.wait()
    for pid in processes_mentioning(str(data)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(300)
async def test_up_doctor_demo_restart_and_clean_stop(
    stack: Stack, model_server: ScriptedModelServer
) -> None:
    await stack.up()
    state = stack.state()
    children = state["children"]
    assert isinstance(children, dict)
    assert set(children) == {"postgres", "temporal", "worker-all", "api"}
    key = (stack.data / "admin-key").read_text().strip()
    assert key.startswith("colony_sk_") and "colony_sk_" not in stack.text  # never logged
    assert oct((stack.data / "admin-key").stat().st_mode & 0o777) == "0o600"
    await assert_postgres_needs_the_password(stack)

    code, out = await stack.cli("doctor")
    assert code == 0, out
    assert "NOT READY" not in out and "all components ready" in out

    code, out = await stack.cli("demo")
    assert code == 0, out
    assert "Using the running stack" in out and "succeeded" in out
    workflow_url = next(
        line
        for line in out.splitlines()
        if "/workflows/stack-check-" in line or "stack-check-local" in line
    )
    assert workflow_url

    # A second `colony up` reuses the running stack instead of starting another.
    code, out = await stack.cli("up", timeout=30)
    assert code == 0 and "already running" in out and str(state["pid"]) in out

    # A worker that dies is restarted, and the reason is logged.
    os.kill(int(children["worker-all"]), signal.SIGKILL)
    await stack.wait_for_output("worker-all died (killed by SIGKILL)")
    await stack.wait_for_output("worker-all restarted", timeout=60)
    code, out = await stack.cli("demo")
    assert code == 0, out

    # A wrong answer fails the demo, and the summary says which part and why.
    model_server.default = reply("The answer is 17.")
    code, out = await stack.cli("demo")
    assert code != 0, out
    summary = out[out.index("Demo summary") :]
    assert "agent run" in summary and "wrong answer: 391 missing" in summary
    assert "swarm" in summary and "1024" in summary
    assert "did not do its job" in out

    pids = [int(p) for p in stack.state()["children"].values()]  # type: ignore[union-attr]
    pids += processes_mentioning(str(stack.data))
    assert await stack.signal_and_wait(signal.SIGTERM) == 0
    assert await wait_until_gone(pids) == []
    assert processes_mentioning(str(stack.data)) == []
    assert not (stack.data / "stack.json").exists()
    for log in (stack.data / "logs").iterdir():
        assert key not in log.read_text(errors="replace"), f"admin key leaked into {log}"


async def assert_postgres_needs_the_password(stack: Stack) -> None:
    """Another local user finds no way in: no trust auth, a private password file."""
    port = int(stack.env["COLONY_POSTGRES_PORT"])
    password_file = stack.data / "postgres-password"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    # 0700, or 0711 when root runs Postgres as an unprivileged user below the data dir.
    assert stack.data.stat().st_mode & 0o077 in (0, 0o011)
    for url in (
        postgres_server.admin_url(port, "colony"),
        postgres_server.admin_url(port, "colony", "guess"),
    ):
        with pytest.raises(psycopg.OperationalError, match="password"):
            await psycopg.AsyncConnection.connect(url, connect_timeout=5)
    good = postgres_server.admin_url(port, "colony", password_file.read_text().strip())
    async with await psycopg.AsyncConnection.connect(good, connect_timeout=5) as conn:
        await conn.execute("SELECT 1")


@pytest.mark.timeout(300)
async def test_state_survives_a_restart(stack: Stack) -> None:
    await stack.up()
    code, out = await stack.cli("demo")
    assert code == 0, out
    key = (stack.data / "admin-key").read_text()
    assert await stack.signal_and_wait(signal.SIGINT) == 0

    await stack.up("--split-lanes")
    assert (stack.data / "admin-key").read_text() == key  # same tenant, same key
    assert set(stack.state()["children"]) == {  # type: ignore[arg-type]
        "postgres", "temporal", "worker-orchestration", "worker-llm", "worker-tools", "worker-memory", "api",
    }  # fmt: skip
    code, out = await stack.cli("demo")
    assert code == 0, out
    client = await Client.connect(f"127.0.0.1:{stack.env['COLONY_TEMPORAL_PORT']}")
    found = [w.id async for w in client.list_workflows("WorkflowType = 'StackCheckWorkflow'")]
    assert len(found) == 2 and all(f.startswith("stack-check-local-") for f in found)
    tagged = [
        w.id
        async for w in client.list_workflows(
            "ColonyTenant = 'local' AND ColonyKind = 'stack-check' AND ColonyStatus = 'succeeded'"
        )
    ]
    assert sorted(tagged) == sorted(found)
    agent_runs = [
        w.id
        async for w in client.list_workflows(
            "ColonyAgent = 'colony-demo' AND ColonyStatus = 'succeeded'"
        )
    ]
    assert len(agent_runs) == 2  # each demo also ran a real agent run
    swarms = [
        w.id
        async for w in client.list_workflows("ColonyKind = 'swarm' AND ColonyStatus = 'succeeded'")
    ]
    assert len(swarms) == 2  # ... and a swarm of two subtasks
    subtask_runs = [
        w.id
        async for w in client.list_workflows(
            "ColonyAgent = 'analyst' AND ColonyStatus = 'succeeded'"
        )
    ]
    assert len(subtask_runs) == 4 and all("/product" in i or "/power" in i for i in subtask_runs)
    code, out = await stack.cli("migrate")
    assert code == 0 and "schema is up to date" in out
    assert await stack.signal_and_wait(signal.SIGTERM) == 0


@pytest.mark.timeout(120)
async def test_killing_the_supervisor_leaves_no_orphans(stack: Stack) -> None:
    await stack.up()
    pids = [int(p) for p in stack.state()["children"].values()]  # type: ignore[union-attr]
    pids += processes_mentioning(str(stack.data))
    assert await stack.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
    assert await wait_until_gone(pids) == []


@pytest.mark.timeout(60)
async def test_a_port_in_use_is_named_with_the_setting_to_change(stack: Stack) -> None:
    port = int(stack.env["COLONY_API_PORT"])
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        code, out = await stack.cli("up", timeout=30)
    assert code == 1
    assert f"port {port} (Colony API) is already in use" in out and "COLONY_API_PORT" in out
    # It failed before starting anything.
    assert processes_mentioning(str(stack.data)) == []


@pytest.mark.timeout(60)
async def test_doctor_names_the_fix_when_nothing_runs(stack: Stack) -> None:
    code, out = await stack.cli("doctor")
    assert code == 1
    assert "NOT READY" in out and "colony up" in out
    assert "not ready:" in out


@pytest.mark.timeout(60)
async def test_migrate_against_database_url(pg: PostgresServer, stack: Stack) -> None:
    async with fresh_database(pg, "cli_migrate", migrate=False) as url:
        env = {**stack.env, "DATABASE_URL": url}
        cli = Stack(env=env, data=stack.data)
        code, out = await cli.cli("migrate")
        assert code == 0 and "applied 0001_tenancy" in out and "applied 0002_agents_runs" in out
        code, out = await cli.cli("migrate")
        assert code == 0 and f"schema is up to date (version {db.LATEST_SCHEMA_VERSION})" in out
        # Deployments bootstrap their first admin key from the CLI.
        code, out = await cli.cli("keys", "create", "--tenant", "acme", "--role", "admin")
        assert code == 0, out
        key = next(line for line in out.splitlines() if line.startswith("colony_sk_"))
        async with await db.connect(url) as conn:
            principal = await tenants.authenticate(conn, key)
        assert (principal.tenant_id, principal.role) == ("acme", "admin")
        code, out = await cli.cli("keys", "list", "--tenant", "acme")
        assert code == 0 and principal.key_id in out and key not in out
        code, out = await cli.cli("keys", "revoke", "--tenant", "acme", principal.key_id)
        assert code == 0 and "revoked" in out
        code, out = await cli.cli("keys", "revoke", "--tenant", "other", principal.key_id)
        assert code == 1 and "not found" in out
    bad = Stack(
        env={**stack.env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/x"}, data=stack.data
    )
    code, out = await bad.cli("migrate")
    assert code == 1 and "cannot reach Postgres" in out


@pytest.mark.timeout(120)
async def test_external_temporal_and_postgres_are_used_not_started(
    stack: Stack, pg: PostgresServer, temporal: TemporalServer
) -> None:
    async with fresh_database(pg, "external", migrate=False) as url:
        stack.env.update(DATABASE_URL=url, TEMPORAL_ADDRESS=temporal.address)
        await stack.up()
        assert set(stack.state()["children"]) == {"worker-all", "api"}  # type: ignore[arg-type]
        assert await db.schema_version(url) == db.LATEST_SCHEMA_VERSION  # migrated by `up`
        code, out = await stack.cli("demo")
        assert code == 0, out
        assert await stack.signal_and_wait(signal.SIGTERM) == 0


@pytest.mark.timeout(300)
async def test_tools_on_the_embedded_stack(stack: Stack, model_server: ScriptedModelServer) -> None:
    """An MCP server, tool search and sandboxed code through the CLI, on `colony up`."""
    await stack.up()
    code, out = await stack.cli("mcp", "add", "time", sys.executable, "-m", "mcp_server_time")
    assert code == 0, out
    assert "time: ready" in out and "mcp:time/get_current_time" in out
    code, out = await stack.cli("tools", "list")
    assert code == 0 and "mcp:time/get_current_time" in out and "run_python" in out, out
    code, out = await stack.cli("tools", "search", "what time is it in another city")
    assert code == 0, out
    assert out.splitlines()[0].split()[1] in {"mcp:time/get_current_time", "get_time"}, out

    code, out = await stack.cli(
        "agents", "create", "--name", "coder", "--instructions", "Write and run code.",
        "--model", "openai/scripted-model", "--tool", "run_python", "--tool", "mcp:time/*",
    )  # fmt: skip
    assert code == 0, out
    model_server.script(
        tool_calls(
            tool_call("run_python", {"code": "print(sum(range(10)))"}, id="p1"),
            tool_call("mcp__time__get_current_time", {"timezone": "Asia/Tokyo"}, id="t1"),
        ),
        reply("The sum is 45."),
    )
    code, out = await stack.cli("run", "Sum 0..9 and tell me the time in Tokyo", "--agent", "coder")
    assert code == 0, out
    assert "45" in out and "Asia/Tokyo" in out and "succeeded" in out
    assert await stack.signal_and_wait(signal.SIGTERM) == 0


@pytest.mark.slow  # five processes start: about 2 minutes on a busy 2-core machine
@pytest.mark.timeout(300)
async def test_the_api_metrics_include_every_split_worker(
    stack: Stack, pg: PostgresServer, temporal: TemporalServer
) -> None:
    """With one process per lane, the API's /metrics aggregates each worker's endpoint."""
    async with fresh_database(pg, "metrics", migrate=False) as url:
        stack.env.update(DATABASE_URL=url, TEMPORAL_ADDRESS=temporal.address)
        await stack.up("--split-lanes")
        key = (stack.data / "admin-key").read_text().strip()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{stack.env['COLONY_API_PORT']}",
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            text = (await http.get("/metrics")).text
        for lane in ("orchestration", "llm", "tools", "memory"):
            assert f'colony_metrics_target_up{{colony_process="worker-{lane}"}} 1.0' in text
            assert re.search(rf'^temporal_\w+\{{.*colony_process="worker-{lane}"', text, re.M), lane
        assert await stack.signal_and_wait(signal.SIGTERM) == 0
