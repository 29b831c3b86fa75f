"""Agents' guardrails over HTTP: real Postgres, Temporal, workers and the scripted model server.

Input is checked before the first model call, the final answer before it is stored;
every trigger is a `guardrail.triggered` event, a safety log row and a metric.
"""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from api.cli import safety as cli_safety
from api.cli.main import cli
from core.db import Pool
from tests.conftest import make_settings
from tests.support.api import tenant_keys
from tests.support.model_server import ScriptedModelServer, reply
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers

TENANT = "t-guardrails"


@pytest.fixture(scope="module")
async def key(pool: Pool) -> str:
    return (await tenant_keys(pool, TENANT))[TENANT]


@pytest.fixture
async def api(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    key: str,
    model_server: ScriptedModelServer,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_server.base_url,
        COLONY_DEFAULT_MODEL="openai/scripted-model",
        COLONY_MODERATION_BASE_URL=model_server.base_url,
    )
    async with api_with_workers(settings, pool, key) as http:
        yield http


async def agent(api: httpx.AsyncClient, guardrails: dict[str, Any]) -> str:
    name = "guarded-" + uuid.uuid4().hex[:6]
    body = {
        "name": name,
        "instructions": "Answer briefly.",
        "model": "openai/scripted-model",
        "guardrails": guardrails,
    }
    created = await api.post("/v1/agents", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["guardrails"]["pii"] == guardrails.get("pii")
    return name


async def run(api: httpx.AsyncClient, name: str, objective: str) -> dict[str, Any]:
    created = await api.post("/v1/runs", json={"agent": name, "objective": objective})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    for _ in range(300):
        body: dict[str, Any] = (await api.get(f"/v1/runs/{run_id}")).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


async def triggered(api: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    events = (await api.get(f"/v1/runs/{run_id}/events", params={"format": "json"})).json()
    return [e["data"] for e in events if e["type"] == "guardrail.triggered"]


async def safety_log(api: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await api.get("/v1/safety-log", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


async def counter(api: httpx.AsyncClient, guardrail: str, stage: str, action: str) -> float:
    text = (await api.get("/metrics")).text
    labels = f'action="{action}",guardrail="{guardrail}",stage="{stage}"'
    match = re.search(r"^colony_guardrail_triggers_total\{" + re.escape(labels) + r"\} (\S+)$",
                      text, re.MULTILINE)  # fmt: skip
    return float(match.group(1)) if match else 0.0


async def test_a_blocked_input_topic_refuses_the_run(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    name = await agent(api, {"topics": [{"name": "weapons", "keywords": ["grenade"]}]})
    before = await counter(api, "topic", "input", "block")
    done = await run(api, name, "How do I make a grenade? Mail me at eve@example.com")
    assert done["outcome"] == "failed"
    assert done["reason"].startswith("GuardrailBlocked: the input was blocked by guardrail")
    assert "'topic:weapons'" in done["reason"] and "grenade" not in done["reason"]
    assert model_server.chat_requests() == []  # refused before the first model call
    # The blocked text is kept nowhere but in the safety log's masked excerpt.
    assert (
        done["objective"] == "[input withheld by guardrail 'topic:weapons' (1 distinct match(es))]"
    )
    messages = (await api.get(f"/v1/runs/{done['id']}/messages")).json()
    events = (await api.get(f"/v1/runs/{done['id']}/events", params={"format": "json"})).json()
    assert "grenade" not in str(messages) + str(events)
    assert [
        (t["guardrail"], t["stage"], t["action"]) for t in await triggered(api, done["id"])
    ] == [("topic:weapons", "input", "block")]
    [row] = await safety_log(api, run=done["id"])
    assert (row["agent_name"], row["agent_version"], row["guardrail"], row["stage"]) == (
        name, 1, "topic:weapons", "input",
    )  # fmt: skip
    assert row["excerpt"] == "How do I make a [REDACTED]? Mail me at [EMAIL]"
    assert [r["id"] for r in await safety_log(api, agent=name)] == [row["id"]]
    assert await safety_log(api, agent="nobody-here") == []
    assert await safety_log(api, since="2999-01-01T00:00:00Z") == []
    assert await counter(api, "topic", "input", "block") == before + 1
    shown = await colony(api, "safety-log", "--agent", name)
    assert shown.exit_code == 0, shown.output
    assert f"{name} v1  {done['id']}  topic:weapons input block" in shown.output
    assert "How do I make a [REDACTED]? Mail me at [EMAIL]" in shown.output


async def colony(api: httpx.AsyncClient, *args: str) -> Any:
    """The CLI, talking to `api` (from a thread: the CLI is synchronous)."""
    loop = asyncio.get_running_loop()

    class Client:
        def __enter__(self) -> "Client":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def get(self, path: str, **kwargs: Any) -> Any:
            response = asyncio.run_coroutine_threadsafe(api.get(path, **kwargs), loop).result()
            return response.json()

    def invoke() -> Any:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cli_safety, "api_client", Client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})

    return await asyncio.to_thread(invoke)


async def test_personal_data_is_masked_in_the_stored_output(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    name = await agent(api, {"pii": {"stages": ["input", "output"], "action": "mask"}})
    model_server.script(reply("Write to bob@example.com or call 415-555-2671 today."))
    done = await run(api, name, "My card is 4111 1111 1111 1111; who do I contact?")
    assert done["outcome"] == "succeeded"
    assert done["result"] == "Write to [EMAIL] or call [PHONE] today."
    assert done["objective"] == "My card is [CARD]; who do I contact?"
    # The model never saw the card number; no stored message or event holds either.
    [request] = model_server.chat_requests()
    assert "4111" not in str(request.messages)
    messages = (await api.get(f"/v1/runs/{done['id']}/messages")).json()
    events = (await api.get(f"/v1/runs/{done['id']}/events", params={"format": "json"})).json()
    for leak in ("4111 1111", "bob@example.com", "555-2671"):
        assert leak not in str(messages) and leak not in str(events)
    kinds = {(t["stage"], t["action"], t["detail"]) for t in await triggered(api, done["id"])}
    assert kinds == {("input", "mask", "card"), ("output", "mask", "email, phone")}
    assert len(await safety_log(api, run=done["id"])) == 2


async def test_flag_only_keeps_the_output_and_records_it(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    name = await agent(
        api,
        {"topics": [{"name": "refunds", "keywords": ["refund"], "action": "flag"}]},
    )
    model_server.script(reply("You will get a refund within 5 days."))
    done = await run(api, name, "What happens to my money?")
    assert (done["outcome"], done["result"]) == (
        "succeeded",
        "You will get a refund within 5 days.",
    )
    [row] = await safety_log(api, run=done["id"])
    assert (row["guardrail"], row["stage"], row["action"]) == ("topic:refunds", "output", "flag")
    assert row["excerpt"] == "You will get a [REDACTED] within 5 days."


async def test_a_maximum_output_size(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    cut = await agent(api, {"output_size": {"max_chars": 20}})
    model_server.script(reply("A" * 50))
    done = await run(api, cut, "Say a lot.")
    assert done["outcome"] == "succeeded"
    assert done["result"] == "A" * 20 + "\n[cut at 20 characters]"
    refused = await agent(api, {"output_size": {"max_chars": 20, "action": "block"}})
    model_server.script(reply("B" * 50))
    done = await run(api, refused, "Say a lot.")
    assert done["outcome"] == "failed" and done["result"] is None
    assert "guardrail 'output_size' (50 > 20 characters)" in done["reason"]
    messages = (await api.get(f"/v1/runs/{done['id']}/messages")).json()
    assert "BBBB" not in str(messages)  # the stored answer is a notice, not the text
    [row] = await safety_log(api, run=done["id"])
    assert (row["guardrail"], row["action"]) == ("output_size", "block")


async def test_moderation_by_the_endpoint_and_locally(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    model_server.flag_for_moderation("crowbar", "violence")
    endpoint = await agent(api, {"moderation": {"engine": "endpoint", "stages": ["output"]}})
    model_server.script(reply("Hit it with a crowbar."))
    done = await run(api, endpoint, "How do I open the crate?")
    assert done["outcome"] == "failed"
    assert "guardrail 'moderation' (violence)" in done["reason"] and "crowbar" not in done["reason"]
    moderations = [r for r in model_server.requests if r.endpoint == "/moderations"]
    assert [r.body["input"] for r in moderations] == ["Hit it with a crowbar."]
    # Flagged by the endpoint, so `flag` records it and keeps the answer.
    flagging = await agent(
        api, {"moderation": {"engine": "auto", "stages": ["output"], "action": "flag"}}
    )
    model_server.script(reply("Use a crowbar carefully."))
    done = await run(api, flagging, "How do I open the crate?")
    assert (done["outcome"], done["result"]) == ("succeeded", "Use a crowbar carefully.")
    assert [t["detail"] for t in await triggered(api, done["id"])] == ["violence"]
    # The local lexicon classifier needs no endpoint.
    local = await agent(api, {"moderation": {"engine": "local"}})
    before = len(model_server.requests)
    done = await run(api, local, "Tell me how to build a bomb.")
    assert done["outcome"] == "failed" and "(violence)" in done["reason"]
    assert len(model_server.requests) == before  # no model call, no moderation request
