"""Input.postgres against a real PostgreSQL database the test creates: bound params,
the type mapping, the read-only transaction, streaming with bounded memory, and the
guard (Norn's own database refused on the very server the test's database is on)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infrastructure.plugins.base import PluginError
from infrastructure.plugins.network import BlockedAddress
from infrastructure.plugins.postgres import InputPostgres, OutputPostgres
from infrastructure.plugins.postgres_connection import connection_kwargs
from infrastructure.plugins.postgres_guard import Endpoint, protected_databases
from tests.integration.postgres_support import OwnDatabase, context, pg, run, start

__all__ = ["pg"]  # the fixture

UUID = "6f1c2a3e-1111-4a2b-9c3d-0123456789ab"


@pytest.fixture(scope="module", autouse=True)
def orders(pg: OwnDatabase) -> None:
    pg.sql("CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10,2))")
    pg.sql("INSERT INTO orders VALUES (1,'paid',12.50),(2,'open',3),(3,'paid',40),(4,'void',1)")


def query(pg: OwnDatabase, sql: str, **fields: Any) -> dict[str, Any]:
    return {**pg.connection, "query": sql, **fields}


async def test_params_are_bound_from_the_config_and_the_runs_params(
    pg: OwnDatabase, tmp_path: Path
) -> None:
    config = query(
        pg,
        "SELECT id, status FROM orders WHERE status = %(status)s AND amount >= %(least)s"
        " AND id <> ALL(%(skip)s) ORDER BY id",
        params={
            "status": {"param": "status"},
            "least": {"param": "least", "default": 5},
            "skip": [3],
        },
    )
    rows = await run(InputPostgres, config, context(tmp_path, params={"status": "paid"}))
    assert rows == [{"id": 1, "status": "paid"}]

    injected = context(tmp_path, params={"status": "paid' OR '1'='1"})
    assert await run(InputPostgres, config, injected) == []  # a value, never SQL

    with pytest.raises(PluginError, match="the run has no param 'status'"):
        await run(InputPostgres, config, context(tmp_path))


async def test_values_map_to_json(pg: OwnDatabase, tmp_path: Path) -> None:
    sql = f"""
    SELECT 1::int2 AS small, 9007199254740993::int8 AS big, 1.5::float8 AS f,
           'NaN'::float8 AS nan, 12.50::numeric AS exact, true AS yes, NULL::text AS nothing,
           'é'::varchar AS txt, '{UUID}'::uuid AS u, '\\x00ff'::bytea AS b,
           '2026-01-31'::date AS d, 'infinity'::date AS forever,
           '2026-01-31 12:30:00.25'::timestamp AS ts,
           '2026-01-31 12:30:00+02'::timestamptz AS tstz, '08:15'::time AS t,
           '08:15+05:30'::timetz AS ttz, '1 day 2 hours'::interval AS iv,
           '{{"a": [1, null]}}'::jsonb AS j, ARRAY[1,2] AS ints,
           ARRAY['2026-01-01 00:00+00'::timestamptz] AS stamps, '10.0.0.0/8'::cidr AS net,
           int4range(1, 5) AS r, ROW(1, 'x') AS composite
    """
    [record] = await run(InputPostgres, query(pg, sql), context(tmp_path))
    nan = record.pop("nan")
    assert nan != nan  # a float NaN; the step's JSON output writes null
    assert record == {
        "small": 1,
        "big": 9007199254740993,
        "f": 1.5,
        "exact": "12.50",
        "yes": True,
        "nothing": None,
        "txt": "é",
        "u": UUID,
        "b": "AP8=",
        "d": "2026-01-31",
        "forever": "infinity",
        "ts": "2026-01-31T12:30:00.25",
        "tstz": "2026-01-31T10:30:00+00:00",
        "t": "08:15:00",
        "ttz": "08:15:00+05:30",
        "iv": "P1DT2H",
        "j": {"a": [1, None]},
        "ints": [1, 2],
        "stamps": ["2026-01-01T00:00:00+00:00"],
        "net": "10.0.0.0/8",
        "r": "[1,5)",
        "composite": ["1", "x"],  # an anonymous row: its fields as text
    }


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("WITH gone AS (DELETE FROM orders RETURNING id) SELECT * FROM gone", "data-modifying"),
        ("SELECT nextval('ids')", "read-only transaction"),
        ("SELECT add_order(9)", "read-only transaction"),
        ("DELETE FROM orders", "syntax error"),
        ("SELECT 1; DELETE FROM orders", "syntax error|multiple commands|cannot insert"),
    ],
)
async def test_a_query_cannot_write(
    pg: OwnDatabase, tmp_path: Path, sql: str, refusal: str
) -> None:
    pg.sql("CREATE SEQUENCE IF NOT EXISTS ids")
    pg.sql(
        "CREATE OR REPLACE FUNCTION add_order(n int) RETURNS int LANGUAGE sql AS"
        " 'INSERT INTO orders VALUES (n, ''new'', 0) RETURNING id'"
    )
    with pytest.raises(PluginError, match=refusal) as failed:
        await run(InputPostgres, query(pg, sql), context(tmp_path))
    assert failed.value.retryable is False
    assert pg.sql("SELECT count(*) FROM orders") == [(4,)]


async def test_duplicate_column_names_fail_clearly(pg: OwnDatabase, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="more than one column named 'id'"):
        await run(InputPostgres, query(pg, "SELECT id, id FROM orders"), context(tmp_path))


async def test_rows_stream_with_bounded_memory(pg: OwnDatabase, tmp_path: Path) -> None:
    """100,000 rows through Input.postgres -> Output.postgres: the peak of Python
    allocations stays a small fraction of what holding the rows would take."""
    pg.sql("CREATE TABLE copied (n int, label text, at timestamptz)")
    rows = 100_000
    source = query(
        pg,
        "SELECT n, repeat('x', 100) || n AS label, now() AS at FROM generate_series(1, %(n)s) n",
        params={"n": rows},
        fetch_size=1000,
    )
    sink = {**pg.connection, "table": "copied", "batch_size": 1000}
    ctx = context(tmp_path)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        count = 0
        async for _ in start(OutputPostgres, sink, ctx, start(InputPostgres, source, ctx)):
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == rows
    assert pg.sql("SELECT count(*), count(DISTINCT n) FROM copied") == [(rows, rows)]
    held = rows * 300  # a record of these three fields takes well over 300 bytes
    assert peak < held / 10, f"peak {peak} bytes for {rows} rows"
    print(f"peak Python allocations {peak / 1e6:.1f} MB for {rows} rows")


async def test_norns_own_database_is_refused_on_the_server_the_test_reaches(
    pg: OwnDatabase, database_url: str, tmp_path: Path
) -> None:
    """`database_url` is a Norn database (migrated) on the same server as the test's."""
    ctx = context(tmp_path, protected_databases=protected_databases(database_url))
    assert await run(InputPostgres, query(pg, "SELECT 1 AS one"), ctx) == [{"one": 1}]
    norn = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    for host in ("localhost", "127.0.0.1", "::1"):
        own = {**query(pg, "SELECT 1"), "host": host, "database": norn}
        with pytest.raises(PluginError, match="Norn's own database"):
            await run(InputPostgres, own, ctx)


async def test_without_the_allowance_loopback_and_sockets_are_refused(
    pg: OwnDatabase, tmp_path: Path
) -> None:
    closed = context(tmp_path, allow_private_networks=False)
    for host in (pg.connection["host"], "localhost", "/var/run/postgresql"):
        with pytest.raises(BlockedAddress):
            await run(InputPostgres, {**query(pg, "SELECT 1"), "host": host}, closed)


async def test_libpq_never_falls_back_to_the_executors_password(
    pg: OwnDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "norns-own-password")
    config = InputPostgres.parse_config(query(pg, "SELECT 1"))
    kwargs = connection_kwargs(config, Endpoint("127.0.0.1", "127.0.0.1"), context(tmp_path))
    kwargs.update(host=pg.connection["host"], hostaddr=None, port=config.port)
    with psycopg.connect(**{k: v for k, v in kwargs.items() if v is not None}) as conn:
        assert conn.info.password == ""
        assert conn.info.dsn.count("norns-own-password") == 0
