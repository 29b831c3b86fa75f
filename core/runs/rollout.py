"""Which version of an agent a new run uses while a canary takes a share of the traffic.

The one version resolver (`resolve_version`) is called when a run of a named agent starts
without a pinned version. Without an active canary it is the agent's latest version.
With one, assignment is sticky: the same key (the end user the caller names, else the
run's idempotency key, else the run itself) always lands on the same version for one
rollout, so a user does not flip between versions from one run to the next. The
rollout's id salts the buckets, so a new canary reshuffles who tries it first.

The rollouts table belongs to the canary controller (core/evolution/live.py); this module
only reads the active canary.
"""

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from core.runs import agents

StickyKey = Literal["end_user", "idempotency_key", "run"]
"""What keeps a caller on one version: its end user (falling back to the idempotency key,
then the run), its idempotency key (then the run), or nothing (each run drawn anew)."""


@dataclass(frozen=True)
class Rollout:
    """A canary in progress: `canary` takes `share` (0-1) of new runs, `stable` the rest."""

    stable: int
    canary: int
    share: float
    salt: str
    sticky_key: StickyKey = "end_user"
    id: str = ""


def bucket(key: str, salt: str) -> float:
    """A key's stable position in [0, 1) for one rollout."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_version(latest: int, rollout: Rollout | None, key: str) -> int:
    """The version a new run with this sticky key uses."""
    if rollout is None:
        return latest
    return rollout.canary if bucket(key, rollout.salt) < rollout.share else rollout.stable


def assignment_key(sticky: StickyKey, *, end_user: str | None, idempotency_key: str | None) -> str:
    """The key a run is bucketed by (a fresh random one when nothing makes it sticky)."""
    if sticky == "end_user" and end_user:
        return f"user:{end_user}"
    if sticky in ("end_user", "idempotency_key") and idempotency_key:
        return f"key:{idempotency_key}"
    return "run:" + secrets.token_hex(8)


async def active_canary(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, agent_name: str
) -> Rollout | None:
    """The agent's canary in progress, if any."""
    cur = await conn.execute(
        "SELECT id, stable_version, canary_version, share, sticky_key FROM rollouts"
        " WHERE tenant_id = %s AND agent_name = %s AND kind = 'canary' AND status = 'active'",
        (tenant_id, agent_name),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Rollout(
        stable=row["stable_version"], canary=row["canary_version"], share=row["share"],
        salt=row["id"], sticky_key=row["sticky_key"], id=row["id"],
    )  # fmt: skip


async def resolve_version(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    agent_name: str,
    *,
    end_user: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[agents.AgentVersion, str | None]:
    """The version a new, unpinned run of the agent uses, and the canary that picked it.

    A canary whose stable version is no longer the latest (someone released another
    version meanwhile) is ignored: new runs use the latest.

    Raises:
        NotFound: no such agent.
    """
    latest = await agents.get_version(conn, tenant_id, agent_name)
    rollout = await active_canary(conn, tenant_id, agent_name)
    if rollout is None or rollout.stable != latest.version:
        return latest, None
    key = assignment_key(rollout.sticky_key, end_user=end_user, idempotency_key=idempotency_key)
    picked = pick_version(latest.version, rollout, key)
    if picked == latest.version:
        return latest, rollout.id
    return await agents.get_version(conn, tenant_id, agent_name, picked), rollout.id
