"""Runs on the dashboard: the list (running, recent, failed) and its live feed, a run's
page and its live feed, cancel and retry, and the statistics page (api/ui/run_stats.py).

Both live feeds (GET /ui/runs/live and GET /ui/runs/{id}/live) are api/ui/live.py: the
API's event feed narrowed to the tenant's run events (or one run's), sending the whole
fragment (the list, or the run's state) on connect and again after each burst of events,
which htmx's SSE extension swaps into the page. A browser that reconnects after a
network drop (EventSource, or the extension reopening a closed stream) gets the current
state in its first message and misses none."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent

from api.auth import principal_of
from api.controllers.common import MinPosition, command_context
from api.dependencies import (
    PipelineQueriesDep,
    ReadYourWritesDep,
    RunLogsDep,
    RunQueriesDep,
    RunServiceDep,
)
from api.ui.live import LiveFeedDep
from api.ui.pages import Form
from api.ui.run_stats import stats_page
from api.ui.views import fragment, page, redirect
from application.authorization import Permission
from application.errors import NotFound
from application.runs import RETRYABLE
from domain.run import TERMINAL

READ = {"permission": Permission.RUNS_READ}
CANCEL = {"permission": Permission.RUNS_CANCEL}
TRIGGER = {"permission": Permission.RUNS_TRIGGER}
LOG_LINES = 200
LIST_SIZE = 50
VIEWS = {
    "recent": (),
    "running": ("queued", "running"),
    "failed": ("failed", "timed_out", "crashed"),
}
"""The list's tabs: the statuses each shows (none: every status), newest first."""
RUN_EVENTS = ("norn.run.*",)


def _view(raw: str | None) -> str:
    view = raw or "recent"
    if view not in VIEWS:
        message = f"view must be one of {', '.join(VIEWS)}"
        raise ValidationException(
            message, extra=[{"message": message, "key": "view", "source": "query"}]
        )
    return view


class RunPages(Controller):
    path = "/ui/runs"
    include_in_schema = False

    @get("/", opt=READ)
    async def list_runs(
        self,
        request: Request,
        run_queries: RunQueriesDep,
        read_your_writes: ReadYourWritesDep,
        view: FromQuery[str | None] = None,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        shown = _view(view)
        await read_your_writes("runs", min_position)
        runs = await _runs(request, run_queries, shown)
        return page(request, "runs.html", runs=runs, view=shown, views=VIEWS, limit=LIST_SIZE)

    @get("/live", opt=READ)
    async def live_list(
        self,
        request: Request,
        run_queries: RunQueriesDep,
        live_feed: LiveFeedDep,
        view: FromQuery[str | None] = None,
    ) -> ServerSentEvent:
        """The list of `view`, again after each burst of the tenant's run events."""
        shown = _view(view)

        async def render() -> str:
            runs = await _runs(request, run_queries, shown)
            return fragment(request, "_runs_list.html", runs=runs, view=shown, limit=LIST_SIZE)

        return await live_feed.fragments(request, event="runs", render=render, types=RUN_EVENTS)

    @get("/stats", opt=READ)
    async def stats(
        self,
        request: Request,
        run_queries: RunQueriesDep,
        pipeline_queries: PipelineQueriesDep,
        window: FromQuery[str | None] = None,
        pipeline_id: FromQuery[UUID | None] = None,
    ) -> Response[Any]:
        return await stats_page(request, run_queries, pipeline_queries, window, pipeline_id)

    @get("/{run_id:uuid}", opt=READ)
    async def run(
        self,
        request: Request,
        run_id: FromPath[UUID],
        run_queries: RunQueriesDep,
        run_logs: RunLogsDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        await read_your_writes("runs", min_position)
        state = await _state(request, run_id, run_queries, run_logs)
        return page(request, "run.html", **state)

    @get("/{run_id:uuid}/live", opt=READ)
    async def live(
        self,
        request: Request,
        run_id: FromPath[UUID],
        run_queries: RunQueriesDep,
        run_logs: RunLogsDep,
        live_feed: LiveFeedDep,
    ) -> ServerSentEvent:
        """The run's whole state, again after each burst of its events or of its
        retry's: the Retry button waits for the retry to end (`_retryable`)."""
        await _state(request, run_id, run_queries, run_logs)  # 404 before a stream slot
        followed = {("run", str(run_id))}  # and its retry's, once a render learns of it

        async def render() -> str:
            state = await _state(request, run_id, run_queries, run_logs)
            if state["run"]["retried_by"]:
                followed.add(("run", str(state["run"]["retried_by"])))
            return fragment(request, "run_state.html", **state)

        return await live_feed.fragments(request, event="run", render=render, resources=followed)

    @post("/{run_id:uuid}/cancel", opt=CANCEL, status_code=303)
    async def cancel(
        self, request: Request, run_id: FromPath[UUID], runs: RunServiceDep
    ) -> Response[Any]:
        result = await runs.cancel(principal_of(request), run_id, command_context(request))
        return redirect(request, f"/ui/runs/{run_id}?min_position={result.position or 0}")

    @post("/{run_id:uuid}/retry", opt=TRIGGER, status_code=303)
    async def retry(
        self,
        request: Request,
        run_id: FromPath[UUID],
        runs: RunServiceDep,
        data: Annotated[dict[str, str], Form],
    ) -> Response[Any]:
        result = await runs.retry(
            principal_of(request),
            run_id,
            from_failed_step=data.get("from_failed_step") == "true",
            ctx=command_context(request),
        )
        return redirect(request, f"/ui/runs/{result.state.id}?min_position={result.position}")


async def _state(request: Request, run_id: UUID, run_queries: Any, run_logs: Any) -> dict[str, Any]:
    row = await run_queries.get(principal_of(request).tenant_id, run_id)
    if row is None:
        raise NotFound("run", run_id)
    lines = await run_logs.lines(str(row["id"]), None, LOG_LINES + 1)
    return {
        "run": row,
        "logs": lines[:LOG_LINES],
        "logs_truncated": len(lines) > LOG_LINES,
        "retryable": await _retryable(request, row, run_queries),
    }


async def _retryable(request: Request, row: dict[str, Any], run_queries: Any) -> bool:
    """Whether the API would retry the run (application/runs.py): it ended unsuccessfully
    and its latest retry, if any, has ended too."""
    if row["status"] not in RETRYABLE:
        return False
    if not row["retried_by"]:
        return True
    retry = await run_queries.get(principal_of(request).tenant_id, UUID(str(row["retried_by"])))
    return retry is None or retry["status"] in TERMINAL


async def _runs(request: Request, run_queries: Any, view: str) -> list[dict[str, Any]]:
    tenant_id = principal_of(request).tenant_id
    return await run_queries.latest(tenant_id, VIEWS[view], limit=LIST_SIZE)
