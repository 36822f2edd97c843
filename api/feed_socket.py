"""One authenticated WebSocket of the feed (GET /api/v1/ws; the handshake is
api/controllers/ws.py): the client's messages, its subscriptions, and the one path
frames leave by.

Each subscription is a task over infrastructure/event_feed.py `follow` (subscribed
before its `ack` is sent, so nothing after the ack is missed; replay from `after`, then
live) writing into one bounded outbox; one sender task writes the outbox to the socket
in order. Backpressure is the SSE feed's: a client that does not read fills the outbox,
the subscriptions wait, and NATS buffers; past event_feed.SLOW_AFTER waiting events (or
a subscription kept waiting STALL_SECONDS) every subscription is told where to resume,
`{"type": "resume", "subscription", "after"}`, behind what was already queued, and the
socket is closed with CLOSE_RESUME. Credentials and roles are checked again every second
for the whole connection (one check however many subscriptions), and before each new
subscription: revoked, or demoted below the event kinds the connection was opened with,
it closes with 4401 at once, queued frames or not."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from api.auth import Credentials, authenticate
from api.schemas import ws as messages
from api.schemas.ws import Refusal, invalid
from api.streams import recheck
from application.errors import AuthenticationFailed, NotFound, PermissionDenied
from infrastructure import event_feed
from infrastructure.event_feed import FeedFilter, Resume, parse_resources, parse_types
from infrastructure.live_events import LiveEvents
from infrastructure.notification_log import max_position

log = logging.getLogger(__name__)

OUTBOX = 1_000
"""Frames waiting for the client before its subscriptions wait too."""
STALL_SECONDS = 5.0
"""A subscription kept waiting this long for room in the outbox: the client is too slow."""
DRAIN_SECONDS = 5.0
"""Time a closing client gets to read what waits for it (the resume frames last)."""
MAX_SUBSCRIPTIONS = 20
CLOSE_REVOKED = 4401
CLOSE_RESUME = 1013
"""Try Again Later (RFC 6455): reconnect and subscribe again with `after`."""
CLOSE_FAILED = 1011


@dataclass
class _Subscription:
    id: Any
    last: int
    """Resume after this position: every matching event up to it is in the outbox."""
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class Feed:
    """Where a connection's subscriptions read: NATS, the store, the subject of its
    tenant (or every tenant's), and whose events it may read."""

    nats: NatsClient
    live: LiveEvents
    pool: AsyncConnectionPool
    subject: str
    tenant: str | None
    kinds: frozenset[str]
    subject_id: str


class FeedSocket:
    def __init__(
        self, socket: WebSocket[Any, Any, Any], feed: Feed, credentials: Credentials | None
    ) -> None:
        self._socket, self._feed, self._credentials = socket, feed, credentials
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=OUTBOX)
        self._subscriptions: dict[Any, _Subscription] = {}
        self._closing: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._resuming = False
        self._close_when_sent = (CLOSE_RESUME, "")

    async def run(self) -> None:
        """Until the client leaves or the server closes; closes the socket."""
        tasks = [
            asyncio.create_task(self._send()),
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._watch()),
        ]
        try:
            await asyncio.wait([*tasks, self._closing], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and not task.cancelled() and (error := task.exception()):
                    if isinstance(error, WebSocketDisconnect):
                        continue  # the client left while a frame was on its way
                    log.error("websocket feed failed", exc_info=error)
                    self._close(CLOSE_FAILED, "internal error; subscribe again with after")
        finally:
            following = [s.task for s in self._subscriptions.values() if s.task is not None]
            for task in [*following, *tasks]:
                task.cancel()
            # Their NATS subscriptions end before the handler returns.
            await asyncio.gather(*following, *tasks, return_exceptions=True)
            code, reason = self._closing.result() if self._closing.done() else (1000, "")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(DRAIN_SECONDS):  # a client that reads nothing
                    await self._socket.close(code, close_reason(reason))

    def _close(self, code: int, reason: str) -> None:
        if not self._closing.done():
            self._closing.set_result((code, reason))

    # --- receiving ------------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            event = await self._socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            raw = event.get("text")
            try:
                answer = await self._answer(messages.parse(raw if raw is not None else b""))
            except Refusal as refused:
                answer = refused.frame()
            if answer is not None:
                await self._outbox.put(answer)

    async def _answer(self, message: messages.ClientMessage) -> str | None:
        if isinstance(message, messages.Ping):
            return messages.frame("pong", id=message.id)
        if isinstance(message, messages.Subscribe):
            await self._subscribe(message)
            return None  # the subscription's task sends the ack, once subscribed
        if isinstance(message, messages.Unsubscribe):
            sub = self._subscriptions.pop(message.id, None)
            if sub is None:
                raise Refusal("RESOURCE_NOT_FOUND", "no such subscription", "id", message.id)
            if sub.task is not None:
                sub.task.cancel()
            return messages.frame("ack", id=message.id)
        return await self._reauthenticate(message)

    async def _reauthenticate(self, message: messages.Auth) -> str:
        """A later `auth` replaces the credentials (a fresh access token before the old
        one expires), if they are the same principal's."""
        credentials = Credentials(token=message.token, api_key=message.api_key)
        try:
            principal = await authenticate(self._socket, credentials=credentials)
        except (AuthenticationFailed, PermissionDenied, NotFound) as error:
            raise Refusal("AUTHENTICATION_REQUIRED", str(error), None, message.id) from None
        if (
            principal.subject_id != self._feed.subject_id
            or principal.tenant_id != self._feed.tenant
        ):
            message_text = "these credentials are another principal's: open another connection"
            raise Refusal("AUTHENTICATION_REQUIRED", message_text, None, message.id)
        self._credentials = credentials
        return messages.frame("ack", id=message.id)

    # --- subscriptions --------------------------------------------------------------------

    async def _subscribe(self, message: messages.Subscribe) -> None:
        ident = message.id
        if self._resuming:
            return  # closing: the client resumes on a new connection
        if ident in self._subscriptions:
            raise Refusal("RESOURCE_CONFLICT", "a subscription has this id already", "id", ident)
        if (reason := await self._revoked()) is not None:
            # Not on the kinds of a role it lost since the last check: closed now, as
            # that check would within a second (a replay of `after` could be long).
            self._close(CLOSE_REVOKED, reason)
            return
        if len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            raise Refusal(
                "QUOTA_EXCEEDED",
                f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection",
                "subscriptions",
                ident,
                limit=MAX_SUBSCRIPTIONS,
                used=len(self._subscriptions),
            )
        try:
            wanted = FeedFilter(
                tenant=self._feed.tenant,
                types=parse_types(messages.names(message.types)),
                resources=parse_resources(messages.names(message.resources)),
                actor=message.actor or None,
                kinds=self._feed.kinds,
            )
        except ValueError as error:
            raise invalid(f"resources: {error}", "resources", ident) from None
        async with self._feed.pool.connection() as conn:
            head = await max_position(conn)
        if message.after is not None and message.after > head:
            raise invalid(f"after: past the newest event ({head})", "after", ident)
        sub = _Subscription(ident, message.after if message.after is not None else head)
        self._subscriptions[ident] = sub
        sub.task = asyncio.create_task(self._follow(sub, wanted, message.after))

    async def _follow(self, sub: _Subscription, wanted: FeedFilter, after: int | None) -> None:
        feed = self._feed
        batches = event_feed.follow_batches(
            feed.nats, feed.pool, feed.subject, wanted, after, live=feed.live
        )
        try:
            await anext(batches)  # subscribed: the ack promises nothing after it is missed
            await self._outbox.put(messages.frame("ack", id=sub.id))
            event_frame = messages.event_framer(sub.id)
            async for batch in batches:
                for item in batch:
                    if isinstance(item, Resume):
                        sub.last = max(sub.last, item.after)
                        return await self._resume()
                    if isinstance(item, event_feed.KeepAlive):
                        continue  # the WebSocket's own pings keep the connection alive
                    frame = event_frame(item)
                    if self._outbox.full():  # a timer only when the client lags
                        try:
                            async with asyncio.timeout(STALL_SECONDS):
                                await self._outbox.put(frame)
                        except TimeoutError:
                            return await self._resume()
                    else:
                        self._outbox.put_nowait(frame)
                    sub.last = item.position
        except Exception:
            log.exception("websocket feed: subscription %r failed", sub.id)
            await self._resume(CLOSE_FAILED, "the feed failed here; subscribe again with after")
        finally:
            await batches.aclose()

    async def _resume(
        self, code: int = CLOSE_RESUME, reason: str = "too slow: subscribe again with after"
    ) -> None:
        """End every subscription, tell the client where each resumes (behind what it was
        sent already), then close."""
        if self._resuming:
            return
        self._resuming = True
        current = asyncio.current_task()
        for sub in self._subscriptions.values():
            if sub.task is not None and sub.task is not current:
                sub.task.cancel()
        self._close_when_sent = (code, reason)
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                for sub in list(self._subscriptions.values()):
                    frame = messages.frame("resume", subscription=sub.id, after=sub.last)
                    await self._outbox.put(frame)
                await self._outbox.put(None)  # the sender closes once it has sent it all
                await asyncio.shield(self._closing)
        except TimeoutError:
            self._close(code, reason)

    # --- sending and watching -------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            frame = await self._outbox.get()
            if frame is None:
                self._close(*self._close_when_sent)
                return
            await self._socket.send_data(frame)

    async def _revoked(self) -> str | None:
        """Why the connection's credentials, or its roles, no longer hold (None: they do)."""
        return await recheck(self._socket, self._credentials, self._feed.kinds)()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(event_feed.RECHECK_SECONDS)
            reason = await self._revoked()
            if reason is not None:
                self._close(CLOSE_REVOKED, reason)
                return


def close_reason(text: str) -> str:
    """A close frame's reason is at most 123 bytes of UTF-8."""
    return text.encode()[:120].decode(errors="ignore")
