"""Runs on the dashboard: the list, a run's page, its live feed, cancel and retry.

The live feed (GET /ui/runs/{id}/live) is the API's event feed (infrastructure/event_feed.py,
as /api/v1/events/stream: the same isolation filter, stream slots and credential recheck)
narrowed to one run. For each of the run's events it waits until the runs read model has
that event's position, then sends the run's whole state as an HTML fragment (event `run`,
id = the event's position) that htmx's SSE extension swaps into the page. Each message
is the whole state, and the first one is sent on connect, so a reconnecting browser
(EventSource resumes with Last-Event-ID after a network drop) misses no state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.auth import principal_of
from api.controllers.common import MinPosition, command_context
from api.controllers.events import _last_event_id
from api.dependencies import (
    LiveEventsDep,
    NatsDep,
    ReadPoolDep,
    ReadYourWritesDep,
    RunLogsDep,
    RunQueriesDep,
    RunServiceDep,
    SettingsDep,
)
from api.streams import admit, inactive_tenant, recheck
from api.ui.pages import Form
from api.ui.session import NO_RENEWAL_STATE
from api.ui.views import page, redirect
from application.authorization import Permission, readable_event_kinds
from application.errors import AuthenticationFailed, NotFound, ServiceUnavailable
from domain.run import RunStatus
from infrastructure.event_feed import FeedFilter, KeepAlive, Resume, Revoked, feed_subject, follow

READ = {"permission": Permission.RUNS_READ}
CANCEL = {"permission": Permission.RUNS_CANCEL}
TRIGGER = {"permission": Permission.RUNS_TRIGGER}
LOG_LINES = 200
_FILTERS = ("", *(s.value for s in RunStatus))


class RunPages(Controller):
    path = "/ui/runs"
    include_in_schema = False

    @get("/", opt=READ)
    async def list_runs(
        self, request: Request, run_queries: RunQueriesDep, status: FromQuery[str | None] = None
    ) -> Response[Any]:
        wanted = status if status in _FILTERS else ""
        result = await run_queries.list(
            principal_of(request).tenant_id, status=wanted or None, limit=50
        )
        return page(request, "runs.html", runs=result.items, status=wanted, statuses=_FILTERS)

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
        read_your_writes: ReadYourWritesDep,
        nats: NatsDep,
        settings: SettingsDep,
        read_pool: ReadPoolDep,
        live_events: LiveEventsDep,
    ) -> ServerSentEvent:
        principal = principal_of(request)
        first = await _fragment(request, run_id, run_queries, run_logs)  # 404 before a slot
        if nats is None or not nats.is_connected:
            raise ServiceUnavailable("the live feed is unavailable: NATS is not connected")
        if reason := inactive_tenant(principal):
            raise AuthenticationFailed(reason)
        wanted = FeedFilter(
            tenant=principal.tenant_id,
            resources=(("run", str(run_id)),),
            kinds=readable_event_kinds(principal),
        )
        subject = feed_subject(settings.subject_prefix, principal.tenant_id)
        slot = await admit(request, principal, "sse")
        request.scope["state"][NO_RENEWAL_STATE] = True  # its rechecks: after the answer began
        items = follow(
            nats, read_pool, subject, wanted, _last_event_id(request), recheck(request), live_events
        )
        try:
            await anext(items)  # subscribed before the snapshot is read: nothing is missed
        except BaseException:
            slot.release()
            raise

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            try:
                yield ServerSentEventMessage(event="run", data=first)
                async for item in items:
                    if isinstance(item, KeepAlive):
                        yield ServerSentEventMessage(comment="keepalive", data=None)
                        continue
                    if isinstance(item, Resume | Revoked):
                        return  # the browser reconnects: a fresh snapshot, or the sign-in
                    try:
                        await read_your_writes("runs", item.position)
                    except ServiceUnavailable:
                        pass  # a late projection: the next event (or reconnect) catches up
                    html = await _fragment(request, run_id, run_queries, run_logs)
                    yield ServerSentEventMessage(id=str(item.position), event="run", data=html)
            finally:
                slot.release()

        async def ended() -> None:
            slot.release()
            await items.aclose()

        return ServerSentEvent(messages(), background=BackgroundTask(ended))

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
    return {"run": row, "logs": lines[:LOG_LINES], "logs_truncated": len(lines) > LOG_LINES}


async def _fragment(request: Request, run_id: UUID, run_queries: Any, run_logs: Any) -> str:
    state = await _state(request, run_id, run_queries, run_logs)
    template = request.app.template_engine.get_template("run_state.html")
    context = page(request, "run_state.html", **state).context
    return template.render(**context)
