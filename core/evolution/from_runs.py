"""Eval cases from real runs: a dataset built from traces.

A run becomes a case of its agent with the run's objective. How the case is judged is
given (checks or a rubric), or comes from the run's feedback: an expected answer becomes
a `numeric` check when it is a single number, else a `contains` check of its text. A run
becomes a case once; asking again returns that case.
"""

import re
from collections.abc import Sequence
from typing import Final

from pydantic import ValidationError

from core.errors import InvalidInput
from core.evolution.cases import Conn, EvalCase, EvalCaseSpec, add_case, case_of_run
from core.evolution.checks import Check
from core.runs import store as runs

NUMERIC_TOLERANCE: Final = 1e-6
"""The tolerance of a numeric check made from an expected answer."""

NO_JUDGE: Final = "give checks or a rubric, or rate the run with an expected answer first"

_SINGLE_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def expected_check(expected: str) -> Check:
    """The check an expected answer makes: `numeric` for a single number, else `contains`.

    Raises:
        ValidationError: the answer is blank, or too long for a `contains` check.
    """
    text = " ".join(expected.split())
    number = text.rstrip(".")
    if _SINGLE_NUMBER.fullmatch(number):
        plain = number.replace(",", "")
        value: float = float(plain) if any(c in plain for c in ".eE") else int(plain)
        try:
            return Check(kind="numeric", value=value, tolerance=NUMERIC_TOLERANCE)
        except (ValidationError, OverflowError):
            pass  # beyond floats (1e999): compare it as text
    return Check(kind="contains", value=text)


async def case_from_run(
    conn: Conn,
    tenant_id: str,
    run_id: str,
    *,
    checks: Sequence[Check] = (),
    rubric: str | None = None,
    tags: Sequence[str] = (),
    guard: bool = False,
) -> tuple[EvalCase, bool]:
    """Make a run a case of its agent. Returns (case, created).

    Without checks and rubric, the expected answer of the run's feedback makes the check.
    An expected answer is kept as the case's reference answer either way.

    Raises:
        NotFound: no such run for this tenant (or its agent no longer exists).
        InvalidInput: nothing to judge the case by, or the case would be invalid.
    """
    run = await runs.get_run(conn, tenant_id, run_id)
    existing = await case_of_run(conn, tenant_id, run.id)
    if existing is not None:
        return existing, False
    feedback = await runs.get_feedback(conn, tenant_id, run.id)
    expected = feedback.expected if feedback and (feedback.expected or "").strip() else None
    try:
        if not checks and rubric is None:
            if expected is None:
                rated = "has no expected answer" if feedback else "has no feedback"
                raise InvalidInput(f"run {run_id!r} {rated}: {NO_JUDGE}")
            checks = [expected_check(expected)]
        spec = EvalCaseSpec(
            objective=run.objective, checks=list(checks), rubric=rubric, expected=expected,
            tags=list(tags), guard=guard,
        )  # fmt: skip
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(
            f"run {run_id!r} cannot become an eval case: {where + ': ' if where else ''}"
            f"{first['msg']}",
            details={"errors": errors},
        ) from None
    return await add_case(conn, tenant_id, run.agent_name, spec, source_run_id=run.id)
