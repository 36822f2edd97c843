"""Leadership by PostgreSQL session advisory locks, and the one key scheme of every
advisory lock Norn takes (docs/architecture.md §9).

`lock_key(purpose, scope)` names every lock: relay, projection runners, executor
maintenance, migrations, and the short-lived locks of appends, quotas, namespaces and
rebuilds. One hash of one string, so two purposes cannot collide by construction and no
lock needs a registry of magic numbers.

`AdvisoryLocks` is one session holding the leadership locks of any number of holders in
a process (it saved a backend per runner when the projection runners moved to it; the
relay and the executor maintenance share it too). A session-level advisory lock lasts
as long as its session: when that connection dies, PostgreSQL drops every lock on it and
another process may take over. So every error on the session, including a failed or
slow ping, closes it and ends every lease at once; each holder finds out at its next
check and raises LeadershipLost (or, for `Lease.hold`, stands by again).

Leadership is an efficiency measure wherever Norn uses it: what makes two leaders
harmless is elsewhere (tracking rows for projections, message ids and expected
sequences for the relay, optimistic concurrency for recovery), because a dead session
is only noticed at the next ping, up to `check_interval` seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection

from infrastructure.supervision import pause

LOCKS_APPLICATION = "norn-locks"
"""application_name of the leadership session (visible in pg_stat_activity)."""

Check = Callable[[], Awaitable[None]]
"""Raises LeadershipLost once the lock it was handed with is gone."""


class LeadershipLost(RuntimeError):
    pass


def lock_key(purpose: str, scope: str) -> int:
    """The advisory-lock key of (purpose, scope): a stable signed 64-bit integer, the
    same in every process (Python's hash() differs per process)."""
    digest = hashlib.blake2b(f"norn:{purpose}:{scope}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLocks:
    """Session-level advisory locks of several holders on one connection."""

    def __init__(
        self,
        database_url: str,
        *,
        check_interval: float = 5.0,
        application_name: str = LOCKS_APPLICATION,
    ) -> None:
        self._url = database_url
        self._check_interval = check_interval
        self._application = application_name
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
                # holder of the same key in this process would lead too.
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
        on leaving. For holders that lead for a long stretch (a projection runner)."""
        lease = Lease(self, key)
        try:
            while not stop.is_set() and not await lease.hold():
                await pause(stop, standby_interval)
            yield lease.check if lease.held else None
        finally:
            await lease.release()

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
                self._url, autocommit=True, application_name=self._application
            )
        try:
            # Bounded: a session that hangs (a dead peer without a TCP reset) must not
            # keep every holder in this process waiting for the mutex.
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


class Lease:
    """One holder's hold on one lock of an AdvisoryLocks session. `hold()` suits loops
    that work in passes (the relay: one call per pass); `leadership()` wraps it for
    holders that lead for a long stretch."""

    def __init__(self, locks: AdvisoryLocks, key: int) -> None:
        self._locks = locks
        self._key = key
        self._lease: int | None = None

    @property
    def held(self) -> bool:
        """Whether this holder held the lock when last asked (see `hold`)."""
        return self._lease is not None

    async def hold(self) -> bool:
        """True if this holder leads: it held the lock and its session is alive (pinged
        at most every check_interval), or it took the lock just now. False while someone
        else has it. Raises LeadershipLost if a lock it held is gone (then it holds
        nothing: the next call competes again), and database errors while competing."""
        if self._lease is None:
            self._lease = await self._locks.try_acquire(self._key)
            return self._lease is not None
        await self.check()
        return True

    async def check(self) -> None:
        """Raise LeadershipLost unless the lock is still held."""
        if self._lease is None:
            raise LeadershipLost("not the leader")
        try:
            await self._locks.check(self._key, self._lease)
        except LeadershipLost:
            self._lease = None
            raise

    async def release(self) -> None:
        """Give the lock up (nothing if not held); never raises: a session that fails
        to release is closed, which releases it too."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await self._locks.release(self._key, lease)
