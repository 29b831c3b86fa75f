"""The tool framework: definitions, errors, argument parsing, registry and dispatch.

The built-in code tools (`calculator`, `get_time`) are in activities/tools/builtins.py.

A tool is a `ToolDefinition`: a name, a description and a JSON Schema the model sees
(`ToolDefinition.schema()`), plus a handler that turns validated arguments into the text
the model reads next. `run_tool` is the one dispatch path:

    registry.get(name) -> parse_arguments(tool, raw JSON) -> handler(args, ctx) -> str

Every failure on that path is a `ToolError` whose message is written for the model, so
it can correct itself on the next turn:

    ToolError                   base; `error_type` is the `ApplicationError.type` to use
    ├── UnknownToolError        the model named a tool that does not exist  (UnknownTool)
    ├── BadToolArgumentsError   arguments are not JSON, not an object, or break the schema,
    │                           or the tool rejected them before doing anything
    │                                                                       (BadToolArguments)
    └── ToolExecutionError      the tool ran and failed (division by zero, a bug...)
                                                                            (TOOL_FAILED)

None of them is retryable by Temporal: the same call would fail the same way.
"""

import copy
import difflib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from jsonschema import Draft202012Validator, ValidationError

from core.errors import ErrorType
from core.payloads import ToolCallRequest, ToolSchema
from core.tools.builtins import BuiltinTool

TOOL_FAILED: Final = ErrorType.TOOL_FAILED

MAX_ARGUMENTS_CHARS: Final = 100_000
"""Longest raw argument text `parse_arguments` accepts."""


# -- errors --------------------------------------------------------------------------


