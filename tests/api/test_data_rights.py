"""Data rights over HTTP: deleting a run, an end user's runs, and exporting a tenant.

Real Postgres, Temporal, workers (embedded Qdrant, MiniLM) and the scripted model server:
runs with memory write an episode and a lesson, then are deleted, and nothing of them
may remain in Postgres (but the audit log), the vector store or Temporal.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.cli import data_rights as cli_data_rights
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core import data_rights, tenants
from core import temporal as temporal_support
from core.codec import EncryptionCodec
from core.db import Pool
from core.runs import store as runs
from tests.api.test_api import assert_error
from tests.api.test_runs import wait_finished
from tests.conftest import make_settings
from tests.support.api import stack_settings
from tests.support.model_server import ScriptedModelServer, hang, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.workers import running_workers
from tests.workflows.test_agent_memory import responder
from workers.registry import Resources

TENANT, OTHER = "dr-one", "dr-two"
FX = {
    "name": "fx",
    "instructions": "You convert currencies.",
    "model": "openai/scripted-model",
    "tools": ["calculator"],
    "memory": {"enabled": True},
}
CANARY = "canary-secret-value-7f3a9c"


class Stack:
    """The API with workers; `http` sends tenant one's admin key."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        client: Client,
        res: Resources,
        keys: dict[str, str],
        suffix: str,
    ) -> None:
        self.http, self.client, self.res, self.keys = http, client, res, keys
        self.suffix = suffix

    def as_(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    async def run(self, objective: str, end_user: str | None = None) -> str:
        body: dict[str, Any] = {"agent": "fx", "objective": objective}
        if end_user is not None:
            body["end_user"] = end_user
        created = await self.http.post("/v1/runs", json=body)
        assert created.status_code == 201, created.text
        run_id: str = created.json()["id"]
        assert (await wait_finished(self.http, run_id))["status"] == "succeeded"
        await self.closed(run_id)
        return run_id

    async def closed(self, run_id: str) -> None:
        """Wait until the run's workflow ended (it writes its memory after Postgres says so)."""
        handle = self.client.get_workflow_handle(runs.workflow_id_for(run_id))
        for _ in range(300):
            if (await handle.describe()).close_time is not None:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"workflow of {run_id} did not close")

    async def points(self, run_id: str) -> int:
        return await asyncio.to_thread(
            self.res.vectors.count, self.res.memory.collection,
            tenant_id=TENANT, where={"source_run_id": run_id},
        )  # fmt: skip


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    out = {}
    async with pool.connection() as conn:
        for tenant in (TENANT, OTHER):
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="admin")
        _, out["member"] = await tenants.create_api_key(conn, TENANT, "m", role="member")
    return out


