r"""A registered tool with a hostile input schema, run by the real local model.

Before `activities.providers.grammar`, this schema (a long text bound, `\w`/`\d` escapes in a
pattern, a quote in an enum value) made llama.cpp refuse the grammar and the local model
server crash with SIGSEGV on the run's first model call. Now the run ends with an answer
or an error the model or its user can act on, and the server keeps answering.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import tenants
from core.db import Pool
from core.providers import LOCAL_MODEL, local_model_installed
from tests.conftest import make_settings
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers
from workers import model_server as local_server
from workers.process import ManagedProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TENANT = "t-hostile-schema"


def hostile_input_schema() -> dict[str, Any]:
    """Valid JSON Schema that registration accepts, and that crashed llama.cpp raw."""
    meta: dict[str, Any] = {"type": "string"}
    for level in range(30):
        meta = {"type": "object", "properties": {f"m{level}": meta}}
    return {
        "type": "object",
        "properties": {
            "note": {"type": "string", "minLength": 1, "maxLength": 8000},
            "label": {"type": "string", "pattern": r"^[\w-]+\.\d{2}$"},
            "shelf": {"enum": [*(f"shelf-{i}" for i in range(1000)), 'the "top" one']},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5000},
            "meta": meta,
        },
        "required": ["note"],
        "additionalProperties": False,
    }


@pytest.fixture
async def smollm(tmp_path: Path) -> AsyncIterator[tuple[str, ManagedProcess, Path]]:
    """The real llama.cpp server with SmolLM2: (base URL, process, log file)."""
    if not local_model_installed():
        pytest.skip("local-llm extra not installed")
    port = free_port()
    log = tmp_path / "local-model.log"
    process = ManagedProcess(local_server.server_spec(port, log))
    await process.start()
    try:
        yield f"http://127.0.0.1:{port}/v1", process, log
    finally:
        await process.stop()


@pytest.fixture
async def api(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    smollm: tuple[str, ManagedProcess, Path],
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, TENANT, TENANT)
        _, key = await tenants.create_api_key(conn, TENANT, "k", role="admin")
    settings = make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        COLONY_LOCAL_MODEL_URL=smollm[0],
        COLONY_DEFAULT_MODEL=LOCAL_MODEL,
        COLONY_DATA_DIR=str(tmp_path / ".colony"),
    )
    async with api_with_workers(settings, pool, key, timeout=60) as http:
        yield http


async def finished(api: httpx.AsyncClient, run_id: str, timeout: float) -> dict[str, Any]:
    for _ in range(int(timeout)):
        body: dict[str, Any] = (await api.get(f"/v1/runs/{run_id}")).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(1)
    raise AssertionError(f"run {run_id} did not finish in {timeout:g} s")


async def test_a_hostile_tool_schema_never_crashes_the_local_model(
    api: httpx.AsyncClient, smollm: tuple[str, ManagedProcess, Path]
) -> None:
    base_url, process, log = smollm
    tool = {
        "name": "archive_note",
        "kind": "code",
        "description": "Archive a note on a shelf, under a label like 'shop-list.01'.",
        "input_schema": hostile_input_schema(),
        "source": "print('archived:', args['note'][:40])",
    }
    registered = await api.post("/v1/tools", json=tool)
    assert registered.status_code == 201, registered.text  # registration accepts it
    agent = {
        "name": "archivist",
        "instructions": "You archive notes with the archive_note tool, then say it is done.",
        "model": LOCAL_MODEL,
        "tools": ["archive_note"],
        "limits": {"max_steps": 3},
    }
    assert (await api.post("/v1/agents", json=agent)).status_code == 201
    objective = "Use archive_note to archive the note 'buy milk' with label shop-list.01."
    created = await api.post("/v1/runs", json={"agent": "archivist", "objective": objective})
    assert created.status_code == 201, created.text

    done = await finished(api, created.json()["id"], timeout=600)

    # The model was asked (the grammar compiled) and the run ended on its own terms.
    assert done["steps"] >= 1 and done["completion_tokens"] > 0, done
    if done["status"] == "succeeded":
        assert done["result"], done
    else:
        assert done["reason"], done
        for gone in ("crashed", "refused the connection", "circuit open"):
            assert gone not in done["reason"], done
    assert process.running(), f"the local model server died ({process.returncode})"
    server_log = log.read_text(errors="replace")
    assert "error parsing grammar" not in server_log
    assert "exceeds sane defaults" not in server_log

    # ... and it still answers.
    async with httpx.AsyncClient(timeout=120) as http:
        again = await http.post(
            f"{base_url}/chat/completions",
            json={
                "model": LOCAL_MODEL,
                "messages": [{"role": "user", "content": "Say hi."}],
                "max_tokens": 4,
            },
        )
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] is not None
