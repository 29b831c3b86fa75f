"""Traces end to end: API request -> workflow -> every activity, in one trace.

Real API (in process), Temporal, Postgres, workers and the scripted model server. The
workers run without a workflow cache (`running_workers(cache=False)`), so every workflow
task replays its history first: the counts below also show that replays add no
RunWorkflow or StartActivity spans. Each test then replays the histories with `Replayer`
and checks that it makes no span at all (the contrib interceptor makes workflow spans only
outside replay; queries are its one documented exception, and replays run none).
"""

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from api.main import create_app
from core import telemetry, tracing
from core.db import Pool
from core.settings import Settings
from core.temporal import ColonyPlugin
from core.timeline import LOCAL_ACTIVITY_MARKER, local_activity
from tests.api.test_runs import wait_finished as wait_run
from tests.api.test_swarms import DIAMOND, PRICED
from tests.api.test_swarms import wait_finished as wait_swarm
from tests.conftest import make_settings
from tests.evolution.test_workflow import COUNTS, done_if_told, responder, setup, start
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer, reply, tool_call, tool_calls
from tests.support.services import TemporalServer
from tests.support.swarm_script import SwarmScript
from tests.support.tracing import captured_spans, otlp_receiver, scoped_provider
from tests.support.workers import api_with_workers
from tests.workflows.harness import Harness
from workers.registry import ALL_WORKFLOWS

TENANT = "t-tracing"
QUERY_SPANS = ("QueryWorkflow:", "HandleQuery:")
AGENT = {
    "name": "traced",
    "instructions": "Use the calculator.",
    "model": PRICED,  # a model LiteLLM prices, so the LLM span carries a cost
    "tools": ["calculator"],
}


@pytest.fixture(scope="module")
async def key(pool: Pool) -> str:
    return (await tenant_keys(pool, TENANT))[TENANT]


@pytest.fixture
def settings(
    database_url: str, temporal: TemporalServer, model_server: ScriptedModelServer, tmp_path: Path
) -> Settings:
    return stack_settings(database_url, temporal.address, model_server.base_url, tmp_path)


@pytest.fixture
async def client(temporal: TemporalServer) -> Client:
    return await Client.connect(temporal.address, plugins=[ColonyPlugin()])


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def of_workflow(spans: Sequence[ReadableSpan], workflow_id: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("temporalWorkflowID") == workflow_id]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def workflow_tree(client: Client, workflow_id: str) -> dict[str, Counter[str]]:
    """Each workflow's id (the root and its children) -> its scheduled activities, local
    ones (recorded as markers) included."""
    tree: dict[str, Counter[str]] = {}
    pending = [workflow_id]
    while pending:
        wid = pending.pop()
        history = await client.get_workflow_handle(wid).fetch_history()
        scheduled: Counter[str] = Counter()
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                scheduled[event.activity_task_scheduled_event_attributes.activity_type.name] += 1
            marker = event.marker_recorded_event_attributes
            if event.HasField("marker_recorded_event_attributes") and (
                marker.marker_name == LOCAL_ACTIVITY_MARKER
            ):
                scheduled[local_activity(marker)["activity_type"]] += 1
            if event.HasField("child_workflow_execution_started_event_attributes"):
                attributes = event.child_workflow_execution_started_event_attributes
                pending.append(attributes.workflow_execution.workflow_id)
        tree[wid] = scheduled
    return tree


