"""Encoding of GET /api/v1/runs/export: pages of runs (with their steps) to NDJSON lines
or CSV rows, one chunk per page, so the response streams while the rows are read."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from api.controllers.run_views import run_detail
from projections.run_queries import STEP_SUMMARY_STATUSES

ExportFormat = Literal["ndjson", "csv"]
MEDIA_TYPES: dict[str, str] = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",  # Litestar adds "; charset=utf-8" to text/ types
}
# Pages of runs read at a time: an NDJSON page carries every step of every run (up to
# 500 each), a CSV page only their counts.
PAGE_SIZES: dict[str, int] = {"ndjson": 100, "csv": 500}
STEP_DETAIL: dict[str, Literal["full", "summary"]] = {"ndjson": "full", "csv": "summary"}
RUN_COLUMNS = (
    "id",
    "tenant_id",
    "pipeline_id",
    "pipeline_name",
    "namespace",
    "revision",
    "status",
    "trigger_kind",
    "trigger_id",
    "retry_of",
    "retried_by",
    "resume_from",
    "attempt",
    "executor_id",
    "cancel_requested",
    "error",
    "current_step",
    "created_by",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_ms",
)
CSV_COLUMNS = (
    *RUN_COLUMNS,
    "params",
    "steps_total",
    *(f"steps_{status}" for status in STEP_SUMMARY_STATUSES),
    "steps_unfinished",
    "step_attempts",
    "failed_steps",
)
"""One row per run; its steps summarised as counts (a CSV cell cannot nest them)."""

_json = msgspec.json.Encoder()


def filename(export_format: ExportFormat, now: datetime) -> str:
    return f"runs-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{export_format}"


def ndjson_page(rows: list[dict[str, Any]]) -> bytes:
    """One JSON object per line: the run as GET /runs/{id} answers it, steps included."""
    return b"".join(_json.encode(run_detail(row)) + b"\n" for row in rows)


def csv_header() -> bytes:
    return _csv_lines([CSV_COLUMNS])


def csv_page(rows: list[dict[str, Any]]) -> bytes:
    return _csv_lines([_csv_row(row) for row in rows])


def _csv_lines(rows: list[Any]) -> bytes:
    out = io.StringIO()
    # csv quotes what needs it (commas, quotes, newlines in errors); RFC 4180 CRLF rows.
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _csv_row(row: dict[str, Any]) -> list[str]:
    steps = row["step_summary"]
    counted = sum(steps[status] for status in STEP_SUMMARY_STATUSES)
    return [
        *(_cell(row[column]) for column in RUN_COLUMNS),
        _json.encode(row["params"]).decode(),
        str(steps["total"]),
        *(str(steps[status]) for status in STEP_SUMMARY_STATUSES),
        str(steps["total"] - counted),
        str(steps["attempts"]),
        steps["failed_steps"],
    ]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


async def encoded(
    export_format: ExportFormat,
    first_page: list[dict[str, Any]],
    more_pages: AsyncIterator[list[dict[str, Any]]],
) -> AsyncIterator[bytes]:
    """The response body: the header (CSV), then each page as it is read. The first page
    was read before the response started, so a bad filter or a database that is down
    still answers with a proper error status instead of a cut-off 200."""
    encode: Callable[[list[dict[str, Any]]], bytes] = (
        csv_page if export_format == "csv" else ndjson_page
    )
    try:
        if export_format == "csv":
            yield csv_header()
        if first_page:
            yield encode(first_page)
        async for rows in more_pages:
            yield encode(rows)
    finally:
        # A client that hangs up stops the walk here, not at garbage collection.
        aclose = getattr(more_pages, "aclose", None)
        if aclose is not None:
            await aclose()
