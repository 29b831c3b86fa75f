"""The function-calling benchmark's checker and the integrity of its dataset."""

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.bench import function_calling
from tests.bench.fc_cases import CASES, CATEGORIES, FUNCTIONS, OMIT, Case, call
from tests.bench.function_calling import (
    Call,
    CaseResult,
    check_call,
    check_calls,
    same_value,
    select,
    table,
    type_ok,
)

WEATHER = FUNCTIONS["get_current_weather"].parameters
GOLD_WEATHER = call(
    "get_current_weather", location=["Paris", "Paris, France"], unit=["", "celsius"]
)


def c(name: str, **arguments: Any) -> Call:
    return Call(name, arguments)


# -- dataset ---------------------------------------------------------------------------


def test_counts_per_category() -> None:
    counts = Counter(case.category for case in CASES)
    assert counts == {"single": 50, "multiple": 40, "parallel": 25, "irrelevance": 40}
    assert len(CASES) >= 150


def test_ids_are_unique_and_name_their_category() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert all(case.id.startswith(f"{case.category}_") for case in CASES)


def test_function_schemas_are_valid() -> None:
    for f in FUNCTIONS.values():
        Draft202012Validator.check_schema(f.parameters)
        assert f.parameters["type"] == "object"
        assert set(f.parameters.get("required", [])) <= set(f.parameters["properties"])


