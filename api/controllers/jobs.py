"""/api/v1/scheduler/jobs: commands go through JobService (application/jobs.py); get and
list read the `jobs` read model; preview and history read the write side."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from api.auth import principal_of
from api.controllers.audit_params import AsOfParam, parse_as_of
from api.controllers.common import (
    IfMatch,
    LabelFilter,
    MinPosition,
    body_time,
    command_context,
    created,
    etag,
    expected_version,
    history_item,
    label_filters,
)
from api.controllers.job_views import from_row, read_of, timeline_job, to_spec, written
from api.controllers.paging import paged, query_error
from api.dependencies import (
    JobQueriesDep,
    JobServiceDep,
    PagingDep,
    PointInTimeDep,
    ReadYourWritesDep,
)
from api.schedule_timeline import TimelineJob, render_timeline
from api.schemas.jobs import (
    BackfillOut,
    BackfillRequest,
    FireRun,
    FireTime,
    JobCreate,
    JobDeletedOut,
    JobHistoryOut,
    JobPage,
    JobRead,
    JobTrigger,
    JobTriggered,
    JobWrite,
    JobWritten,
    PreviewOut,
)
from application.authorization import Permission
from application.errors import NotFound

READ = {"permission": Permission.JOBS_READ}
WRITE = {"permission": Permission.JOBS_WRITE}
TOGGLE = {"permission": Permission.JOBS_TOGGLE}
Count = Annotated[int, Parameter(ge=1, le=1000, description="How many fire times (1-1,000)")]
Hours = Annotated[int, Parameter(ge=1, le=168, description="How far ahead (1-168 hours)")]
Limit = Annotated[int, Parameter(ge=1, le=1000, description="At most this many fires (1-1,000)")]
MAX_TIMELINE_JOBS = 10_000


class JobController(Controller):
    path = "/api/v1/scheduler/jobs"
    tags = ["scheduled jobs"]

    @post("/", opt=WRITE, summary="Create a scheduled job")
    async def create(
        self, data: JSONBody[JobCreate], request: Request, jobs: JobServiceDep
    ) -> Response[JobWritten]:
        result = await jobs.create(
            principal_of(request), to_spec(data), command_context(request), enabled=data.enabled
        )
        return created(written(result), f"{self.path}/{result.state.id}")

    @get("/", opt=READ, summary="List scheduled jobs (cursor pagination)")
    async def list_jobs(
        self,
        request: Request,
        job_queries: JobQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        enabled: FromQuery[bool | None] = None,
        deployment_id: FromQuery[UUID | None] = None,
        pipeline_id: FromQuery[UUID | None] = None,
        target: FromQuery[UUID | None] = None,
        label: LabelFilter = None,
        min_position: MinPosition = None,
    ) -> Response[JobPage]:
        await read_your_writes("jobs", min_position)
        try:
            result = await job_queries.list(
                principal_of(request).tenant_id,
                enabled=enabled,
                deployment_id=None if deployment_id is None else str(deployment_id),
                pipeline_id=None if pipeline_id is None else str(pipeline_id),
                target=None if target is None else str(target),
                labels=label_filters(label),
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [from_row(r) for r in result.items]
        body = JobPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{job_id:uuid}", opt=READ, summary="Get a scheduled job (ETag = version)")
    async def get_job(
        self,
        job_id: FromPath[UUID],
        request: Request,
        job_queries: JobQueriesDep,
        read_your_writes: ReadYourWritesDep,
        point_in_time: PointInTimeDep,
        min_position: MinPosition = None,
        as_of: AsOfParam = None,
    ) -> Response[JobRead]:
        if (moment := parse_as_of(as_of)) is not None:
            past = await point_in_time.job(principal_of(request), job_id, moment)
            return Response(read_of(past), headers={"ETag": etag(past.version)})
        await read_your_writes("jobs", min_position)
        row = await job_queries.get(principal_of(request).tenant_id, job_id)
        if row is None or row["deleted"]:
            raise NotFound("job", job_id)
        return Response(from_row(row), headers={"ETag": etag(row["version"])})

    @put("/{job_id:uuid}", opt=WRITE, summary="Replace a job's definition (If-Match optional)")
    async def update(
        self,
        job_id: FromPath[UUID],
        data: JSONBody[JobWrite],
        request: Request,
        jobs: JobServiceDep,
        if_match: IfMatch = None,
    ) -> Response[JobWritten]:
        result = await jobs.update(
            principal_of(request),
            job_id,
            to_spec(data),
            command_context(request),
            expected_version(if_match),
        )
        return Response(written(result), headers={"ETag": etag(result.version)})

    @delete("/{job_id:uuid}", opt=WRITE, status_code=200, summary="Delete (history stays readable)")
    async def delete_job(
        self,
        job_id: FromPath[UUID],
        request: Request,
        jobs: JobServiceDep,
        if_match: IfMatch = None,
    ) -> JobDeletedOut:
        result = await jobs.delete(
            principal_of(request), job_id, command_context(request), expected_version(if_match)
        )
        return JobDeletedOut(str(job_id), True, result.version, result.position)

    @post("/{job_id:uuid}/enable", opt=TOGGLE, status_code=200, summary="Enable a job")
    async def enable(
        self, job_id: FromPath[UUID], request: Request, jobs: JobServiceDep
    ) -> JobWritten:
        return written(await jobs.enable(principal_of(request), job_id, command_context(request)))

    @post("/{job_id:uuid}/disable", opt=TOGGLE, status_code=200, summary="Disable a job")
    async def disable(
        self, job_id: FromPath[UUID], request: Request, jobs: JobServiceDep
    ) -> JobWritten:
        return written(await jobs.disable(principal_of(request), job_id, command_context(request)))

    @post(
        "/{job_id:uuid}/trigger",
        opt=TOGGLE,
        status_code=202,
        summary="Run the job's target now, outside its schedule",
    )
    async def trigger(
        self,
        job_id: FromPath[UUID],
        data: JSONBody[JobTrigger],
        request: Request,
        jobs: JobServiceDep,
    ) -> JobTriggered:
        result = await jobs.trigger(
            principal_of(request), job_id, command_context(request), data.params
        )
        run = result.state
        return JobTriggered(
            run_id=str(run.id),
            status=str(run.status),
            pipeline_id=run.pipeline_id,
            revision=run.revision,
            job_id=str(job_id),
            position=result.position,
        )

    @post(
        "/{job_id:uuid}/backfill",
        opt=WRITE,
        status_code=202,
        summary="Run every scheduled time in [start, end] that has not run",
    )
    async def backfill(
        self,
        job_id: FromPath[UUID],
        data: JSONBody[BackfillRequest],
        request: Request,
        jobs: JobServiceDep,
    ) -> BackfillOut:
        queued, already, position = await jobs.backfill(
            principal_of(request),
            job_id,
            body_time(data.start, "start"),
            body_time(data.end, "end"),
            command_context(request),
            max_runs=data.max_runs,
        )
        return BackfillOut(
            job_id=str(job_id),
            queued=[FireRun(at, str(run_id)) for at, run_id in queued],
            already_run=[FireRun(at, str(run_id)) for at, run_id in already],
            position=position,
        )

    @get("/{job_id:uuid}/preview", opt=READ, summary="The next fire times, UTC and local")
    async def preview(
        self, job_id: FromPath[UUID], request: Request, jobs: JobServiceDep, count: Count = 10
    ) -> PreviewOut:
        times = await jobs.preview(principal_of(request), job_id, count)
        return PreviewOut(items=[FireTime(utc, local) for utc, local in times])

    @get("/{job_id:uuid}/history", opt=READ, summary="Every event of the job, oldest first")
    async def history(
        self, job_id: FromPath[UUID], request: Request, jobs: JobServiceDep
    ) -> JobHistoryOut:
        events = await jobs.history(principal_of(request), job_id)
        return JobHistoryOut(items=[history_item(e) for e in events])


class SchedulerTimelineController(Controller):
    path = "/api/v1/visualize"
    tags = ["scheduled jobs"]

    @get(
        "/scheduler",
        opt=READ,
        media_type=MediaType.TEXT,
        summary="A text timeline of the next fires of the tenant's enabled jobs",
    )
    async def timeline(
        self,
        request: Request,
        job_queries: JobQueriesDep,
        read_your_writes: ReadYourWritesDep,
        hours: Hours = 24,
        limit: Limit = 100,
        min_position: MinPosition = None,
    ) -> Response[str]:
        await read_your_writes("jobs", min_position)
        jobs: list[TimelineJob] = []
        cursor = None
        while len(jobs) < MAX_TIMELINE_JOBS:
            page = await job_queries.list(
                principal_of(request).tenant_id, enabled=True, limit=500, cursor=cursor
            )
            jobs.extend(timeline_job(row) for row in page.items)
            if not page.has_more:
                break
            cursor = page.next_cursor
        body = render_timeline(jobs, datetime.now(UTC).replace(microsecond=0), hours, limit)
        return Response(body, media_type=MediaType.TEXT)
