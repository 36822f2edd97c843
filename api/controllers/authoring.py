"""Authoring help (README "Authoring help"): POST /api/v1/pipelines/generate, and
POST /api/v1/pipelines/{id}/regenerate, /describe and /analyze (also `:regenerate`,
`:describe`, `:analyze`). Reads only: each needs pipelines:read, and nothing is saved."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, post
from litestar.params import FromPath, JSONBody

from api.auth import principal_of
from api.dependencies import (
    AuthoringServiceDep,
    DeploymentQueriesDep,
    JobQueriesDep,
    StepHistoryDep,
)
from api.schemas.authoring import (
    AnalyzeOut,
    AppliedOut,
    DescribeOut,
    DraftDefinition,
    FindingOut,
    GenerateOut,
    GenerateRequest,
    QuestionOut,
    ReasonOut,
    RegenerateOut,
    RegenerateRequest,
    StepTextOut,
)
from api.schemas.pipelines import ChangesOut, StepOut, TriggerOut
from application.authoring.describe import DeploymentFact, ScheduleFact
from application.authoring.ports import GenerationRequest
from application.authoring.service import Checked
from application.authorization import Permission
from domain.pipeline import PipelineDefinition

READ = {"permission": Permission.PIPELINES_READ}
LISTED = 500  # deployments and jobs of one pipeline shown (a page of the read model)


class AuthoringController(Controller):
    path = "/api/v1/pipelines"
    tags = ["authoring"]

    @post("/generate", opt=READ, status_code=200, summary="Draft a pipeline from a description")
    async def generate(
        self, data: JSONBody[GenerateRequest], request: Request, authoring: AuthoringServiceDep
    ) -> GenerateOut:
        wanted = GenerationRequest(data.description, data.name, dict(data.hints))
        return generated(await authoring.generate(principal_of(request), wanted))

    @post(
        "/{pipeline_id:uuid}/regenerate",
        opt=READ,
        status_code=200,
        summary="Draft the next revision from instructions (saved nowhere)",
    )
    async def regenerate(
        self,
        pipeline_id: FromPath[UUID],
        data: JSONBody[RegenerateRequest],
        request: Request,
        authoring: AuthoringServiceDep,
    ) -> RegenerateOut:
        done = await authoring.regenerate(principal_of(request), pipeline_id, data.instructions)
        draft = done.checked.draft
        return RegenerateOut(
            pipeline_id=done.pipeline_id,
            base_revision=done.base_revision,
            definition=_definition(draft.definition),
            valid=done.checked.valid,
            changes=ChangesOut(**done.changes),
            applied=[AppliedOut(a.instruction, a.change) for a in done.applied],
            questions=[QuestionOut(q.key, q.question) for q in draft.questions],
        )

    @post(
        "/{pipeline_id:uuid}/describe",
        opt=READ,
        status_code=200,
        summary="What the pipeline does, in plain language",
    )
    async def describe(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        authoring: AuthoringServiceDep,
        deployment_queries: DeploymentQueriesDep,
        job_queries: JobQueriesDep,
    ) -> DescribeOut:
        pipeline = await authoring.load(principal_of(request), pipeline_id)
        tenant = pipeline.tenant_id
        rows = (await deployment_queries.list(tenant, pipeline_id=pipeline_id, limit=LISTED)).items
        deployments = [
            DeploymentFact(
                r["environment"],
                "retired" if r.get("retired") else r["status"],
                r["active_revision"],
                _strategy(r["strategy"]),
            )
            for r in rows
        ]
        targets = {str(pipeline_id): "the pipeline"}
        targets.update({str(r["id"]): f"the {r['environment']} deployment" for r in rows})
        jobs: list[dict[str, Any]] = []
        for target in targets:
            kind = "pipeline_id" if target == str(pipeline_id) else "deployment_id"
            page = await job_queries.list(tenant, **{kind: target}, limit=LISTED)
            jobs.extend(page.items)
        schedules = [
            ScheduleFact(
                j["name"],
                j["cron_expr"],
                j["timezone"],
                j["enabled"],
                targets.get(str(j["target_deployment_id"] or j["target_pipeline_id"]), "it"),
            )
            for j in jobs
        ]
        told = authoring.service.describe(pipeline, deployments, schedules)
        return DescribeOut(
            pipeline_id=str(pipeline.id),
            revision=pipeline.revision,
            summary=told.summary,
            steps=[StepTextOut(s.step, s.plugin, s.text) for s in told.steps],
            inputs=told.inputs,
            outputs=told.outputs,
            schedules=told.schedules,
            deployments=told.deployments,
            triggers=told.triggers,
            text=told.text,
        )

    @post(
        "/{pipeline_id:uuid}/analyze",
        opt=READ,
        status_code=200,
        summary="Findings with suggested changes, and figures from the run history",
    )
    async def analyze(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        authoring: AuthoringServiceDep,
        step_history: StepHistoryDep,
    ) -> AnalyzeOut:
        pipeline = await authoring.load(principal_of(request), pipeline_id)
        history = await step_history.run_history(pipeline.tenant_id, pipeline_id)
        result = authoring.service.analyze(pipeline, history)
        return AnalyzeOut(
            pipeline_id=str(pipeline.id),
            revision=pipeline.revision,
            findings=[
                FindingOut(f.severity, f.step, f.code, f.message, f.suggestion)
                for f in result.findings
            ],
            figures=result.figures,
        )


def generated(checked: Checked) -> GenerateOut:
    """The answer to a generation (also the MCP tool's, api/mcp_tools.py)."""
    draft = checked.draft
    return GenerateOut(
        definition=_definition(draft.definition),
        valid=checked.valid,
        reasoning=[ReasonOut(r.phrase, r.step, r.plugin, r.why) for r in draft.reasoning],
        assumptions=list(draft.assumptions),
        questions=[QuestionOut(q.key, q.question) for q in draft.questions],
    )


def _definition(d: PipelineDefinition) -> DraftDefinition:
    return DraftDefinition(
        name=d.name,
        description=d.description,
        tags=list(d.tags),
        steps=[
            StepOut(
                s.name,
                s.plugin,
                s.config,
                list(s.depends_on),
                s.retries,
                s.retry_delay,
                s.max_delay,
                s.timeout,
            )
            for s in d.steps
        ],
        namespace=d.namespace,
        timeout=d.timeout,
        triggers=[TriggerOut(t.on, dict(t.where), dict(t.params)) for t in d.triggers],
    )


def _strategy(value: Any) -> str:
    """The read model keeps a deployment's strategy as JSON: its type names it."""
    return str(value.get("type", value)) if isinstance(value, dict) else str(value)
