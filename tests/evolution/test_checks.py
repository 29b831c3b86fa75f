"""Exact checks of eval cases."""

import pytest
from pydantic import ValidationError

from core.evolution.checks import Check, ToolCallMade, failure, run_checks


def check(**fields: object) -> Check:
    return Check.model_validate(fields)


@pytest.mark.parametrize(
    ("spec", "answer", "passes"),
    [
        ({"kind": "exact", "value": "391"}, " 391. ", True),
        ({"kind": "exact", "value": "Paris"}, "paris", True),
        ({"kind": "exact", "value": "Paris", "case_sensitive": True}, "paris", False),
        ({"kind": "exact", "value": "391"}, "The answer is 391", False),
        ({"kind": "contains", "value": "391"}, "The answer is 391.", True),
        ({"kind": "contains", "value": "new  york"}, "I love New York", True),
        ({"kind": "regex", "value": r"\b391\b"}, "it is 391!", True),
        ({"kind": "regex", "value": r"^\d+$"}, "it is 391", False),
        ({"kind": "numeric", "value": 391}, "17 * 23 = 391", True),
        ({"kind": "numeric", "value": 391}, "391 is wrong, it is 392", False),
        ({"kind": "numeric", "value": 1024}, "The result is 1,024.", True),
        ({"kind": "numeric", "value": 3.14, "tolerance": 0.01}, "about 3.141", True),
        ({"kind": "numeric", "value": 3.14, "tolerance": 0.001}, "about 3.15", False),
        ({"kind": "numeric", "value": -3}, "x = -3", True),
        ({"kind": "json_path", "path": "$.city", "value": "Rome"}, '{"city": "Rome"}', True),
        (
            {"kind": "json_path", "path": "a.b[0]", "value": 2},
            'Here:\n```json\n{"a": {"b": [2.0]}}\n```',
            True,
        ),
        (
            {"kind": "json_path", "path": "city", "value": "Rome"},
            'I think {"city": "Paris"} fits',
            False,
        ),
        ({"kind": "json_path", "path": "ok", "value": True}, '{"ok": 1}', False),
        ({"kind": "json_path", "path": "city", "value": "Rome"}, "no json here", False),
    ],
)
def test_answer_checks(spec: dict[str, object], answer: str, passes: bool) -> None:
    assert (failure(check(**spec), answer) is None) is passes


def test_no_answer_fails_every_answer_check() -> None:
    assert failure(check(kind="contains", value="x"), None) == "the run gave no answer"


def test_tool_called_matches_a_subset_of_the_arguments() -> None:
    calls = [
        ToolCallMade("calculator", {"expression": "2+2"}),
        ToolCallMade("get_weather", {"city": "Paris", "units": "metric", "days": 3.0}),
    ]
    assert (
        failure(
            check(kind="tool_called", tool="get_weather", arguments={"city": "Paris", "days": 3}),
            "",
            calls,
        )
        is None
    )
    assert "never with" in (
        failure(
            check(kind="tool_called", tool="get_weather", arguments={"city": "Rome"}), "", calls
        )
        or ""
    )
    assert (
        failure(check(kind="tool_called", tool="http_fetch"), "", calls)
        == "http_fetch was not called"
    )
    # A tool check does not need an answer.
    assert failure(check(kind="tool_called", tool="calculator"), None, calls) is None


def test_a_case_passes_only_when_every_check_passes() -> None:
    checks = [check(kind="contains", value="391"), check(kind="numeric", value=391)]
    assert run_checks(checks, "391").passed
    half = run_checks(checks, "391 or 400")
    assert not half.passed and half.score == 0.5 and len(half.failures) == 1
    with pytest.raises(ValueError, match="without checks"):
        run_checks([], "391")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"kind": "exact"}, "non-empty string"),
        ({"kind": "regex", "value": "(unclosed"}, "does not compile"),
        ({"kind": "numeric", "value": "391"}, "needs a number"),
        ({"kind": "numeric", "value": True}, "needs a number"),
        ({"kind": "json_path", "value": 1}, "needs a path"),
        ({"kind": "json_path", "path": "a[", "value": 1}, "does not parse"),
        ({"kind": "tool_called"}, "needs a tool"),
        ({"kind": "equals", "value": "x"}, "literal_error"),
        ({"kind": "exact", "value": "x", "typo": 1}, "extra_forbidden"),
    ],
)
def test_bad_checks_are_refused_with_the_reason(spec: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError) as info:
        Check.model_validate(spec)
    assert error in str(info.value) or error in str(info.value.errors())
