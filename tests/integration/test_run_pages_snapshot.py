"""Reads that must agree come from one moment of the read model: while a writer keeps
moving runs and their steps together, as the runs projection does in one transaction, no
page of the runs export shows a run beside steps of another moment, no numbered page a
total other than its rows, and no statistics page totals other than its buckets' sums.
Real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg

from infrastructure.postgres import create_read_pool
from infrastructure.settings import Settings
from projections.run_queries import RunQueries
from tests.integration.run_support import seed_many_runs

RUNS = 40
READ_FOR = 1.5  # seconds; reading apart, the first torn page came within a few pages


async def _move(conn: psycopg.AsyncConnection, pipeline_id: object, status: str) -> None:
    """Every run of the pipeline and all their steps to `status`, in one transaction."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE runs SET status = %s WHERE pipeline_id = %s", (status, pipeline_id)
        )
        await conn.execute(
            "UPDATE run_steps SET status = %s FROM runs"
            " WHERE run_steps.run_id = runs.id AND runs.pipeline_id = %s",
            (status, pipeline_id),
        )


async def _flip(database_url: str, pipeline_id: object, stop: asyncio.Event) -> int:
    """Every run and all its steps `running`, then all `succeeded`, and back, until
    stopped. Answers how many moves committed."""
    moves = 0
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while not stop.is_set():
            await _move(conn, pipeline_id, ("running", "succeeded")[moves % 2])
            moves += 1
            await asyncio.sleep(0)
    return moves


async def test_a_page_and_its_steps_never_disagree(settings: Settings) -> None:
    database_url = settings.database_url or ""
    tenant_id, pipeline_id = f"tenant-{uuid4().hex[:8]}", uuid4()
    await seed_many_runs(
        database_url, tenant_id, pipeline_id, RUNS, datetime(2024, 1, 1, tzinfo=UTC)
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _move(conn, pipeline_id, "succeeded")  # seeded with a failed step each
    pool = create_read_pool(database_url, max_size=2)
    await pool.open()
    stop = asyncio.Event()
    writer = asyncio.create_task(_flip(database_url, pipeline_id, stop))
    queries = RunQueries(pool)
    pages = torn = 0
    try:
        deadline = asyncio.get_running_loop().time() + READ_FOR
        while asyncio.get_running_loop().time() < deadline:
            for detail in ("summary", "full"):
                async for page in queries.pages(tenant_id, page_size=RUNS, steps=detail):
                    pages += 1
                    assert len(page) == RUNS
                    for run in page:
                        if detail == "summary":
                            steps = [run["status"]] * run["step_summary"]["succeeded"]
                            agree = len(steps) == (2 if run["status"] == "succeeded" else 0)
                        else:
                            agree = {s["status"] for s in run["steps"]} == {run["status"]}
                        torn += not agree
    finally:
        stop.set()
        moves = await writer
        await pool.close()
    assert moves > pages / 4  # the writer kept moving all along the reads
    assert torn == 0, f"{torn} runs of {pages} pages disagreed with their steps"


async def _under_flips(database_url: str, pipeline_id: object, read: Any) -> tuple[int, int]:
    """Call `read()` (answers whether what it read agrees) for READ_FOR seconds while
    `_flip` moves the runs; answers (reads, disagreements)."""
    stop = asyncio.Event()
    writer = asyncio.create_task(_flip(database_url, pipeline_id, stop))
    reads = torn = 0
    try:
        deadline = asyncio.get_running_loop().time() + READ_FOR
        while asyncio.get_running_loop().time() < deadline:
            reads += 1
            torn += not await read()
    finally:
        stop.set()
        await writer
    return reads, torn


async def test_a_numbered_page_and_its_total_never_disagree(settings: Settings) -> None:
    """`?page=` counts the total in the page's own statement (projections/pagination.py)."""
    database_url = settings.database_url or ""
    tenant_id, pipeline_id = f"tenant-{uuid4().hex[:8]}", uuid4()
    await seed_many_runs(
        database_url, tenant_id, pipeline_id, RUNS, datetime(2024, 1, 1, tzinfo=UTC)
    )
    pool = create_read_pool(database_url, max_size=2)
    await pool.open()
    queries = RunQueries(pool)
    seen: set[int] = set()

    async def read() -> bool:
        page = await queries.list(tenant_id, status="running", page=1, limit=RUNS + 10)
        seen.add(len(page.items))
        return page.total == len(page.items) and not page.has_more

    try:
        reads, torn = await _under_flips(database_url, pipeline_id, read)
    finally:
        await pool.close()
    assert seen == {0, RUNS}  # the writer's moves were seen, each whole
    assert torn == 0, f"{torn} of {reads} pages had a total other than their rows"


async def test_run_statistics_beside_their_timeline_agree(settings: Settings) -> None:
    """The dashboard's statistics page reads totals and buckets from one snapshot."""
    database_url = settings.database_url or ""
    tenant_id, pipeline_id = f"tenant-{uuid4().hex[:8]}", uuid4()
    now = datetime.now(UTC)
    await seed_many_runs(database_url, tenant_id, pipeline_id, RUNS, now - timedelta(minutes=5))
    pool = create_read_pool(database_url, max_size=2)
    await pool.open()
    queries = RunQueries(pool)
    since, until = now - timedelta(hours=2), now + timedelta(hours=1)

    async def read() -> bool:
        totals, buckets = await queries.statistics_and_timeline(tenant_id, since, until, "hour")
        by_bucket = sum(b.counts.by_status["running"] for b in buckets)
        return totals.totals.by_status["running"] == by_bucket and totals.totals.total == RUNS

    try:
        reads, torn = await _under_flips(database_url, pipeline_id, read)
    finally:
        await pool.close()
    assert torn == 0, f"{torn} of {reads} reads had totals other than their buckets' sums"
