"""A schema-constrained JSON tool protocol for models without dependable tool calling.

The tiny local model (SmolLM2-135M under llama.cpp) rarely chooses to call a tool through
the function-calling chat format, and when it does its arguments are often broken. For
such models Colony sends no `tools` parameter. It describes the tools in the system prompt
as short signatures and asks for exactly one JSON object:

    {"tool": "<name>", "arguments": {...}}    to call a tool, or
    {"answer": "<text>"}                      to finish,

with a JSON Schema `response_format` that llama.cpp compiles to a grammar, so the output
always parses. What the model may say at each step is decided here, not left to a model
that cannot judge it (`plan_turn`):

- At the start of a user turn the offered tools are ranked against the user's words
  (by the caller, with the embedding model; a tool named in the message ranks first).
  A clear match leaves the model only tool calls among the best-ranked tools; no match
  leaves it only an answer; in between it may do either.
- A short request with several parts ("in Paris and in Rome") gets a call per part: after
  a call, a part no call has served yet is called for next, ranked against its own words
  (`request_parts`, `call_grounding.uncovered`). Once every part is served the model must
  answer; after an error it may call again or answer. Repeating a call it already made is
  not useful, so the caller asks again with the answer-only form (`is_repeat`).
- A call's arguments are grounded in the request's words while a turn (or a part)
  starts: numbers, spans, enums and flags it states (`call_grounding.ground`).

Earlier tool calls and results are rewritten into the same JSON form. A reply is decoded
into a normal assistant message; an answer that is itself a tool call (the model wrote
the protocol into the answer) is a tool call; anything else unexpected is kept as text.
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from activities.providers import call_grounding
from activities.providers.grammar import grammar_safe
from core.payloads import ChatMessage, ModelRequest, ToolCallRequest, ToolSchema, unwrap_untrusted

PROVIDERS = frozenset({"local"})
"""Providers whose models use this protocol instead of native tool calling."""

CALL_AT = 0.4
"""Similarity of the user's words and a tool at which the turn starts with a call."""
ANSWER_BELOW = 0.2
"""Similarity under which no offered tool fits: the model answers without one."""
NEAR_BEST = 0.08
"""Tools within this similarity of the best one stay offered when the turn must call."""
MAX_OFFERED = 3
"""Tools the grammar offers at most (small models choose badly among many)."""

Mode = Literal["call", "answer", "either"]


@dataclass(frozen=True)
class Turn:
    """What the model may reply at one step: tool calls among `offered`, an answer, or both."""

    mode: Mode
    offered: tuple[ToolSchema, ...]

    @property
    def may_answer(self) -> bool:
        """Whether an answer is allowed."""
        return self.mode != "call"


def applies(provider: str, request: ModelRequest) -> bool:
    """Whether this call uses the JSON protocol."""
    return provider in PROVIDERS and bool(request.tools)


def ranking_query(request: ModelRequest) -> str | None:
    """The text tools are ranked against at this step, when the model should call next.

    The latest user message when a turn starts (its first part, if it has several:
    `request_parts`). After tool results, the next part of a request with several that
    no call has served ("in Paris and in Rome": after one call, "in Rome"), while every
    call so far succeeded. Otherwise None: the model decides what comes next.
    """
    state = _turn_state(request)
    if state is None:
        return None
    question, calls, failed = state
    parts = request_parts(question, request.tools)
    if not calls:
        return question if len(parts) == 1 else parts[0]
    pending = _pending(parts, calls, request) if not failed else []
    return pending[0] if pending else None


def _pending(
    parts: Sequence[str], calls: Sequence[ToolCallRequest], request: ModelRequest
) -> list[str]:
    """The parts of a request still to call for (none once there were as many calls)."""
    if len(calls) >= len(parts):
        return []
    tools = {tool.name: tool for tool in request.tools}
    made = [(tools[c.name], _loads(c.arguments)) for c in calls if c.name in tools]
    return call_grounding.uncovered(parts, made, request.tools)


