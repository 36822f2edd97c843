"""Scheduled jobs on the dashboard: the list and a job's page, with each job's next fire
times (in its timezone and in UTC), enabled state, and the scheduler's counters (fired,
skipped, missed); Enable/Disable and Trigger now. Reads are the API's tenant-scoped
JobQueries (as GET /api/v1/scheduler/jobs); the buttons are JobService's enable, disable
and trigger with the signed-in principal, as the API's routes of the same names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from api.auth import principal_of
from api.controllers.common import MinPosition, command_context
from api.dependencies import JobQueriesDep, JobServiceDep, ReadYourWritesDep
from api.ui.views import page, redirect
from application.authorization import Permission
from application.errors import NotFound
from application.schedule import ScheduleError, schedule_of
from projections.job_queries import job_spec

READ = {"permission": Permission.JOBS_READ}
TOGGLE = {"permission": Permission.JOBS_TOGGLE}
_LIST_SIZE = 200
_FIRES_LISTED = 3
_FIRES_SHOWN = 10


class JobPages(Controller):
    path = "/ui/jobs"
    include_in_schema = False

    @get("/", opt=READ)
    async def list_jobs(self, request: Request, job_queries: JobQueriesDep) -> Response[Any]:
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
        row = await job_queries.get(principal_of(request).tenant_id, job_id)
        if row is None or row["deleted"]:
            raise NotFound("job", job_id)
        fires = _fires(row, datetime.now(UTC), _FIRES_SHOWN)
        return page(request, "job.html", job=row, fires=fires)

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
