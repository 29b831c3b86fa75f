"""Built-in tools of the agent loop, and the registry/dispatch interface every tool uses.

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

import ast
import copy
import difflib
import functools
import inspect
import json
import math
import re
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from jsonschema import Draft202012Validator, ValidationError

from core.errors import ErrorType
from core.runs.payloads import ToolCallRequest, ToolSchema

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
    """Requests the tool serves, e.g. "What is 17 * 23?" (json_tools ranks tools by them)."""
    _validator: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _TOOL_NAME.fullmatch(self.name):
            raise ValueError(f"tool name {self.name!r} must match {_TOOL_NAME.pattern}")
        if self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be a schema of type object")
        Draft202012Validator.check_schema(self.parameters)
        object.__setattr__(self, "_validator", Draft202012Validator(self.parameters))

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
    return _clip(json.dumps(value, ensure_ascii=False, default=str), limit)


def _clip(text: str, limit: int = 60) -> str:
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
                f"{_clip(error.schema['description'], 120)}"
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
    message = f"Unknown tool '{_clip(name)}'."
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


# -- calculator ----------------------------------------------------------------------

MAX_EXPRESSION_CHARS: Final = 500
MAX_EXPRESSION_NODES: Final = 200
MAX_EXPRESSION_DEPTH: Final = 50
MAX_INT_DIGITS: Final = 400  # 170! has 307 digits
MAX_FACTORIAL: Final = 170  # the largest n whose n! is still a finite float
_INT_LIMIT: Final = 10**MAX_INT_DIGITS


class _CalcRejected(Exception):
    """The expression is not something the calculator accepts (nothing was computed)."""


class _CalcFailed(Exception):
    """The expression is acceptable but has no (representable) value."""


def _factorial(x: int | float) -> int:
    if isinstance(x, float):
        if not x.is_integer():
            raise _CalcFailed("factorial() needs a whole number")
        x = int(x)
    if x < 0:
        raise _CalcFailed("factorial() is not defined for negative numbers")
    if x > MAX_FACTORIAL:
        raise _CalcFailed(f"factorial() argument must be at most {MAX_FACTORIAL}")
    return math.factorial(x)


def _round(x: int | float, ndigits: int | float | None = None) -> int | float:
    if ndigits is None:
        return round(x)
    if isinstance(ndigits, float):
        if not ndigits.is_integer():
            raise _CalcFailed("round() needs a whole number of digits")
        ndigits = int(ndigits)
    if abs(ndigits) > MAX_INT_DIGITS:
        raise _CalcFailed(f"round() digits must be between -{MAX_INT_DIGITS} and {MAX_INT_DIGITS}")
    return round(x, ndigits)


def _log(x: int | float, base: int | float | None = None) -> float:
    if x <= 0:
        raise _CalcFailed("log() is only defined for positive numbers")
    if base is None:
        return math.log(x)
    if base <= 0 or base == 1:
        raise _CalcFailed("log() base must be positive and not 1")
    return math.log(x, base)


def _sqrt(x: int | float) -> float:
    if x < 0:
        raise _CalcFailed("sqrt() of a negative number is not a real number")
    return math.sqrt(x)


def _min(*args: int | float) -> int | float:
    return min(args)


def _max(*args: int | float) -> int | float:
    return max(args)


# name -> (function, min args, max args or None for any number)
_FUNCTIONS: Final[dict[str, tuple[Callable[..., int | float], int, int | None]]] = {
    "sqrt": (_sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "min": (_min, 1, None),
    "max": (_max, 1, None),
    "hypot": (math.hypot, 1, None),
    "factorial": (_factorial, 1, 1),
}
_CONSTANTS: Final[dict[str, float]] = {"pi": math.pi, "e": math.e, "tau": math.tau}

_SUPPORTED = (
    "Use numbers, + - * / // % ** and parentheses, the functions "
    f"{', '.join(_FUNCTIONS)} and the constants {', '.join(_CONSTANTS)}."
)

_BINARY_HINTS: Final[dict[type[ast.operator], str]] = {
    ast.BitXor: "'^' is not supported; use ** for powers",
    ast.BitAnd: "'&' is not supported",
    ast.BitOr: "'|' is not supported",
    ast.LShift: "'<<' is not supported",
    ast.RShift: "'>>' is not supported",
    ast.MatMult: "'@' is not supported",
}

_NODE_HINTS: Final[dict[type[ast.AST], str]] = {
    ast.Attribute: "attribute access ('.') is not allowed",
    ast.Lambda: "lambda expressions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Compare: "comparisons are not supported",
    ast.BoolOp: "'and'/'or' are not supported",
    ast.IfExp: "conditional expressions are not supported",
    ast.Subscript: "indexing ('[...]') is not allowed",
    ast.Tuple: "tuples are not allowed (write numbers without thousands separators: 1000, not 1,000)",
    ast.List: "lists are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.JoinedStr: "strings are not allowed; only numbers",
    ast.NamedExpr: "assignments are not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Await: "'await' is not allowed",
}

# A number glued to one of these keywords makes the parser emit a SyntaxWarning
# ("invalid decimal literal"); none of them is valid in an expression we accept.
_KEYWORD = re.compile(r"(?<![A-Za-z_])(and|or|not|if|else|for|in|is)(?![A-Za-z0-9_])")
_KEYWORD_HINTS: Final[dict[str, str]] = {
    "and": "'and'/'or'/'not' are not supported",
    "or": "'and'/'or'/'not' are not supported",
    "not": "'and'/'or'/'not' are not supported",
    "if": "conditional expressions are not supported",
    "else": "conditional expressions are not supported",
    "for": "comprehensions are not allowed",
    "in": "comparisons are not supported",
    "is": "comparisons are not supported",
}
# Typographic operators, and line breaks (which end an expression outside parentheses).
_LOOKALIKES = str.maketrans({"×": "*", "÷": "/", "−": "-", "\n": " ", "\r": " ", "\t": " "})  # noqa: RUF001


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression safely (no eval) and format the result.

    Raises:
        BadToolArgumentsError: the expression is malformed, too big, or uses anything
            outside the allowed operators, functions and constants.
        ToolExecutionError: it has no real, representable value (division by zero,
            a math domain error, a result that is too large).
    """
    expr = expression.translate(_LOOKALIKES).strip()
    try:
        tree = _parse_expression(expr)
    except _CalcRejected as exc:
        raise BadToolArgumentsError(f"Expression not accepted: {exc}. {_SUPPORTED}") from None
    try:
        value = _evaluate(tree.body)
    except _CalcFailed as exc:
        raise ToolExecutionError(f"Could not evaluate the expression: {exc}.") from None
    except ZeroDivisionError:
        raise ToolExecutionError("Could not evaluate the expression: division by zero.") from None
    except OverflowError:
        raise ToolExecutionError(
            "Could not evaluate the expression: the result is too large."
        ) from None
    except ValueError:
        raise ToolExecutionError(
            "Could not evaluate the expression: math domain error (a function was given a "
            "value outside the range where it is defined)."
        ) from None
    return _format_number(value)


