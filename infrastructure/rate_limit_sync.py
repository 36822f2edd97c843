"""The API process's rate limiter: decisions in memory (infrastructure/rate_limit.py),
shared with the other API processes through the `rate_limit_buckets` table by a
background task of the API's lifespan.

A request costs no database round trip and waits on no row lock: it is decided from
this process's view of its principal's bucket. Every SYNC_INTERVAL (sooner when a
principal has several unsynced requests) one statement adds up, for every principal
with requests since the last sync, the tokens this process took, and returns the shared
levels, which become this process's view. A request that would be the principal's
MAX_UNCONFIRMED+1st unconfirmed one waits for that sync instead (rare); if the database
cannot be reached it is refused with 503 rather than admitted past the bound.

The syncer outlives short database outages: it keeps what it could not send, logs a
warning, and retries with a growing pause; on shutdown it sends what is left. Anything
else that goes wrong in it (a bug) is logged and the loop goes on, supervised
(infrastructure/supervision.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from psycopg_pool import AsyncConnectionPool

from application.errors import ServiceUnavailable
from infrastructure.rate_limit import (
    SYNC_INTERVAL,
    Change,
    LocalBuckets,
    RateDecision,
    RateLimit,
)
from infrastructure.supervision import Backoff, supervise

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 5.0
"""Longest a sync may take (connection included) before it counts as failed."""
CONFIRM_TIMEOUT = 3.0
"""Longest a request waits for a sync to confirm its principal's earlier requests."""
RETRY_MAX = 2.0
"""Longest pause between attempts while the database is unreachable (a principal at
MAX_UNCONFIRMED is refused until one succeeds)."""
BUG_BACKOFF = Backoff(first=0.5, cap=RETRY_MAX)
"""Pauses after the loop itself failed: a bug must not end rate limiting, nor spin."""
PURGE_EVERY = 600.0
FORGET_EVERY = 60.0
WARN_EVERY = 60.0

# Rows are locked in key order, the same in every process, so two syncs over the same
# principals queue rather than deadlock. The refill is for the time since the row's last
# change (never negative: a sync that started earlier may commit after a later one), and
# the level may go below zero: that debt is what other processes over-admitted, paid
# back by the refill. Tokens given back return to the level (up to the burst); a
# reservation is granted out of what is left, at most half of it, so that the other
# processes still find tokens, and taken off at once. `allowed` is unused since
# decisions left the database (0008 made it NOT NULL).
_SYNC = """
WITH hits (key, taken, back, want, burst, rate) AS (
    SELECT * FROM unnest(%(keys)s::text[], %(taken)s::float8[], %(back)s::float8[],
                         %(want)s::float8[], %(burst)s::float8[], %(rate)s::float8[])
)
INSERT INTO rate_limit_buckets AS b (key, tokens, granted, allowed, updated_at)
SELECT key, level - granted, granted, true, now()
  FROM hits,
       LATERAL (SELECT burst - taken AS level) l,
       LATERAL (SELECT LEAST(want, GREATEST(0, floor(level / 2))) AS granted) g
 ORDER BY key
ON CONFLICT (key) DO UPDATE SET
    (tokens, granted) = (
        SELECT l.level - g.granted, g.granted
          FROM hits h,
               LATERAL (SELECT LEAST(h.burst, b.tokens + h.back + h.rate
                        * GREATEST(0, EXTRACT(EPOCH FROM now() - b.updated_at)::float8))
                        - h.taken AS level) l,
               LATERAL (SELECT LEAST(h.want, GREATEST(0, floor(l.level / 2))) AS granted) g
         WHERE h.key = b.key),
    updated_at = GREATEST(b.updated_at, now())
RETURNING key, tokens, granted
"""

# A row unused for an hour with no debt is full again (burst <= per hour), the same as no
# row: drop such rows so the table stays as small as the active clients. A row in debt
# waits the longer time its debt takes to refill at the slowest plan's rate.
_PURGE = """
DELETE FROM rate_limit_buckets
 WHERE updated_at < now() - interval '1 hour'
   AND updated_at < now() - interval '1 hour'
                    - make_interval(secs => GREATEST(0, -tokens) / %(slowest)s)
"""


