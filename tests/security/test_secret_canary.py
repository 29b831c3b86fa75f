"""A canary secret never leaks: not into Temporal histories, Postgres rows or logs.

The canary is a tenant secret that HTTP tools send as a header. One tool's endpoint
echoes it back in a 200, another's in a 500 (the tool fails with it in the request and in
the answer). Afterwards every history on the Temporal server (raw and decrypted), every
text, JSON and bytes column of every table, every file under the data dirs and every log
record of the test must be free of it.
"""

import asyncio
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql
from temporalio.client import Client

from core import tenants
from core.codec import codec_from_settings
from core.db import Pool
from core.temporal import ColonyPlugin
from core.tools import egress as tool_egress
from core.tools.policy import EgressRule
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.workers import api_with_workers
from tests.tools.conftest import LocalServer, http_server  # noqa: F401

TENANT = "t-canary"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_records() -> Iterator[_Records]:
    handler = _Records()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_text)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def tool(name: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} (test tool)",
        "input_schema": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
        "http": {"url_template": url, "headers": {"X-Key": {"secret": "CANARY_KEY"}}},
    }


async def rows_with(pool: Pool, needle: str) -> list[str]:
    """`table.column` of every public table cell (text, JSON, bytes) that holds `needle`."""
    found = []
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " JOIN information_schema.tables USING (table_schema, table_name)"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            " AND data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea', 'ARRAY')"
        )
        columns = await cur.fetchall()
        assert any(c["table_name"] == "secrets" for c in columns)
        for c in columns:
            column = sql.Identifier(c["column_name"])
            if c["data_type"] == "bytea":
                test = sql.SQL("position(convert_to(%s, 'UTF8') in {}) > 0").format(column)
            else:
                test = sql.SQL("strpos({}::text, %s) > 0").format(column)
            query = (
                sql.SQL("SELECT count(*) AS n FROM {} WHERE ").format(
                    sql.Identifier(c["table_name"])
                )
                + test
            )
            hits = await (await conn.execute(query, (needle,))).fetchone()
            if hits and hits["n"]:
                found.append(f"{c['table_name']}.{c['column_name']}")
    return found


def files_with(roots: list[Path], needle: str) -> list[str]:
    return [
        str(path)
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes()
    ]


async def test_a_canary_secret_appears_nowhere(
    temporal: TemporalServer,
    database_url: str,
    pool: Pool,
    model_server: ScriptedModelServer,
    http_server: LocalServer,  # noqa: F811
    log_records: _Records,
    services_dir: Path,
    tmp_path: Path,
) -> None:
    canary = "canary-" + secrets.token_hex(16)
    async with pool.connection() as conn:
        await tenants.ensure_tenant(conn, TENANT, TENANT)
        _, key = await tenants.create_api_key(conn, TENANT, "admin", role="admin")
        await tool_egress.replace_egress_rules(
            conn, TENANT, [EgressRule(pattern="127.0.0.1", port=http_server.port)]
        )
    settings = make_settings(
        DATABASE_URL=database_url, TEMPORAL_ADDRESS=temporal.address,
        OPENAI_BASE_URL=model_server.base_url, COLONY_DEFAULT_MODEL="openai/scripted-model",
        COLONY_DATA_DIR=str(tmp_path), COLONY_TASK_QUEUE_SUFFIX="-canary",
    )  # fmt: skip
    model_server.script(
        tool_calls(
            tool_call("echo_secret", {"q": "first"}, id="c1"),
            tool_call("failing_api", {"q": "second"}, id="c2"),
        ),
        tool_calls(tool_call("failing_api", {"q": "again"}, id="c3")),
        reply("Both tools were tried."),
    )
    async with api_with_workers(settings, pool, key) as http:
        put = await http.put("/v1/secrets/CANARY_KEY", json={"value": canary})
        assert put.status_code == 201, put.text
        for body in (
            tool("echo_secret", http_server.url("/echo/{q}")),
            tool("failing_api", http_server.url("/status/500")),
        ):
            created = await http.post("/v1/tools", json=body)
            assert created.status_code == 201, created.text
        agent = {
            "name": "canary",
            "instructions": "Use the tools.",
            "model": "openai/scripted-model",
            "tools": ["echo_secret", "failing_api"],
        }
        assert (await http.post("/v1/agents", json=agent)).status_code == 201
        created = await http.post("/v1/runs", json={"agent": "canary", "objective": "Try both."})
        run_id = created.json()["id"]
        for _ in range(300):
            done = (await http.get(f"/v1/runs/{run_id}")).json()
            if done["status"] in ("succeeded", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
        assert done["status"] == "succeeded", done
        colony = await Client.connect(temporal.address, plugins=[ColonyPlugin(settings)])
        await colony.get_workflow_handle(f"run-{run_id}").result()

        # The tools really sent the canary (the endpoints saw and echoed it).
        messages = (await http.get(f"/v1/runs/{run_id}/messages")).json()
        tool_texts = [m["content"] for m in messages if m.get("role") == "tool"]
        assert len(tool_texts) == 3, messages
        assert any("500" in t for t in tool_texts), tool_texts
        assert sum("[redacted]" in t for t in tool_texts) == 3, tool_texts  # echoed, masked

        # Every API answer about the run, and its event stream.
        for path in (
            f"/v1/runs/{run_id}",
            f"/v1/runs/{run_id}/messages",
            "/v1/tools",
            "/v1/secrets",
        ):
            answer = await http.get(path)
            assert canary not in answer.text, path
        events = await http.get(f"/v1/runs/{run_id}/events?format=json")
        assert events.status_code == 200 and canary not in events.text

    # What the model was sent.
    assert all(canary not in json.dumps(r.messages) for r in model_server.chat_requests())

    # Every history on the server, as stored and decrypted.
    plain = await Client.connect(temporal.address)
    codec = codec_from_settings(settings)
    seen, answer = 0, b"Both tools were tried."
    async for execution in plain.list_workflows():
        history = await plain.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        raw = history.to_json()
        assert canary not in raw, execution.id
        assert answer not in b"".join(e.SerializeToString() for e in history.events)
        if execution.id == f"run-{run_id}":  # the tool's failure is encrypted too
            failures = [
                e.activity_task_failed_event_attributes.failure
                for e in history.events
                if e.HasField("activity_task_failed_event_attributes")
            ]
            assert failures and {f.message for f in failures} == {"Encoded failure"}
            assert "HTTP 500" not in raw
        for event in history.events:
            codec.decrypt_message(event)
        assert canary not in history.to_json(), execution.id
        decrypted = b"".join(e.SerializeToString() for e in history.events)
        assert canary.encode() not in decrypted, execution.id
        seen += execution.id == f"run-{run_id}" and answer in decrypted  # the search can see
    assert seen == 1

    # Every table (the secrets table holds the canary encrypted).
    assert await rows_with(pool, canary) == []
    assert "run_messages.content" in await rows_with(pool, answer.decode())  # and finds
    # Every file the stack wrote (data dir, the Temporal server's log) and every log record.
    assert files_with([tmp_path, services_dir], canary) == []
    assert [line for line in log_records.lines if canary in line] == []
    assert any("HTTP 500" in line for line in log_records.lines)  # it saw the tool fail
