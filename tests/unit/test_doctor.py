"""`colony doctor` judges the stack that runs, not the environment of the shell it runs in."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.services import child_env
from workers import doctor
from workers.process import free_port
from workers.stack import STATE_FILE, StackState, WorkerConfig, write_state

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-stack-only-0123456789abcdefghij"
# What a second terminal without the first one's exports sees: no provider settings.
BARE_SHELL = {
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "ANTHROPIC_API_KEY": None,
    "COLONY_DEFAULT_MODEL": None,
    "E2B_API_KEY": None,
}


@pytest.fixture
def keyed_server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(api_key=KEY) as server:
        yield server


def start_stack_state(data: Path, server: ScriptedModelServer, pid: int | None = None) -> Path:
    """Record `stack.json` as `colony up` does, started with OPENAI_BASE_URL/OPENAI_API_KEY."""
    data.mkdir(parents=True, exist_ok=True)
    settings = make_settings(
        COLONY_DATA_DIR=str(data), OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=KEY,
        ANTHROPIC_API_KEY=None, COLONY_DEFAULT_MODEL=None, E2B_API_KEY=None,
        COLONY_API_PORT=free_port(), COLONY_TEMPORAL_PORT=free_port(),
    )  # fmt: skip
    state = StackState.of(settings, {"worker-all": os.getpid()})
    if pid is not None:
        state.pid = pid
    write_state(data, state)
    return data / STATE_FILE


def dead_pid() -> int:
    """The pid of a process that has exited (as after `colony up` was killed)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(gone.stdout)


def shell(data: Path, **values: object) -> Settings:
    values = {**BARE_SHELL, "COLONY_LOCAL_MODEL_PORT": free_port(), **values}
    return make_settings(COLONY_DATA_DIR=str(data), **values)


def test_the_state_names_key_variables_never_their_values(
    tmp_path: Path, keyed_server: ScriptedModelServer
) -> None:
    text = start_stack_state(tmp_path, keyed_server).read_text()
    config = json.loads(text)["config"]
    assert config["default_model"] == "openai/gpt-4o-mini"
    assert config["openai_base_url"] == keyed_server.base_url
    assert config["keys_set"] == ["OPENAI_API_KEY"]
    assert KEY not in text


def test_urls_are_recorded_without_credentials() -> None:
    url = "https://user:hunter2@llm.example.com:8443/v1?api-key=hunter3#x"
    config = WorkerConfig.of(make_settings(OPENAI_BASE_URL=url, QDRANT_URL=url))
    assert config.openai_base_url == config.qdrant_url == "https://llm.example.com:8443/v1"


async def test_the_running_stacks_provider_is_reported_and_judged(
    tmp_path: Path, keyed_server: ScriptedModelServer
) -> None:
    start_stack_state(tmp_path, keyed_server)
    settings = shell(tmp_path)
    stack = doctor.running_stack(settings)
    assert stack is not None
    assert (
        "model: the running stack uses openai/gpt-4o-mini via "
        f"OPENAI_BASE_URL={keyed_server.base_url} (OPENAI_API_KEY set); "
        "this shell's environment would use local/smollm2-135m"
    ) in "\n".join(stack.differences)
    assert stack.keys_unseen == {"OPENAI_API_KEY"}

    status = await doctor.check_model_provider(settings, stack)
    assert status.ok, status
    assert (
        status.detail.startswith("openai/gpt-4o-mini:") and keyed_server.base_url in status.detail
    )
    assert "OPENAI_API_KEY is not in this shell's environment" in status.detail
    # The doctor asked the stack's endpoint, without a key it does not have.
    (asked,) = [r for r in keyed_server.requests if r.endpoint == "/models"]
    assert "authorization" not in asked.headers


async def test_a_shell_with_the_key_checks_it(
    tmp_path: Path, keyed_server: ScriptedModelServer
) -> None:
    start_stack_state(tmp_path, keyed_server)
    settings = shell(tmp_path, OPENAI_API_KEY=KEY)
    stack = doctor.running_stack(settings)
    assert stack is not None and stack.keys_unseen == frozenset()
    status = await doctor.check_model_provider(settings, stack)
    assert status.ok and "not checked" not in status.detail, status
    (asked,) = [r for r in keyed_server.requests if r.endpoint == "/models"]
    assert asked.headers["authorization"] == f"Bearer {KEY}"


async def test_a_stack_that_no_longer_runs_is_ignored(
    tmp_path: Path, keyed_server: ScriptedModelServer
) -> None:
    start_stack_state(tmp_path, keyed_server, pid=dead_pid())
    settings = shell(tmp_path)
    assert doctor.running_stack(settings) is None
    # As before: this shell's own provider, the local model, whose server is not running.
    status = await doctor.check_model_provider(settings, None)
    assert not status.ok and status.detail.startswith("local/smollm2-135m:")
    assert keyed_server.requests == []


def test_doctor_command_prints_what_the_running_stack_uses(
    tmp_path: Path, keyed_server: ScriptedModelServer
) -> None:
    data = tmp_path / "data"
    start_stack_state(data, keyed_server)
    env = child_env(COLONY_DATA_DIR=str(data), COLUMNS="250",
                    COLONY_LOCAL_MODEL_PORT=str(free_port()))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "workers.cli", "doctor"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # nothing else of the stack runs
    assert f"Colony is running on {data} (pid {os.getpid()})" in out
    assert "the running stack uses openai/gpt-4o-mini via OPENAI_BASE_URL=" in out
    assert "this shell's environment would use local/smollm2-135m" in out
    provider = next(line for line in out.splitlines() if "model provider" in line)
    assert "ready" in provider and "NOT READY" not in provider, out
    assert KEY not in out
