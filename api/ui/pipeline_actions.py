"""A pipeline's revisions on the dashboard: two of them side by side with what changed,
and the writes the pipeline page offers besides Run: roll back to a revision, clone,
deploy to an environment. Each is the API's own use case with the signed-in principal
(PipelineService.revision as GET .../revisions/{n}, PipelineRollbacks.roll_back as POST
.../rollback, PipelineService.clone as POST .../clone, DeploymentService.deploy as POST
.../deploy), and each form is read through the API's request schema, so a refusal is
the page of the status and message the API would answer."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from api.auth import principal_of
from api.controllers.common import command_context
from api.controllers.deployment_views import to_strategy
from api.controllers.pipeline_views import revision_out
from api.dependencies import DeploymentServiceDep, PipelineServiceDep, RollbackServiceDep
from api.schemas.deployments import PipelineDeploy
from api.schemas.pipelines import CloneRequest, RollbackRequest
from api.ui.pages import Form
from api.ui.views import page, pretty_json, read_form, redirect, strategy_fields
from application.authorization import Permission
from application.pipeline_history import RevisionRecord, summarize_changes

READ = {"permission": Permission.PIPELINES_READ}
WRITE = {"permission": Permission.PIPELINES_WRITE}
DEPLOY = {"permission": Permission.DEPLOYMENTS_WRITE}
# What a revision's definition is compared by: GET .../revisions/{n} less who and when.
_NOT_DEFINITION = ("pipeline_id", "revision", "kind", "actor", "at")


@dataclass(frozen=True)
class Line:
    """One side of a row of the diff: the line's number in its revision (None for the
    gap facing lines only the other side has) and whether it is removed or added."""

    number: int | None
    text: str
    kind: str  # same | removed | added | gap


_GAP = Line(None, "", "gap")


def side_by_side(before: list[str], after: list[str]) -> list[tuple[Line, Line]]:
    """Rows of (revision A's line, revision B's line) aligned by difflib: equal runs
    face each other; a changed run is A's lines (removed) beside B's (added), the
    shorter side padded with gaps so that what follows lines up again."""
    rows: list[tuple[Line, Line]] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [
                (Line(i + 1, before[i], "same"), Line(j + 1, after[j], "same"))
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        left = [Line(i + 1, before[i], "removed") for i in range(i1, i2)]
        right = [Line(j + 1, after[j], "added") for j in range(j1, j2)]
        width = max(len(left), len(right))
        left += [_GAP] * (width - len(left))
        right += [_GAP] * (width - len(right))
        rows += zip(left, right, strict=True)
    return rows


def definition_lines(pipeline_id: UUID, record: RevisionRecord) -> list[str]:
    """The revision as the API shows it (credentials stored in clear read redacted),
    as pretty JSON with sorted keys, so that a diff shows changes, not reorderings."""
    shown = msgspec.to_builtins(revision_out(str(pipeline_id), record))
    definition = {k: v for k, v in shown.items() if k not in _NOT_DEFINITION}
    return pretty_json(definition).splitlines()


class PipelineActions(Controller):
    path = "/ui/pipelines"
    include_in_schema = False

    @get("/{pipeline_id:uuid}/diff", opt=READ)
    async def diff(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        pipelines: PipelineServiceDep,
        from_: Annotated[int | None, QueryParameter(name="from")] = None,
        to: FromQuery[int | None] = None,
    ) -> Response[Any]:
        principal = principal_of(request)
        # The history answers 404 for another tenant's pipeline, and numbers the revisions.
        history = [
            r for r in await pipelines.history(principal, pipeline_id) if r.kind != "deleted"
        ]
        latest = history[-1].revision
        to = latest if to is None else to
        from_ = max(1, to - 1) if from_ is None else from_
        # Each read as GET .../revisions/{n}: an unknown one is its 404 and message.
        before = await pipelines.revision(principal, pipeline_id, from_)
        after = await pipelines.revision(principal, pipeline_id, to)
        rows = side_by_side(
            definition_lines(pipeline_id, before), definition_lines(pipeline_id, after)
        )
        return page(
            request,
            "pipeline_diff.html",
            pipeline_id=pipeline_id,
            name=after.definition.name,
            revisions=[r.revision for r in reversed(history)],
            before=before,
            after=after,
            rows=rows,
            removed=sum(1 for a, _ in rows if a.kind == "removed"),
            added=sum(1 for _, b in rows if b.kind == "added"),
            changes=summarize_changes(before.definition, after.definition),
        )

    @post("/{pipeline_id:uuid}/rollback", opt=WRITE, status_code=303)
    async def rollback(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        data: Annotated[dict[str, str], Form],
        rollbacks: RollbackServiceDep,
    ) -> Response[Any]:
        raw = data.get("revision", "").strip()
        body = read_form({"revision": int(raw) if raw.isdigit() else raw}, RollbackRequest)
        result = await rollbacks.roll_back(
            principal_of(request), pipeline_id, body.revision, command_context(request)
        )
        return redirect(request, f"/ui/pipelines/{pipeline_id}?min_position={result.position or 0}")

    @post("/{pipeline_id:uuid}/clone", opt=WRITE, status_code=303)
    async def clone(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        data: Annotated[dict[str, str], Form],
        pipelines: PipelineServiceDep,
    ) -> Response[Any]:
        body = read_form({"name": data.get("name", "")}, CloneRequest)
        result = await pipelines.clone(
            principal_of(request), pipeline_id, body.name.strip(), command_context(request)
        )
        # The new pipeline's page waits for the read model to have it (?min_position=).
        return redirect(
            request, f"/ui/pipelines/{result.state.id}?min_position={result.position or 0}"
        )

    @post("/{pipeline_id:uuid}/deploy", opt=DEPLOY, status_code=303)
    async def deploy(
        self,
        request: Request,
        pipeline_id: FromPath[UUID],
        data: Annotated[dict[str, str], Form],
        deployments: DeploymentServiceDep,
    ) -> Response[Any]:
        fields: dict[str, Any] = {"environment": data.get("environment", "").strip()}
        if strategy := strategy_fields(data):
            fields["strategy"] = strategy
        body = read_form(fields, PipelineDeploy)
        result = await deployments.deploy(
            principal_of(request),
            pipeline_id,
            body.environment,
            command_context(request),
            strategy=to_strategy(body.strategy),
        )
        return redirect(
            request, f"/ui/deployments/{result.state.id}?min_position={result.position or 0}"
        )
