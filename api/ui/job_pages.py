"""Scheduled jobs on the dashboard: the list and a job's page, with each job's next fire
times (in its timezone and in UTC), enabled state, and the scheduler's counters (fired,
skipped, missed); Enable/Disable, Trigger now and Backfill. Reads are the API's
tenant-scoped JobQueries (as GET /api/v1/scheduler/jobs); the buttons are JobService's
enable, disable, trigger and backfill with the signed-in principal, as the API's routes
of the same names, so their refusals are the API's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.params import Body, FromPath

from api.auth import principal_of
from api.controllers.common import MinPosition, body_time, command_context
from api.dependencies import JobQueriesDep, JobServiceDep, ReadYourWritesDep
from api.schemas.jobs import BackfillRequest
from api.ui.views import page, redirect
from application.authorization import Permission
from application.errors import NotFound
from application.schedule import ScheduleError, schedule_of
from projections.job_queries import job_spec

READ = {"permission": Permission.JOBS_READ}
TOGGLE = {"permission": Permission.JOBS_TOGGLE}
WRITE = {"permission": Permission.JOBS_WRITE}  # the API's backfill route's
Form = Body(media_type=RequestEncodingType.URL_ENCODED)
_LIST_SIZE = 200
_FIRES_LISTED = 3
_FIRES_SHOWN = 10


class JobPages(Controller):
    path = "/ui/jobs"
    include_in_schema = False

    @get("/", opt=READ)
    async def list_jobs(
        self,
        request: Request,
        job_queries: JobQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        await read_your_writes("jobs", min_position)  # after a delete
        result = await job_queries.list(
            principal_of(request).tenant_id, order="asc", limit=_LIST_SIZE
        )
        now = datetime.now(UTC)
        jobs = [(row, _fires(row, now, _FIRES_LISTED)) for row in result.items]
        jobs.sort(key=lambda pair: pair[0]["name"])
        return page(request, "jobs.html", jobs=jobs, more=result.has_more)

    @get("/{job_id:uuid}", opt=READ)
    async def job(
        self,
        request: Request,
        job_id: FromPath[UUID],
        job_queries: JobQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        await read_your_writes("jobs", min_position)
        return await _job_page(request, job_queries, job_id)

    @post("/{job_id:uuid}/enable", opt=TOGGLE, status_code=303)
    async def enable(
        self, request: Request, job_id: FromPath[UUID], jobs: JobServiceDep
    ) -> Response[Any]:
        result = await jobs.enable(principal_of(request), job_id, command_context(request))
        return redirect(request, f"/ui/jobs/{job_id}?min_position={result.position or 0}")

    @post("/{job_id:uuid}/disable", opt=TOGGLE, status_code=303)
    async def disable(
        self, request: Request, job_id: FromPath[UUID], jobs: JobServiceDep
    ) -> Response[Any]:
        result = await jobs.disable(principal_of(request), job_id, command_context(request))
        return redirect(request, f"/ui/jobs/{job_id}?min_position={result.position or 0}")

    @post("/{job_id:uuid}/trigger", opt=TOGGLE, status_code=303)
    async def trigger(
        self, request: Request, job_id: FromPath[UUID], jobs: JobServiceDep
    ) -> Response[Any]:
        """A run of the job's target now, with the job's params (as the API's trigger
        with an empty body); the run's page waits for the runs read model to show it."""
        result = await jobs.trigger(principal_of(request), job_id, command_context(request))
        return redirect(request, f"/ui/runs/{result.state.id}?min_position={result.position}")

    @post("/{job_id:uuid}/backfill", opt=WRITE, status_code=200)
    async def backfill(
        self,
        request: Request,
        job_id: FromPath[UUID],
        jobs: JobServiceDep,
        job_queries: JobQueriesDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        """JobService.backfill, as the API's route: the runs queued and the times that
        had run already, shown on the job's page (a second identical backfill queues
        nothing and lists them all as already run)."""
        asked = _backfill_request(data)
        queued, already, position = await jobs.backfill(
            principal_of(request),
            job_id,
            body_time(asked.start, "start"),
            body_time(asked.end, "end"),
            command_context(request),
            max_runs=asked.max_runs,
        )
        shown = {
            "start": data.get("start", ""),
            "end": data.get("end", ""),
            "max_runs": asked.max_runs,
        }
        backfilled = {"queued": queued, "already": already, "position": position}
        return await _job_page(request, job_queries, job_id, asked=shown, backfilled=backfilled)


async def _job_page(
    request: Request, job_queries: Any, job_id: UUID, **context: Any
) -> Response[Any]:
    row = await job_queries.get(principal_of(request).tenant_id, job_id)
    if row is None or row["deleted"]:
        raise NotFound("job", job_id)
    fires = _fires(row, datetime.now(UTC), _FIRES_SHOWN)
    return page(request, "job.html", job=row, fires=fires, **context)


def _backfill_request(form: dict[str, str]) -> BackfillRequest:
    """The form read as the API reads its JSON body (the same BackfillRequest), so a
    field it cannot read is the API's 422 naming the field; an empty field is absent."""
    fields = {k: form[k].strip() for k in ("start", "end", "max_runs") if form.get(k, "").strip()}
    try:
        return msgspec.convert(fields, BackfillRequest, strict=False)
    except msgspec.ValidationError as error:
        # Litestar's shape for a body it could not decode; api/errors.py words it.
        detail = {"message": str(error), "key": "data", "source": "body"}
        raise ValidationException(str(error), extra=[detail]) from None


def _fires(row: dict[str, Any], now: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """The next nominal fire times (before jitter) by the job's calendar, as (UTC, the
    job's local time); none while disabled (the scheduler fires nothing then)."""
    if not row["enabled"]:
        return []
    try:
        schedule = schedule_of(job_spec(row))
        return [(t, schedule.local(t)) for t in schedule.fires_after(now, count)]
    except ScheduleError:
        return []  # a definition this version's calendar no longer reads, as the API's
