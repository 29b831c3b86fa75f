"""Data rights in Postgres: which rows a deletion takes, deleting them, exporting a tenant.

A deleted run takes with it everything derived from it:

    the run row             and by cascade its messages, inbox, events, summaries,
                            feedback and live observation
    its child runs          agents called as tools (`parent_run_id`), recursively
    its shadow runs         the canary's re-runs of it (`shadow_pairs`)
    swarms it started       a recipe tool's swarm (`swarms.parent_run_id`) and their runs
    its memories            episodes, lessons, facts whose `source_run_id` is the run
                            (their vectors are deleted first, on the memory lane); other
                            runs that recalled them forget them (`_forget_recalls`)
    eval cases made of it   `eval_cases.source_run_id`
    skill-use rows          `memory_uses`, blackboard posts, shadow pairs
    citations               diagnoses of its failures and its id in the evidence of
                            evolution cycles and rollouts (`_forget_evidence`)

and keeps, detached, what holds no content: the cost ledger (`llm_calls`, run_id NULL,
so spend caps and usage still count it), evolution results (`run_id` NULL), swarm
subtasks the run was an attempt of (`run_id` NULL). The Temporal side (histories,
vectors) is the API's: `api/routes/data_rights.py`.

An export is NDJSON: a header line, then one line per row of every table that has a
`tenant_id`, as `{"type": <table>, "row": {...}}`. Secret values and key hashes never
appear: `bytea` columns and the columns in `HIDDEN_COLUMNS` are left out.
"""

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

Conn = psycopg.AsyncConnection[Any]

EXPORT_FORMAT = "colony-export/1"
HIDDEN_COLUMNS = frozenset({"key_hash", "ciphertext", "secret", "secret_value", "password"})
"""Never exported (besides every `bytea` column): key hashes and secret values."""

_SKIPPED_TABLES = frozenset({"schema_migrations"})


@dataclass(frozen=True)
class Workflow:
    """A Temporal workflow a deletion removes: a run's or a swarm's."""

    workflow_id: str
    finished: bool  # Postgres says it ended (Temporal must agree before anything goes)
    kind: str  # "run" or "swarm"
    id: str


@dataclass
class DeletionPlan:
    """The runs and swarms one deletion request takes."""

    run_ids: list[str] = field(default_factory=list)
    swarm_ids: list[str] = field(default_factory=list)
    workflows: list[Workflow] = field(default_factory=list)

    busy_owners: list[str] = field(default_factory=list)
    """Parent runs, swarms and evolution cycles, not deleted, still waiting on a run."""

    @property
    def unfinished(self) -> list[str]:
        """Ids of the runs and swarms that have not ended, and of busy owners."""
        return [w.id for w in self.workflows if not w.finished] + self.busy_owners


@dataclass(frozen=True)
class DeletionCounts:
    """What a deletion removed from Postgres."""

    runs: int
    memories: int
    eval_cases: int
    swarms: int


async def plan_deletion(conn: Conn, tenant_id: str, run_ids: Sequence[str]) -> DeletionPlan:
    """The tenant's runs `run_ids` with every run and swarm derived from them."""
    plan = DeletionPlan()
    seen_runs: set[str] = set()
    seen_swarms: set[str] = set()
    frontier = list(run_ids)
    while frontier:
        cur = await conn.execute(
            "SELECT id, workflow_id, status FROM runs WHERE tenant_id = %(t)s AND ("
            " id = ANY(%(ids)s) OR parent_run_id = ANY(%(ids)s)"
            " OR id IN (SELECT shadow_run_id FROM shadow_pairs"
            "           WHERE tenant_id = %(t)s AND live_run_id = ANY(%(ids)s))"
            " OR swarm_id IN (SELECT id FROM swarms"
            "                 WHERE tenant_id = %(t)s AND parent_run_id = ANY(%(ids)s)))",
            {"t": tenant_id, "ids": frontier},
        )
        found = [r for r in await cur.fetchall() if r["id"] not in seen_runs]
        cur = await conn.execute(
            "SELECT id, workflow_id, status FROM swarms"
            " WHERE tenant_id = %s AND parent_run_id = ANY(%s)",
            (tenant_id, frontier),
        )
        for row in await cur.fetchall():
            if row["id"] not in seen_swarms:
                seen_swarms.add(row["id"])
                plan.swarm_ids.append(row["id"])
                plan.workflows.append(_workflow(row, "swarm"))
        frontier = []
        for row in found:
            seen_runs.add(row["id"])
            plan.run_ids.append(row["id"])
            plan.workflows.append(_workflow(row, "run"))
            frontier.append(row["id"])
    plan.busy_owners = await _busy_owners(conn, tenant_id, plan.run_ids, plan.swarm_ids)
    return plan


