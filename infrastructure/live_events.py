"""One NATS subscription per API process for all its live feeds (SSE and WebSocket;
infrastructure/event_feed.py `follow_batches` with `live=`), instead of one per stream.

With a subscription per stream, NATS sends every event once per open stream and the
process parses each copy and decodes each envelope again: 100 streams of a tenant at 600
events/s were 60,000 messages a second to parse (bench/feeds.py). Here each event
arrives once, is decoded once and is handed, decoded, to the listeners of its tenant
(and to those of every tenant: platform admins). Each listener's queue is what its
stream has not taken yet; `follow_batches` ends a stream whose queue passes SLOW_AFTER,
as it did with a subscription's pending messages, and a queue of a stream that takes
nothing at all stops at LISTENER_BUFFER.

Order and no gap hold as with a subscription of its own: the one subscription receives
in stream order, and a listener is registered (synchronously, the subscription being
open) before its replay reads the store, so every event published after that reaches
it; an event that was published earlier but dispatched after is at or below what the
replay passed, and `follow_batches` skips it."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from infrastructure import envelope
from infrastructure.envelope import CloudEvent

log = logging.getLogger(__name__)

NATS_BUFFER = 100_000
"""Messages NATS may hold for the process's one subscription before it drops any: its
callback only decodes and hands out, so it lags only when the process is starved."""


LISTENER_BUFFER = 20_000
"""Events kept for one listener whose stream takes none (its client reads nothing); past
it the listener overflows: it keeps nothing more and reports itself as far behind as can
be, so `follow_batches` ends its stream with Resume at the last event it passed
(whatever was not kept is after that, and the client's resume replays it from the
store)."""


TICK_SECONDS = 1.0
"""How often a waiting listener wakes with nothing: `follow_batches` looks at its stream's
credentials and keep-alives about that often."""


class Listener:
    """One stream's view of the live events of its tenant (None: every tenant's).

    A deque and one waiter, woken by `offer` or by the listener's own tick (one timer per
    listener, re-armed once a second), instead of an asyncio.Queue and a timeout per
    wait: a stream waits once per live event it sends, and a hundred streams at 200
    events/s spent a tenth of their time arming and cancelling those timeouts."""

    def __init__(self, hub: LiveEvents, tenant: str | None) -> None:
        self._hub, self.tenant = hub, tenant
        self._events: deque[CloudEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(TICK_SECONDS, self._tick)

    @property
    def pending(self) -> int:
        """Events waiting; the most an int can say once some were not kept."""
        return sys.maxsize if self.overflowed else len(self._events)

    def offer(self, event: CloudEvent) -> None:
        if self.overflowed or len(self._events) >= LISTENER_BUFFER:
            self.overflowed = True
            return
        self._events.append(event)
        self._wake()

    async def next_event(self, seconds: float) -> CloudEvent:
        """The next live event; TimeoutError if none came by the listener's next tick
        (at most TICK_SECONDS away, whatever `seconds` asks: the tick is what keeps a
        wait from arming a timer of its own)."""
        if not self._events:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if not self._events:
                raise TimeoutError
        return self._events.popleft()

    def ready(self, limit: int) -> list[CloudEvent]:
        """The events waiting now (at most `limit`), without waiting for any."""
        events = self._events
        return [events.popleft() for _ in range(min(limit, len(events)))]

    async def close(self) -> None:
        self._timer.cancel()
        self._hub.forget(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _tick(self) -> None:
        self._timer = self._loop.call_later(TICK_SECONDS, self._tick)
        self._wake()


class LiveEvents:
    def __init__(self, subject_prefix: str) -> None:
        self._subject = f"{subject_prefix}.events.>"
        self._listeners: dict[str | None, set[Listener]] = {}
        self._subscription: Subscription | None = None
        self._nc: NatsClient | None = None
        self._opening = asyncio.Lock()
        self.on_change: Callable[[int], None] | None = None
        """Told the number of listeners whenever it changes (shared metrics)."""

    async def listen(self, nc: NatsClient, tenant: str | None) -> Listener:
        """A listener of `tenant`'s events, receiving from now on."""
        async with self._opening:
            if self._subscription is None or self._nc is not nc:
                # The first listener, or a new client (its old subscription is gone).
                self._subscription = await nc.subscribe(
                    self._subject, cb=self._deliver, pending_msgs_limit=NATS_BUFFER
                )
                self._nc = nc
        listener = Listener(self, tenant)
        self._listeners.setdefault(tenant, set()).add(listener)
        if self.on_change is not None:
            self.on_change(self.listeners)
        return listener

    def forget(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.tenant)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.tenant]
            if self.on_change is not None:
                self.on_change(self.listeners)

    @property
    def listeners(self) -> int:
        return sum(len(group) for group in self._listeners.values())

    async def _deliver(self, msg: Msg) -> None:
        if not self._listeners:
            return
        try:
            event = envelope.decode(msg.data)
        except Exception:  # not an envelope: nothing any feed could send
            log.warning("live events: undecodable message on %s", msg.subject)
            return
        for tenant in (event.tenant, None) if event.tenant is not None else (None,):
            for listener in self._listeners.get(tenant, ()):
                listener.offer(event)
