"""Key scopes, expiry and revocation: what each kind of key may call (issue 15)."""

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api import sse
from api.deps import EVAL_ROUTES, READS_SENT_AS_POST
from api.main import create_app
from core import tenants
from core.db import Pool
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec, RunProgress
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.support.api import ClientFor, in_process_api, stack_settings
from tests.support.model_server import ScriptedModelServer
from tests.support.services import TemporalServer

TENANT = "scoped"
AGENT = {"name": "made", "instructions": "You answer.", "model": "openai/scripted-model"}


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    """A key of TENANT per scope, and an agent with a finished run to grade."""
    out = {}
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, TENANT, TENANT)
        for scope in tenants.SCOPES:
            _, out[scope] = await tenants.create_api_key(conn, TENANT, scope, scopes=[scope])
        await agents.create_version(
            conn, TENANT, "graded", AgentSpec(instructions="Compute.", model="openai/m")
        )
        run, _, _ = await runs.create_run(
            conn, tenant_id=TENANT, agent_name="graded", agent_version=1, objective="17 * 23?"
        )
        await runs.finish(
            conn, run.id, outcome="succeeded", reason=None, result="391", progress=RunProgress()
        )
    out["run"] = run.id
    return out


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(database_url, temporal.address, model_server.base_url, tmp_path)


@pytest.fixture
async def client_for(settings: Settings) -> AsyncIterator[ClientFor]:
    async with in_process_api(settings) as factory:
        yield factory


ADMIN_ROUTES = {
    ("GET", "/v1/api-keys"), ("POST", "/v1/api-keys"), ("DELETE", "/v1/api-keys/{key_id}"),
    ("GET", "/v1/audit"), ("PUT", "/v1/tenant/settings"), ("PUT", "/v1/tenant/limits"),
    ("PUT", "/v1/secrets/{name}"), ("DELETE", "/v1/secrets/{name}"), ("PUT", "/v1/egress"),
    ("POST", "/v1/mcp-servers"), ("POST", "/v1/mcp-servers/{name}/refresh"),
    ("DELETE", "/v1/mcp-servers/{name}"),
    ("DELETE", "/v1/end-users/{end_user}"), ("GET", "/v1/end-users/{end_user}/export"),
    ("GET", "/v1/export"), ("POST", "/codec/encode"), ("POST", "/codec/decode"),
}  # fmt: skip
"""The routes only admin keys may call (they depend on `AdminDep`)."""


def test_the_scope_tables_name_routes_that_exist(settings: Settings) -> None:
    paths = create_app(settings).openapi()["paths"]
    for method, path in EVAL_ROUTES | READS_SENT_AS_POST | ADMIN_ROUTES:
        assert method.lower() in paths.get(path, {}), (method, path)


def expected_scopes(method: str, path: str) -> set[str]:
    """The scopes that may call a route, from this file's table and api.deps's."""
    if (method, path) in ADMIN_ROUTES:
        return {"admin"}
    if method == "GET" or (method, path) in READS_SENT_AS_POST:
        return {"admin", "write", "eval", "read"}
    if (method, path) in EVAL_ROUTES:
        return {"admin", "write", "eval"}
    return {"admin", "write"}


async def test_every_route_refuses_exactly_the_keys_without_its_scope(
    settings: Settings, keys: dict[str, str]
) -> None:
    app = create_app(settings)
    documented = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if path != "/healthz"
    ]
    async with in_process_api(settings) as client_for:
        for scope in ("read", "eval", "write"):
            async with client_for(keys[scope]) as http:
                for method, path in documented:
                    url = re.sub(r"\{[^}]+\}", "x1", path)
                    response = await http.request(method, url, params={"wait": 0})
                    refused = response.status_code == 403
                    allowed = scope in expected_scopes(method, path)
                    assert refused != allowed, (scope, method, path, response.text)
                    if refused:
                        message = str(response.json()["error"]["message"])
                        assert f"{method} {path} needs an API key with the" in message


