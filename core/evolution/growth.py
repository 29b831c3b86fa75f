"""Agents that grow: the code tools and sub-agents an evolution cycle writes.

When a diagnosis says an agent lacks a capability (`missing_capability`), a cycle may
propose two kinds of candidate besides edits of the agent's instructions:

- `code_tool`: a model writes a new tool as JSON (`GeneratedTool`: name, description,
  input schema, Python source, tests). Its tests run in the sandbox (on the tools lane);
  only a tool that passes every one is registered, as a draft attached to the candidate
  version that adds it (`core.tools.store.register_draft_tool`). Promotion activates it.
- `sub_agent`: a model writes an agent (`SubAgentDraft`: instructions, tools the tenant
  has, a step limit). It is created as `<parent>-<slug>`, owned by the parent, with the
  failing train cases that exposed the gap as its eval cases; the candidate is the
  parent with `agent:<sub-agent>` among its tools.

What the model writes is validated strictly: an answer that does not fit is rejected,
never repaired. The bounds here are checked after the answer arrives; the schema sent
with the request has no long string bounds (llama.cpp grammars cannot take them).

This module holds the specs and the `evolution_growth` rows: code tools waiting for their
tests, and the outcome. Pure validation and Postgres, no model calls, no sandbox.
"""

import json
from typing import Any, Final, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.evolution.checks import Check
from core.specs import Spec
from core.tools.names import RESERVED_TOOL_NAMES
from core.tools.spec import ToolSpec, check_tool_schemas

Conn = psycopg.AsyncConnection[Any]
GrowthStatus = Literal["pending", "registered", "rejected"]

MAX_SOURCE_CHARS: Final = 20_000
MAX_SCHEMA_CHARS: Final = 10_000
MAX_TESTS: Final = 10
MAX_SUB_AGENT_TOOLS: Final = 10
TOOL_TIMEOUT_S: Final = 30.0


class ToolTest(Spec):
    """One test of a generated tool: arguments, and checks on what the tool prints.

    The checks are those of eval cases (`core.evolution.checks`), run against the tool's
    standard output; `tool_called` makes no sense for a tool's output and is refused.
    """

    arguments: dict[str, Any] = Field(default_factory=dict)
    checks: list[Check] = Field(min_length=1, max_length=5)

    @field_validator("checks")
    @classmethod
    def _output_checks(cls, checks: list[Check]) -> list[Check]:
        if any(c.kind == "tool_called" for c in checks):
            raise ValueError("a tool's test checks its output: tool_called is not allowed")
        return checks


class GeneratedTool(Spec):
    """A code tool a model wrote: Python that reads `args` and prints its answer."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{2,39}$")
    description: str = Field(min_length=10, max_length=1000)
    input_schema: dict[str, Any]
    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS)
    tests: list[ToolTest] = Field(min_length=1, max_length=MAX_TESTS)
    needs_network: bool = False
    """The model says the tool needs the network; generated tools never get it."""
    rationale: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _check(self) -> "GeneratedTool":
        if self.name in RESERVED_TOOL_NAMES:
            raise ValueError(f"{self.name!r} is a built-in tool's name")
        if len(json.dumps(self.input_schema)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"input_schema is over {MAX_SCHEMA_CHARS} characters")
        check_tool_schemas(self.input_schema, None)
        if not self.source.strip():
            raise ValueError("the source is empty")
        return self

    def tool_spec(self) -> ToolSpec:
        """The registered tool: kind `code`, Python, no side effects."""
        return ToolSpec(
            kind="code",
            description=self.description,
            input_schema=self.input_schema,
            config={"language": "python", "source": self.source},
            timeout_s=TOOL_TIMEOUT_S,
            side_effects=False,
        )


class SubAgentDraft(Spec):
    """An agent a model wrote to take over what its parent cannot do."""

    slug: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")
    instructions: str = Field(min_length=20, max_length=8000)
    tools: list[str] = Field(default_factory=list, max_length=MAX_SUB_AGENT_TOOLS)
    max_steps: int = Field(default=10, ge=1, le=50)
    rationale: str = Field(default="", max_length=1000)


def sub_agent_name(parent: str, slug: str) -> str:
    """The sub-agent's name: `<parent>-<slug>`."""
    return f"{parent}-{slug}"


class GrowthRecord(BaseModel):
    """An `evolution_growth` row: a generated code tool and what its tests gave."""

    model_config = ConfigDict(frozen=True)

    slot: int
    parent_version: int
    tool: GeneratedTool
    rationale: str
    status: GrowthStatus
    version: int | None
    results: list[dict[str, Any]]
    reason: str | None


async def add_pending_tool(
    conn: Conn,
    tenant_id: str,
    evolution_id: str,
    *,
    slot: int,
    parent_version: int,
    tool: GeneratedTool,
    rationale: str,
) -> None:
    """Store a generated tool waiting for its tests (a repeat changes nothing)."""
    await conn.execute(
        "INSERT INTO evolution_growth (tenant_id, evolution_id, slot, parent_version, tool,"
        " rationale) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (evolution_id, slot) DO NOTHING",
        (
            tenant_id, evolution_id, slot, parent_version,
            Jsonb(tool.model_dump(mode="json", exclude_defaults=True)), rationale,
        ),
    )  # fmt: skip


async def list_tools(conn: Conn, evolution_id: str) -> list[GrowthRecord]:
    """A cycle's generated tools by slot."""
    cur = await conn.execute(
        "SELECT slot, parent_version, tool, rationale, status, version, results, reason"
        " FROM evolution_growth WHERE evolution_id = %s ORDER BY slot",
        (evolution_id,),
    )
    return [GrowthRecord.model_validate(dict(row)) for row in await cur.fetchall()]


async def settle_tool(
    conn: Conn,
    evolution_id: str,
    slot: int,
    *,
    status: Literal["registered", "rejected"],
    results: list[dict[str, Any]],
    version: int | None = None,
    reason: str | None = None,
) -> None:
    """Record what a pending tool's tests gave (a settled tool stays as it is)."""
    await conn.execute(
        "UPDATE evolution_growth SET status = %s, results = %s, version = %s, reason = %s"
        " WHERE evolution_id = %s AND slot = %s AND status = 'pending'",
        (status, Jsonb(results), version, reason, evolution_id, slot),
    )
