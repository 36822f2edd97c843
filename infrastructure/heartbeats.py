"""Executor heartbeats in PostgreSQL: one row per running run, refreshed every few
seconds by the executor that runs it. Not events: a beat every few seconds per run
would flood the event store. Recovery (application/recovery.py) asks for running runs
whose beat is too old."""

from __future__ import annotations

from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

# The later of the current attempt's start and its last beat. A row left by an earlier
# attempt (whose executor died) says nothing about the current one: counting it would
# recover a new attempt before its first beat.
_STALE = """
SELECT r.id::text, r.attempt FROM runs r
  LEFT JOIN run_heartbeats h ON h.run_id = r.id AND h.attempt = r.attempt
 WHERE r.status = 'running'
   AND GREATEST(r.started_at, h.beat_at) < now() - %(older_than)s
 ORDER BY r.started_at
 LIMIT %(limit)s
"""


class PostgresHeartbeats:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def beat(self, run_id: str, attempt: int, executor_id: str) -> None:
        """Proof of life of `attempt`. An executor that lost its attempt beats once more
        before it notices: that beat must not replace a newer attempt's."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO run_heartbeats AS h (run_id, attempt, executor_id, beat_at)"
                " VALUES (%s, %s, %s, now()) ON CONFLICT (run_id) DO UPDATE"
                " SET attempt = EXCLUDED.attempt, executor_id = EXCLUDED.executor_id,"
                " beat_at = EXCLUDED.beat_at WHERE h.attempt <= EXCLUDED.attempt",
                (run_id, attempt, executor_id),
            )

    async def stop(self, run_id: str, attempt: int) -> None:
        """The attempt has ended here. Only its own row goes: the run may already be
        on its next attempt elsewhere, whose beats must stand."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM run_heartbeats WHERE run_id = %s AND attempt = %s",
                (run_id, attempt),
            )

    async def stale(self, older_than: float, limit: int) -> list[tuple[str, int]]:
        """Running runs (per the runs read model) whose executor has not beaten for
        `older_than` seconds, or never did since the run started."""
        params = {"older_than": timedelta(seconds=older_than), "limit": limit}
        async with self._pool.connection() as conn:
            cur = await conn.execute(_STALE, params)
            return [(str(run_id), int(attempt)) for run_id, attempt in await cur.fetchall()]
