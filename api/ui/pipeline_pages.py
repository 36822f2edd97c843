"""Pipelines on the dashboard: the list (search by name, tag, namespace), a pipeline's
page (its steps as a graph by dependency level, its revisions, its recent runs) and
running it. Every read and command goes through the API's own queries and services with
the signed-in principal: what the API would refuse or not find, the page does too."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery

from api.auth import principal_of
from api.controllers.common import MinPosition, command_context
from api.dependencies import (
    PipelineQueriesDep,
    PipelineServiceDep,
    ReadYourWritesDep,
    RunQueriesDep,
    RunServiceDep,
)
from api.ui.pages import Form
from api.ui.views import graph, page, pretty_json, redirect, run_params
from application.authorization import Permission
from application.errors import NotFound

READ = {"permission": Permission.PIPELINES_READ}
TRIGGER = {"permission": Permission.RUNS_TRIGGER}
_LIST_SIZE = 100
_RUNS_SHOWN = 10


class PipelinePages(Controller):
    path = "/ui/pipelines"
    include_in_schema = False

    @get("/", opt=READ)
    async def list_pipelines(
        self,
        request: Request,
        pipeline_queries: PipelineQueriesDep,
        read_your_writes: ReadYourWritesDep,
        name: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        namespace: FromQuery[str | None] = None,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        await read_your_writes("pipelines", min_position)  # after a delete
        tags = tuple(t.strip() for t in (tag or "").split(",") if t.strip())
        result = await pipeline_queries.list(
            principal_of(request).tenant_id,
            name=name or None,
            tags=tags,
            namespace=namespace or None,
            sort="name",
            order="asc",
            limit=_LIST_SIZE,
        )
        return page(
            request,
            "pipelines.html",
            pipelines=result.items,
            more=result.has_more,
            name=name or "",
            tag=tag or "",
            namespace=namespace or "",
        )

    @get("/{pipeline_id:uuid}", opt=READ)
    async def pipeline(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        pipeline_queries: PipelineQueriesDep,
        pipelines: PipelineServiceDep,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        # After a rollback or a clone (api/ui/pipeline_actions.py): wait for the read
        # model to have it, as GET /api/v1/pipelines/{id}?min_position= does.
        await read_your_writes("pipelines", min_position)
        return await _pipeline_page(
            request, pipeline_id, pipeline_queries, pipelines, run_queries, "{}", None, 200
        )

    @post("/{pipeline_id:uuid}/run", opt=TRIGGER, status_code=303)
    async def run(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        data: Annotated[dict[str, str], Form],
        runs: RunServiceDep,
        pipeline_queries: PipelineQueriesDep,
        pipelines: PipelineServiceDep,
        run_queries: RunQueriesDep,
    ) -> Response[Any]:
        raw, params, problem = run_params(data)
        if problem is not None:
            return await _pipeline_page(
                request, pipeline_id, pipeline_queries, pipelines, run_queries, raw, problem, 422
            )
        result = await runs.trigger(
            principal_of(request), pipeline_id, params=params, ctx=command_context(request)
        )
        # The run page waits for the runs read model to show it (?min_position=).
        return redirect(request, f"/ui/runs/{result.state.id}?min_position={result.position}")


async def _pipeline_page(
    request: Request,
    pipeline_id: UUID,
    pipeline_queries: Any,
    pipelines: Any,
    run_queries: Any,
    params: str,
    problem: str | None,
    status: int,
) -> Response[Any]:
    principal = principal_of(request)
    row = await pipeline_queries.get(principal.tenant_id, pipeline_id)
    if row is None:
        raise NotFound("pipeline", pipeline_id)
    levels, unordered = graph(row["steps"])
    history = await pipelines.history(principal, pipeline_id)
    runs = await run_queries.list(principal.tenant_id, pipeline_id=pipeline_id, limit=_RUNS_SHOWN)
    return page(
        request,
        "pipeline.html",
        status=status,
        pipeline=row,
        levels=levels,
        unordered=unordered,
        revisions=list(reversed(history)),
        runs=runs.items,
        params=params,
        problem=problem,
        pretty_json=pretty_json,
    )
