"""Histories are encrypted on the Temporal server; the API's codec endpoint decodes them.

A dev server with its UI runs with `--ui-codec-endpoint` as `colony up` starts it: its
HTTP API (what the UI reads) shows only encrypted payloads, and `POST /codec/decode`
with an admin key gives the readable ones back.
"""

import asyncio
import base64
import os
import re
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DefaultPayloadConverter

from api.main import create_app
from core import tenants
from core.codec import ENCODING, KEY_ID_KEY, PAYLOAD_KEYS_FILE, codec_from_settings
from core.db import Pool
from core.settings import Settings
from core.temporal import ColonyPlugin
from tests.conftest import TEST_PAYLOAD_KEYS, make_settings
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import TemporalServer, temporal_dev_server
from tests.support.workers import api_with_workers
from workers.process import free_port
from workers.stack import Stack
from workers.temporal_server import find_binary

TENANT = "t-codec"
OTHER = "t-codec-other"
CODEC_URL = "http://colony.test/codec"
CALC = {
    "name": "calc",
    "instructions": "Use the calculator.",
    "model": "openai/scripted-model",
    "tools": ["calculator"],
}


@pytest.fixture(scope="module")
async def ui_temporal(services_dir: Path) -> AsyncIterator[tuple[TemporalServer, int]]:
    ui_port = free_port()
    async with temporal_dev_server(
        services_dir, ui_port=ui_port, ui_codec_endpoint=CODEC_URL
    ) as server:
        yield server, ui_port


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    out = {}
    async with pool.connection() as conn:
        for tenant in (TENANT, OTHER):
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "admin", role="admin")
        _, out["member"] = await tenants.create_api_key(conn, TENANT, "member")
    return out


async def ui_history(browser: httpx.AsyncClient, workflow_id: str) -> httpx.Response:
    """A workflow's history as the UI serves it to the browser.

    The UI server dials the frontend once at start; when the frontend was not up yet (a
    loaded machine), its gRPC channel backs off and answers 503 for a while.
    """
    path = f"/api/v1/namespaces/default/workflows/{workflow_id}/history"
    for _ in range(120):
        shown = await browser.get(path)
        if shown.status_code != 503:
            break
        await asyncio.sleep(1)
    assert shown.status_code == 200, shown.text
    return shown


def settings_for(
    database_url: str, temporal: TemporalServer, model_url: str, **env: str
) -> Settings:
    return make_settings(
        DATABASE_URL=database_url, TEMPORAL_ADDRESS=temporal.address, OPENAI_BASE_URL=model_url,
        COLONY_DEFAULT_MODEL="openai/scripted-model", **env,
    )  # fmt: skip


async def run_to_the_end(http: httpx.AsyncClient, objective: str) -> dict[str, Any]:
    await http.post("/v1/agents", json=CALC)
    created = await http.post("/v1/runs", json={"agent": "calc", "objective": objective})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    for _ in range(300):
        body: dict[str, Any] = (await http.get(f"/v1/runs/{run_id}")).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


