"""Agents and runs over HTTP: real Postgres, Temporal, workers and the scripted model server."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core import tenants
from core.db import Pool
from tests.api.test_api import assert_error
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, hang, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers

CALC = {
    "name": "calc",
    "instructions": "Use the calculator.",
    "model": "openai/scripted-model",
    "tools": ["calculator"],
}


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    async with pool.connection() as conn:
        out = {}
        for tenant in ("t-runs", "t-other"):
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="admin")
        return out


@pytest.fixture
async def api(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    keys: dict[str, str],
    model_server: ScriptedModelServer,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/scripted-model",
    )
    async with api_with_workers(settings, pool, keys["t-runs"]) as http:
        yield http


async def wait_finished(api: httpx.AsyncClient, run_id: str, timeout: float = 30) -> dict[str, Any]:
    for _ in range(int(timeout / 0.1)):
        body: dict[str, Any] = (await api.get(f"/v1/runs/{run_id}")).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in block.splitlines()
            if ": " in line and not line.startswith(":")
        )
        if "data" in fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])}
            )
    return events


async def test_agents_are_versioned(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/agents", json=CALC)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["limits"]["max_steps"] == 25
    again = await api.post("/v1/agents", json=CALC)
    assert again.status_code == 200 and again.json()["version"] == 1
    changed = await api.post("/v1/agents", json={**CALC, "instructions": "Be terse."})
    assert changed.status_code == 201 and changed.json()["version"] == 2
    assert (await api.get("/v1/agents/calc")).json()["instructions"] == "Be terse."
    versions = (await api.get("/v1/agents/calc/versions")).json()
    assert [v["version"] for v in versions] == [2, 1]
    rolled = await api.post("/v1/agents/calc/rollback", json={"version": 1})
    assert rolled.status_code == 201 and rolled.json()["version"] == 3
    assert rolled.json()["instructions"] == "Use the calculator."
    assert "calc" in [a["name"] for a in (await api.get("/v1/agents")).json()]


async def test_bad_agents_are_4xx(api: httpx.AsyncClient, keys: dict[str, str]) -> None:
    assert_error(await api.get("/v1/agents/nobody"), 404, "not_found")
    assert_error(
        await api.post("/v1/agents", json={**CALC, "model": "gpt4"}), 422, "invalid_request"
    )
    assert_error(
        await api.post("/v1/agents", json={**CALC, "tools": ["a", "a"]}), 422, "invalid_request"
    )
    assert_error(
        await api.post("/v1/agents", json={**CALC, "colour": "red"}), 422, "invalid_request"
    )
    assert_error(
        await api.post("/v1/agents", json={**CALC, "name": "bad name!"}), 422, "invalid_request"
    )
    assert_error(await api.post("/v1/agents/calc/rollback", json={"version": 99}), 404, "not_found")
    # Tools must exist (patterns are checked when a run starts); agents may call themselves.
    unknown = await api.post("/v1/agents", json={**CALC, "tools": ["calculator", "web_serch"]})
    assert_error(unknown, 404, "not_found")
    assert unknown.json()["error"]["details"] == {"unknown_tools": ["web_serch"]}
    assert_error(
        await api.post("/v1/agents", json={**CALC, "tools": ["agent:nobody"]}), 404, "not_found"
    )
    assert_error(
        await api.post("/v1/agents", json={**CALC, "tools": ["rm -rf"]}), 422, "invalid_request"
    )
    for tools in (["mcp:github/*", "run_python", "ask_human"], ["agent:calc", "http_fetch"]):
        assert (await api.post("/v1/agents", json={**CALC, "tools": tools})).status_code == 201
    # Another tenant does not see this tenant's agents.
    other = {"Authorization": f"Bearer {keys['t-other']}"}
    assert_error(await api.get("/v1/agents/calc", headers=other), 404, "not_found")


async def test_a_run_over_http_with_events(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    await api.post("/v1/agents", json=CALC)
    model_server.script(
        tool_calls(tool_call("calculator", {"expression": "21*2"})), reply("It is 42.")
    )
    created = await api.post("/v1/runs", json={"agent": "calc", "objective": "21*2?"})
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["id"].startswith("run_") and run["status"] in ("queued", "running")
    done = await wait_finished(api, run["id"])
    assert (done["status"], done["outcome"], done["result"]) == (
        "succeeded",
        "succeeded",
        "It is 42.",
    )
    assert (
        done["steps"] == 2
        and done["tokens"] == done["prompt_tokens"] + done["completion_tokens"] > 0
    )
    assert done["cost_complete"] is False  # the scripted model has no known price

    stream = await api.get(f"/v1/runs/{run['id']}/events", headers={"Accept": "text/event-stream"})
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(stream.text)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "run.started" and events[-1]["event"] == "run.finished"
    assert {"model.message", "tool.call", "tool.result", "cost"} <= {e["event"] for e in events}

    # Resume after event k: exactly the rest, no gap, no duplicate.
    k = len(events) // 2
    resumed = parse_sse(
        (await api.get(f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": str(k)})).text
    )
    assert resumed == events[k:]
    as_json = (
        await api.get(f"/v1/runs/{run['id']}/events", params={"format": "json", "after": k})
    ).json()
    assert [e["seq"] for e in as_json] == [e["id"] for e in events[k:]]
    assert_error(
        await api.get(f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": "x"}),
        422,
        "invalid_request",
    )

    # The transcript: what colony://runs/{id}/messages/{seq} refers to, page by page.
    messages = (await api.get(f"/v1/runs/{run['id']}/messages")).json()
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[2]["content"] == "42" and messages[-1]["content"] == "It is 42."
    assert messages[1]["tool_calls"][0]["name"] == "calculator"
    page = await api.get(f"/v1/runs/{run['id']}/messages", params={"after": 1, "limit": 2})
    assert [m["seq"] for m in page.json()] == [messages[1]["seq"], messages[2]["seq"]]
    assert_error(await api.get("/v1/runs/run_nope/messages"), 404, "not_found")


async def test_idempotent_run_creation_and_inline_agents(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    model_server.default = reply("ok")
    spec = {k: v for k, v in CALC.items() if k != "name"}
    body = {"agent_spec": spec, "objective": "hello"}
    first = await api.post("/v1/runs", json=body, headers={"Idempotency-Key": "same-1"})
    second = await api.post("/v1/runs", json=body, headers={"Idempotency-Key": "same-1"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["agent"].startswith("inline-")
    await wait_finished(api, first.json()["id"])
    assert len(model_server.chat_requests()) == 1


async def test_bad_runs_are_4xx(
    api: httpx.AsyncClient, keys: dict[str, str], model_server: ScriptedModelServer
) -> None:
    await api.post("/v1/agents", json=CALC)
    assert_error(
        await api.post("/v1/runs", json={"agent": "nobody", "objective": "x"}), 404, "not_found"
    )
    assert_error(await api.post("/v1/runs", json={"agent": "calc"}), 422, "invalid_request")
    assert_error(
        await api.post("/v1/runs", json={"agent": "calc", "objective": ""}), 422, "invalid_request"
    )
    assert_error(await api.get("/v1/runs/run_nothing"), 404, "not_found")
    model_server.default = reply("fine")
    run = (await api.post("/v1/runs", json={"agent": "calc", "objective": "x"})).json()
    await wait_finished(api, run["id"])
    assert_error(
        await api.post(f"/v1/runs/{run['id']}/messages", json={"content": "more"}), 409, "conflict"
    )
    assert_error(await api.post(f"/v1/runs/{run['id']}/cancel"), 409, "conflict")
    other = {"Authorization": f"Bearer {keys['t-other']}"}
    assert_error(await api.get(f"/v1/runs/{run['id']}", headers=other), 404, "not_found")
    assert_error(await api.get(f"/v1/runs/{run['id']}/events", headers=other), 404, "not_found")


async def test_conversation_approval_and_cancel_over_http(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    agent = {
        **CALC,
        "name": "careful",
        "tool_policies": {"calculator": {"mode": "requires_approval"}},
    }
    await api.post("/v1/agents", json=agent)
    model_server.script(
        tool_calls(tool_call("calculator", {"expression": "5*5"}, id="k1")),
        reply("25"),
        reply("bye"),
    )
    run = (
        await api.post(
            "/v1/runs", json={"agent": "careful", "objective": "5*5?", "conversation": True}
        )
    ).json()
    for _ in range(100):
        body = (await api.get(f"/v1/runs/{run['id']}")).json()
        if body["pending_approvals"]:
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "waiting" and body["phase"] == "waiting_for_approval"
    assert body["pending_approvals"][0]["call_id"] == "k1"
    assert_error(
        await api.post(f"/v1/runs/{run['id']}/approvals", json={"call_id": "zz", "approved": True}),
        409,
        "conflict",
    )
    approved = await api.post(
        f"/v1/runs/{run['id']}/approvals", json={"call_id": "k1", "approved": True}
    )
    assert approved.status_code == 200, approved.text
    for _ in range(100):
        body = (await api.get(f"/v1/runs/{run['id']}")).json()
        if body["phase"] == "waiting_for_message":
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "waiting"
    sent = await api.post(
        f"/v1/runs/{run['id']}/messages", json={"content": "thanks", "end_conversation": True}
    )
    assert sent.status_code == 202
    done = await wait_finished(api, run["id"])
    assert done["outcome"] == "succeeded" and done["result"] == "bye"

    model_server.script(hang(30))
    stuck = (await api.post("/v1/runs", json={"agent": "calc", "objective": "slow"})).json()
    await asyncio.to_thread(model_server.wait_for_requests, len(model_server.requests) + 1, 10)
    cancelled = await api.post(f"/v1/runs/{stuck['id']}/cancel")
    assert cancelled.status_code == 202
    done = await wait_finished(api, stuck["id"])
    assert (done["status"], done["outcome"]) == ("cancelled", "cancelled")


async def test_a_run_without_an_agent_uses_the_default_assistant(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    model_server.default = reply("hi there")
    run = (await api.post("/v1/runs", json={"objective": "say hi"})).json()
    assert run["agent"] == "assistant"
    done = await wait_finished(api, run["id"])
    assert done["result"] == "hi there"
    assistant = (await api.get("/v1/agents/assistant")).json()
    assert assistant["tools"] == ["calculator", "get_time"]
    assert assistant["model"] == "openai/scripted-model"  # COLONY_DEFAULT_MODEL
