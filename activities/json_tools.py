"""A schema-constrained JSON tool protocol for models without dependable tool calling.

The tiny local model (SmolLM2-135M under llama.cpp) rarely chooses to call a tool through
the function-calling chat format. For such models Colony sends no `tools` parameter.
Instead it describes the tools in the system prompt and asks for exactly one JSON object:

    {"tool": "<name>", "arguments": {...}}    to call a tool, or
    {"answer": "<text>"}                      to finish,

with a JSON Schema `response_format` that llama.cpp compiles to a grammar, so the output
always parses. Earlier tool calls and results are rewritten into that same form. Anything
unexpected is kept as plain text: the run goes on, it never crashes on the model's output.
"""

import json
from typing import Any

from core.models import ChatMessage, ModelRequest, ToolCallRequest

PROVIDERS = frozenset({"local"})
"""Providers whose models use this protocol instead of native tool calling."""


def applies(provider: str, request: ModelRequest) -> bool:
    """Whether this call uses the JSON protocol."""
    return provider in PROVIDERS and bool(request.tools)


def instructions(request: ModelRequest) -> str:
    """The protocol description appended to the system prompt."""
    lines = [
        "You can use tools. Reply with exactly one JSON object and nothing else:",
        '- to call a tool: {"tool": "<tool name>", "arguments": {<arguments>}}',
        '- to give your final answer: {"answer": "<your answer>"}',
        "After a tool call you receive its result; then call another tool or answer.",
        "Tools:",
    ]
    for tool in request.tools:
        lines.append(
            f"- {tool.name}: {tool.description} Arguments (JSON Schema): {json.dumps(tool.parameters)}"
        )
    return "\n".join(lines)


def response_format(request: ModelRequest) -> dict[str, Any]:
    """`response_format` constraining the output to a tool call or an answer."""
    calls = [
        {
            "type": "object",
            "properties": {"tool": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["tool", "arguments"],
        }
        for tool in request.tools
    ]
    answer = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    return {"type": "json_object", "schema": {"anyOf": [*calls, answer]}}


def messages(request: ModelRequest) -> list[dict[str, Any]]:
    """The conversation in protocol form (OpenAI message dicts, no tool roles)."""
    out: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            out.append(
                {
                    "role": "system",
                    "content": f"{message.content or ''}\n\n{instructions(request)}".strip(),
                }
            )
        elif message.role == "assistant" and message.tool_calls:
            for call in message.tool_calls:
                out.append(
                    {
                        "role": "assistant",
                        "content": json.dumps(
                            {"tool": call.name, "arguments": _loads(call.arguments)}
                        ),
                    }
                )
        elif message.role == "assistant":
            out.append(
                {"role": "assistant", "content": json.dumps({"answer": message.content or ""})}
            )
        elif message.role == "tool":
            out.append(
                {
                    "role": "user",
                    "content": f"Result of {message.name or 'the tool'}: {message.content or ''}",
                }
            )
        else:
            out.append({"role": message.role, "content": message.content or ""})
    if not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": instructions(request)})
    return out


def decode(message: ChatMessage, request: ModelRequest) -> ChatMessage:
    """The model's JSON reply as a normal assistant message (a tool call or text)."""
    text = (message.content or "").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return message  # not JSON after all: keep it as the answer text
    if isinstance(value, dict):
        names = {tool.name for tool in request.tools}
        if isinstance(value.get("tool"), str) and value["tool"] in names:
            arguments = value.get("arguments", {})
            return ChatMessage(
                role="assistant",
                tool_calls=[
                    ToolCallRequest(
                        id="call_0", name=value["tool"], arguments=json.dumps(arguments)
                    )
                ],
            )
        if isinstance(value.get("answer"), str):
            return ChatMessage(role="assistant", content=value["answer"])
    return message


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
