"""The tool registry in Postgres: registered tools and their call statistics.

Registered tools are a name plus immutable, numbered versions per tenant, like agents:
registering an existing name adds a version unless the spec is identical to the latest.
Tool records never hold secrets, only secret names (`{"secret": "NAME"}`); values live
in `core.tools.secrets`.

A tool an evolution cycle wrote is a `draft` attached to one candidate agent version
(`register_draft_tool`): listing, search and lookups ignore it, except lookups for that
version's runs (`get_latest_tools(..., drafts_of=...)`); `activate_drafts` makes it
active when the candidate is promoted.

Every function takes the tenant explicitly and only ever touches that tenant's rows.
"""

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core.errors import Conflict, NotFound
from core.tools.policy import ToolPolicyDefaults
from core.tools.spec import HttpToolConfig, StoredToolKind, ToolSpec, validate_tool_name

Conn = psycopg.AsyncConnection[Any]

LATENCY_WINDOW: Final = 256
"""Latencies kept per tool for p50/p95: the most recent calls."""


class StoredTool(BaseModel):
    """One version of a registered tool."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    kind: StoredToolKind
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    config: dict[str, Any] = {}
    timeout_s: float
    side_effects: bool
    policy: ToolPolicyDefaults
    enabled: bool
    created_at: datetime

    def spec(self) -> ToolSpec:
        """The spec of this version."""
        return ToolSpec.model_validate(self.model_dump(exclude={"name", "version", "created_at"}))

    def http(self) -> HttpToolConfig:
        """The HTTP configuration (kind `http` only)."""
        if self.kind != "http":
            raise ValueError(f"a {self.kind} tool has no HTTP configuration")
        return HttpToolConfig.model_validate(self.config)


class ToolStats(BaseModel):
    """Live call statistics of one tool (all versions)."""

    model_config = ConfigDict(frozen=True)

    tool: str
    calls: int = 0
    successes: int = 0
    failures: int = 0
    success_rate: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    window: int = 0  # how many recent calls p50/p95 are computed over
    last_called_at: datetime | None = None


# -- tools ---------------------------------------------------------------------------

_TOOL_COLUMNS = (
    "name, version, kind, description, input_schema, output_schema, config, timeout_s,"
    " side_effects, policy, enabled, created_at"
)
_ACTIVE = "status = 'active'"
_VISIBLE = "(status = 'active' OR (agent_name = %s AND agent_version = %s))"
"""Active tools, and the drafts of one agent version (bind its name and number)."""


def _tool(row: dict[str, Any]) -> StoredTool:
    return StoredTool.model_validate(dict(row))


async def register_tool(
    conn: Conn, tenant_id: str, name: str, spec: ToolSpec
) -> tuple[StoredTool, bool]:
    """Add a version of tool `name` (or return the latest if its spec is identical).

    Returns (version, created).

    Raises:
        Conflict: `name` is a built-in tool's.
        InvalidInput: the name does not suit the kind.
    """
    validate_tool_name(name, spec.kind)
    spec_hash = spec.spec_hash()
    async with conn.transaction():
        # Serialise writers of one name so they get consecutive versions.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"tool:{tenant_id}:{name}",)
        )
        cur = await conn.execute(
            f"SELECT {_TOOL_COLUMNS}, spec_hash FROM tools WHERE tenant_id = %s AND name = %s"
            " ORDER BY version DESC LIMIT 1",
            (tenant_id, name),
        )
        latest = await cur.fetchone()
        if latest is not None and latest["spec_hash"] == spec_hash:
            return _tool({k: v for k, v in dict(latest).items() if k != "spec_hash"}), False
        version = 1 if latest is None else int(latest["version"]) + 1
        try:
            cur = await conn.execute(
                "INSERT INTO tools (tenant_id, name, version, kind, description, input_schema,"
                " output_schema, config, timeout_s, side_effects, policy, spec_hash, enabled)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_TOOL_COLUMNS}",
                (
                    tenant_id,
                    name,
                    version,
                    spec.kind,
                    spec.description,
                    Jsonb(spec.input_schema),
                    Jsonb(spec.output_schema) if spec.output_schema is not None else None,
                    Jsonb(spec.config),
                    spec.timeout_s,
                    spec.side_effects,
                    Jsonb(spec.policy.model_dump(mode="json")),
                    spec_hash,
                    spec.enabled,
                ),
            )
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
        row = await cur.fetchone()
        assert row is not None
        return _tool(row), True


async def get_tool(conn: Conn, tenant_id: str, name: str, version: int | None = None) -> StoredTool:
    """A version of a registered tool (the latest when `version` is None).

    Raises:
        NotFound: no such tool or version for this tenant.
    """
    if version is None:
        cur = await conn.execute(
            f"SELECT {_TOOL_COLUMNS} FROM tools WHERE tenant_id = %s AND name = %s"
            f" AND {_ACTIVE} ORDER BY version DESC LIMIT 1",
            (tenant_id, name),
        )
    else:
        cur = await conn.execute(
            f"SELECT {_TOOL_COLUMNS} FROM tools WHERE tenant_id = %s AND name = %s"
            f" AND version = %s AND {_ACTIVE}",
            (tenant_id, name, version),
        )
    row = await cur.fetchone()
    if row is None:
        what = f"tool {name!r}" if version is None else f"version {version} of tool {name!r}"
        raise NotFound(f"{what} not found")
    return _tool(row)


async def get_latest_tools(
    conn: Conn,
    tenant_id: str,
    names: Iterable[str],
    *,
    drafts_of: tuple[str, int] | None = None,
) -> dict[str, StoredTool]:
    """The latest active versions of those of `names` that are registered (one query).

    `drafts_of` (agent name, version): the draft tools attached to that agent version
    count too (an evolution candidate's runs call the tools it was written with).
    """
    wanted = sorted(set(names))
    if not wanted:
        return {}
    agent, version = drafts_of if drafts_of is not None else (None, None)
    cur = await conn.execute(
        f"SELECT DISTINCT ON (name) {_TOOL_COLUMNS} FROM tools"
        f" WHERE tenant_id = %s AND name = ANY(%s) AND {_VISIBLE} ORDER BY name, version DESC",
        (tenant_id, wanted, agent, version),
    )
    return {row["name"]: _tool(row) for row in await cur.fetchall()}


async def list_tools(
    conn: Conn, tenant_id: str, *, kind: StoredToolKind | None = None
) -> list[StoredTool]:
    """Every registered tool of the tenant at its latest active version, by name."""
    cur = await conn.execute(
        f"SELECT * FROM (SELECT DISTINCT ON (name) {_TOOL_COLUMNS} FROM tools"
        f" WHERE tenant_id = %s AND {_ACTIVE} ORDER BY name, version DESC) latest"
        " WHERE %s::text IS NULL OR kind = %s ORDER BY name",
        (tenant_id, kind, kind),
    )
    return [_tool(row) for row in await cur.fetchall()]


async def list_tool_versions(conn: Conn, tenant_id: str, name: str) -> list[StoredTool]:
    """Every version of a tool, newest first.

    Raises:
        NotFound: no such tool.
    """
    cur = await conn.execute(
        f"SELECT {_TOOL_COLUMNS} FROM tools WHERE tenant_id = %s AND name = %s"
        f" AND {_ACTIVE} ORDER BY version DESC",
        (tenant_id, name),
    )
    rows = await cur.fetchall()
    if not rows:
        raise NotFound(f"tool {name!r} not found")
    return [_tool(row) for row in rows]


async def register_draft_tool(
    conn: Conn,
    tenant_id: str,
    name: str,
    spec: ToolSpec,
    *,
    agent_name: str,
    agent_version: int,
    evolution_id: str,
) -> StoredTool:
    """Register a new tool as a draft of one candidate agent version (version 1).

    Only that version's runs see it until `activate_drafts`.

    Raises:
        Conflict: `name` is a built-in tool's, or a tool of that name exists (a draft
            never adds a version to a tool someone registered).
        InvalidInput: the name does not suit the kind.
    """
    validate_tool_name(name, spec.kind)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"tool:{tenant_id}:{name}",)
        )
        cur = await conn.execute(
            "SELECT 1 FROM tools WHERE tenant_id = %s AND name = %s", (tenant_id, name)
        )
        if await cur.fetchone() is not None:
            raise Conflict(f"a tool named {name!r} exists")
        cur = await conn.execute(
            "INSERT INTO tools (tenant_id, name, version, kind, description, input_schema,"
            " output_schema, config, timeout_s, side_effects, policy, spec_hash, enabled,"
            " status, evolution_id, agent_name, agent_version)"
            " VALUES (%s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'draft', %s, %s, %s)"
            f" RETURNING {_TOOL_COLUMNS}",
            (
                tenant_id, name, spec.kind, spec.description, Jsonb(spec.input_schema),
                Jsonb(spec.output_schema) if spec.output_schema is not None else None,
                Jsonb(spec.config), spec.timeout_s, spec.side_effects,
                Jsonb(spec.policy.model_dump(mode="json")), spec.spec_hash(), spec.enabled,
                evolution_id, agent_name, agent_version,
            ),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        return _tool(row)


async def activate_drafts(
    conn: Conn, tenant_id: str, agent_name: str, agent_version: int
) -> list[str]:
    """Make the draft tools of an agent version active (its promotion); their names.

    Idempotent: once active, a tool is not a draft any more and is not returned again.
    """
    cur = await conn.execute(
        "UPDATE tools SET status = 'active' WHERE tenant_id = %s AND status = 'draft'"
        " AND agent_name = %s AND agent_version = %s RETURNING name",
        (tenant_id, agent_name, agent_version),
    )
    return sorted(row["name"] for row in await cur.fetchall())


async def tool_name_taken(conn: Conn, tenant_id: str, name: str) -> bool:
    """Whether any tool (active or draft) of the tenant has this name."""
    cur = await conn.execute(
        "SELECT 1 FROM tools WHERE tenant_id = %s AND name = %s LIMIT 1", (tenant_id, name)
    )
    return await cur.fetchone() is not None


async def set_tool_enabled(conn: Conn, tenant_id: str, name: str, enabled: bool) -> None:
    """Enable or disable every version of a tool (a disabled tool's calls are denied).

    Raises:
        NotFound: no such tool.
    """
    cur = await conn.execute(
        "UPDATE tools SET enabled = %s WHERE tenant_id = %s AND name = %s",
        (enabled, tenant_id, name),
    )
    if cur.rowcount == 0:
        raise NotFound(f"tool {name!r} not found")


# -- statistics ----------------------------------------------------------------------


async def record_tool_call_stats(
    conn: Conn, tenant_id: str, name: str, ok: bool, latency_ms: float
) -> None:
    """Count one call of `name` and add its latency to the recent window (one statement)."""
    latency = max(0.0, float(latency_ms)) if math.isfinite(latency_ms) else 0.0
    await conn.execute(
        "INSERT INTO tool_stats AS s (tenant_id, tool_name, calls, successes, failures,"
        " total_latency_ms, recent_latency_ms, last_called_at)"
        " VALUES (%(t)s, %(n)s, 1, %(ok)s::int, 1 - %(ok)s::int, %(l)s, ARRAY[%(l)s::real], now())"
        " ON CONFLICT (tenant_id, tool_name) DO UPDATE SET"
        " calls = s.calls + 1,"
        " successes = s.successes + %(ok)s::int,"
        " failures = s.failures + 1 - %(ok)s::int,"
        " total_latency_ms = s.total_latency_ms + %(l)s,"
        " recent_latency_ms = (CASE WHEN cardinality(s.recent_latency_ms) >= %(w)s"
        "   THEN s.recent_latency_ms[cardinality(s.recent_latency_ms) - %(w)s + 2:]"
        "   ELSE s.recent_latency_ms END) || %(l)s::real,"
        " last_called_at = now()",
        {"t": tenant_id, "n": name, "ok": ok, "l": latency, "w": LATENCY_WINDOW},
    )


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The `q`-quantile (0..1) of `samples` by linear interpolation between closest ranks."""
    if not samples:
        return None
    ordered = sorted(samples)
    position = min(max(q, 0.0), 1.0) * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stats(row: dict[str, Any]) -> ToolStats:
    calls = int(row["calls"])
    window = [float(x) for x in row["recent_latency_ms"]]
    return ToolStats(
        tool=row["tool_name"],
        calls=calls,
        successes=int(row["successes"]),
        failures=int(row["failures"]),
        success_rate=row["successes"] / calls if calls else None,
        mean_ms=row["total_latency_ms"] / calls if calls else None,
        p50_ms=percentile(window, 0.5),
        p95_ms=percentile(window, 0.95),
        window=len(window),
        last_called_at=row["last_called_at"],
    )


async def tool_stats(
    conn: Conn, tenant_id: str, names: Iterable[str] | None = None
) -> dict[str, ToolStats]:
    """Statistics by tool name (all of the tenant's tools, or those in `names`)."""
    wanted = None if names is None else sorted(set(names))
    cur = await conn.execute(
        "SELECT tool_name, calls, successes, failures, total_latency_ms, recent_latency_ms,"
        " last_called_at FROM tool_stats"
        " WHERE tenant_id = %s AND (%s::text[] IS NULL OR tool_name = ANY(%s::text[]))",
        (tenant_id, wanted, wanted),
    )
    return {row["tool_name"]: _stats(row) for row in await cur.fetchall()}
