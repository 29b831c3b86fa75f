"""Agents: a name plus immutable, numbered versions stored in Postgres.

Creating an agent under an existing name adds a version when the spec differs from the
latest one (an identical spec returns the latest version, so a repeated POST is
harmless). Runs pin the version they start with.

Versions form a lineage: each records its parent and its cause (`manual`, `rollback`,
`evolution`). An evolution cycle adds `candidate` versions, which runs use only when
asked for them by number (its evaluations do); `release` makes a candidate the latest.
Numbers are unique per agent across released and candidate versions.
"""

from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core.errors import Conflict, InvalidInput, NotFound
from core.payloads import RunMode
from core.runs.payloads import AgentSpec
from core.tools.policy import EffectivePolicy, ToolPolicyDefaults, resolve_policy

VersionStatus = Literal["released", "candidate"]
VersionCause = Literal["manual", "rollback", "auto_rollback", "evolution"]


class AgentVersion(BaseModel):
    """One stored version, with where it came from."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    spec: AgentSpec
    created_at: datetime
    status: VersionStatus = "released"
    parent_version: int | None = None
    cause: VersionCause = "manual"
    evolution_id: str | None = None
    rationale: str | None = None


_COLUMNS = "version, spec, created_at, status, parent_version, cause, evolution_id, rationale"
_V_COLUMNS = ", ".join(f"v.{column}" for column in _COLUMNS.split(", "))


def _version(name: str, row: dict[str, Any]) -> AgentVersion:
    return AgentVersion(
        name=name,
        version=row["version"],
        spec=AgentSpec.model_validate(row["spec"]),
        created_at=row["created_at"],
        status=row["status"],
        parent_version=row["parent_version"],
        cause=row["cause"],
        evolution_id=row["evolution_id"],
        rationale=row["rationale"],
    )


async def create_version(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, spec: AgentSpec
) -> tuple[AgentVersion, bool]:
    """Add a version (or return the latest if its spec is identical). Returns (version, created)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO agents (tenant_id, name, latest_version) VALUES (%s, %s, 0)"
            " ON CONFLICT (tenant_id, name) DO NOTHING",
            (tenant_id, name),
        )
        latest = await _lock_latest(conn, tenant_id, name)
        if latest:
            current = await get_version(conn, tenant_id, name, latest)
            if current.spec.spec_hash() == spec.spec_hash():
                return current, False
        version = await _insert_version(
            conn, tenant_id, name, spec, parent=latest or None, cause="manual"
        )
        return version, True


async def create_owned(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, spec: AgentSpec, *, owner: str
) -> tuple[AgentVersion, bool]:
    """`create_version` for an agent that belongs to another (a sub-agent evolution grew).

    A new agent gets `owner`; an existing one must already belong to `owner` (it gets a
    version when the spec differs).

    Raises:
        Conflict: an agent of that name exists and is not `owner`'s.
    """
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO agents (tenant_id, name, latest_version, owner) VALUES (%s, %s, 0, %s)"
            " ON CONFLICT (tenant_id, name) DO UPDATE SET owner = agents.owner RETURNING owner",
            (tenant_id, name, owner),
        )
        row = await cur.fetchone()
        if row is None or row["owner"] != owner:
            raise Conflict(f"an agent named {name!r} exists and does not belong to {owner!r}")
        return await create_version(conn, tenant_id, name, spec)


async def owner_of(conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str) -> str | None:
    """The agent that owns `name` (a sub-agent), or None."""
    cur = await conn.execute(
        "SELECT owner FROM agents WHERE tenant_id = %s AND name = %s", (tenant_id, name)
    )
    row = await cur.fetchone()
    return None if row is None else row["owner"]


async def _lock_latest(conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str) -> int:
    # Row lock: concurrent writers of the same agent get consecutive versions.
    cur = await conn.execute(
        "SELECT latest_version FROM agents WHERE tenant_id = %s AND name = %s FOR UPDATE",
        (tenant_id, name),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"agent {name!r} not found")
    return int(row["latest_version"])


