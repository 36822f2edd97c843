"""When each API key was last used, recorded cheaply: not an event per request (that
would flood the event store and every consumer), but one small row per key, written at
most about once a minute per key.

Each process remembers when it last wrote a key's row and skips writes within the
interval; across processes the UPDATE's condition does the same, so N API processes
still write a key's row about once a minute."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

_TOUCH = """
INSERT INTO api_key_usage AS u (key_id, last_used_at) VALUES (%(key_id)s, now())
ON CONFLICT (key_id) DO UPDATE SET last_used_at = EXCLUDED.last_used_at
 WHERE u.last_used_at < now() - %(interval)s
"""
_MAX_REMEMBERED = 10_000


class ApiKeyUsage:
    def __init__(self, pool: AsyncConnectionPool, interval: float = 60.0) -> None:
        self._pool = pool
        self._interval = interval
        self._written: dict[UUID, float] = {}

    async def touch(self, key_id: UUID) -> None:
        """Record a use of the key, unless one was recorded within the interval. A
        failure is logged, never raised: it must not fail the request."""
        now = time.monotonic()
        last = self._written.get(key_id)
        if last is not None and now - last < self._interval:
            return
        if len(self._written) >= _MAX_REMEMBERED:
            self._written.clear()  # bounded memory; the SQL condition still throttles
        self._written[key_id] = now
        params = {"key_id": key_id, "interval": timedelta(seconds=self._interval)}
        try:
            async with self._pool.connection() as conn:
                await conn.execute(_TOUCH, params)
        except Exception as error:
            log.warning("could not record use of API key %s: %s", key_id, error)
