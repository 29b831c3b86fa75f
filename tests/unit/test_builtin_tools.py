"""Built-in tools, argument parsing, the static registry and `run_tool`."""

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from activities.tools.builtins import (
    BUILTIN,
    CALCULATOR,
    GET_TIME,
    calculate,
)
from activities.tools.framework import (
    BadToolArgumentsError,
    StaticToolRegistry,
    ToolContext,
    ToolDefinition,
    ToolError,
    ToolExecutionError,
    ToolRegistry,
    UnknownToolError,
    parse_arguments,
    run_tool,
)
from core.errors import ErrorType
from core.payloads import ToolCallRequest, ToolSchema
from core.tools.builtins import (
    EXPRESSION_GRAMMAR,
    EXPRESSION_IN_TEXT,
    EXPRESSION_PATTERN,
    MAX_EXPRESSION_CHARS,
)

NOW = datetime(2024, 7, 1, 12, 30, 15, 123456, tzinfo=UTC)  # a Monday
CTX = ToolContext(tenant_id="t1", run_id="run-1", step=3, now=NOW)


def call(name: str, arguments: str) -> str:
    return asyncio.run(
        run_tool(BUILTIN, ToolCallRequest(id="c1", name=name, arguments=arguments), CTX)
    )


def rejected(expression: str) -> str:
    with pytest.raises(BadToolArgumentsError) as info:
        calculate(expression)
    assert info.value.error_type is ErrorType.BAD_TOOL_ARGUMENTS
    return info.value.message


def failed(expression: str) -> str:
    with pytest.raises(ToolExecutionError) as info:
        calculate(expression)
    assert not info.value.retryable
    return info.value.message


