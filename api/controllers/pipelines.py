"""/api/v1/pipelines: commands append events; list/get read the `pipelines` read model;
history and revisions replay the pipeline's own event stream."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from api.auth import principal_of
from api.controllers.common import (
    ContainerDep,
    MinPosition,
    TextFilter,
    command_context,
    created,
    etag,
    expected_version,
    read_your_writes,
)
from api.controllers.pipeline_views import (
    from_row,
    history_item,
    revision_out,
    to_definition,
    written,
)
from api.schemas.common import FieldProblem
from api.schemas.pipelines import (
    CloneRequest,
    DeletedOut,
    HistoryOut,
    PipelinePage,
    PipelineRead,
    PipelineWrite,
    PipelineWritten,
    RevisionOut,
    RollbackRequest,
    RolledBackOut,
    ValidationOut,
)
from application.authorization import Permission
from application.errors import NotFound

READ = {"permission": Permission.PIPELINES_READ}
WRITE = {"permission": Permission.PIPELINES_WRITE}
# ?tag=a&tag=b: pipelines carrying every one of the tags.
TagFilter = Annotated[list[str] | None, Parameter(max_items=20)]


class PipelineController(Controller):
    path = "/api/v1/pipelines"
    tags = ["pipelines"]

    @post("/", opt=WRITE, summary="Create a pipeline (revision 1)")
    async def create(
        self, data: JSONBody[PipelineWrite], request: Request, container: ContainerDep
    ) -> Response[PipelineWritten]:
        result = await asyncio.to_thread(
            container.pipelines.create,
            principal_of(request),
            to_definition(data),
            command_context(request),
        )
        body = written(result.pipeline, result.position)
        return created(body, f"{self.path}/{result.pipeline.id}")

    @get("/", opt=READ, summary="List pipelines (cursor pagination)")
    async def list_pipelines(
        self,
        request: Request,
        container: ContainerDep,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        name: TextFilter = None,
        tag: TagFilter = None,
        namespace: TextFilter = None,
        sort: FromQuery[Literal["created_at", "updated_at", "name"]] = "created_at",
        order: FromQuery[Literal["asc", "desc"]] = "asc",
        min_position: MinPosition = None,
    ) -> PipelinePage:
        await read_your_writes(container, "pipelines", min_position)
        try:
            rows, next_cursor = await container.pipeline_queries.list(
                principal_of(request).tenant_id,
                name=name,
                tags=tag or (),
                namespace=namespace,
                sort=sort,
                order=order,
                limit=limit,
                cursor=cursor,
            )
        except ValueError as error:
            from litestar.exceptions import ValidationException

            raise ValidationException(str(error)) from None
        return PipelinePage(items=[from_row(r) for r in rows], next_cursor=next_cursor)

    @post("/validate", opt=READ, status_code=200, summary="Validate a definition without saving it")
    async def validate_definition(
        self, data: JSONBody[PipelineWrite], request: Request, container: ContainerDep
    ) -> ValidationOut:
        errors = await asyncio.to_thread(
            container.pipelines.validate, principal_of(request), to_definition(data)
        )
        return ValidationOut(
            valid=not errors, errors=[FieldProblem(e.field, e.message) for e in errors]
        )

    @get("/{pipeline_id:uuid}", opt=READ, summary="Get a pipeline (ETag = version)")
    async def get_pipeline(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        container: ContainerDep,
        min_position: MinPosition = None,
    ) -> Response[PipelineRead]:
        await read_your_writes(container, "pipelines", min_position)
        row = await container.pipeline_queries.get(principal_of(request).tenant_id, pipeline_id)
        if row is None:
            raise NotFound("pipeline", pipeline_id)
        return Response(from_row(row), headers={"ETag": etag(row["version"])})

    @put(
        "/{pipeline_id:uuid}",
        opt=WRITE,
        summary="Replace the definition (a new revision if it changed)",
    )
    async def revise(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[PipelineWrite],
        request: Request,
        container: ContainerDep,
    ) -> Response[PipelineWritten]:
        result = await asyncio.to_thread(
            container.pipelines.revise,
            principal_of(request),
            pipeline_id,
            to_definition(data),
            command_context(request),
            expected_version(request),
        )
        body = written(result.pipeline, result.position, changed=result.position is not None)
        return Response(body, headers={"ETag": etag(result.pipeline.version)})

    @delete(
        "/{pipeline_id:uuid}", opt=WRITE, status_code=200, summary="Delete (soft: history is kept)"
    )
    async def delete_pipeline(
        self, pipeline_id: FromPath[UUID], request: Request, container: ContainerDep
    ) -> DeletedOut:
        result = await asyncio.to_thread(
            container.pipelines.delete,
            principal_of(request),
            pipeline_id,
            command_context(request),
            expected_version(request),
        )
        return DeletedOut(str(pipeline_id), True, result.pipeline.version, result.position)

    @get("/{pipeline_id:uuid}/history", opt=READ, summary="Every revision with what changed")
    async def history(
        self, pipeline_id: FromPath[UUID], request: Request, container: ContainerDep
    ) -> HistoryOut:
        records = await asyncio.to_thread(
            container.pipelines.history, principal_of(request), pipeline_id
        )
        return HistoryOut(items=[history_item(r) for r in records])

    @get(
        "/{pipeline_id:uuid}/revisions/{revision:int}",
        opt=READ,
        summary="The definition at a revision",
    )
    async def revision(
        self,
        pipeline_id: FromPath[UUID],
        revision: FromPath[int],
        request: Request,
        container: ContainerDep,
    ) -> RevisionOut:
        record = await asyncio.to_thread(
            container.pipelines.revision, principal_of(request), pipeline_id, revision
        )
        return revision_out(str(pipeline_id), record)

    @post(
        "/{pipeline_id:uuid}/rollback",
        opt=WRITE,
        status_code=200,
        summary="Restore a revision as a new one",
    )
    async def rollback(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[RollbackRequest],
        request: Request,
        container: ContainerDep,
    ) -> RolledBackOut:
        result = await asyncio.to_thread(
            container.pipelines.roll_back,
            principal_of(request),
            pipeline_id,
            data.revision,
            command_context(request),
            expected_version(request),
        )
        p = result.pipeline
        return RolledBackOut(
            str(p.id),
            p.revision,
            result.rolled_back_to,
            result.previous_revision,
            p.version,
            result.position,
        )

    @post("/{pipeline_id:uuid}/clone", opt=WRITE, summary="Copy into a new pipeline")
    async def clone(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[CloneRequest],
        request: Request,
        container: ContainerDep,
    ) -> Response[PipelineWritten]:
        result = await asyncio.to_thread(
            container.pipelines.clone,
            principal_of(request),
            pipeline_id,
            data.name.strip(),
            command_context(request),
        )
        body = written(result.pipeline, result.position)
        return created(body, f"{self.path}/{result.pipeline.id}")

    @post(
        "/{pipeline_id:uuid}/validate",
        opt=READ,
        status_code=200,
        summary="Validate the current definition",
    )
    async def validate_existing(
        self, pipeline_id: FromPath[UUID], request: Request, container: ContainerDep
    ) -> ValidationOut:
        pipeline = await asyncio.to_thread(
            container.pipelines.load, principal_of(request), pipeline_id
        )
        errors = await asyncio.to_thread(
            container.pipelines.validate, principal_of(request), pipeline.definition
        )
        return ValidationOut(
            valid=not errors, errors=[FieldProblem(e.field, e.message) for e in errors]
        )