def assert_one_trace_per_workflow(
    spans: Sequence[ReadableSpan], tree: dict[str, Counter[str]], trace_id: int
) -> None:
    """Every workflow has one RunWorkflow span and one StartActivity and RunActivity span
    per scheduled activity, all in `trace_id`."""
    for wid, scheduled in tree.items():
        mine = of_workflow(spans, wid)
        assert mine, f"no span of workflow {wid}"
        # Queries belong to the trace of the request that asked (GET /v1/runs/{id} polls).
        others = {
            s.name
            for s in mine
            if s.context.trace_id != trace_id and not s.name.startswith(QUERY_SPANS)
        }
        assert not others, (wid, others)
        runs = [s for s in mine if s.name.startswith("RunWorkflow:")]
        completes = [s for s in mine if s.name.startswith("CompleteWorkflow:")]
        assert (len(runs), len(completes)) == (1, 1), (wid, [s.name for s in mine])
        started = Counter(
            s.name.removeprefix("StartActivity:")
            for s in mine
            if s.name.startswith("StartActivity:")
        )
        ran = Counter(
            s.name.removeprefix("RunActivity:") for s in mine if s.name.startswith("RunActivity:")
        )
        assert started == scheduled, (wid, started - scheduled, scheduled - started)
        assert ran == scheduled, (wid, ran - scheduled, scheduled - ran)  # no retries here


async def assert_replay_makes_no_spans(client: Client, workflow_ids: Sequence[str]) -> None:
    provider, exporter = scoped_provider()
    replayer = Replayer(
        workflows=ALL_WORKFLOWS, plugins=[ColonyPlugin(tracer=provider.get_tracer("replay"))]
    )
    for wid in workflow_ids:
        history = await client.get_workflow_handle(wid).fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
        assert result.replay_failure is None
    assert exporter.get_finished_spans() == ()


async def finished(client: Client, exporter: InMemorySpanExporter, workflow_type: str) -> str:
    """Wait for the workflow the request started to end; its id.

    Waited on through Temporal, not by polling the API: a status query reaching a worker
    without a workflow cache while a workflow task is in flight replays the history up
    to that task as if it were new, and the interceptor would make that task's spans
    again (docs/observability.md).
    """
    (start,) = named(exporter.get_finished_spans(), f"StartWorkflow:{workflow_type}")
    workflow_id = str(attrs(start)["temporalWorkflowID"])
    await client.get_workflow_handle(workflow_id).result()
    return workflow_id


