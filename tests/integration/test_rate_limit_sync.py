"""The API process's rate limiter against real Postgres (infrastructure/rate_limit_sync.py):
no statement on the request path, one statement per sync for every principal, two
limiters ("processes") over one shared bucket never admitting more than the burst plus
MAX_UNCONFIRMED each, the refill done by the shared bucket, a database outage ridden out
within the bound, the flush on stop, and the purge of idle rows.

Hourly rates are low next to the bursts (a token every 100 s), so no token comes back
while a test runs unless the test ages a row."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from application.errors import ServiceUnavailable
from infrastructure.postgres import create_read_pool
from infrastructure.rate_limit import MAX_UNCONFIRMED, SYNC_SOON, RateDecision, RateLimit
from infrastructure.rate_limit_sync import SyncedRateLimiter

SLOW = RateLimit(per_hour=36, burst=30)  # a token every 100 s
ROOMY = RateLimit(per_hour=36, burst=1000)


class CountingPool:
    """The real pool, counting the statements sent through it, and able to play dead."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.statements = 0
        self.down = False

    @asynccontextmanager
    async def connection(  # the pool's own signature
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[Any]:
        if self.down:
            raise psycopg.OperationalError("connection refused (the test's outage)")
        async with self.pool.connection(timeout=timeout) as conn:
            yield self._Counted(conn, self)

    class _Counted:
        def __init__(self, conn: Any, owner: CountingPool) -> None:
            self._conn, self._owner = conn, owner

        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            self._owner.statements += 1
            return await self._conn.execute(*args, **kwargs)


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[list[CountingPool]]:
    """Two pools, one per "API process"."""
    opened = [create_read_pool(database_url, max_size=2) for _ in range(2)]
    for pool in opened:
        await pool.open()
    yield [CountingPool(pool) for pool in opened]
    for pool in opened:
        await pool.close()


def limiter(pool: CountingPool, **kwargs: Any) -> SyncedRateLimiter:
    return SyncedRateLimiter(pool, {"free": SLOW}, **kwargs)  # type: ignore[arg-type]


def about(tokens: float) -> Any:
    """A level give or take what refills while a test runs (a token per 100 s)."""
    return pytest.approx(tokens, abs=0.1)


async def shared_level(pool: CountingPool, key: str) -> float | None:
    async with pool.pool.connection() as conn:
        cur = await conn.execute("SELECT tokens FROM rate_limit_buckets WHERE key = %s", (key,))
        row = await cur.fetchone()
    return None if row is None else float(row[0])


async def age_bucket(pool: CountingPool, key: str, seconds: float) -> None:
    """As if the shared bucket's last change were `seconds` further in the past."""
    async with pool.pool.connection() as conn:
        await conn.execute(
            "UPDATE rate_limit_buckets SET updated_at = updated_at - make_interval(secs => %s)"
            " WHERE key = %s",
            (seconds, key),
        )


async def test_an_admitted_request_makes_no_database_statement(
    pools: list[CountingPool],
) -> None:
    pool = pools[0]
    rate_limiter = limiter(pool)  # its syncer is not running: only the requests act
    keys = [f"user:{n}" for n in range(40)]
    for key in keys:
        for _ in range(SYNC_SOON - 1):
            assert (await rate_limiter.hit(key, SLOW)).allowed
    refused = RateLimit(per_hour=36, burst=1)
    await rate_limiter.hit("user:0", refused)  # refusals too are decided in memory
    assert pool.statements == 0

    # One statement sends what every principal took and learns the shared levels back.
    assert await rate_limiter.sync()
    assert pool.statements == 1
    assert await shared_level(pool, "user:7") == about(SLOW.burst - (SYNC_SOON - 1))
    assert await rate_limiter.sync()  # nothing new: no statement
    assert pool.statements == 1


async def test_two_processes_admit_at_most_the_burst_plus_the_bound_each(
    pools: list[CountingPool],
) -> None:
    """Both syncers run at their usual pace while waves of concurrent requests for one
    principal hit both processes; some wait at MAX_UNCONFIRMED for their sync."""
    processes = [limiter(pool) for pool in pools]
    for process in processes:
        await process.start()
    rng = random.Random(9)
    decisions = []
    try:
        for _ in range(12):
            wave = [
                process.hit("api_key:ci", SLOW)
                for process in processes
                for _ in range(rng.randint(1, 3 * MAX_UNCONFIRMED))
            ]
            decisions += await asyncio.gather(*wave)
            await asyncio.sleep(rng.uniform(0, 0.15))
    finally:
        for process in processes:
            await process.stop()

    admitted = sum(d.allowed for d in decisions)
    assert len(decisions) > SLOW.burst + 2 * MAX_UNCONFIRMED
    assert SLOW.burst <= admitted <= SLOW.burst + 2 * MAX_UNCONFIRMED
    # Every admitted request reached the shared bucket, once (stop flushed the rest).
    level = await shared_level(pools[0], "api_key:ci")
    assert level == about(SLOW.burst - admitted)
    # Both processes know it now and refuse.
    for process in processes:
        assert not (await process.hit("api_key:ci", SLOW)).allowed


async def test_a_busy_principal_needs_a_sync_per_reservation_not_per_few_requests(
    pools: list[CountingPool],
) -> None:
    """Requests as fast as the process takes them: each sync reserves twice what the
    principal took since the one before, so the syncs grow apart (10, 30, 90, ...
    requests) instead of one per MAX_UNCONFIRMED (40 for these 400)."""
    pool = pools[0]
    process = SyncedRateLimiter(pool, {"free": ROOMY})  # type: ignore[arg-type]
    await process.start()
    try:
        for _ in range(400):
            assert (await process.hit("user:busy", ROOMY)).allowed
    finally:
        await process.stop()  # gives back what it did not use
    assert pool.statements <= 8
    assert await shared_level(pool, "user:busy") == about(ROOMY.burst - 400)


async def test_the_worst_case_is_the_bound(pools: list[CountingPool]) -> None:
    """Two processes that have not heard of each other's requests each admit their view
    of a full bucket, up to MAX_UNCONFIRMED; after syncing, the debt refuses both."""
    limit = RateLimit(per_hour=36, burst=MAX_UNCONFIRMED)
    first, second = (limiter(pool) for pool in pools)
    for process in (first, second):
        decisions = [await process.hit("user:u", limit) for _ in range(MAX_UNCONFIRMED)]
        assert all(d.allowed for d in decisions)
    assert await first.sync() and await second.sync()
    assert await shared_level(pools[0], "user:u") == pytest.approx(-MAX_UNCONFIRMED, abs=0.01)

    refused = await first.hit("user:u", limit)
    assert (refused.allowed, refused.retry_after) == (False, 100)  # it saw the level at 0
    refused = await second.hit("user:u", limit)
    assert (refused.allowed, refused.retry_after) == (False, (1 + MAX_UNCONFIRMED) * 100)


async def test_a_sync_refills_the_shared_bucket_up_to_the_burst(
    pools: list[CountingPool],
) -> None:
    limit = RateLimit(per_hour=36, burst=3)
    drained = limiter(pools[0])
    for _ in range(3):
        assert (await drained.hit("k", limit)).allowed
    assert await drained.sync()

    await age_bucket(pools[0], "k", 250)  # two and a half tokens back
    other = limiter(pools[1])
    assert (await other.hit("k", limit)).allowed  # taken as full until it syncs
    assert await other.sync()
    assert await shared_level(pools[0], "k") == pytest.approx(1.5, abs=0.01)
    assert [(await other.hit("k", limit)).allowed for _ in range(2)] == [True, False]

    await age_bucket(pools[0], "k", 3600)  # an hour idle: full, not more than full
    third = limiter(pools[1])
    await third.hit("k", limit)
    assert await third.sync()
    assert await shared_level(pools[0], "k") == pytest.approx(2.0)


async def test_a_database_outage_is_ridden_out_within_the_bound(
    pools: list[CountingPool], caplog: pytest.LogCaptureFixture
) -> None:
    pool = pools[0]
    rate_limiter = limiter(pool)
    await rate_limiter.start()
    try:
        pool.down = True
        with caplog.at_level(logging.WARNING, logger="infrastructure.rate_limit_sync"):
            for _ in range(MAX_UNCONFIRMED):  # decided locally meanwhile
                assert (await rate_limiter.hit("user:u", ROOMY)).allowed
            assert (await rate_limiter.hit("user:other", ROOMY)).allowed
            # One more for user:u would pass the bound: refused, not admitted.
            with pytest.raises(ServiceUnavailable):
                await rate_limiter.hit("user:u", ROOMY)
        assert "cannot sync with the database" in caplog.text

        pool.down = False  # the syncer retries on its own (within RETRY_MAX), then admits
        assert (await asyncio.wait_for(hit_when_back(rate_limiter, "user:u"), 10)).allowed
        # The outage's hits reached the shared bucket; the hit just admitted may or may not
        # have been synced yet (the syncer runs on its own), so the level is one of two.
        level = await shared_level(pool, "user:u")
        assert level is not None
        after_outage = ROOMY.burst - MAX_UNCONFIRMED
        assert after_outage - 1.1 <= level <= after_outage + 0.1
    finally:
        await rate_limiter.stop()
    # Stopping sent what was left.
    assert await shared_level(pool, "user:u") == about(ROOMY.burst - MAX_UNCONFIRMED - 1)
    assert await shared_level(pool, "user:other") == about(ROOMY.burst - 1)


async def hit_when_back(rate_limiter: SyncedRateLimiter, key: str) -> RateDecision:
    while True:
        try:
            return await rate_limiter.hit(key, ROOMY)
        except ServiceUnavailable:
            await asyncio.sleep(0.1)


async def test_stop_flushes_and_survives_a_dead_database(
    pools: list[CountingPool], caplog: pytest.LogCaptureFixture
) -> None:
    rate_limiter = limiter(pools[0], interval=3600)  # only a stop would sync
    await rate_limiter.start()
    for _ in range(3):
        await rate_limiter.hit("user:u", SLOW)
    await rate_limiter.stop()
    assert await shared_level(pools[0], "user:u") == about(SLOW.burst - 3)

    dead = limiter(pools[1], interval=3600)
    await dead.start()
    await dead.hit("user:u", SLOW)
    pools[1].down = True
    with caplog.at_level(logging.WARNING, logger="infrastructure.rate_limit_sync"):
        await asyncio.wait_for(dead.stop(), 10)  # gives up rather than hangs
    assert "stopped with requests not sent" in caplog.text


async def test_idle_rows_are_purged_once_full_again(pools: list[CountingPool]) -> None:
    """Unused for an hour and not in debt: full (burst <= per hour), dropped. In debt:
    kept until the debt too has refilled at the slowest plan's rate (a token per 100 s)."""
    rows = {
        "recent": (0.0, "30 minutes"),
        "idle": (0.0, "61 minutes"),
        "idle in debt": (-5.0, "61 minutes"),  # needs 500 s more
        "long idle in debt": (-5.0, "70 minutes"),
    }
    async with pools[0].pool.connection() as conn:
        for key, (tokens, idle) in rows.items():
            await conn.execute(
                "INSERT INTO rate_limit_buckets (key, tokens, allowed, updated_at)"
                " VALUES (%s, %s, true, now() - %s::interval)",
                (key, tokens, idle),
            )
    await limiter(pools[0]).purge()
    async with pools[0].pool.connection() as conn:
        cur = await conn.execute("SELECT key FROM rate_limit_buckets ORDER BY key")
        assert [row[0] for row in await cur.fetchall()] == ["idle in debt", "recent"]
