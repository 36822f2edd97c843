"""Executor heartbeats in PostgreSQL: one row per running run, refreshed every few
seconds by the executor that runs it. Not events: a beat every few seconds per run
would flood the event store.

The row is the executor's lease on the run's attempt: written *before* the claim is
appended (`lease`), so every attempt that was ever started has one, whatever the read
models say. Recovery (application/recovery.py) reads only these rows: one whose beat is
too old is checked against the run's own events, and either recovered or dropped (a
claim that lost its race, a run that ended just before its executor died)."""

from __future__ import annotations

from datetime import timedelta

from psycopg_pool import AsyncConnectionPool, ConnectionPool

# Never replaces a later attempt's row: an executor that lost its attempt beats once
# more before it notices, and that beat must not hide the newer attempt's.
_BEAT = (
    "INSERT INTO run_heartbeats AS h (run_id, attempt, executor_id, beat_at)"
    " VALUES (%s, %s, %s, now()) ON CONFLICT (run_id) DO UPDATE"
    " SET attempt = EXCLUDED.attempt, executor_id = EXCLUDED.executor_id,"
    " beat_at = EXCLUDED.beat_at WHERE h.attempt <= EXCLUDED.attempt"
)
_STALE = (
    "SELECT run_id::text, attempt FROM run_heartbeats"
    " WHERE beat_at < now() - %(older_than)s ORDER BY beat_at LIMIT %(limit)s"
)


class PostgresHeartbeats:
    def __init__(self, pool: AsyncConnectionPool, lease_pool: ConnectionPool) -> None:
        self._pool = pool
        self._lease_pool = lease_pool
        """For `lease`, called from the synchronous claim."""

    def lease(self, run_id: str, attempt: int, executor_id: str) -> None:
        """Before the claim of `attempt` is appended: the first beat. If the claim then
        loses, the row stays until it is stale and recovery drops it."""
        with self._lease_pool.connection() as conn:
            conn.execute(_BEAT, (run_id, attempt, executor_id))

    async def beat(self, run_id: str, attempt: int, executor_id: str) -> None:
        """Proof of life of `attempt`."""
        async with self._pool.connection() as conn:
            await conn.execute(_BEAT, (run_id, attempt, executor_id))

    async def stop(self, run_id: str, attempt: int) -> None:
        """The attempt has ended here. Only its own row goes: the run may already be
        on its next attempt elsewhere, whose beats must stand."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM run_heartbeats WHERE run_id = %s AND attempt = %s",
                (run_id, attempt),
            )

    async def drop_stale(self, run_id: str, attempt: int, older_than: float) -> None:
        """Remove the lease if it is still the stale one: a lease renewed meanwhile (a
        beat, or a new claim of the same attempt number) stays."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM run_heartbeats WHERE run_id = %s AND attempt = %s"
                " AND beat_at < now() - %s",
                (run_id, attempt, timedelta(seconds=older_than)),
            )

    async def stale(self, older_than: float, limit: int) -> list[tuple[str, int]]:
        """(run id, attempt) of the leases not renewed for `older_than` seconds."""
        params = {"older_than": timedelta(seconds=older_than), "limit": limit}
        async with self._pool.connection() as conn:
            cur = await conn.execute(_STALE, params)
            return [(str(run_id), int(attempt)) for run_id, attempt in await cur.fetchall()]
