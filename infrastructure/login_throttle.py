"""Failed-login bookkeeping in PostgreSQL, shared by every API process: how many logins
failed recently per key (a username or a client address), and which keys are locked.
The policy (how many failures slow or lock, for how long) is the application's
(application/sessions.py: LoginPolicy)."""

from __future__ import annotations

import time
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from application.ports import LoginAttempts

_FAILED = """
INSERT INTO login_attempts AS a (key, failures, first_failure_at)
VALUES (%(key)s, 1, now())
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN a.first_failure_at < now() - %(window)s THEN 1 ELSE a.failures + 1 END,
    first_failure_at = CASE WHEN a.first_failure_at < now() - %(window)s
                            THEN now() ELSE a.first_failure_at END
"""
# Reaching the threshold locks the key and starts its count afresh for after the lock.
_LOCK = """
UPDATE login_attempts SET locked_until = now() + %(lock)s, failures = 0,
       first_failure_at = now()
 WHERE key = %(key)s AND failures >= %(threshold)s
"""


class PostgresLoginThrottle:
    def __init__(self, pool: AsyncConnectionPool, window: float = 900.0) -> None:
        self._pool = pool
        self._window = timedelta(seconds=window)
        self._last_purge = 0.0

    async def attempts(self, keys: list[str]) -> list[LoginAttempts]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT key,"
                " CASE WHEN first_failure_at >= now() - %s THEN failures ELSE 0 END,"
                " GREATEST(0, EXTRACT(EPOCH FROM locked_until - now()))::float8"
                " FROM login_attempts WHERE key = ANY(%s)",
                (self._window, keys),
            )
            found = {
                key: (failures, locked or 0.0) for key, failures, locked in await cur.fetchall()
            }
        return [LoginAttempts(*found.get(key, (0, 0.0))) for key in keys]

    async def failed(self, keys: list[str], lock_after: list[int], lock_seconds: float) -> None:
        lock = timedelta(seconds=lock_seconds)
        async with self._pool.connection() as conn, conn.transaction():
            for key, threshold in zip(keys, lock_after, strict=True):
                await conn.execute(_FAILED, {"key": key, "window": self._window})
                await conn.execute(_LOCK, {"key": key, "lock": lock, "threshold": threshold})
        await self._purge_now_and_then()

    async def succeeded(self, key: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM login_attempts WHERE key = %s"
                " AND (locked_until IS NULL OR locked_until < now())",
                (key,),
            )

    async def _purge_now_and_then(self) -> None:
        """Forget keys whose failures and lock are over (one process-local clock is
        enough; several processes purging is harmless)."""
        if time.monotonic() - self._last_purge < 600:
            return
        self._last_purge = time.monotonic()
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM login_attempts WHERE first_failure_at < now() - %s"
                " AND (locked_until IS NULL OR locked_until < now())",
                (self._window,),
            )
