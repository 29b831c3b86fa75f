"""Exact checks of an evaluation run: what an eval case asserts about the answer and tool calls.

A case's checks all run against one finished run: its final answer and the tool calls it
made. A case passes when every check passes; its score is the share that pass. Pure
logic, no I/O.

Kinds:

- `exact`: the answer equals `value`, after trimming, collapsing whitespace and dropping
  a trailing period (case-insensitive unless `case_sensitive`).
- `contains`: the answer contains `value`, normalized the same way.
- `regex`: `value` (a Python regular expression) matches somewhere in the answer.
- `numeric`: the answer's last number is within `tolerance` of `value` (the convention of
  math benchmarks: "17 * 23 = 391" answers 391). Thousands separators are allowed.
- `json_path`: the answer holds JSON (the whole answer, a fenced block, or its first
  object or array) and the JMESPath expression `path` (`$.` prefix allowed) gives `value`.
- `tool_called`: the run called `tool` with `arguments` among its arguments (a subset:
  other arguments may be present; numbers compare by value).
"""

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import Field, model_validator

from core.specs import Spec

CheckKind = Literal["exact", "contains", "regex", "numeric", "json_path", "tool_called"]

MAX_ANSWER_CHARS: Final = 50_000
"""Checks read at most this much of an answer (a regex on a huge text could run long)."""

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)\n\s*```", re.DOTALL)


class Check(Spec):
    """One assertion about an evaluation run (see the module docstring for the kinds)."""

    kind: CheckKind
    value: Any = None
    tolerance: float = Field(default=0.0, ge=0)
    path: str | None = Field(default=None, min_length=1, max_length=500)
    tool: str | None = Field(default=None, min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _complete(self) -> "Check":
        if self.kind in ("exact", "contains", "regex"):
            if not isinstance(self.value, str) or not self.value.strip():
                raise ValueError(f"a {self.kind} check needs a non-empty string value")
            if len(self.value) > 2000:
                raise ValueError(f"a {self.kind} check's value is longer than 2000 characters")
            if self.kind == "regex":
                try:
                    re.compile(self.value)
                except re.error as exc:
                    raise ValueError(f"the regex does not compile: {exc}") from exc
        elif self.kind == "numeric":
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise ValueError("a numeric check needs a number as its value")
            if not math.isfinite(self.value):
                raise ValueError("a numeric check needs a finite value")
        elif self.kind == "json_path":
            if self.path is None:
                raise ValueError("a json_path check needs a path")
            try:
                jmespath.compile(_jmespath(self.path))
            except JMESPathError as exc:
                raise ValueError(f"the path does not parse: {exc}") from exc
        elif self.tool is None:
            raise ValueError("a tool_called check needs a tool")
        return self


@dataclass(frozen=True)
class ToolCallMade:
    """A tool call an evaluation run made: the tool's name and its parsed arguments."""

    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class CheckResult:
    """How a case's checks went: all passed, the share that passed, why the others failed."""

    passed: bool
    score: float
    failures: tuple[str, ...]


def run_checks(
    checks: Sequence[Check], answer: str | None, tool_calls: Sequence[ToolCallMade] = ()
) -> CheckResult:
    """Run every check against a run's final answer (None: the run gave none) and calls."""
    if not checks:
        raise ValueError("a case without checks cannot be scored by checks")
    failures = [
        f"{check.kind}: {why}"
        for check in checks
        if (why := failure(check, answer, tool_calls)) is not None
    ]
    passed = len(checks) - len(failures)
    return CheckResult(not failures, passed / len(checks), tuple(failures))


def failure(
    check: Check, answer: str | None, tool_calls: Sequence[ToolCallMade] = ()
) -> str | None:
    """Why `check` fails (None: it passes)."""
    if check.kind == "tool_called":
        return _tool_failure(check, tool_calls)
    if answer is None:
        return "the run gave no answer"
    text = answer[:MAX_ANSWER_CHARS]
    if check.kind == "exact":
        expected = _normal(str(check.value), check.case_sensitive)
        return None if _normal(text, check.case_sensitive) == expected else f"not {check.value!r}"
    if check.kind == "contains":
        expected = _normal(str(check.value), check.case_sensitive)
        found = expected in _normal(text, check.case_sensitive)
        return None if found else f"does not contain {check.value!r}"
    if check.kind == "regex":
        flags = 0 if check.case_sensitive else re.IGNORECASE
        found = re.search(str(check.value), text, flags) is not None
        return None if found else f"does not match {check.value!r}"
    if check.kind == "numeric":
        return _numeric_failure(check, text)
    return _json_path_failure(check, text)


def _normal(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.split()).rstrip(".").strip()
    return text if case_sensitive else text.casefold()


def _numeric_failure(check: Check, text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    if not numbers:
        return f"no number in the answer (expected {check.value})"
    last = float(numbers[-1].replace(",", ""))
    if abs(last - float(check.value)) <= check.tolerance:
        return None
    return f"the answer's number is {numbers[-1]}, expected {check.value} ± {check.tolerance}"


def _jmespath(path: str) -> str:
    """A JSONPath-style `$.a.b[0]` as JMESPath (`a.b[0]`); JMESPath passes unchanged."""
    if path == "$":
        return "@"
    return path.removeprefix("$.").removeprefix("$")


def _json_in(text: str) -> Any:
    """The JSON an answer holds: all of it, a fenced block, or its first object or array."""
    candidates = [text.strip(), *(m.group(1) for m in _FENCE.finditer(text))]
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        candidates.append(text[min(starts) :])
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            value, _ = decoder.raw_decode(candidate.strip())
        except ValueError:
            continue
        return value
    raise ValueError("no JSON in the answer")


def _json_path_failure(check: Check, text: str) -> str | None:
    try:
        data = _json_in(text)
    except ValueError as exc:
        return str(exc)
    assert check.path is not None  # checked by the model
    try:
        found = jmespath.search(_jmespath(check.path), data)
    except JMESPathError as exc:
        return f"the path fails on the answer: {exc}"
    if _same(found, check.value):
        return None
    return f"{check.path} is {json.dumps(found)[:200]}, expected {json.dumps(check.value)[:200]}"


def _tool_failure(check: Check, tool_calls: Sequence[ToolCallMade]) -> str | None:
    calls = [call for call in tool_calls if call.name == check.tool]
    if not calls:
        return f"{check.tool} was not called"
    for call in calls:
        if all(
            key in call.arguments and _same(call.arguments[key], value)
            for key, value in check.arguments.items()
        ):
            return None
    wanted = json.dumps(check.arguments)[:200]
    return f"{check.tool} was called {len(calls)} time(s), never with {wanted}"


def _same(found: Any, expected: Any) -> bool:
    """JSON equality where numbers compare by value (1 == 1.0) and booleans stay booleans."""
    if isinstance(found, bool) or isinstance(expected, bool):
        return found is expected
    if isinstance(found, int | float) and isinstance(expected, int | float):
        return math.isclose(found, expected, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(found, list) and isinstance(expected, list):
        return len(found) == len(expected) and all(map(_same, found, expected))
    if isinstance(found, dict) and isinstance(expected, dict):
        return found.keys() == expected.keys() and all(_same(found[k], expected[k]) for k in found)
    return bool(found == expected)