async def _busy_owners(
    conn: Conn, tenant_id: str, run_ids: list[str], swarm_ids: list[str]
) -> list[str]:
    """Owners of the runs (a parent run, swarm or evolution cycle) that are still going."""
    ended = "('succeeded', 'failed', 'cancelled')"
    cur = await conn.execute(
        "SELECT DISTINCT owner FROM ("
        " SELECT p.id AS owner, p.status FROM runs r JOIN runs p ON p.id = r.parent_run_id"
        "  WHERE r.tenant_id = %(t)s AND r.id = ANY(%(ids)s)"
        " UNION ALL SELECT s.id, s.status FROM runs r JOIN swarms s ON s.id = r.swarm_id"
        "  WHERE r.tenant_id = %(t)s AND r.id = ANY(%(ids)s)"
        " UNION ALL SELECT e.id, e.status FROM runs r JOIN evolutions e ON e.id = r.evolution_id"
        "  WHERE r.tenant_id = %(t)s AND r.id = ANY(%(ids)s)"
        f") o WHERE status NOT IN {ended} AND NOT owner = ANY(%(skip)s) ORDER BY owner",
        {"t": tenant_id, "ids": run_ids, "skip": run_ids + swarm_ids},
    )
    return [str(row["owner"]) for row in await cur.fetchall()]


def _workflow(row: dict[str, Any], kind: str) -> Workflow:
    finished = row["status"] in ("succeeded", "failed", "cancelled")
    return Workflow(workflow_id=row["workflow_id"], finished=finished, kind=kind, id=row["id"])


async def end_user_runs(conn: Conn, tenant_id: str, end_user: str) -> list[str]:
    """Ids of the tenant's runs made for `end_user`, oldest first."""
    cur = await conn.execute(
        "SELECT id FROM runs WHERE tenant_id = %s AND end_user = %s ORDER BY created_at, id",
        (tenant_id, end_user),
    )
    return [str(row["id"]) for row in await cur.fetchall()]


async def delete_rows(conn: Conn, tenant_id: str, plan: DeletionPlan) -> DeletionCounts:
    """Delete the plan's runs and swarms and what derives from them, in one transaction.

    Memories are deleted on the memory lane first (their vectors too); any row left
    (a write that raced the request) goes here, so none outlives its run detached.
    """
    t, ids, swarms = tenant_id, plan.run_ids, plan.swarm_ids
    async with conn.transaction():
        memories = await _count(
            conn, "DELETE FROM memories WHERE tenant_id = %s AND source_run_id = ANY(%s)", (t, ids)
        )
        await conn.execute(
            "DELETE FROM memory_uses WHERE tenant_id = %s AND run_id = ANY(%s)", (t, ids)
        )
        eval_cases = await _count(
            conn,
            "DELETE FROM eval_cases WHERE tenant_id = %s AND source_run_id = ANY(%s)",
            (t, ids),
        )
        await conn.execute(
            "UPDATE evolution_results SET run_id = NULL WHERE tenant_id = %s AND run_id = ANY(%s)",
            (t, ids),
        )
        await conn.execute(
            "DELETE FROM shadow_pairs WHERE tenant_id = %s"
            " AND (live_run_id = ANY(%s) OR shadow_run_id = ANY(%s))",
            (t, ids, ids),
        )
        await conn.execute(
            "UPDATE swarm_subtasks SET run_id = NULL WHERE tenant_id = %s AND run_id = ANY(%s)",
            (t, ids),
        )
        await conn.execute(
            "DELETE FROM swarm_blackboard WHERE tenant_id = %s AND run_id = ANY(%s)", (t, ids)
        )
        await _forget_recalls(conn, t, ids)
        await _forget_evidence(conn, t, ids)
        runs = await _count(
            conn, "DELETE FROM runs WHERE tenant_id = %s AND id = ANY(%s)", (t, ids)
        )
        deleted_swarms = await _count(
            conn, "DELETE FROM swarms WHERE tenant_id = %s AND id = ANY(%s)", (t, swarms)
        )
    return DeletionCounts(
        runs=runs, memories=memories, eval_cases=eval_cases, swarms=deleted_swarms
    )