async def test_a_read_key_reads_but_changes_nothing(
    client_for: ClientFor, keys: dict[str, str]
) -> None:
    async with client_for(keys["read"]) as http:
        me = (await http.get("/v1/whoami")).json()
        listed = await http.get("/v1/agents")
        estimated = await http.post("/v1/agents/graded/evolutions/preflight", json={})
        created = await http.post("/v1/agents", json=AGENT)
        started = await http.post("/v1/runs", json={"objective": "hi"})
        graded = await http.post(f"/v1/runs/{keys['run']}/feedback", json={"rating": 1})
    assert me["scopes"] == ["read"] and me["role"] == "member"
    assert listed.status_code == 200 and estimated.status_code == 200, estimated.text
    for refused in (created, started, graded):
        error = assert_error(refused, 403, "forbidden")
        assert "'write'" in str(error["message"]) and "'read'" in str(error["message"])
        assert error["details"] == {
            "needed_scopes": error["details"]["needed_scopes"],  # type: ignore[index]
            "key_scopes": ["read"],
        }


async def test_a_write_key_cannot_manage_keys_or_read_the_audit_log(
    client_for: ClientFor, keys: dict[str, str]
) -> None:
    async with client_for(keys["write"]) as http:
        created = await http.post("/v1/agents", json=AGENT)
        key = await http.post("/v1/api-keys", json={"name": "mine", "scopes": ["admin"]})
        listed = await http.get("/v1/api-keys")
        audit = await http.get("/v1/audit")
        secret = await http.put("/v1/secrets/TOKEN", json={"value": "s3cret"})
        settings = await http.put("/v1/tenant/settings", json={"sharing": "isolated"})
    assert created.status_code == 201, created.text
    for refused in (key, listed, audit, secret, settings):
        error = assert_error(refused, 403, "forbidden")
        assert "needs an API key with the 'admin' scope" in str(error["message"])


async def test_an_eval_key_grades_and_evolves_but_starts_no_runs(
    client_for: ClientFor, keys: dict[str, str]
) -> None:
    case = {"objective": "17 * 23?", "checks": [{"kind": "numeric", "value": 391}]}
    async with client_for(keys["eval"]) as http:
        agent = await http.get("/v1/agents/graded")
        run = await http.get(f"/v1/runs/{keys['run']}")
        added = await http.post("/v1/agents/graded/eval-cases", json=case)
        graded = await http.post(f"/v1/runs/{keys['run']}/feedback", json={"rating": 1})
        preflight = await http.post("/v1/agents/graded/evolutions/preflight", json={})
        cycle = await http.post("/v1/agents/graded/evolutions", json={})
        started = await http.post("/v1/runs", json={"objective": "hi", "agent": "graded"})
        changed = await http.post("/v1/agents", json=AGENT)
        key = await http.post("/v1/api-keys", json={"name": "mine"})
        if cycle.status_code == 201:
            await http.post(f"/v1/agents/graded/evolutions/{cycle.json()['id']}/cancel")
    assert agent.status_code == 200 and run.status_code == 200
    assert added.status_code == 201, added.text
    assert graded.status_code in (200, 201), graded.text
    assert preflight.status_code == 200, preflight.text
    assert cycle.status_code == 201, cycle.text
    for refused in (started, changed):
        assert "'write'" in str(assert_error(refused, 403, "forbidden")["message"])
    assert "'admin'" in str(assert_error(key, 403, "forbidden")["message"])


async def test_keys_are_created_with_scopes_and_expiry_and_roles_still_work(
    client_for: ClientFor, keys: dict[str, str]
) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    async with client_for(keys["admin"]) as http:
        scoped = await http.post("/v1/api-keys", json={"name": "ci", "scopes": ["eval", "read"]})
        by_role = await http.post("/v1/api-keys", json={"name": "old", "role": "admin"})
        expiring = await http.post("/v1/api-keys", json={"name": "t", "expires_in_s": 3600})
        expired = await http.post(
            "/v1/api-keys", json={"name": "late", "scopes": ["admin"], "expires_at": past}
        )
        unknown = await http.post("/v1/api-keys", json={"name": "x", "scopes": ["root"]})
        both = await http.post(
            "/v1/api-keys", json={"name": "x", "scopes": ["read"], "role": "member"}
        )
        listed = (await http.get("/v1/api-keys")).json()
    assert scoped.status_code == 201, scoped.text
    assert scoped.json()["scopes"] == ["read", "eval"] and scoped.json()["role"] == "member"
    assert scoped.json()["key"].startswith(tenants.KEY_PREFIX)
    assert by_role.json()["scopes"] == ["admin"] and by_role.json()["role"] == "admin"
    expires_at = datetime.fromisoformat(expiring.json()["expires_at"])
    assert timedelta(minutes=59) < expires_at - datetime.now(UTC) <= timedelta(hours=1)
    assert expiring.json()["scopes"] == ["write"]
    assert "not in the future" in str(assert_error(expired, 422, "invalid_request")["message"])
    assert_error(unknown, 422, "invalid_request")
    assert_error(both, 422, "invalid_request")
    assert all("key" not in k for k in listed)
    assert {k["id"]: k["scopes"] for k in listed}[scoped.json()["id"]] == ["read", "eval"]


