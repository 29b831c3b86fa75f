"""The tool system inside agent runs: registered HTTP and MCP tools, the sandbox, agents as
tools, ask_human and policy enforced in the activity layer. Real Temporal, Postgres,
workers, bubblewrap, a third-party MCP server and HTTP; the model is scripted."""

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities.runs.tool_calls import ToolActivities
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import ApprovalDecision, ToolCallInput
from core.tools import egress as tool_egress
from core.tools import mcp_servers, policy
from core.tools import secrets as tool_secrets
from core.tools import store as tool_store
from core.tools.spec import ToolSpec
from tests.support.model_server import hang, reply, tool_call, tool_calls
from tests.support.replay import assert_replays, record_history
from tests.workflows.harness import TENANT, Harness, spec
from workflows.agent_run import AgentRunWorkflow

SECRET = "s3cret-token-value"


class _Api(BaseHTTPRequestHandler):
    """A small third-party API: /weather/<city>, answers 503 once when asked to."""

    flaky: bool = False
    seen_auth: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        _Api.seen_auth.append(self.headers.get("X-Api-Key", ""))
        if _Api.flaky:
            _Api.flaky = False
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        city = self.path.rsplit("/", 1)[-1].split("?")[0]
        body = json.dumps({"city": city, "temp_c": 21}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def weather_api() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def _register_weather(harness: Harness, port: int) -> None:
    async with harness.pool.connection() as conn:
        cipher = tool_secrets.cipher_from_settings(harness.resources.settings)
        await tool_secrets.put_secret(conn, cipher, TENANT, "WEATHER_KEY", SECRET)
        await tool_egress.replace_egress_rules(
            conn, TENANT, [policy.EgressRule(pattern="127.0.0.1", port=port)]
        )
        await tool_store.register_tool(
            conn,
            TENANT,
            "weather",
            ToolSpec(
                kind="http",
                description="Current weather of a city.",
                input_schema={
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
                config={
                    "url_template": f"http://127.0.0.1:{port}/weather/{{city}}",
                    "method": "GET",
                    "headers": {"X-Api-Key": {"secret": "WEATHER_KEY"}},
                },
            ),
        )


async def test_registered_http_tool_runs_with_its_secret_and_updates_stats(
    harness: Harness, weather_api: int
) -> None:
    await _register_weather(harness, weather_api)
    _Api.flaky = True  # the first call gets a 503: the activity is retried, not the model
    harness.server.script(
        tool_calls(tool_call("weather", {"city": "Oslo"}, id="w1")), reply("21 degrees")
    )
    handle, run_id = await harness.start(spec(tools=["weather"]))
    assert (await handle.result()).outcome == "succeeded"
    result = (await harness.messages(run_id))[2]
    assert result.role == "tool" and json.loads(result.content) == {"city": "Oslo", "temp_c": 21}
    assert _Api.seen_auth[-2:] == [SECRET, SECRET]
    # The secret is in no message, event or model request.
    stored = json.dumps([m.model_dump() for m in await harness.messages(run_id)])
    events = json.dumps([e.data for e in await harness.events(run_id)])
    requests = json.dumps([r.body for r in harness.server.chat_requests()])
    assert SECRET not in stored + events + requests
    async with harness.pool.connection() as conn:
        stats = (await tool_store.tool_stats(conn, TENANT, ["weather"]))["weather"]
    assert stats.calls >= 1 and stats.successes >= 1 and stats.p50_ms is not None


async def test_egress_outside_the_allowlist_is_an_error_for_the_model(
    harness: Harness, weather_api: int
) -> None:
    await _register_weather(harness, weather_api)
    harness.server.script(
        tool_calls(tool_call("http_fetch", {"url": "http://example.invalid/x"}, id="f1")),
        reply("could not fetch"),
    )
    handle, run_id = await harness.start(spec(tools=["http_fetch"]))
    assert (await handle.result()).outcome == "succeeded"
    result = (await harness.messages(run_id))[2]
    assert "allowlist" in (result.content or "")


async def test_mcp_tool_of_a_third_party_server(harness: Harness) -> None:
    async with harness.pool.connection() as conn:
        await mcp_servers.upsert_mcp_server(
            conn, TENANT, "time", "stdio",
            {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
        )  # fmt: skip
        await tool_store.register_tool(
            conn,
            TENANT,
            "mcp:time/get_current_time",
            ToolSpec(
                kind="mcp",
                description="Get the current time in a time zone.",
                input_schema={
                    "type": "object",
                    "properties": {"timezone": {"type": "string"}},
                    "required": ["timezone"],
                },
                config={"server": "time", "tool": "get_current_time"},
            ),
        )
    harness.server.script(
        tool_calls(
            tool_call("mcp__time__get_current_time", {"timezone": "Europe/Oslo"}, id="t1"),
            tool_call("mcp__time__get_current_time", {"timezone": "Mars/Olympus"}, id="t2"),
        ),
        reply("it is late"),
    )
    handle, run_id = await harness.start(spec(tools=["mcp:*"]))
    assert (await handle.result()).outcome == "succeeded"
    first = harness.server.chat_requests()[0]
    assert [t["function"]["name"] for t in first.body["tools"]] == ["mcp__time__get_current_time"]
    messages = await harness.messages(run_id)
    # Colony's own records use the Colony name; the model saw the provider-safe one.
    assert [c.name for c in messages[1].tool_calls] == ["mcp:time/get_current_time"] * 2
    assert "Europe/Oslo" in (messages[2].content or "")
    assert messages[3].content.startswith("Error:") and "Mars/Olympus" in messages[3].content
    second = harness.server.chat_requests()[1]
    assert second.messages[2]["tool_calls"][0]["function"]["name"] == "mcp__time__get_current_time"
    await assert_replays(handle)
    record_history("agent_run_v2_mcp_tools", await handle.fetch_history())


async def test_run_python_persists_its_workspace_between_calls(harness: Harness) -> None:
    harness.server.script(
        tool_calls(
            tool_call("run_python", {"code": "open('n.txt', 'w').write(str(6 * 7))"}, id="p1")
        ),
        tool_calls(tool_call("run_shell", {"command": "cat n.txt; echo; id -u"}, id="p2")),
        reply("42"),
    )
    handle, run_id = await harness.start(spec(tools=["run_python", "run_shell"]))
    assert (await handle.result()).outcome == "succeeded"
    shell = (await harness.messages(run_id))[4].content or ""
    assert "42" in shell and "65534" in shell


async def test_an_agent_calls_another_agent_as_a_child_run(harness: Harness) -> None:
    async with harness.pool.connection() as conn:
        await agents.create_version(
            conn, TENANT, "poet", spec(instructions="You write short poems.", tools=[])
        )
    harness.server.script(
        tool_calls(tool_call("agent__poet", {"task": "a haiku about rain"}, id="a1")),
        reply("drops on the window"),  # the child's answer
        reply("Here is your haiku."),  # the parent's
    )
    handle, run_id = await harness.start(spec(tools=["agent:poet"]))
    assert (await handle.result()).outcome == "succeeded"
    result = (await harness.messages(run_id))[2]
    assert result.content == "drops on the window"
    async with harness.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, outcome, objective FROM runs WHERE parent_run_id = %s", (run_id,)
        )
        children = await cur.fetchall()
    assert [(c["outcome"], c["objective"]) for c in children] == [
        ("succeeded", "a haiku about rain")
    ]
    child_request = harness.server.chat_requests()[1]
    assert child_request.messages[0]["content"] == "You write short poems."
    await assert_replays(handle)
    record_history("agent_run_v4_agent_as_tool", await handle.fetch_history())


async def test_a_child_run_is_cancelled_with_its_parent(harness: Harness) -> None:
    async with harness.pool.connection() as conn:
        await agents.create_version(conn, TENANT, "slowpoke", spec(tools=[]))
    harness.server.script(
        tool_calls(tool_call("agent__slowpoke", {"task": "think"}, id="a1")),
        hang(60),
    )
    handle, run_id = await harness.start(spec(tools=["agent:slowpoke"]))
    await asyncio.to_thread(harness.server.wait_for_requests, 2, 20)
    await handle.cancel()
    for _ in range(200):
        async with harness.pool.connection() as conn:
            cur = await conn.execute("SELECT outcome FROM runs WHERE parent_run_id = %s", (run_id,))
            row = await cur.fetchone()
        if row is not None and row["outcome"] == "cancelled":
            break
        await asyncio.sleep(0.1)
    assert row is not None and row["outcome"] == "cancelled"
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await harness.run_row(run_id)).outcome == "cancelled"
    await assert_replays(handle)
    record_history("agent_run_v4_child_cancelled", await handle.fetch_history())


async def test_ask_human_waits_for_the_answer(harness: Harness) -> None:
    harness.server.script(
        tool_calls(tool_call("ask_human", {"question": "Which colour?"}, id="q1")),
        reply("Blue it is."),
    )
    handle, run_id = await harness.start(spec(tools=["ask_human"]))
    for _ in range(200):
        status = await handle.query(AgentRunWorkflow.status)
        if status.pending_approvals:
            break
        await asyncio.sleep(0.05)
    [pending] = status.pending_approvals
    assert (pending.tool, pending.question) == ("ask_human", "Which colour?")
    await handle.execute_update(
        AgentRunWorkflow.approve_tool_call,
        ApprovalDecision(call_id="q1", approved=True, answer="blue"),
    )
    assert (await handle.result()).outcome == "succeeded"
    assert (await harness.messages(run_id))[2].content == "The human answered: blue"
    resolved = [e for e in await harness.events(run_id) if e.type == "approval.resolved"]
    assert resolved[0].data["answer"] == "blue"
    await assert_replays(handle)
    record_history("agent_run_v4_ask_human", await handle.fetch_history())


async def test_policy_is_enforced_in_the_activity_layer(harness: Harness) -> None:
    """A call the workflow let through still does not run if the agent's policy denies it."""
    denying = spec(tool_policies={"calc*": {"mode": "deny"}})
    harness.server.script(
        tool_calls(tool_call("calculator", {"expression": "1+1"}, id="d1")), reply("ok")
    )
    handle, run_id = await harness.start(denying)
    await handle.result()
    assert (await harness.messages(run_id))[2].content.startswith("Tool call denied")
    # The activity alone, asked to run the call as if the workflow had not checked it:
    async with harness.pool.connection() as conn:
        record = await runs.get_run(conn, TENANT, run_id)
        await conn.execute("DELETE FROM run_messages WHERE run_id = %s AND seq = 3", (run_id,))
    activities = ToolActivities(
        harness.resources.settings,
        harness.pool,
        harness.resources.catalog,
        harness.resources.limiter,
    )
    output = await ActivityEnvironment().run(
        activities.execute_tool,
        ToolCallInput(
            tenant_id=TENANT, run_id=run_id, step=1, message_seq=2, call_index=0, result_seq=3,
            agent_name=record.agent_name, agent_version=record.agent_version,
        ),
    )  # fmt: skip
    assert not output.ok and output.error_type == "PolicyDenied"
    assert "denies" in output.preview


async def test_find_tools_loads_matching_tools_on_demand(harness: Harness) -> None:
    topics = ["stock prices", "flight status", "translation", "currency rates", "news", "recipes"]
    async with harness.pool.connection() as conn:
        for i in range(24):
            await tool_store.register_tool(
                conn, TENANT, f"svc_{i:02d}",
                ToolSpec(
                    kind="http", description=f"Look up {topics[i % len(topics)]} (service {i}).",
                    input_schema={"type": "object", "properties": {}},
                    config={"url_template": f"http://127.0.0.1:9/svc/{i}", "method": "GET"},
                ),
            )  # fmt: skip
        await tool_store.register_tool(
            conn, TENANT, "forecast",
            ToolSpec(
                kind="http", description="Weather forecast for a city: temperature and rain.",
                input_schema={"type": "object", "properties": {"city": {"type": "string"}}},
                config={"url_template": "http://127.0.0.1:9/forecast", "method": "GET"},
            ),
        )  # fmt: skip
    harness.server.script(
        tool_calls(tool_call("find_tools", {"query": "will it rain tomorrow in Paris"}, id="f1")),
        reply("found it"),
    )
    handle, run_id = await harness.start(spec(tools=["calculator", "forecast", "svc_*"]))
    assert (await handle.result()).outcome == "succeeded"
    first, second = harness.server.chat_requests()
    # 26 tools: the model starts with the built-ins and find_tools only ...
    assert {t["function"]["name"] for t in first.body["tools"]} == {"calculator", "find_tools"}
    # ... and the search loads the forecast tool into its context.
    assert "- forecast:" in ((await harness.messages(run_id))[2].content or "")
    assert "forecast" in {t["function"]["name"] for t in second.body["tools"]}
    await assert_replays(handle)
    record_history("agent_run_v4_find_tools", await handle.fetch_history())


async def test_a_dead_mcp_server_is_an_error_for_the_model_not_a_failed_run(
    harness: Harness,
) -> None:
    async with harness.pool.connection() as conn:
        await mcp_servers.upsert_mcp_server(
            conn, TENANT, "dead", "stdio",
            {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"]},
        )  # fmt: skip
        await tool_store.register_tool(
            conn, TENANT, "mcp:dead/ping",
            ToolSpec(
                kind="mcp", description="Ping.", input_schema={"type": "object", "properties": {}},
                config={"server": "dead", "tool": "ping"},
            ),
        )  # fmt: skip
    harness.server.script(
        tool_calls(tool_call("mcp__dead__ping", {}, id="d1")), reply("it is down")
    )
    handle, run_id = await harness.start(spec(tools=["mcp:dead/ping"]))
    assert (await handle.result()).outcome == "succeeded"
    result = (await harness.messages(run_id))[2].content or ""
    assert result.startswith("Error: tool 'mcp:dead/ping' is unavailable") and "dead" in result
    [event] = [e for e in await harness.events(run_id) if e.type == "tool.result"]
    assert event.data["ok"] is False
    await assert_replays(handle)
    record_history("agent_run_v4_tool_unavailable", await handle.fetch_history())


async def test_a_registered_code_tool_runs_in_the_sandbox(harness: Harness) -> None:
    async with harness.pool.connection() as conn:
        await tool_store.register_tool(
            conn, TENANT, "word_count",
            ToolSpec(
                kind="code", description="Count the words of a text.",
                input_schema={"type": "object", "properties": {"text": {"type": "string"}},
                              "required": ["text"]},
                config={"language": "python", "source": "print(len(args['text'].split()))"},
            ),
        )  # fmt: skip
    harness.server.script(
        tool_calls(
            tool_call("word_count", {"text": "one two three"}, id="w1"),
            tool_call("word_count", {"words": 3}, id="w2"),
        ),
        reply("three words"),
    )
    handle, run_id = await harness.start(spec(tools=["word_count"]))
    assert (await handle.result()).outcome == "succeeded"
    messages = await harness.messages(run_id)
    assert messages[2].content == "exit code: 0\n--- stdout ---\n3"
    assert "missing required field 'text'" in (messages[3].content or "")