_QUOTES = (
    "EXISTS (SELECT 1 FROM jsonb_array_elements(e.data->'memories') m"
    " WHERE m->>'source_run_id' = ANY(%(ids)s))"
)


async def _forget_recalls(conn: Conn, tenant_id: str, ids: list[str]) -> None:
    """Other runs that recalled the deleted runs' memories forget them.

    Their `memory.recalled` events lose those entries, and their memory context (the
    recalled text of their system prompt, one block) is dropped. What a run copied from a
    recalled memory into its own messages (a `recall` tool result, an answer) stays.
    """
    args = {"t": tenant_id, "ids": ids}
    recalled = f"e.tenant_id = %(t)s AND e.type = 'memory.recalled' AND {_QUOTES}"
    await conn.execute(
        "UPDATE runs SET memory_context = NULL WHERE tenant_id = %(t)s AND id IN"
        f" (SELECT e.run_id FROM run_events e WHERE {recalled})",
        args,
    )
    await conn.execute(
        "UPDATE run_events e SET data = jsonb_set(e.data, '{memories}', (SELECT"
        " coalesce(jsonb_agg(m), '[]'::jsonb) FROM jsonb_array_elements(e.data->'memories') m"
        " WHERE coalesce(m->>'source_run_id', '') <> ALL(%(ids)s)))"
        f" WHERE {recalled}",
        args,
    )


_WITHOUT_IDS = (
    "(SELECT jsonb_object_agg(k, CASE WHEN jsonb_typeof(v) = 'array' THEN (SELECT"
    " coalesce(jsonb_agg(x), '[]'::jsonb) FROM jsonb_array_elements(v) x"
    " WHERE NOT (jsonb_typeof(x) = 'string' AND x #>> '{{}}' = ANY(%(ids)s))) ELSE v END)"
    " FROM jsonb_each({col}) AS e(k, v))"
)


async def _forget_evidence(conn: Conn, tenant_id: str, ids: list[str]) -> None:
    """Evolution cycles and rollouts that cited the deleted runs forget them.

    A cycle's diagnoses of those runs' failures (which quote their objectives) go; run
    ids in the top-level lists of a cycle's or rollout's evidence (`failed_runs`) go.
    """
    args = {"t": tenant_id, "ids": ids, "sources": [f"run:{i}" for i in ids],
            "like": [f"%{i}%" for i in ids]}  # fmt: skip
    await conn.execute(
        "UPDATE evolutions SET diagnoses = (SELECT coalesce(jsonb_agg(d), '[]'::jsonb)"
        " FROM jsonb_array_elements(diagnoses) d"
        " WHERE coalesce(d->>'source', '') <> ALL(%(sources)s))"
        " WHERE tenant_id = %(t)s AND jsonb_typeof(diagnoses) = 'array'"
        " AND diagnoses::text LIKE ANY(%(like)s)",
        args,
    )
    for table in ("evolutions", "rollouts"):
        query = sql.SQL(
            "UPDATE {table} SET evidence = coalesce(" + _WITHOUT_IDS + ", '{{}}'::jsonb)"
            " WHERE tenant_id = %(t)s AND jsonb_typeof(evidence) = 'object'"
            " AND evidence::text LIKE ANY(%(like)s)"
        ).format(table=sql.Identifier(table), col=sql.Identifier("evidence"))
        await conn.execute(query, args)


