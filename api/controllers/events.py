"""/api/v1/events/stream: a Server-Sent Events feed of the caller's tenant's events, fed
from NATS. Isolation is by subject: a tenant's subscription can only ever match its own
tenant token in norn.events.<tenant>.>."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator

from litestar import Controller, Request, get
from litestar.params import FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.auth import principal_of
from api.dependencies import NatsDep, SettingsDep
from application.authorization import Permission
from application.errors import ServiceUnavailable
from infrastructure import envelope

KEEPALIVE_SECONDS = 15.0
# Comments only (data=None): an empty `data:` line would be a message event to EventSource.


class EventStreamController(Controller):
    path = "/api/v1/events"
    tags = ["events"]

    @get(
        "/stream",
        opt={"permission": Permission.EVENTS_READ},
        summary="Live feed (SSE) of your tenant's events",
    )
    async def stream(
        self,
        request: Request,
        nats: NatsDep,
        settings: SettingsDep,
        types: FromQuery[str | None] = None,
    ) -> ServerSentEvent:
        nc = nats
        if nc is None or not nc.is_connected:
            raise ServiceUnavailable("the live feed is unavailable: NATS is not connected")
        principal = principal_of(request)
        prefix = settings.subject_prefix
        tenant = principal.tenant_id
        subject = f"{prefix}.events.{tenant}.>" if tenant else f"{prefix}.events.>"
        patterns = [t.strip() for t in types.split(",") if t.strip()] if types else []
        subscription = await nc.subscribe(subject, pending_msgs_limit=10_000)

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            try:
                yield ServerSentEventMessage(comment="connected", data=None)
                while True:
                    try:
                        msg = await subscription.next_msg(timeout=KEEPALIVE_SECONDS)
                    except TimeoutError:
                        yield ServerSentEventMessage(comment="keepalive", data=None)
                        continue
                    event = envelope.decode(msg.data)
                    if patterns and not any(fnmatch.fnmatchcase(event.type, p) for p in patterns):
                        continue
                    yield ServerSentEventMessage(
                        id=str(event.position), event=event.type, data=msg.data.decode()
                    )
            finally:
                await subscription.unsubscribe()

        return ServerSentEvent(messages())
