"""Run statistics over the `runs` read model (projections/runs.py), computed in SQL: one
statement, grouping sets for the totals, each pipeline and each UTC day.

A run counts in the window [since, until) by the time it was queued, like the run list's
since/until. Durations (average and p95, `percentile_cont`, i.e. interpolated) are over
finished runs that started (a run cancelled while queued has no duration). The success
rate is succeeded / finished, null while nothing finished: queued and running runs have
no outcome yet."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.rows import dict_row

from domain.run import RunStatus
from projections.runs import TERMINAL
from projections.snapshot import ConnectionSource

MAX_WINDOW_DAYS = 366
STATUSES = tuple(s.value for s in RunStatus)

_FINISHED = sql.SQL("status IN ({})").format(sql.SQL(", ").join(map(sql.Literal, TERMINAL)))
_PER_STATUS = sql.SQL(", ").join(
    sql.SQL("count(*) FILTER (WHERE status = {}) AS {}").format(
        sql.Literal(status), sql.Identifier(status)
    )
    for status in STATUSES
)
_QUERY = sql.SQL(
    "SELECT GROUPING(pipeline_id) = 0 AS by_pipeline, GROUPING(day) = 0 AS by_day,"
    " pipeline_id, day, min(tenant_id) AS tenant_id,"
    # A renamed pipeline: name it as its latest run in the window does.
    " (array_agg(pipeline_name ORDER BY queued_at DESC))[1] AS pipeline_name,"
    " count(*) AS total, {per_status}, count(*) FILTER (WHERE {finished}) AS finished,"
    " avg(duration_ms) FILTER (WHERE {finished}) AS avg_duration_ms,"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE {finished})"
    " AS p95_duration_ms"
    " FROM (SELECT tenant_id, pipeline_id, pipeline_name, status, duration_ms, queued_at,"
    " (queued_at AT TIME ZONE 'UTC')::date AS day FROM runs WHERE {where}) scoped"
    " GROUP BY GROUPING SETS ((), (pipeline_id), (day))"
)


@dataclass
class RunCounts:
    total: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    finished: int = 0
    success_rate: float | None = None
    avg_duration_ms: float | None = None
    p95_duration_ms: float | None = None


@dataclass
class PipelineCounts:
    pipeline_id: str
    pipeline_name: str
    tenant_id: str
    counts: RunCounts


@dataclass
class RunStatistics:
    since: datetime
    until: datetime
    totals: RunCounts
    per_pipeline: list[PipelineCounts]
    per_day: list[tuple[date, RunCounts]]
    """Every UTC day the window touches, oldest first, days without runs included."""


def check_window(since: datetime, until: datetime) -> None:
    """Raises ValueError for an empty, inverted or too long window."""
    if since >= until:
        raise ValueError("since must be earlier than until")
    if until - since > timedelta(days=MAX_WINDOW_DAYS):
        raise ValueError(f"the window may span at most {MAX_WINDOW_DAYS} days")


async def run_statistics(
    pool: ConnectionSource,
    tenant_id: str | None,
    since: datetime,
    until: datetime,
    pipeline_id: UUID | None = None,
) -> RunStatistics:
    """Runs queued in [since, until) (aware datetimes) of one tenant, or of every tenant
    for None (a platform admin), optionally of one pipeline."""
    check_window(since, until)
    where, params = _window_filter(since, until, tenant_id, pipeline_id)
    query = _QUERY.format(per_status=_PER_STATUS, finished=_FINISHED, where=where)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    totals = RunCounts()
    per_pipeline: list[PipelineCounts] = []
    days: dict[date, RunCounts] = {}
    for row in rows:
        counts = _counts(row)
        if row["by_pipeline"]:
            per_pipeline.append(
                PipelineCounts(
                    str(row["pipeline_id"]), row["pipeline_name"], row["tenant_id"], counts
                )
            )
        elif row["by_day"]:
            days[row["day"]] = counts
        else:
            totals = counts
    per_pipeline.sort(key=lambda p: (-p.counts.total, p.pipeline_name, p.pipeline_id))
    return RunStatistics(since, until, totals, per_pipeline, _every_day(since, until, days))


def _counts(row: dict[str, Any]) -> RunCounts:
    finished = row["finished"]
    return RunCounts(
        total=row["total"],
        by_status={status: row[status] for status in STATUSES},
        finished=finished,
        success_rate=round(row["succeeded"] / finished, 4) if finished else None,
        avg_duration_ms=_round(row["avg_duration_ms"]),
        p95_duration_ms=_round(row["p95_duration_ms"]),
    )


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _every_day(
    since: datetime, until: datetime, found: dict[date, RunCounts]
) -> list[tuple[date, RunCounts]]:
    # A chart wants every day of the window, the quiet ones as zeros. The last day is the
    # one holding the last instant before `until` (an exclusive bound at midnight does
    # not add the day it starts).
    first = _utc_day(since)
    last = _utc_day(until - timedelta(microseconds=1))
    return [
        (first + timedelta(days=n), found.get(first + timedelta(days=n), RunCounts()))
        for n in range((last - first).days + 1)
    ]


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


# Runs over time, for the dashboard's charts: the same counts and duration rules as
# above, per UTC hour or day, with the median beside the p95.
BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_TIMELINE = sql.SQL(
    "SELECT date_trunc({unit}, queued_at AT TIME ZONE 'UTC') AS bucket,"
    " count(*) AS total, {per_status}, count(*) FILTER (WHERE {finished}) AS finished,"
    " avg(duration_ms) FILTER (WHERE {finished}) AS avg_duration_ms,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE {finished})"
    " AS p50_duration_ms,"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE {finished})"
    " AS p95_duration_ms"
    " FROM runs WHERE {where} GROUP BY 1"
)


@dataclass
class TimelineBucket:
    start: datetime
    """The bucket's first instant (UTC); it spans BUCKETS[unit]."""
    counts: RunCounts
    p50_duration_ms: float | None = None


