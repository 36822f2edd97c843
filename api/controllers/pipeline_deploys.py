"""POST /api/v1/pipelines/{id}/deploy (also `:deploy`): the pipeline's current revision to
an environment, through the deployment that holds it or a new one; with a `schedule`,
the job that runs that deployment on it too."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import FromPath, JSONBody

from api.auth import principal_of
from api.controllers.common import command_context
from api.controllers.deployment_views import to_strategy, written
from api.controllers.job_views import next_run
from api.dependencies import DeploymentServiceDep, JobServiceDep
from api.schemas.deployments import PipelineDeploy, PipelineDeployed, ScheduledJobOut
from application.authorization import Permission
from application.jobs import JobService
from application.results import Changed
from domain.errors import InvalidCommand
from domain.job import Job

WRITE = {"permission": Permission.DEPLOYMENTS_WRITE}


class PipelineDeployController(Controller):
    path = "/api/v1/pipelines"
    tags = ["deployments"]

    @post(
        "/{pipeline_id:uuid}/deploy",
        opt=WRITE,
        summary="Release the current revision to an environment (creating its deployment)",
    )
    async def deploy(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[PipelineDeploy],
        request: Request,
        deployments: DeploymentServiceDep,
        jobs: JobServiceDep,
    ) -> Response[PipelineDeployed]:
        if data.timezone is not None and data.schedule is None:
            raise InvalidCommand("a timezone goes with a schedule", "timezone")
        timezone = data.timezone or "UTC"
        if data.schedule is not None:  # checked before anything is released
            JobService.check_deploy_schedule(data.schedule, timezone)
        principal, ctx = principal_of(request), command_context(request)
        result = await deployments.deploy(
            principal, pipeline_id, data.environment, ctx, strategy=to_strategy(data.strategy)
        )
        job = None
        if data.schedule is not None:
            scheduled = await jobs.schedule_deployment(
                principal, result.state.id, data.schedule, timezone, ctx
            )
            job = scheduled_job(scheduled)
        made = written(result)
        body = PipelineDeployed(
            **msgspec.structs.asdict(made), created=result.release.release == 1, job=job
        )
        verifying = result.release.outcome == "verifying" and not body.created
        location = f"/api/v1/deployments/{made.id}"
        return Response(body, status_code=202 if verifying else 201, headers={"Location": location})


def scheduled_job(result: Changed[Job]) -> ScheduledJobOut:
    spec = result.state.spec
    return ScheduledJobOut(
        id=str(result.state.id),
        name=spec.name,
        cron_expr=spec.cron_expr,
        timezone=spec.timezone,
        next_run=next_run(True, spec),
        version=result.version,
        position=result.position,
    )
