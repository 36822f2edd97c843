"""The run statistics page (GET /ui/runs/stats): runs per hour (last 24 hours) or per
day (last 7 or 30 days) by outcome, and the median and p95 durations over time, of the
tenant or of one pipeline. The totals are the API's GET /api/v1/runs/statistics query
(`RunStatistics`) over the same window, read with the series in one snapshot
(`RunQueries.statistics_and_timeline`), both SQL over the runs read model, tenant
scoped. Charts are inline SVG (api/ui/charts.py), each with a title, a description and
the table of its numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from litestar import Request, Response
from litestar.exceptions import ValidationException

from api.auth import principal_of
from api.ui.charts import OUTCOMES, bar_chart, line_chart, outcome_counts
from api.ui.views import page
from api.visualize import format_duration
from application.errors import NotFound

WINDOWS = {"24h": ("hour", 24), "7d": ("day", 7), "30d": ("day", 30)}
"""window=: (bucket unit, buckets), the last ending with the current hour or day."""
WINDOW_NAMES = {"24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days"}
DEFAULT_WINDOW = "24h"


def window_of(raw: str | None, now: datetime) -> tuple[str, str, datetime, datetime]:
    """(window, unit, since, until) for window=; a 400 naming the choices otherwise."""
    window = raw or DEFAULT_WINDOW
    if window not in WINDOWS:
        message = f"window must be one of {', '.join(WINDOWS)}"
        raise ValidationException(
            message, extra=[{"message": message, "key": "window", "source": "query"}]
        )
    unit, count = WINDOWS[window]
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        current = current.replace(hour=0)
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    return window, unit, current - (count - 1) * step, current + step


async def stats_page(
    request: Request,
    run_queries: Any,
    pipeline_queries: Any,
    raw_window: str | None,
    pipeline_id: UUID | None,
) -> Response[Any]:
    window, unit, since, until = window_of(raw_window, datetime.now(UTC))
    tenant_id = principal_of(request).tenant_id
    pipeline = None
    if pipeline_id is not None:
        pipeline = await pipeline_queries.get(tenant_id, pipeline_id)
        if pipeline is None:  # another tenant's, or none: as the API answers
            raise NotFound("pipeline", pipeline_id)
    totals, buckets = await run_queries.statistics_and_timeline(
        tenant_id, since, until, unit, pipeline_id
    )
    fmt = "%H:%M" if unit == "hour" else "%m-%d"
    labels = [b.start.strftime(fmt) for b in buckets]
    runs = bar_chart(labels, [b.counts for b in buckets])
    durations = line_chart(
        labels,
        [
            ("p50", "median", [b.p50_duration_ms for b in buckets]),
            ("p95", "95th percentile", [b.counts.p95_duration_ms for b in buckets]),
        ],
        format_duration,
    )
    rows = [
        {
            "start": b.start,
            "label": b.start.strftime("%Y-%m-%d %H:%M" if unit == "hour" else "%Y-%m-%d"),
            "total": b.counts.total,
            "outcomes": outcome_counts(b.counts),
            "p50": b.p50_duration_ms,
            "p95": b.counts.p95_duration_ms,
        }
        for b in buckets
    ]
    return page(
        request,
        "run_stats.html",
        window=window,
        windows=WINDOW_NAMES,
        unit=unit,
        since=since,
        until=until,
        pipeline=pipeline,
        totals=totals.totals,
        totals_by_outcome=outcome_counts(totals.totals),
        per_pipeline=totals.per_pipeline if pipeline is None else [],
        outcomes=OUTCOMES,
        runs_chart=runs,
        durations_chart=durations,
        rows=rows,
    )
