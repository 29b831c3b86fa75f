"""The built-in code tools every worker has: `calculator` and `get_time`."""

import ast
import difflib
import functools
import math
import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC
from typing import Any, Final

from activities.tools.framework import (
    BadToolArgumentsError,
    StaticToolRegistry,
    ToolContext,
    ToolDefinition,
    ToolExecutionError,
    clip,
)
from core.tools.builtins import (
    CALCULATOR_TOOL,
    GET_TIME_TOOL,
    MAX_EXPRESSION_CHARS,
    ZONE_EXAMPLES,
)

# -- calculator ----------------------------------------------------------------------

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


def _calculator(args: dict[str, Any], ctx: ToolContext) -> str:
    return calculate(args["expression"])


CALCULATOR = ToolDefinition.serving(CALCULATOR_TOOL, _calculator)


# -- get_time ------------------------------------------------------------------------


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
        f"Unknown time zone '{clip(name)}'.{hint} Use an IANA name such as {ZONE_EXAMPLES}."
    )


def _get_time(args: dict[str, Any], ctx: ToolContext) -> str:
    name, zone = _resolve_zone(args.get("timezone", "UTC"))
    local = ctx.now.astimezone(zone if zone is not None else UTC)
    return f"{local.isoformat(timespec='seconds')} {name} ({local.tzname()}, {local:%A})"


GET_TIME = ToolDefinition.serving(GET_TIME_TOOL, _get_time)


BUILTIN = StaticToolRegistry([CALCULATOR, GET_TIME])
"""The tools every agent gets without configuration."""
