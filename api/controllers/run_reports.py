"""Reports over runs and pipelines: GET /api/v1/runs/statistics (computed in SQL over the
runs read model), GET /api/v1/runs/export (streamed NDJSON or CSV) and the text drawings
GET /api/v1/runs/{id}/visualize and GET /api/v1/pipelines/{id}/visualize."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, get
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, Schema
from litestar.params import FromPath, FromQuery, Parameter
from litestar.response import Stream

from api.auth import principal_of
from api.controllers.common import MinPosition, TextFilter
from api.controllers.run_export import (
    MEDIA_TYPES,
    PAGE_SIZES,
    STEP_DETAIL,
    ExportFormat,
    encoded,
    filename,
)
from api.controllers.run_views import statistics_out
from api.dependencies import (
    PipelineQueriesDep,
    PipelineServiceDep,
    ReadYourWritesDep,
    RunQueriesDep,
)
from api.schemas.runs import RunStatisticsOut
from api.visualize import RunHeader, StepNode, render_pipeline, render_run
from application.authorization import Permission
from application.errors import NotFound
from projections.run_statistics import MAX_WINDOW_DAYS, STATUSES, check_window

RUNS_READ = {"permission": Permission.RUNS_READ}
PIPELINES_READ = {"permission": Permission.PIPELINES_READ}
DEFAULT_WINDOW = timedelta(days=30)
StatusFilter = Annotated[
    str | None,
    Parameter(max_length=20, description=f"one of {', '.join(STATUSES)}"),
]
Instant = Annotated[
    str | None,
    Parameter(
        max_length=64,
        description="RFC 3339 date-time (UTC if it names no offset; in a URL write + as"
        " %2B) or a date, meaning 00:00 UTC that day",
    ),
]


def parse_instant(raw: str | None, key: str) -> datetime | None:
    """A query parameter as an aware UTC datetime. Refused (400, naming the parameter)
    when it is neither a date nor an ISO 8601 / RFC 3339 date-time."""
    if raw is None:
        return None
    text = raw.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        message = f"{key} must be an RFC 3339 date-time like 2024-05-01T12:00:00Z or a date"
        if " " in text:
            message += " (in a URL, write + as %2B)"
        raise ValidationException(
            message, extra=[{"message": message, "key": key, "source": "query"}]
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+02:00 is before the first representable UTC day
        message = f"{key} is out of range"
        raise ValidationException(
            message, extra=[{"message": message, "key": key, "source": "query"}]
        ) from None


@dataclass
class _ExportOperation(Operation):
    """Documents the export's body as what it is (NDJSON or CSV text, by `format`), not
    the JSON Litestar assumes for a stream."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if ok is not None and not isinstance(ok, Reference):
            text = Schema(type=OpenAPIType.STRING)
            ok.content = {media: OpenAPIMediaType(schema=text) for media in MEDIA_TYPES.values()}


def _window_problem(message: str, key: str = "since") -> ValidationException:
    return ValidationException(message, extra=[{"message": message, "key": key, "source": "query"}])


def statistics_window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """Defaults: until now, since 30 days before until."""
    until = until or datetime.now(UTC)
    try:
        since = since or until - DEFAULT_WINDOW
    except OverflowError:
        raise _window_problem("until is too early for the default 30-day window", "until") from None
    try:
        check_window(since, until)
    except ValueError as error:
        raise _window_problem(str(error)) from None
    return since, until


