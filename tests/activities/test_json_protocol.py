"""The JSON tool protocol for the local model: request shape against the scripted server,
decoding, and (slow) a real SmolLM2 tool call."""

import json
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.providers import json_protocol
from activities.tools.builtins import BUILTIN
from core.payloads import ChatMessage, ModelRequest, ToolCallRequest
from core.providers import LOCAL_MODEL, local_model_installed
from tests.conftest import make_settings
from tests.support.model_server import ScriptedModelServer, reply
from tests.support.models import complete
from workers import model_server as local_server
from workers.process import ManagedProcess, free_port


def request(*messages: ChatMessage) -> ModelRequest:
    return ModelRequest(
        model=LOCAL_MODEL,
        messages=[ChatMessage(role="system", content="Be precise."), *messages],
        tools=BUILTIN.schemas(["calculator", "get_time"]),
    )


async def test_local_calls_use_a_constrained_json_protocol(
    model_server: ScriptedModelServer,
) -> None:
    settings = make_settings(COLONY_LOCAL_MODEL_URL=model_server.base_url)
    model_server.script(
        reply('{"tool": "calculator", "arguments": {"expression": "17*23"}}'),
        reply('{"answer": "391"}'),
    )
    first = await complete(
        request(ChatMessage(role="user", content="17*23? Use the calculator.")), settings
    )
    assert first.message.tool_calls == [
        ToolCallRequest(id="call_0", name="calculator", arguments='{"expression": "17*23"}')
    ]
    assert first.cost_usd == 0.0
    sent = model_server.chat_requests()[0].body
    assert "tools" not in sent
    schema = sent["response_format"]["schema"]
    options = schema.get("anyOf", [schema])
    assert {"const": "calculator"} in [option["properties"].get("tool") for option in options]
    assert "Reply with exactly one JSON object" in sent["messages"][0]["content"]
    assert "calculator(expression: string)" in sent["messages"][0]["content"]

    history = [
        ChatMessage(role="user", content="17*23? Use the calculator."),
        first.message,
        ChatMessage(role="tool", content="391", tool_call_id="call_0", name="calculator"),
    ]
    second = await complete(request(*history), settings)
    assert second.message.content == "391" and not second.message.tool_calls
    roles = [
        (m["role"], m["content"]) for m in model_server.chat_requests()[1].body["messages"][1:]
    ]
    assert roles == [
        ("user", "17*23? Use the calculator."),
        ("assistant", '{"tool": "calculator", "arguments": {"expression": "17*23"}}'),
        ("user", "Result of calculator: 391\nUse it to answer: 17*23? Use the calculator."),
    ]
    # The one call the question asked for succeeded: the model answers, quoting its result.
    schema = model_server.chat_requests()[1].body["response_format"]["schema"]
    assert schema["required"] == ["answer"] and "391" in schema["properties"]["answer"]["pattern"]


def turn_request(text: str, *names: str) -> ModelRequest:
    return ModelRequest(
        model=LOCAL_MODEL,
        messages=[ChatMessage(role="user", content=text)],
        tools=BUILTIN.schemas(list(names or ("calculator", "get_time"))),
    )


