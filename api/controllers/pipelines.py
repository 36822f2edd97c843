"""/api/v1/pipelines: commands append events; list/get read the `pipelines` read model;
history and revisions replay the pipeline's own event stream."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from api.auth import principal_of
from api.controllers.audit_params import AsOfParam, parse_as_of
from api.controllers.common import (
    IfMatch,
    MinPosition,
    TextFilter,
    command_context,
    created,
    etag,
    expected_version,
)
from api.controllers.paging import paged, query_error
from api.controllers.pipeline_views import (
    from_row,
    history_item,
    read_of,
    revision_out,
    rolled_back,
    to_definition,
    written,
)
from api.dependencies import (
    PagingDep,
    PipelineQueriesDep,
    PipelineServiceDep,
    PointInTimeDep,
    ReadYourWritesDep,
    RollbackServiceDep,
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
from domain.errors import FieldError

READ = {"permission": Permission.PIPELINES_READ}
WRITE = {"permission": Permission.PIPELINES_WRITE}
# ?tag=a&tag=b: pipelines carrying every one of the tags.
TagFilter = Annotated[list[str] | None, Parameter(max_items=20)]


class PipelineController(Controller):
    path = "/api/v1/pipelines"
    tags = ["pipelines"]

    @post("/", opt=WRITE, summary="Create a pipeline (revision 1)")
    async def create(
        self, data: JSONBody[PipelineWrite], request: Request, pipelines: PipelineServiceDep
    ) -> Response[PipelineWritten]:
        result = await pipelines.create(
            principal_of(request), to_definition(data), command_context(request)
        )
        return created(written(result), f"{self.path}/{result.state.id}")

    @get("/", opt=READ, summary="List pipelines (cursor pagination)")
    async def list_pipelines(
        self,
        request: Request,
        pipeline_queries: PipelineQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        name: TextFilter = None,
        tag: TagFilter = None,
        namespace: TextFilter = None,
        sort: FromQuery[Literal["created_at", "updated_at", "name"]] = "created_at",
        order: FromQuery[Literal["asc", "desc"]] = "asc",
        min_position: MinPosition = None,
    ) -> Response[PipelinePage]:
        await read_your_writes("pipelines", min_position)
        try:
            result = await pipeline_queries.list(
                principal_of(request).tenant_id,
                name=name,
                tags=tag or (),
                namespace=namespace,
                sort=sort,
                order=order,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [from_row(r) for r in result.items]
        body = PipelinePage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @post("/validate", opt=READ, status_code=200, summary="Validate a definition without saving it")
    async def validate_definition(
        self, data: JSONBody[PipelineWrite], request: Request, pipelines: PipelineServiceDep
    ) -> ValidationOut:
        errors = await pipelines.validate(principal_of(request), to_definition(data))
        return _validation(errors)

    @get("/{pipeline_id:uuid}", opt=READ, summary="Get a pipeline (ETag = version)")
    async def get_pipeline(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        pipeline_queries: PipelineQueriesDep,
        read_your_writes: ReadYourWritesDep,
        point_in_time: PointInTimeDep,
        min_position: MinPosition = None,
        as_of: AsOfParam = None,
    ) -> Response[PipelineRead]:
        if (moment := parse_as_of(as_of)) is not None:
            past = await point_in_time.pipeline(principal_of(request), pipeline_id, moment)
            return Response(read_of(past), headers={"ETag": etag(past.version)})
        await read_your_writes("pipelines", min_position)
        row = await pipeline_queries.get(principal_of(request).tenant_id, pipeline_id)
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
        pipelines: PipelineServiceDep,
        if_match: IfMatch = None,
    ) -> Response[PipelineWritten]:
        result = await pipelines.revise(
            principal_of(request),
            pipeline_id,
            to_definition(data),
            command_context(request),
            expected_version(if_match),
        )
        return Response(written(result), headers={"ETag": etag(result.version)})

    @delete(
        "/{pipeline_id:uuid}", opt=WRITE, status_code=200, summary="Delete (soft: history is kept)"
    )
    async def delete_pipeline(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        pipelines: PipelineServiceDep,
        if_match: IfMatch = None,
    ) -> DeletedOut:
        result = await pipelines.delete(
            principal_of(request), pipeline_id, command_context(request), expected_version(if_match)
        )
        return DeletedOut(str(pipeline_id), True, result.version, result.position)

    @get("/{pipeline_id:uuid}/history", opt=READ, summary="Every revision with what changed")
    async def history(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        pipelines: PipelineServiceDep,
    ) -> HistoryOut:
        records = await pipelines.history(principal_of(request), pipeline_id)
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
        pipelines: PipelineServiceDep,
    ) -> RevisionOut:
        record = await pipelines.revision(principal_of(request), pipeline_id, revision)
        return revision_out(str(pipeline_id), record)

    @post(
        "/{pipeline_id:uuid}/rollback",
        opt=WRITE,
        status_code=200,
        summary="Restore a revision as a new one (and release it where deployed)",
    )
    async def rollback(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[RollbackRequest],
        request: Request,
        rollbacks: RollbackServiceDep,
        if_match: IfMatch = None,
    ) -> RolledBackOut:
        result = await rollbacks.roll_back(
            principal_of(request),
            pipeline_id,
            data.revision,
            command_context(request),
            expected_version(if_match),
            redeploy=data.redeploy,
        )
        return rolled_back(result)

    @post("/{pipeline_id:uuid}/clone", opt=WRITE, summary="Copy into a new pipeline")
    async def clone(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[CloneRequest],
        request: Request,
        pipelines: PipelineServiceDep,
    ) -> Response[PipelineWritten]:
        result = await pipelines.clone(
            principal_of(request), pipeline_id, data.name.strip(), command_context(request)
        )
        return created(written(result), f"{self.path}/{result.state.id}")

    @post(
        "/{pipeline_id:uuid}/validate",
        opt=READ,
        status_code=200,
        summary="Validate the current definition",
    )
    async def validate_existing(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        pipelines: PipelineServiceDep,
    ) -> ValidationOut:
        errors = await pipelines.validate_existing(principal_of(request), pipeline_id)
        return _validation(errors)


def _validation(errors: list[FieldError]) -> ValidationOut:
    return ValidationOut(
        valid=not errors, errors=[FieldProblem(e.field, e.message) for e in errors]
    )