def _parse_expression(expr: str) -> ast.Expression:
    if not expr:
        raise _CalcRejected("the expression is empty")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise _CalcRejected(
            f"the expression is too long ({len(expr)} characters; the limit is "
            f"{MAX_EXPRESSION_CHARS}); split it into smaller calculations"
        )
    # Checked before parsing: both make the parser emit warnings.
    if "\\" in expr:
        raise _CalcRejected("backslashes are not allowed (strings are not supported)")
    keyword = _KEYWORD.search(expr)
    if keyword:
        raise _CalcRejected(_KEYWORD_HINTS[keyword.group(1)])
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        where = f" at position {exc.offset}" if exc.offset else ""
        raise _CalcRejected(f"syntax error{where}: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError):
        raise _CalcRejected("the expression could not be parsed") from None
    _check_tree(tree, expr)
    return tree


def _check_tree(tree: ast.Expression, source: str) -> None:
    """Reject anything outside the allow-list before computing anything."""
    nodes = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_EXPRESSION_NODES:
            raise _CalcRejected(
                f"the expression is too complex (more than {MAX_EXPRESSION_NODES} terms)"
            )
        if depth > MAX_EXPRESSION_DEPTH:
            raise _CalcRejected(
                f"the expression is nested too deeply (more than {MAX_EXPRESSION_DEPTH} levels)"
            )
        _check_node(node, source)
        if isinstance(node, ast.BinOp):
            stack += [(node.left, depth + 1), (node.right, depth + 1)]
        elif isinstance(node, ast.UnaryOp):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, ast.Call):
            stack += [(arg, depth + 1) for arg in node.args]