def request_parts(question: str, tools: Sequence[ToolSchema]) -> list[str]:
    """The parts of a user message that each need a call (one for a long task description)."""
    if len(question) > _SHORT_QUESTION:
        return [focus(question, tools)]
    return call_grounding.parts(question) or [question]


def _turn_state(request: ModelRequest) -> tuple[str, list[ToolCallRequest], bool] | None:
    """This turn's user message, its tool calls so far and whether one failed (None: no turn)."""
    calls: list[ToolCallRequest] = []
    failed = False
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content or "", calls, failed
        if message.role == "tool":
            failed = failed or (message.content or "").lstrip().lower().startswith("error")
        calls = [*message.tool_calls, *calls]
    return None


def tool_texts(tool: ToolSchema) -> list[str]:
    """How a tool reads for ranking: its name and description, then its example requests.

    A tool's score is its best text's (an example request matches a question far
    better than a description does: "What is 12 * 7?" is 0.55 from "What is 17 * 23?"
    and 0.28 from "Evaluate an arithmetic expression").
    """
    return [f"{tool.name.replace('_', ' ')}: {tool.description}", *tool.examples]


def plan_turn(request: ModelRequest, scores: Sequence[float] | None) -> Turn:
    """What the model may say next, from the conversation and the tools' similarity scores.

    Args:
        request: The call.
        scores: Similarity of `ranking_query(request)` and each tool in `request.tools`
            (same order), or None when no ranking was made (then the model chooses).
    """
    tools = list(request.tools)
    query = ranking_query(request)
    if query is None:
        if _answered(request):
            return Turn("answer", ())
        return Turn("either", tuple(tools))
    mentions = [(_mention(t, query), i) for i, t in enumerate(tools)]
    named = sorted((place, i) for place, i in mentions if place >= 0)
    if named:
        # The tool named first is the one asked for ("Compute 2 ** 10 with the calculator
        # tool. ... Use post_to_blackboard to share findings" asks for the calculator).
        return Turn("call", (tools[named[0][1]],))
    if scores is None:
        return Turn("either", tuple(tools))
    ranked = sorted(zip(scores, range(len(tools)), strict=True), reverse=True)
    best = ranked[0][0]
    state = _turn_state(request)
    if state is not None and state[1]:
        # A later part of a request whose first part needed a call needs one too; its
        # few words ("and in Rome") rank poorly, so they choose the tool, not whether.
        return Turn("call", tuple(tools[i] for _, i in ranked[:MAX_OFFERED]))
    if best < ANSWER_BELOW:
        return Turn("answer", ())
    if best >= CALL_AT:
        near = [tools[i] for score, i in ranked if score >= best - NEAR_BEST]
        return Turn("call", tuple(near[:MAX_OFFERED]))
    return Turn("either", tuple(tools[i] for _, i in ranked[:MAX_OFFERED]))


_SHORT_QUESTION = 200


def _answered(request: ModelRequest) -> bool:
    """Whether this turn's tool calls have answered the user, so the model should answer.

    True when every call since the user's message succeeded and there were as many as
    the parts the message asks for ("Paris and London" asks for two). A small model
    left free to call again makes a garbled copy of the call it just made.
    """
    state = _turn_state(request)
    if state is None:
        return False
    question, calls, failed = state
    if not calls or failed:
        return False
    return not _pending(request_parts(question, request.tools), calls, request)


def _mention(tool: ToolSchema, text: str) -> int:
    """Where the text first names the tool (`get_time`, or "get time" in words); -1: never."""
    lowered = text.lower()
    name = tool.name.lower()
    places = [lowered.find(name)]
    if len(name) > 3 and "_" in name:
        places.append(lowered.find(name.replace("_", " ")))
    found = [p for p in places if p >= 0]
    return min(found) if found else -1