async def cli(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return out.decode()


def payload_data(output: str) -> bytes:
    """Every payload's data in the CLI's JSON output of a history, decoded from base64."""
    found = re.findall(r'"data": "([A-Za-z0-9+/=]*)"', output)
    return b"\n".join(base64.b64decode(d) for d in found)


def payload_json(payload: Payload) -> dict[str, Any]:
    """A payload as the codec protocol sends it."""
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


async def test_histories_are_encrypted_and_the_codec_decodes_them(
    ui_temporal: tuple[TemporalServer, int],
    database_url: str,
    pool: Pool,
    keys: dict[str, str],
    model_server: ScriptedModelServer,
) -> None:
    temporal, ui_port = ui_temporal
    secret_answer = f"The answer is {uuid.uuid4().hex}."
    settings = settings_for(database_url, temporal, model_server.base_url)
    model_server.script(
        tool_calls(tool_call("calculator", {"expression": "1234*5678"})), reply(secret_answer)
    )
    async with api_with_workers(settings, pool, keys[TENANT]) as http:
        done = await run_to_the_end(http, "Multiply 1234 by 5678, please.")
        assert (done["status"], done["result"]) == ("succeeded", secret_answer)
        workflow_id = f"run-{done['id']}"

        colony = await Client.connect(temporal.address, plugins=[ColonyPlugin(settings)])
        assert (await colony.get_workflow_handle(workflow_id).result())["result"] == secret_answer
        # Without the codec (a plain client, as `temporal` CLI users and the server see it).
        plain = await Client.connect(temporal.address)
        history = await plain.get_workflow_handle(workflow_id).fetch_history()
        raw = b"".join(e.SerializeToString() for e in history.events)
        for text in (secret_answer, "1234*5678", "calculator"):
            assert text.encode() not in raw, text
        started = history.events[0].workflow_execution_started_event_attributes
        (argument,) = started.input.payloads
        assert argument.metadata["encoding"] == ENCODING
        assert argument.metadata[KEY_ID_KEY] == b"test-1"
        completed = history.events[-1].workflow_execution_completed_event_attributes
        (result,) = completed.result.payloads
        assert result.metadata["encoding"] == ENCODING
        # Search attributes are not payloads a codec sees: they stay readable.
        assert (
            started.search_attributes.indexed_fields["ColonyTenant"].data == f'"{TENANT}"'.encode()
        )

        # The UI's own HTTP API (what the browser gets) shows the same ciphertext, and the
        # UI is told to send it to our codec endpoint.
        ui = f"http://127.0.0.1:{ui_port}"
        async with httpx.AsyncClient(base_url=ui, timeout=10) as browser:
            ui_settings = (await browser.get("/api/v1/settings")).json()
            assert ui_settings["Codec"]["Endpoint"] == CODEC_URL, ui_settings
            shown = await ui_history(browser, workflow_id)
            page = shown.text
            assert secret_answer not in page and "1234*5678" not in page
            assert base64.b64encode(ENCODING).decode() in page

        # With the codec endpoint and an admin key: readable.
        body = {"payloads": [payload_json(argument), payload_json(result)]}
        decoded = await http.post("/codec/decode", json=body, headers={"X-Namespace": "default"})
        assert decoded.status_code == 200, decoded.text
        readable = [base64.b64decode(p["data"]).decode() for p in decoded.json()["payloads"]]
        assert done["id"] in readable[0] and secret_answer in readable[1]
        assert [
            base64.b64decode(p["metadata"]["encoding"]) for p in decoded.json()["payloads"]
        ] == [
            b"json/plain",
            b"json/plain",
        ]
        # Every payload of the history decodes (failure attributes included).
        codec = codec_from_settings(settings)
        for event in history.events:
            codec.decrypt_message(event)
        assert secret_answer.encode() in b"".join(e.SerializeToString() for e in history.events)

        # No key: 401; a member key: 403; another tenant's admin: the payload naming
        # this tenant stays encrypted; another namespace: 404.
        async with httpx.AsyncClient(
            transport=http._transport, base_url="http://colony"
        ) as anonymous:
            assert (await anonymous.post("/codec/decode", json=body)).status_code == 401
            assert (await anonymous.post("/codec/encode", json=body)).status_code == 401
            member = {"Authorization": f"Bearer {keys['member']}"}
            assert (
                await anonymous.post("/codec/decode", json=body, headers=member)
            ).status_code == 403
            other = {"Authorization": f"Bearer {keys[OTHER]}"}
            theirs = (await anonymous.post("/codec/decode", json=body, headers=other)).json()
            assert theirs["payloads"][0] == body["payloads"][0]
        wrong_ns = await http.post("/codec/decode", json=body, headers={"X-Namespace": "elsewhere"})
        assert wrong_ns.status_code == 404

        # The Temporal CLI, through the codec endpoint served over real HTTP, with the key.
        app = http._transport.app  # type: ignore[attr-defined]
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        try:
            for _ in range(200):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            show = [str(find_binary()), "workflow", "show", "--workflow-id", workflow_id,
                    "--address", temporal.address, "--output", "json",
                    "--codec-endpoint", f"http://127.0.0.1:{port}/codec"]  # fmt: skip
            with_key = await cli(*show, "--codec-auth", f"Bearer {keys[TENANT]}")
            assert secret_answer.encode() in payload_data(with_key)
            without = await cli(*show)
            assert secret_answer.encode() not in payload_data(without)
        finally:
            server.should_exit = True
            await serving

        # Garbage is a 422, not a 500.
        bad = await http.post("/codec/decode", json={"payloads": [{"data": "not base64!"}]})
        assert bad.status_code == 422


async def test_encode_then_decode_round_trips(
    database_url: str, temporal: TemporalServer, pool: Pool, keys: dict[str, str]
) -> None:
    app = create_app(
        settings_for(
            database_url, temporal, "http://127.0.0.1:9",
            COLONY_TEMPORAL_UI_URL="http://localhost:8233",
        )
    )  # fmt: skip
    original = DefaultPayloadConverter().to_payloads([{"tenant_id": TENANT, "text": "hello"}])[0]
    headers = {"Authorization": f"Bearer {keys[TENANT]}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony", headers=headers
        ) as http,
    ):
        encoded = (
            await http.post("/codec/encode", json={"payloads": [payload_json(original)]})
        ).json()
        (sealed,) = encoded["payloads"]
        assert base64.b64decode(sealed["metadata"]["encoding"]) == ENCODING
        decoded = (await http.post("/codec/decode", json=encoded)).json()
        assert decoded["payloads"] == [payload_json(original)]

        # The browser's preflight from the UI's origin passes; from another origin it does not.
        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type,x-namespace"}  # fmt: skip
        ok = await http.options(
            "/codec/decode", headers={"Origin": "http://localhost:8233", **preflight}
        )
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == "http://localhost:8233"
        assert "Authorization" in ok.headers["access-control-allow-headers"]
        refused = await http.options(
            "/codec/decode", headers={"Origin": "http://evil.test", **preflight}
        )
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