async def test_an_expired_key_is_refused_with_when_it_expired(
    client_for: ClientFor, pool: Pool
) -> None:
    async with pool.connection() as conn:
        record, key = await tenants.create_api_key(
            conn, TENANT, "brief", scopes=["read"],
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )  # fmt: skip
        await conn.commit()
        async with client_for(key) as http:
            before = await http.get("/v1/whoami")
            await conn.execute(
                "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
                (record.id,),
            )
            await conn.commit()
            after = await http.get("/v1/whoami")
    assert before.status_code == 200
    assert "this API key expired at " in str(assert_error(after, 401, "unauthorized")["message"])


async def test_a_revoked_key_is_refused_on_its_next_request(
    client_for: ClientFor, keys: dict[str, str], pool: Pool
) -> None:
    async with pool.connection() as conn:
        record, key = await tenants.create_api_key(conn, TENANT, "doomed", scopes=["write"])
    async with client_for(key) as http, client_for(keys["admin"]) as admin:
        before = await http.get("/v1/agents")
        revoked = await admin.delete(f"/v1/api-keys/{record.id}")
        after = await http.get("/v1/agents")
    assert before.status_code == 200 and revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert "revoked" in str(assert_error(after, 401, "unauthorized")["message"])


async def test_the_last_admin_key_cannot_be_revoked_not_even_by_itself(
    client_for: ClientFor, pool: Pool
) -> None:
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, "lonely", "lonely")
        first, first_key = await tenants.create_api_key(conn, "lonely", "a", scopes=["admin"])
        # An expired admin key does not count: it cannot rescue the tenant.
        stale, _ = await tenants.create_api_key(
            conn, "lonely", "stale", scopes=["admin"],
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )  # fmt: skip
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
            (stale.id,),
        )
    async with client_for(first_key) as http:
        itself = await http.delete(f"/v1/api-keys/{first.id}")
        second = (await http.post("/v1/api-keys", json={"name": "b", "scopes": ["admin"]})).json()
        now_fine = await http.delete(f"/v1/api-keys/{first.id}")
    error = assert_error(itself, 409, "conflict")
    assert "last admin key" in str(error["message"])
    assert now_fine.status_code == 200, now_fine.text
    async with client_for(second["key"]) as http:
        last = await http.delete(f"/v1/api-keys/{second['id']}")
        still = await http.get("/v1/whoami")
    assert_error(last, 409, "conflict")
    assert still.status_code == 200 and still.json()["scopes"] == ["admin"]


async def test_an_open_event_stream_ends_when_its_key_is_revoked(
    client_for: ClientFor, keys: dict[str, str], pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEY_CHECK_SECONDS", 0.5)
    async with pool.connection() as conn:
        record, key = await tenants.create_api_key(conn, TENANT, "watcher", scopes=["read"])
        run, _, _ = await runs.create_run(  # never finishes: its stream stays open
            conn, tenant_id=TENANT, agent_name="graded", agent_version=1, objective="wait"
        )
    async with client_for(key) as http, client_for(keys["admin"]) as admin:
        watching = asyncio.create_task(http.get(f"/v1/runs/{run.id}/events"))
        await asyncio.sleep(1.5)
        assert not watching.done()
        await admin.delete(f"/v1/api-keys/{record.id}")
        response = await asyncio.wait_for(watching, 10)
    assert response.status_code == 200
