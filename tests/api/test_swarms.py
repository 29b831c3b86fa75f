"""Swarms over HTTP and the CLI: real Postgres, Temporal, workers and the scripted model server.

Subtasks run concurrently, so the model is scripted with `SwarmScript`, a responder that
answers by what each request is: the queen's plan, the queen's synthesis, or a subtask's run.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from api.cli import swarms as cli_swarms
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core.db import Pool
from core.settings import Settings
from core.swarms import store as swarm_store
from tests.api.test_api import assert_error
from tests.api.test_runs import parse_sse
from tests.api.test_runs import wait_finished as wait_run_finished
from tests.conftest import make_settings
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer, fault
from tests.support.services import TemporalServer
from tests.support.swarm_script import SwarmScript, plan_json, requests_for, subtask
from tests.support.workers import api_with_workers

UI = "http://temporal-ui.test"
TENANT, OTHER = "t-swarms", "t-swarms-other"
PRICED = "openai/gpt-4o-mini"  # LiteLLM knows its price; the scripted model's is unknown
DIAMOND = [subtask("a", "researcher"), subtask("b", "writer", ["a"]),
           subtask("c", "writer", ["a"]), subtask("d", "reviewer", ["b", "c"])]  # fmt: skip
ANSWER = "Done [a][d]"


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    return await tenant_keys(pool, TENANT, OTHER)


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(
        database_url,
        temporal.address,
        model_server.base_url,
        tmp_path / "data",
        COLONY_TEMPORAL_UI_URL=UI,
    )


@pytest.fixture
async def api(
    settings: Settings, pool: Pool, keys: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_with_workers(settings, pool, keys[TENANT]) as http:
        yield http


async def wait_for(
    api: httpx.AsyncClient,
    swarm_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
) -> dict[str, Any]:
    """Poll the swarm until `done(body)`."""
    for _ in range(int(timeout / 0.1)):
        body: dict[str, Any] = (await api.get(f"/v1/swarms/{swarm_id}")).json()
        if done(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"swarm {swarm_id} did not get there: {body}")


async def wait_finished(api: httpx.AsyncClient, swarm_id: str) -> dict[str, Any]:
    return await wait_for(api, swarm_id, lambda b: b["status"] in swarm_store.TERMINAL)


async def test_a_user_plan_runs_as_a_dag(
    api: httpx.AsyncClient, model_server: ScriptedModelServer, keys: dict[str, str]
) -> None:
    SwarmScript(synthesis=ANSWER).install(model_server)
    created = await api.post("/v1/swarms", json={
        "objective": "Write a report", "plan": DIAMOND, "models": {"medium": PRICED},
        "limits": {"max_parallel": 2},
    })  # fmt: skip
    assert created.status_code == 201, created.text
    swarm = created.json()
    assert swarm["id"].startswith("swarm_") and swarm["status"] in ("queued", "running")
    assert (swarm["queen"], swarm["mode"], swarm["plan_version"]) == ("queen", "hierarchical", 1)
    assert [s["id"] for s in swarm["subtasks"]] == ["a", "b", "c", "d"]
    assert swarm["temporal_ui"] == f"{UI}/namespaces/default/workflows/swarm-{swarm['id']}"
    assert swarm["limits"]["max_parallel"] == 2 and swarm["models"] == {"medium": PRICED}

    done = await wait_finished(api, swarm["id"])
    assert done["status"] == done["outcome"] == "succeeded" and done["phase"] == "finished"
    assert done["result"] == ANSWER and done["attribution"] == ["a", "d"]
    subtasks = {s["id"]: s for s in done["subtasks"]}
    for sid, s in subtasks.items():
        assert (s["status"], s["attempts"]) == ("succeeded", 1), s
        assert s["run_id"].startswith("run_") and s["cost_usd"] > 0
        assert s["agent"] == s["role"] and s["model"] == PRICED  # the tier's model goes first
        assert s["temporal_ui"] == f"{done['temporal_ui']}/{sid}"
        assert s["started_at"] and s["finished_at"]
    assert subtasks["d"]["depends_on"] == ["b", "c"]
    # The queen's calls have no known price: the total is the subtasks' and says so.
    assert done["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in subtasks.values()))
    assert done["cost_complete"] is False
    # Each subtask is an ordinary run whose objective carries its dependencies' results.
    run_d = (await api.get(f"/v1/runs/{subtasks['d']['run_id']}")).json()
    assert (run_d["result"], run_d["agent"]) == ("result of d", "reviewer")
    assert "result of b" in run_d["objective"] and "result of c" in run_d["objective"]
    # Built-in roles became the tenant's agents, with the default model.
    reviewer = (await api.get("/v1/agents/reviewer")).json()
    assert reviewer["model"] == "openai/scripted-model"

    stream = await api.get(f"/v1/swarms/{swarm['id']}/events")
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(stream.text)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["swarm.started", "swarm.planned"]
    assert kinds[-2:] == ["swarm.synthesized", "swarm.finished"]
    assert events[1]["data"]["subtasks"][3]["depends_on"] == ["b", "c"]

    def positions(kind: str) -> dict[str, int]:
        return {e["data"]["subtask_id"]: i for i, e in enumerate(events) if e["event"] == kind}

    started, ended = positions("subtask.started"), positions("subtask.finished")
    assert all(started[sid] < ended[sid] for sid in "abcd")
    assert ended["a"] < min(started["b"], started["c"])
    assert max(ended["b"], ended["c"]) < started["d"]
    finished = events[-1]["data"]
    assert finished["outcome"] == "succeeded"
    assert finished["subtasks"] == dict.fromkeys("abcd", "succeeded")

    # Resume after event k: exactly the rest; JSON too.
    k = len(events) // 2
    resumed = parse_sse(
        (await api.get(f"/v1/swarms/{swarm['id']}/events", headers={"Last-Event-ID": str(k)})).text
    )
    assert resumed == events[k:]
    as_json = (
        await api.get(f"/v1/swarms/{swarm['id']}/events", params={"format": "json", "after": k})
    ).json()
    assert [e["seq"] for e in as_json] == [e["id"] for e in events[k:]]
    assert_error(
        await api.get(f"/v1/swarms/{swarm['id']}/events", headers={"Last-Event-ID": "-1"}),
        422,
        "invalid_request",
    )

    listed = (await api.get("/v1/swarms", params={"limit": 5})).json()
    assert listed[0]["id"] == swarm["id"] and len(listed[0]["subtasks"]) == 4
    assert_error(await api.get("/v1/swarms", params={"limit": 0}), 422, "invalid_request")
    assert_error(await api.post(f"/v1/swarms/{swarm['id']}/cancel"), 409, "conflict")
    other = {"Authorization": f"Bearer {keys[OTHER]}"}
    for response in (
        await api.get(f"/v1/swarms/{swarm['id']}", headers=other),
        await api.get(f"/v1/swarms/{swarm['id']}/events", headers=other),
        await api.post(f"/v1/swarms/{swarm['id']}/cancel", headers=other),
    ):
        assert_error(response, 404, "not_found")
    assert (await api.get("/v1/swarms", headers=other)).json() == []


async def test_the_queen_plans_when_no_plan_is_given(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    SwarmScript(
        plans=[plan_json(subtask("x", "astronaut")),  # corrected after its errors come back
               plan_json(subtask("a", "analyst"), subtask("d", "writer", ["a"]))],
        synthesis=ANSWER,
    ).install(model_server)  # fmt: skip
    created = await api.post("/v1/swarms", json={"objective": "Compare two things"})
    assert created.status_code == 201, created.text
    assert created.json()["subtasks"] == []  # nothing planned yet

    done = await wait_finished(api, created.json()["id"])
    assert done["outcome"] == "succeeded", done
    assert [(s["id"], s["status"]) for s in done["subtasks"]] == [
        ("a", "succeeded"), ("d", "succeeded")
    ]  # fmt: skip
    assert done["subtasks"][1]["depends_on"] == ["a"] and done["plan_version"] == 1
    assert done["result"] == ANSWER and done["attribution"] == ["a", "d"]
    events = (await api.get(f"/v1/swarms/{done['id']}/events", params={"format": "json"})).json()
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["swarm.started", "plan.invalid", "swarm.planned"]
    assert "unknown role 'astronaut'" in events[1]["data"]["errors"][0]
    # Two plan answers (the second corrected) and one synthesis, from the queen.
    assert len(requests_for(model_server, "plan")) == 2
    assert len(requests_for(model_server, "synthesis")) == 1


async def test_bad_swarms_are_4xx(api: httpx.AsyncClient) -> None:
    async def rejected(body: dict[str, Any], status: int = 422) -> dict[str, Any]:
        type_ = {422: "invalid_request", 404: "not_found"}[status]
        return assert_error(await api.post("/v1/swarms", json=body), status, type_)

    def plan_errors(error: dict[str, Any]) -> str:
        assert error["message"] == "the plan cannot run"
        return " ".join(error["details"]["errors"])

    before = len((await api.get("/v1/swarms")).json())
    base = {"objective": "x"}
    cycle = await rejected({**base, "plan": [subtask("a", depends_on=["b"]),
                                             subtask("b", depends_on=["a"])]})  # fmt: skip
    assert "cycle" in plan_errors(cycle)
    unknown = await rejected({**base, "plan": [subtask("a", "astronaut")]})
    assert "unknown role 'astronaut'" in plan_errors(unknown)
    missing = await rejected({**base, "plan": [subtask("a"), subtask("b", depends_on=["zz"])]})
    assert "depends on 'zz', which is not in the plan" in plan_errors(missing)
    too_many = await rejected({**base, "plan": DIAMOND, "limits": {"max_subtasks": 3}})
    assert "at most 3" in plan_errors(too_many)
    replan = await rejected({**base, "mode": "parallel", "limits": {"failure_policy": "replan"}})
    assert "hierarchical" in replan["message"]
    shaped = await rejected({**base, "mode": "parallel", "plan": DIAMOND})
    assert "sets the dependencies itself" in shaped["message"]
    for body in (
        {**base, "colour": "red"},
        {**base, "plan": [{**subtask("a"), "colour": "red"}]},
        {**base, "plan": [subtask("bad id!")]},
        {**base, "plan": []},
        {**base, "limits": {"max_parallel": 0}},
        {**base, "limits": {"retries": 3}},
        {**base, "models": {"low": "gpt4"}},
        {**base, "models": {"tiny": "openai/m"}},
        {**base, "mode": "anarchic"},
        {**base, "queen": "bad name!"},
        {"objective": ""},
        {},
    ):
        await rejected(body)
    await rejected({**base, "queen": "nobody"}, 404)
    assert_error(await api.get("/v1/swarms/swarm_nothing"), 404, "not_found")
    assert_error(await api.get("/v1/swarms/swarm_nothing/events"), 404, "not_found")
    assert_error(await api.post("/v1/swarms/swarm_nothing/cancel"), 404, "not_found")
    assert len((await api.get("/v1/swarms")).json()) == before  # none of these was created
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {"/v1/swarms", "/v1/swarms/{swarm_id}", "/v1/swarms/{swarm_id}/events",
            "/v1/swarms/{swarm_id}/cancel"} <= set(paths)  # fmt: skip


async def test_idempotent_creation_and_cancel(
    api: httpx.AsyncClient, model_server: ScriptedModelServer
) -> None:
    SwarmScript(delay=30).install(model_server)  # the subtasks' runs wait for the model
    body = {"objective": "slow work", "mode": "parallel", "plan": [subtask("a"), subtask("b")]}
    first = await api.post("/v1/swarms", json=body, headers={"Idempotency-Key": "swarm-1"})
    second = await api.post("/v1/swarms", json={**body, "idempotency_key": "swarm-1"})
    assert (first.status_code, second.status_code) == (201, 200), second.text
    swarm_id = first.json()["id"]
    assert second.json()["id"] == swarm_id

    def working(body: dict[str, Any]) -> bool:
        asked = [requests_for(model_server, "subtask", sid) for sid in "ab"]
        return all(asked) and all(s["run_id"] for s in body["subtasks"])

    running = await wait_for(api, swarm_id, working)
    assert (running["status"], running["phase"]) == ("running", "running")
    assert {s["status"] for s in running["subtasks"]} == {"running"}
    cancelled = await api.post(f"/v1/swarms/{swarm_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    done = await wait_finished(api, swarm_id)
    assert (done["status"], done["outcome"]) == ("cancelled", "cancelled")
    assert {s["status"] for s in done["subtasks"]} == {"cancelled"}
    for s in done["subtasks"]:
        run = await wait_run_finished(api, s["run_id"])
        assert run["outcome"] == "cancelled"
    assert_error(await api.post(f"/v1/swarms/{swarm_id}/cancel"), 409, "conflict")
    events = (await api.get(f"/v1/swarms/{swarm_id}/events", params={"format": "json"})).json()
    assert events[-1]["type"] == "swarm.finished"
    assert events[-1]["data"]["outcome"] == "cancelled"
    # A repeated POST of a finished swarm does not start it again.
    again = await api.post("/v1/swarms", json=body, headers={"Idempotency-Key": "swarm-1"})
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")


async def test_the_cli(
    api: httpx.AsyncClient,
    settings: Settings,
    model_server: ScriptedModelServer,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Subtask a's first attempt fails (the model rejects the request): it is retried.
    SwarmScript(subtasks={"a": [fault(400)]}, synthesis=ANSWER).install(model_server)
    app = create_app(settings)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            client = ColonyClient(make_settings(COLONY_API_KEY=keys[TENANT]))
            http.headers["Authorization"] = f"Bearer {keys[TENANT]}"
            client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_swarms, "api_client", lambda: client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})

    # Plan files are read before anything is sent.
    missing = await asyncio.to_thread(run, "swarm", "x", "--plan", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2 and "cannot read" in missing.output
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    invalid = await asyncio.to_thread(run, "swarm", "x", "--plan", str(broken))
    assert invalid.exit_code == 2 and "is not valid JSON" in invalid.output
    broken.write_text('{"tasks": []}')
    shapeless = await asyncio.to_thread(run, "swarm", "x", "--plan", str(broken))
    assert shapeless.exit_code == 2 and "non-empty list of subtasks" in shapeless.output
    # The API's reasons for rejecting a plan are shown, one per line.
    broken.write_text(json.dumps([subtask("a", depends_on=["zz"])]))
    rejected = await asyncio.to_thread(run, "swarm", "x", "--plan", str(broken))
    assert rejected.exit_code == 1 and "the plan cannot run" in rejected.output
    assert "depends on 'zz'" in rejected.output

    plan = tmp_path / "plan.json"
    plan.write_text(plan_json(subtask("a", "researcher"), subtask("d", "writer", ["a"])))
    # The app runs in TestClient's thread; this loop keeps serving the workers.
    followed = await asyncio.to_thread(
        run, "swarm", "Write a report", "--plan", str(plan), "--max-parallel", "2"
    )
    assert followed.exit_code == 0, followed.output
    out = " ".join(followed.output.split())
    swarm_id = re.search(r"swarm (swarm_[0-9a-f]+)", out).group(1)  # type: ignore[union-attr]
    assert f"Temporal UI: {UI}/namespaces/default/workflows/swarm-{swarm_id}" in out
    assert "plan v1" in out and "researcher" in out and "Do part a of the work." in out
    assert "▶ a · researcher · openai/scripted-model · run_" in out
    assert re.search(r"▶ a · researcher · openai/scripted-model · run_\w+ · attempt 2", out)
    assert "✘ a · " in out and "✔ a · $0.000000 (some prices unknown) · result of a" in out
    progress = re.findall(r"\[\d/2 done[^\]]*\]", out)
    assert progress == [
        "[0/2 done · 1 running]", "[0/2 done · 0 running · 1 failed]", "[0/2 done · 1 running]",
        "[1/2 done · 0 running]", "[1/2 done · 1 running]", "[2/2 done · 0 running]",
    ]  # fmt: skip
    assert "✔ succeeded · 2/2 subtasks" in out and ANSWER in out and "sources: a, d" in out
    assert out.index("✘ a") < out.index("✔ a") < out.index("▶ d") < out.index("✔ succeeded")
    retried = (await api.get(f"/v1/swarms/{swarm_id}")).json()["subtasks"][0]
    assert (retried["id"], retried["attempts"], retried["status"]) == ("a", 2, "succeeded")
    assert retried["temporal_ui"].endswith(f"/workflows/swarm-{swarm_id}/a.2")

    shown = await asyncio.to_thread(run, "swarms", "show", swarm_id)
    assert shown.exit_code == 0, shown.output
    assert "succeeded" in shown.output and "researcher v1" in shown.output
    assert ANSWER in shown.output
    listed = await asyncio.to_thread(run, "swarms", "list")
    assert listed.exit_code == 0 and swarm_id in listed.output
    refused = await asyncio.to_thread(run, "swarms", "cancel", swarm_id)
    assert refused.exit_code == 1 and "has finished" in refused.output
    started = await asyncio.to_thread(
        run, "swarm", "Again", "--plan", str(plan), "--mode", "sequential", "--no-follow"
    )
    assert started.exit_code == 0 and "swarm swarm_" in started.output
    new_id = re.search(r"swarm (swarm_[0-9a-f]+)", started.output).group(1)  # type: ignore[union-attr]
    await wait_finished(api, new_id)
