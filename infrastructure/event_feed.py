"""A resumable feed of a tenant's events (GET /api/v1/events/stream, docs/architecture.md
"Live feeds"): what a client missed, replayed from the event store, then the live events
from NATS, with no gap and no duplicate across the switch.

Why no gap: the live subscription is opened before the replay reads the store. An event
the relay published before the subscription was open was below the store's horizon when
the relay read it (the relay reads nothing above it), so the replay, which reads later
below the precise horizon (the relay's most permissive one; it only moves forward), finds
it; an event published after is in the subscription's buffer. (The plain horizon would
not do: any long transaction in the cluster holds it back, while the relay may have
passed it by the precise one.) Why no duplicate: positions are global and the relay
publishes in their order, so a live event at or below the last position the replay
passed is skipped.

Across a NATS outage: the connection's subscriptions are sent again when it
reconnects, but the relay may publish before the server has them, and what is published
meanwhile never reaches this subscription. So after a reconnect the feed waits for the
server to have its subscription (a flush), then replays from the store what follows the
last position it passed, exactly as at the start.

A client too slow to keep up (its live buffer past `SLOW_AFTER` events) is told where to
resume (`Resume`) and the feed ends, instead of holding an unbounded buffer: it reconnects
with that position and is replayed from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from psycopg_pool import AsyncConnectionPool

from infrastructure import envelope
from infrastructure.envelope import CloudEvent
from infrastructure.live_events import Listener, LiveEvents
from infrastructure.notification_log import read_notifications, settled_position

KEEPALIVE_SECONDS = 15.0
SLOW_AFTER = 5_000
"""Live events waiting for a client before it is told to resume instead."""
NATS_BUFFER = 100_000
"""Far above SLOW_AFTER, so the feed ends before NATS would drop anything."""
REPLAY_BATCH = 500
LIVE_BATCH = 1_000
"""Live events taken at once from what waits for a stream (one write to its client)."""
RESOURCE_KINDS = ("pipeline", "run", "deployment", "job", "tenant")


@dataclass(frozen=True)
class Resume:
    """The client fell behind: resume after `after`."""

    after: int


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class Revoked:
    """The credentials the feed was opened with no longer hold: the feed ends."""

    reason: str


FeedItem = CloudEvent | Resume | KeepAlive | Revoked
Recheck = Callable[[], Awaitable[str | None]]
"""Asked every RECHECK_SECONDS: why the subscriber may no longer read (None: it may)."""
RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class FeedFilter:
    """Which events a subscription wants: the tenant's (None: a platform admin's, every
    tenant's), of types matching one of `types` (globs; none: all), of one of `resources`
    ((kind, id) pairs; none: all), by `actor` (none: anyone), of the aggregate kinds the
    subscriber may read (application/authorization.py `readable_event_kinds`; "*": all)."""

    tenant: str | None
    types: tuple[str, ...] = ()
    resources: Collection[tuple[str, str]] = ()
    """Looked up per event, so a subscriber may add to a set it passed here (the run
    page follows a retry made after it connected: api/ui/run_pages.py)."""
    actor: str | None = None
    kinds: frozenset[str] = frozenset({"*"})

    def matches(self, event: CloudEvent) -> bool:
        if self.tenant is not None and event.tenant != self.tenant:
            return False
        if not _type_wanted(self.types, self.kinds, event.type):
            return False
        if self.resources:
            kind = event.type.split(".")[1]
            if (kind, event.subject) not in self.resources:
                return False
        return self.actor is None or event.actor == self.actor


@lru_cache(maxsize=4096)
def _type_wanted(types: tuple[str, ...], kinds: frozenset[str], event_type: str) -> bool:
    """Whether a filter's types and kinds let an event type through: decided once per
    filter and type (there are a few dozen types), not per event and stream with a glob
    match per pattern."""
    if "*" not in kinds and event_type.split(".")[1] not in kinds:
        return False
    return not types or any(fnmatch.fnmatchcase(event_type, p) for p in types)


def feed_subject(prefix: str, tenant: str | None) -> str:
    """The NATS subject of a tenant's events (None: every tenant's)."""
    return f"{prefix}.events.{tenant}.>" if tenant else f"{prefix}.events.>"


def parse_types(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def parse_resources(text: str | None) -> tuple[tuple[str, str], ...]:
    """`pipeline:<id>,run:<id>,...`; ValueError naming what is wrong."""
    found = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        kind, _, ident = item.partition(":")
        if kind not in RESOURCE_KINDS:
            raise ValueError(f"{item!r}: a resource is one of {', '.join(RESOURCE_KINDS)}:<id>")
        try:
            found.append((kind, str(UUID(ident))))
        except ValueError:
            raise ValueError(f"{item!r}: the id is not a UUID") from None
    return tuple(found)


class _Subscribed:
    """A NATS subscription of the feed's own, read like a live_events.Listener."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    @property
    def pending(self) -> int:
        return self._subscription.pending_msgs

    async def next_event(self, seconds: float) -> CloudEvent:
        return envelope.decode((await self._subscription.next_msg(timeout=seconds)).data)

    def ready(self, limit: int) -> list[CloudEvent]:
        return []  # one by one: nats-py offers no way to take what waits without a wait

    async def close(self) -> None:
        await self._subscription.unsubscribe()


