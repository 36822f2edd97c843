"""Triggering runs: POST /api/v1/pipelines/{id}/runs (also `:run`) and POST
/api/v1/pipelines/execute (by name or id, optionally waiting for the result)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody

from api.auth import principal_of
from api.controllers.common import ContainerDep, command_context
from api.schemas.runs import ExecuteOut, ExecuteRequest, RunCreate, RunQueuedOut
from application.authorization import Permission
from application.runs import RunChanged
from domain.run import Run

TRIGGER = {"permission": Permission.RUNS_TRIGGER}


def queued(result: RunChanged) -> RunQueuedOut:
    return RunQueuedOut(
        run_id=str(result.run.id),
        status=result.run.status,
        revision=result.run.revision,
        position=result.position,
    )


def _context(run: Run) -> dict[str, Any]:
    """What an execution answers besides success: the input, and each step's outcome."""
    return {
        "input": run.params,
        "steps": {
            name: {
                "status": state.status,
                "records_in": state.records_in,
                "records_out": state.records_out,
                "error": state.error,
            }
            for name, state in run.steps.items()
        },
    }


class PipelineRunController(Controller):
    path = "/api/v1/pipelines"
    tags = ["runs"]

    @post("/{pipeline_id:uuid}/runs", opt=TRIGGER, status_code=202, summary="Queue a run")
    async def trigger(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[RunCreate],
        request: Request,
        container: ContainerDep,
    ) -> Response[RunQueuedOut]:
        result = await asyncio.to_thread(
            lambda: container.runs.trigger(
                principal_of(request),
                pipeline_id,
                params=data.params,
                revision=data.revision,
                ctx=command_context(request),
            )
        )
        location = f"/api/v1/runs/{result.run.id}"
        return Response(queued(result), status_code=202, headers={"Location": location})

    @post(
        "/execute",
        opt=TRIGGER,
        status_code=200,
        summary="Run a pipeline by name or id; with wait, answer its result",
    )
    async def execute(
        self, data: JSONBody[ExecuteRequest], request: Request, container: ContainerDep
    ) -> Response[ExecuteOut]:
        if (data.pipeline_name is None) == (data.pipeline_id is None):
            raise ValidationException("give exactly one of pipeline_name and pipeline_id")
        principal, ctx = principal_of(request), command_context(request)
        if data.pipeline_id is not None:
            try:
                pipeline_id = UUID(data.pipeline_id)
            except ValueError:
                raise ValidationException("pipeline_id is not a UUID") from None
            result = await asyncio.to_thread(
                lambda: container.runs.trigger(principal, pipeline_id, params=data.context, ctx=ctx)
            )
        else:
            name = data.pipeline_name or ""
            result = await asyncio.to_thread(
                lambda: container.runs.trigger_by_name(
                    principal, name, params=data.context, ctx=ctx
                )
            )
        run = result.run
        if data.wait:
            timeout = container.settings.execute_wait_timeout
            run = await container.runs.wait_finished(principal, run.id, timeout)
        body = ExecuteOut(
            run_id=str(run.id),
            status=run.status,
            success=(run.status == "succeeded") if run.finished else None,
            error=run.error,
            context=_context(run),
            executed_at=run.started_at,
            position=result.position,
        )
        return Response(body, status_code=200 if run.finished else 202)
