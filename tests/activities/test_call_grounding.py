"""A call's argument grammar grounded in the request's words (activities/providers/call_grounding.py)."""

from typing import Any

import pytest

from activities.providers.call_grounding import ground, parts, uncovered
from activities.providers.grammar import grammar_safe
from core.payloads import ToolSchema


def tool(name: str, properties: dict[str, Any], required: list[str] | None = None) -> ToolSchema:
    return ToolSchema(
        name=name,
        description=f"The {name.replace('_', ' ')} tool.",
        parameters={
            "type": "object",
            "properties": properties,
            "required": list(properties) if required is None else required,
        },
    )


def grounded(t: ToolSchema, text: str, part: str | None = None) -> dict[str, Any]:
    return ground(grammar_safe(t.parameters), t, part or text, text)


def allowed(schema: dict[str, Any]) -> list[Any]:
    """The values a grounded argument may take (its const or enum)."""
    return [schema["const"]] if "const" in schema else list(schema["enum"])


NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}


def test_a_number_is_one_the_request_states() -> None:
    t = tool("fibonacci", {"n": INTEGER})
    assert allowed(grounded(t, "Give me the first 10 Fibonacci numbers.")["properties"]["n"]) == [
        10
    ]
    words = grounded(tool("roll_dice", {"sides": INTEGER}), "Roll two six-sided dice.")
    assert allowed(words["properties"]["sides"]) == [6]  # "six" is next to "sided"


def test_numbers_are_signed_decimal_and_bounded() -> None:
    t = tool("solve_quadratic", {"a": NUMBER, "b": NUMBER, "c": NUMBER})
    out = grounded(t, "Solve the quadratic equation with a=1, b=-3 and c=2.")["properties"]
    assert [allowed(out[k]) for k in "abc"] == [[1], [-3], [2]]
    tip = tool("calculate_tip", {"bill_amount": NUMBER, "tip_percent": NUMBER})
    out = grounded(tip, "How much is a 15% tip on a bill of 84.50?")["properties"]
    assert allowed(out["bill_amount"]) == [84.5] and allowed(out["tip_percent"]) == [15]
    bounded = tool("pick", {"n": {"type": "integer", "minimum": 1, "maximum": 9}})
    assert allowed(grounded(bounded, "Pick between 0 and 5 or 12")["properties"]["n"]) == [5]


def test_unclaimed_numbers_go_to_the_number_arguments_in_order() -> None:
    t = tool("gcd", {"a": INTEGER, "b": INTEGER})
    out = grounded(t, "What is the greatest common divisor of 48 and 180?")["properties"]
    assert allowed(out["a"]) == [48] and allowed(out["b"]) == [180]


def test_a_list_of_numbers_takes_them_all() -> None:
    t = tool("sort_numbers", {"numbers": {"type": "array", "items": NUMBER}})
    out = grounded(t, "Sort the numbers 5, 3, 9 and 1.")["properties"]["numbers"]
    assert out == {"const": [5, 3, 9, 1]}


def test_a_string_is_a_span_of_the_request() -> None:
    t = tool("get_current_weather", {"location": STRING})
    spans = allowed(
        grounded(t, "What's the weather like in Paris right now?")["properties"]["location"]
    )
    assert "Paris" in spans
    assert not any(s.lower().startswith(("in ", "what", "the ")) for s in spans)
    assert all("\n" not in s and "}" not in s for s in spans)


def test_a_quoted_value_is_offered_whole_and_free_text_only_copies_quotes() -> None:
    email = tool("send_email", {"to": STRING, "body": STRING})
    out = grounded(email, "Email bob@example.com the text 'See you at noon'.")["properties"]
    assert "See you at noon" in allowed(out["to"])
    assert allowed(out["body"]) == ["See you at noon"]
    assert grounded(email, "Email bob about lunch")["properties"]["body"] == {"type": "string"}
    marked = tool("run", {"source": {"type": "string", "x-free-text": False}})
    assert "python" in allowed(grounded(marked, "Run python now")["properties"]["source"])


def test_a_time_or_date_takes_a_span_with_digits_and_a_message_one_without() -> None:
    t = tool("set_reminder", {"message": STRING, "time": STRING})
    out = grounded(t, "Remind me to call mom at 18:00.")["properties"]
    assert "call mom" in allowed(out["message"]) and "18:00" not in allowed(out["message"])
    assert allowed(out["time"]) == ["18:00"]


