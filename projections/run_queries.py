"""Queries over the `runs` read model (projections/runs.py): one run with its steps, and
lists filtered by status, pipeline, job, trigger, deployment, environment and time.
Every query is scoped to a tenant; a tenant of None means a platform admin, who sees
every tenant's runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from psycopg import sql
from psycopg.rows import dict_row

from projections.pagination import (
    Page,
    Where,
    check_order,
    select_page,
)
from projections.run_statistics import (
    STATUSES,
    RunStatistics,
    TimelineBucket,
    run_statistics,
    run_timeline,
)
from projections.snapshot import ConnectionSource, snapshot

_RUNS = sql.Identifier("runs")
RUN_FIELDS = (
    *("id", "tenant_id", "pipeline_id", "pipeline_name", "namespace", "revision", "status"),
    *("trigger_kind", "trigger_id", "deployment_id", "environment", "release", "retry_of"),
    *("resume_from", "params", "attempt", "executor_id", "cancel_requested", "error"),
    *("current_step", "created_by", "queued_at", "started_at", "finished_at", "duration_ms"),
    *("version", "position", "scheduled_for", "retried_by"),
)
RUN_COLUMNS = sql.SQL(", ").join(sql.Identifier(f) for f in RUN_FIELDS)
STEP_FIELDS = (
    *("run_id", "name", "ordinal", "plugin", "depends_on", "status", "attempts"),
    *("started_at", "finished_at", "error", "records_in", "records_out", "reused"),
)
STEP_COLUMNS = ", ".join(STEP_FIELDS)
_RUN_AND_STEPS = sql.SQL(
    "SELECT {}, {} FROM runs r LEFT JOIN run_steps s ON s.run_id = r.id"
).format(
    sql.SQL(", ").join(sql.Identifier("r", f) for f in RUN_FIELDS),
    sql.SQL(", ").join(sql.Identifier("s", f) for f in STEP_FIELDS),
)
"""A run with its steps, a row per step: one statement, so one snapshot."""
TRIGGERS = ("user", "api_key", "job", "deployment", "retry", "system")
STEP_SUMMARY_STATUSES = ("succeeded", "failed", "skipped", "cancelled")
_STEP_SUMMARY = (
    "SELECT run_id, count(*) AS total, "
    + ", ".join(f"count(*) FILTER (WHERE status = '{s}') AS {s}" for s in STEP_SUMMARY_STATUSES)
    + ", coalesce(sum(attempts), 0) AS attempts,"
    " coalesce(string_agg(name, ';' ORDER BY ordinal) FILTER (WHERE status = 'failed'), '')"
    " AS failed_steps FROM run_steps WHERE run_id = ANY(%s::uuid[]) GROUP BY run_id"
)
_NO_STEPS = {
    "total": 0,
    **dict.fromkeys(STEP_SUMMARY_STATUSES, 0),
    "attempts": 0,
    "failed_steps": "",
}


def _ids(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("id", "pipeline_id", "retry_of", "run_id", "deployment_id"):
        if row.get(key) is not None:
            row[key] = str(row[key])
    return row


class RunQueries:
    def __init__(self, pool: ConnectionSource) -> None:
        self._pool = pool

    async def get(self, tenant_id: str | None, run_id: UUID) -> dict[str, Any] | None:
        """The run with its steps (in definition order) under "steps", read in one
        statement: read apart, a projection's commit could fall between the two (a
        requeued run shown `queued` beside its next attempt's running steps)."""
        where = Where().add("r.id = %s", run_id).tenant(tenant_id, "r.tenant_id")
        query = _RUN_AND_STEPS + where.clause() + sql.SQL(" ORDER BY s.ordinal")
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(query, where.params)).fetchall()
        if not rows:
            return None
        width = len(RUN_FIELDS)
        run = _ids(dict(zip(RUN_FIELDS, rows[0][:width], strict=True)))
        run["steps"] = [
            _ids(dict(zip(STEP_FIELDS, row[width:], strict=True)))
            for row in rows
            if row[width] is not None  # a run without steps joins one row of NULLs
        ]
        return run

    async def list(
        self,
        tenant_id: str | None,
        *,
        status: str | None = None,
        pipeline_id: UUID | None = None,
        job_id: str | None = None,
        triggered_by: str | None = None,
        deployment_id: UUID | None = None,
        environment: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        order: str = "desc",
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Newest first by default, keyset-paginated on (queued_at, id). `triggered_by`
        is a trigger kind (user, api_key, job, ...) or an actor id. Raises ValueError for
        a bad filter, limit or cursor."""
        where = Where().tenant(tenant_id)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}")
            where.add("status = %s", status)
        if pipeline_id is not None:
            where.add("pipeline_id = %s", pipeline_id)
        if job_id is not None:
            where.add("trigger_kind = 'job' AND trigger_id = %s", job_id)
        if triggered_by is not None:
            column = "trigger_kind" if triggered_by in TRIGGERS else "trigger_id"
            where.add(sql.SQL("{} = %s").format(sql.Identifier(column)), triggered_by)
        if deployment_id is not None:
            where.add("deployment_id = %s", deployment_id)
        if environment is not None:
            if "\x00" in environment or len(environment) > 63:
                raise ValueError("environment must be an environment name")
            where.add("environment = %s", environment)  # runs of deployments only
        if since is not None:
            where.add("queued_at >= %s", since)
        if until is not None:
            where.add("queued_at < %s", until)
        result = await select_page(
            self._pool,
            RUN_COLUMNS,
            _RUNS,
            where,
            sort="queued_at",
            order=check_order(order),
            value_type=datetime,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        return result.map(_ids)

    async def typical_duration(self, tenant_id: str, pipeline_id: str) -> float | None:
        """Mean duration (ms) of the pipeline's last 20 succeeded runs, for estimates."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT avg(duration_ms) FROM (SELECT duration_ms FROM runs"
                " WHERE tenant_id = %s AND pipeline_id = %s AND status = 'succeeded'"
                " ORDER BY finished_at DESC LIMIT 20) recent",
                (tenant_id, pipeline_id),
            )
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def steps_of(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The steps of several runs (in definition order), by run id: one query per page
        of an export instead of one per run."""
        if not run_ids:
            return {}
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {STEP_COLUMNS} FROM run_steps WHERE run_id = ANY(%s::uuid[])"
                " ORDER BY run_id, ordinal",
                (list(run_ids),),
            )
            rows = await cur.fetchall()
        steps: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in run_ids}
        for row in rows:
            steps[str(row["run_id"])].append(_ids(row))
        return steps

    async def step_summaries(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per run: how many steps, how many ended in each status, the attempts spent and
        the failed steps' names, counted in SQL so that no step row is loaded."""
        summaries = {run_id: dict(_NO_STEPS) for run_id in run_ids}
        if not run_ids:
            return summaries
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_STEP_SUMMARY, (list(run_ids),))
            for row in await cur.fetchall():
                summaries[str(row.pop("run_id"))] = row
        return summaries

    async def pages(
        self,
        tenant_id: str | None,
        *,
        page_size: int = 500,
        steps: Literal["full", "summary"] = "full",
        **filters: Any,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every run the filters (those of `list`) select, newest first, a page at a time,
        each run with its steps under "steps" (full) or their counts under
        "step_summary". Keyset pages: memory holds one page, each page borrows a pooled
        connection only while it is read, and runs queued during the walk (newer than
        its start) do not shift it. Raises ValueError for a bad filter at the first page."""
        cursor: str | None = None
        while True:
            # The page and its steps from one snapshot (projections/snapshot.py), the
            # connection given back before the page is handed on.
            async with snapshot(self._pool) as source:
                within = RunQueries(source)
                rows, cursor = await within.list(
                    tenant_id, limit=page_size, cursor=cursor, **filters
                )
                ids = [row["id"] for row in rows]
                if steps == "full":
                    by_run = await within.steps_of(ids)
                    for row in rows:
                        row["steps"] = by_run[row["id"]]
                else:
                    summaries = await within.step_summaries(ids)
                    for row in rows:
                        row["step_summary"] = summaries[row["id"]]
            yield rows
            if cursor is None:
                return

    async def statistics(
        self,
        tenant_id: str | None,
        since: datetime,
        until: datetime,
        pipeline_id: UUID | None = None,
    ) -> RunStatistics:
        """See projections/run_statistics.py. Raises ValueError for a bad window."""
        return await run_statistics(self._pool, tenant_id, since, until, pipeline_id)

    async def statistics_and_timeline(
        self,
        tenant_id: str | None,
        since: datetime,
        until: datetime,
        unit: str,
        pipeline_id: UUID | None = None,
    ) -> tuple[RunStatistics, list[TimelineBucket]]:
        """`statistics` and the per hour or day buckets (projections/run_statistics.py
        `run_timeline`) from one snapshot (projections/snapshot.py), so a page showing
        both has totals that are the sums of its buckets."""
        async with snapshot(self._pool) as source:
            totals = await run_statistics(source, tenant_id, since, until, pipeline_id)
            buckets = await run_timeline(source, tenant_id, since, until, unit, pipeline_id)
        return totals, buckets

    async def latest(
        self,
        tenant_id: str | None,
        statuses: Sequence[str] = (),
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The newest runs (by queue time) in any of `statuses` (none: any status), for
        the dashboard's running / failed views. Raises ValueError for an unknown status."""
        where = Where().tenant(tenant_id)
        if unknown := [s for s in statuses if s not in STATUSES]:
            raise ValueError(f"unknown status {unknown[0]!r}")
        if statuses:
            where.add("status = ANY(%s)", list(statuses))
        result = await select_page(
            self._pool,
            RUN_COLUMNS,
            _RUNS,
            where,
            sort="queued_at",
            order="desc",
            value_type=datetime,
            limit=limit,
            cursor=None,
        )
        return [_ids(row) for row in result.items]