# -- calculator: results ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("10 - 4 - 3", "3"),  # left-associative
        ("2 ** 3 ** 2", "512"),  # right-associative
        ("-2 ** 2", "-4"),  # ** binds tighter than unary minus
        ("(-2) ** 2", "4"),
        ("--3", "3"),
        ("+-+3", "-3"),
        ("7 / 2", "3.5"),
        ("6 / 2", "3"),  # a whole float prints without ".0"
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("-7 % 3", "2"),
        ("7.5 % 2", "1.5"),
        ("2 ** -2", "0.25"),
        ("4 ** 0.5", "2"),
        ("(-8) ** 3.0", "-512"),
        ("0.1 + 0.2", "0.3"),  # no float noise
        ("1 / 3", "0.333333333333333"),
        ("1e16", "1e+16"),
        ("1.5e3", "1500"),
        ("1_000 * 3", "3000"),
        ("-0.0", "0"),
        ("2 ** 100", str(2**100)),  # ints stay exact
        ("pi", "3.14159265358979"),
        ("e", "2.71828182845905"),
        ("tau / 2 - pi", "0"),
        ("sqrt(16)", "4"),
        ("sqrt(2)", "1.4142135623731"),
        ("sin(pi / 2)", "1"),
        ("cos(0)", "1"),
        ("tan(0)", "0"),
        ("asin(1) * 2 - pi", "0"),
        ("acos(1)", "0"),
        ("atan(1) * 4 - pi", "0"),
        ("log(e)", "1"),
        ("log(8, 2)", "3"),
        ("log10(1000)", "3"),
        ("exp(0)", "1"),
        ("abs(-3)", "3"),
        ("abs(-2.5)", "2.5"),
        ("round(2.567, 2)", "2.57"),
        ("round(2.5)", "2"),  # banker's rounding, as Python does
        ("round(1234, -2)", "1200"),
        ("floor(-2.5)", "-3"),
        ("ceil(2.1)", "3"),
        ("min(3, 1, 2)", "1"),
        ("max(3, 1.5)", "3"),
        ("min(7)", "7"),
        ("hypot(3, 4)", "5"),
        ("factorial(5)", "120"),
        ("factorial(5.0)", "120"),
        ("factorial(0)", "1"),
        ("sqrt(3**2 + 4**2) * (2 + 3) / 5", "5"),
        ("  1 +\n 2  ", "3"),
        ("6 × 7 ÷ 2 − 1", "20"),  # typographic operators  # noqa: RUF001
    ],
)
def test_calculator_computes(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


def test_factorial_170_is_the_largest_and_stays_exact() -> None:
    assert calculate("factorial(170)") == str(math.factorial(170))


# -- calculator: rejections (nothing is computed) ----------------------------------------


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os').system('id')", "attribute access"),
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__", "unknown name '__import__'"),
        ("x + 1", "unknown name 'x'"),
        ("().__class__", "attribute access"),
        ("(1).real", "attribute access"),
        ("().__class__.__bases__[0]", "indexing"),
        ("(lambda: 1)()", "lambda"),
        ("lambda: 1", "lambda"),
        ("[x for x in (1, 2)]", "comprehensions"),
        ("sum(x for x in (1, 2))", "comprehensions"),
        ("sum(1, 2)", "unknown function 'sum'"),
        ("'abc'", "strings are not allowed"),
        ("b'abc'", "strings are not allowed"),
        ('f"{1}"', "strings are not allowed"),
        ('"\\d"', "backslashes"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("eval('1')", "unknown function 'eval'"),
        ("pow(2, 3)", "unknown function 'pow'"),
        ("sqrt", "'sqrt' is a function"),
        ("sqrt(1, 2)", "sqrt() takes 1 argument(s), got 2"),
        ("log()", "log() takes 1 or 2 argument(s), got 0"),
        ("max()", "max() takes at least 1 argument(s), got 0"),
        ("round(2.5, ndigits=1)", "keyword arguments"),
        ("max(*[1, 2])", "unpacking"),
        ("1j", "complex numbers"),
        ("True + 1", "True is not a number"),
        ("None", "None is not a number"),
        ("...", "not a number"),
        ("1e999", "too large"),
        ("2 ^ 3", "use ** for powers"),
        ("6 & 3", "'&' is not supported"),
        ("1 << 3", "'<<' is not supported"),
        ("~1", "'~'"),
        ("not 1", "'not'"),
        ("1 < 2", "comparisons"),
        ("1 if 2 else 3", "conditional"),
        ("1if 2 else 3", "conditional"),  # would make the parser warn
        ("1 or 2", "'or'"),
        ("1,000", "thousands separators"),
        ("[1, 2]", "lists"),
        ("{1: 2}", "dicts"),
        ("(y := 2)", "assignments"),
        ("2(3)", "write 2*(3)"),
        ("2 +", "syntax error"),
        ("2x", "syntax error"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_calculator_rejects(expression: str, fragment: str) -> None:
    message = rejected(expression)
    assert fragment in message
    assert message.startswith("Expression not accepted:")
    assert "sqrt" in message and "pi" in message  # says what is allowed
    assert "Traceback" not in message


def test_calculator_rejects_long_expressions() -> None:
    ok = "1" + "+1" * ((MAX_EXPRESSION_CHARS - 1) // 2 - 1)
    assert len(ok) <= MAX_EXPRESSION_CHARS
    with pytest.raises(BadToolArgumentsError, match="nested too deeply"):
        calculate(ok)  # within the length limit, but a 250-deep chain of additions
    message = rejected("1" * (MAX_EXPRESSION_CHARS + 1))
    assert f"the limit is {MAX_EXPRESSION_CHARS}" in message


def test_calculator_rejects_deep_nesting() -> None:
    assert "nested too deeply" in rejected("-" * 150 + "1")
    assert "nested too deeply" in rejected("(1+" * 120 + "1" + ")" * 120)
    assert "nested too deeply" in rejected("abs(" * 60 + "1" + ")" * 60)


def test_calculator_rejects_too_many_terms() -> None:
    assert "too complex" in rejected("max(" + ",".join(["1"] * 240) + ")")


def test_calculator_rejects_parser_limits() -> None:
    # CPython refuses more than 200 nested parentheses; we report it as a syntax error.
    assert "syntax error" in rejected("(" * 201 + "1" + ")" * 201)


# -- calculator: evaluation failures --------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("5.0 // 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("9 ** 9 ** 9", "more than 400 digits"),
        ("2 ** 10 ** 100", "more than 400 digits"),
        ("10 ** 400", "more than 400 digits"),
        ("10 ** 399 * 10", "more than 400 digits"),
        ("factorial(1000)", "at most 170"),
        ("factorial(171)", "at most 170"),
        ("factorial(-1)", "negative"),
        ("factorial(2.5)", "whole number"),
        ("sqrt(-1)", "not a real number"),
        ("log(0)", "positive numbers"),
        ("log(-5)", "positive numbers"),
        ("log(8, 1)", "base"),
        ("log10(0)", "domain"),
        ("asin(2)", "domain"),
        ("acos(-1.5)", "domain"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("exp(1000)", "too large"),
        ("1e308 * 10", "too large"),
        ("2.0 ** 10000", "too large"),
        ("10 ** 399 / 1e-300", "too large"),
        ("round(5, -10 ** 9)", "digits"),
        ("round(1.5, 0.5)", "whole number"),
    ],
)
def test_calculator_fails_cleanly(expression: str, fragment: str) -> None:
    message = failed(expression)
    assert fragment in message
    assert message.startswith("Could not evaluate the expression:")


def test_calculator_blowups_fail_fast() -> None:
    started = time.perf_counter()
    for expression in ("9**9**9", "2**10**100", "(10**399)**(10**399)", "round(5, -10**9)"):
        with pytest.raises(ToolError):
            calculate(expression)
    # Computed, any of them would take minutes; refused, they take microseconds. The
    # bound is loose because this machine is noisy.
    assert time.perf_counter() - started < 5


def test_calculator_schema_and_flags() -> None:
    assert CALCULATOR.side_effects is False
    assert CALCULATOR.parameters["required"] == ["expression"]
    assert CALCULATOR.parameters["additionalProperties"] is False


# -- get_time ---------------------------------------------------------------------------


def test_get_time_defaults_to_utc_from_the_context_clock() -> None:
    assert call("get_time", "{}") == "2024-07-01T12:30:15+00:00 UTC (UTC, Monday)"
    assert call("get_time", "") == "2024-07-01T12:30:15+00:00 UTC (UTC, Monday)"


def test_get_time_in_another_zone() -> None:
    assert call("get_time", '{"timezone": "Europe/Paris"}') == (
        "2024-07-01T14:30:15+02:00 Europe/Paris (CEST, Monday)"
    )
    # Crosses the date line: already Tuesday in Tokyo at 21:00 UTC.
    late = ToolContext(tenant_id="t1", run_id="r", step=0, now=datetime(2024, 1, 1, 21, tzinfo=UTC))
    assert GET_TIME.handler({"timezone": "Asia/Tokyo"}, late) == (
        "2024-01-02T06:00:00+09:00 Asia/Tokyo (JST, Tuesday)"
    )


def test_get_time_accepts_any_aware_now() -> None:
    eastern = timezone(timedelta(hours=-5))
    ctx = ToolContext(
        tenant_id="t", run_id="r", step=0, now=datetime(2024, 1, 1, 7, tzinfo=eastern)
    )
    assert GET_TIME.handler({"timezone": "UTC"}, ctx) == (
        "2024-01-01T12:00:00+00:00 UTC (UTC, Monday)"
    )


def test_get_time_fixes_the_case_of_zone_names() -> None:
    assert call("get_time", '{"timezone": "america/new_york"}') == (
        "2024-07-01T08:30:15-04:00 America/New_York (EDT, Monday)"
    )


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "Europe/Pari", "../etc/passwd", "/etc/localtime", "Europe", ""]
)
def test_get_time_rejects_unknown_zones(zone: str) -> None:
    with pytest.raises(BadToolArgumentsError) as info:
        call("get_time", f'{{"timezone": "{zone}"}}')
    assert f"Unknown time zone '{zone}'" in info.value.message
    assert "Europe/London" in info.value.message and "America/New_York" in info.value.message


def test_get_time_suggests_close_zone_names() -> None:
    with pytest.raises(BadToolArgumentsError, match=r"Did you mean Europe/Paris"):
        call("get_time", '{"timezone": "Europe/Pari"}')


def test_get_time_rejects_non_string_zone() -> None:
    with pytest.raises(
        BadToolArgumentsError, match="field 'timezone' must be a string, got a number 5"
    ):
        call("get_time", '{"timezone": 5}')


def test_context_requires_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ToolContext(tenant_id="t", run_id="r", step=0, now=datetime(2024, 1, 1))  # noqa: DTZ001


# -- parse_arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"expression": "1+1"}',
        '  {"expression": "1+1"}\n',
        '```json\n{"expression": "1+1"}\n```',
        '```\n{"expression": "1+1"}\n```',
        '{"expression": "1+1",}',
        '{"expression": "1+1" , \n }',
        "{'expression': '1+1'}",
        "{'expression': '1+1',}",
        'Here are the arguments: {"expression": "1+1"} hope that helps',
    ],
)
def test_parse_arguments_repairs_small_mistakes(raw: str) -> None:
    assert parse_arguments(CALCULATOR, raw) == {"expression": "1+1"}