@pytest.fixture
async def stack(
    database_url: str,
    temporal: TemporalServer,
    pool: Pool,
    keys: dict[str, str],
    model_server: ScriptedModelServer,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    settings = stack_settings(database_url, temporal.address, model_server.base_url, tmp_path)
    model_server.responder = responder(
        "About 92 EUR.", calls=[tool_call("calculator", {"expression": "100*0.92"})]
    )
    app = create_app(settings)
    client = await temporal_support.connect(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        res = await stack.enter_async_context(
            running_workers(client, settings, pool, suffix=settings.task_queue_suffix)
        )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {keys[TENANT]}"}, timeout=60,
        )  # fmt: skip
        await stack.enter_async_context(http)
        assert (await http.post("/v1/agents", json=FX)).status_code in (200, 201)
        yield Stack(http, client, res, keys, settings.task_queue_suffix)


async def rows_mentioning(pool: Pool, *needles: str) -> dict[str, int]:
    """Rows of every table (but the audit log) whose text holds one of `needles`."""
    found: dict[str, int] = {}
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT table_name::text AS t FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        for row in await cur.fetchall():
            table = row["t"]
            if table == "audit_log":
                continue
            cur = await conn.execute(
                f'SELECT count(*) AS n FROM "{table}" t WHERE t::text LIKE ANY(%s)',
                ([f"%{n}%" for n in needles],),
            )
            n = (await cur.fetchone() or {"n": 0})["n"]
            if n:
                found[table] = n
    return found


async def test_deleting_a_run_deletes_what_derives_from_it(stack: Stack, pool: Pool) -> None:
    api = stack.http
    marker = "zebra-" + uuid.uuid4().hex[:8]
    run_id = await stack.run(f"Convert 100 USD to EUR at 0.92 for {marker}.", end_user="alice")
    kept = await stack.run("Convert 5 USD to EUR at 0.92.", end_user="bob")
    feedback = {"rating": 5, "comment": f"thanks {marker}", "expected": "About 92 EUR."}
    assert (await api.post(f"/v1/runs/{run_id}/feedback", json=feedback)).status_code == 200
    assert (await api.post(f"/v1/runs/{run_id}/eval-case")).status_code == 201
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind FROM memories WHERE source_run_id = %s ORDER BY kind", (run_id,)
        )
        assert [r["kind"] for r in await cur.fetchall()] == ["episode", "reflexion"]
        cur = await conn.execute(
            "SELECT count(*) AS n, sum(cost_usd) AS cost FROM llm_calls WHERE tenant_id = %s",
            (TENANT,),
        )
        ledger = dict(await cur.fetchone() or {})
    assert await stack.points(run_id) == 2
    usage = (await api.get("/v1/usage")).json()["total"]
    evolution = await cite_in_evolution(pool, run_id, f"Convert 100 USD ... {marker}")
    assert await rows_mentioning(pool, run_id, marker)

    # Another tenant's key cannot see it, let alone delete it.
    assert_error(await api.delete(f"/v1/runs/{run_id}", headers=stack.as_(OTHER)), 404, "not_found")

    deleted = await api.delete(f"/v1/runs/{run_id}")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["run_ids"] == [run_id] and body["runs"] == 1
    assert body["memories"] == 2 and body["eval_cases"] == 1 and body["workflows"] == 1

    assert_error(await api.get(f"/v1/runs/{run_id}"), 404, "not_found")
    assert_error(await api.delete(f"/v1/runs/{run_id}"), 404, "not_found")
    assert (await api.get(f"/v1/runs/{kept}")).status_code == 200
    recalled = await api.post("/v1/memory/query", json={"query": "Convert 100 USD to EUR"})
    assert recalled.status_code == 200, recalled.text
    hits = recalled.json()["hits"]
    assert hits and all(h["run_id"] != run_id and marker not in h["content"] for h in hits)
    assert await stack.points(run_id) == 0
    assert await rows_mentioning(pool, run_id, marker) == {}
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT evidence, diagnoses FROM evolutions WHERE id = %s", (evolution,)
        )
        assert dict(await cur.fetchone() or {}) == {
            "evidence": {"failed_runs": ["run_kept"], "cases": 3},
            "diagnoses": [{"source": "case:c1", "objective": "2+2"}],
        }

    # The cost ledger stays, detached, so spend caps still count the deleted run.
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, sum(cost_usd) AS cost FROM llm_calls WHERE tenant_id = %s",
            (TENANT,),
        )
        assert dict(await cur.fetchone() or {}) == ledger
    assert (await api.get("/v1/usage")).json()["total"] == usage
    # The audit log records the deletion, and the deletion did not take it.
    audit = (await api.get("/v1/audit")).json()
    assert any(
        e["method"] == "DELETE" and e["resource"] == {"run_id": run_id} and e["status"] == 200
        for e in audit
    )
    # Temporal deletes histories in the background.
    handle = stack.client.get_workflow_handle(runs.workflow_id_for(run_id))
    for _ in range(600):  # within seconds, or a minute on a loaded machine
        try:
            await handle.describe()
        except RPCError as exc:
            assert exc.status == RPCStatusCode.NOT_FOUND
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the run's workflow history is still in Temporal")
    assert await histories_mentioning(stack.client, marker) == []


async def cite_in_evolution(pool: Pool, run_id: str, objective: str) -> str:
    """An evolution cycle that diagnosed the run's failure and counts it in its evidence."""
    evolution = "evo-" + uuid.uuid4().hex[:8]
    evidence = {"failed_runs": [run_id, "run_kept"], "cases": 3}
    diagnoses = [
        {"source": f"run:{run_id}", "objective": objective},
        {"source": "case:c1", "objective": "2+2"},
    ]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO evolutions (id, tenant_id, agent_name, workflow_id, incumbent_version,"
            " settings, evidence, diagnoses) VALUES (%s, %s, 'fx', %s, 1, '{}', %s, %s)",
            (evolution, TENANT, evolution, Jsonb(evidence), Jsonb(diagnoses)),
        )
    return evolution


async def histories_mentioning(client: Client, needle: str) -> list[str]:
    """Ids of the tenant's workflows whose history holds `needle`."""
    found = []
    async for wf in client.list_workflows(f'ColonyTenant = "{TENANT}"'):
        try:
            history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        except RPCError as exc:  # deleted since it was listed
            assert exc.status == RPCStatusCode.NOT_FOUND
            continue
        # Payloads are encrypted (core/codec.py): decrypt them, then they are JSON bytes
        # inside the protobuf (base64 in the history's JSON form).
        codec = client.data_converter.payload_codec
        assert isinstance(codec, EncryptionCodec)
        for event in history.events:
            codec.decrypt_message(event)
        if needle.encode() in History(events=history.events).SerializeToString():
            found.append(wf.id)
    return found


