"""/api/v1/deployments: commands go through DeploymentService (application/deployments.py);
get, list, releases and status read the `deployments` read model."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import principal_of
from api.controllers.audit_params import AsOfParam, parse_as_of
from api.controllers.common import (
    IfMatch,
    LabelFilter,
    MinPosition,
    TextFilter,
    command_context,
    created,
    etag,
    expected_version,
    history_item,
    label_filters,
)
from api.controllers.deployment_views import (
    from_row,
    read_of,
    release_from_row,
    status_out,
    to_strategy,
    written,
)
from api.controllers.paging import paged, query_error
from api.controllers.pipeline_runs import finished_run, run_context
from api.controllers.pipeline_views import to_triggers, triggers_out
from api.dependencies import (
    DeploymentQueriesDep,
    DeploymentServiceDep,
    PagingDep,
    PointInTimeDep,
    ReadYourWritesDep,
    RunServiceDep,
    SettingsDep,
)
from api.schemas.deployments import (
    DeploymentCreate,
    DeploymentExecute,
    DeploymentExecuted,
    DeploymentHistoryOut,
    DeploymentPage,
    DeploymentRead,
    DeploymentRetiredOut,
    DeploymentRollback,
    DeploymentRolledBackOut,
    DeploymentStatusOut,
    DeploymentTriggers,
    DeploymentTriggersOut,
    DeploymentWritten,
    ReleaseCreate,
    ReleasesOut,
)
from application.authorization import Permission
from application.errors import NotFound
from domain.release import DIRECT
from domain.run import Run, RunStatus

READ = {"permission": Permission.DEPLOYMENTS_READ}
WRITE = {"permission": Permission.DEPLOYMENTS_WRITE}
TRIGGER = {"permission": Permission.RUNS_TRIGGER}
Status = Literal["pending", "verifying", "active", "failed", "retired"]


class DeploymentController(Controller):
    path = "/api/v1/deployments"
    tags = ["deployments"]

    @post("/", opt=WRITE, summary="Deploy a pipeline to an environment (its first release)")
    async def create(
        self, data: JSONBody[DeploymentCreate], request: Request, deployments: DeploymentServiceDep
    ) -> Response[DeploymentWritten]:
        result = await deployments.create(
            principal_of(request),
            data.pipeline_id,
            data.environment,
            command_context(request),
            revision=data.revision,
            strategy=to_strategy(data.strategy) or DIRECT,
            variables=data.variables,
            labels=data.labels,
            description=data.description,
            triggers=to_triggers(data.triggers),
        )
        return created(written(result), f"{self.path}/{result.state.id}")

    @get("/", opt=READ, summary="List deployments (cursor pagination)")
    async def list_deployments(
        self,
        request: Request,
        deployment_queries: DeploymentQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        pipeline_id: FromQuery[UUID | None] = None,
        environment: TextFilter = None,
        status: FromQuery[Status | None] = None,
        label: LabelFilter = None,
        order: FromQuery[Literal["asc", "desc"]] = "asc",
        min_position: MinPosition = None,
    ) -> Response[DeploymentPage]:
        await read_your_writes("deployments", min_position)
        try:
            result = await deployment_queries.list(
                principal_of(request).tenant_id,
                pipeline_id=pipeline_id,
                environment=environment,
                status=status,
                labels=label_filters(label),
                order=order,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [from_row(r) for r in result.items]
        body = DeploymentPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{deployment_id:uuid}", opt=READ, summary="Get a deployment (ETag = version)")
    async def get_deployment(
        self,
        deployment_id: FromPath[UUID],
        request: Request,
        deployment_queries: DeploymentQueriesDep,
        read_your_writes: ReadYourWritesDep,
        point_in_time: PointInTimeDep,
        min_position: MinPosition = None,
        as_of: AsOfParam = None,
    ) -> Response[DeploymentRead]:
        if (moment := parse_as_of(as_of)) is not None:
            past = await point_in_time.deployment(principal_of(request), deployment_id, moment)
            return Response(read_of(past), headers={"ETag": etag(past.version)})
        await read_your_writes("deployments", min_position)
        row = await deployment_queries.get(principal_of(request).tenant_id, deployment_id)
        if row is None:
            raise NotFound("deployment", deployment_id)
        return Response(from_row(row), headers={"ETag": etag(row["version"])})

    @post(
        "/{deployment_id:uuid}/releases",
        opt=WRITE,
        summary="Release a revision: 201 active at once (direct), 202 verifying (blue-green)",
    )
    async def release(
        self,
        deployment_id: FromPath[UUID],
        data: JSONBody[ReleaseCreate],
        request: Request,
        deployments: DeploymentServiceDep,
        if_match: IfMatch = None,
    ) -> Response[DeploymentWritten]:
        result = await deployments.release(
            principal_of(request),
            deployment_id,
            command_context(request),
            revision=data.revision,
            strategy=to_strategy(data.strategy),
            expected_version=expected_version(if_match),
        )
        body = written(result)
        status = 202 if result.release.outcome == "verifying" else 201
        location = f"{self.path}/{deployment_id}/releases"
        return Response(body, status_code=status, headers={"Location": location})

    @get("/{deployment_id:uuid}/releases", opt=READ, summary="Every release, oldest first")
    async def releases(
        self,
        deployment_id: FromPath[UUID],
        request: Request,
        deployment_queries: DeploymentQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> ReleasesOut:
        await read_your_writes("deployments", min_position)
        rows = await deployment_queries.releases(principal_of(request).tenant_id, deployment_id)
        if rows is None:
            raise NotFound("deployment", deployment_id)
        return ReleasesOut(items=[release_from_row(r) for r in rows])

    @get("/{deployment_id:uuid}/history", opt=READ, summary="Every event, oldest first")
    async def history(
        self, deployment_id: FromPath[UUID], request: Request, deployments: DeploymentServiceDep
    ) -> DeploymentHistoryOut:
        events = await deployments.history(principal_of(request), deployment_id)
        return DeploymentHistoryOut(items=[history_item(e) for e in events])

    @get("/{deployment_id:uuid}/status", opt=READ, summary="Active release, verification")
    async def status(
        self,
        deployment_id: FromPath[UUID],
        request: Request,
        deployment_queries: DeploymentQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> DeploymentStatusOut:
        await read_your_writes("deployments", min_position)
        tenant_id = principal_of(request).tenant_id
        row, releases = await deployment_queries.with_releases(tenant_id, deployment_id)
        if row is None or releases is None:
            raise NotFound("deployment", deployment_id)
        return status_out(row, releases)

    @post(
        "/{deployment_id:uuid}/execute",
        opt=TRIGGER,
        status_code=202,
        summary="Run the active release; with wait, answer its result",
    )
    async def execute(
        self,
        deployment_id: FromPath[UUID],
        data: JSONBody[DeploymentExecute],
        request: Request,
        deployments: DeploymentServiceDep,
        runs: RunServiceDep,
        settings: SettingsDep,
    ) -> Response[DeploymentExecuted]:
        principal = principal_of(request)
        result = await deployments.execute(
            principal, deployment_id, command_context(request), data.params
        )
        run: Run = result.state
        if data.wait:
            run = await finished_run(runs, principal, run.id, settings.execute_wait_timeout)
        location = f"/api/v1/runs/{run.id}"
        body = DeploymentExecuted(
            run_id=str(run.id),
            status=run.status,
            revision=run.revision,
            release=run.trigger.release,
            success=(run.status == RunStatus.SUCCEEDED) if run.finished else None,
            error=run.error,
            context=run_context(run),
            position=result.position,
        )
        status = 200 if run.finished else 202
        return Response(body, status_code=status, headers={"Location": location})

    @post(
        "/{deployment_id:uuid}/rollback",
        opt=WRITE,
        status_code=200,
        summary="Make the previous (or a named) release active again, as a new release",
    )
    async def rollback(
        self,
        deployment_id: FromPath[UUID],
        data: JSONBody[DeploymentRollback],
        request: Request,
        deployments: DeploymentServiceDep,
        if_match: IfMatch = None,
    ) -> DeploymentRolledBackOut:
        result = await deployments.roll_back(
            principal_of(request),
            deployment_id,
            command_context(request),
            to_release=data.to_release,
            expected_version=expected_version(if_match),
        )
        return DeploymentRolledBackOut(
            result.release, result.rolled_back_to, result.previous_release, result.position
        )

    @put(
        "/{deployment_id:uuid}/triggers",
        opt=WRITE,
        summary="Replace the events that start a run of the active release",
    )
    async def set_triggers(
        self,
        deployment_id: FromPath[UUID],
        data: JSONBody[DeploymentTriggers],
        request: Request,
        deployments: DeploymentServiceDep,
        if_match: IfMatch = None,
    ) -> Response[DeploymentTriggersOut]:
        result = await deployments.set_triggers(
            principal_of(request),
            deployment_id,
            to_triggers(data.triggers),
            command_context(request),
            expected_version(if_match),
        )
        body = DeploymentTriggersOut(
            id=str(deployment_id),
            triggers=triggers_out(result.state.triggers),
            version=result.version,
            position=result.position,
        )
        return Response(body, headers={"ETag": etag(result.version)})

    @delete(
        "/{deployment_id:uuid}", opt=WRITE, status_code=200, summary="Retire (soft: history stays)"
    )
    async def retire(
        self,
        deployment_id: FromPath[UUID],
        request: Request,
        deployments: DeploymentServiceDep,
        if_match: IfMatch = None,
    ) -> DeploymentRetiredOut:
        result = await deployments.retire(
            principal_of(request),
            deployment_id,
            command_context(request),
            expected_version(if_match),
        )
        return DeploymentRetiredOut(str(deployment_id), True, result.version, result.position)
