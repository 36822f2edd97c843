"""A page of the runs export and that page's steps come from one snapshot of the read
model (projections/snapshot.py): while a writer keeps moving runs and their steps
together, as the runs projection does in one transaction, no page ever shows a run
beside steps of another moment. Real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
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
