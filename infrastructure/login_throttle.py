"""Login-attempt bookkeeping in PostgreSQL, shared by every API process: how many logins
failed recently per key (a username or a client address), and which keys are locked.
An attempt is counted when it begins (a success takes it back), under the key's row
lock, so parallel guesses are counted one after another like serial ones.
The policy (how many failures slow or lock, for how long) is the application's
(application/logins.py: LoginPolicy)."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from application.ports import LoginAttempts

# Take the key's row (creating it), locked until commit, with its count restarted when
# its first failure has left the window; keys are taken in one order by every process.
_TAKE = """
INSERT INTO login_attempts AS a (key, failures, first_failure_at)
VALUES (%(key)s, 0, now())
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN a.first_failure_at < now() - %(window)s THEN 0 ELSE a.failures END,
    first_failure_at = CASE WHEN a.first_failure_at < now() - %(window)s
                            THEN now() ELSE a.first_failure_at END
RETURNING failures, GREATEST(0, EXTRACT(EPOCH FROM locked_until - now()))::float8
"""
# A locked key's count starts afresh for after the lock.
_LOCK = """
UPDATE login_attempts SET locked_until = now() + %(lock)s, failures = 0,
       first_failure_at = now()
 WHERE key = %(key)s AND failures >= %(threshold)s
"""


def stored_key(key: str) -> str:
    """How a key is kept: its kind, then a digest. The table then holds no username as
    typed (people type passwords into the username field) and no client address."""
    kind = key.partition(":")[0]
    return f"{kind}:{hashlib.sha256(b'norn-login-throttle:' + key.encode()).hexdigest()}"


class PostgresLoginThrottle:
    def __init__(self, pool: AsyncConnectionPool, window: float = 900.0) -> None:
        self._pool = pool
        self._window = timedelta(seconds=window)
        self._last_purge = 0.0

    async def begin(
        self, keys: list[str], lock_after: list[int], lock_seconds: float
    ) -> list[LoginAttempts]:
        stored = [stored_key(key) for key in keys]
        states: dict[str, tuple[int, float]] = {}
        async with self._pool.connection() as conn, conn.transaction():
            for key in sorted(set(stored)):
                cur = await conn.execute(_TAKE, {"key": key, "window": self._window})
                row = await cur.fetchone()
                assert row is not None
                states[key] = (int(row[0]), float(row[1] or 0.0))
            locked = any(locked_for > 0 for _, locked_for in states.values())
            over = [
                (key, threshold)
                for key, threshold in zip(stored, lock_after, strict=True)
                if states[key][0] + 1 > threshold
            ]
            if not locked and over:
                # Attempts still in flight hold every try the limit allows: lock now.
                lock = timedelta(seconds=lock_seconds)
                for key, threshold in over:
                    await conn.execute(_LOCK, {"key": key, "lock": lock, "threshold": threshold})
                    states[key] = (states[key][0], lock_seconds)
            elif not locked:
                await conn.execute(
                    "UPDATE login_attempts SET failures = failures + 1 WHERE key = ANY(%s)",
                    (stored,),
                )
        await self._purge_now_and_then()
        return [LoginAttempts(*states[key]) for key in stored]

    # failed and succeeded change one row per statement (autocommit), so they never hold
    # one key's row while waiting for another's and cannot deadlock with begin.

    async def failed(self, keys: list[str], lock_after: list[int], lock_seconds: float) -> None:
        lock = timedelta(seconds=lock_seconds)
        async with self._pool.connection() as conn:
            for key, threshold in zip(keys, lock_after, strict=True):
                await conn.execute(
                    _LOCK, {"key": stored_key(key), "lock": lock, "threshold": threshold}
                )

    async def succeeded(self, forget: str, uncount: list[str]) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM login_attempts WHERE key = %s"
                " AND (locked_until IS NULL OR locked_until < now())",
                (stored_key(forget),),
            )
            for key in uncount:
                await conn.execute(
                    "UPDATE login_attempts SET failures = GREATEST(failures - 1, 0) WHERE key = %s",
                    (stored_key(key),),
                )

    async def _purge_now_and_then(self) -> None:
        """Forget keys whose failures and lock are over (one process-local clock is
        enough; several processes purging is harmless)."""
        if time.monotonic() - self._last_purge < 600:
            return
        self._last_purge = time.monotonic()
        async with self._pool.connection() as conn:
            # Rows a login holds right now are skipped, not waited for (no deadlock).
            await conn.execute(
                "DELETE FROM login_attempts WHERE key IN (SELECT key FROM login_attempts"
                " WHERE first_failure_at < now() - %s"
                " AND (locked_until IS NULL OR locked_until < now())"
                " FOR UPDATE SKIP LOCKED)",
                (self._window,),
            )
