"""Writing a pipeline's definition on the dashboard: a new pipeline, or a new revision of
one, as the JSON body POST /api/v1/pipelines and PUT .../{id} take (api/ui/json_editor.py),
saved by the API's own use cases (PipelineService.create / revise), so every refusal
carries the API's status and message and the text typed is kept."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from api.auth import principal_of
from api.controllers.common import command_context
from api.controllers.pipeline_views import to_definition
from api.dependencies import PipelineServiceDep
from api.schemas.pipelines import PipelineWrite
from api.ui.json_editor import REFUSALS, Editor, decode_json, read_version
from api.ui.pages import Form
from api.ui.pipeline_actions import definition_lines
from api.ui.views import redirect
from application.authorization import Permission

WRITE = {"permission": Permission.PIPELINES_WRITE}
_FIELDS = (
    "<code>name</code>, <code>description</code>, <code>tags</code>, <code>namespace</code>, "
    "<code>timeout</code>, <code>triggers</code> and <code>steps</code> (each with "
    "<code>name</code>, <code>plugin</code>, <code>config</code> and <code>depends_on</code>)."
)
NEW = Editor(
    "New pipeline",
    "Create pipeline",
    "POST /api/v1/pipelines",
    _FIELDS,
    hint=(
        "The example reads <code>orders.jsonl</code> (JSON lines) from the tenant's folder, "
        "<code>.norn/files/&lt;tenant id&gt;/</code> under the embedded default "
        "(<code>NORN_FILES_ROOT</code> otherwise), and writes the paid orders beside it."
    ),
)
EDIT = Editor(
    "Edit pipeline",
    "Save as a new revision",
    "PUT /api/v1/pipelines/{id}",
    _FIELDS,
    delete_label="Delete this pipeline",
    delete_note=(
        "As DELETE /api/v1/pipelines/{id}: it is no longer listed, run or deployed; its "
        "history and runs stay readable. Refused while one of its deployments is not retired."
    ),
)
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
_NEW_PATH = "/ui/pipelines/new"


class PipelineEditor(Controller):
    path = "/ui/pipelines"
    include_in_schema = False

    @get("/new", opt=WRITE)
    async def new_form(self, request: Request) -> Response[Any]:
        return NEW.render(request, text=EXAMPLE, action=_NEW_PATH, cancel="/ui/pipelines")

    @post("/new", opt=WRITE, status_code=303)
    async def create(
        self,
        request: Request,
        pipelines: PipelineServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        text = data.get("definition", "")
        try:
            body = decode_json(text, PipelineWrite)
            result = await pipelines.create(
                principal_of(request), to_definition(body), command_context(request)
            )
        except REFUSALS as error:
            return NEW.render(
                request, text=text, action=_NEW_PATH, cancel="/ui/pipelines", error=error
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
        text, read_at = data.get("definition", ""), read_version(data)
        principal = principal_of(request)
        await pipelines.load(principal, pipeline_id)  # another tenant's: a 404 page, no form
        try:
            result = await pipelines.revise(
                principal,
                pipeline_id,
                to_definition(decode_json(text, PipelineWrite)),
                command_context(request),
                read_at,
            )
        except REFUSALS as error:
            return _edit(request, pipeline_id, text, read_at, error)
        return redirect(request, f"/ui/pipelines/{pipeline_id}?min_position={result.position or 0}")

    @post("/{pipeline_id:uuid}/delete", opt=WRITE, status_code=303)
    async def delete(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        pipelines: PipelineServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        result = await pipelines.delete(
            principal_of(request), pipeline_id, command_context(request), read_version(data)
        )
        return redirect(request, f"/ui/pipelines?min_position={result.position or 0}")


def _edit(
    request: Request,
    pipeline_id: UUID,
    text: str,
    version: int | None,
    error: Exception | None = None,
) -> Response[Any]:
    return EDIT.render(
        request,
        text=text,
        action=f"/ui/pipelines/{pipeline_id}/edit",
        cancel=f"/ui/pipelines/{pipeline_id}",
        version=version,
        error=error,
        delete_action=f"/ui/pipelines/{pipeline_id}/delete",
    )
