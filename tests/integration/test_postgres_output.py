"""Output.postgres against a real PostgreSQL database the test creates: append, upsert
and replace, one transaction per attempt (a failed or cancelled step leaves the table as
it was), and clear errors for a field or table that is not there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from infrastructure.plugins.base import PluginError, Record, StepContext
from infrastructure.plugins.postgres import InputPostgres, OutputPostgres
from tests.integration.postgres_support import OwnDatabase, context, pg, run

__all__ = ["pg"]  # the fixture


def new_table(pg: OwnDatabase, columns: str = "id int PRIMARY KEY, name text, qty int") -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    pg.sql(f"CREATE TABLE {name} ({columns})")
    return name


def sink(pg: OwnDatabase, table: str, **fields: Any) -> dict[str, Any]:
    return {**pg.connection, "table": table, **fields}


def rows(pg: OwnDatabase, table: str) -> list[tuple[Any, ...]]:
    return pg.sql(f"SELECT * FROM {table} ORDER BY 1")


ITEMS = [{"id": i, "name": f"item {i}", "qty": i * 10} for i in range(1, 6)]


async def test_append_copies_every_record_and_passes_them_on(
    pg: OwnDatabase, tmp_path: Path
) -> None:
    table = new_table(pg, "id int DEFAULT 0, name text DEFAULT 'unnamed', qty int")
    passed = await run(OutputPostgres, sink(pg, table, batch_size=2), context(tmp_path), ITEMS)
    assert passed == ITEMS
    assert rows(pg, table) == [(i, f"item {i}", i * 10) for i in range(1, 6)]

    more = [{"id": 6, "name": "six"}, {"id": 7, "qty": 70}, {"id": 8, "name": None}, {}]
    await run(OutputPostgres, sink(pg, table), context(tmp_path), more)
    # a field a record lacks takes the column's default
    assert rows(pg, table)[:1] + rows(pg, table)[6:] == [
        (0, "unnamed", None),
        (6, "six", None),
        (7, "unnamed", 70),
        (8, None, None),
    ]


async def test_upsert_updates_by_key_and_the_last_record_of_a_key_wins(
    pg: OwnDatabase, tmp_path: Path
) -> None:
    table = new_table(pg)
    pg.sql(f"INSERT INTO {table} VALUES (1, 'old', 1), (2, 'keep', 2)")
    records = [
        {"id": 1, "name": "first"},
        {"id": 3, "name": "new", "qty": 3},
        {"id": 1, "name": "second"},  # same batch: wins over "first"
        {"id": 3, "qty": 33},  # a later batch
    ]
    config = sink(pg, table, mode="upsert", key=["id"], batch_size=3)
    assert await run(OutputPostgres, config, context(tmp_path), records) == records
    # an update sets only the fields the record has
    assert rows(pg, table) == [(1, "second", 1), (2, "keep", 2), (3, "new", 33)]


async def test_upsert_on_a_composite_key_of_a_schema_qualified_table(
    pg: OwnDatabase, tmp_path: Path
) -> None:
    pg.sql('CREATE SCHEMA IF NOT EXISTS "Sales"')
    pg.sql('CREATE TABLE "Sales"."Stock" (shop text, sku text, qty int, PRIMARY KEY (shop, sku))')
    config = sink(pg, "Sales.Stock", mode="upsert", key=["shop", "sku"])
    first = [{"shop": "a", "sku": "x", "qty": 1}, {"shop": "b", "sku": "x", "qty": 2}]
    await run(OutputPostgres, config, context(tmp_path), first)
    await run(OutputPostgres, config, context(tmp_path), [{"shop": "a", "sku": "x", "qty": 9}])
    assert rows(pg, '"Sales"."Stock"') == [("a", "x", 9), ("b", "x", 2)]


async def test_replace_swaps_the_contents(pg: OwnDatabase, tmp_path: Path) -> None:
    table = new_table(pg)
    pg.sql(f"INSERT INTO {table} VALUES (1, 'old', 1), (99, 'gone', 0)")
    await run(OutputPostgres, sink(pg, table, mode="replace"), context(tmp_path), ITEMS[:2])
    assert rows(pg, table) == [(1, "item 1", 10), (2, "item 2", 20)]


async def failing_after(records: list[Record], error: Exception) -> AsyncIterator[Record]:
    for record in records:
        yield record
    raise error


@pytest.mark.parametrize("mode", ["replace", "append", "upsert"])
async def test_a_failed_step_leaves_the_table_as_it_was(
    pg: OwnDatabase, tmp_path: Path, mode: str
) -> None:
    table = new_table(pg)
    pg.sql(f"INSERT INTO {table} VALUES (1, 'before', 1)")
    config = sink(pg, table, mode=mode, batch_size=2, key=["id"] if mode == "upsert" else [])
    bad = [*ITEMS[1:4], {"id": 9, "qty": "many"}]  # batch 2 fails in PostgreSQL
    with pytest.raises(PluginError, match='invalid input syntax for type integer: "many"'):
        await run(OutputPostgres, config, context(tmp_path), bad)
    upstream_failed = failing_after(ITEMS[1:4], RuntimeError("upstream broke"))
    with pytest.raises(RuntimeError):
        await run(OutputPostgres, config, context(tmp_path), upstream_failed)
    assert rows(pg, table) == [(1, "before", 1)]


async def test_a_cancelled_replace_leaves_the_table_as_it_was(
    pg: OwnDatabase, tmp_path: Path
) -> None:
    table = new_table(pg)
    pg.sql(f"INSERT INTO {table} VALUES (1, 'before', 1)")
    ctx = context(tmp_path)

    async def cancelled_midway(ctx: StepContext) -> AsyncIterator[Record]:
        for record in ITEMS:
            if record["id"] == 4:
                ctx.cancelled.set()  # the run is cancelled while batches are written
            yield record

    config = sink(pg, table, mode="replace", batch_size=2)
    with pytest.raises(PluginError, match="cancelled"):
        await run(OutputPostgres, config, ctx, cancelled_midway(ctx))
    assert rows(pg, table) == [(1, "before", 1)]


async def test_a_field_the_table_lacks_fails_naming_it(pg: OwnDatabase, tmp_path: Path) -> None:
    table = new_table(pg, "id int, total int GENERATED ALWAYS AS (id * 2) STORED")
    records = [{"id": 1}, {"id": 2, "colour": "red"}]
    with pytest.raises(PluginError, match=r"record 2: field 'colour' is not a column") as bad:
        await run(OutputPostgres, sink(pg, table), context(tmp_path), records)
    assert "its columns: id" in bad.value.message and bad.value.retryable is False
    with pytest.raises(PluginError, match="field 'total' is a generated column"):
        await run(OutputPostgres, sink(pg, table), context(tmp_path), [{"id": 1, "total": 5}])
    assert rows(pg, table) == []


async def test_a_missing_table_or_key_column_fails_clearly(pg: OwnDatabase, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="table nowhere does not exist") as missing:
        await run(OutputPostgres, sink(pg, "nowhere"), context(tmp_path), ITEMS)
    assert missing.value.retryable is False
    pg.sql("CREATE OR REPLACE VIEW a_view AS SELECT 1 AS id")
    with pytest.raises(PluginError, match="a_view is not a table"):
        await run(OutputPostgres, sink(pg, "a_view"), context(tmp_path), ITEMS)
    table = new_table(pg)
    with pytest.raises(PluginError, match="key column 'sku' is not a column"):
        config = sink(pg, table, mode="upsert", key=["sku"])
        await run(OutputPostgres, config, context(tmp_path), ITEMS)
    with pytest.raises(PluginError, match="record 1 has no value for key field 'id'"):
        config = sink(pg, table, mode="upsert", key=["id"])
        await run(OutputPostgres, config, context(tmp_path), [{"name": "no id"}])


async def test_values_read_by_input_go_back_into_their_types(
    pg: OwnDatabase, tmp_path: Path
) -> None:
    columns = (
        "n numeric, ts timestamptz, d date, u uuid, b bytea, j jsonb, tags text[],"
        " iv interval, doc text, ok boolean"
    )
    source, target = new_table(pg, columns), new_table(pg, columns)
    pg.sql(
        f"INSERT INTO {source} VALUES (12.50, '2026-01-31 12:00+02', 'infinity',"
        " gen_random_uuid(), '\\x00ff', '\"just text\"', '{a,b}', '1 mon 2 days', 'x', true)"
    )
    read = await run(
        InputPostgres, {**pg.connection, "query": f"TABLE {source}"}, context(tmp_path)
    )
    await run(OutputPostgres, sink(pg, target), context(tmp_path), read)
    assert pg.sql(f"SELECT * FROM {source} EXCEPT SELECT * FROM {target}") == []
    assert pg.sql(f"SELECT count(*) FROM {target}") == [(1,)]
    await run(OutputPostgres, sink(pg, target), context(tmp_path), [{"doc": {"a": [1]}}])
    assert pg.sql(f"SELECT doc FROM {target} WHERE doc LIKE '{{%'") == [('{"a":[1]}',)]
    with pytest.raises(
        PluginError, match="record 1: field 'b': a bytea value is written as base64"
    ):
        await run(OutputPostgres, sink(pg, target), context(tmp_path), [{"b": "%%%"}])
