"""A deployment's writes on the dashboard besides Roll back: release a revision (with the
deployment's strategy or another), run its active release, retire it. Each is the API's
own use case with the signed-in principal (DeploymentService.release as POST
.../releases, .execute as POST .../execute, .retire as DELETE .../{id}) and each form is
read through the API's request schema, so a refusal is the API's status and message as
a page."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath

from api.auth import principal_of
from api.controllers.common import command_context
from api.controllers.deployment_views import to_strategy
from api.dependencies import DeploymentServiceDep
from api.schemas.deployments import DeploymentExecute, ReleaseCreate
from api.ui.pages import Form
from api.ui.views import form_number, read_form, redirect, run_params, strategy_fields
from application.authorization import Permission

WRITE = {"permission": Permission.DEPLOYMENTS_WRITE}
TRIGGER = {"permission": Permission.RUNS_TRIGGER}


class DeploymentActions(Controller):
    path = "/ui/deployments"
    include_in_schema = False

    @post("/{deployment_id:uuid}/release", opt=WRITE, status_code=303)
    async def release(
        self,
        request: Request,
        deployment_id: FromPath[UUID],
        deployments: DeploymentServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        fields: dict[str, Any] = {"revision": form_number(data.get("revision", ""))}
        if strategy := strategy_fields(data):
            fields["strategy"] = strategy
        body = read_form(fields, ReleaseCreate)
        result = await deployments.release(
            principal_of(request),
            deployment_id,
            command_context(request),
            revision=body.revision,
            strategy=to_strategy(body.strategy),
        )
        return redirect(
            request, f"/ui/deployments/{deployment_id}?min_position={result.position or 0}"
        )

    @post("/{deployment_id:uuid}/execute", opt=TRIGGER, status_code=303)
    async def execute(
        self,
        request: Request,
        deployment_id: FromPath[UUID],
        deployments: DeploymentServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        _, params, problem = run_params(data)
        if problem is not None:
            raise ValidationException(
                problem, extra=[{"message": problem, "key": "params", "source": "body"}]
            )
        body = read_form({"params": params}, DeploymentExecute)
        result = await deployments.execute(
            principal_of(request), deployment_id, command_context(request), body.params
        )
        return redirect(request, f"/ui/runs/{result.state.id}?min_position={result.position}")

    @post("/{deployment_id:uuid}/retire", opt=WRITE, status_code=303)
    async def retire(
        self, request: Request, deployment_id: FromPath[UUID], deployments: DeploymentServiceDep
    ) -> Response[Any]:
        result = await deployments.retire(
            principal_of(request), deployment_id, command_context(request)
        )
        return redirect(request, f"/ui/deployments?min_position={result.position or 0}")