def test_the_turn_plan_follows_the_ranking() -> None:
    req = turn_request("What is 17 * 23?")
    assert json_protocol.plan_turn(req, None).mode == "either"
    # A clear match must call, among the near-best tools only.
    turn = json_protocol.plan_turn(req, [0.6, 0.1])
    assert turn.mode == "call" and [t.name for t in turn.offered] == ["calculator"]
    assert json_protocol.plan_turn(req, [0.6, 0.55]).mode == "call"
    assert len(json_protocol.plan_turn(req, [0.6, 0.55]).offered) == 2
    # No tool fits: answer only. Unsure: either, best first.
    assert json_protocol.plan_turn(req, [0.05, 0.1]) == json_protocol.Turn("answer", ())
    turn = json_protocol.plan_turn(req, [0.25, 0.3])
    assert turn.mode == "either" and [t.name for t in turn.offered] == ["get_time", "calculator"]
    # A tool named in the message is called whatever the scores.
    named = turn_request("Use the get time tool for Tokyo")
    turn = json_protocol.plan_turn(named, [0.0, 0.0])
    assert turn.mode == "call" and [t.name for t in turn.offered] == ["get_time"]
    # After a tool result the model decides.
    after = req.model_copy(
        update={
            "messages": [
                *req.messages,
                ChatMessage(
                    role="assistant",
                    tool_calls=[ToolCallRequest(id="c", name="calculator", arguments="{}")],
                ),
                ChatMessage(role="tool", content="391", tool_call_id="c", name="calculator"),
            ]
        }
    )
    assert json_protocol.ranking_query(after) is None
    # The one call asked for succeeded: answer. After an error, or when the question
    # asks for more ("and"), the model may call again.
    assert json_protocol.plan_turn(after, None) == json_protocol.Turn("answer", ())
    failed = after.model_copy(
        update={
            "messages": [
                *after.messages[:-1],
                after.messages[-1].model_copy(update={"content": "Error: bad expression"}),
            ]
        }
    )
    assert json_protocol.plan_turn(failed, None).mode == "either"
    two = after.model_copy(
        update={
            "messages": [
                ChatMessage(role="user", content="What is 17 * 23 and 2 ** 10?"),
                *after.messages[1:],
            ]
        }
    )
    assert json_protocol.plan_turn(two, None).mode == "either"


def test_answer_only_and_call_only_grammars() -> None:
    req = turn_request("x")
    answer = json_protocol.response_format(req, json_protocol.Turn("answer", ()))["schema"]
    assert answer["required"] == ["answer"]
    call = json_protocol.response_format(req, json_protocol.Turn("call", tuple(req.tools[:1])))
    assert call["schema"]["properties"]["tool"] == {"const": "calculator"}
    assert "answer" not in json.dumps(call)
    assert "get_time" not in json_protocol.instructions(
        req, json_protocol.Turn("call", (req.tools[0],))
    )


def test_a_protocol_answer_is_a_call_or_asked_again() -> None:
    req = turn_request("17 * 23?")
    inner = '{"tool": "calculator", "arguments": {"expression": "17 * 23"}}'
    decoded = json_protocol.decode(
        ChatMessage(role="assistant", content=json.dumps({"answer": inner})), req
    )
    assert decoded.tool_calls[0].name == "calculator"
    fragment = ChatMessage(role="assistant", content='{ "tool": "calculator", "arguments": ')
    assert json_protocol.is_protocol_fragment(json_protocol.decode(fragment, req))
    assert not json_protocol.is_protocol_fragment(ChatMessage(role="assistant", content="391"))


def test_a_repeated_call_is_recognised() -> None:
    call = ToolCallRequest(id="a", name="calculator", arguments='{"expression": "17*23"}')
    req = turn_request("17*23?").model_copy(
        update={
            "messages": [
                ChatMessage(role="user", content="17*23?"),
                ChatMessage(role="assistant", tool_calls=[call]),
                ChatMessage(role="tool", content="391", tool_call_id="a", name="calculator"),
            ]
        }
    )
    again = ChatMessage(
        role="assistant",
        tool_calls=[call.model_copy(update={"arguments": '{ "expression":"17*23" }'})],
    )
    assert json_protocol.is_repeat(again, req)
    other = ChatMessage(
        role="assistant",
        tool_calls=[call.model_copy(update={"arguments": '{"expression": "2**10"}'})],
    )
    assert not json_protocol.is_repeat(other, req)