def test_repairs_keep_string_contents() -> None:
    assert parse_arguments(_text_tool(), "{'expression': \"it's, }\"}") == {"expression": "it's, }"}
    assert parse_arguments(_text_tool(), "{'expression': 'say \"hi\"'}") == {
        "expression": 'say "hi"'
    }
    assert parse_arguments(_text_tool(), "{'expression': 'it\\'s'}") == {"expression": "it's"}


def test_valid_json_is_never_repaired() -> None:
    # A trailing comma or a Python constant inside a string is content, not a mistake.
    assert parse_arguments(_text_tool(), '{"expression": "1,}"}') == {"expression": "1,}"}
    assert parse_arguments(_text_tool(), '{"expression": "True, None"}') == {
        "expression": "True, None"
    }
    assert parse_arguments(_text_tool(), '{"expression": "```x```"}') == {"expression": "```x```"}


def test_python_constants_are_repaired_outside_strings() -> None:
    tool = _tool(
        {
            "type": "object",
            "properties": {"flag": {"type": "boolean"}, "x": {"type": ["string", "null"]}},
            "additionalProperties": False,
        }
    )
    assert parse_arguments(tool, "{'flag': True, 'x': None}") == {"flag": True, "x": None}
    assert parse_arguments(tool, '{"flag": False, "x": "True"}') == {"flag": False, "x": "True"}


