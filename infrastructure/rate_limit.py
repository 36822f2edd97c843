"""Per-principal request rate limits: a token bucket per principal in PostgreSQL, so the
limit holds across every API process. One statement per request refills the bucket for
the time since its last use, takes a token if there is one, and says whether it did.

A bucket holds at most `burst` tokens and refills at `per_hour` tokens an hour: a client
may send `burst` requests at once, and `per_hour` in any hour on average."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True)
class RateLimit:
    per_hour: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_hour / 3600.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    """Requests per hour."""
    remaining: int
    """Requests that may be sent right now."""
    reset_after: int
    """Seconds until the bucket is full again."""
    retry_after: int
    """Seconds until the next request is allowed (0 when it is now)."""


_HIT = """
INSERT INTO rate_limit_buckets AS b (key, tokens, allowed, updated_at)
VALUES (%(key)s, %(burst)s - 1, true, clock_timestamp())
ON CONFLICT (key) DO UPDATE SET
    tokens = LEAST(%(burst)s, b.tokens + %(rate)s
                   * EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at)::float8)
           - CASE WHEN LEAST(%(burst)s, b.tokens + %(rate)s
                   * EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at)::float8) >= 1
                  THEN 1 ELSE 0 END,
    allowed = LEAST(%(burst)s, b.tokens + %(rate)s
                   * EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at)::float8) >= 1,
    updated_at = clock_timestamp()
RETURNING tokens, allowed
"""


class PostgresRateLimiter:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._last_purge = 0.0

    async def hit(self, key: str, limit: RateLimit) -> RateDecision:
        params = {"key": key, "burst": float(limit.burst), "rate": limit.per_second}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_HIT, params, prepare=True)).fetchone()
        assert row is not None
        tokens, allowed = float(row[0]), bool(row[1])
        await self._purge_now_and_then()
        return RateDecision(
            allowed=allowed,
            limit=limit.per_hour,
            remaining=max(0, math.floor(tokens)),
            reset_after=math.ceil(max(0.0, limit.burst - tokens) / limit.per_second),
            retry_after=0 if allowed else max(1, math.ceil((1 - tokens) / limit.per_second)),
        )

    async def _purge_now_and_then(self) -> None:
        """A bucket unused for an hour is full again (burst <= per_hour), the same as no
        row at all: drop such rows so the table stays as small as the active clients."""
        if time.monotonic() - self._last_purge < 600:
            return
        self._last_purge = time.monotonic()
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM rate_limit_buckets WHERE updated_at < now() - interval '1 hour'"
            )