def instructions(request: ModelRequest, turn: Turn | None = None) -> str:
    """The protocol description appended to the system prompt."""
    tools = turn.offered if turn is not None else tuple(request.tools)
    lines = [
        "Reply with exactly one JSON object and nothing else:",
        '- to call a tool: {"tool": "<tool name>", "arguments": {<arguments>}}',
        '- to give your final answer: {"answer": "<your answer>"}',
        "Copy argument values from the user's words. After a tool call you receive its "
        "result; then answer with that result, or call another tool if more is needed.",
    ]
    if tools:
        lines.append("Tools:")
        lines.extend(f"- {signature(tool)}" for tool in tools)
    return "\n".join(lines)


def signature(tool: ToolSchema) -> str:
    """A tool as one short line: `name(arg: type, ...): description`."""
    properties = tool.parameters.get("properties")
    required = set(tool.parameters.get("required") or [])
    args = []
    if isinstance(properties, dict):
        for name, schema in properties.items():
            kind = _type_name(schema)
            args.append(f"{name}: {kind}" + ("" if name in required else " (optional)"))
    return f"{tool.name}({', '.join(args)}): {tool.description}"


def _type_name(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("enum"), list) and len(schema["enum"]) <= 12:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type_name(schema.get('items'))}"
    return kind if isinstance(kind, str) else "any"


def response_format(request: ModelRequest, turn: Turn | None = None) -> dict[str, Any]:
    """`response_format` constraining the output to what `turn` allows."""
    turn = turn or Turn("either", tuple(request.tools))
    texts = _grounding_texts(request)
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            # Only what llama.cpp compiles safely; the full schema is checked on the call.
            "properties": {
                "tool": {"const": tool.name},
                "arguments": _arguments(tool, texts),
            },
            "required": ["tool", "arguments"],
        }
        for tool in turn.offered
    ]
    if turn.may_answer or not options:
        options.append(grammar_safe(answer_schema(_values(grounding(request)))))
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {"type": "json_object", "schema": schema}


def _grounding_texts(request: ModelRequest) -> tuple[str, str] | None:
    """The part of the request this step calls for and the whole request (None: no grounding)."""
    part = ranking_query(request)
    state = _turn_state(request)
    if part is None or state is None:
        return None
    whole = focus(state[0], request.tools)
    # The first call may serve any part; a later one serves the part still pending.
    return (part if state[1] else whole), whole


def _arguments(tool: ToolSchema, texts: tuple[str, str] | None) -> dict[str, Any]:
    """The grammar of a tool's arguments, grounded in the request's words when it starts."""
    arguments = grammar_safe(tool.parameters)
    if texts is None:
        return arguments
    return call_grounding.ground(arguments, tool, *texts)


_ANSWER_CHAR = r'[^"\\{}]'
"""An answer's characters: no quotes or backslashes (the grammar's string needs no
escapes) and no braces (an answer can never be a piece of the JSON protocol)."""
_GROUNDABLE = re.compile(r"[\w .:,/+%*=^()-]{1,80}")
_PUNCTUATION = " ,.;:!?"


def _values(value: str | None) -> list[str]:
    return [] if value is None else [value]


def grounding(request: ModelRequest) -> str | None:
    """What the answer must quote after the latest tool result (see `quoting_pattern`).

    A small model ignores a result and redoes the work itself ("17 * 23 = 409.5" right
    after the calculator said 391). An answer that follows a result with a clear value
    (`salient`) must quote it; other results are not forced on the answer.
    """
    last = request.messages[-1] if request.messages else None
    if last is None or last.role != "tool":
        return None
    return salient(unwrap_untrusted(last.content or ""))


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_EQUALS_NUMBER = re.compile(r"(?:=|\bis)\s*(-?\d+(?:\.\d+)?)\s*[.!]?\s*$")


def salient(text: str) -> str | None:
    """The value an answer built on `text` must quote, when there is a clear one.

    The whole text when it is one short value ("391", "12:00 UTC"); in a short sentence,
    its result ("2 ** 10 = 1024" -> "1024") or its only number; else None (errors, long
    or unclear text are not forced on the answer).
    """
    text = text.strip().strip(_PUNCTUATION).strip()
    if not _GROUNDABLE.fullmatch(text) or text.lower().startswith("error"):
        return None
    if len(text) <= 12:
        return text
    result = _EQUALS_NUMBER.search(text)
    if result is not None:
        return result.group(1)
    numbers = _NUMBER.findall(text)
    return numbers[0] if len(numbers) == 1 else None


