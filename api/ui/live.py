"""Live fragments for the dashboard: an SSE stream that sends a page fragment, whole,
when it connects and again after the events it watches (infrastructure/event_feed.py
`follow`, as /api/v1/events/stream: the same tenant filter, stream slots and credential
recheck).

Why no state is missed, on the first connection or a reconnect after a network drop:
the stream takes the store's settled position S, subscribes to the feed from S (events
after S are replayed from the store, then come live), waits until the read model the
fragment shows (the runs', the deployments') has S, and only then renders the first
fragment. What happened up to S is in that
fragment; everything after S comes through the feed and renders again. Each message is
the whole fragment, so a reconnecting browser needs no Last-Event-ID: the first
message it gets is the current state.

Why a burst costs one render: after an event the stream gathers those arriving within
COALESCE_SECONDS, waits for the read model to have the last of them and renders once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass

from litestar import Request
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.response import ServerSentEvent, ServerSentEventMessage
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from api.auth import principal_of
from api.dependencies import (
    LiveEventsDep,
    NatsDep,
    ReadPoolDep,
    ReadYourWrites,
    ReadYourWritesDep,
    SettingsDep,
)
from api.streams import admit, inactive_tenant, recheck
from api.ui.session import NO_RENEWAL_STATE
from application.authorization import readable_event_kinds
from application.errors import AuthenticationFailed, ServiceUnavailable
from infrastructure.envelope import CloudEvent
from infrastructure.event_feed import (
    FeedFilter,
    FeedItem,
    KeepAlive,
    feed_subject,
    follow_batches,
    one_by_one,
)
from infrastructure.live_events import LiveEvents
from infrastructure.notification_log import settled_position

COALESCE_SECONDS = 0.3
Render = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class LiveFeed:
    """What a live page's stream needs of the process, one dependency (`live_feed`,
    provided by the dashboard's router) instead of five per handler."""

    nats: NatsClient | None
    prefix: str
    read_pool: AsyncConnectionPool
    read_your_writes: ReadYourWrites
    live_events: LiveEvents

    async def fragments(
        self,
        request: Request,
        *,
        event: str,
        render: Render,
        resources: Collection[tuple[str, str]] = (),
        types: tuple[str, ...] = (),
        projection: str = "runs",
    ) -> ServerSentEvent:
        """SSE messages named `event`, each `render()` of the `projection` read model,
        after the principal's tenant's events of `resources` or `types` it may read (the
        caller checks what it renders exists first: a 404 takes no stream slot)."""
        principal = principal_of(request)
        wanted = FeedFilter(
            tenant=principal.tenant_id,
            types=types,
            resources=resources,
            kinds=readable_event_kinds(principal),
        )
        return await live_fragments(
            request,
            event=event,
            wanted=wanted,
            render=render,
            nats=self.nats,
            prefix=self.prefix,
            read_pool=self.read_pool,
            read_your_writes=self.read_your_writes,
            live_events=self.live_events,
            projection=projection,
        )


def provide_live_feed(
    nats: NatsDep,
    settings: SettingsDep,
    read_pool: ReadPoolDep,
    read_your_writes: ReadYourWritesDep,
    live_events: LiveEventsDep,
) -> LiveFeed:
    return LiveFeed(nats, settings.subject_prefix, read_pool, read_your_writes, live_events)


LiveFeedDep = NamedDependency[LiveFeed]


async def live_fragments(
    request: Request,
    *,
    event: str,
    wanted: FeedFilter,
    render: Render,
    nats: NatsClient | None,
    prefix: str,
    read_pool: AsyncConnectionPool,
    read_your_writes: ReadYourWrites,
    live_events: LiveEvents,
    projection: str = "runs",
) -> ServerSentEvent:
    """The stream itself (see the module's docstring)."""

    async def caught_up(position: int) -> bool:
        return await _caught_up(read_your_writes, projection, position)

    principal = principal_of(request)
    if nats is None or not nats.is_connected:
        raise ServiceUnavailable("the live feed is unavailable: NATS is not connected")
    if reason := inactive_tenant(principal):
        raise AuthenticationFailed(reason)
    async with read_pool.connection() as conn:
        start = await settled_position(conn)
    subject = feed_subject(prefix, principal.tenant_id)
    slot = await admit(request, principal, "sse")
    request.scope["state"][NO_RENEWAL_STATE] = True  # its rechecks: after the answer began
    items = one_by_one(
        follow_batches(
            nats,
            read_pool,
            subject,
            wanted,
            start,
            recheck(request, kinds=wanted.kinds),
            live_events,
        )
    )
    try:
        await anext(items)  # subscribed from `start`: nothing after it is missed
        behind = not await caught_up(start)
        first = await render()
    except BaseException:
        slot.release()
        await items.aclose()
        raise
    queue: asyncio.Queue[FeedItem | None] = asyncio.Queue()

    async def pump() -> None:
        # Its own task, so that gathering a burst can time out on the queue without
        # cancelling the feed's generator.
        try:
            async for item in items:
                await queue.put(item)
        finally:
            await queue.put(None)

    pumping = asyncio.create_task(pump())

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        nonlocal behind
        last = start
        try:
            yield ServerSentEventMessage(id=str(start), event=event, data=first)
            while True:
                item = await queue.get()
                if isinstance(item, KeepAlive):
                    if behind:  # the last render was older than its event: try again
                        behind = not await caught_up(last)
                        yield ServerSentEventMessage(id=str(last), event=event, data=await render())
                    else:
                        yield ServerSentEventMessage(comment="keepalive", data=None)
                    continue
                if not isinstance(item, CloudEvent):
                    return  # Resume, Revoked or the end: the browser reconnects afresh
                last, ending = await _burst(queue, item.position)
                behind = not await caught_up(last)
                yield ServerSentEventMessage(id=str(last), event=event, data=await render())
                if ending:
                    return
        finally:
            slot.release()

    async def ended() -> None:
        slot.release()
        pumping.cancel()
        with contextlib.suppress(BaseException):
            await pumping
        await items.aclose()

    return ServerSentEvent(messages(), background=BackgroundTask(ended))


async def _burst(queue: asyncio.Queue[FeedItem | None], position: int) -> tuple[int, bool]:
    """The last position of the events arriving within COALESCE_SECONDS, and whether
    the feed ended meanwhile (render what came, then end)."""
    last = position
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(COALESCE_SECONDS):
            while True:
                item = await queue.get()
                if isinstance(item, CloudEvent):
                    last = max(last, item.position)
                elif not isinstance(item, KeepAlive):
                    return last, True
    return last, False


async def _caught_up(read_your_writes: ReadYourWrites, projection: str, position: int) -> bool:
    """Whether the `projection` read model has `position`. A late projection: render what it has,
    and again at its next event or keep-alive, so a run's last state is never lost."""
    try:
        await read_your_writes(projection, position)
    except ServiceUnavailable:
        return False
    return True