async def _insert_version(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    name: str,
    spec: AgentSpec,
    *,
    parent: int | None,
    cause: VersionCause,
    candidate: bool = False,
    evolution_id: str | None = None,
    rationale: str | None = None,
) -> AgentVersion:
    """Insert the agent's next version number (the caller holds the agent row's lock)."""
    cur = await conn.execute(
        "INSERT INTO agent_versions (tenant_id, agent_name, version, spec, spec_hash, status,"
        " parent_version, cause, evolution_id, rationale)"
        " SELECT %(t)s, %(n)s, coalesce(max(version), 0) + 1, %(spec)s, %(hash)s, %(status)s,"
        " %(parent)s, %(cause)s, %(evolution)s, %(rationale)s"
        " FROM agent_versions WHERE tenant_id = %(t)s AND agent_name = %(n)s"
        f" RETURNING {_COLUMNS}",
        {
            "t": tenant_id, "n": name, "spec": Jsonb(spec.model_dump(mode="json")),
            "hash": spec.spec_hash(), "status": "candidate" if candidate else "released",
            "parent": parent, "cause": cause, "evolution": evolution_id, "rationale": rationale,
        },
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None
    if not candidate:
        await _make_latest(conn, tenant_id, name, row["version"])
    return _version(name, row)


async def _make_latest(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, version: int
) -> None:
    await conn.execute(
        "UPDATE agents SET latest_version = %s, updated_at = now() WHERE tenant_id = %s AND name = %s",
        (version, tenant_id, name),
    )


async def add_candidate(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    name: str,
    spec: AgentSpec,
    *,
    parent: int,
    evolution_id: str,
    rationale: str,
) -> AgentVersion:
    """Store a candidate version an evolution cycle proposes (runs do not pick it up).

    Raises:
        NotFound: no such agent.
    """
    async with conn.transaction():
        await _lock_latest(conn, tenant_id, name)
        return await _insert_version(
            conn, tenant_id, name, spec, parent=parent, cause="evolution", candidate=True,
            evolution_id=evolution_id, rationale=rationale,
        )  # fmt: skip


async def release(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, version: int
) -> AgentVersion:
    """Make a candidate version released and the latest (an evolution cycle's promotion).

    Idempotent: releasing the latest version again changes nothing.

    Raises:
        NotFound: no such agent or version.
    """
    async with conn.transaction():
        await _lock_latest(conn, tenant_id, name)
        cur = await conn.execute(
            "UPDATE agent_versions SET status = 'released'"
            " WHERE tenant_id = %s AND agent_name = %s AND version = %s"
            f" RETURNING {_COLUMNS}",
            (tenant_id, name, version),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"version {version} of agent {name!r} not found")
        await _make_latest(conn, tenant_id, name, version)
        return _version(name, row)


async def get_version(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, version: int | None = None
) -> AgentVersion:
    """A version of an agent (the latest when `version` is None).

    Raises:
        NotFound: no such agent or version for this tenant.
    """
    if version is None:
        cur = await conn.execute(
            f"SELECT {_V_COLUMNS} FROM agent_versions v JOIN agents a"
            " ON v.tenant_id = a.tenant_id AND v.agent_name = a.name AND v.version = a.latest_version"
            " WHERE a.tenant_id = %s AND a.name = %s",
            (tenant_id, name),
        )
    else:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM agent_versions"
            " WHERE tenant_id = %s AND agent_name = %s AND version = %s",
            (tenant_id, name, version),
        )
    row = await cur.fetchone()
    if row is None:
        what = f"agent {name!r}" if version is None else f"version {version} of agent {name!r}"
        raise NotFound(f"{what} not found")
    return _version(name, row)


async def list_agents(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> list[AgentVersion]:
    """Every agent of the tenant at its latest version, by name."""
    cur = await conn.execute(
        f"SELECT a.name, {_V_COLUMNS} FROM agent_versions v JOIN agents a"
        " ON v.tenant_id = a.tenant_id AND v.agent_name = a.name AND v.version = a.latest_version"
        " WHERE a.tenant_id = %s ORDER BY a.name",
        (tenant_id,),
    )
    return [_version(r["name"], r) for r in await cur.fetchall()]


async def list_versions(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str
) -> list[AgentVersion]:
    """Every version of an agent, newest first.

    Raises:
        NotFound: no such agent.
    """
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM agent_versions WHERE tenant_id = %s AND agent_name = %s"
        " ORDER BY version DESC",
        (tenant_id, name),
    )
    rows = await cur.fetchall()
    if not rows:
        raise NotFound(f"agent {name!r} not found")
    return [_version(name, r) for r in rows]


async def rollback(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    name: str,
    to_version: int,
    *,
    cause: VersionCause = "rollback",
    rationale: str | None = None,
) -> AgentVersion:
    """Make `to_version`'s spec the latest again, as a new version (history stays immutable).

    `cause` is `rollback` for a person's rollback, `auto_rollback` for the controller's.

    Raises:
        NotFound: no such agent or version.
        InvalidInput: `to_version` is already the latest.
    """
    target = await get_version(conn, tenant_id, name, to_version)
    async with conn.transaction():
        latest = await _lock_latest(conn, tenant_id, name)
        if latest == to_version:
            raise InvalidInput(f"version {to_version} of agent {name!r} is already the latest")
        return await _insert_version(
            conn, tenant_id, name, target.spec, parent=latest, cause=cause,
            rationale=rationale or f"rollback to version {to_version}",
        )  # fmt: skip


def resolve_for_agent(
    spec: AgentSpec,
    tool: str,
    *,
    defaults: ToolPolicyDefaults | None = None,
    side_effects: bool = False,
    enabled: bool = True,
    run_mode: RunMode = "normal",
) -> EffectivePolicy:
    """`resolve_policy` with the agent's `tools` and `tool_policies` taken from its spec."""
    return resolve_policy(
        tool,
        agent_tools=spec.tools,
        agent_policies=spec.tool_policies,
        defaults=defaults,
        side_effects=side_effects,
        enabled=enabled,
        run_mode=run_mode,
    )


class AgentsAsTools:
    """The tenant's agents as the tool catalog offers them (`ToolCatalog(agents=...)`)."""

    async def agent_names(self, conn: psycopg.AsyncConnection[Any], tenant_id: str) -> list[str]:
        """Names of the tenant's agents."""
        return [agent.name for agent in await list_agents(conn, tenant_id)]

    async def agent_instructions(
        self, conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str
    ) -> str | None:
        """The latest instructions of an agent (None: no such agent)."""
        try:
            version = await get_version(conn, tenant_id, name)
        except NotFound:
            return None
        return version.spec.instructions
