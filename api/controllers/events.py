"""/api/v1/events/stream: a Server-Sent Events feed of the caller's tenant's events that
resumes (infrastructure/event_feed.py): `Last-Event-ID` or `?after=` replays from the
event store what the client missed, then the feed goes on live from NATS. Isolation is
by subject (a tenant's subscription only matches its own norn.events.<tenant>.>) and by
the filter every replayed event passes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.background_tasks import BackgroundTask
from litestar.params import FromQuery, Parameter
from litestar.response import Stream

from api.auth import principal_of
from api.controllers.audit_params import MAX_POSITION
from api.controllers.paging import parameter_error
from api.dependencies import LiveEventsDep, NatsDep, ReadPoolDep, SettingsDep
from api.streams import admit, inactive_tenant, recheck
from application.authorization import Permission, readable_event_kinds
from application.errors import AuthenticationFailed, ServiceUnavailable
from infrastructure import envelope
from infrastructure.event_feed import (
    FeedFilter,
    FeedItem,
    KeepAlive,
    Resume,
    Revoked,
    feed_subject,
    follow_batches,
    parse_resources,
    parse_types,
)
from infrastructure.notification_log import max_position

After = Annotated[
    int | None,
    Parameter(ge=0, description="Replay the events after this position, then go on live"),
]


class EventStreamController(Controller):
    path = "/api/v1/events"
    tags = ["events"]

    @get(
        "/stream",
        opt={"permission": Permission.EVENTS_READ},
        summary="Feed (SSE) of your tenant's events: resumes after Last-Event-ID or ?after=",
        media_type="text/event-stream",
    )
    async def stream(
        self,
        request: Request,
        nats: NatsDep,
        settings: SettingsDep,
        read_pool: ReadPoolDep,
        live_events: LiveEventsDep,
        types: FromQuery[str | None] = None,
        resources: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
        after: After = None,
    ) -> Stream:
        nc = nats
        if nc is None or not nc.is_connected:
            raise ServiceUnavailable("the live feed is unavailable: NATS is not connected")
        principal = principal_of(request)
        if reason := inactive_tenant(principal):  # as a suspension ends an open stream
            raise AuthenticationFailed(reason)
        try:
            wanted = FeedFilter(
                tenant=principal.tenant_id,
                types=parse_types(types),
                resources=parse_resources(resources),
                actor=actor or None,
                kinds=readable_event_kinds(principal),
            )
        except ValueError as error:
            raise parameter_error("resources", f"resources: {error}") from None
        start = after if after is not None else _last_event_id(request)
        if start is not None:
            async with read_pool.connection() as conn:
                head = await max_position(conn)
            if start > head:
                field, source = ("after", "query") if after is not None else (LAST_ID, "header")
                raise parameter_error(field, f"{field}: past the newest event ({head})", source)
        subject = feed_subject(settings.subject_prefix, principal.tenant_id)
        slot = await admit(request, principal, "sse")  # 429 over the plan's open streams
        check = recheck(request, kinds=wanted.kinds)  # a demotion ends it too
        batches = follow_batches(nc, read_pool, subject, wanted, start, check, live=live_events)
        try:
            await anext(batches)  # subscribed before the answer starts: nothing is missed
        except BaseException:
            slot.release()
            raise

        async def messages() -> AsyncIterator[bytes]:
            try:
                yield b": connected\r\n\r\n"
                async for batch in batches:
                    yield b"".join(map(_message, batch))  # one write for what was ready
                    if isinstance(batch[-1], Resume | Revoked):
                        return
            finally:
                slot.release()

        async def ended() -> None:
            # Also when the client left before the first message: the generator above
            # never started, so its `finally` would not run.
            slot.release()
            await batches.aclose()

        return Stream(
            messages(),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
            background=BackgroundTask(ended),
        )


SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
"""As litestar's ServerSentEvent sends them: no cache and no proxy buffering."""


def _message(item: FeedItem) -> bytes:
    """One SSE message. Written here rather than by litestar's ServerSentEventMessage,
    which splits and rebuilds every field per stream: the JSON has no line break (msgspec
    escapes them), the type and position none either. A keep-alive is a comment only: an
    empty `data:` line would be a message event to EventSource."""
    if isinstance(item, KeepAlive):
        return b": keepalive\r\n\r\n"
    if isinstance(item, Resume):
        data = msgspec.json.encode({"after": item.after}).decode()
        return f"event: resume\r\ndata: {data}\r\n\r\n".encode()
    if isinstance(item, Revoked):
        data = msgspec.json.encode({"code": "AUTHENTICATION_REQUIRED", "message": item.reason})
        return f"event: error\r\ndata: {data.decode()}\r\n\r\n".encode()
    text = envelope.text_of(item)
    return f"id: {item.position}\r\nevent: {item.type}\r\ndata: {text}\r\n\r\n".encode()


LAST_ID = "Last-Event-ID"


def _last_event_id(request: Request) -> int | None:
    """The position in Last-Event-ID (what an EventSource sends when it reconnects)."""
    raw = request.headers.get("last-event-id")
    if not raw:
        return None
    # ASCII digits only ("²" is a digit to isdigit, not to int), and no more than a
    # position has (int() refuses 4,300 digits and more with a ValueError).
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_POSITION)):
        raise parameter_error(
            LAST_ID, f"{LAST_ID}: must be an event position (an integer)", "header"
        )
    return int(raw)