@pytest.fixture
async def api(settings: Settings, pool: Pool, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_with_workers(settings, pool, key) as http:
        yield http


async def test_a_run_is_one_trace_from_the_request_to_every_activity(
    api: httpx.AsyncClient, client: Client, model_server: ScriptedModelServer
) -> None:
    assert (await api.post("/v1/agents", json=AGENT)).status_code in (200, 201)
    model_server.script(
        tool_calls(tool_call("calculator", {"expression": "21*2"})), reply("It is 42.")
    )
    with captured_spans() as exporter:
        created = await api.post("/v1/runs", json={"agent": "traced", "objective": "21*2?"})
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        workflow_id = await finished(client, exporter, "AgentRunWorkflow")
        spans = exporter.get_finished_spans()
    assert (await wait_run(api, run_id))["outcome"] == "succeeded"

    (request,) = [s for s in named(spans, "POST /v1/runs") if s.kind == SpanKind.SERVER]
    trace_id = request.context.trace_id
    (start,) = named(spans, "StartWorkflow:AgentRunWorkflow")
    assert start.parent is not None and start.context.trace_id == trace_id
    tree = await workflow_tree(client, workflow_id)
    # The calculator needs no isolation: a local activity of the workflow's worker.
    assert {"call_llm", "execute_local_tool"} <= set(tree[workflow_id])
    assert_one_trace_per_workflow(spans, tree, trace_id)

    # The LLM spans: GenAI attributes, tokens and cost, under their RunActivity span.
    by_id = {s.context.span_id: s for s in spans}
    chats = named(spans, f"chat {PRICED}")
    assert len(chats) == tree[workflow_id]["call_llm"] == 2
    for chat in chats:
        a = attrs(chat)
        assert chat.context.trace_id == trace_id and chat.kind == SpanKind.CLIENT
        assert chat.parent is not None and by_id[chat.parent.span_id].name == "RunActivity:call_llm"
        assert (a["gen_ai.operation.name"], a["gen_ai.request.model"]) == ("chat", PRICED)
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
        assert a["gen_ai.response.model"] == PRICED
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["colony.cost_usd"] > 0
        assert (a["colony.run_id"], a["colony.tenant"]) == (run_id, TENANT)
    assert sorted(attrs(c)["gen_ai.response.finish_reasons"][0] for c in chats) == [
        "stop",
        "tool_calls",
    ]
    # The tool span.
    (tool,) = named(spans, "execute_tool calculator")
    assert tool.context.trace_id == trace_id
    assert by_id[tool.parent.span_id].name == "RunActivity:execute_local_tool"  # type: ignore[union-attr]
    assert attrs(tool)["gen_ai.tool.call.id"] and "error.type" not in attrs(tool)
    assert attrs(tool)["colony.run_id"] == run_id

    await assert_replay_makes_no_spans(client, list(tree))


async def test_a_swarm_is_one_trace_with_its_subtasks_and_their_activities(
    api: httpx.AsyncClient, client: Client, model_server: ScriptedModelServer
) -> None:
    SwarmScript(synthesis="Done [a][d]").install(model_server)
    with captured_spans() as exporter:
        created = await api.post("/v1/swarms", json={
            "objective": "Write a report", "plan": DIAMOND, "models": {"medium": PRICED},
        })  # fmt: skip
        assert created.status_code == 201, created.text
        workflow_id = await finished(client, exporter, "SwarmWorkflow")
        spans = exporter.get_finished_spans()
    assert (await wait_swarm(api, created.json()["id"]))["outcome"] == "succeeded"

    (request,) = [s for s in named(spans, "POST /v1/swarms") if s.kind == SpanKind.SERVER]
    trace_id = request.context.trace_id
    tree = await workflow_tree(client, workflow_id)
    assert len(tree) == 5  # the swarm and its four subtasks' runs
    assert len(named(spans, "StartChildWorkflow:AgentRunWorkflow")) == 4
    assert_one_trace_per_workflow(spans, tree, trace_id)

    subtasks = [s for s in spans if s.name.startswith("swarm_subtask ")]
    assert {s.context.trace_id for s in subtasks} == {trace_id}
    stages = Counter(
        (attrs(s)["colony.swarm.subtask.id"], attrs(s)["colony.swarm.subtask.stage"])
        for s in subtasks
    )
    assert stages == Counter({(sid, stage): 1 for sid in "abcd" for stage in ("start", "finish")})
    started = {attrs(s)["colony.swarm.subtask.id"]: attrs(s) for s in subtasks
               if attrs(s)["colony.swarm.subtask.stage"] == "start"}  # fmt: skip
    assert started["d"]["gen_ai.agent.name"] == "reviewer" and started["d"]["colony.run_id"]
    # Each subtask's model calls are LLM spans of its own run, priced.
    chats = [s for s in spans if s.name == f"chat {PRICED}" and "colony.run_id" in attrs(s)]
    assert {attrs(c)["colony.run_id"] for c in chats} == {
        a["colony.run_id"] for a in started.values()
    }
    assert all(attrs(c)["colony.cost_usd"] > 0 for c in chats)
    # The queen's synthesis is a model call of the swarm's own activity.
    by_id = {s.context.span_id: s for s in spans}
    queen = [s for s in spans if s.name.startswith("chat ") and s.parent
             and by_id[s.parent.span_id].name == "RunActivity:synthesize_swarm"]  # fmt: skip
    assert len(queen) == 1 and queen[0].context.trace_id == trace_id
    assert attrs(queen[0])["gen_ai.usage.output_tokens"] > 0

    await assert_replay_makes_no_spans(client, list(tree))


async def test_the_app_takes_a_tracer_provider(settings: Settings, key: str) -> None:
    provider, exporter = scoped_provider()
    app = create_app(settings, tracer_provider=provider)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://colony",
            headers={"Authorization": f"Bearer {key}"},
        ) as http,
    ):  # fmt: skip
        assert (await http.get("/v1/agents")).status_code == 200
        assert (await http.get("/healthz")).status_code in (200, 503)
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/v1/agents/nobody/metrics")).status_code == 404
    names = [s.name for s in exporter.get_finished_spans()]
    # Probes and scrapes are not traced; an agent's metrics are an API call like any other.
    assert names == ["GET /v1/agents", "GET /v1/agents/{name}/metrics"]