def quoting_pattern(values: Sequence[str]) -> str:
    """A pattern for a short answer that quotes each value, whole and in order.

    A few words may lead in and follow one value, then the answer ends: "The answer is
    391." Several values are a list: "The results are 391 and 1024." No digits outside the values, so no wrong number can stand
    beside the right one ("17 * 23 = 409, then 391"). The bounds keep a small model
    from wandering off (and the grammar small: a bound of n costs about 2n rules).
    """
    if not values:
        return f"^{_ANSWER_CHAR}*$"
    words = r'[^0-9"\\{}.!?\n]'
    # Whole: not glued to more digits or letters ("1024.5" does not quote "1024").
    edge = r'[^0-9A-Za-z."\\{}\n-]'
    lead = f"([A-Za-z]{words}{{0,{_LEAD_CHARS}}}{edge})?"  # words first, or the value
    if len(values) == 1:
        join, tail = "", f"({edge}{words}{{0,{_TAIL_CHARS}}})?[.!]?"
    else:
        # Several values (a swarm's synthesis) are a list: "391, 1024", "391 and 1024."
        # Free words between or after them read as junk ("391, Report both:1024.").
        join, tail = "(, | and |, and |; | )", "[.!]?"
    literals = [
        "".join(c if c.isalnum() or c in " :,/%-" else f"[{c}]" for c in value) for value in values
    ]
    return f"^{lead}{join.join(literals)}{tail}$"


_LEAD_CHARS = 20
_TAIL_CHARS = 16


def answer_schema(values: Sequence[str] = ()) -> dict[str, Any]:
    """The schema of `{"answer": text}` whose text quotes `values` (see `quoting_pattern`)."""
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "pattern": quoting_pattern(values)}},
        "required": ["answer"],
    }


def answer_text(text: str) -> str:
    """The answer in a reply to `answer_schema` (salvaged when cut off; else the text)."""
    value = _json_object(text.strip())
    if value is not None and isinstance(value.get("answer"), str):
        return str(value["answer"])
    cut = _TRUNCATED_ANSWER.match(text.strip())
    return _salvage(cut.group(1), None) if cut is not None else text


def _short_result(content: str) -> str | None:
    """A tool result that is one short, plain value ("391", "12:00 UTC").

    Unwrapped from its untrusted-output block: it is too short to hold instructions.
    """
    text = unwrap_untrusted(content).strip()
    return text if _GROUNDABLE.fullmatch(text) else None


