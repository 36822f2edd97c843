"""/api/v1/ws: the event feed over a WebSocket (README "WebSocket feed"): several
subscriptions per connection, each with the SSE feed's filters and resume (`after`).

The handshake is answered first (accepted), then the credentials are checked, so that a
refusal is a close code a browser can read (4401 not authenticated, 4403 not allowed to
read events, 4429 over the plan's open streams, 4400 an unreadable handshake, 1013 NATS
not connected) rather than a bare HTTP 403. Credentials come, in this order of
preference, from `?token=` (browsers cannot set headers on a WebSocket; the URL may end
up in proxies' logs), the Authorization or X-API-Key header, or a first message
`{"type": "auth", "token" | "api_key"}` within AUTH_SECONDS. The route is therefore
skipped by the authentication middleware and the permission check (api/auth.py
AUTHENTICATES_ITSELF): it authorises its declared permission itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from litestar import Controller, WebSocket, websocket
from litestar.exceptions import ValidationException, WebSocketDisconnect
from nats.aio.client import Client as NatsClient
from psycopg import OperationalError as PgOperationalError

from api.auth import AUTHENTICATES_ITSELF, Credentials, authenticate
from api.dependencies import LiveEventsDep, NatsDep, ReadPoolDep, SettingsDep
from api.feed_socket import CLOSE_REVOKED, Feed, FeedSocket, close_reason
from api.schemas import ws as messages
from api.schemas.ws import Refusal
from api.streams import admit, inactive_tenant
from application.authorization import Permission, authorize, readable_event_kinds
from application.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)
from application.principal import Principal
from infrastructure import logs
from infrastructure.event_feed import feed_subject
from infrastructure.stream_limits import StreamSlot

log = logging.getLogger(__name__)

AUTH_SECONDS = 5.0
"""How long a connection without credentials in its handshake has to send `auth`."""
QUERY_PARAMETERS = frozenset({"token"})
CLOSE_INVALID = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
"""A platform admin's X-Tenant-ID that names no tenant (HTTP answers it 404)."""
CLOSE_LIMITED = 4429
CLOSE_UNAVAILABLE = 1013
"""Try Again Later (RFC 6455): NATS or PostgreSQL down, as when a feed is closed for
falling behind."""


class _Refused(Exception):
    """The handshake is refused: an error frame, then the close code."""

    def __init__(self, close: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.close, self.refusal = close, Refusal(code, message, field)


class EventSocketController(Controller):
    path = "/api/v1"
    tags = ["events"]

    @websocket(
        "/ws",
        opt={"permission": Permission.EVENTS_READ, AUTHENTICATES_ITSELF: True},
    )
    async def feed(
        self,
        socket: WebSocket[Any, Any, Any],
        nats: NatsDep,
        settings: SettingsDep,
        read_pool: ReadPoolDep,
        live_events: LiveEventsDep,
    ) -> None:
        await socket.accept()
        try:
            principal, credentials, nc, slot = await _handshake(socket, nats)
        except _Refused as refused:
            with contextlib.suppress(Exception):
                await socket.send_data(refused.refusal.frame())
                await socket.close(refused.close, close_reason(str(refused)))
            return
        try:
            subject = feed_subject(settings.subject_prefix, principal.tenant_id)
            kinds = readable_event_kinds(principal)
            tenant = principal.tenant_id
            feed = Feed(nc, live_events, read_pool, subject, tenant, kinds, principal.subject_id)
            await socket.send_data(messages.frame("ready", tenant=principal.tenant_id))
            await FeedSocket(socket, feed, credentials).run()
        except WebSocketDisconnect:
            pass  # the client left before its `ready`
        finally:
            slot.release()


async def _handshake(
    socket: WebSocket[Any, Any, Any], nats: NatsClient | None
) -> tuple[Principal, Credentials | None, NatsClient, StreamSlot]:
    """Who is connecting, allowed to read events, with a place under the plan's limit;
    or _Refused."""
    try:
        principal, credentials = await _authenticated(socket)
        if nats is None or not nats.is_connected:
            raise ServiceUnavailable("the live feed is unavailable: NATS is not connected")
        return principal, credentials, nats, await _admitted(socket, principal)
    except (ServiceUnavailable, PgOperationalError) as down:  # a database outage too
        message = str(down) if isinstance(down, ServiceUnavailable) else "database down"
        raise _Refused(CLOSE_UNAVAILABLE, "SERVICE_UNAVAILABLE", message) from None


async def _authenticated(socket: WebSocket[Any, Any, Any]) -> tuple[Principal, Credentials | None]:
    unknown = sorted(set(socket.query_params) - QUERY_PARAMETERS)
    if unknown:
        message = f"unknown query parameter(s): {', '.join(unknown)}"
        raise _Refused(CLOSE_INVALID, "VALIDATION_ERROR", message, unknown[0])
    credentials = await _credentials(socket)
    try:
        principal = await authenticate(socket, touch=True, credentials=credentials)
    except AuthenticationFailed as refused:
        raise _Refused(CLOSE_REVOKED, "AUTHENTICATION_REQUIRED", str(refused)) from None
    except NotFound as refused:
        raise _Refused(CLOSE_NOT_FOUND, "RESOURCE_NOT_FOUND", str(refused)) from None
    except PermissionDenied as refused:
        raise _Refused(CLOSE_FORBIDDEN, "PERMISSION_DENIED", str(refused)) from None
    except ValidationException as refused:  # a malformed X-Tenant-ID
        raise _Refused(CLOSE_INVALID, "VALIDATION_ERROR", str(refused.detail)) from None
    logs.tenant_id.set(principal.tenant_id)
    if reason := inactive_tenant(principal):
        raise _Refused(CLOSE_REVOKED, "AUTHENTICATION_REQUIRED", reason)
    try:
        authorize(principal, Permission.EVENTS_READ)
    except PermissionDenied as refused:
        raise _Refused(CLOSE_FORBIDDEN, "PERMISSION_DENIED", str(refused)) from None
    return principal, credentials


async def _credentials(socket: WebSocket[Any, Any, Any]) -> Credentials | None:
    """`?token=`, else None for the headers' credentials, else the first message's."""
    if token := socket.query_params.get("token"):
        return Credentials(token=token)
    if "authorization" in socket.headers or "x-api-key" in socket.headers:
        return None
    try:
        async with asyncio.timeout(AUTH_SECONDS):
            event = await socket.receive()
    except TimeoutError:
        message = f"send credentials: a header, ?token= or an auth message within {AUTH_SECONDS:g}s"
        raise _Refused(CLOSE_REVOKED, "AUTHENTICATION_REQUIRED", message) from None
    if event["type"] == "websocket.disconnect":
        raise _Refused(CLOSE_REVOKED, "AUTHENTICATION_REQUIRED", "left before authenticating")
    text = event.get("text")
    try:
        first = messages.parse(text if text is not None else b"")
    except Refusal as refusal:
        raise _Refused(CLOSE_REVOKED, "AUTHENTICATION_REQUIRED", refusal.message) from None
    if not isinstance(first, messages.Auth) or not (first.token or first.api_key):
        message = 'the first message must be {"type": "auth", "token": ...} (or "api_key")'
        raise _Refused(CLOSE_REVOKED, "AUTHENTICATION_REQUIRED", message)
    return Credentials(token=first.token, api_key=first.api_key)


async def _admitted(socket: WebSocket[Any, Any, Any], principal: Principal) -> StreamSlot:
    try:
        return await admit(socket, principal, "ws")
    except RateLimited as refused:
        raise _Refused(CLOSE_LIMITED, "RATE_LIMIT_EXCEEDED", str(refused)) from None