def _gold_instances(gold: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every argument object the gold call accepts, one acceptable value at a time."""
    instances: list[dict[str, Any]] = [{}]
    for key, accepted in gold.items():
        instances = [
            {**inst, key: value} if not (isinstance(value, str) and value == OMIT) else inst
            for inst in instances
            for value in accepted
        ]
    return instances


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_gold_calls_validate_against_their_schemas(case: Case) -> None:
    assert case.functions and len(set(case.functions)) == len(case.functions)
    assert all(name in FUNCTIONS for name in case.functions)
    shape = {
        "single": (1, 1, 1, 1),
        "multiple": (2, 4, 1, 1),
        "parallel": (1, 3, 2, 3),
        "irrelevance": (1, 4, 0, 0),
    }[case.category]
    assert shape[0] <= len(case.functions) <= shape[1]
    assert shape[2] <= len(case.gold) <= shape[3]
    for gold in case.gold:
        ((name, arguments),) = gold.items()
        assert name in case.functions
        parameters = FUNCTIONS[name].parameters
        properties = parameters["properties"]
        # Every argument is listed (an unlisted one would silently mean "must be absent"),
        # a required one can never be omitted, and every acceptable value is well typed.
        assert set(arguments) == set(properties), name
        for key in parameters.get("required", []):
            assert OMIT not in arguments[key], (name, key)
        for key, accepted in arguments.items():
            assert accepted, (name, key)
        validator = Draft202012Validator(parameters)
        for instance in _gold_instances(arguments):
            errors = [e.message for e in validator.iter_errors(instance)]
            assert not errors, (name, instance, errors)
            # The checker accepts its own gold.
            assert check_call(Call(name, instance), gold, parameters) is None, instance
    if case.category == "multiple":
        assert len(case.functions) >= 2
    if case.category == "parallel":
        assert check_calls([Call(*_first(g)) for g in case.gold], case.gold) is None


def _first(gold: dict[str, dict[str, list[Any]]]) -> tuple[str, dict[str, Any]]:
    ((name, arguments),) = gold.items()
    return name, _gold_instances(arguments)[0]


def test_select() -> None:
    assert len(select()) == len(CASES)
    assert [case.category for case in select(["parallel"], 3)] == ["parallel"] * 3
    assert len(select(None, 2)) == 2 * len(CATEGORIES)
    assert [case.id for case in select(ids=["single_04", "irrelevance_01"])] == [
        "single_04",
        "irrelevance_01",
    ]
    with pytest.raises(SystemExit):
        select(ids=["nope_1"])


# -- values and types ------------------------------------------------------------------


def test_values() -> None:
    assert same_value("  PARIS ", "paris")
    assert same_value(10, 10.0) and same_value(4.5, 4.5)
    assert not same_value("10", 10)
    assert not same_value(True, 1) and not same_value(1, True)
    assert same_value([5, 3.0], [5, 3]) and not same_value([3, 5], [5, 3])
    assert not same_value([5], [5, 3])
    assert same_value({"a": "X"}, {"a": "x"}) and not same_value({"a": 1, "b": 2}, {"a": 1})


def test_types() -> None:
    assert type_ok(5, {"type": "number"}) and type_ok(5.5, {"type": "number"})
    assert type_ok(5, {"type": "integer"}) and type_ok(5.0, {"type": "integer"})
    assert not type_ok(5.5, {"type": "integer"})
    assert not type_ok("5", {"type": "integer"}) and not type_ok("5", {"type": "number"})
    assert not type_ok(True, {"type": "integer"}) and not type_ok(1, {"type": "boolean"})
    assert type_ok(False, {"type": "boolean"})
    numbers = {"type": "array", "items": {"type": "number"}}
    assert type_ok([1, 2.5], numbers) and not type_ok([1, "2"], numbers)
    assert not type_ok("a", {"type": "array"})


# -- one call --------------------------------------------------------------------------


def test_a_correct_call_passes_optional_omitted_or_given() -> None:
    assert check_call(c("get_current_weather", location="paris"), GOLD_WEATHER, WEATHER) is None
    given = c("get_current_weather", location=" Paris, France", unit="Celsius")
    assert check_call(given, GOLD_WEATHER, WEATHER) is None


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        (c("get_weather_forecast", location="Paris"), "called get_weather_forecast"),
        (c("get_current_weather"), "missing required location"),
        (c("get_current_weather", location="Paris", city="Paris"), "unknown argument city"),
        (c("get_current_weather", location=7), "location=7 is not of type string"),
        (c("get_current_weather", location="Paris", unit="kelvin"), "is not one of"),
        (c("get_current_weather", location="Lyon"), "location='Lyon', expected one of"),
        (c("get_current_weather", location="Paris", unit="fahrenheit"), "unit='fahrenheit'"),
        (Call("get_current_weather", '{"location": "Paris"'), "not a JSON object"),
        (Call("get_current_weather", ["Paris"]), "not a JSON object"),
    ],
)
def test_a_wrong_call_fails_with_its_reason(made: Call, reason: str) -> None:
    found = check_call(made, GOLD_WEATHER, WEATHER)
    assert found is not None and reason in found


def test_numbers_by_value_numeric_strings_rejected() -> None:
    params = FUNCTIONS["factorial"].parameters
    gold = call("factorial", n=[7])
    assert check_call(c("factorial", n=7), gold, params) is None
    assert check_call(c("factorial", n=7.0), gold, params) is None
    assert "not of type integer" in str(check_call(c("factorial", n="7"), gold, params))
    assert "not of type integer" in str(check_call(c("factorial", n=7.5), gold, params))
    tip = FUNCTIONS["calculate_tip"].parameters
    gold_tip = call("calculate_tip", bill_amount=[84.5], tip_percent=[15], split=["", 1])
    assert check_call(c("calculate_tip", bill_amount=84.50, tip_percent=15), gold_tip, tip) is None
    assert check_call(c("calculate_tip", bill_amount=84.5, tip_percent=15.0), gold_tip, tip) is None
    wrong = check_call(c("calculate_tip", bill_amount="84.5", tip_percent=15), gold_tip, tip)
    assert wrong is not None and "not of type number" in wrong


def test_an_optional_argument_without_omit_must_be_given() -> None:
    params = FUNCTIONS["set_thermostat"].parameters
    gold = call("set_thermostat", temperature=[21], unit=["celsius"], room=["living room"])
    missing = check_call(c("set_thermostat", temperature=21, unit="celsius"), gold, params)
    assert missing is not None and "room missing" in missing
    params = FUNCTIONS["get_news_headlines"].parameters
    gold = call("get_news_headlines", topic=["technology"], country=[""], limit=["", 10])
    extra = check_call(c("get_news_headlines", topic="technology", country="US"), gold, params)
    assert extra is not None and "should be omitted" in extra


def test_a_gold_call_without_an_argument_refuses_it() -> None:
    params = FUNCTIONS["get_current_weather"].parameters
    gold = call("get_current_weather", location=["Paris"])
    made = c("get_current_weather", location="Paris", unit="celsius")
    assert "unexpected argument unit" in str(check_call(made, gold, params))


def test_arrays_compare_items() -> None:
    params = FUNCTIONS["send_email"].parameters
    gold = call("send_email", to=[["a@example.com"]], subject=["Hi"], body=["Yo"], cc=["", []])
    ok = c("send_email", to=["A@example.com"], subject="hi", body="yo", cc=[])
    assert check_call(ok, gold, params) is None
    flat = c("send_email", to="a@example.com", subject="Hi", body="Yo")
    assert "not of type array" in str(check_call(flat, gold, params))


# -- several calls ---------------------------------------------------------------------

PARIS = call("get_current_weather", location=["Paris"], unit=[""])
ROME = call("get_current_weather", location=["Rome"], unit=[""])


def test_parallel_calls_match_in_any_order() -> None:
    paris, rome = (
        c("get_current_weather", location="Paris"),
        c("get_current_weather", location="rome"),
    )
    assert check_calls([paris, rome], [PARIS, ROME]) is None
    assert check_calls([rome, paris], [PARIS, ROME]) is None
    assert check_calls([paris], [PARIS, ROME]) == "1 call(s), expected 2"
    assert check_calls([paris, paris], [PARIS, ROME]) is not None
    assert check_calls([paris, rome, paris], [PARIS, ROME]) == "3 call(s), expected 2"
    lyon = c("get_current_weather", location="Lyon")
    assert "Lyon" in str(check_calls([paris, lyon], [PARIS, ROME]))


def test_irrelevance_and_single() -> None:
    assert check_calls([], []) is None
    assert (
        check_calls([c("get_current_weather", location="Paris")], []) == "1 call(s), expected none"
    )
    assert check_calls([], [PARIS]) == "0 call(s), expected 1"


def test_scoring_a_case() -> None:
    irrelevant = next(case for case in CASES if case.category == "irrelevance")
    single = next(case for case in CASES if case.id == "single_14")  # factorial of 7
    result = CaseResult(irrelevant.id, "irrelevance", "colony", answer="Canberra.")
    result.score(irrelevant)
    assert result.correct
    # A refused call that the model then dropped was still an attempt to call.
    result = CaseResult(irrelevant.id, "irrelevance", "colony", answer="Canberra.")
    result.rejected.append((c("get_current_weather"), "Error: ..."))
    result.score(irrelevant)
    assert not result.correct and result.reason == "1 call(s), expected none"
    # A refused call the model corrected is fine elsewhere.
    result = CaseResult(single.id, "single", "colony", calls=[c("factorial", n=7)])
    result.rejected.append((c("factorial", n="seven"), "Error: ..."))
    result.score(single)
    assert result.correct
    result = CaseResult(single.id, "single", "colony", answer="5040")
    result.score(single)
    assert not result.correct and result.reason == "answered without a call"
    result = CaseResult(single.id, "single", "direct", error="HTTP 500")
    result.score(single)
    assert not result.correct and result.reason == "error: HTTP 500"


def test_repeated_calls_and_the_report() -> None:
    single = next(case for case in CASES if case.id == "single_14")
    looping = CaseResult(single.id, "single", "direct", calls=[c("factorial", n=7)] * 3)
    looping.score(single)
    assert not looping.correct and looping.correct_without_repeats
    assert looping.reason == "3 call(s), expected 1"
    right = CaseResult(single.id, "single", "colony", calls=[c("factorial", n=7)])
    right.score(single)
    assert right.correct and right.correct_without_repeats
    lines = table([single], {"direct": [looping], "colony": [right]})
    assert "| single function | 1 | 0/1 (0%) | 1/1 (100%) |" in lines
    assert "| **all** | 1 | 0/1 (0%) | 1/1 (100%) |" in lines
    assert "| single function | 1 | 0 · 1 / 1 | 0 · 1 / 1 |" in lines


def test_results_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(function_calling, "OUT_DIR", tmp_path)
    single = next(case for case in CASES if case.id == "single_14")
    result = CaseResult(single.id, "single", "colony", calls=[c("factorial", n=7)], seconds=1.5)
    result.rejected.append((c("factorial", n="seven"), "Error: n is not an integer"))
    result.replies += [
        '{"content": null, "tool_calls": [{"name": "factorial", "arguments": "{\\"n\\": \\"seven\\"}"}]}',
        '{"content": null, "tool_calls": [{"name": "factorial", "arguments": "{\\"n\\": 7}"}]}',
        '{"content": "5040", "tool_calls": []}',
    ]
    result.score(single)
    assert result.correct and not result.first_reply_correct
    failures = function_calling.write_results("colony", [single], [result])
    assert function_calling.load_results("colony") == {single.id: result}
    assert function_calling.load_results("direct") == {}
    assert "single_14" not in failures.read_text()  # only failures are listed
    result.calls.append(c("factorial", n=7))
    result.score(single)
    text = function_calling.write_results("colony", [single], [result]).read_text()
    assert "## single_14: 2 call(s), expected 1" in text
    assert 'factorial({"n": 7}) + factorial({"n": 7})' in text
    assert "rejected, then retried" in text
