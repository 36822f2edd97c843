"""POST /api/v1/pipelines/{id}/deploy (also `:deploy`): the pipeline's current revision to
an environment, through the deployment that holds it or a new one."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import FromPath, JSONBody

from api.auth import principal_of
from api.controllers.common import command_context
from api.controllers.deployment_views import to_strategy, written
from api.dependencies import DeploymentServiceDep
from api.schemas.deployments import PipelineDeploy, PipelineDeployed
from application.authorization import Permission
from domain.errors import InvalidCommand

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
    ) -> Response[PipelineDeployed]:
        for field in ("schedule", "timezone"):
            if getattr(data, field) is not None:
                raise InvalidCommand("scheduled jobs do not exist yet: deploy without one", field)
        result = await deployments.deploy(
            principal_of(request),
            pipeline_id,
            data.environment,
            command_context(request),
            strategy=to_strategy(data.strategy),
        )
        made = written(result)
        body = PipelineDeployed(**msgspec.structs.asdict(made), created=result.release.release == 1)
        verifying = result.release.outcome == "verifying" and not body.created
        location = f"/api/v1/deployments/{made.id}"
        return Response(body, status_code=202 if verifying else 201, headers={"Location": location})
