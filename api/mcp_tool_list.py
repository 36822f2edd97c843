"""The MCP tools as clients see them (README "MCP server"): names, descriptions, argument
schemas, and the permission of the REST route each stands for, which the caller must
hold (application/authorization.py). The bodies are in api/mcp_tools.py.

No `from __future__ import annotations` here: the SDK reads each tool's signature to
build its input schema."""

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from application.authorization import Permission

PERMISSIONS = {
    "list_pipelines": Permission.PIPELINES_READ,  # GET /api/v1/pipelines
    "get_pipeline": Permission.PIPELINES_READ,  # GET /api/v1/pipelines/{id}
    "validate_pipeline": Permission.PIPELINES_READ,  # POST /api/v1/pipelines/validate
    "generate_pipeline": Permission.PIPELINES_READ,  # POST /api/v1/pipelines/generate
    "trigger_run": Permission.RUNS_TRIGGER,  # POST /api/v1/pipelines/{id}/runs
    "get_run": Permission.RUNS_READ,  # GET /api/v1/runs/{id}
    "get_run_status": Permission.RUNS_READ,  # GET /api/v1/runs/{id}/status
    "get_run_logs": Permission.RUNS_READ,  # GET /api/v1/runs/{id}/logs
    "list_runs": Permission.RUNS_READ,  # GET /api/v1/runs
    "list_deployments": Permission.DEPLOYMENTS_READ,  # GET /api/v1/deployments
    "list_jobs": Permission.JOBS_READ,  # GET /api/v1/scheduler/jobs
    "list_plugins": Permission.PLUGINS_READ,  # GET /api/v1/plugins
}
"""What each tool needs: the permission of the REST route it stands for (named beside
it; tests/unit/test_mcp.py holds the two together)."""

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

Id = Annotated[str, Field(description="a UUID")]
Limit = Annotated[int, Field(description="rows per page, 1 to 500")]
Cursor = Annotated[str | None, Field(description="the next_cursor of the previous page, unchanged")]
MinPosition = Annotated[
    int | None,
    Field(
        description="wait until the read model has this position (the `position` a "
        "command such as trigger_run answered): read-your-writes"
    ),
]