def _check_node(node: ast.AST, source: str) -> None:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or value is None:
            raise _CalcRejected(f"{value!r} is not a number")
        if isinstance(value, complex):
            raise _CalcRejected("complex numbers are not supported")
        if isinstance(value, str | bytes):
            raise _CalcRejected("strings are not allowed; only numbers")
        if not isinstance(value, int | float):
            raise _CalcRejected(f"{ast.get_source_segment(source, node)!r} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise _CalcRejected(f"the number {ast.get_source_segment(source, node)} is too large")
        if isinstance(value, int) and abs(value) >= _INT_LIMIT:
            raise _CalcRejected(f"integers may have at most {MAX_INT_DIGITS} digits")
    elif isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise _CalcRejected(f"'{node.id}' is a function; call it like {node.id}(x)")
        if node.id not in _CONSTANTS:
            raise _CalcRejected(f"unknown name '{node.id}'")
    elif isinstance(node, ast.BinOp):
        hint = _BINARY_HINTS.get(type(node.op))
        if hint:
            raise _CalcRejected(hint)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.UAdd | ast.USub):
            raise _CalcRejected("'~' and 'not' are not supported")
    elif isinstance(node, ast.Call):
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Constant):
                raise _CalcRejected("a number cannot be called; write 2*(3), not 2(3)")
            inner = ast.get_source_segment(source, func) or "that"
            hint = _NODE_HINTS.get(type(func))
            raise _CalcRejected(hint or f"calling {inner!r} is not allowed; only named functions")
        if func.id not in _FUNCTIONS:
            raise _CalcRejected(f"unknown function '{func.id}'")
        if node.keywords:
            raise _CalcRejected(f"{func.id}() does not take keyword arguments")
        _, low, high = _FUNCTIONS[func.id]
        count = len(node.args)
        if count < low or (high is not None and count > high):
            wanted = (
                f"{low}"
                if low == high
                else (f"{low} or {high}" if high is not None else f"at least {low}")
            )
            raise _CalcRejected(f"{func.id}() takes {wanted} argument(s), got {count}")
    else:
        hint = _NODE_HINTS.get(type(node))
        raise _CalcRejected(hint or f"{type(node).__name__} expressions are not allowed")


Number = int | float


def _evaluate(node: ast.expr) -> Number:
    # _check_tree has vetted every node; only the allowed shapes reach here.
    if isinstance(node, ast.Constant):
        value = node.value
        assert isinstance(value, int | float)
        return value
    if isinstance(node, ast.Name):
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        return _checked(_binary(node.op, _evaluate(node.left), _evaluate(node.right)))
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        function = _FUNCTIONS[node.func.id][0]
        return _checked(function(*(_evaluate(arg) for arg in node.args)))
    raise _CalcFailed(f"unsupported expression {type(node).__name__}")  # pragma: no cover


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div):
        return left / right
    if isinstance(op, ast.FloorDiv):
        return left // right
    if isinstance(op, ast.Mod):
        return left % right
    if isinstance(op, ast.Pow):
        return _power(left, right)
    raise _CalcFailed(f"unsupported operator {type(op).__name__}")  # pragma: no cover


def _power(base: Number, exponent: Number) -> Number:
    if base == 0 and exponent < 0:
        raise _CalcFailed("division by zero (0 raised to a negative power)")
    if isinstance(base, int) and isinstance(exponent, int):
        if exponent < 0:
            return float(base) ** exponent
        # Estimate the size before computing: 9**9**9 must fail at once, not hang.
        if abs(base) > 1 and exponent * math.log10(abs(base)) > MAX_INT_DIGITS:
            raise _CalcFailed(f"the result would have more than {MAX_INT_DIGITS} digits")
        result: int = base**exponent
        return result
    if base < 0 and not float(exponent).is_integer():
        raise _CalcFailed("a negative number raised to a fractional power is not a real number")
    return math.pow(base, exponent)


def _checked(value: Number) -> Number:
    if isinstance(value, int):
        if abs(value) >= _INT_LIMIT:
            raise _CalcFailed(f"the result has more than {MAX_INT_DIGITS} digits")
    elif math.isnan(value):
        raise _CalcFailed("the result is undefined (not a number)")
    elif math.isinf(value):
        raise _CalcFailed("the result is too large")
    return value


