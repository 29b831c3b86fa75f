"""Eval cases: objectives an agent is measured on, with exact checks or a rubric.

Each case belongs to one split, fixed by its id (a stable hash), so no case ever moves:

- `train`: the proposer sees these cases' runs when it writes candidates;
- `validation`: decides promotion;
- `holdout`: frozen; neither the proposer nor the selection sees it, it is reported on
  every decision and must not regress.

A `guard` case must never regress, whatever else improves.
"""

import hashlib
import re
import uuid
from datetime import datetime
from typing import Any, Final, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import NotFound
from core.evolution.checks import Check
from core.specs import Spec

Conn = psycopg.AsyncConnection[Any]
Split = Literal["train", "validation", "holdout"]
SPLITS: Final[tuple[Split, ...]] = ("train", "validation", "holdout")
SPLIT_SHARES: Final = (0.4, 0.3, 0.3)
"""Shares of train, validation and holdout."""

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def split_of(case_id: str) -> Split:
    """The split of a case, from its id alone (stable across processes and versions)."""
    digest = hashlib.sha256(case_id.encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < SPLIT_SHARES[0]:
        return "train"
    if point < SPLIT_SHARES[0] + SPLIT_SHARES[1]:
        return "validation"
    return "holdout"


def new_case_id() -> str:
    """A fresh case id."""
    return f"case-{uuid.uuid4().hex[:16]}"


class EvalCaseSpec(Spec):
    """What a case asks and how its answer is judged: checks, or a rubric for a judge."""

    objective: str = Field(min_length=1, max_length=20_000)
    checks: list[Check] = Field(default_factory=list, max_length=20)
    rubric: str | None = Field(default=None, min_length=1, max_length=4000)
    expected: str | None = Field(default=None, max_length=20_000)
    tags: list[str] = Field(default_factory=list, max_length=20)
    guard: bool = False

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not _TAG.fullmatch(tag):
                raise ValueError(f"tag {tag!r} must match {_TAG.pattern}")
        return list(dict.fromkeys(tags))

    @model_validator(mode="after")
    def _judged_somehow(self) -> "EvalCaseSpec":
        if not self.checks and self.rubric is None:
            raise ValueError("a case needs checks or a rubric")
        return self


class EvalCase(BaseModel):
    """A stored case."""

    model_config = ConfigDict(frozen=True)

    id: str
    agent_name: str
    spec: EvalCaseSpec
    split: Split
    source_run_id: str | None
    created_at: datetime


def _case(row: dict[str, Any]) -> EvalCase:
    return EvalCase(
        id=row["id"],
        agent_name=row["agent_name"],
        spec=EvalCaseSpec(
            objective=row["objective"],
            checks=[Check.model_validate(c) for c in row["checks"]],
            rubric=row["rubric"],
            expected=row["expected"],
            tags=list(row["tags"]),
            guard=row["guard"],
        ),
        split=row["split"],
        source_run_id=row["source_run_id"],
        created_at=row["created_at"],
    )


async def add_case(
    conn: Conn,
    tenant_id: str,
    agent_name: str,
    spec: EvalCaseSpec,
    *,
    case_id: str | None = None,
    source_run_id: str | None = None,
) -> tuple[EvalCase, bool]:
    """Store a case (its split follows from its id). Returns (case, created).

    A case made from a run exists once per run: adding it again returns the stored one.

    Raises:
        NotFound: no such agent for this tenant.
    """
    case_id = case_id or new_case_id()
    try:
        cur = await conn.execute(
            "INSERT INTO eval_cases (id, tenant_id, agent_name, objective, checks, rubric,"
            " expected, tags, guard, split, source_run_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, source_run_id) DO NOTHING RETURNING *",
            (
                case_id, tenant_id, agent_name, spec.objective,
                Jsonb([c.model_dump(mode="json", exclude_defaults=True) for c in spec.checks]),
                spec.rubric, spec.expected, spec.tags, spec.guard, split_of(case_id),
                source_run_id,
            ),
        )  # fmt: skip
    except psycopg.errors.ForeignKeyViolation:
        raise NotFound(f"agent {agent_name!r} not found") from None
    row = await cur.fetchone()
    if row is not None:
        return _case(row), True
    assert source_run_id is not None  # only a run's case can conflict
    existing = await case_of_run(conn, tenant_id, source_run_id)
    assert existing is not None
    return existing, False


async def case_of_run(conn: Conn, tenant_id: str, run_id: str) -> EvalCase | None:
    """The case made from a run (None: the run has not been made into one)."""
    cur = await conn.execute(
        "SELECT * FROM eval_cases WHERE tenant_id = %s AND source_run_id = %s",
        (tenant_id, run_id),
    )
    row = await cur.fetchone()
    return None if row is None else _case(row)


async def get_case(conn: Conn, tenant_id: str, agent_name: str, case_id: str) -> EvalCase:
    """One case of an agent.

    Raises:
        NotFound: no such case for this tenant and agent.
    """
    cur = await conn.execute(
        "SELECT * FROM eval_cases WHERE tenant_id = %s AND agent_name = %s AND id = %s",
        (tenant_id, agent_name, case_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"eval case {case_id!r} of agent {agent_name!r} not found")
    return _case(row)


async def list_cases(
    conn: Conn,
    tenant_id: str,
    agent_name: str,
    splits: tuple[Split, ...] = SPLITS,
    tag: str | None = None,
) -> list[EvalCase]:
    """An agent's cases in the given splits (optionally with a tag), oldest first."""
    cur = await conn.execute(
        "SELECT * FROM eval_cases WHERE tenant_id = %s AND agent_name = %s"
        " AND split = ANY(%s) AND (%s::text IS NULL OR %s::text = ANY(tags))"
        " ORDER BY created_at, id",
        (tenant_id, agent_name, list(splits), tag, tag),
    )
    return [_case(row) for row in await cur.fetchall()]


async def delete_case(conn: Conn, tenant_id: str, agent_name: str, case_id: str) -> None:
    """Delete a case.

    Raises:
        NotFound: no such case for this tenant and agent.
    """
    cur = await conn.execute(
        "DELETE FROM eval_cases WHERE tenant_id = %s AND agent_name = %s AND id = %s",
        (tenant_id, agent_name, case_id),
    )
    if cur.rowcount == 0:
        raise NotFound(f"eval case {case_id!r} of agent {agent_name!r} not found")