async def test_child_runs_go_with_their_parent(
    stack: Stack, pool: Pool, model_server: ScriptedModelServer
) -> None:
    api = stack.http
    marker = "walrus-" + uuid.uuid4().hex[:8]
    poet = {**FX, "name": "poet", "tools": [], "memory": {"enabled": False}}
    boss = {**FX, "name": "boss", "tools": ["agent:poet"], "memory": {"enabled": False}}
    for agent in (poet, boss):
        assert (await api.post("/v1/agents", json=agent)).is_success
    model_server.responder = None
    model_server.script(
        tool_calls(tool_call("agent__poet", {"task": f"a haiku about {marker}"}, id="a1")),
        reply(f"{marker} on the window"),  # the child's answer
        reply("Here is your haiku."),  # the parent's
    )
    created = await api.post("/v1/runs", json={"agent": "boss", "objective": f"poem {marker}"})
    run_id = created.json()["id"]
    assert (await wait_finished(api, run_id))["status"] == "succeeded"
    await stack.closed(run_id)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT id FROM runs WHERE parent_run_id = %s", (run_id,))
        [child] = [r["id"] for r in await cur.fetchall()]
    assert await histories_mentioning(stack.client, marker)

    deleted = await api.delete(f"/v1/runs/{run_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["run_ids"] == [run_id, child] and deleted.json()["workflows"] == 2
    assert_error(await api.get(f"/v1/runs/{child}"), 404, "not_found")
    assert await rows_mentioning(pool, run_id, child, marker) == {}
    for _ in range(300):
        if not await histories_mentioning(stack.client, marker):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("a history still holds the deleted runs' objective")


async def test_a_run_still_going_is_not_deleted(
    stack: Stack, model_server: ScriptedModelServer
) -> None:
    model_server.responder = lambda request: hang(30)
    created = await stack.http.post("/v1/runs", json={"agent": "fx", "objective": "wait"})
    run_id = created.json()["id"]
    refused = await stack.http.delete(f"/v1/runs/{run_id}")
    assert_error(refused, 409, "conflict")
    assert refused.json()["error"]["details"] == {"unfinished": [run_id]}
    assert (await stack.http.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
    assert (await wait_finished(stack.http, run_id))["status"] == "cancelled"
    await stack.closed(run_id)
    assert (await stack.http.delete(f"/v1/runs/{run_id}")).status_code == 200


async def test_a_child_run_is_not_deleted_while_its_parent_waits(
    stack: Stack, pool: Pool, model_server: ScriptedModelServer
) -> None:
    api = stack.http
    poet = {**FX, "name": "poet", "tools": [], "memory": {"enabled": False}}
    boss = {**FX, "name": "boss", "tools": ["agent:poet"], "memory": {"enabled": False}}
    for agent in (poet, boss):
        assert (await api.post("/v1/agents", json=agent)).is_success
    model_server.responder = None
    model_server.script(
        tool_calls(tool_call("agent__poet", {"task": "a haiku"}, id="a1")),
        reply("drops on the window"),  # the child's answer
        hang(60),  # the parent's next step
    )
    run_id = (await api.post("/v1/runs", json={"agent": "boss", "objective": "poem"})).json()["id"]
    for _ in range(300):
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM runs WHERE parent_run_id = %s AND status = 'succeeded'", (run_id,)
            )
            found = [r["id"] for r in await cur.fetchall()]
        if found:
            break
        await asyncio.sleep(0.1)
    [child] = found
    await stack.closed(child)
    refused = await api.delete(f"/v1/runs/{child}")
    assert_error(refused, 409, "conflict")
    assert refused.json()["error"]["details"] == {"unfinished": [run_id]}
    assert (await api.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
    await stack.closed(run_id)
    deleted = await api.delete(f"/v1/runs/{child}")
    assert deleted.status_code == 200 and deleted.json()["run_ids"] == [child]
    assert (await api.get(f"/v1/runs/{run_id}")).status_code == 200


async def test_deleting_an_end_user_deletes_only_their_runs(stack: Stack, pool: Pool) -> None:
    api = stack.http
    carol = [await stack.run(f"Convert {n} USD to EUR at 0.92.", end_user="carol") for n in (1, 2)]
    dave = await stack.run("Convert 3 USD to EUR at 0.92.", end_user="dave")

    exported = await api.get("/v1/end-users/carol/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith(
        "application/x-ndjson"
    )
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert lines[0]["type"] == "export" and lines[0]["runs"] == 2
    assert sorted(r["row"]["id"] for r in lines if r["type"] == "runs") == sorted(carol)
    assert {r["row"]["source_run_id"] for r in lines if r["type"] == "memories"} == set(carol)
    assert {r["row"]["run_id"] for r in lines if r["type"] == "run_messages"} == set(carol)
    assert dave not in exported.text

    member = stack.as_("member")
    assert_error(await api.delete("/v1/end-users/carol", headers=member), 403, "forbidden")
    assert_error(
        await api.delete("/v1/end-users/carol", headers=stack.as_(OTHER)), 404, "not_found"
    )
    deleted = await api.delete("/v1/end-users/carol")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["end_user"] == "carol" and sorted(body["run_ids"]) == sorted(carol)
    assert body["runs"] == 2 and body["memories"] == 4
    for run_id in carol:
        assert_error(await api.get(f"/v1/runs/{run_id}"), 404, "not_found")
        assert await stack.points(run_id) == 0
    assert await rows_mentioning(pool, *carol) == {}
    assert (await api.get(f"/v1/runs/{dave}")).status_code == 200
    assert await stack.points(dave) == 2
    assert_error(await api.delete("/v1/end-users/carol"), 404, "not_found")
    assert_error(await api.get("/v1/end-users/carol/export"), 404, "not_found")


async def test_the_export_holds_the_tenants_data_and_no_secret(stack: Stack, pool: Pool) -> None:
    api = stack.http
    other_agent = {**FX, "name": "elsewhere-" + uuid.uuid4().hex[:6]}
    assert (await api.post("/v1/agents", json=other_agent, headers=stack.as_(OTHER))).is_success
    put = await api.put("/v1/secrets/fx_token", json={"value": CANARY})
    assert put.status_code in (200, 201), put.text
    run_id = await stack.run("Convert 7 USD to EUR at 0.92.")

    assert_error(await api.get("/v1/export", headers=stack.as_("member")), 403, "forbidden")
    exported = await api.get("/v1/export")
    assert exported.status_code == 200
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert lines[0] == {**lines[0], "type": "export", "tenant": TENANT}
    types = {line["type"] for line in lines}
    assert {"tenants", "agents", "agent_versions", "runs", "run_messages", "run_events",
            "memories", "secrets", "api_keys", "llm_calls", "audit_log"} <= types  # fmt: skip
    assert run_id in {r["row"]["id"] for r in lines if r["type"] == "runs"}
    assert all(r["row"]["tenant_id"] == TENANT for r in lines[1:] if "tenant_id" in r["row"])
    assert [r["row"]["name"] for r in lines if r["type"] == "secrets"] == ["fx_token"]
    assert CANARY not in exported.text and other_agent["name"] not in exported.text
    assert "ciphertext" not in exported.text and "key_hash" not in exported.text
    for key in stack.keys.values():
        assert key not in exported.text and tenants.hash_key(key).hex() not in exported.text
    hidden = {t: h for t, h, _ in await _tables(pool)}
    assert {"ciphertext"} <= set(hidden["secrets"]) and {"key_hash"} <= set(hidden["api_keys"])


async def _tables(pool: Pool) -> list[tuple[str, list[str], bool]]:
    async with pool.connection() as conn:
        return await data_rights.tenant_tables(conn)


async def test_the_cli(
    stack: Stack, database_url: str, temporal: TemporalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await stack.run("Convert 8 USD to EUR at 0.92.", end_user="erin")
    second = await stack.run("Convert 9 USD to EUR at 0.92.", end_user="erin")
    app = create_app(
        make_settings(
            DATABASE_URL=database_url, TEMPORAL_ADDRESS=temporal.address,
            COLONY_TASK_QUEUE_SUFFIX=stack.suffix,
        )
    )  # fmt: skip

    def run(*args: str) -> Any:
        with TestClient(app, base_url="http://colony") as http:
            api = ColonyClient(make_settings(COLONY_API_KEY=stack.keys[TENANT]))
            http.headers["Authorization"] = f"Bearer {stack.keys[TENANT]}"
            api._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            monkeypatch.setattr(cli_data_rights, "api_client", lambda: api)
            return CliRunner().invoke(cli, list(args))

    exported = await asyncio.to_thread(run, "export")
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {first, second} <= {r["row"]["id"] for r in lines if r["type"] == "runs"}
    erin = await asyncio.to_thread(run, "end-users", "export", "erin")
    assert erin.exit_code == 0 and json.loads(erin.stdout.splitlines()[0])["runs"] == 2
    deleted = await asyncio.to_thread(run, "runs", "delete", first, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted 1 run(s)" in deleted.output and first in deleted.output
    refused = await asyncio.to_thread(run, "runs", "delete", first, "--yes")
    assert refused.exit_code == 1 and "not found" in refused.output
    aborted = await asyncio.to_thread(run, "end-users", "delete", "erin")  # no "y" typed
    assert aborted.exit_code == 1 and "Aborted" in aborted.output
    gone = await asyncio.to_thread(run, "end-users", "delete", "erin", "--yes")
    assert gone.exit_code == 0 and "deleted 1 run(s)" in gone.output and second in gone.output