class SyncedRateLimiter:
    """`hit` decides; `start`/`stop` run the syncer (the API's lifespan does)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        limits: dict[str, RateLimit],
        *,
        buckets: LocalBuckets | None = None,
        interval: float = SYNC_INTERVAL,
    ) -> None:
        self._pool = pool
        self._buckets = buckets or LocalBuckets(interval=interval)
        self._interval = interval
        self._slowest = min(limit.per_second for limit in limits.values())
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._round = asyncio.Event()  # set, then replaced, after every sync attempt
        self._sending = asyncio.Lock()  # one sync at a time: a flush may meet the loop's
        self._failing_since: float | None = None
        self._warned_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._pause = interval  # before the next sync: longer while the database is down
        self._last_purge = self._last_forget = 0.0

    async def hit(self, key: str, limit: RateLimit) -> RateDecision:
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while True:
            decision = self._buckets.decide(key, limit)
            if decision is not None:
                if self._buckets.urgent:
                    self._wake.set()
                return decision
            # MAX_UNCONFIRMED of this principal's requests await the shared bucket:
            # admitting another could pass the bound, so wait for the sync instead.
            if self._failing_since is not None:
                raise ServiceUnavailable("rate limits cannot be checked: database unreachable")
            round_done = self._round
            self._wake.set()
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await round_done.wait()
            except TimeoutError:
                raise ServiceUnavailable("rate limits cannot be checked in time") from None

    # --- the syncer ----------------------------------------------------------------------

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="rate-limit-sync")

    async def stop(self) -> None:
        """Stop syncing, after sending what is left (or failing to, within SYNC_TIMEOUT)."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        self._last_purge = self._last_forget = time.monotonic()
        self._pause = self._interval
        await supervise(
            "rate limits: sync loop",
            self._sync_round,
            stop=self._stop,
            backoff=BUG_BACKOFF,
            logger=log,
        )
        if not await self.sync(give_back=True):
            log.warning("rate limits: stopped with requests not sent to the shared buckets")

    async def _sync_round(self) -> None:
        await self._wait(self._pause)
        ok = await self.sync()  # a database outage is not an exception: see sync()
        self._pause = self._interval if ok else min(RETRY_MAX, max(self._interval, self._pause * 2))
        now = time.monotonic()
        if ok and now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            await self.purge()
        if now - self._last_forget >= FORGET_EVERY:
            self._last_forget = now
            self._buckets.forget_full()

    async def _wait(self, pause: float) -> None:
        """Sleep `pause` seconds, or less when a principal has several unsynced requests;
        but while the database is unreachable, the full pause (only a stop cuts it short),
        so that busy principals do not turn the retries into a storm."""
        until = time.monotonic() + pause
        while not self._stop.is_set() and (left := until - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):  # not wait_for: it may swallow a cancel
                    await self._wake.wait()
            self._wake.clear()
            if self._failing_since is None:
                return

    async def sync(self, *, give_back: bool = False) -> bool:
        """Send everything unsynced in one statement and learn the shared levels back;
        False if that failed (what was unsynced stays so). Nothing to send: True.
        `give_back`: every reservation, reserving none (on stopping)."""
        async with self._sending:
            if not self._buckets.has_unsynced():
                return True
            changes = self._buckets.take_changes(give_back=give_back)
            try:
                levels, granted = await asyncio.wait_for(self._send(changes), SYNC_TIMEOUT)
            except Exception as error:
                self._buckets.abandon()
                self._failed(error)
                return False
            else:
                self._buckets.confirm(levels, granted)
                self._recovered()
                return True
            finally:
                round_done, self._round = self._round, asyncio.Event()
                round_done.set()

    async def _send(self, changes: list[Change]) -> tuple[dict[str, float], dict[str, int]]:
        """The shared levels after the changes, and the tokens reserved for this process."""
        params = {
            "keys": [c.key for c in changes],
            "taken": [float(c.taken) for c in changes],
            "back": [float(c.back) for c in changes],
            "want": [float(c.want) for c in changes],
            "burst": [float(c.limit.burst) for c in changes],
            "rate": [c.limit.per_second for c in changes],
        }
        async with self._pool.connection(timeout=SYNC_TIMEOUT) as conn:
            rows = await (await conn.execute(_SYNC, params, prepare=True)).fetchall()
        levels = {str(key): float(tokens) for key, tokens, _ in rows}
        return levels, {str(key): int(granted) for key, _, granted in rows if granted}

    async def purge(self) -> None:
        """Delete the rows that are full again (see _PURGE); a failure waits for next time."""
        try:
            async with self._pool.connection(timeout=SYNC_TIMEOUT) as conn:
                await conn.execute(_PURGE, {"slowest": self._slowest})
        except Exception as error:
            log.warning("rate limits: purging idle buckets failed (%s); later then", error)

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None or now - self._warned_at >= WARN_EVERY:
            log.warning(
                "rate limits: cannot sync with the database (%s); deciding locally within "
                "the bound, retrying",
                str(error) or type(error).__name__,
            )
            self._warned_at = now
        if self._failing_since is None:
            self._failing_since = now

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "rate limits: syncing again after %.1fs", time.monotonic() - self._failing_since
            )
            self._failing_since = None