def messages(request: ModelRequest, turn: Turn | None = None) -> list[dict[str, Any]]:
    """The conversation in protocol form (OpenAI message dicts, no tool roles)."""
    out: list[dict[str, Any]] = []
    protocol = instructions(request, turn)
    question = ""
    # The next part of a request with several, when the model is to call for it.
    ends_with_result = bool(request.messages) and request.messages[-1].role == "tool"
    pending = ranking_query(request) if ends_with_result else None
    for message in request.messages:
        if message.role == "system":
            out.append(
                {"role": "system", "content": f"{message.content or ''}\n\n{protocol}".strip()}
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
            # Restating the question keeps a small model on it after a long result.
            out.append(
                {
                    "role": "user",
                    "content": f"Result of {message.name or 'the tool'}: "
                    + (_short_result(message.content or "") or message.content or "")
                    + (
                        f"\nNow: {pending}"
                        if pending is not None and message is request.messages[-1]
                        else f"\nUse it to answer: {question}"
                        if question
                        else ""
                    ),
                }
            )
        else:
            question = focus(message.content or "", request.tools)
            out.append({"role": message.role, "content": message.content or ""})
    last = out[-1] if out else None
    if turn is not None and turn.mode == "call" and last is not None and last["role"] == "user":
        # A long task description buries the request, and a small model fills arguments
        # from whatever it read last: the call step sees the request alone.
        last["content"] = question
    if not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": protocol})
    return out


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def focus(text: str, tools: Sequence[ToolSchema]) -> str:
    """The request in a user message.

    All of a short message; in a long one (a task with its context), the first sentence
    that names a tool, else the first sentence.
    """
    if len(text) <= _SHORT_QUESTION:
        return _one_line(text, _SHORT_QUESTION)
    sentences = [
        s.strip() for s in _SENTENCE.findall(text) if s.strip() and not s.strip().endswith(":")
    ]
    for sentence in sentences:
        if any(_mention(tool, sentence) >= 0 for tool in tools):
            return _one_line(sentence, _SHORT_QUESTION)
    return _one_line(sentences[0] if sentences else text, _SHORT_QUESTION)


def decode(message: ChatMessage, request: ModelRequest) -> ChatMessage:
    """The model's JSON reply as a normal assistant message (a tool call or text)."""
    text = (message.content or "").strip()
    value = _json_object(text)
    if value is None:
        cut = _TRUNCATED_ANSWER.match(text)
        if cut is not None:  # the answer ran out of tokens: keep its complete sentences
            return ChatMessage(role="assistant", content=_salvage(cut.group(1), request))
        return message  # not JSON after all: keep it as the answer text
    call = _as_call(value, request)
    if call is not None:
        return call
    answer = value.get("answer")
    if isinstance(answer, str):
        # The model wrote the protocol into its answer: that is a call, not an answer.
        inner = _json_object(answer.strip())
        call = _as_call(inner, request) if inner is not None else None
        return call or ChatMessage(role="assistant", content=answer)
    return message


_TRUNCATED_ANSWER = re.compile(r'^\{\s*"answer"\s*:\s*"(.*)$', re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def _salvage(text: str, request: ModelRequest | None) -> str:
    """The useful start of an answer that was cut off.

    The sentences up to the one that quotes the tool result (when it must), else the
    complete sentences (the first when there are none).
    """
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    if not sentences:
        return text.strip()
    result = grounding(request) if request is not None else None
    if result is not None:
        for i, sentence in enumerate(sentences):
            if result in sentence:
                return " ".join(sentences[: i + 1])
    complete = [s for s in sentences if s[-1] in ".!?"]
    return " ".join(complete[:3]) if complete else sentences[0]


def is_protocol_fragment(message: ChatMessage) -> bool:
    """An answer that is a broken piece of the JSON protocol rather than words for a person."""
    text = (message.content or "").strip()
    return not message.tool_calls and bool(_FRAGMENT.match(text))


_FRAGMENT = re.compile(r'^[{\[]\s*"?(tool|arguments|answer)"?\s*:', re.IGNORECASE)


def is_repeat(message: ChatMessage, request: ModelRequest) -> bool:
    """Whether the reply repeats, with the same arguments, a call made earlier this turn."""
    if not message.tool_calls:
        return False
    earlier: set[tuple[str, str]] = set()
    for m in reversed(request.messages):
        if m.role == "user":
            break
        earlier.update((c.name, _canonical(c.arguments)) for c in m.tool_calls)
    return all((c.name, _canonical(c.arguments)) in earlier for c in message.tool_calls)


def _as_call(value: dict[str, Any], request: ModelRequest) -> ChatMessage | None:
    names = {tool.name for tool in request.tools}
    if not (isinstance(value.get("tool"), str) and value["tool"] in names):
        return None
    arguments = value.get("arguments", {})
    return ChatMessage(
        role="assistant",
        tool_calls=[
            ToolCallRequest(id="call_0", name=value["tool"], arguments=json.dumps(arguments))
        ],
    )


def _json_object(text: str) -> dict[str, Any] | None:
    # strict=False: a grammar-constrained reply may hold raw newlines inside strings.
    try:
        value = json.loads(text, strict=False)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