def test_empty_arguments_mean_an_empty_object() -> None:
    assert parse_arguments(GET_TIME, "") == {"timezone": "UTC"}
    assert parse_arguments(GET_TIME, "  \n") == {"timezone": "UTC"}


def test_schema_defaults_are_filled_in() -> None:
    assert parse_arguments(GET_TIME, "{}") == {"timezone": "UTC"}
    assert parse_arguments(GET_TIME, '{"timezone": "Asia/Tokyo"}') == {"timezone": "Asia/Tokyo"}


def test_invalid_json_says_where_and_what_was_expected() -> None:
    with pytest.raises(BadToolArgumentsError) as info:
        parse_arguments(CALCULATOR, '{"expression": "1+1" "x"}')
    message = info.value.message
    assert info.value.error_type is ErrorType.BAD_TOOL_ARGUMENTS
    assert "not valid JSON" in message
    assert "Expecting ',' delimiter at line 1 column 22" in message
    assert '{"expression": "..."}' in message


def test_unrepairable_json_is_reported() -> None:
    for raw in ('{"expression": "1+1"', "{expression: 1+1}", "{'expression': 'it''s'}", "hello"):
        with pytest.raises(BadToolArgumentsError, match="not valid JSON"):
            parse_arguments(CALCULATOR, raw)


def test_nan_and_infinity_are_not_json() -> None:
    with pytest.raises(BadToolArgumentsError, match="NaN is not valid JSON"):
        parse_arguments(CALCULATOR, '{"expression": NaN}')
    with pytest.raises(BadToolArgumentsError, match="Infinity is not valid JSON"):
        parse_arguments(CALCULATOR, '{"expression": Infinity}')


def test_absurd_arguments_are_refused() -> None:
    with pytest.raises(BadToolArgumentsError, match="nested too deeply"):
        parse_arguments(CALCULATOR, "[" * 50_000)
    with pytest.raises(BadToolArgumentsError, match="too long"):
        parse_arguments(CALCULATOR, '{"expression": "' + "1" * 200_000 + '"}')


