"""Rebuilding a read model from position 0 without downtime.

The projection's handlers replay the whole notification log into shadow copies of its
tables in a schema `rebuild_<name>` (handlers use unqualified table names, so
`search_path` points them there), while the live tables keep serving reads and the live
runner keeps applying events. Then one short transaction swaps them: lock the tracking
row and the live tables, apply the last few events to the shadow tables, drop the live
tables, move the shadow ones into `public` and set the tracking position. Readers wait
for the lock for the length of that transaction and then see the new tables; the live
runner's next batch with something to apply locks the tracking row, reads the rebuilt
position and continues (a position it persists lazily never moves the row back).

`LIKE ... INCLUDING ALL` copies columns, defaults, constraints, indexes (renamed back to
the live names here) and comments, but not grants, triggers or foreign keys: read-model
tables should have none, or the rebuild must recreate them. Nor may they use serial
columns (the copy's default would point at the live table's sequence, which is dropped
with it); identity columns are fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from psycopg import AsyncConnection, errors, sql

from infrastructure.leadership import lock_key
from infrastructure.notification_log import max_position
from projections.positions import Progress, replay_from_store
from projections.projection import Projection, tracked_position

log = logging.getLogger(__name__)

TRACKING_TABLE = "projection_tracking"


class RebuildError(RuntimeError):
    pass


def shadow_schema(projection: Projection) -> str:
    return f"rebuild_{projection.name}"


async def rebuild(
    projection: Projection,
    database_url: str,
    progress: Progress | None = None,
    *,
    batch_size: int = 1000,
    lock_timeout: float = 2.0,
    swap_attempts: int = 10,
) -> int:
    """Rebuild `projection`'s tables from position 0 and swap them in; return the
    position the new tables include. `progress(position, max_position)` is called after
    every batch. Raises RebuildError if another rebuild of it is running or the live
    tables could not be locked within `swap_attempts` tries of `lock_timeout` seconds
    (a short timeout, retried: a long wait would queue every reader behind the lock)."""
    schema = shadow_schema(projection)
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        key = lock_key("rebuild", projection.name)
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        locked = await cur.fetchone()
        if not (locked and locked[0]):
            raise RebuildError(f"a rebuild of {projection.name} is already running")
        try:
            await _create_shadow_tables(conn, projection, schema)
            # Shadow tables (and the shadow tracking row) first; the event store and
            # anything else the handlers read still resolve in public.
            await conn.execute(
                sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema))
            )
            head = await max_position(conn)
            log.info("rebuilding %s from position 0 (store at %d)", projection.name, head)
            await replay_from_store(
                conn, projection, batch_size=batch_size, progress=progress, head=head
            )
            position = await _swap(
                conn, projection, schema, batch_size, lock_timeout, swap_attempts
            )
        except BaseException:
            # Best effort (the next rebuild drops a leftover anyway); never hide the
            # original error behind a cleanup error.
            with contextlib.suppress(Exception):
                await conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
            raise
    if progress is not None:
        progress(position, position)
    log.info("rebuilt %s up to position %d", projection.name, position)
    return position


async def _create_shadow_tables(
    conn: AsyncConnection[Any], projection: Projection, schema: str
) -> None:
    # A leftover from an interrupted rebuild is garbage: start clean.
    await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    for table in (*projection.tables, TRACKING_TABLE):
        await conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(schema, table), sql.Identifier("public", table)
            )
        )
    for table in projection.tables:
        await _copy_index_names(conn, schema, table)


async def _indexes(conn: AsyncConnection[Any], schema: str, table: str) -> list[tuple[str, Any]]:
    """(name, shape) of each index of a table; the shape is its definition without its
    name and table, so a LIKE copy's index matches the original's."""
    cur = await conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = %s AND t.relname = %s ORDER BY i.relname",
        (schema, table),
    )
    shapes: list[tuple[str, Any]] = []
    for name, definition in await cur.fetchall():
        head, _, tail = definition.partition(" USING ")
        shapes.append((name, (head.startswith("CREATE UNIQUE"), tail)))
    return shapes


async def _copy_index_names(conn: AsyncConnection[Any], schema: str, table: str) -> None:
    """LIKE ... INCLUDING ALL names copied indexes after their columns; give each the
    live index's name, so the swapped-in table is indistinguishable (migrations and
    operators refer to indexes by name)."""
    live = await _indexes(conn, "public", table)
    shadow = await _indexes(conn, schema, table)
    renames: list[tuple[str, str]] = []
    for live_name, shape in live:
        match = next((s for s in shadow if s[1] == shape), None)
        if match is None:
            raise RebuildError(f"index {live_name} of {table} has no copy in {schema}")
        shadow.remove(match)
        if match[0] != live_name:
            renames.append((match[0], live_name))
    # Through temporary names: a copy's generated name may equal another index's name.
    for step, (old, _) in enumerate(renames):
        await _rename_index(conn, schema, old, f"norn_rebuild_tmp_{step}")
    for step, (_, new) in enumerate(renames):
        await _rename_index(conn, schema, f"norn_rebuild_tmp_{step}", new)


async def _rename_index(conn: AsyncConnection[Any], schema: str, old: str, new: str) -> None:
    await conn.execute(
        sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(schema, old), sql.Identifier(new)
        )
    )


async def _swap(
    conn: AsyncConnection[Any],
    projection: Projection,
    schema: str,
    batch_size: int,
    lock_timeout: float,
    attempts: int,
) -> int:
    live_tables = sql.SQL(", ").join(sql.Identifier("public", t) for t in projection.tables)
    for attempt in range(1, attempts + 1):
        try:
            async with conn.transaction():
                await conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(f"{int(lock_timeout * 1000)}ms")
                    )
                )
                # The tracking row before the tables: the same order as a runner's batch
                # (row lock, then table writes), so a swap and a batch cannot deadlock.
                await conn.execute(
                    "INSERT INTO public.projection_tracking (name, position) VALUES (%s, 0)"
                    " ON CONFLICT (name) DO NOTHING",
                    (projection.name,),
                )
                await conn.execute(
                    "SELECT position FROM public.projection_tracking WHERE name = %s FOR UPDATE",
                    (projection.name,),
                )
                await conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(live_tables)
                )
                # Nothing can be projected into the live tables now; bring the shadow
                # ones level with the store. The replay persists the position it reached
                # in the shadow row, even past events without a handler.
                await replay_from_store(conn, projection, batch_size=batch_size)
                position = await tracked_position(conn, projection.name)  # the shadow row
                for table in projection.tables:
                    await conn.execute(
                        sql.SQL("DROP TABLE {}").format(sql.Identifier("public", table))
                    )
                    await conn.execute(
                        sql.SQL("ALTER TABLE {} SET SCHEMA public").format(
                            sql.Identifier(schema, table)
                        )
                    )
                await conn.execute(
                    "UPDATE public.projection_tracking SET position = %s, updated_at = now()"
                    " WHERE name = %s",
                    (position, projection.name),
                )
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            return position
        except errors.LockNotAvailable:
            log.warning(
                "rebuild of %s: live tables busy (attempt %d of %d); retrying",
                projection.name,
                attempt,
                attempts,
            )
            await asyncio.sleep(min(0.2 * attempt, 2.0))
    raise RebuildError(
        f"could not lock the tables of {projection.name} in {attempts} attempts; "
        "the shadow tables were discarded, try again when the database is less busy"
    )
