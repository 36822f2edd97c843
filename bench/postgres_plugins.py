"""Benchmark: a table copied through Input.postgres -> Output.postgres (issue 14: the
database plugins), against raw psycopg COPY of the same rows in the same run.

    .venv/bin/python bench/postgres_plugins.py [--rows 1000000] [--smoke]

A source table of --rows rows (bigint, text, numeric, timestamptz, boolean, jsonb) in a
database of its own (norn_bench_pg_*, dropped afterwards) on NORN_BENCH_DATABASE_URL's
server, else an embedded PostgreSQL. Each phase runs in a fresh child process, so its
peak RSS is its own:

[ref]      raw psycopg: COPY src TO STDOUT piped into COPY ref FROM STDIN (no parsing: the
           fastest way PostgreSQL moves the rows through a client).
[plugins]  Input.postgres (a read-only query of src, server-side cursor) feeding
           Output.postgres (append, COPY) directly, in process, as the executor chains them
           (without the JSON-lines file the executor puts between steps). Run at --rows / 10
           too: a peak RSS that does not grow with the rows is the bounded memory.

Prints rows/s and peak RSS (and its growth over the idle interpreter with the same
imports) per phase, and plugins / reference as a ratio. --smoke: 20,000 rows, for CI
(figures printed, never asserted)."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infrastructure.embedded import EmbeddedPostgres
from infrastructure.plugins.base import StepContext
from infrastructure.plugins.postgres import InputPostgres, OutputPostgres

COLUMNS = "id bigint, name text, amount numeric(12,2), at timestamptz, flag boolean, doc jsonb"
FILL = """
INSERT INTO src SELECT n, 'customer ' || n, n * 0.37, timestamptz '2026-01-01' + n * interval '1 s',
       n %% 2 = 0, jsonb_build_object('n', n, 'tags', jsonb_build_array('a', 'b'))
  FROM generate_series(1, %s) n
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def reference(url: str, rows: int) -> float:
    async with (
        await psycopg.AsyncConnection.connect(url) as source,
        await psycopg.AsyncConnection.connect(url) as target,
    ):
        started = time.perf_counter()
        async with (
            source.cursor().copy("COPY src TO STDOUT") as out,
            target.cursor().copy("COPY ref FROM STDIN") as into,
        ):
            async for chunk in out:
                await into.write(chunk)
        await target.commit()
        return time.perf_counter() - started


async def plugins(url: str, rows: int, table: str) -> float:
    info = conninfo_to_dict(url)
    connection = {
        "host": info.get("host") or "127.0.0.1",
        "port": int(info.get("port") or 5432),
        "database": info["dbname"],
        "user": info.get("user") or "postgres",
    }
    with tempfile.TemporaryDirectory() as tmp:
        context = StepContext(
            tenant_id="bench",
            run_id="bench",
            step_name="copy",
            workspace=Path(tmp),
            files=Path(tmp) / "files",
            allow_private_networks=True,  # the bench server is on this machine
        )
        query = {"query": "SELECT * FROM src LIMIT %(rows)s", "params": {"rows": rows}}
        source = InputPostgres.parse_config({**connection, **query})
        sink = OutputPostgres.parse_config({**connection, "table": table})

        async def nothing():  # type: ignore[no-untyped-def]
            return
            yield

        read = InputPostgres().execute(source, context, nothing())
        started = time.perf_counter()
        count = 0
        async for _ in OutputPostgres().execute(sink, context, read):
            count += 1
        elapsed = time.perf_counter() - started
    assert count == rows, (count, rows)
    return elapsed


def phase(kind: str, url: str, rows: int, table: str, results: multiprocessing.Queue) -> None:
    baseline = peak_rss_mb()
    if kind == "ref":
        seconds = asyncio.run(reference(url, rows))
    else:
        seconds = asyncio.run(plugins(url, rows, table))
    results.put((seconds, peak_rss_mb(), baseline))


def measure(kind: str, url: str, rows: int, table: str) -> tuple[float, float, float]:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    child = context.Process(target=phase, args=(kind, url, rows, table, results))
    child.start()
    measured = results.get(timeout=3600)
    child.join()
    return measured


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def bench(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("src", "ref", "dst", "dst_small"):
            conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
        conn.execute(FILL, (rows,))
        conn.execute("VACUUM ANALYZE src")
    print(f"{rows:,} rows: {COLUMNS}")
    ref_s, ref_rss, ref_base = measure("ref", url, rows, "ref")
    assert count(url, "ref") == rows
    print(
        f"[ref]     raw psycopg COPY TO -> COPY FROM: {rows / ref_s:,.0f} rows/s ({ref_s:.2f} s),"
        f" peak RSS {ref_rss:.0f} MB (+{ref_rss - ref_base:.0f} MB over the interpreter)"
    )
    for n, table in ((rows, "dst"), (max(rows // 10, 1), "dst_small")):
        seconds, rss, base = measure("plugins", url, n, table)
        assert count(url, table) == n
        print(
            f"[plugins] {n:,} rows, Input.postgres -> Output.postgres: {n / seconds:,.0f} rows/s"
            f" ({seconds:.2f} s), peak RSS {rss:.0f} MB (+{rss - base:.0f} MB);"
            f" rate {rows / ref_s / (n / seconds):.1f}x slower than the reference"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="20,000 rows, for CI")
    args = parser.parse_args()
    rows = 20_000 if args.smoke else args.rows
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-pg-"))
    embedded = None
    admin_url = os.environ.get("NORN_BENCH_DATABASE_URL")
    if not admin_url:
        embedded = EmbeddedPostgres(tmp)
        admin_url = embedded.start()
    name = f"norn_bench_pg_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            bench(make_conninfo(admin_url, dbname=name), rows)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the embedded server's data dir


if __name__ == "__main__":
    main()