async def run_timeline(
    pool: ConnectionSource,
    tenant_id: str | None,
    since: datetime,
    until: datetime,
    unit: str,
    pipeline_id: UUID | None = None,
) -> list[TimelineBucket]:
    """Runs queued in [since, until) per UTC `unit` ("hour" or "day"), every bucket the
    window touches (quiet ones as zeros), oldest first; tenant None: every tenant's.
    Raises ValueError for a bad unit or window, or one of more than 1,000 buckets."""
    if unit not in BUCKETS:
        raise ValueError(f"the unit must be one of {', '.join(BUCKETS)}")
    check_window(since, until)
    first, step = _floor(since, unit), BUCKETS[unit]
    count = -(-(until - first) // step)  # ceiling: the bucket holding until's last instant
    if count > 1_000:
        raise ValueError(f"the window holds more than 1000 {unit}s")
    where, params = _window_filter(since, until, tenant_id, pipeline_id)
    query = _TIMELINE.format(
        unit=sql.Literal(unit),
        per_status=_PER_STATUS,
        finished=_FINISHED,
        where=where,
    )
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    found = {
        row["bucket"].replace(tzinfo=UTC): TimelineBucket(
            row["bucket"].replace(tzinfo=UTC), _counts(row), _round(row["p50_duration_ms"])
        )
        for row in rows
    }
    starts = (first + n * step for n in range(count))
    return [found.get(start) or TimelineBucket(start, RunCounts()) for start in starts]


def _window_filter(
    since: datetime, until: datetime, tenant_id: str | None, pipeline_id: UUID | None
) -> tuple[sql.Composed, list[Any]]:
    """Runs queued in [since, until), of one tenant (None: every tenant) and optionally
    of one pipeline: the WHERE of both queries, and its parameters."""
    conditions = [sql.SQL("queued_at >= %s"), sql.SQL("queued_at < %s")]
    params: list[Any] = [since, until]
    if tenant_id is not None:
        conditions.append(sql.SQL("tenant_id = %s"))
        params.append(tenant_id)
    if pipeline_id is not None:
        conditions.append(sql.SQL("pipeline_id = %s"))
        params.append(pipeline_id)
    return sql.SQL(" AND ").join(conditions), params


def _floor(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if unit == "day" else moment
