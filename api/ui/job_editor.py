"""Writing a scheduled job on the dashboard: a new one, or a whole new definition of one,
as the JSON body POST /api/v1/scheduler/jobs and PUT .../{id} take (api/ui/json_editor.py),
saved by the API's own use cases (JobService.create / update): a bad cron expression, an
unknown time zone or target, a taken name are the API's answers, shown above the text."""

from __future__ import annotations

import json
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from api.auth import principal_of
from api.controllers.common import command_context
from api.controllers.job_views import from_row, to_spec
from api.dependencies import JobQueriesDep, JobServiceDep, PipelineQueriesDep
from api.schemas.jobs import JobCreate, JobWrite, TargetIn
from api.ui.json_editor import REFUSALS, Editor, decode_json, read_version
from api.ui.pages import Form
from api.ui.views import pretty_json, redirect
from application.authorization import Permission
from application.errors import NotFound

WRITE = {"permission": Permission.JOBS_WRITE}
_FIELDS = (
    "<code>name</code>, <code>target</code> (a <code>pipeline_id</code>, optionally with a "
    "<code>revision</code>, or a <code>deployment_id</code>), <code>cron_expr</code> (five "
    "fields, a sixth for seconds, or <code>@daily</code> and the like), <code>timezone</code>, "
    "<code>params</code>, <code>misfire_policy</code>, <code>max_catchup</code>, "
    "<code>overlap_policy</code>, <code>jitter_seconds</code>, <code>start_at</code>, "
    "<code>end_at</code>, <code>description</code> and <code>labels</code>"
)
NEW = Editor(
    "New schedule",
    "Create schedule",
    "POST /api/v1/scheduler/jobs",
    _FIELDS + ", and <code>enabled</code>.",
)
EDIT = Editor(
    "Edit schedule",
    "Save the schedule",
    "PUT /api/v1/scheduler/jobs/{id}",
    _FIELDS + " (enable and disable it on its page).",
    delete_label="Delete this schedule",
    delete_note="As DELETE /api/v1/scheduler/jobs/{id}: it fires no more; its history stays.",
)
_NEW_PATH = "/ui/jobs/new"
_WRITTEN = {f.name for f in msgspec.structs.fields(JobWrite)}
_TARGET = {f.name for f in msgspec.structs.fields(TargetIn)}


async def _example(request: Request, pipeline_queries: Any) -> str:
    """A valid job to change: nightly at 03:00 UTC, of the tenant's first pipeline."""
    first = await pipeline_queries.list(principal_of(request).tenant_id, limit=1)
    target = str(first.items[0]["id"]) if first.items else "<a pipeline's id>"
    example = {
        "name": "nightly",
        "target": {"pipeline_id": target},
        "cron_expr": "0 3 * * *",
        "timezone": "UTC",
        "params": {},
        "enabled": True,
    }
    return json.dumps(example, indent=2)


class JobEditor(Controller):
    path = "/ui/jobs"
    include_in_schema = False

    @get("/new", opt=WRITE)
    async def new_form(
        self, request: Request, pipeline_queries: PipelineQueriesDep
    ) -> Response[Any]:
        text = await _example(request, pipeline_queries)
        return NEW.render(request, text=text, action=_NEW_PATH, cancel="/ui/jobs")

    @post("/new", opt=WRITE, status_code=303)
    async def create(
        self, request: Request, jobs: JobServiceDep, data: Annotated[dict[str, str], Form]
    ) -> Response[Any]:
        text = data.get("definition", "")
        try:
            body = decode_json(text, JobCreate)
            result = await jobs.create(
                principal_of(request), to_spec(body), command_context(request), enabled=body.enabled
            )
        except REFUSALS as error:
            return NEW.render(request, text=text, action=_NEW_PATH, cancel="/ui/jobs", error=error)
        return redirect(request, f"/ui/jobs/{result.state.id}?min_position={result.position or 0}")

    @get("/{job_id:uuid}/edit", opt=WRITE)
    async def edit_form(
        self, request: Request, job_id: FromPath[UUID], job_queries: JobQueriesDep
    ) -> Response[Any]:
        row = await job_queries.get(principal_of(request).tenant_id, job_id)
        if row is None or row["deleted"]:
            raise NotFound("job", job_id)
        shown = msgspec.to_builtins(from_row(row))  # as GET .../jobs/{id} answers
        written = {k: v for k, v in shown.items() if k in _WRITTEN}
        written["target"] = {k: v for k, v in shown["target"].items() if v is not None}
        return _edit(request, job_id, pretty_json(written), row["version"])

    @post("/{job_id:uuid}/edit", opt=WRITE, status_code=303)
    async def update(
        self,
        request: Request,
        job_id: FromPath[UUID],
        jobs: JobServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        text, read_at = data.get("definition", ""), read_version(data)
        principal = principal_of(request)
        await jobs.load(principal, job_id)  # another tenant's: a 404 page, no form
        try:
            body = decode_json(text, JobWrite)
            result = await jobs.update(
                principal, job_id, to_spec(body), command_context(request), read_at
            )
        except REFUSALS as error:
            return _edit(request, job_id, text, read_at, error)
        return redirect(request, f"/ui/jobs/{job_id}?min_position={result.position or 0}")

    @post("/{job_id:uuid}/delete", opt=WRITE, status_code=303)
    async def delete(
        self,
        request: Request,
        job_id: FromPath[UUID],
        jobs: JobServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        result = await jobs.delete(
            principal_of(request), job_id, command_context(request), read_version(data)
        )
        return redirect(request, f"/ui/jobs?min_position={result.position or 0}")


def _edit(
    request: Request, job_id: UUID, text: str, version: int | None, error: Exception | None = None
) -> Response[Any]:
    return EDIT.render(
        request,
        text=text,
        action=f"/ui/jobs/{job_id}/edit",
        cancel=f"/ui/jobs/{job_id}",
        version=version,
        error=error,
        delete_action=f"/ui/jobs/{job_id}/delete",
    )
