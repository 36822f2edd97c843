"""Async reads of the event store's notification log (the outbox): used by the relay and
by projections catching up without NATS."""

from __future__ import annotations

from eventsourcing.persistence import Notification
from psycopg import AsyncConnection

EVENTS_TABLE = "norn_events"
NOTIFY_CHANNEL = "norn_events"  # the eventsourcing recorder NOTIFYs this on every append


async def read_notifications(conn: AsyncConnection, after: int, limit: int) -> list[Notification]:
    """Notifications with position > after, in order. Safe to follow: the recorder's
    table lock makes insert order equal commit order, so no lower position can still
    appear once a higher one is visible (DESIGN.md §8)."""
    cur = await conn.execute(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
        (after, limit),
        prepare=True,
    )
    return [
        Notification(
            id=row[0],
            originator_id=row[1],
            originator_version=row[2],
            topic=row[3],
            state=bytes(row[4]),
        )
        for row in await cur.fetchall()
    ]


async def max_position(conn: AsyncConnection) -> int:
    cur = await conn.execute(f"SELECT COALESCE(MAX(notification_id), 0) FROM {EVENTS_TABLE}")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
