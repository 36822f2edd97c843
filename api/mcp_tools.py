"""What each MCP tool does (README "MCP server"), given the principal that calls it: the
very services and read-model queries of the REST route it stands for, with the same
principal, so tenant isolation is the same (a query takes the principal's tenant, a
command loads only what the principal sees), and answers in the REST route's shapes
(the controllers' view functions). Which permission each needs is declared where the
tools are registered (api/mcp_server.py), and checked before any of this runs."""

from __future__ import annotations

from typing import Any

import msgspec

from api import mcp_arguments as check
from api.controllers.authoring import generated
from api.controllers.deployment_views import from_row as deployment_read
from api.controllers.job_views import from_row as job_read
from api.controllers.paging import query_error
from api.controllers.pipeline_runs import queued
from api.controllers.pipeline_views import from_row as pipeline_read
from api.controllers.pipeline_views import to_definition
from api.controllers.run_views import run_detail, run_read, run_status
from api.dependencies import ReadYourWrites
from api.schemas.authoring import GenerateRequest
from api.schemas.common import FieldProblem
from api.schemas.pipelines import PipelineWrite, ValidationOut
from api.schemas.runs import LogLine, RunCreate, RunLogsOut
from application.authoring.ports import GenerationRequest
from application.errors import NotFound
from application.principal import Principal
from application.threads import Threaded
from domain.events import CommandContext
from infrastructure.metrics import command_observer
from projections.pagination import Page

DEPLOYMENT_STATUSES = ("pending", "verifying", "active", "failed", "retired")
MAX_LOG_LINES = 10_000


