"""A pipeline's recent run history per step, for POST /pipelines/{id}:analyze: over its
latest finished runs (the `runs` and `run_steps` read models), each step's executions,
failures and skips, p50 and p95 duration (`percentile_cont`, interpolated; reused steps
left out, they did no work) and the records it took in and gave out. One statement,
scoped to the pipeline's tenant."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from application.authoring.history import RunHistory, StepHistory
from projections.runs import TERMINAL

WINDOW = 100
_DURATION = "extract(epoch FROM s.finished_at - s.started_at) * 1000"
_RAN = "s.status IN ('succeeded', 'failed')"
_QUERY = sql.SQL(
    "WITH recent AS (SELECT id, status, duration_ms FROM runs"
    " WHERE tenant_id = %(tenant)s AND pipeline_id = %(pipeline)s AND status IN ({terminal})"
    " ORDER BY queued_at DESC, id DESC LIMIT %(window)s)"
    " SELECT NULL AS name, count(*) AS runs,"
    " count(*) FILTER (WHERE status = 'succeeded') AS succeeded, 0 AS executed, 0 AS failed,"
    " 0 AS skipped,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95,"
    " NULL::float AS records_in, NULL::float AS records_out FROM recent"
    " UNION ALL"
    " SELECT s.name, count(*), 0, count(*) FILTER (WHERE {ran}),"
    " count(*) FILTER (WHERE s.status = 'failed'), count(*) FILTER (WHERE s.status = 'skipped'),"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY {duration}) FILTER (WHERE {timed}),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY {duration}) FILTER (WHERE {timed}),"
    " avg(s.records_in) FILTER (WHERE {ran}), avg(s.records_out) FILTER (WHERE {ran})"
    " FROM run_steps s JOIN recent r ON r.id = s.run_id GROUP BY s.name"
).format(
    terminal=sql.SQL(", ").join(map(sql.Literal, TERMINAL)),
    ran=sql.SQL(_RAN),
    duration=sql.SQL(_DURATION),
    timed=sql.SQL(
        f"{_RAN} AND NOT s.reused AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL"
    ),
)


class StepHistoryQueries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def run_history(
        self, tenant_id: str, pipeline_id: UUID, window: int = WINDOW
    ) -> RunHistory:
        params = {"tenant": tenant_id, "pipeline": pipeline_id, "window": window}
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_QUERY, params)
            rows = await cur.fetchall()
        runs = next(r for r in rows if r["name"] is None)
        steps = sorted((_step(r) for r in rows if r["name"] is not None), key=lambda s: s.step)
        return RunHistory(
            window=window,
            runs=runs["runs"],
            succeeded=runs["succeeded"],
            p50_ms=_round(runs["p50"]),
            p95_ms=_round(runs["p95"]),
            steps=steps,
        )


def _step(row: dict[str, Any]) -> StepHistory:
    return StepHistory(
        step=row["name"],
        runs=row["runs"],
        executed=row["executed"],
        failed=row["failed"],
        skipped=row["skipped"],
        p50_ms=_round(row["p50"]),
        p95_ms=_round(row["p95"]),
        avg_records_in=_round(row["records_in"]),
        avg_records_out=_round(row["records_out"]),
    )


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)
