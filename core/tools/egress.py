"""Each tenant's egress allowlist in Postgres: the hosts HTTP tools may reach.

The rules themselves (`EgressRule`) and how a URL is checked against them are in
`core.tools.policy`. Every function takes the tenant explicitly and only ever touches
that tenant's rows.
"""

from collections.abc import Sequence
from typing import Any

import psycopg

from core.errors import NotFound
from core.tools.policy import EgressRule

Conn = psycopg.AsyncConnection[Any]


async def get_egress_rules(conn: Conn, tenant_id: str) -> list[EgressRule]:
    """The tenant's egress allowlist (empty: no HTTP egress at all)."""
    cur = await conn.execute(
        "SELECT pattern, port FROM egress_rules WHERE tenant_id = %s ORDER BY pattern, port",
        (tenant_id,),
    )
    return [EgressRule(pattern=row["pattern"], port=row["port"]) for row in await cur.fetchall()]


async def replace_egress_rules(
    conn: Conn, tenant_id: str, rules: Sequence[EgressRule]
) -> list[EgressRule]:
    """Make `rules` the tenant's whole allowlist (duplicates collapse). Returns it."""
    unique = list(dict.fromkeys(rules))
    async with conn.transaction():
        await conn.execute("DELETE FROM egress_rules WHERE tenant_id = %s", (tenant_id,))
        if unique:
            try:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO egress_rules (tenant_id, pattern, port) VALUES (%s, %s, %s)",
                        [(tenant_id, r.pattern, r.port) for r in unique],
                    )
            except psycopg.errors.ForeignKeyViolation as exc:
                raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    return await get_egress_rules(conn, tenant_id)


async def add_egress_rule(conn: Conn, tenant_id: str, rule: EgressRule) -> bool:
    """Add one rule. Returns False when it was already there."""
    try:
        cur = await conn.execute(
            "INSERT INTO egress_rules (tenant_id, pattern, port) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (tenant_id, rule.pattern, rule.port),
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
    return cur.rowcount == 1


async def delete_egress_rule(conn: Conn, tenant_id: str, rule: EgressRule) -> None:
    """Remove one rule.

    Raises:
        NotFound: the tenant has no such rule.
    """
    cur = await conn.execute(
        "DELETE FROM egress_rules WHERE tenant_id = %s AND pattern = %s"
        " AND port IS NOT DISTINCT FROM %s",
        (tenant_id, rule.pattern, rule.port),
    )
    if cur.rowcount == 0:
        raise NotFound(f"egress rule {rule.pattern!r} (port {rule.port}) not found")
