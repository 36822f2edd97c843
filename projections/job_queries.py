"""Queries over the `jobs` read model (projections/jobs.py): one job, and lists filtered
by enabled, target and labels. Every query is scoped to a tenant; a tenant of None means
a platform admin, who sees every tenant's jobs.

There is no lookup by name: names are the write side's (its NameClaim), and a read model
that lags could answer a name with the job that held it before."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from domain.job import JobSpec, JobTarget
from projections.jobs import target_id
from projections.pagination import Page, Where, check_order, select_one, select_page

_TABLE = sql.Identifier("jobs")
JOB_COLUMNS = sql.SQL(
    "id, tenant_id, name, target_deployment_id, target_pipeline_id, target_revision,"
    " cron_expr, timezone, params, misfire_policy, max_catchup, overlap_policy,"
    " jitter_seconds, start_at, end_at, description, labels, enabled, disabled_reason,"
    " deleted, created_by, created_at, updated_at, version, position"
)
SCHEDULER_FIELDS = ("last_run", "last_run_id", "fired", "skipped", "missed", "refused", "late")
"""What the scheduler did with a job (job_schedules, migration 0013), merged into each row;
`last_status` is its last run's status, from the runs read model."""

_SCHEDULES = sql.SQL(
    "SELECT s.job_id, s.last_run, s.last_run_id, s.fired, s.skipped, s.missed, s.refused,"
    " s.late, r.status AS last_status FROM job_schedules s"
    " LEFT JOIN runs r ON r.id = s.last_run_id WHERE s.job_id = ANY(%s)"
)


def _ids(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("id", "last_run_id"):
        if row.get(key) is not None:
            row[key] = str(row[key])
    return row


def _blank(row: dict[str, Any]) -> dict[str, Any]:
    """A job the scheduler has not seen yet: nothing fired, nothing counted."""
    row.update({"last_run": None, "last_run_id": None, "last_status": None})
    row.update({name: 0 for name in ("fired", "skipped", "missed", "refused", "late")})
    return row


def _target_filter(value: str, field: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here as a bad filter (400), not a 500.
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL")
    return target_id(value) or value


class JobQueries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str | None, job_id: UUID) -> dict[str, Any] | None:
        """The job, or None if the tenant has no such job. A deleted job is returned too,
        with `deleted` True: the caller decides whether that is a 404 (the job's routes)
        or a row to show (its history, an admin's look)."""
        where = Where().add("id = %s", job_id).tenant(tenant_id)
        row = await select_one(self._pool, JOB_COLUMNS, _TABLE, where)
        if row is None:
            return None
        await self._with_schedules([row])
        return _ids(row)

    async def _with_schedules(self, rows: list[dict[str, Any]]) -> None:
        """Merge what the scheduler did with each job into its row (one query a page)."""
        if not rows:
            return
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_SCHEDULES, ([row["id"] for row in rows],))
            found = {state.pop("job_id"): state for state in await cur.fetchall()}
        for row in rows:
            state = found.get(row["id"] if isinstance(row["id"], UUID) else UUID(row["id"]))
            if state is None:
                _blank(row)
            else:
                row.update(state)

    async def list(
        self,
        tenant_id: str | None,
        *,
        enabled: bool | None = None,
        deployment_id: str | None = None,
        pipeline_id: str | None = None,
        target: str | None = None,
        labels: Mapping[str, str] | None = None,
        order: str = "desc",
        limit: int = 50,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Jobs not deleted, newest first by default, keyset-paginated on (created_at, id)
        or numbered pages; `deployment_id`/`pipeline_id` match the job's target; a job
        must carry every one of `labels`. Raises ValueError for a bad filter, order,
        limit, cursor or page."""
        where = Where().tenant(tenant_id).add("NOT deleted")
        if enabled is not None:
            where.add("enabled = %s", enabled)
        if deployment_id is not None:
            where.add("target_deployment_id = %s", _target_filter(deployment_id, "deployment_id"))
        if pipeline_id is not None:
            where.add("target_pipeline_id = %s", _target_filter(pipeline_id, "pipeline_id"))
        if target is not None:  # either kind of target
            value = _target_filter(target, "target")
            where.add("(target_deployment_id = %s OR target_pipeline_id = %s)", value, value)
        if labels:
            if any("\x00" in f"{k}{v}" for k, v in labels.items()):
                raise ValueError("a label filter must not contain NUL")
            where.add("labels @> %s", Jsonb(dict(labels)))  # uses the GIN index
        result = await select_page(
            self._pool,
            JOB_COLUMNS,
            _TABLE,
            where,
            sort="created_at",
            order=check_order(order),
            value_type=datetime,
            limit=limit,
            cursor=cursor,
            page=page,
        )
        await self._with_schedules(list(result.items))
        return result.map(_ids)


def job_spec(row: dict[str, Any]) -> JobSpec:
    """A job's definition from its read-model row."""
    return JobSpec(
        name=row["name"],
        target=JobTarget(
            deployment_id=row["target_deployment_id"],
            pipeline_id=row["target_pipeline_id"],
            revision=row["target_revision"],
        ),
        cron_expr=row["cron_expr"],
        timezone=row["timezone"],
        params=row["params"] or {},
        misfire_policy=row["misfire_policy"],
        max_catchup=row["max_catchup"],
        overlap_policy=row["overlap_policy"],
        jitter_seconds=row["jitter_seconds"],
        start_at=row["start_at"],
        end_at=row["end_at"],
        description=row["description"],
        labels=row["labels"] or {},
    )