@pytest.mark.parametrize(
    ("raw", "got"),
    [
        ("[1, 2]", "an array"),
        ('"1+1"', "a string"),
        ("42", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ],
)
def test_non_objects_are_rejected(raw: str, got: str) -> None:
    with pytest.raises(BadToolArgumentsError) as info:
        parse_arguments(CALCULATOR, raw)
    assert f"must be a JSON object, got {got}" in info.value.message
    assert '{"expression": "..."}' in info.value.message


def test_double_encoded_objects_get_a_hint() -> None:
    with pytest.raises(BadToolArgumentsError, match="not a JSON-encoded string"):
        parse_arguments(CALCULATOR, '"{\\"expression\\": \\"1\\"}"')


def test_missing_required_field() -> None:
    with pytest.raises(BadToolArgumentsError) as info:
        parse_arguments(CALCULATOR, "{}")
    assert info.value.message == (
        "Invalid arguments for tool 'calculator': missing required field 'expression'. "
        'Expected: {"expression": "..."}'
    )


def test_wrong_type() -> None:
    with pytest.raises(
        BadToolArgumentsError, match="field 'expression' must be a string, got a number 12"
    ):
        parse_arguments(CALCULATOR, '{"expression": 12}')


def test_extra_properties_are_named() -> None:
    with pytest.raises(BadToolArgumentsError) as info:
        parse_arguments(CALCULATOR, '{"expression": "1", "expr": "2", "mode": 3}')
    assert "unexpected fields 'expr', 'mode' (allowed: expression)" in info.value.message


def test_every_violation_is_reported_with_its_path() -> None:
    tool = _tool(
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1},
                "filters": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}},
                        "required": ["field"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["query", "limit"],
            "additionalProperties": False,
        }
    )
    with pytest.raises(BadToolArgumentsError) as info:
        parse_arguments(tool, '{"limit": 0, "filters": [{"field": "a"}, {"fld": 1}], "x": 1}')
    message = info.value.message
    for fragment in (
        "missing required field 'query'",
        "field 'limit': 0 is less than the minimum of 1",
        "missing required field 'filters[1].field'",
        "unexpected field 'filters[1].fld'",
        "unexpected field 'x'",
        'Expected: {"query": "...", "limit": 0}',
    ):
        assert fragment in message, message


def test_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="name"):
        _tool({"type": "object"}, name="bad name!")
    with pytest.raises(ValueError, match="type object"):
        _tool({"type": "string"})
    with pytest.raises(Exception, match="is not valid"):
        _tool({"type": "object", "properties": {"x": {"type": "nope"}}})


# -- registry -------------------------------------------------------------------------------


def test_builtin_registry_satisfies_the_protocol() -> None:
    registry: ToolRegistry = BUILTIN
    assert registry.get("calculator") is CALCULATOR
    assert BUILTIN.names == ["calculator", "get_time"]
    assert "get_time" in BUILTIN
    assert registry.has("get_time") and not registry.has("nope")


def test_unknown_tool_lists_the_available_tools() -> None:
    with pytest.raises(UnknownToolError) as info:
        BUILTIN.get("calculater")
    assert info.value.error_type is ErrorType.UNKNOWN_TOOL
    assert not info.value.retryable
    assert info.value.message == (
        "Unknown tool 'calculater'. Did you mean 'calculator'? Available tools: calculator, get_time."
    )
    with pytest.raises(
        UnknownToolError,
        match=r"^Unknown tool 'web_search'\. Available tools: calculator, get_time\.$",
    ):
        BUILTIN.get("web_search")


def test_schemas_shape() -> None:
    schemas = BUILTIN.schemas(["get_time", "calculator", "get_time"])
    assert [s.name for s in schemas] == ["get_time", "calculator"]
    assert all(isinstance(s, ToolSchema) for s in schemas)
    calc = schemas[1].model_dump()
    assert calc["name"] == "calculator"
    assert "sqrt" in calc["description"]
    assert calc["parameters"] == {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The arithmetic expression, e.g. (1 + 2) * 3 / 4",
                "maxLength": MAX_EXPRESSION_CHARS,
                "pattern": EXPRESSION_PATTERN,
                "x-grammar-pattern": EXPRESSION_GRAMMAR,
                "x-copy-pattern": EXPRESSION_IN_TEXT,
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    }
    assert calc["examples"] and schemas[0].examples
    assert BUILTIN.schemas([]) == []
    with pytest.raises(UnknownToolError):
        BUILTIN.schemas(["calculator", "nope"])


def test_schemas_are_copies() -> None:
    schema = CALCULATOR.schema()
    schema.parameters["properties"]["evil"] = {}
    assert "evil" not in CALCULATOR.parameters["properties"]


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        StaticToolRegistry([CALCULATOR, CALCULATOR])


