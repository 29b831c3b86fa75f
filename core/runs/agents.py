"""Agents: a name plus immutable, numbered versions stored in Postgres.

Creating an agent under an existing name adds a version when the spec differs from the
latest one (an identical spec returns the latest version, so a repeated POST is
harmless). Runs pin the version they start with.
"""

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from core.errors import InvalidInput, NotFound
from core.payloads import RunMode
from core.runs.payloads import AgentSpec
from core.tools.policy import EffectivePolicy, ToolPolicyDefaults, resolve_policy


class AgentVersion(BaseModel):
    """One stored version."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    spec: AgentSpec
    created_at: datetime


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
        return await _insert_version(conn, tenant_id, name, latest + 1, spec), True


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
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, version: int, spec: AgentSpec
) -> AgentVersion:
    cur = await conn.execute(
        "INSERT INTO agent_versions (tenant_id, agent_name, version, spec, spec_hash)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING created_at",
        (tenant_id, name, version, Jsonb(spec.model_dump(mode="json")), spec.spec_hash()),
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.execute(
        "UPDATE agents SET latest_version = %s, updated_at = now() WHERE tenant_id = %s AND name = %s",
        (version, tenant_id, name),
    )
    return AgentVersion(name=name, version=version, spec=spec, created_at=row["created_at"])


async def get_version(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, version: int | None = None
) -> AgentVersion:
    """A version of an agent (the latest when `version` is None).

    Raises:
        NotFound: no such agent or version for this tenant.
    """
    if version is None:
        cur = await conn.execute(
            "SELECT v.version, v.spec, v.created_at FROM agents a JOIN agent_versions v"
            " ON v.tenant_id = a.tenant_id AND v.agent_name = a.name AND v.version = a.latest_version"
            " WHERE a.tenant_id = %s AND a.name = %s",
            (tenant_id, name),
        )
    else:
        cur = await conn.execute(
            "SELECT version, spec, created_at FROM agent_versions"
            " WHERE tenant_id = %s AND agent_name = %s AND version = %s",
            (tenant_id, name, version),
        )
    row = await cur.fetchone()
    if row is None:
        what = f"agent {name!r}" if version is None else f"version {version} of agent {name!r}"
        raise NotFound(f"{what} not found")
    return AgentVersion(
        name=name,
        version=row["version"],
        spec=AgentSpec.model_validate(row["spec"]),
        created_at=row["created_at"],
    )


async def list_agents(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> list[AgentVersion]:
    """Every agent of the tenant at its latest version, by name."""
    cur = await conn.execute(
        "SELECT a.name, v.version, v.spec, v.created_at FROM agents a JOIN agent_versions v"
        " ON v.tenant_id = a.tenant_id AND v.agent_name = a.name AND v.version = a.latest_version"
        " WHERE a.tenant_id = %s ORDER BY a.name",
        (tenant_id,),
    )
    return [
        AgentVersion(
            name=r["name"],
            version=r["version"],
            spec=AgentSpec.model_validate(r["spec"]),
            created_at=r["created_at"],
        )
        for r in await cur.fetchall()
    ]


async def list_versions(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str
) -> list[AgentVersion]:
    """Every version of an agent, newest first.

    Raises:
        NotFound: no such agent.
    """
    cur = await conn.execute(
        "SELECT version, spec, created_at FROM agent_versions WHERE tenant_id = %s AND agent_name = %s"
        " ORDER BY version DESC",
        (tenant_id, name),
    )
    rows = await cur.fetchall()
    if not rows:
        raise NotFound(f"agent {name!r} not found")
    return [
        AgentVersion(
            name=name,
            version=r["version"],
            spec=AgentSpec.model_validate(r["spec"]),
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def rollback(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, name: str, to_version: int
) -> AgentVersion:
    """Make `to_version`'s spec the latest again, as a new version (history stays immutable).

    Raises:
        NotFound: no such agent or version.
        InvalidInput: `to_version` is already the latest.
    """
    target = await get_version(conn, tenant_id, name, to_version)
    async with conn.transaction():
        latest = await _lock_latest(conn, tenant_id, name)
        if latest == to_version:
            raise InvalidInput(f"version {to_version} of agent {name!r} is already the latest")
        return await _insert_version(conn, tenant_id, name, latest + 1, target.spec)


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
