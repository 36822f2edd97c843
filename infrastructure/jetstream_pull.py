"""A JetStream pull consumer that keeps its pull requests open ahead of the reader, so
that messages flow to the process as they are stored and a reader takes, without a
round trip, whatever has arrived (docs/architecture.md §6, "Following NATS").

Why not nats-py's `PullSubscription.fetch`: each call is a round trip to NATS (a pull
request, then its answer), and a projection runner under load made one per batch from
a busy process to a busy server, often for the one or two messages that had come while
the last batch applied (at 500 creates/s the NATS -> read model part of the lag was
p99 48-108 ms with fetches, 28-46 ms with this). This is the scheme of the NATS
clients' newer "consume" APIs: requests for
`batch` messages are kept open (a new one when fewer than half a batch are still owed),
the server pushes each message as it is stored, and idle heartbeats on the requests tell
a live but quiet consumer from requests the server no longer holds (a restart, a lost
connection), which are then made anew. A consumer that is gone (deleted under the
requests, or missing when one came) is reported to the reader, which binds again.

The protocol is JetStream's own: a JSON request on `$JS.API.CONSUMER.MSG.NEXT.<stream>.
<consumer>` with the reply inbox; messages come with their ack subject as reply subject
(so `Msg.ack()` and `Msg.metadata` work on them), and the end of a request as a status
message (408 expired, 409 conflict) whose Nats-Pending-Messages header says how many of
its messages it will no longer deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import Header
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

REQUEST_EXPIRES = 30.0
"""Seconds a pull request stays open on the server; an expired one is renewed."""
IDLE_HEARTBEAT = 5.0
"""Seconds between the server's heartbeats on an open request with nothing to deliver.
Nothing heard for two of them: the server no longer holds the requests; made anew."""
_PENDING_MESSAGES = "Nats-Pending-Messages"
_HEARTBEAT = "100"
_CONSUMER_DELETED = "Consumer Deleted"
_NO_RESPONDERS = "503"


class ConsumerGone(RuntimeError):
    """The consumer was deleted under the reader, or is missing: bind it again."""


class ContinuousPull:
    """Reads a durable pull consumer through pull requests kept open ahead of it. One
    reader at a time (`take`); close it (or drop its connection) to stop."""

    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        consumer: str,
        batch: int,
        api_prefix: str = "$JS.API",
        expires: float = REQUEST_EXPIRES,
        heartbeat: float = IDLE_HEARTBEAT,
    ) -> None:
        self._nc = nc
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._stream = stream
        self._consumer = consumer
        self._batch = batch
        self._expires = expires
        self._heartbeat = heartbeat
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._arrived: deque[Msg] = deque()
        self._wake = asyncio.Event()
        self._owed = 0  # messages the open requests may still deliver
        self._heard = time.monotonic()  # a message or status on the inbox, or a request
        self._gone: ConsumerGone | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._arrive)
        await self._top_up()

    async def close(self) -> None:
        """Stop reading. Messages the server still sends to the requests are lost to
        this reader (unacked, they are redelivered, or acked by a later ack of
        AckPolicy.ALL, and the store catch-up after the next bind covers them)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def take(self, limit: int, timeout: float, stop: asyncio.Event) -> list[Msg]:  # noqa: ASYNC109 - a wait for messages, not a deadline on a call
        """Up to `limit` messages, in stream order: at once those that have arrived,
        else the first to arrive within `timeout` (with any that came beside it); []
        after `timeout` or as soon as `stop` is set. Raises ConsumerGone when the
        consumer was deleted."""
        if self._gone is not None:
            raise self._gone
        if not self._arrived:
            # Cleared before anything here awaits: a message that comes meanwhile wakes
            # the wait below at once, instead of leaving it to its timeout.
            self._wake.clear()
            await self._renew_if_unheard()
            if self._gone is not None:
                raise self._gone
        if not self._arrived:
            waiting = asyncio.ensure_future(self._wake.wait())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {waiting, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiting.cancel()
                stopping.cancel()
            if self._gone is not None:
                raise self._gone
            if stop.is_set():
                return []
        taken = [self._arrived.popleft() for _ in range(min(limit, len(self._arrived)))]
        await self._top_up()
        return taken

    async def _arrive(self, msg: Msg) -> None:
        """The inbox's callback: never awaits, so a burst read from the socket is all
        here before the reader wakes."""
        self._heard = time.monotonic()
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status is None:
            self._owed = max(0, self._owed - 1)
            self._arrived.append(msg)
            self._wake.set()
            return
        if status == _HEARTBEAT:
            return
        # The end of a request (408: expired; 409: a conflict, e.g. a leadership change
        # in a cluster, or the consumer deleted): what it still owed will not come.
        # Without a count (not every 409 carries one) all are forgotten: requesting too
        # much only buffers a little more, too little would stall the reader.
        assert msg.headers is not None
        try:
            self._owed = max(0, self._owed - int(msg.headers[_PENDING_MESSAGES]))
        except (KeyError, ValueError):
            self._owed = 0
        description = msg.headers.get(Header.DESCRIPTION, "")
        if _CONSUMER_DELETED in description or status == _NO_RESPONDERS:
            # Deleted under the requests, or missing when one came (a 503 from NATS 2.10
            # on; 2.9 answers nothing: see _renew_if_unheard).
            self._gone = ConsumerGone(f"JetStream consumer gone ({status} {description})")
        elif status != "408":
            log.debug("pull request ended: %s %s", status, description)
        self._wake.set()  # the reader renews the requests

    async def _renew_if_unheard(self) -> None:
        """No message, status or heartbeat for two heartbeats while requests are open:
        the server holds none of them any more. Forget them and request again, unless
        the consumer is missing (NATS 2.9 answers a request for one with silence)."""
        if self._owed and time.monotonic() - self._heard > 2 * self._heartbeat:
            log.info("pull requests on %s went unanswered; requesting again", self._next_subject)
            self._owed = 0
            try:
                await self._nc.jetstream().consumer_info(self._stream, self._consumer)
            except NotFoundError:
                self._gone = ConsumerGone(f"JetStream consumer {self._consumer} missing")
                return
            except (NatsError, TimeoutError):
                pass  # asked again below; the next silence asks again
        await self._top_up()

    async def _top_up(self) -> None:
        """Keep at least half a batch requested beyond what has arrived."""
        if self._sub is None or self._gone is not None or self._owed > self._batch // 2:
            return
        wanted = self._batch - self._owed
        request = {
            "batch": wanted,
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), self._inbox)
        self._owed += wanted
        self._heard = time.monotonic()
