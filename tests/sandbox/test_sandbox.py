"""The bubblewrap backend, its limits, the tools, and backend selection."""

import asyncio
import importlib.util
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from activities.tools.framework import BadToolArgumentsError, ToolDefinition, ToolExecutionError
from activities.tools.sandbox import (
    NO_BACKEND_MESSAGE,
    SANDBOX_TOOL_NAMES,
    BubblewrapSandbox,
    ExecResult,
    SandboxLimits,
    SandboxUnavailable,
    pack_workspace,
    probe,
    sandbox_tools,
    select_backend,
    unpack_workspace,
)
from activities.tools.workspace import SANDBOX_UID, workspace_for
from core.errors import ErrorType
from core.settings import Settings
from tests.conftest import make_settings
from tests.sandbox.conftest import FAST, Tools


async def test_runs_python_and_reports_exit_code_and_streams(
    bwrap: BubblewrapSandbox, workspace: Path
) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"
    result = await bwrap.run(workspace, "python", code, FAST)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.killed_reason is None and not result.timed_out
    assert result.duration_ms > 0
    assert result.render() == "exit code: 3\n--- stdout ---\nout\n--- stderr ---\nerr"


async def test_runs_shell(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    result = await bwrap.run(
        workspace, "shell", "echo $HOME; pwd; id -u; echo ${BASH_VERSION:+bash}", FAST
    )
    assert result.exit_code == 0
    assert result.stdout.split() == ["/workspace", "/workspace", "65534", "bash"]


async def test_python_sees_its_workspace_as_import_path(
    bwrap: BubblewrapSandbox, workspace: Path
) -> None:
    (workspace / "helper.py").write_text("ANSWER = 42\n")
    result = await bwrap.run(workspace, "python", "import helper; print(helper.ANSWER)", FAST)
    assert result.stdout == "42\n"


async def test_workspace_persists_between_calls_and_is_shared_with_the_file_tools(
    tools: Tools,
) -> None:
    await tools.call("run_python", json.dumps({"code": "open('a.txt', 'w').write('from python')"}))
    assert await tools.call("read_file", '{"path": "a.txt"}') == "from python"
    await tools.call("write_file", '{"path": "dir/b.txt", "content": "from the model"}')
    out = await tools.call("run_shell", '{"command": "cat a.txt; echo; cat /workspace/dir/b.txt"}')
    assert out == "exit code: 0\n--- stdout ---\nfrom python\nfrom the model"
    listing = await tools.call("list_files", "{}")
    assert listing.splitlines() == ["a.txt  (11 bytes)", "dir/", "dir/b.txt  (14 bytes)"]


async def test_files_written_by_the_worker_stay_writable_by_the_code(
    tools: Tools, workspace: Path
) -> None:
    await tools.call("write_file", '{"path": "deep/er/f.txt", "content": "x"}')
    out = await tools.call(
        "run_shell", '{"command": "echo y >> deep/er/f.txt && mkdir deep/er/g && rm -r deep"}'
    )
    assert out.startswith("exit code: 0"), out
    if os.geteuid() == 0:
        assert workspace.stat().st_uid == SANDBOX_UID


async def test_runs_of_different_ids_get_different_workspaces(tools: Tools) -> None:
    await tools.call("run_shell", '{"command": "echo one > f"}', run_id="run_one")
    out = await tools.call("run_shell", '{"command": "ls -A; cat f"}', run_id="run_two")
    assert "No such file" in out


async def test_nonzero_exit_is_a_result_not_a_tool_error(tools: Tools) -> None:
    out = await tools.call("run_python", '{"code": "raise ValueError(\\"boom\\")"}')
    assert out.startswith("exit code: 1\n--- stderr ---\nTraceback")
    assert "ValueError: boom" in out


async def test_output_is_capped_per_stream(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    limits = FAST.model_copy(update={"max_output_bytes": 4096})
    code = "import sys\nsys.stdout.write('a' * 10000)\nsys.stderr.write('é' * 3000)"
    result = await bwrap.run(workspace, "python", code, limits)
    assert result.exit_code == 0 and result.killed_reason is None
    assert result.stdout == "a" * 4096 and result.stdout_dropped == 10000 - 4096
    assert result.stdout_truncated and result.stderr_truncated
    assert result.stderr.startswith("é" * 2048)  # cut on bytes, decoded leniently
    assert "[stdout truncated: 5904 more bytes not shown]" in result.render()


async def test_cpu_limit_kills_a_busy_loop(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    limits = FAST.model_copy(update={"cpu_seconds": 1, "wall_seconds": 20})
    result = await bwrap.run(workspace, "python", "print('go')\nwhile True: pass", limits)
    assert result.killed_reason == "cpu" and not result.timed_out
    assert result.stdout == "go\n"  # unbuffered: output before the kill is kept
    assert "CPU time limit" in result.render()


async def test_wall_clock_kills_a_sleeper(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    limits = FAST.model_copy(update={"wall_seconds": 1})
    started = time.monotonic()
    result = await bwrap.run(workspace, "shell", "echo start; sleep 60", limits)
    assert time.monotonic() - started < 4
    assert result.timed_out and result.killed_reason == "wall clock"
    assert result.exit_code is None and result.stdout == "start\n"
    assert result.render().startswith("killed: wall-clock time limit reached")


async def test_memory_limit_fails_allocations(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    limits = FAST.model_copy(update={"memory_mb": 128})
    result = await bwrap.run(workspace, "python", "x = bytearray(200 * 1024 * 1024)", limits)
    assert result.killed_reason == "memory"
    assert "MemoryError" in result.stderr
    ok = await bwrap.run(workspace, "python", "x = bytearray(50 * 1024 * 1024)", limits)
    assert ok.exit_code == 0


async def test_file_size_limit(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    limits = FAST.model_copy(update={"max_workspace_mb": 1})
    result = await bwrap.run(workspace, "shell", "head -c 2000000 /dev/zero > big", limits)
    assert result.killed_reason == "file size"  # SIGXFSZ
    assert (workspace / "big").stat().st_size == 1024 * 1024


async def test_tmp_is_small_private_and_discarded(
    bwrap: BubblewrapSandbox, workspace: Path
) -> None:
    code = "head -c 20000000 /dev/zero > /tmp/fill; echo $?; ls -A /tmp | wc -l; df -m /dev/shm | tail -1"
    first = await bwrap.run(workspace, "shell", code, FAST)  # tmp_mb=8
    assert "No space left on device" in first.stderr
    second = await bwrap.run(workspace, "shell", "ls -A /tmp | wc -l", FAST)
    assert second.stdout.strip() == "0"


async def test_workspace_over_its_limit_is_reported(
    settings: Settings, bwrap: BubblewrapSandbox
) -> None:
    limits = FAST.model_copy(update={"max_workspace_mb": 1})
    tools = Tools(settings, bwrap, limits)
    code = "for i in range(3):\n    open(f'f{i}', 'wb').write(b'x' * 600_000)"
    out = await tools.call("run_python", json.dumps({"code": code}))
    assert "over its 1 MiB limit: delete files" in out
    with pytest.raises(Exception, match="The workspace is full"):
        await tools.call("write_file", '{"path": "more.txt", "content": "x"}')


async def test_concurrent_sandboxes_have_separate_process_caps(
    bwrap: BubblewrapSandbox, settings: Settings
) -> None:
    # All sandboxes share host uid 65534; the process cap is counted per user namespace.
    limits = FAST.model_copy(update={"max_processes": 24})
    code = "for i in $(seq 20); do sleep 1 & done; wait; echo ok"
    results = await asyncio.gather(
        *(
            bwrap.run(workspace_for(settings, "t", f"run_{i}"), "shell", code, limits)
            for i in range(3)
        )
    )
    assert [r.stdout for r in results] == ["ok\n"] * 3, [r.stderr[:200] for r in results]


async def test_code_is_passed_verbatim(bwrap: BubblewrapSandbox, workspace: Path) -> None:
    code = "print('quotes \\' \" $HOME `x` \\\\ ünïcode ✓')\n# " + "x" * 100_000
    result = await bwrap.run(workspace, "python", code, FAST)
    assert result.stdout == "quotes ' \" $HOME `x` \\ ünïcode ✓\n"


# -- results, limits, tools ------------------------------------------------------------


def test_render_is_compact() -> None:
    assert ExecResult(0, "", "").render() == "exit code: 0\n(no output)"
    assert ExecResult(137, "", "").render() == "exit code: 137 (terminated by SIGKILL)\n(no output)"
    killed = ExecResult(
        None,
        "partial\n",
        "",
        killed_reason="output limit",
        stdout_truncated=True,
        stdout_dropped=99,
    )
    assert killed.render() == (
        "killed: the program printed far more than the output limit\n--- stdout ---\n"
        "partial\n[stdout truncated: 99 more bytes not shown]"
    )
    noted = ExecResult(0, "x", "", notes=("a note",))
    assert noted.render() == "exit code: 0\n--- stdout ---\nx\n[a note]"


def test_limits_are_validated_and_frozen() -> None:
    limits = SandboxLimits()
    assert (limits.cpu_seconds, limits.memory_mb, limits.max_processes) == (10, 512, 64)
    assert (limits.wall_seconds, limits.max_output_bytes, limits.max_workspace_mb) == (
        30,
        65536,
        256,
    )
    with pytest.raises(ValidationError):
        SandboxLimits(cpu_seconds=0)
    with pytest.raises(ValidationError):
        limits.cpu_seconds = 5  # type: ignore[misc]


def test_tool_definitions(settings: Settings, bwrap: BubblewrapSandbox) -> None:
    tools = sandbox_tools(settings, backend=bwrap)
    assert tuple(t.name for t in tools) == SANDBOX_TOOL_NAMES
    assert all(isinstance(t, ToolDefinition) and not t.side_effects for t in tools)
    run_python = tools[0].schema()
    assert run_python.parameters["required"] == ["code"]
    assert "10 s CPU" in run_python.description and "No network" in run_python.description


async def test_bad_arguments_are_rejected_before_running(tools: Tools) -> None:
    with pytest.raises(BadToolArgumentsError):
        await tools.call("run_python", '{"code": ""}')
    with pytest.raises(BadToolArgumentsError):
        await tools.call("run_shell", '{"cmd": "ls"}')


# -- backend selection -------------------------------------------------------------------


def test_probe_runs_the_real_sandbox(bwrap: BubblewrapSandbox) -> None:
    status = probe(make_settings())
    assert (status.backend, status.ok) == ("bubblewrap", True)


def test_select_backend_picks_bubblewrap_without_e2b_key(bwrap: BubblewrapSandbox) -> None:
    assert select_backend(make_settings()).name == "bubblewrap"


def test_without_bubblewrap_the_tools_refuse(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable) as info:
        select_backend(settings)
    assert info.value.message.startswith(NO_BACKEND_MESSAGE)
    assert info.value.error_type is ErrorType.SANDBOX_UNAVAILABLE
    status = probe(settings)
    assert not status.ok and "apt-get install bubblewrap" in status.detail


async def test_a_missing_binary_refuses_and_runs_nothing(settings: Settings) -> None:
    tools = Tools(settings, BubblewrapSandbox(bwrap="/nonexistent/bwrap"), FAST)
    with pytest.raises(SandboxUnavailable, match="code is never run unsandboxed"):
        await tools.call("run_python", '{"code": "print(1)"}')


async def test_lazy_selection_refuses_until_a_backend_exists(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    registry_tools = Tools(settings, None, FAST)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable):
        await registry_tools.call("run_shell", '{"command": "echo hi"}')
    monkeypatch.undo()
    assert "hi" in await registry_tools.call("run_shell", '{"command": "echo hi"}')


def test_e2b_key_without_the_client_names_the_extra(settings: Settings) -> None:
    if importlib.util.find_spec("e2b_code_interpreter") is not None:
        pytest.skip("e2b-code-interpreter is installed")
    with_key = make_settings(COLONY_DATA_DIR=str(settings.data_dir), E2B_API_KEY="e2b_test")
    with pytest.raises(SandboxUnavailable, match=r"pip install colony\[e2b\]"):
        select_backend(with_key)
    status = probe(with_key)
    assert (status.backend, status.ok) == ("e2b", False)


# -- workspace transfer (what the E2B backend uses; E2B itself is not reachable here) ------


def test_unpacking_a_remote_workspace_drops_what_would_escape(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / "old.txt").write_text("replaced by the remote state")
    os.mkfifo(workspace / "fifo")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "kept.txt").write_text("kept")
    os.symlink("sub/kept.txt", workspace / "inner-link")
    archive = pack_workspace(workspace, 10 * 1024 * 1024)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = sorted(m.name for m in tar.getmembers())
    assert names == [".", "./inner-link", "./old.txt", "./sub", "./sub/kept.txt"]

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        for name, data in [("./new.txt", b"new"), ("../escaped.txt", b"x"), ("/abs.txt", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in [
            ("./etc-link", "/etc"),
            ("./up-link", "../.."),
            ("./ok-link", "new.txt"),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        device = tarfile.TarInfo("./dev")
        device.type = tarfile.CHRTYPE
        tar.addfile(device)
    unpack_workspace(evil.getvalue(), workspace, 10 * 1024 * 1024)
    assert sorted(p.name for p in workspace.iterdir()) == ["abs.txt", "new.txt", "ok-link"]
    assert (workspace / "new.txt").read_text() == "new"
    assert not (workspace.parent / "escaped.txt").exists()
    assert [p.name for p in workspace.parent.iterdir()] == [workspace.name]  # no staging left
    with pytest.raises(ToolExecutionError, match="grew past"):
        unpack_workspace(archive, workspace, 1)
