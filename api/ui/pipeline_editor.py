"""Writing a pipeline's definition on the dashboard: a new pipeline, or a new revision of
one, as JSON in a text area (the body POST /api/v1/pipelines and PUT .../{id} take).
The text is decoded into the API's own request schema and saved by the API's own use
cases (PipelineService.create / revise), so every refusal carries the API's status and
message; it is shown above the text, which is kept, so nothing typed is lost. The edit
form carries the version it was read at: a save over someone else's newer revision is
the API's 409 (as with If-Match), not a silent overwrite."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath

from api.auth import principal_of
from api.controllers.common import command_context
from api.controllers.pipeline_views import to_definition
from api.dependencies import PipelineServiceDep
from api.schemas.pipelines import PipelineWrite
from api.ui.pages import Form
from api.ui.pipeline_actions import definition_lines
from api.ui.views import api_error, page, redirect
from application.authorization import Permission
from application.errors import PermissionDenied, RateLimited, VersionConflict
from domain.errors import DomainError

WRITE = {"permission": Permission.PIPELINES_WRITE}
# Refusals shown on the form with the text kept; anything else is the error page.
REFUSALS = (ValidationException, DomainError, VersionConflict, PermissionDenied, RateLimited)
# What a new pipeline's form starts with: a valid definition to change.
EXAMPLE = """{
  "name": "orders-daily",
  "description": "",
  "tags": [],
  "steps": [
    {"name": "read", "plugin": "Input.file", "config": {"path": "orders.jsonl"}},
    {
      "name": "paid",
      "plugin": "Data_Processing.filter",
      "config": {"expression": "status == 'paid'"},
      "depends_on": ["read"]
    },
    {
      "name": "write",
      "plugin": "Output.file",
      "config": {"path": "paid.jsonl"},
      "depends_on": ["paid"]
    }
  ]
}"""


def _decoded(text: str) -> PipelineWrite:
    """The text as the API decodes the same body (litestar names it `data`): not JSON is
    its 400, a bad field its 422 naming the field, each with the API's message."""
    try:
        return msgspec.json.decode(text.encode(), type=PipelineWrite)
    except msgspec.DecodeError as error:  # ValidationError included: both are the API's
        raise ValidationException(
            "Validation failed", extra=[{"message": str(error), "key": "data", "source": "body"}]
        ) from None


def _form(
    request: Request,
    *,
    text: str,
    action: str,
    title: str,
    error: Exception | None = None,
    **more: Any,
) -> Response[Any]:
    status, shown = (200, None) if error is None else api_error(request, error)
    return page(
        request,
        "pipeline_editor.html",
        status=status,
        text=text,
        action=action,
        title=title,
        error=shown,
        **more,
    )


class PipelineEditor(Controller):
    path = "/ui/pipelines"
    include_in_schema = False

    @get("/new", opt=WRITE)
    async def new_form(self, request: Request) -> Response[Any]:
        return _form(request, text=EXAMPLE, action="/ui/pipelines/new", title="New pipeline")

    @post("/new", opt=WRITE, status_code=303)
    async def create(
        self,
        request: Request,
        pipelines: PipelineServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        text = data.get("definition", "")
        try:
            body = _decoded(text)
            result = await pipelines.create(
                principal_of(request), to_definition(body), command_context(request)
            )
        except REFUSALS as error:
            return _form(
                request, text=text, action="/ui/pipelines/new", title="New pipeline", error=error
            )
        return redirect(
            request, f"/ui/pipelines/{result.state.id}?min_position={result.position or 0}"
        )

    @get("/{pipeline_id:uuid}/edit", opt=WRITE)
    async def edit_form(
        self, request: Request, pipeline_id: FromPath[UUID], pipelines: PipelineServiceDep
    ) -> Response[Any]:
        principal = principal_of(request)
        pipeline = await pipelines.load(principal, pipeline_id)  # 404: not the tenant's
        current = await pipelines.revision(principal, pipeline_id, pipeline.revision)
        text = "\n".join(definition_lines(pipeline_id, current))
        return _edit(request, pipeline_id, text, pipeline.version)

    @post("/{pipeline_id:uuid}/edit", opt=WRITE, status_code=303)
    async def revise(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        pipelines: PipelineServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        text = data.get("definition", "")
        raw = data.get("version", "")
        read_at = int(raw) if raw.isdigit() else None  # the If-Match of the form
        principal = principal_of(request)
        await pipelines.load(principal, pipeline_id)  # another tenant's: a 404 page, no form
        try:
            result = await pipelines.revise(
                principal,
                pipeline_id,
                to_definition(_decoded(text)),
                command_context(request),
                read_at,
            )
        except REFUSALS as error:
            return _edit(request, pipeline_id, text, read_at, error)
        return redirect(request, f"/ui/pipelines/{pipeline_id}?min_position={result.position or 0}")


def _edit(
    request: Request,
    pipeline_id: UUID,
    text: str,
    version: int | None,
    error: Exception | None = None,
) -> Response[Any]:
    return _form(
        request,
        text=text,
        action=f"/ui/pipelines/{pipeline_id}/edit",
        title="Edit pipeline",
        error=error,
        pipeline_id=pipeline_id,
        version=version,
    )