class NornTools:
    """The tools' bodies over one composition root (api/bootstrap.py Container)."""

    def __init__(self, container: Any) -> None:
        c = container
        self._c = c

        def commands(name: str, service: Any) -> Threaded[Any]:
            # As the API provides them (api/app.py): counted in the same metric.
            return Threaded(service, command_observer(c.metrics, name))

        self._pipelines = commands("pipelines", c.pipelines)
        self._runs = commands("runs", c.runs)
        self._authoring = commands("authoring", c.authoring)
        self._read_your_writes = ReadYourWrites(
            c.read_pool, c.positions, c.settings.min_position_timeout
        )

    async def list_pipelines(
        self,
        principal: Principal,
        *,
        name: str | None,
        tags: list[str] | None,
        namespace: str | None,
        limit: int,
        cursor: str | None,
        min_position: int | None,
    ) -> dict[str, Any]:
        await self._read_your_writes("pipelines", check.position(min_position))
        if tags is not None and len(tags) > 20:
            raise check.InvalidArgument("tags", "tags must name at most 20 tags")
        page = await _listed(
            self._c.pipeline_queries.list(
                principal.tenant_id,
                name=check.text("name", name),
                tags=tags or (),
                namespace=check.text("namespace", namespace),
                limit=check.limit(limit),
                cursor=cursor,
            )
        )
        return _page([pipeline_read(r) for r in page.items], page)

    async def get_pipeline(
        self, principal: Principal, pipeline_id: str, min_position: int | None
    ) -> Any:
        wanted = check.uuid_of("pipeline_id", pipeline_id)
        await self._read_your_writes("pipelines", check.position(min_position))
        row = await self._c.pipeline_queries.get(principal.tenant_id, wanted)
        if row is None:
            raise NotFound("pipeline", wanted)
        return pipeline_read(row)

    async def validate_pipeline(
        self, principal: Principal, definition: dict[str, Any] | None, pipeline_id: str | None
    ) -> ValidationOut:
        if (definition is None) == (pipeline_id is None):
            raise check.InvalidArgument(
                "definition", "give exactly one of definition and pipeline_id", 422
            )
        if pipeline_id is not None:
            wanted = check.uuid_of("pipeline_id", pipeline_id)
            errors = await self._pipelines.validate_existing(principal, wanted)
        else:
            body = check.body("definition", definition, PipelineWrite)
            errors = await self._pipelines.validate(principal, to_definition(body))
        problems = [FieldProblem(e.field, e.message) for e in errors]
        return ValidationOut(valid=not errors, errors=problems)

    async def generate_pipeline(
        self,
        principal: Principal,
        description: str,
        name: str | None,
        hints: dict[str, Any] | None,
    ) -> Any:
        raw: dict[str, Any] = {"description": description, "hints": hints or {}}
        if name is not None:
            raw["name"] = name
        data = check.body("arguments", raw, GenerateRequest)
        wanted = GenerationRequest(data.description, data.name, dict(data.hints))
        return generated(await self._authoring.generate(principal, wanted))

    async def trigger_run(
        self,
        principal: Principal,
        ctx: CommandContext,
        pipeline_id: str,
        params: dict[str, Any] | None,
        revision: int | None,
    ) -> Any:
        wanted = check.uuid_of("pipeline_id", pipeline_id)
        raw: dict[str, Any] = {"params": {} if params is None else params}
        if revision is not None:
            raw["revision"] = revision
        data = check.body("arguments", raw, RunCreate)
        result = await self._runs.trigger(
            principal, wanted, params=data.params, revision=data.revision, ctx=ctx
        )
        return queued(result)

    async def get_run(self, principal: Principal, run_id: str, min_position: int | None) -> Any:
        return run_detail(await self._run_row(principal, run_id, min_position))

    async def get_run_status(
        self, principal: Principal, run_id: str, min_position: int | None
    ) -> Any:
        row = await self._run_row(principal, run_id, min_position)
        typical = await self._c.run_queries.typical_duration(
            row["tenant_id"], str(row["pipeline_id"])
        )
        return run_status(row, typical)

    async def get_run_logs(
        self, principal: Principal, run_id: str, step: str | None, limit: int
    ) -> RunLogsOut:
        wanted = check.uuid_of("run_id", run_id)
        step = check.text("step", step)
        most = check.limit(limit, most=MAX_LOG_LINES)
        run = await self._runs.load(principal, wanted)  # the run is visible: its logs are
        lines = await self._c.run_logs.lines(str(run.id), step, most + 1)
        return RunLogsOut(
            run_id=str(run.id),
            items=[
                LogLine(r["step"], r["attempt"], r["at"], r["level"], r["message"])
                for r in lines[:most]
            ],
            truncated=len(lines) > most,
        )

    async def list_runs(
        self,
        principal: Principal,
        *,
        status: str | None,
        pipeline_id: str | None,
        since: str | None,
        until: str | None,
        limit: int,
        cursor: str | None,
        min_position: int | None,
    ) -> dict[str, Any]:
        await self._read_your_writes("runs", check.position(min_position))
        page = await _listed(
            self._c.run_queries.list(
                principal.tenant_id,
                status=check.text("status", status),
                pipeline_id=check.optional_uuid("pipeline_id", pipeline_id),
                since=check.moment("since", since),
                until=check.moment("until", until),
                limit=check.limit(limit),
                cursor=cursor,
            )
        )
        return _page([run_read(r) for r in page.items], page)

    async def list_deployments(
        self,
        principal: Principal,
        *,
        pipeline_id: str | None,
        environment: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        page = await _listed(
            self._c.deployment_queries.list(
                principal.tenant_id,
                pipeline_id=check.optional_uuid("pipeline_id", pipeline_id),
                environment=check.text("environment", environment),
                status=check.one_of("status", status, DEPLOYMENT_STATUSES),
                limit=check.limit(limit),
                cursor=cursor,
            )
        )
        return _page([deployment_read(r) for r in page.items], page)

    async def list_jobs(
        self,
        principal: Principal,
        *,
        pipeline_id: str | None,
        deployment_id: str | None,
        enabled: bool | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        pipeline = check.optional_uuid("pipeline_id", pipeline_id)
        deployment = check.optional_uuid("deployment_id", deployment_id)
        page = await _listed(
            self._c.job_queries.list(
                principal.tenant_id,
                enabled=enabled,
                pipeline_id=None if pipeline is None else str(pipeline),
                deployment_id=None if deployment is None else str(deployment),
                limit=check.limit(limit),
                cursor=cursor,
            )
        )
        return _page([job_read(r) for r in page.items], page)

    def list_plugins(self, plugin_type: str | None) -> dict[str, Any]:
        found = [
            {
                "plugin": p.ref(),
                "type": p.type,
                "name": p.name,
                "description": p.description,
                "config_schema": p.config_schema(),
            }
            for p in self._c.plugins.all()
            if plugin_type is None or p.type == plugin_type
        ]
        if plugin_type is not None and not found:
            raise NotFound("plugin type", plugin_type)
        return {"items": found}

    async def _run_row(
        self, principal: Principal, run_id: str, min_position: int | None
    ) -> dict[str, Any]:
        wanted = check.uuid_of("run_id", run_id)
        await self._read_your_writes("runs", check.position(min_position))
        row = await self._c.run_queries.get(principal.tenant_id, wanted)
        if row is None:
            raise NotFound("run", wanted)
        return row


async def _listed(query: Any) -> Page:
    """A list query's refusal (a bad cursor...) as REST's 400 naming the parameter."""
    try:
        page: Page = await query
    except ValueError as error:
        raise query_error(error) from None
    return page


def _page(items: list[Any], page: Page) -> dict[str, Any]:
    return {"items": items, "next_cursor": page.next_cursor, "has_more": page.has_more}


def as_json(value: Any) -> Any:
    """A tool's answer as JSON values (times as RFC 3339 strings), as REST encodes it."""
    return msgspec.to_builtins(value)
