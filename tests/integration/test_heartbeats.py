"""Heartbeats in PostgreSQL (infrastructure/heartbeats.py): the executors' leases on the
attempts they run, which are all recovery reads. A lease is stale when its attempt's
executor has not renewed it for the timeout; a lost attempt's late beat never replaces
or refreshes a later attempt's lease."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from infrastructure.heartbeats import PostgresHeartbeats

TIMEOUT = 60.0


@pytest.fixture
async def heartbeats(database_url: str) -> AsyncIterator[PostgresHeartbeats]:
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False)
    await pool.open()
    with ConnectionPool(database_url, min_size=1, max_size=1) as lease_pool:
        yield PostgresHeartbeats(pool, lease_pool)
    await pool.close()


def age(database_url: str, run_id: str, seconds: float) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE run_heartbeats SET beat_at = now() - make_interval(secs => %s)"
            " WHERE run_id = %s",
            (seconds, run_id),
        )


async def lease(heartbeats: PostgresHeartbeats, attempt: int, executor: str) -> str:
    run_id = str(uuid.uuid4())
    await asyncio.to_thread(heartbeats.lease, run_id, attempt, executor)
    return run_id


async def test_a_lease_is_stale_when_its_executor_has_not_renewed_it_lately(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    beating = await lease(heartbeats, 1, "executor-a")
    age(database_url, beating, 3600)
    await heartbeats.beat(beating, 1, "executor-a")
    silent = await lease(heartbeats, 1, "executor-a")
    age(database_url, silent, 120)
    just_leased = await lease(heartbeats, 2, "executor-b")  # claimed, never beaten yet

    assert await heartbeats.stale(TIMEOUT, 100) == [(silent, 1)]
    assert just_leased not in dict(await heartbeats.stale(TIMEOUT, 100))


async def test_stopping_one_attempt_leaves_the_next_attempts_lease(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    # Attempt 2 runs a long step; the executor of attempt 1, slow rather than dead,
    # stops now and must not erase attempt 2's lease.
    run_id = await lease(heartbeats, 1, "executor-a")
    await asyncio.to_thread(heartbeats.lease, run_id, 2, "executor-b")
    await heartbeats.stop(run_id, 1)
    age(database_url, run_id, 120)
    assert await heartbeats.stale(TIMEOUT, 100) == [(run_id, 2)]
    await heartbeats.stop(run_id, 2)
    assert await heartbeats.stale(TIMEOUT, 100) == []


async def test_a_late_beat_of_a_lost_attempt_neither_replaces_nor_renews_the_next(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    run_id = await lease(heartbeats, 2, "executor-b")
    age(database_url, run_id, 120)  # attempt 2's executor died
    await heartbeats.beat(run_id, 1, "executor-a")  # attempt 1's, slow, beats once more
    await asyncio.to_thread(heartbeats.lease, run_id, 1, "executor-a")
    assert await heartbeats.stale(TIMEOUT, 100) == [(run_id, 2)]


async def test_dropping_a_stale_lease_spares_one_renewed_meanwhile(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    # A claim of attempt 1 died before it was saved; another executor claims attempt 1
    # again just as recovery drops the dead one's lease.
    run_id = await lease(heartbeats, 1, "executor-dead")
    age(database_url, run_id, 120)
    assert await heartbeats.stale(TIMEOUT, 100) == [(run_id, 1)]
    await asyncio.to_thread(heartbeats.lease, run_id, 1, "executor-new")
    await heartbeats.drop_stale(run_id, 1, TIMEOUT)
    age(database_url, run_id, 120)
    assert await heartbeats.stale(TIMEOUT, 100) == [(run_id, 1)]  # still there
    await heartbeats.drop_stale(run_id, 1, TIMEOUT)
    assert await heartbeats.stale(TIMEOUT, 100) == []
