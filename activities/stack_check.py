"""The memory lane's activities: Postgres and (from issue #5) Qdrant writes."""

import time

from psycopg.types.json import Jsonb
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._common import worker_identity
from core.db import Pool
from core.errors import ErrorType
from core.stack_check import LaneReport, StackCheckRecord


class MemoryActivities:
    """Activities served by the `memory` lane."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name="record_stack_check")
    async def record_stack_check(self, input: StackCheckRecord) -> LaneReport:
        """Persist the lane reports of a stack check; idempotent per workflow id and step."""
        started = time.perf_counter()
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM tenants WHERE id = %s", (input.tenant_id,))
            if await cur.fetchone() is None:
                raise ApplicationError(
                    f"tenant {input.tenant_id!r} does not exist",
                    type=ErrorType.INVALID_REQUEST,
                    non_retryable=True,
                )
            for report in input.lanes:
                await conn.execute(
                    "INSERT INTO stack_checks (tenant_id, workflow_id, step, detail)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        input.tenant_id,
                        input.workflow_id,
                        report.lane,
                        Jsonb(report.model_dump(mode="json")),
                    ),
                )
            cur = await conn.execute(
                "SELECT count(*) AS n FROM stack_checks WHERE tenant_id = %s AND workflow_id = %s",
                (input.tenant_id, input.workflow_id),
            )
            row = await cur.fetchone()
        stored = int(row["n"]) if row else 0
        return LaneReport(
            lane="memory",
            ok=stored == len(input.lanes),
            detail=f"postgres: {stored} stack-check rows stored for this workflow",
            worker=worker_identity(),
            duration_ms=(time.perf_counter() - started) * 1000,
        )