# -- run_tool ---------------------------------------------------------------------------------


def test_run_tool_end_to_end() -> None:
    assert call("calculator", '{"expression": "(2 + 3) * 4"}') == "20"
    assert call("calculator", "```json\n{'expression': '2 ** 10',}\n```") == "1024"
    assert call("get_time", '{"timezone": "UTC"}').startswith("2024-07-01T12:30:15+00:00")


def test_run_tool_propagates_tool_errors() -> None:
    with pytest.raises(UnknownToolError):
        call("nope", "{}")
    with pytest.raises(BadToolArgumentsError, match="missing required field 'expression'"):
        call("calculator", '{"expr": "1"}')
    with pytest.raises(BadToolArgumentsError, match="unknown name 'x'"):
        call("calculator", '{"expression": "x"}')
    with pytest.raises(ToolExecutionError, match="division by zero"):
        call("calculator", '{"expression": "1/0"}')


def _text_tool() -> ToolDefinition:
    # Any string content (the calculator's own pattern would reject most of these).
    return _tool(
        {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "additionalProperties": False,
        }
    )


def _tool(parameters: dict[str, Any], *, name: str = "t", handler: Any = None) -> ToolDefinition:
    return ToolDefinition(
        name=name,
        description="test tool",
        parameters=parameters,
        side_effects=False,
        handler=handler or (lambda args, ctx: "ok"),
    )


_ECHO_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


async def test_run_tool_awaits_async_handlers_and_passes_the_context() -> None:
    seen: list[tuple[dict[str, Any], ToolContext]] = []

    async def echo(args: dict[str, Any], ctx: ToolContext) -> str:
        seen.append((args, ctx))
        await asyncio.sleep(0)
        return str(args["text"]).upper()

    registry = StaticToolRegistry([_tool(_ECHO_SCHEMA, name="echo", handler=echo)])
    result = await run_tool(
        registry, ToolCallRequest(id="c", name="echo", arguments='{"text": "hi"}'), CTX
    )
    assert result == "HI"
    assert seen == [({"text": "hi"}, CTX)]


async def test_run_tool_wraps_unexpected_exceptions_without_details() -> None:
    def broken(args: dict[str, Any], ctx: ToolContext) -> str:
        raise RuntimeError("password=hunter2 at /srv/secret/path")

    registry = StaticToolRegistry([_tool(_ECHO_SCHEMA, name="broken", handler=broken)])
    with pytest.raises(ToolExecutionError) as info:
        await run_tool(
            registry, ToolCallRequest(id="c", name="broken", arguments='{"text": "x"}'), CTX
        )
    message = info.value.message
    assert message.startswith("Tool 'broken' failed with an internal error (RuntimeError).")
    assert "hunter2" not in message and "/srv" not in message and "Traceback" not in message
    assert isinstance(info.value.__cause__, RuntimeError)  # kept for logs, not for the model
    assert not info.value.retryable


async def test_run_tool_lets_handler_tool_errors_through() -> None:
    async def picky(args: dict[str, Any], ctx: ToolContext) -> str:
        raise BadToolArgumentsError("text must be shouted")

    registry = StaticToolRegistry([_tool(_ECHO_SCHEMA, name="picky", handler=picky)])
    with pytest.raises(BadToolArgumentsError, match=r"^text must be shouted$"):
        await run_tool(
            registry, ToolCallRequest(id="c", name="picky", arguments='{"text": "x"}'), CTX
        )


async def test_run_tool_rejects_non_text_results() -> None:
    registry = StaticToolRegistry([_tool(_ECHO_SCHEMA, name="num", handler=lambda a, c: 42)])
    with pytest.raises(ToolExecutionError, match="returned int, not text"):
        await run_tool(
            registry, ToolCallRequest(id="c", name="num", arguments='{"text": "x"}'), CTX
        )


def test_tool_error_types() -> None:
    assert ToolError("x", error_type=ErrorType.POLICY_DENIED).error_type is ErrorType.POLICY_DENIED
    assert BadToolArgumentsError("x").error_type is ErrorType.BAD_TOOL_ARGUMENTS
    assert UnknownToolError("x").error_type is ErrorType.UNKNOWN_TOOL
    assert not ToolExecutionError("x").error_type.retryable
    assert str(ToolExecutionError("for the model")) == "for the model"
