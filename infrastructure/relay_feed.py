"""The relay's reads, handed in memory to the projector of the same process
(docs/architecture.md §6, "Fed by the relay beside it").

With the relay and the projector in one process (`norn serve`), every event used to go
from the relay to JetStream and back to the same process before a read model had it:
a publish, a store, a push to the projector's consumer, a parse of each message and an
ack. The relay reads the store in position order below the horizon (§4), so what it
reads after a position is everything committed after it up to its last event — exactly
what the projector's catch-up from the store reads. So while it leads, the relay offers
each window it has read (before publishing it) to this feed, and the projector beside it
applies the windows from here instead of from its JetStream consumer.

A window says after which position it starts. The projector applies one only when that
is not past what it has applied (else it has missed some, and it catches up from the
store first, as it does for a jump in the stream sequence); windows read again (a relay
resuming from the stream after a NATS error) are skipped by position, as redeliveries
are. Nothing is kept for a projector that is not attached, and a projector that falls
`limit` events behind is left to catch up from the store: the feed drops what it holds
and the next window shows the gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from infrastructure.envelope import CloudEvent
from infrastructure.supervision import pause

LIMIT = 4096
"""Events held for the projector at most; past that it reads the store instead."""


class RelayFeed:
    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._windows: deque[tuple[int, list[CloudEvent]]] = deque()
        self._held = 0
        self._arrived = asyncio.Event()
        self._attached = False
        self._leading: Callable[[], bool] = lambda: False
        self.dropped = 0
        """Events dropped for a projector too far behind (it read them from the store)."""

    def source(self, leading: Callable[[], bool]) -> None:
        """The relay of this process registers: the feed is live while it leads."""
        self._leading = leading

    @property
    def live(self) -> bool:
        """Whether the relay beside the projector leads, i.e. reads what there is."""
        return self._leading()

    def attach(self) -> None:
        """The projector follows the feed from now on (it then catches up from the store:
        what was read before it attached is there)."""
        self._attached = True
        self._clear()

    def detach(self) -> None:
        self._attached = False
        self._clear()

    def offer(self, after: int, events: list[CloudEvent]) -> None:
        """A window the relay read: every event committed after position `after`, up to
        the last of `events`, in position order."""
        if not self._attached or not events:
            return
        if self._held + len(events) > self._limit:
            self.dropped += self._held
            self._clear()  # the next window starts past the projector: it reads the store
        self._windows.append((after, events))
        self._held += len(events)
        self._arrived.set()

    async def take(
        self,
        limit: int,
        timeout: float,  # noqa: ASYNC109 - a wait for windows, not a deadline on a call
        stop: asyncio.Event,
    ) -> tuple[int, list[CloudEvent]] | None:
        """The windows held (at least one, up to about `limit` events) as one: after which
        position they start and their events; else the first to come within `timeout`.
        None after `timeout` or as soon as `stop` is set. Windows are joined only while
        each starts at or before the end of the one before it."""
        if not self._windows:
            self._arrived.clear()
            arrived = asyncio.ensure_future(self._arrived.wait())
            try:
                await pause(stop, timeout, arrived)
            finally:
                arrived.cancel()
            if stop.is_set() or not self._windows:
                return None
        after, events = self._windows.popleft()
        events = list(events)
        while self._windows and len(events) < limit:
            start, more = self._windows[0]
            if start > events[-1].position:
                break  # a gap between them: the caller sees it against its position
            self._windows.popleft()
            events.extend(more)
        self._held -= len(events)
        return after, events

    def _clear(self) -> None:
        self._windows.clear()
        self._held = 0
        self._arrived.clear()
