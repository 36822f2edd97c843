"""Open streams per scope on real PostgreSQL (infrastructure/stream_limits.py): admitted
up to the limit and not beyond, also when admissions race (two pools: two API
processes); a released slot frees its place; a row nobody beats (its process was
killed) stops counting; a stopping process deletes its rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from infrastructure.stream_limits import StreamSlots

Pools = tuple[AsyncConnectionPool, AsyncConnectionPool]


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[Pools]:
    first = AsyncConnectionPool(database_url, min_size=1, max_size=8, open=False)
    second = AsyncConnectionPool(database_url, min_size=1, max_size=8, open=False)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


def _rows(database_url: str, scope: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM stream_connections WHERE scope = %s", (scope,)
        ).fetchone()
    return int(row[0]) if row else 0


async def _until_rows(database_url: str, scope: str, count: int) -> None:
    for _ in range(100):
        if _rows(database_url, scope) == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{scope}: {_rows(database_url, scope)} rows, not {count}")


async def test_racing_admissions_never_pass_the_limit_and_a_release_frees_a_place(
    database_url: str, pools: Pools
) -> None:
    here, there = StreamSlots(pools[0]), StreamSlots(pools[1])
    tries = [
        slots.admit("tenant-a", "ws", f"user:{n}", 3) for n in range(8) for slots in (here, there)
    ]
    got = await asyncio.gather(*tries)
    admitted = [slot for slot in got if slot is not None]
    assert len(admitted) == 3
    assert _rows(database_url, "tenant-a") == 3
    # Another scope has its own places.
    assert await there.admit("tenant-b", "sse", "user:x", 1) is not None
    assert await there.admit("tenant-b", "sse", "user:x", 1) is None

    admitted[0].release()
    admitted[0].release()  # idempotent: a second release changes nothing
    await _until_rows(database_url, "tenant-a", 2)
    assert await here.admit("tenant-a", "sse", "user:y", 3) is not None
    assert await here.admit("tenant-a", "sse", "user:y", 3) is None


async def test_a_row_nobody_beats_stops_counting_and_stop_deletes_the_rows(
    database_url: str, pools: Pools
) -> None:
    dead, alive = StreamSlots(pools[0]), StreamSlots(pools[1], beat=0.05)
    assert await dead.admit("tenant-a", "ws", "user:1", 1) is not None
    assert await alive.admit("tenant-a", "ws", "user:2", 1) is None
    with psycopg.connect(database_url) as conn:  # the dead process's last beat, long ago
        conn.execute("UPDATE stream_connections SET beaten_at = now() - interval '31 seconds'")
    await alive.start()
    try:
        mine = await alive.admit("tenant-a", "ws", "user:2", 1)
        assert mine is not None
        await asyncio.sleep(0.2)  # beaten meanwhile: it counts
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT now() - beaten_at < interval '1 second' FROM stream_connections"
            ).fetchone()
        assert row == (True,)
        assert await dead.admit("tenant-a", "ws", "user:1", 1) is None
    finally:
        await alive.stop()
    assert _rows(database_url, "tenant-a") == 0
