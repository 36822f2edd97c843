"""The PostgreSQL sessions that the projection runners of one process share.

A runner used to hold two connections of its own: a session for its leadership lock and
one to work on. Now one session holds the advisory locks of every runner in the process
(`AdvisoryLocks`), and runners take a connection from a small pool only while they read
the store, apply a batch or persist a position; most batches need none
(projections/positions.py).

A session-level advisory lock lasts as long as its session: when that connection dies,
Postgres drops every lock on it and another process may take over. So every error on the
session, including a failed or slow ping, closes it and ends every lease at once; each
runner finds out at its next check (before each batch), raises LeadershipLost and
competes again on a new session. As before, leadership is an efficiency measure: the
tracking row is what makes two active runners harmless (projections/projection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from projections.positions import KeeperGroup

LOCKS_APPLICATION = "norn-projector-locks"
POOL_APPLICATION = "norn-projector"


Check = Callable[[], Awaitable[None]]
"""Raises LeadershipLost once the lock it was handed with is gone."""


class LeadershipLost(RuntimeError):
    pass


async def pause(stop: asyncio.Event, seconds: float, *wake: asyncio.Future[Any]) -> None:
    """Sleep, but wake at once when asked to stop or when any of `wake` completes."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, *wake}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


class AdvisoryLocks:
    """Session-level advisory locks of several holders on one connection."""

    def __init__(self, database_url: str, *, check_interval: float = 5.0) -> None:
        self._url = database_url
        self._check_interval = check_interval
        self._conn: AsyncConnection[Any] | None = None
        self._held: dict[int, int] = {}  # key -> lease
        self._leases = itertools.count(1)
        # One statement at a time on the session, and no lease handed out while a reset
        # is ending all of them.
        self._mutex = asyncio.Lock()
        self._pinged = 0.0

    async def try_acquire(self, key: int) -> int | None:
        """A lease on lock `key`, or None if another session, or another holder on this
        one, has it. Raises if the database cannot be reached."""
        async with self._mutex:
            if key in self._held:
                # Advisory locks are re-entrant within a session: without this, a second
                # runner of the same projection in this process would lead too.
                return None
            if not await self._query("SELECT pg_try_advisory_lock(%s)", key):
                return None
            lease = next(self._leases)
            self._held[key] = lease
            return lease

    async def check(self, key: int, lease: int) -> None:
        """Raise LeadershipLost unless `lease` still holds its lock. Pings the session at
        most every `check_interval` seconds, whoever asks."""
        async with self._mutex:
            if self._held.get(key) != lease:
                raise LeadershipLost("the leadership session was lost")
            if time.monotonic() - self._pinged < self._check_interval:
                return
            try:
                await self._query("SELECT true")
            except Exception as error:
                raise LeadershipLost("the leadership session is gone") from error

    async def release(self, key: int, lease: int) -> None:
        async with self._mutex:
            if self._held.get(key) != lease:
                return  # ended with the session already
            del self._held[key]
            # A failure resets the session, which releases the lock too.
            with contextlib.suppress(Exception):
                await self._query("SELECT pg_advisory_unlock(%s)", key)

    @contextlib.asynccontextmanager
    async def leadership(
        self, key: int, stop: asyncio.Event, standby_interval: float
    ) -> AsyncIterator[Check | None]:
        """Stand by until lock `key` is ours, trying every `standby_interval` seconds;
        yield the check of the lease (None if `stop` was set first) and release the lock
        on leaving."""
        lease: int | None = None
        try:
            while not stop.is_set():
                lease = await self.try_acquire(key)
                if lease is not None:
                    break
                await pause(stop, standby_interval)
            yield None if lease is None else functools.partial(self.check, key, lease)
        finally:
            if lease is not None:
                await self.release(key, lease)

    async def close(self) -> None:
        async with self._mutex:
            await self._reset()

    @property
    def backend_pid(self) -> int | None:
        """The session's server process (for tests and diagnostics)."""
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid

    async def _query(self, query: str, *params: Any) -> bool:
        if self._conn is None or self._conn.closed or self._conn.broken:
            await self._reset()
            self._conn = await AsyncConnection.connect(
                self._url, autocommit=True, application_name=LOCKS_APPLICATION
            )
        try:
            # Bounded: a session that hangs (a dead peer without a TCP reset) must not
            # keep every runner in this process waiting for the mutex.
            async with asyncio.timeout(self._check_interval):
                cur = await self._conn.execute(query, params)  # type: ignore[arg-type]
                row = await cur.fetchone()
        except BaseException:
            await self._reset()
            raise
        self._pinged = time.monotonic()
        return bool(row and row[0])

    async def _reset(self) -> None:
        """Close the session: Postgres releases every lock on it, so every lease ends."""
        self._held.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None


class RunnerSessions:
    """The leadership session, the connection pool and the position writes of the
    runners of one process. A pool of two is enough: a batch holds a connection for one
    transaction, and most batches need none."""

    def __init__(
        self, database_url: str, *, max_size: int = 2, check_interval: float = 5.0
    ) -> None:
        self.locks = AdvisoryLocks(database_url, check_interval=check_interval)
        self.keepers = KeeperGroup()
        self.pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            open=False,
            # Short enough that a stuck database shows up as a failed batch (and a retry)
            # well within a stop's grace period.
            timeout=10.0,
            # Connections opened for a burst are closed again soon after.
            max_idle=60.0,
            kwargs={"autocommit": True, "application_name": POOL_APPLICATION},
            name=POOL_APPLICATION,
        )

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.locks.close()
        await self.pool.close()
