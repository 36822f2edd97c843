"""Log lines of step attempts, in PostgreSQL: what a plugin said while it ran. Not events
(a chatty step would flood the event store and every consumer); bounded per attempt so
that one step cannot fill the database."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

MAX_LINES = 1000
"""Lines kept per step attempt; one more says how many were dropped."""
MAX_MESSAGE = 2000
LEVELS = ("debug", "info", "warning", "error")


class StepLog:
    """Collects one step attempt's lines in memory (bounded) and writes them in batches,
    as often as the step runner flushes (while the step runs, and when it ends)."""

    def __init__(self, pool: AsyncConnectionPool, run_id: str, step: str, attempt: int) -> None:
        self._pool = pool
        self._key = (run_id, step, attempt)
        self._buffer: list[tuple[int, datetime, str, str]] = []
        self._seq = 0
        self._dropped = 0
        """Lines dropped past MAX_LINES so far (all flushes)."""
        self._dropped_written = 0

    def line(self, level: str, message: str) -> None:
        level = level if level in LEVELS else "info"
        if self._seq >= MAX_LINES:
            self._dropped += 1
            return
        self._seq += 1
        self._buffer.append((self._seq, datetime.now(UTC), level, message[:MAX_MESSAGE]))

    async def flush(self) -> None:
        rows, self._buffer = self._buffer, []
        dropped = None
        if self._dropped != self._dropped_written:
            # One line counts every line dropped so far; a later flush updates it.
            dropped = (
                MAX_LINES + 1,
                datetime.now(UTC),
                "warning",
                f"{self._dropped} more lines dropped",
            )
            self._dropped_written = self._dropped
        if not rows and dropped is None:
            return
        run_id, step, attempt = self._key
        try:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                if rows:
                    await cur.executemany(
                        "INSERT INTO run_logs (run_id, step, attempt, seq, at, level, message)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (run_id, step, attempt, seq) DO NOTHING",
                        [(run_id, step, attempt, *row) for row in rows],
                    )
                if dropped is not None:
                    await cur.execute(
                        "INSERT INTO run_logs (run_id, step, attempt, seq, at, level, message)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (run_id, step, attempt, seq)"
                        " DO UPDATE SET at = EXCLUDED.at, message = EXCLUDED.message",
                        (run_id, step, attempt, *dropped),
                    )
        except Exception as error:
            # Logs must never fail a step.
            log.warning("could not store log lines of run %s step %s: %r", run_id, step, error)


class RunLogs:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    def writer(self, run_id: str, step: str, attempt: int) -> StepLog:
        return StepLog(self._pool, run_id, step, attempt)

    async def lines(
        self, run_id: str, step: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The run's lines, oldest first (by step attempt), at most `limit`."""
        query = "SELECT step, attempt, seq, at, level, message FROM run_logs WHERE run_id = %s"
        params: list[Any] = [run_id]
        if step is not None:
            query += " AND step = %s"
            params.append(step)
        query += " ORDER BY at, step, attempt, seq LIMIT %s"
        params.append(limit)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()