async def test_a_rotated_key_still_decodes_old_histories(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    keys: dict[str, str],
    model_server: ScriptedModelServer,
) -> None:
    answer = f"Old answer {uuid.uuid4().hex}."
    model_server.script(reply(answer))
    old = settings_for(database_url, temporal, model_server.base_url)
    async with api_with_workers(old, pool, keys[TENANT]) as http:
        done = await run_to_the_end(http, "Say something.")
    assert done["result"] == answer

    # A new key goes first; the old one stays to decrypt what it encrypted.
    new_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    rotated = settings_for(
        database_url, temporal, model_server.base_url,
        COLONY_PAYLOAD_KEYS=f"test-2:{new_key},{TEST_PAYLOAD_KEYS}",
    )  # fmt: skip
    client = await Client.connect(temporal.address, plugins=[ColonyPlugin(rotated)])
    handle = client.get_workflow_handle(f"run-{done['id']}")
    assert (await handle.result())["result"] == answer
    # New payloads are encrypted with the new key.
    codec = codec_from_settings(rotated)
    assert (await codec.encode([Payload(data=b"x")]))[0].metadata[KEY_ID_KEY] == b"test-2"
    # Without the old key, the old history does not decode.
    only_new = codec_from_settings(make_settings(COLONY_PAYLOAD_KEYS=f"test-2:{new_key}"))
    history: WorkflowHistory = await handle.fetch_history()
    with pytest.raises(ValueError, match="test-1"):
        only_new.decrypt_message(history.events[0])

    app = create_app(rotated)
    payload = history.events[-1].workflow_execution_completed_event_attributes.result.payloads[0]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {keys[TENANT]}"},
        ) as http,
    ):  # fmt: skip
        decoded = (
            await http.post("/codec/decode", json={"payloads": [payload_json(payload)]})
        ).json()
    assert answer in base64.b64decode(decoded["payloads"][0]["data"]).decode()


def test_the_embedded_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    settings = make_settings(COLONY_DATA_DIR=str(tmp_path), COLONY_PAYLOAD_KEYS=None)
    first = codec_from_settings(settings)
    path = tmp_path / PAYLOAD_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert codec_from_settings(settings).key_ids == first.key_ids
    assert first.key_id.startswith("local-")


def test_colony_up_starts_the_ui_with_the_codec_endpoint(tmp_path: Path) -> None:
    settings = make_settings(COLONY_DATA_DIR=str(tmp_path), COLONY_API_PORT=8123)
    argv = Stack(settings).temporal_spec().argv
    at = argv.index("--ui-codec-endpoint")
    assert argv[at + 1] == "http://127.0.0.1:8123/codec"
    assert "--ui-port" in argv