async def test_a_repeated_call_is_answered_instead(model_server: ScriptedModelServer) -> None:
    settings = make_settings(COLONY_LOCAL_MODEL_URL=model_server.base_url)
    call = ToolCallRequest(id="a", name="calculator", arguments='{"expression": "17*23"}')
    model_server.script(
        reply('{"tool": "calculator", "arguments": {"expression": "17*23"}}'),
        reply('{"answer": "17 * 23 = 391"}'),
    )
    result = await complete(
        request(
            ChatMessage(role="user", content="17*23 and 2**10?"),
            ChatMessage(role="assistant", tool_calls=[call]),
            ChatMessage(role="tool", content="391", tool_call_id="a", name="calculator"),
        ),
        settings,
    )
    assert result.message.content == "17 * 23 = 391" and not result.message.tool_calls
    second = model_server.chat_requests()[1].body["response_format"]["schema"]
    assert second["required"] == ["answer"]
    assert result.usage.prompt_tokens > 0


def test_decode_never_fails() -> None:
    req = request(ChatMessage(role="user", content="x"))
    for text in ("plain words", '{"tool": "rm", "arguments": {}}', "[1, 2]", '{"answer": 5}', ""):
        decoded = json_protocol.decode(ChatMessage(role="assistant", content=text), req)
        assert decoded.tool_calls == [] and decoded.content == text
    assert (
        json_protocol.decode(ChatMessage(role="assistant", content='{"answer": "ok"}'), req).content
        == "ok"
    )
    # Other providers keep native tool calling.
    assert not json_protocol.applies("openai", req) and json_protocol.applies("local", req)


@pytest.fixture
async def smollm() -> AsyncIterator[str]:
    if not local_model_installed():
        pytest.skip("local-llm extra not installed")
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "llama.log"
    process = ManagedProcess(local_server.server_spec(port, log))
    await process.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await process.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_smollm2_makes_a_parseable_tool_call(smollm: str) -> None:
    settings = make_settings(COLONY_LOCAL_MODEL_URL=smollm)
    req = request(ChatMessage(role="user", content="What is 17 * 23? Use the calculator tool."))
    req = req.model_copy(update={"temperature": 0.0, "max_tokens": 128})
    result = await complete(req, settings)
    # The tiny model's arguments may be wrong, but its reply is always a tool call or an answer.
    assert result.message.tool_calls or result.message.content
    if result.message.tool_calls:
        assert result.message.tool_calls[0].name in {"calculator", "get_time"}


def test_answers_quote_the_clear_value_of_a_result() -> None:
    assert [json_protocol.salient(t) for t in ("391", "2 ** 10 = 1024", "The result is 391.")] == [
        "391",
        "1024",
        "391",
    ]
    # Errors, long text and sentences without one clear number force nothing.
    for text in ("Error: bad", "x" * 60, "It is 12:00 on the 3rd"):
        assert json_protocol.salient(text) is None
    one = json_protocol.quoting_pattern(["391"])[1:-1]
    for text in ("391", "The answer is 391.", "391, the product."):
        assert re.fullmatch(one, text), text
    # No other number beside the value, no value glued to more digits, no endless text.
    for text in ("17 * 23 = 409, then 391", "3910", "391.5", "391" + " and so on" * 10, "{391}"):
        assert not re.fullmatch(one, text), text
    two = json_protocol.quoting_pattern(["391", "1024"])[1:-1]
    for text in ("The results are 391 and 1024.", "391, 1024", "391; 1024"):
        assert re.fullmatch(two, text), text
    for text in ("1024 and 391", "391, Report both:1024.", "391 and 1024 value as follows."):
        assert not re.fullmatch(two, text), text


def test_a_long_task_is_focused_on_its_request() -> None:
    tools = BUILTIN.schemas(["calculator"])
    task = (
        "Your subtask (power):\nCompute 2 ** 10 with the calculator tool.\n\n"
        "You are one agent of a team working on a larger objective. " + "Context. " * 30
    )
    assert json_protocol.focus(task, tools) == "Compute 2 ** 10 with the calculator tool."
    assert json_protocol.focus("What is 17 * 23?", tools) == "What is 17 * 23?"
    req = ModelRequest(
        model=LOCAL_MODEL, messages=[ChatMessage(role="user", content=task)], tools=tools
    )
    sent = json_protocol.messages(req, json_protocol.Turn("call", tuple(tools)))
    assert sent[-1]["content"] == "Compute 2 ** 10 with the calculator tool."
