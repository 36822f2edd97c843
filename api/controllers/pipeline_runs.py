"""Triggering runs: POST /api/v1/pipelines/{id}/runs (also `:run`) and POST
/api/v1/pipelines/execute (by name or id, optionally waiting for the result)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody

from api.auth import principal_of
from api.controllers.common import command_context
from api.dependencies import RunServiceDep, SettingsDep
from api.schemas.runs import ExecuteOut, ExecuteRequest, RunCreate, RunQueuedOut
from application.authorization import Permission
from application.principal import Principal
from application.results import Changed
from application.runs import RunService
from application.threads import Threaded
from domain.events import CommandContext
from domain.run import Run, RunStatus

TRIGGER = {"permission": Permission.RUNS_TRIGGER}


def queued(result: Changed[Run]) -> RunQueuedOut:
    return RunQueuedOut(
        run_id=str(result.state.id),
        status=result.state.status,
        revision=result.state.revision,
        position=result.position,
    )


def run_context(run: Run) -> dict[str, Any]:
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


async def finished_run(
    runs: Threaded[RunService],
    principal: Principal,
    run_id: UUID,
    timeout: float,  # noqa: ASYNC109 - on timeout the answer is the unfinished run
) -> Run:
    """The run once it has finished, or as it is after `timeout` seconds. Polls the
    event store (not the read model): the answer must not lag the executor."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        run: Run = await runs.load(principal, run_id)
        remaining = deadline - time.monotonic()
        if run.finished or remaining <= 0:
            return run
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.25)


class PipelineRunController(Controller):
    path = "/api/v1/pipelines"
    tags = ["runs"]

    @post("/{pipeline_id:uuid}/runs", opt=TRIGGER, status_code=202, summary="Queue a run")
    async def trigger(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[RunCreate],
        request: Request,
        runs: RunServiceDep,
    ) -> Response[RunQueuedOut]:
        result = await runs.trigger(
            principal_of(request),
            pipeline_id,
            params=data.params,
            revision=data.revision,
            ctx=command_context(request),
        )
        location = f"/api/v1/runs/{result.state.id}"
        return Response(queued(result), status_code=202, headers={"Location": location})

    @post(
        "/execute",
        opt=TRIGGER,
        status_code=200,
        summary="Run a pipeline by name or id; with wait, answer its result",
    )
    async def execute(
        self,
        data: JSONBody[ExecuteRequest],
        request: Request,
        runs: RunServiceDep,
        settings: SettingsDep,
    ) -> Response[ExecuteOut]:
        principal = principal_of(request)
        result = await _queue(runs, principal, data, command_context(request))
        run: Run = result.state
        if data.wait:
            run = await finished_run(runs, principal, run.id, settings.execute_wait_timeout)
        return Response(_executed(run, result.position), status_code=200 if run.finished else 202)


async def _queue(
    runs: Threaded[RunService], principal: Principal, data: ExecuteRequest, ctx: CommandContext
) -> Changed[Run]:
    """Queue a run of the pipeline the request names, by id or by name."""
    if data.pipeline_id is not None and data.pipeline_name is None:
        pipeline_id = _pipeline_id(data.pipeline_id)
        return await runs.trigger(principal, pipeline_id, params=data.context, ctx=ctx)
    if data.pipeline_name is not None and data.pipeline_id is None:
        name = data.pipeline_name
        return await runs.trigger_by_name(principal, name, params=data.context, ctx=ctx)
    raise ValidationException("give exactly one of pipeline_name and pipeline_id")


def _executed(run: Run, position: int | None) -> ExecuteOut:
    return ExecuteOut(
        run_id=str(run.id),
        status=run.status,
        success=(run.status == RunStatus.SUCCEEDED) if run.finished else None,
        error=run.error,
        context=run_context(run),
        executed_at=run.started_at,
        position=position,
    )


def _pipeline_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise ValidationException("pipeline_id is not a UUID") from None