def register(server: MCPServer, run: Any) -> None:
    """`run(ctx, tool name, work)` is api/mcp_server.py ToolRunner, which checks the
    tool's permission before the work; `run.tools` the bodies."""
    tools = run.tools

    @server.tool(
        description="List the tenant's pipelines, oldest first; filter by a name "
        "substring, tags (all of them) or namespace. Needs pipelines:read.",
        annotations=READ,
    )
    async def list_pipelines(
        ctx: Context,
        name: str | None = None,
        tags: list[str] | None = None,
        namespace: str | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> CallToolResult:
        return await run(
            ctx,
            "list_pipelines",
            lambda p, _: tools.list_pipelines(
                p,
                name=name,
                tags=tags,
                namespace=namespace,
                limit=limit,
                cursor=cursor,
                min_position=min_position,
            ),
        )

    @server.tool(
        description="A pipeline's current definition: steps with their plugin and "
        "config (credentials redacted), revision, tags. Needs pipelines:read.",
        annotations=READ,
    )
    async def get_pipeline(
        ctx: Context, pipeline_id: Id, min_position: MinPosition = None
    ) -> CallToolResult:
        return await run(
            ctx,
            "get_pipeline",
            lambda p, _: tools.get_pipeline(p, pipeline_id, min_position),
        )

    @server.tool(
        description="Validate a pipeline definition without saving it (the body "
        "POST /api/v1/pipelines takes: name, steps, ...), or a saved pipeline's current "
        "definition by pipeline_id; give one. Answers valid and the errors by field. "
        "Needs pipelines:read.",
        annotations=READ,
    )
    async def validate_pipeline(
        ctx: Context,
        definition: dict[str, Any] | None = None,
        pipeline_id: Annotated[str | None, Field(description="a UUID")] = None,
    ) -> CallToolResult:
        return await run(
            ctx,
            "validate_pipeline",
            lambda p, _: tools.validate_pipeline(p, definition, pipeline_id),
        )

    @server.tool(
        description="Draft a pipeline definition from a plain-language description "
        "(saved nowhere): the definition, whether it is valid, the reasoning, "
        "assumptions, and questions whose `key` is the hint that answers them. Needs "
        "pipelines:read.",
        annotations=READ,
    )
    async def generate_pipeline(
        ctx: Context,
        description: str,
        name: str | None = None,
        hints: Annotated[
            dict[str, Any] | None,
            Field(description='answers to earlier questions by key, e.g. {"source": "a.csv"}'),
        ] = None,
    ) -> CallToolResult:
        return await run(
            ctx,
            "generate_pipeline",
            lambda p, _: tools.generate_pipeline(p, description, name, hints),
        )

    @server.tool(
        description="Queue a run of a pipeline (its latest revision unless one is "
        "given) with params (a JSON object). Answers run_id, status and the position "
        "to pass as min_position to get_run. Needs runs:trigger (operator and above).",
        annotations=WRITE,
    )
    async def trigger_run(
        ctx: Context,
        pipeline_id: Id,
        params: dict[str, Any] | None = None,
        revision: int | None = None,
    ) -> CallToolResult:
        return await run(
            ctx,
            "trigger_run",
            lambda p, command: tools.trigger_run(p, command, pipeline_id, params, revision),
        )

    @server.tool(
        description="A run with its steps: status, attempts, timings, records in and "
        "out, errors. Needs runs:read.",
        annotations=READ,
    )
    async def get_run(ctx: Context, run_id: Id, min_position: MinPosition = None) -> CallToolResult:
        return await run(ctx, "get_run", lambda p, _: tools.get_run(p, run_id, min_position))

    @server.tool(
        description="A run's status, current step, progress in percent and estimated "
        "completion. Needs runs:read.",
        annotations=READ,
    )
    async def get_run_status(
        ctx: Context, run_id: Id, min_position: MinPosition = None
    ) -> CallToolResult:
        return await run(
            ctx,
            "get_run_status",
            lambda p, _: tools.get_run_status(p, run_id, min_position),
        )

    @server.tool(
        description="What a run's steps logged, oldest first, optionally of one step; "
        "truncated says whether more lines exist than limit (1 to 10000). Needs runs:read.",
        annotations=READ,
    )
    async def get_run_logs(
        ctx: Context, run_id: Id, step: str | None = None, limit: int = 1000
    ) -> CallToolResult:
        return await run(
            ctx, "get_run_logs", lambda p, _: tools.get_run_logs(p, run_id, step, limit)
        )

    @server.tool(
        description="List runs, newest first; filter by status (queued, running, "
        "succeeded, failed, cancelled, timed_out, crashed), pipeline_id, and queued time "
        "since/until (RFC 3339). Needs runs:read.",
        annotations=READ,
    )
    async def list_runs(
        ctx: Context,
        status: str | None = None,
        pipeline_id: Annotated[str | None, Field(description="a UUID")] = None,
        since: str | None = None,
        until: str | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> CallToolResult:
        return await run(
            ctx,
            "list_runs",
            lambda p, _: tools.list_runs(
                p,
                status=status,
                pipeline_id=pipeline_id,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
                min_position=min_position,
            ),
        )

    @server.tool(
        description="List deployments (a pipeline released to an environment); filter "
        "by pipeline_id, environment, status (pending, verifying, active, failed, "
        "retired). Needs deployments:read.",
        annotations=READ,
    )
    async def list_deployments(
        ctx: Context,
        pipeline_id: Annotated[str | None, Field(description="a UUID")] = None,
        environment: str | None = None,
        status: str | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> CallToolResult:
        return await run(
            ctx,
            "list_deployments",
            lambda p, _: tools.list_deployments(
                p,
                pipeline_id=pipeline_id,
                environment=environment,
                status=status,
                limit=limit,
                cursor=cursor,
            ),
        )

    @server.tool(
        description="List scheduled jobs with their cron, timezone, target and next run; "
        "filter by the pipeline or deployment they run, or enabled. Needs jobs:read.",
        annotations=READ,
    )
    async def list_jobs(
        ctx: Context,
        pipeline_id: Annotated[str | None, Field(description="a UUID")] = None,
        deployment_id: Annotated[str | None, Field(description="a UUID")] = None,
        enabled: bool | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> CallToolResult:
        return await run(
            ctx,
            "list_jobs",
            lambda p, _: tools.list_jobs(
                p,
                pipeline_id=pipeline_id,
                deployment_id=deployment_id,
                enabled=enabled,
                limit=limit,
                cursor=cursor,
            ),
        )

    @server.tool(
        description="The step plugins a pipeline may use, with their config JSON "
        "schemas; optionally of one type (Input, Output, Data_Processing, ...). Needs "
        "plugins:read.",
        annotations=READ,
    )
    async def list_plugins(ctx: Context, plugin_type: str | None = None) -> CallToolResult:
        async def listed(p: Any, _: Any) -> Any:
            return tools.list_plugins(plugin_type)

        return await run(ctx, "list_plugins", listed)
