"""What a projection is, and how one batch of events is applied to its read model.

A projection owns some tables and one row in `projection_tracking`. A batch is applied in
ONE transaction that locks the tracking row, skips every event at or below the tracked
position, runs the handlers and moves the tracking row to the batch's highest position.
Read-model change and position commit together, so a crash or a redelivery can neither
double-apply nor skip an event (DESIGN.md §4), and two processes applying the same
projection at once are serialised by the row lock instead of corrupting each other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from psycopg import AsyncConnection, AsyncCursor

from infrastructure.envelope import CloudEvent, to_cloud_event
from infrastructure.notification_log import read_notifications

Handler = Callable[[AsyncCursor[Any], CloudEvent], Awaitable[None]]
Progress = Callable[[int, int], None]
"""Called as progress(position reached, position of the store's last event)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_HANDLES_ATTR = "_projection_handles"


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    """Mark a projection method as the handler of CloudEvents types, e.g.
    `@handles("norn.pipeline.created.v1")`."""

    def mark(method: Handler) -> Handler:
        setattr(method, _HANDLES_ATTR, (*getattr(method, _HANDLES_ATTR, ()), *event_types))
        return method

    return mark


class Projection:
    """Base of every read model. Subclasses set `name` and `tables` and mark handlers
    with `@handles(...)`. Handlers get a cursor inside the batch transaction and must
    write only the projection's own tables, by unqualified name: a rebuild runs the same
    handlers with `search_path` pointing at shadow copies of those tables."""

    name: ClassVar[str]
    """Tracking key, also used in consumer, lock and rebuild-schema names."""
    tables: ClassVar[tuple[str, ...]]
    """Tables the projection owns (and a rebuild replaces)."""
    _handler_names: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        # Walk the MRO base-first so a subclass can override a handler by redefining
        # the method (looked up by name on the instance, see handler()).
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for event_type in getattr(value, _HANDLES_ATTR, ()):
                    found[event_type] = attr
        cls._handler_names = found
        name = getattr(cls, "name", None)
        if name is not None and not _NAME.match(name):
            # The name ends up in SQL identifiers (schema rebuild_<name>) and NATS
            # durable names, so keep it to a safe alphabet.
            raise ValueError(f"projection name {name!r} must match {_NAME.pattern}")

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._handler_names)

    def handler(self, event_type: str) -> Handler | None:
        attr = self._handler_names.get(event_type)
        return getattr(self, attr) if attr else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def advisory_lock_key(purpose: str, name: str) -> int:
    """A stable signed 64-bit Postgres advisory-lock key for (purpose, projection name);
    Python's hash() differs per process, so it cannot be used across processes."""
    digest = hashlib.blake2b(f"norn:{purpose}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def tracked_position(conn: AsyncConnection[Any], name: str) -> int:
    """The projection's position without locking (0 when it never ran)."""
    cur = await conn.execute("SELECT position FROM projection_tracking WHERE name = %s", (name,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _lock_tracking_row(cur: AsyncCursor[Any], name: str) -> int:
    """Lock the projection's tracking row for this transaction and return its position.
    The lock is what serialises batches from any process and makes a rebuild's swap
    wait for (and be seen by) the live runner."""
    select = "SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE"
    await cur.execute(select, (name,))
    row = await cur.fetchone()
    if row is None:
        # First batch ever: create the row (racing creators are fine), then lock it.
        await cur.execute(
            "INSERT INTO projection_tracking (name, position) VALUES (%s, 0) "
            "ON CONFLICT (name) DO NOTHING",
            (name,),
        )
        await cur.execute(select, (name,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def apply_batch(
    conn: AsyncConnection[Any], projection: Projection, events: Sequence[CloudEvent]
) -> int:
    """Apply `events` (in position order) in one transaction; return the tracked position
    after commit. Safe to call with events already applied: they are skipped."""
    async with conn.transaction(), conn.cursor() as cur:
        tracked = await _lock_tracking_row(cur, projection.name)
        position = tracked
        for event in events:
            # <= rather than a set of seen ids: positions only grow, and a redelivered or
            # re-published event (or a duplicate within the batch) is at or below it.
            if event.position <= position:
                continue
            handler = projection.handler(event.type)
            if handler is not None:
                await handler(cur, event)
            # Ignored types advance the position too, or min_position waits on a
            # filtered projection would time out (DESIGN.md §8).
            position = event.position
        if position > tracked:
            await cur.execute(
                "UPDATE projection_tracking SET position = %s, updated_at = now() WHERE name = %s",
                (position, projection.name),
            )
    return position


async def replay_from_store(
    conn: AsyncConnection[Any],
    projection: Projection,
    *,
    batch_size: int,
    progress: Progress | None = None,
    head: int | None = None,
) -> int:
    """Apply every notification after the tracked position, reading the event store
    directly, in batches of `batch_size`; return how many notifications were read.
    `head` is only reported to `progress`."""
    read = 0
    position = await tracked_position(conn, projection.name)
    while True:
        notifications = await read_notifications(conn, position, batch_size)
        if not notifications:
            return read
        events = [to_cloud_event(n) for n in notifications]
        # Continue from the tracked position apply_batch returns: if another process got
        # further meanwhile, there is no point in reading what it already applied.
        position = await apply_batch(conn, projection, events)
        read += len(events)
        if progress is not None:
            progress(position, max(head or 0, position))
        if len(notifications) < batch_size:
            return read