async def test_spans_are_exported_to_the_otlp_endpoint() -> None:
    with otlp_receiver() as receiver:
        settings = make_settings(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.base_url + "/")
        provider = telemetry.tracer_provider(settings, "colony-worker")
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("RunActivity:call_llm") as parent:
            parent.set_attribute("temporalWorkflowID", "run-1")
            with tracer.start_as_current_span("chat openai/gpt-4o-mini") as chat:
                chat.set_attributes({"gen_ai.usage.input_tokens": 12, "colony.cost_usd": 0.5})
        assert provider.force_flush(10_000)
        provider.shutdown()

    assert receiver.paths == ["/v1/traces"]
    received = {span.name: (resource, span) for resource, span in receiver.spans()}
    assert set(received) == {"RunActivity:call_llm", "chat openai/gpt-4o-mini"}
    resource, chat_span = received["chat openai/gpt-4o-mini"]
    _, parent_span = received["RunActivity:call_llm"]
    assert resource["service.name"] == "colony-worker"
    assert chat_span.trace_id == parent_span.trace_id
    assert chat_span.parent_span_id == parent_span.span_id
    values = {a.key: a.value for a in chat_span.attributes}
    assert values["gen_ai.usage.input_tokens"].int_value == 12
    assert values["colony.cost_usd"].double_value == 0.5


def test_helpers_record_errors() -> None:
    # core.tracing uses the global provider; capture it for this test only.
    with captured_spans() as exporter:
        with tracing.tool_span("http_fetch", "call-1", run_id="run_x", tenant="t") as span:
            span.failed("ToolFailed")
        with (
            pytest.raises(RuntimeError),
            tracing.tool_span("run_python", "call-2", run_id="run_x", tenant="t"),
        ):
            raise RuntimeError("boom")
        with (
            pytest.raises(ApplicationError),
            tracing.tool_span("http_get", "call-3", run_id="run_x", tenant="t"),
        ):
            raise ApplicationError("slow down", type="RateLimited")
        tracing.evolution_stage("t", "evo_1", "decide", decision="promote", version=3)
        spans = {s.name: attrs(s) for s in exporter.get_finished_spans()}
    assert spans["execute_tool http_fetch"]["error.type"] == "ToolFailed"
    assert spans["execute_tool run_python"]["error.type"] == "RuntimeError"
    assert spans["execute_tool http_get"]["error.type"] == "RateLimited"
    assert spans["evolution decide"] == {
        "colony.evolution.id": "evo_1",
        "colony.evolution.stage": "decide",
        "colony.tenant": "t",
        "colony.evolution.decision": "promote",
        "colony.evolution.version": 3,
    }


async def test_an_evolution_cycle_makes_stage_spans_in_its_trace(harness: Harness) -> None:
    harness.server.responder = responder(done_if_told)
    _, evolution_id, _ = await setup(harness, COUNTS, max_eval_runs=5)  # too small: keep
    with captured_spans() as exporter:
        output = await (await start(harness, evolution_id)).result()
        spans = exporter.get_finished_spans()
    assert output.decision == "keep"
    (root,) = named(spans, "StartWorkflow:EvolutionWorkflow")
    stages = {s.name: attrs(s) for s in spans if s.name.startswith("evolution ")}
    assert set(stages) >= {"evolution start", "evolution finish"}
    assert {s.context.trace_id for s in spans if s.name.startswith("evolution ")} == {
        root.context.trace_id
    }
    assert stages["evolution finish"]["colony.evolution.decision"] == "keep"
    assert all(a["colony.evolution.id"] == evolution_id for a in stages.values())
