"""Reading projection positions: status for operators (`norn projections status`) and the
bounded wait behind every query endpoint's `min_position` (read-your-writes).

The tracking row is what every process sees. A runner persists a position it passed
without applying anything lazily (projections/positions.py), so for such positions the
row may be about a second behind the runner; in the runner's own process, `LivePositions`
has them at once, and the wait consults it first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from infrastructure.notification_log import EVENTS_TABLE, max_position
from projections.positions import LivePositions
from projections.projection import Projection

_FIRST_SLEEP = 0.01
_MAX_SLEEP = 0.1


async def projection_status(
    database_url: str, projections: Iterable[Projection]
) -> list[dict[str, Any]]:
    """For each projection: name, position, max_position (the store's last event),
    lag (events in the store after the position) and updated_at (None if it never ran),
    all as persisted: updated_at is when the position last moved in the row (a runner
    with only events of other read models to pass moves it about once a second)."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        head = await max_position(conn)
        status: list[dict[str, Any]] = []
        for projection in projections:
            cur = await conn.execute(
                "SELECT position, updated_at FROM projection_tracking WHERE name = %s",
                (projection.name,),
            )
            row = await cur.fetchone()
            position, updated_at = (int(row[0]), row[1]) if row else (0, None)
            # Counted, not head - position: positions have gaps (rolled-back inserts).
            cur = await conn.execute(
                f"SELECT count(*) FROM {EVENTS_TABLE} WHERE notification_id > %s",
                (position,),
            )
            counted = await cur.fetchone()
            status.append(
                {
                    "name": projection.name,
                    "position": position,
                    "max_position": head,
                    "lag": int(counted[0]) if counted else 0,
                    "updated_at": updated_at,
                }
            )
    return status


async def _position(conn: AsyncConnection[Any], name: str) -> int:
    cur = await conn.execute("SELECT position FROM projection_tracking WHERE name = %s", (name,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def wait_for_position(
    pool_or_conn: AsyncConnectionPool | AsyncConnection[Any],
    name: str,
    position: int,
    timeout: float,  # noqa: ASYNC109 - the answer on timeout is False, not an exception
    live: LivePositions | None = None,
) -> bool:
    """True as soon as projection `name` has applied `position`; False after `timeout`
    seconds. Polls with short sleeps growing from 10 ms to 100 ms: a write is usually
    projected within a few milliseconds, and a long wait should not hammer the database.
    With a pool, no connection is held while sleeping; a connection must be in
    autocommit (or READ COMMITTED) mode to see the position move. `live`, the positions
    of the runners in this process, answers without a query when it can, and wakes the
    wait as soon as one of them moves."""
    deadline = time.monotonic() + timeout
    sleep = _FIRST_SLEEP
    query_at = 0.0  # the database is asked on the same schedule, however often `live` moves
    while True:
        if live is not None and live.get(name) >= position:
            return True
        now = time.monotonic()
        if now >= query_at:
            if isinstance(pool_or_conn, AsyncConnectionPool):
                async with pool_or_conn.connection() as conn:
                    current = await _position(conn, name)
            else:
                current = await _position(pool_or_conn, name)
            if current >= position:
                return True
            query_at = time.monotonic() + sleep
            sleep = min(sleep * 1.5, _MAX_SLEEP)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        wait = max(0.0, min(query_at - time.monotonic(), remaining))
        if live is None:
            await asyncio.sleep(wait)
        else:
            await live.moved(wait)
