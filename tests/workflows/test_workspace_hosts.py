"""A run's workspace with two tools workers on two disks: its calls reach the worker that
holds it, a run whose worker is gone gets a new workspace (and the model is told), and
the workspace is deleted when the run ends. Real Temporal, Postgres, workers, bubblewrap;
the model is scripted."""

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.runs.tool_calls import WORKSPACE_RESET_NOTE
from core.db import Pool
from core.queues import TaskQueue
from core.runs.payloads import ApprovalDecision
from core.temporal import ColonyPlugin
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.replay import assert_replays, record_history
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from tests.workflows.harness import TENANT, Harness, running_harness, spec
from workflows.agent_run import AgentRunWorkflow

WAIT_S = "2"
"""How long a workspace call waits for its host here (the default is 20 s)."""


@asynccontextmanager
async def tools_worker(temporal: TemporalServer, harness: Harness) -> AsyncIterator[Path]:
    """One more tools worker on the harness's queues, with a data dir (disk) and a Temporal
    client of its own (like another machine's)."""
    with tempfile.TemporaryDirectory(prefix="colony-host-") as data_dir:
        settings = make_settings(COLONY_DATA_DIR=data_dir, COLONY_WORKSPACE_HOST_WAIT_S=WAIT_S)
        client = await Client.connect(temporal.address, plugins=[ColonyPlugin()])
        async with running_workers(
            client, settings, harness.pool, suffix=harness.suffix,
            queues=[TaskQueue.TOOLS],
        ):  # fmt: skip
            yield Path(data_dir)


def workspace(data_dir: Path, run_id: str) -> Path:
    return data_dir / "workspaces" / TENANT / run_id


async def test_every_call_of_a_run_reaches_its_workspace_with_two_tools_workers(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    # Two calls in parallel first: both wait for the one claim, and share its workspace.
    steps = [
        tool_calls(
            tool_call("write_file", {"path": "p.txt", "content": "pp"}, id="p"),
            tool_call("write_file", {"path": "q.txt", "content": "qq"}, id="q"),
        ),
        tool_calls(tool_call("run_shell", {"command": "cat p.txt q.txt"}, id="pq")),
    ]
    for i in range(4):
        steps += [
            tool_calls(tool_call("write_file", {"path": f"f{i}.txt", "content": f"v{i}"}, id=f"w{i}")),
            tool_calls(tool_call("run_shell", {"command": f"cat f{i}.txt"}, id=f"s{i}")),
            tool_calls(tool_call("read_file", {"path": f"f{i}.txt"}, id=f"r{i}")),
        ]  # fmt: skip
    model_server.script(*steps, reply("done"))
    async with (
        running_harness(temporal, pool, model_server) as harness,
        tools_worker(temporal, harness) as other_disk,
    ):
        handle, run_id = await harness.start(spec(tools=["write_file", "read_file", "run_shell"]))
        assert (await handle.result()).outcome == "succeeded"
        messages = await harness.messages(run_id)
        results = [m.content or "" for m in messages if m.role == "tool"]
        assert "ppqq" in results[2], results[2]
        results = results[3:]
        for i in range(4):
            assert results[3 * i] == f"Wrote 2 bytes to f{i}.txt."
            assert f"v{i}" in results[3 * i + 1], results[3 * i + 1]
            assert results[3 * i + 2] == f"v{i}"
        assert not [e for e in await harness.events(run_id) if e.type == "workspace.reset"]
        # The run's end deleted its workspace, wherever it was.
        assert not workspace(harness.data_dir, run_id).exists()
        assert not workspace(other_disk, run_id).exists()
        history = await handle.fetch_history()
        scheduled = [
            e.activity_task_scheduled_event_attributes
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert [a.activity_type.name for a in scheduled].count("claim_workspace") == 1
        hosts = {a.task_queue.name for a in scheduled if a.activity_type.name == "execute_tool"}
        assert len(hosts) == 1 and "-host-" in hosts.pop()
        await assert_replays(handle)
        record_history("agent_run_v5_workspace", history)


async def test_a_run_whose_tools_worker_is_gone_gets_a_new_workspace(
    temporal: TemporalServer, pool: Pool, model_server: ScriptedModelServer
) -> None:
    model_server.script(
        tool_calls(tool_call("write_file", {"path": "notes.txt", "content": "hello"}, id="w")),
        tool_calls(tool_call("ask_human", {"question": "Go on?"}, id="q")),
        tool_calls(tool_call("read_file", {"path": "notes.txt"}, id="r")),
        tool_calls(tool_call("write_file", {"path": "notes.txt", "content": "again"}, id="w2")),
        tool_calls(tool_call("read_file", {"path": "notes.txt"}, id="r2")),
        reply("done"),
    )
    lanes = [TaskQueue.ORCHESTRATION, TaskQueue.LLM, TaskQueue.MEMORY]
    async with (
        running_harness(temporal, pool, model_server, queues=lanes) as harness,
        AsyncExitStack() as first_stack,
        AsyncExitStack() as second_stack,
    ):
        first = await first_stack.enter_async_context(tools_worker(temporal, harness))
        second = await second_stack.enter_async_context(tools_worker(temporal, harness))
        handle, run_id = await harness.start(spec(tools=["write_file", "read_file", "ask_human"]))
        for _ in range(400):
            status = await handle.query(AgentRunWorkflow.status)
            if status.pending_approvals:
                break
            await asyncio.sleep(0.05)
        assert status.pending_approvals
        holders = [d for d in (first, second) if workspace(d, run_id).is_dir()]
        assert len(holders) == 1
        # The worker holding the workspace stops; the other one serves the rest.
        await (first_stack if holders[0] == first else second_stack).aclose()
        survivor = second if holders[0] == first else first
        await handle.execute_update(
            AgentRunWorkflow.approve_tool_call,
            ApprovalDecision(call_id="q", approved=True, answer="yes"),
        )
        assert (await handle.result()).outcome == "succeeded"
        results = [m.content or "" for m in await harness.messages(run_id) if m.role == "tool"]
        assert results[0] == "Wrote 5 bytes to notes.txt."
        assert results[2].startswith(WORKSPACE_RESET_NOTE)
        assert "'notes.txt' does not exist" in results[2]
        assert results[3] == "Wrote 5 bytes to notes.txt."
        assert results[4] == "again"  # the new workspace is kept for the later calls
        [reset] = [e for e in await harness.events(run_id) if e.type == "workspace.reset"]
        assert reset.data["lost_host"]
        assert not workspace(survivor, run_id).exists()
        await assert_replays(handle)
        record_history("agent_run_v5_workspace_reset", await handle.fetch_history())


async def test_a_cancelled_run_deletes_its_workspace(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("write_file", {"path": "a.txt", "content": "a"}, id="w")),
        tool_calls(tool_call("ask_human", {"question": "Go on?"}, id="q")),
    )
    handle, run_id = await harness.start(spec(tools=["write_file", "ask_human"]))
    for _ in range(400):
        if (await handle.query(AgentRunWorkflow.status)).pending_approvals:
            break
        await asyncio.sleep(0.05)
    assert workspace(harness.data_dir, run_id).is_dir()
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await harness.run_row(run_id)).status == "cancelled"
    assert not workspace(harness.data_dir, run_id).exists()
    await assert_replays(handle)
