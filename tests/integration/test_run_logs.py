"""Step log lines in PostgreSQL (infrastructure/run_logs.py), flushed several times while
a step runs: every line kept once, in order, and past the bound one line that counts
every line dropped, however many flushes saw them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from infrastructure.run_logs import MAX_LINES, RunLogs


@pytest.fixture
async def run_logs(database_url: str) -> AsyncIterator[RunLogs]:
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False)
    await pool.open()
    yield RunLogs(pool)
    await pool.close()


async def test_flushes_while_running_keep_every_line_and_count_the_dropped(
    run_logs: RunLogs,
) -> None:
    run_id = str(uuid.uuid4())
    writer = run_logs.writer(run_id, "s", 1)
    writer.line("info", "first")
    await writer.flush()
    assert [r["message"] for r in await run_logs.lines(run_id)] == ["first"]
    await writer.flush()  # nothing new: nothing written

    for n in range(1, MAX_LINES + 5):
        writer.line("info", f"line {n}")
    await writer.flush()
    writer.line("error", "late")
    writer.line("error", "later")
    await writer.flush()

    lines = await run_logs.lines(run_id, limit=5000)
    assert len(lines) == MAX_LINES + 1
    assert [r["message"] for r in lines[:2]] == ["first", "line 1"]
    assert lines[MAX_LINES - 1]["message"] == f"line {MAX_LINES - 1}"
    assert lines[-1]["level"] == "warning" and lines[-1]["message"] == "7 more lines dropped"