def _format_number(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    text = format(value, ".15g")
    return "0" if text == "-0" else text


EXPRESSION_PATTERN = r"^[0-9A-Za-z_ .,+*/%()-]+$"
"""What a calculator expression is made of: numbers, names, operators, parentheses."""
EXPRESSION_GRAMMAR = r"^[0-9(-][0-9 .+*/%()-]*$"
"""The narrower form a small model is held to while it writes one (`x-grammar-pattern`):
numbers and operators only, so prose after the arithmetic ("17 * 23, result of...")
cannot continue it. It gives up names (sqrt, pi) for speed: one character class keeps
llama.cpp's grammar sampler fast; letters allowed only before "(" slowed it to a crawl
(over 120 s for one call on 2 cores)."""


EXPRESSION_IN_TEXT = r"[0-9(][0-9 .()]*(\*\*|[-+*/%])[0-9 .+*/%()-]*[0-9)]"
"""Arithmetic written out in a request ("17 * 23" in "What is 17 * 23?"): numbers joined
by operators. A small model is held to it when the request holds exactly one
(`json_tools.COPY_PATTERN`)."""


def _calculator(args: dict[str, Any], ctx: ToolContext) -> str:
    return calculate(args["expression"])


CALCULATOR = ToolDefinition(
    name="calculator",
    description=(
        "Evaluate an arithmetic expression and return the result. Supports numbers, "
        "+ - * / // % ** and parentheses; functions sqrt, sin, cos, tan, asin, acos, atan "
        "(radians), log(x) or log(x, base), log10, exp, abs, round(x) or round(x, digits), "
        "floor, ceil, min, max, hypot, factorial; constants pi, e, tau."
    ),
    parameters={
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The arithmetic expression, e.g. (1 + 2) * 3 / 4",
                "maxLength": MAX_EXPRESSION_CHARS,
                # Only what an expression can hold: a grammar built from the schema then
                # keeps a small model from writing JSON or prose into it.
                "pattern": EXPRESSION_PATTERN,
                "x-grammar-pattern": EXPRESSION_GRAMMAR,
                "x-copy-pattern": EXPRESSION_IN_TEXT,
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
    side_effects=False,
    handler=_calculator,
    examples=(
        "What is 17 * 23?",
        "Compute 2 ** 10",
        "What is the square root of 144?",
        "How much is 15% of 80?",
    ),
)


# -- get_time ------------------------------------------------------------------------

_ZONE_EXAMPLES: Final = "UTC, Europe/London, America/New_York, Asia/Tokyo"


@functools.cache
def _zone_names() -> dict[str, str]:
    """Lower-cased IANA name -> canonical spelling, from the system database."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def _resolve_zone(name: str) -> tuple[str, zoneinfo.ZoneInfo | None]:
    """(canonical name, zone); zone None means UTC without a time zone database."""
    try:
        return name, zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    known = _zone_names()
    if not known:
        if name.upper() == "UTC":
            return "UTC", None
        raise ToolExecutionError(
            "No time zone database is installed where the tool runs (install the system "
            "tzdata package or the tzdata wheel); only UTC is available."
        )
    canonical = known.get(name.strip().lower())
    if canonical is not None:
        return canonical, zoneinfo.ZoneInfo(canonical)
    close = difflib.get_close_matches(name, list(known.values()), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BadToolArgumentsError(
        f"Unknown time zone '{_clip(name)}'.{hint} Use an IANA name such as {_ZONE_EXAMPLES}."
    )


def _get_time(args: dict[str, Any], ctx: ToolContext) -> str:
    name, zone = _resolve_zone(args.get("timezone", "UTC"))
    local = ctx.now.astimezone(zone if zone is not None else UTC)
    return f"{local.isoformat(timespec='seconds')} {name} ({local.tzname()}, {local:%A})"


GET_TIME = ToolDefinition(
    name="get_time",
    description=(
        "Get the current date and time (ISO 8601) in a time zone, with the weekday. "
        f"timezone is an IANA name such as {_ZONE_EXAMPLES}; the default is UTC."
    ),
    parameters={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone name, e.g. Europe/Paris",
                "default": "UTC",
                "maxLength": 64,
            }
        },
        "additionalProperties": False,
    },
    side_effects=False,
    handler=_get_time,
    examples=("What time is it in Tokyo?", "What is today's date?", "What day is it in London?"),
)


BUILTIN = StaticToolRegistry([CALCULATOR, GET_TIME])
"""The tools every agent gets without configuration."""