async def one_by_one(batches: AsyncGenerator[list[FeedItem], None]) -> AsyncIterator[FeedItem]:
    """A feed of `follow_batches`, item by item (closing it when closed)."""
    try:
        async for batch in batches:
            for item in batch:
                yield item
    finally:
        await batches.aclose()


async def follow_batches(
    nc: NatsClient,
    pool: AsyncConnectionPool,
    subject: str,
    feed_filter: FeedFilter,
    after: int | None,
    recheck: Recheck | None = None,
    live: LiveEvents | None = None,
) -> AsyncGenerator[list[FeedItem], None]:
    """The events of `feed_filter` after position `after` (None: from now on), then live,
    with KeepAlive when nothing happened for a while, ending with Resume if the client
    falls behind, or with Revoked when `recheck` says its credentials no longer hold
    (asked every second, so a logout or a revoked key ends the feed within about that).
    The subscription is open before the first batch ([KeepAlive]) is yielded. `live`: the
    process's one subscription shared by its feeds (infrastructure/live_events.py),
    listened to for `feed_filter.tenant`; without it, a subscription of `subject` of the
    feed's own.

    In batches: each holds what was ready at once (up to a store page replayed, or every
    live event waiting), so that a stream sends them in one write. Per event, each of a
    tenant's 100 streams paid the whole way through the ASGI stack to its socket: under
    load that, not NATS or the store, was what a feed cost (bench/feeds.py)."""
    subscription: _Subscribed | Listener
    if live is not None:
        subscription = await live.listen(nc, feed_filter.tenant)
    else:
        subscription = _Subscribed(await nc.subscribe(subject, pending_msgs_limit=NATS_BUFFER))
    seen = after
    clock = asyncio.get_running_loop().time
    checked = quiet_since = clock()

    async def revoked() -> Revoked | None:
        nonlocal checked
        if recheck is None or clock() - checked < RECHECK_SECONDS:
            return None
        checked = clock()
        reason = await recheck()
        return Revoked(reason) if reason is not None else None

    reconnects = nc.stats["reconnects"]

    async def replay() -> AsyncIterator[list[FeedItem]]:
        """What the store has after `seen`; ends with Revoked or Resume if it must."""
        nonlocal seen
        while True:
            async with pool.connection() as conn:
                batch = await read_notifications(conn, seen or 0, REPLAY_BATCH, precise=True)
            if not batch:
                return
            seen = batch[-1].id
            found: list[FeedItem] = [
                event for event in map(envelope.to_cloud_event, batch) if feed_filter.matches(event)
            ]
            if ended := await revoked():
                yield [*found, ended]
                return
            if subscription.pending > SLOW_AFTER:
                yield [*found, Resume(seen)]
                return
            if found:
                yield found

    try:
        yield [KeepAlive()]  # subscribed: what follows misses nothing
        if after is None:
            async with pool.connection() as conn:  # "from now on"; a reconnect replays from here
                seen = await settled_position(conn)
        else:
            async for items in replay():
                yield items
                if isinstance(items[-1], Resume | Revoked):
                    return
        while True:
            if ended := await revoked():
                yield [ended]
                return
            if subscription.pending > SLOW_AFTER:
                yield [Resume(seen or 0)]
                return
            if nc.stats["reconnects"] != reconnects and nc.is_connected:
                reconnects = nc.stats["reconnects"]
                async for items in _after_reconnect(nc, replay):
                    yield items
                    if isinstance(items[-1], Resume | Revoked):
                        return
            if clock() - quiet_since >= KEEPALIVE_SECONDS:
                quiet_since = clock()
                yield [KeepAlive()]
            wait = RECHECK_SECONDS if recheck is not None else KEEPALIVE_SECONDS
            try:
                first = await subscription.next_event(wait)
            except TimeoutError:
                continue
            quiet_since = clock()
            if nc.stats["reconnects"] != reconnects:
                # A reconnect while waiting: what was published before the subscription
                # was back precedes this event, so the replay comes first.
                reconnects = nc.stats["reconnects"]
                async for items in _after_reconnect(nc, replay):
                    yield items
                    if isinstance(items[-1], Resume | Revoked):
                        return
            found: list[FeedItem] = []
            # What else waits, taken now: no await between here and the yield, so no
            # reconnect can come between these events and the check above.
            for event in [first, *subscription.ready(LIVE_BATCH - 1)]:
                if seen is not None and event.position <= seen:
                    continue  # replayed already
                seen = event.position
                if feed_filter.matches(event):
                    found.append(event)
            if found:
                yield found
    finally:
        await subscription.close()


async def _after_reconnect(
    nc: NatsClient, replay: Callable[[], AsyncIterator[list[FeedItem]]]
) -> AsyncIterator[list[FeedItem]]:
    """The store's events the live subscription may have missed while NATS was away,
    once the server has the subscription again (a flush: every later publish reaches
    it). If NATS went away again meanwhile, the next reconnect replays again."""
    with contextlib.suppress(NatsError):
        await nc.flush(timeout=5)
    async for item in replay():
        yield item
