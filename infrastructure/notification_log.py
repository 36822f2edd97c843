"""Async reads of the event store's notification log (the outbox): used by the relay and
by projections catching up without NATS."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Notification
from psycopg import AsyncConnection

from infrastructure.recorder import HORIZON, horizon_function_name

EVENTS_TABLE = "norn_events"
PRECISE_HORIZON = f"(SELECT {horizon_function_name(EVENTS_TABLE)}())"
"""migrations/0010_lock_free_appends.sql: the horizon of running appends only."""
_COLUMNS = "notification_id, originator_id, originator_version, topic, state"


def _notification(row: tuple[Any, ...]) -> Notification:
    return Notification(
        id=row[0],
        originator_id=row[1],
        originator_version=row[2],
        topic=row[3],
        state=bytes(row[4]),
    )


async def read_notifications(
    conn: AsyncConnection, after: int, limit: int, *, precise: bool = False
) -> list[Notification]:
    """Notifications with position > after, in order, that are safe to pass: no lower
    position can appear once these are read (infrastructure/recorder.py). A notification
    committed a moment ago can wait here until an older transaction still running ends;
    `precise` looks past running transactions that are not appends (it costs a look at
    pg_locks: for a reader that has been held up a while, not for every read)."""
    rows = await _read_after(conn, _COLUMNS, after, limit, precise)
    return [_notification(row) for row in rows]


async def read_topics(
    conn: AsyncConnection, after: int, limit: int, *, precise: bool = False
) -> list[tuple[int, str]]:
    """As `read_notifications`, only each one's position and topic: for a reader that
    decides from the topic alone to pass most events (their states are most of a row)."""
    rows = await _read_after(conn, "notification_id, topic", after, limit, precise)
    return [(int(row[0]), row[1]) for row in rows]


async def _read_after(
    conn: AsyncConnection, columns: str, after: int, limit: int, precise: bool
) -> list[tuple[Any, ...]]:
    horizon = PRECISE_HORIZON if precise else HORIZON
    cur = await conn.execute(
        f"SELECT {columns} FROM {EVENTS_TABLE} WHERE notification_id > %s"
        f" AND tx_id < {horizon} ORDER BY notification_id LIMIT %s",
        (after, limit),
        prepare=True,
    )
    return await cur.fetchall()


async def read_with_head(
    conn: AsyncConnection, after: int, limit: int, *, precise: bool = False
) -> tuple[list[Notification], int]:
    """As `read_notifications`, and in the same statement the highest position committed
    (visible or not yet safe to pass): a reader that got nothing can tell "nothing new"
    from "held up by a running transaction" without a second round trip."""
    horizon = PRECISE_HORIZON if precise else HORIZON
    cur = await conn.execute(
        "SELECT h.head, e.* FROM (SELECT COALESCE(MAX(notification_id), 0) AS head"
        f" FROM {EVENTS_TABLE}) AS h LEFT JOIN LATERAL (SELECT {_COLUMNS} FROM {EVENTS_TABLE}"
        f" WHERE notification_id > %s AND tx_id < {horizon}"
        " ORDER BY notification_id LIMIT %s) AS e ON true",
        (after, limit),
        prepare=True,
    )
    rows = await cur.fetchall()
    head = int(rows[0][0]) if rows else 0
    return [_notification(row[1:]) for row in rows if row[1] is not None], head


async def max_position(conn: AsyncConnection) -> int:
    cur = await conn.execute(f"SELECT COALESCE(MAX(notification_id), 0) FROM {EVENTS_TABLE}")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def settled_position(conn: AsyncConnection) -> int:
    """The highest position a reader may pass now (below the precise horizon): every
    event at or below it is committed and none can still appear there, so "after this
    position" is exactly what happens from now on. (Positions and transaction ids are
    taken together under the append lock, so they are in the same order.)"""
    cur = await conn.execute(
        f"SELECT COALESCE((SELECT notification_id FROM {EVENTS_TABLE}"
        f" WHERE tx_id < {PRECISE_HORIZON} ORDER BY notification_id DESC LIMIT 1), 0)"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