class RunReportController(Controller):
    path = "/api/v1"
    tags = ["runs"]

    @get(
        "/runs/statistics",
        opt=RUNS_READ,
        summary="Run statistics: counts per status, success rate, average and p95 duration;"
        " in total, per pipeline and per UTC day. Window [since, until) by queue time;"
        f" default the last 30 days, at most {MAX_WINDOW_DAYS} days",
    )
    async def statistics(
        self,
        request: Request,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        since: Instant = None,
        until: Instant = None,
        pipeline_id: FromQuery[UUID | None] = None,
        min_position: MinPosition = None,
    ) -> RunStatisticsOut:
        start, end = statistics_window(parse_instant(since, "since"), parse_instant(until, "until"))
        await read_your_writes("runs", min_position)
        tenant_id = principal_of(request).tenant_id
        stats = await run_queries.statistics(tenant_id, start, end, pipeline_id)
        return statistics_out(stats, pipeline_id)

    @get(
        "/runs/export",
        opt=RUNS_READ,
        summary="Every run the filters select (those of GET /runs), newest first, streamed"
        " as NDJSON (one run with its steps per line) or CSV (a header, one run per row,"
        " steps as counts)",
        response_description="A download: Content-Disposition names runs-<time>.ndjson|csv",
        operation_class=_ExportOperation,
    )
    async def export(
        self,
        request: Request,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        format: FromQuery[ExportFormat] = "ndjson",
        status: StatusFilter = None,
        pipeline_id: FromQuery[UUID | None] = None,
        job_id: TextFilter = None,
        triggered_by: TextFilter = None,
        since: Instant = None,
        until: Instant = None,
        min_position: MinPosition = None,
    ) -> Stream:
        start, end = parse_instant(since, "since"), parse_instant(until, "until")
        if start is not None and end is not None and start >= end:
            raise _window_problem("since must be earlier than until")
        await read_your_writes("runs", min_position)
        pages = run_queries.pages(
            principal_of(request).tenant_id,
            page_size=PAGE_SIZES[format],
            steps=STEP_DETAIL[format],
            status=status,
            pipeline_id=pipeline_id,
            job_id=job_id,
            triggered_by=triggered_by,
            since=start,
            until=end,
        )
        try:
            first = await anext(pages)
        except ValueError as error:
            raise ValidationException(str(error)) from None
        name = filename(format, datetime.now(UTC))
        return Stream(
            encoded(format, first, pages),
            media_type=MEDIA_TYPES[format],
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            },
        )

    @get(
        "/runs/{run_id:uuid}/visualize",
        opt=RUNS_READ,
        media_type=MediaType.TEXT,
        summary="A text drawing of the run's step graph with each step's state and duration",
    )
    async def visualize_run(
        self,
        run_id: FromPath[UUID],
        request: Request,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[str]:
        await read_your_writes("runs", min_position)
        row = await run_queries.get(principal_of(request).tenant_id, run_id)
        if row is None:
            raise NotFound("run", run_id)
        header = RunHeader(
            run_id=row["id"],
            pipeline_name=row["pipeline_name"],
            revision=row["revision"],
            status=row["status"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
        )
        steps = [
            StepNode(
                name=s["name"],
                plugin=s["plugin"],
                depends_on=tuple(s["depends_on"]),
                status=s["status"],
                started_at=s["started_at"],
                finished_at=s["finished_at"],
                attempts=s["attempts"],
                error=s["error"],
            )
            for s in row["steps"]
        ]
        return _text(render_run(header, steps, datetime.now(UTC)))

    @get(
        "/pipelines/{pipeline_id:uuid}/visualize",
        opt=PIPELINES_READ,
        media_type=MediaType.TEXT,
        tags=["pipelines"],
        summary="A text drawing of the pipeline's step graph (current or given revision)",
    )
    async def visualize_pipeline(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        pipelines: PipelineServiceDep,
        pipeline_queries: PipelineQueriesDep,
        read_your_writes: ReadYourWritesDep,
        revision: Annotated[int | None, Parameter(ge=1)] = None,
        min_position: MinPosition = None,
    ) -> Response[str]:
        principal = principal_of(request)
        if revision is not None:
            record = await pipelines.revision(principal, pipeline_id, revision)
            definition = record.definition
            steps = [StepNode(s.name, s.plugin, tuple(s.depends_on)) for s in definition.steps]
            return _text(render_pipeline(definition.name, revision, steps))
        await read_your_writes("pipelines", min_position)
        row = await pipeline_queries.get(principal.tenant_id, pipeline_id)
        if row is None:
            raise NotFound("pipeline", pipeline_id)
        steps = [_definition_step(s) for s in row["steps"]]
        return _text(render_pipeline(row["name"], row["revision"], steps))


def _definition_step(step: dict[str, Any]) -> StepNode:
    return StepNode(step["name"], step["plugin"], tuple(step.get("depends_on", ())))


def _text(body: str) -> Response[str]:
    return Response(body, media_type=MediaType.TEXT)  # Litestar adds "; charset=utf-8"
