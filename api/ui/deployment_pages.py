"""Deployments on the dashboard: per environment, each deployment's active release and a
verifying release with its deadline; a deployment's page with its release history and
Roll back, live (a verification's outcome shows without a reload, api/ui/live.py).
Reads are the API's tenant-scoped queries (projections/deployment_queries.py, as GET
/api/v1/deployments and .../status); Roll back is DeploymentService.roll_back with the
signed-in principal, as POST /api/v1/deployments/{id}/rollback."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import groupby
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import ServerSentEvent

from api.auth import principal_of
from api.controllers.common import MinPosition, command_context
from api.dependencies import (
    DeploymentQueriesDep,
    DeploymentServiceDep,
    PipelineQueriesDep,
    ReadYourWritesDep,
)
from api.ui.live import LiveFeedDep
from api.ui.pages import Form
from api.ui.views import fragment, page, redirect
from application.authorization import Permission
from application.errors import NotFound
from domain.errors import InvalidCommand

READ = {"permission": Permission.DEPLOYMENTS_READ}
WRITE = {"permission": Permission.DEPLOYMENTS_WRITE}
_LIST_SIZE = 200
# Releases a rollback may name: ones that were active once (the domain has the last word).
_ROLLBACK_TARGETS = ("superseded", "rolled_back")


class DeploymentPages(Controller):
    path = "/ui/deployments"
    include_in_schema = False

    @get("/", opt=READ)
    async def list_deployments(
        self,
        request: Request,
        deployment_queries: DeploymentQueriesDep,
        pipeline_queries: PipelineQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        await read_your_writes("deployments", min_position)  # after a retire
        tenant_id = principal_of(request).tenant_id
        result = await deployment_queries.list(tenant_id, limit=_LIST_SIZE)
        live = [r for r in result.items if not r["retired"]]
        names = await _pipeline_names(pipeline_queries, tenant_id, live)
        live.sort(key=lambda r: (r["environment"], names.get(r["pipeline_id"], ""), r["id"]))
        environments = [
            (environment, list(rows))
            for environment, rows in groupby(live, key=lambda r: r["environment"])
        ]
        return page(
            request,
            "deployments.html",
            environments=environments,
            names=names,
            more=result.has_more,
            left=_left,
        )

    @get("/{deployment_id:uuid}", opt=READ)
    async def deployment(
        self,
        request: Request,
        deployment_id: FromPath[UUID],
        deployment_queries: DeploymentQueriesDep,
        pipeline_queries: PipelineQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        await read_your_writes("deployments", min_position)
        state = await _state(request, deployment_id, deployment_queries, pipeline_queries)
        return page(request, "deployment.html", **state)

    @get("/{deployment_id:uuid}/live", opt=READ)
    async def live(
        self,
        request: Request,
        deployment_id: FromPath[UUID],
        deployment_queries: DeploymentQueriesDep,
        pipeline_queries: PipelineQueriesDep,
        live_feed: LiveFeedDep,
    ) -> ServerSentEvent:
        """The deployment's state, again after each burst of its events: a release
        verifying, then verified or failed, without a reload."""
        # 404 before a stream slot is taken.
        await _state(request, deployment_id, deployment_queries, pipeline_queries)

        async def render() -> str:
            state = await _state(request, deployment_id, deployment_queries, pipeline_queries)
            return fragment(request, "_deployment_state.html", **state)

        return await live_feed.fragments(
            request,
            event="deployment",
            render=render,
            resources=(("deployment", str(deployment_id)),),
            projection="deployments",
        )

    @post("/{deployment_id:uuid}/rollback", opt=WRITE, status_code=303)
    async def rollback(
        self,
        request: Request,
        deployment_id: FromPath[UUID],
        deployments: DeploymentServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        raw = data.get("to_release", "").strip()
        try:
            to_release = int(raw) if raw else None
        except ValueError:
            raise InvalidCommand("to_release must be a release number", "to_release") from None
        result = await deployments.roll_back(
            principal_of(request), deployment_id, command_context(request), to_release=to_release
        )
        return redirect(
            request, f"/ui/deployments/{deployment_id}?min_position={result.position or 0}"
        )


async def _state(
    request: Request, deployment_id: UUID, deployment_queries: Any, pipeline_queries: Any
) -> dict[str, Any]:
    """What the page and its live fragment show, from one snapshot (with_releases)."""
    tenant_id = principal_of(request).tenant_id
    row, releases = await deployment_queries.with_releases(tenant_id, deployment_id)
    if row is None or releases is None:
        raise NotFound("deployment", deployment_id)
    names = await _pipeline_names(pipeline_queries, tenant_id, [row])
    return {
        "deployment": row,
        "pipeline_name": names.get(row["pipeline_id"]),
        "releases": releases,
        "rollback_targets": [r for r in releases if r["outcome"] in _ROLLBACK_TARGETS],
        "left": _left,
    }


async def _pipeline_names(
    pipeline_queries: Any, tenant_id: str | None, rows: list[dict[str, Any]]
) -> dict[str, str]:
    """Each deployed pipeline's name, read in the same tenant (a deleted one: no name)."""
    names: dict[str, str] = {}
    for pipeline_id in {r["pipeline_id"] for r in rows}:
        pipeline = await pipeline_queries.get(tenant_id, UUID(pipeline_id))
        if pipeline is not None:
            names[pipeline_id] = pipeline["name"]
    return names


def _left(deadline: datetime | None) -> str:
    """A verification's countdown as of rendering; past the deadline, the sweep decides."""
    if deadline is None:
        return "no deadline"
    seconds = int((deadline - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "deadline passed: failing it is due"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s left" if minutes else f"{rest} s left"