def test_from_and_to_take_the_words_after_from_and_to() -> None:
    t = tool("get_distance", {"origin": STRING, "destination": STRING})
    out = grounded(t, "How far is it from Lyon to Marseille?")["properties"]
    assert allowed(out["origin"]) == ["Lyon"] and allowed(out["destination"]) == ["Marseille"]
    units = tool("convert_units", {"value": NUMBER, "from_unit": STRING, "to_unit": STRING})
    out = grounded(units, "Convert 10 kilometers to miles.")["properties"]
    assert allowed(out["from_unit"]) == ["kilometers"] and allowed(out["to_unit"]) == ["miles"]
    dates = tool("days_between", {"start_date": STRING, "end_date": STRING})
    out = grounded(dates, "How many days are there between 2025-01-01 and 2025-03-15?")
    assert allowed(out["properties"]["end_date"]) == ["2025-03-15"]


def test_an_enum_takes_the_values_the_request_names() -> None:
    scale = {"type": "string", "enum": ["celsius", "fahrenheit", "kelvin"]}
    t = tool("convert_temperature", {"from_scale": scale, "to_scale": scale})
    out = grounded(t, "Convert 100 fahrenheit to celsius.")["properties"]
    assert allowed(out["from_scale"]) == ["fahrenheit"] and allowed(out["to_scale"]) == ["celsius"]
    # Naming none leaves a required enum whole.
    out = grounded(t, "Convert this temperature.")["properties"]
    assert allowed(out["from_scale"]) == scale["enum"]


def test_optional_arguments_the_request_does_not_mention_are_left_out() -> None:
    unit = {"type": "string", "enum": ["celsius", "fahrenheit"]}
    t = tool(
        "get_weather_forecast",
        {"location": STRING, "days": INTEGER, "unit": unit, "include_hourly": {"type": "boolean"}},
        required=["location"],
    )
    out = grounded(t, "Give me a 5-day weather forecast for Berlin.")
    assert set(out["properties"]) == {"location", "days"}  # "day" names `days`
    assert out["required"] == ["location", "days"]
    out = grounded(t, "Forecast for Berlin in fahrenheit, hourly")
    assert allowed(out["properties"]["unit"]) == ["fahrenheit"]
    assert out["properties"]["include_hourly"] == {"const": True}
    assert out["required"] == ["location", "unit", "include_hourly"]


def test_a_flag_after_a_negation_is_false() -> None:
    t = tool("generate_password", {"length": INTEGER, "include_symbols": {"type": "boolean"}})
    out = grounded(t, "Generate a 16 character password without symbols.")["properties"]
    assert out["include_symbols"] == {"const": False}


def test_a_copy_pattern_fixes_the_one_span_it_finds() -> None:
    expression = {"type": "string", "x-copy-pattern": r"\d+ *[*+] *\d+"}
    t = tool("calculator", {"expression": expression})
    assert grounded(t, "What is 17 * 23?")["properties"]["expression"] == {"const": "17 * 23"}
    # Two candidates: the model chooses (the grammar is left as it was).
    out = grounded(t, "What is 17 * 23 or 2 + 2?")["properties"]["expression"]
    assert out == {"type": "string"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's the weather in Paris and in Rome?", ["What's the weather in Paris", "in Rome?"]),
        (
            "Convert 100 USD to EUR, and 100 USD to GBP.",
            ["Convert 100 USD to EUR", "100 USD to GBP."],
        ),
        ("Translate 'salt and pepper' into French", ["Translate 'salt and pepper' into French"]),
        ("What time is it?", ["What time is it?"]),
    ],
)
def test_a_request_splits_into_parts(text: str, expected: list[str]) -> None:
    assert parts(text) == expected


def test_parts_no_call_speaks_to_are_left() -> None:
    weather = tool("get_current_weather", {"location": STRING})
    request = parts("What's the weather in Paris and in Rome?")
    assert uncovered(request, [(weather, {"location": "Paris"})], [weather]) == ["in Rome?"]
    both = [(weather, {"location": "Paris"}), (weather, {"location": "Rome"})]
    assert uncovered(request, both, [weather]) == []
    numbers = tool("sort_numbers", {"numbers": {"type": "array", "items": NUMBER}})
    request = parts("Sort the numbers 5, 3, 9 and 1")
    assert uncovered(request, [(numbers, {"numbers": [5, 3, 9, 1]})], [numbers]) == []
    quadratic = tool("solve_quadratic", {"a": NUMBER, "b": NUMBER, "c": NUMBER})
    request = parts("Solve the quadratic equation with a=1, b=-3 and c=2.")
    assert uncovered(request, [(quadratic, {"a": 1, "b": -3, "c": 2})], [quadratic]) == []
    # A part naming another offered tool is left for it.
    air = tool("get_air_quality", {"city": STRING})
    request = parts("For Oslo, give me the current weather and the air quality")
    assert uncovered(request, [(weather, {"location": "Oslo"})], [weather, air]) == [
        "the air quality"
    ]