async def _count(conn: Conn, query: str, args: tuple[object, ...]) -> int:
    cur = await conn.execute(query, args)
    return cur.rowcount


# -- export ------------------------------------------------------------------------------


async def tenant_tables(conn: Conn) -> list[tuple[str, list[str], bool]]:
    """(table, hidden columns, has a run_id) of every table with a `tenant_id`, by name."""
    cur = await conn.execute(
        "SELECT table_name::text AS t,"
        " array_agg(column_name::text) FILTER (WHERE data_type = 'bytea'"
        "   OR column_name = ANY(%s)) AS hidden,"
        " bool_or(column_name = 'run_id') AS has_run"
        " FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name IN ("
        "   SELECT table_name FROM information_schema.tables"
        "   WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')"
        " GROUP BY table_name HAVING bool_or(column_name = 'tenant_id') ORDER BY table_name",
        (list(HIDDEN_COLUMNS),),
    )
    return [
        (str(r["t"]), list(r["hidden"] or []), bool(r["has_run"]))
        for r in await cur.fetchall()
        if r["t"] not in _SKIPPED_TABLES
    ]


async def export_tenant(conn: Conn, tenant_id: str) -> AsyncIterator[str]:
    """NDJSON lines (with their newline) of the tenant's data, from one snapshot."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield _line({"type": "export", "format": EXPORT_FORMAT, "tenant": tenant_id,
                     "created_at": datetime.now(UTC).isoformat()})  # fmt: skip
        tables = await tenant_tables(conn)
        async for line in _rows(conn, "tenants", [], sql.SQL("id = %s"), (tenant_id,)):
            yield line
        for table, hidden, _ in tables:
            where = sql.SQL("tenant_id = %s")
            async for line in _rows(conn, table, hidden, where, (tenant_id,)):
                yield line


async def export_end_user(conn: Conn, tenant_id: str, end_user: str) -> AsyncIterator[str]:
    """NDJSON lines of one end user's runs and what derives from them."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        ids = await end_user_runs(conn, tenant_id, end_user)
        yield _line({"type": "export", "format": EXPORT_FORMAT, "tenant": tenant_id,
                     "end_user": end_user, "runs": len(ids),
                     "created_at": datetime.now(UTC).isoformat()})  # fmt: skip
        if not ids:
            return
        by_run = sql.SQL("tenant_id = %s AND run_id = ANY(%s)")
        by_source = sql.SQL("tenant_id = %s AND source_run_id = ANY(%s)")
        async for line in _rows(conn, "runs", [], sql.SQL("tenant_id = %s AND id = ANY(%s)"),
                                (tenant_id, ids)):  # fmt: skip
            yield line
        for table, hidden in await _run_tables(conn):
            async for line in _rows(conn, table, hidden, by_run, (tenant_id, ids)):
                yield line
        for table in ("memories", "eval_cases"):
            async for line in _rows(conn, table, [], by_source, (tenant_id, ids)):
                yield line


async def _run_tables(conn: Conn) -> list[tuple[str, list[str]]]:
    return [(t, hidden) for t, hidden, has_run in await tenant_tables(conn) if has_run]


async def _rows(
    conn: Conn, table: str, hidden: list[str], where: sql.Composable, args: tuple[object, ...]
) -> AsyncIterator[str]:
    query = sql.SQL("SELECT to_jsonb(t) - %s::text[] AS row FROM {} t WHERE {}").format(
        sql.Identifier(table), where
    )
    async for row in conn.cursor().stream(query, (hidden, *args)):
        yield _line({"type": table, "row": row["row"]})


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
