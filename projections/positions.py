"""Where a projection is, kept cheaply.

Most events concern some other read model: a runner passes many batches in which its
projection has no handler for anything. Such a batch needs no transaction. The runner
keeps the position it has passed in memory (`PositionKeeper`) and persists it lazily:
`persist_interval` after it first moved ahead of the tracking row, with the next batch
that does apply something (in that batch's transaction, projection.apply_batches), once
the runner has had nothing to do for IDLE_PERSIST_SECONDS, and when the runner stops.
A crash loses only the unpersisted stretch, which holds nothing to apply: it is read
again after a restart and skipped again.

Every position a keeper holds is true: each event at or below it has been applied and
committed, or has no handler in the projection. So readers in the same process may trust
it (`LivePositions`, which wait_for_position and readiness consult), and a read waiting
for a position that a projection passed without a commit returns at once. Other
processes see the tracking row, which may be up to about `persist_interval` behind for
such positions while events keep coming, and IDLE_PERSIST_SECONDS once they stop; the
read model itself is never behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from infrastructure.envelope import CloudEvent, to_cloud_event
from infrastructure.notification_log import read_notifications
from projections.projection import (
    Projection,
    apply_batches,
    has_work,
    persist_positions,
    tracked_position,
)

Progress = Callable[[int, int], None]
"""Called as progress(position reached, position of the store's last event)."""
Connections = AsyncConnection[Any] | AsyncConnectionPool
"""A connection, or a pool to take one from for each step (and give back in between)."""

_MIN_IDLE_SECONDS = 0.05  # the shortest wait for events before a due persist

IDLE_PERSIST_SECONDS = 0.02
"""A runner that has had nothing to do for this long writes the positions it passed
without a commit. A command's last event is often one the projection does not handle
(the usage beside a create, for the pipelines read model): its row then held the
command's position only up to `persist_interval` (1 s) later, which every process that
reads the row (another API's read-your-writes wait, a client polling it) waited out,
where the read model had held the command for long. While events keep coming the next
batch with work carries the row along, so this costs a commit only when a burst ends."""


_PERSIST_WAIT_SECONDS = 0.05
"""How long a due persist waits for a pool connection before leaving it to the next
step: while the process's other projections take a burst, every connection may be busy
applying batches, and a runner blocked here would stop following NATS (and moving the
positions that reads in this process wait for) only to write a lower bound."""


@contextlib.asynccontextmanager
async def connection(
    source: Connections, *, wait: float | None = None
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection of `source`; from a pool, waiting at most `wait` seconds for one
    (PoolTimeout after; None: the pool's own timeout)."""
    if isinstance(source, AsyncConnectionPool):
        async with source.connection(timeout=wait) as conn:
            yield conn
    else:
        yield source


class LivePositions:
    """The positions the projection runners of this process have passed, by projection
    name. Each is a lower bound of the truth, like the tracking row, and often ahead of
    it; waiters take the higher of the two."""

    def __init__(self) -> None:
        self._positions: dict[str, int] = {}
        self._moved = asyncio.Event()

    def get(self, name: str) -> int:
        return self._positions.get(name, 0)

    def publish(self, name: str, position: int) -> None:
        if position <= self._positions.get(name, 0):
            return
        self._positions[name] = position
        # Wake everyone waiting now; later waiters wait on a fresh event.
        self._moved.set()
        self._moved = asyncio.Event()

    async def moved(self, timeout: float) -> None:  # noqa: ASYNC109 - a wait, not a deadline
        """Return as soon as any position moves, or after `timeout` seconds."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
        # that arrives as the event is set (docs/architecture.md §9).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._moved.wait()


class KeeperGroup:
    """Keepers persisted together (the runners of one process): when one is due, every
    one that has moved is written in the same statement, so an event that no projection
    but one handles costs one write for all the others, not one each."""

    def __init__(self) -> None:
        self._keepers: weakref.WeakSet[PositionKeeper] = weakref.WeakSet()
        # Keepers due at the same moment write one after the other, so the later ones
        # find their positions written and write nothing.
        self.writing = asyncio.Lock()

    def add(self, keeper: PositionKeeper) -> None:
        self._keepers.add(keeper)

    def moved(self) -> list[PositionKeeper]:
        return [k for k in self._keepers if k.persist_in() is not None]


class PositionKeeper:
    """One projection's position as seen by one runner: `passed` (in memory, published
    to `live`) and `persisted` (known to be in the tracking row)."""

    def __init__(
        self,
        projection: Projection,
        *,
        persist_interval: float = 1.0,
        live: LivePositions | None = None,
        group: KeeperGroup | None = None,
    ) -> None:
        self.projection = projection
        self.persist_interval = persist_interval
        self.live = live
        self.passed = 0
        self.persisted = 0
        self._due: float | None = None  # monotonic time to persist `passed` by
        self._group = group
        self._writing = asyncio.Lock() if group is None else group.writing
        if group is not None:
            group.add(self)

    def _reached(self, position: int, *, persisted: bool) -> None:
        if persisted:
            self.persisted = max(self.persisted, position)
        if position > self.passed:
            self.passed = position
            if self.live is not None:
                self.live.publish(self.projection.name, position)
        if self.passed <= self.persisted:
            self._due = None
        elif self._due is None:
            # Counted from the first unpersisted move, so a steady stream of skipped
            # events costs one write per interval, and a lone one a single write.
            self._due = time.monotonic() + self.persist_interval

    async def refresh(self, conn: AsyncConnection[Any]) -> int:
        """Take in the tracking row (another process or a rebuild's swap may have moved
        it); return the passed position."""
        self._reached(await tracked_position(conn, self.projection.name), persisted=True)
        return self.passed

    async def apply(self, source: Connections, events: Sequence[CloudEvent]) -> int:
        """Apply a batch (in position order); return the passed position. Only a batch
        with an event to apply touches the database (or takes a connection from a pool)."""
        if self.has_work(events):
            await self.apply_with((), source, events)
        elif events:
            self._reached(max(event.position for event in events), persisted=False)
        return self.passed

    async def apply_with(
        self, others: Sequence[PositionKeeper], source: Connections, events: Sequence[CloudEvent]
    ) -> None:
        """Apply a batch to this keeper's projection and the others' in one transaction
        (projection.apply_batches), each from its own passed position."""
        keepers = [self, *others]
        async with connection(source) as conn:
            positions = await apply_batches(
                conn,
                [(keeper.projection, keeper.passed) for keeper in keepers],
                events,
                # Each row exists, and a leader's positions are where it left them or
                # beyond (it persists them lazily): one round trip.
                rows_at_floors=all(keeper.persisted > 0 for keeper in keepers),
            )
        for keeper, position in zip(keepers, positions, strict=True):
            keeper._reached(position, persisted=True)

    def has_work(self, events: Sequence[CloudEvent]) -> bool:
        return has_work(self.projection, events, self.passed)

    def persist_in(self) -> float | None:
        """Seconds until the passed position is due to be persisted (None: nothing to)."""
        return None if self._due is None else max(0.0, self._due - time.monotonic())

    def idle_at_most(self, seconds: float) -> float:
        """How long a runner may wait for events: `seconds`, or less if the position
        is due to be persisted sooner."""
        due = self.persist_in()
        return seconds if due is None else max(_MIN_IDLE_SECONDS, min(seconds, due))

    async def persist(self, source: Connections, *, now: bool = False) -> None:
        """Persist the passed position if it is due (at once with `now`), with those of
        the group's other keepers that have moved; without anything to persist, no
        connection is taken from a pool, and when none is free soon (not `now`) it is
        left due for the next call."""
        if not self._due_now(now):
            return
        async with self._writing:
            if not self._due_now(now):
                return  # written with another keeper's position meanwhile
            keepers = {self, *(self._group.moved() if self._group is not None else ())}
            reached = [(keeper, keeper.passed) for keeper in keepers]
            positions: dict[str, int] = {}
            for keeper, position in reached:
                name = keeper.projection.name
                positions[name] = max(position, positions.get(name, 0))
            try:
                async with connection(source, wait=None if now else _PERSIST_WAIT_SECONDS) as conn:
                    await persist_positions(conn, positions)
            except PoolTimeout:
                return  # still due: the next step tries again
            for keeper, position in reached:
                keeper._reached(position, persisted=True)

    def _due_now(self, now: bool) -> bool:
        due = self.persist_in()
        return due is not None and (now or due == 0)


async def replay_from_store(
    source: Connections,
    projection: Projection,
    *,
    batch_size: int,
    progress: Progress | None = None,
    head: int | None = None,
    keeper: PositionKeeper | None = None,
) -> int:
    """Apply every notification after the passed position, reading the event store
    directly, in batches of `batch_size`; return how many notifications were read. With
    a pool, each batch takes a connection of its own, so a long replay does not keep one
    from other users of the pool. Without a `keeper`, the replay uses its own and
    persists the position it reached at the end (a rebuild's swap reads it from the row).
    `head` is only reported to `progress`."""
    own = keeper is None
    keeper = keeper or PositionKeeper(projection)
    async with connection(source) as conn:
        # If another process got further meanwhile, there is no point in reading what it
        # already applied.
        position = await keeper.refresh(conn)
    read = 0
    while True:
        async with connection(source) as conn:
            # Precise: a catch-up often follows a lost NATS message, and must read at
            # least as far as the relay did, also while a long transaction that is not
            # an append holds the plain horizon back (docs/architecture.md §4).
            notifications = await read_notifications(conn, position, batch_size, precise=True)
            if not notifications:
                break
            position = await keeper.apply(conn, [to_cloud_event(n) for n in notifications])
        read += len(notifications)
        if progress is not None:
            progress(position, max(head or 0, position))
        if len(notifications) < batch_size:
            break
    if own:
        async with connection(source) as conn:
            await keeper.persist(conn, now=True)
    return read