class ToolError(Exception):
    """A tool call failed; `message` is meant for the model and never holds a traceback."""

    error_type: ErrorType = TOOL_FAILED

    def __init__(self, message: str, *, error_type: ErrorType | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_type is not None:
            self.error_type = error_type

    @property
    def retryable(self) -> bool:
        """Whether Temporal should retry the activity (never, for the built-in types)."""
        return self.error_type.retryable


class UnknownToolError(ToolError):
    """The model asked for a tool that is not registered."""

    error_type = ErrorType.UNKNOWN_TOOL


class BadToolArgumentsError(ToolError):
    """The arguments are malformed, break the schema, or were refused by the tool."""

    error_type = ErrorType.BAD_TOOL_ARGUMENTS


class ToolExecutionError(ToolError):
    """The tool accepted its arguments, ran, and failed."""

    error_type = TOOL_FAILED


# -- definitions ---------------------------------------------------------------------


@dataclass(frozen=True)
class ToolContext:
    """What a handler knows about the call besides its arguments.

    `now` is the caller's deterministic clock (e.g. `workflow.now()` carried into the
    activity); tools use it instead of reading a clock. It must be timezone-aware.
    """

    tenant_id: str
    run_id: str
    step: int
    now: datetime

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("ToolContext.now must be timezone-aware")


ToolHandler = Callable[[dict[str, Any], ToolContext], Awaitable[str] | str]
"""Turns validated arguments into the (compact) text the model sees."""

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what every provider accepts


@dataclass(frozen=True)
class ToolDefinition:
    """A tool: what the model is told about it and the handler that runs it.

    `parameters` is a JSON Schema (draft 2020-12) for an object; the built-in tools set
    `additionalProperties: false`. `side_effects` is True when a call changes something
    outside the run (the full tool system gates those behind policies and idempotency).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    side_effects: bool
    handler: ToolHandler
    examples: tuple[str, ...] = ()
    """Requests the tool serves, e.g. "What is 17 * 23?" (the local model's tools are ranked by them)."""
    _validator: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _TOOL_NAME.fullmatch(self.name):
            raise ValueError(f"tool name {self.name!r} must match {_TOOL_NAME.pattern}")
        if self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be a schema of type object")
        Draft202012Validator.check_schema(self.parameters)
        object.__setattr__(self, "_validator", Draft202012Validator(self.parameters))

    @classmethod
    def serving(cls, tool: BuiltinTool, handler: ToolHandler) -> "ToolDefinition":
        """A built-in tool (as `core.tools.builtins` describes it) run by `handler`."""
        return cls(
            name=tool.name, description=tool.description, parameters=tool.parameters,
            side_effects=tool.side_effects, handler=handler, examples=tool.examples,
        )  # fmt: skip

    def schema(self) -> ToolSchema:
        """What the model is told about this tool."""
        return ToolSchema(
            name=self.name,
            description=self.description,
            parameters=copy.deepcopy(self.parameters),
            examples=list(self.examples),
        )


# -- argument parsing ----------------------------------------------------------------


def parse_arguments(tool: ToolDefinition, raw: str) -> dict[str, Any]:
    """Parse and validate the model's JSON arguments for `tool`.

    Valid JSON is taken as written. Only text that does not parse gets light repairs
    for common small-model slips: blank text meaning `{}`, a Markdown code fence or
    prose around the object, trailing commas, Python-style quotes and
    True/False/None. The result is validated against the tool's schema and every
    violation is reported in one message; top-level defaults from the schema are
    filled in.

    Raises:
        BadToolArgumentsError: with a message the model can act on.
    """
    if len(raw) > MAX_ARGUMENTS_CHARS:
        raise BadToolArgumentsError(
            f"Arguments for tool '{tool.name}' are too long ({len(raw)} characters; "
            f"the limit is {MAX_ARGUMENTS_CHARS})."
        )
    data = _load_json(tool, raw)
    if not isinstance(data, dict):
        hint = ""
        if isinstance(data, str) and data.lstrip().startswith("{"):
            hint = " Send the object itself, not a JSON-encoded string of it."
        raise BadToolArgumentsError(
            f"Arguments for tool '{tool.name}' must be a JSON object, got "
            f"{_json_type(data)}.{hint} Expected: {_example(tool.parameters)}"
        )
    problems = _violations(tool._validator, data)
    if problems:
        raise BadToolArgumentsError(
            f"Invalid arguments for tool '{tool.name}': {'; '.join(problems)}. "
            f"Expected: {_example(tool.parameters)}"
        )
    for name, prop in tool.parameters.get("properties", {}).items():
        if name not in data and isinstance(prop, dict) and "default" in prop:
            data[name] = copy.deepcopy(prop["default"])
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use a number or null)")


def _strict_loads(text: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON does not.
    return json.loads(text, parse_constant=_reject_constant)


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```$", re.DOTALL)


def _load_json(tool: ToolDefinition, raw: str) -> Any:
    text = raw.strip()
    if not text:
        return {}
    try:
        return _strict_loads(text)
    except RecursionError:
        raise BadToolArgumentsError(
            f"Arguments for tool '{tool.name}' are nested too deeply."
        ) from None
    except ValueError as exc:
        first_error = exc
    for candidate in _repair_candidates(text):
        try:
            return _strict_loads(candidate)
        except (ValueError, RecursionError):
            continue
    raise BadToolArgumentsError(
        f"Arguments for tool '{tool.name}' are not valid JSON: "
        f"{_describe_json_error(first_error, text)}. "
        f"Send a single JSON object such as {_example(tool.parameters)}"
    )


def _repair_candidates(text: str) -> Iterable[str]:
    """Repaired versions of text that failed to parse, mildest first."""
    bases = [text]
    fenced = _FENCE.match(text)
    if fenced:
        bases.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        bases.append(text[start : end + 1])
    seen: set[str] = {text}
    for base in bases:
        for candidate in (
            base,
            _repair_tokens(base, single_quotes=False),
            _repair_tokens(base, single_quotes=True),
        ):
            if candidate is not None and candidate not in seen:
                seen.add(candidate)
                yield candidate


_PY_CONSTANTS = {"True": "true", "False": "false", "None": "null"}


def _repair_tokens(text: str, *, single_quotes: bool) -> str | None:
    """Drop trailing commas and map True/False/None, outside strings only.

    With `single_quotes`, '...' strings are lexed the way Python reads them and
    re-emitted as JSON strings. Returns None when a string is unterminated.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"' or (single_quotes and ch == "'"):
            j = i + 1
            buf = ['"']
            while j < n and text[j] != ch:
                if text[j] == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    buf.append("'" if (ch == "'" and nxt == "'") else text[j : j + 2])
                    j += 2
                    continue
                buf.append('\\"' if text[j] == '"' else text[j])
                j += 1
            if j >= n:
                return None
            buf.append('"')
            out.append("".join(buf))
            i = j + 1
        elif ch == ",":
            k = i + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            if k >= n or text[k] not in "}]":
                out.append(ch)
            i += 1
        elif ch.isalpha() or ch == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            out.append(_PY_CONSTANTS.get(word, word))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _describe_json_error(exc: ValueError, text: str) -> str:
    if isinstance(exc, json.JSONDecodeError):
        near = text[max(0, exc.pos - 20) : exc.pos + 20]
        return f"{exc.msg} at line {exc.lineno} column {exc.colno} (near {near!r})"
    return str(exc)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _compact(value: Any, limit: int = 60) -> str:
    return clip(json.dumps(value, ensure_ascii=False, default=str), limit)


def clip(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters (with "..."), for quoting input in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PLACEHOLDERS: dict[str, Any] = {
    "string": "...",
    "number": 0,
    "integer": 0,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


def _example(schema: dict[str, Any]) -> str:
    """A skeleton of the arguments: the required fields, or all of them if none are."""
    props: dict[str, Any] = schema.get("properties", {})
    names = schema.get("required") or list(props)
    example: dict[str, Any] = {}
    for name in names:
        prop = props.get(name, {})
        kind = prop.get("type", "string") if isinstance(prop, dict) else "string"
        if isinstance(kind, list):
            kind = kind[0] if kind else "string"
        example[name] = _PLACEHOLDERS.get(kind, "...")
    return json.dumps(example)


def _field(path: Iterable[str | int], name: str | None = None) -> str:
    text = ""
    for part in [*path, *([name] if name is not None else [])]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}

_MAX_REPORTED = 10


def _violations(validator: Any, data: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    error: ValidationError
    for error in validator.iter_errors(data):
        path = list(error.absolute_path)
        where = _field(path)
        instance = error.instance
        if error.validator == "required" and isinstance(instance, dict):
            for name in error.validator_value:
                if name not in instance:
                    problems.append(f"missing required field '{_field(path, name)}'")
        elif error.validator == "additionalProperties" and isinstance(instance, dict):
            allowed = list(error.schema.get("properties", {}))
            patterns = list(error.schema.get("patternProperties", {}))
            extras = [
                k
                for k in instance
                if k not in allowed and not any(re.search(p, k) for p in patterns)
            ]
            listed = ", ".join(f"'{_field(path, k)}'" for k in extras)
            noun = "field" if len(extras) == 1 else "fields"
            problems.append(f"unexpected {noun} {listed} (allowed: {', '.join(allowed) or 'none'})")
        elif error.validator == "type":
            expected = error.validator_value
            kinds = expected if isinstance(expected, list) else [expected]
            wanted = " or ".join(_TYPE_NAMES.get(str(k), str(k)) for k in kinds)
            problems.append(
                f"field '{where or '(arguments)'}' must be {wanted}, got "
                f"{_json_type(instance)} {_compact(instance)}"
            )
        elif error.validator == "pattern" and isinstance(error.schema.get("description"), str):
            # The field's own description tells the model what to write; a regex does not.
            problems.append(
                f"field '{where}' cannot be {_compact(instance)}: it must be only "
                f"{clip(error.schema['description'], 120)}"
            )
        else:
            message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
            problems.append(f"field '{where or '(arguments)'}': {message}")
    # `required` lists every missing name on each of its errors; report each once.
    unique = list(dict.fromkeys(problems))
    if len(unique) > _MAX_REPORTED:
        unique = [*unique[:_MAX_REPORTED], f"and {len(unique) - _MAX_REPORTED} more"]
    return unique


# -- registry and dispatch -----------------------------------------------------------


class ToolRegistry(Protocol):
    """Where `run_tool` looks tools up; the full tool system adds other implementations."""

    def get(self, name: str) -> ToolDefinition:
        """The tool called `name`; raises `UnknownToolError` naming the available tools."""
        ...

    def has(self, name: str) -> bool:
        """Whether a tool called `name` is registered."""
        ...

    def schemas(self, names: Sequence[str]) -> list[ToolSchema]:
        """What the model is told about the named tools, in the order given."""
        ...


class StaticToolRegistry:
    """A `ToolRegistry` over a fixed set of tool definitions."""

    def __init__(self, tools: Iterable[ToolDefinition]) -> None:
        self._tools: dict[str, ToolDefinition] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"duplicate tool name {tool.name!r}")
            self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def has(self, name: str) -> bool:
        """Whether a tool called `name` is registered."""
        return name in self._tools

    def get(self, name: str) -> ToolDefinition:
        """The tool called `name`; raises `UnknownToolError` naming the available tools."""
        tool = self._tools.get(name)
        if tool is None:
            raise UnknownToolError(_unknown_tool_message(name, self.names))
        return tool

    def schemas(self, names: Sequence[str]) -> list[ToolSchema]:
        """What the model is told about the named tools, in the order given, once each."""
        return [self.get(name).schema() for name in dict.fromkeys(names)]


def _unknown_tool_message(name: str, available: Sequence[str]) -> str:
    message = f"Unknown tool '{clip(name)}'."
    close = difflib.get_close_matches(name, available, n=1)
    if close:
        message += f" Did you mean '{close[0]}'?"
    listed = ", ".join(available) if available else "none"
    return f"{message} Available tools: {listed}."


async def run_tool(registry: ToolRegistry, call: ToolCallRequest, ctx: ToolContext) -> str:
    """Run one tool call and return the text the model sees.

    Raises:
        ToolError: for an unknown tool, bad arguments, or a failing tool. Unexpected
            exceptions from a handler are wrapped in a `ToolExecutionError` that names
            only the exception type: their text may hold paths or secrets.
    """
    tool = registry.get(call.name)
    arguments = parse_arguments(tool, call.arguments)
    try:
        result: Any = tool.handler(arguments, ctx)
        if inspect.isawaitable(result):
            result = await result
    except ToolError:
        raise
    except Exception as exc:
        raise ToolExecutionError(
            f"Tool '{tool.name}' failed with an internal error ({type(exc).__name__}). "
            "Your arguments were accepted; retrying the same call will not help."
        ) from exc
    if not isinstance(result, str):
        raise ToolExecutionError(
            f"Tool '{tool.name}' failed with an internal error (it returned "
            f"{type(result).__name__}, not text)."
        )
    return result
