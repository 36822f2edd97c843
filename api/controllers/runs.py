"""/api/v1/runs: executions. Lists, details and status read the `runs` read model; logs
read the step log store; cancel and retry are commands on the run."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from api.auth import principal_of
from api.controllers.common import MinPosition, TextFilter, command_context, etag
from api.controllers.paging import Paging, paged, query_error
from api.controllers.pipeline_runs import queued
from api.controllers.run_views import run_detail, run_read, run_status
from api.dependencies import PagingDep, ReadYourWritesDep, RunLogsDep, RunQueriesDep, RunServiceDep
from api.schemas.runs import (
    LogLine,
    RetryRequest,
    RunChangedOut,
    RunDetail,
    RunLogsOut,
    RunPage,
    RunQueuedOut,
    RunStatusOut,
)
from application.authorization import Permission
from application.errors import NotFound
from domain.run import RunStatus
from projections.pagination import Page

READ = {"permission": Permission.RUNS_READ}
CANCEL = {"permission": Permission.RUNS_CANCEL}
TRIGGER = {"permission": Permission.RUNS_TRIGGER}
Limit = Annotated[int, Parameter(ge=1, le=500)]


class RunController(Controller):
    path = "/api/v1/runs"
    tags = ["runs"]

    @get("/", opt=READ, summary="List runs, newest first (cursor pagination)")
    async def list_runs(
        self,
        request: Request,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        status: TextFilter = None,
        pipeline_id: FromQuery[UUID | None] = None,
        job_id: TextFilter = None,
        triggered_by: TextFilter = None,
        deployment_id: FromQuery[UUID | None] = None,
        environment: TextFilter = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        min_position: MinPosition = None,
    ) -> Response[RunPage]:
        await read_your_writes("runs", min_position)
        try:
            result = await run_queries.list(
                principal_of(request).tenant_id,
                status=status,
                pipeline_id=pipeline_id,
                job_id=job_id,
                triggered_by=triggered_by,
                deployment_id=deployment_id,
                environment=environment,
                since=since,
                until=until,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        return _page(request, result, paging)

    @get("/running", opt=READ, summary="Runs running now")
    async def running(
        self, request: Request, run_queries: RunQueriesDep, paging: PagingDep
    ) -> Response[RunPage]:
        try:
            result = await run_queries.list(
                principal_of(request).tenant_id,
                status=RunStatus.RUNNING,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        return _page(request, result, paging)

    @get("/recent", opt=READ, summary="The most recent runs")
    async def recent(
        self, request: Request, run_queries: RunQueriesDep, limit: Limit = 20
    ) -> RunPage:
        result = await run_queries.list(principal_of(request).tenant_id, limit=limit)
        return RunPage(items=[run_read(r) for r in result.items], next_cursor=None, has_more=False)

    @get("/{run_id:uuid}", opt=READ, summary="A run with its steps (ETag = version)")
    async def get_run(
        self,
        run_id: FromPath[UUID],
        request: Request,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[RunDetail]:
        await read_your_writes("runs", min_position)
        row = await run_queries.get(principal_of(request).tenant_id, run_id)
        if row is None:
            raise NotFound("run", run_id)
        return Response(run_detail(row), headers={"ETag": etag(row["version"])})

    @get("/{run_id:uuid}/status", opt=READ, summary="Status, progress and an estimate")
    async def status(
        self,
        run_id: FromPath[UUID],
        request: Request,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> RunStatusOut:
        await read_your_writes("runs", min_position)
        row = await run_queries.get(principal_of(request).tenant_id, run_id)
        if row is None:
            raise NotFound("run", run_id)
        typical = await run_queries.typical_duration(row["tenant_id"], str(row["pipeline_id"]))
        return run_status(row, typical)

    @get("/{run_id:uuid}/logs", opt=READ, summary="Log lines of the run's steps (bounded)")
    async def logs(
        self,
        run_id: FromPath[UUID],
        request: Request,
        runs: RunServiceDep,
        run_logs: RunLogsDep,
        step: TextFilter = None,
        limit: Annotated[int, Parameter(ge=1, le=10_000)] = 1000,
    ) -> RunLogsOut:
        run = await runs.load(principal_of(request), run_id)  # the run is visible: its logs are
        lines = await run_logs.lines(str(run.id), step, limit + 1)
        return RunLogsOut(
            run_id=str(run.id),
            items=[
                LogLine(r["step"], r["attempt"], r["at"], r["level"], r["message"])
                for r in lines[:limit]
            ],
            truncated=len(lines) > limit,
        )

    @post("/{run_id:uuid}/cancel", opt=CANCEL, status_code=202, summary="Cancel a run")
    async def cancel(
        self, run_id: FromPath[UUID], request: Request, runs: RunServiceDep
    ) -> RunChangedOut:
        result = await runs.cancel(principal_of(request), run_id, command_context(request))
        run = result.state
        return RunChangedOut(
            run_id=str(run.id),
            status=run.status,
            cancel_requested=run.cancel_requested or run.status == RunStatus.CANCELLED,
            version=result.version,
            position=result.position,
        )

    @post(
        "/{run_id:uuid}/retry",
        opt=TRIGGER,
        status_code=202,
        summary="A new run of the same revision and params (optionally from the failed step)",
    )
    async def retry(
        self,
        run_id: FromPath[UUID],
        data: JSONBody[RetryRequest],
        request: Request,
        runs: RunServiceDep,
    ) -> Response[RunQueuedOut]:
        result = await runs.retry(
            principal_of(request),
            run_id,
            from_failed_step=data.from_failed_step,
            ctx=command_context(request),
        )
        location = f"{self.path}/{result.state.id}"
        return Response(queued(result), status_code=202, headers={"Location": location})


def _page(request: Request, result: Page, paging: Paging) -> Response[RunPage]:
    items = [run_read(r) for r in result.items]
    body = RunPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
    return paged(request, body, result, paging)
