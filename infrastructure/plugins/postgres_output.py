"""Output.postgres: records into a PostgreSQL table, written with COPY.

- append: COPY into the table.
- replace: TRUNCATE the table, then COPY. Readers of the table wait until the step ends
  (TRUNCATE's lock), then see the new rows, never a half-written table.
- upsert: each batch is COPYed into a temporary table, then merged with INSERT ... ON
  CONFLICT (key) DO UPDATE; of records with the same key the last one wins.

A step attempt is one transaction, committed after its last record: a failed, cancelled
or retried attempt leaves the table as it was, so retries never write twice. (Only if
the executor died between that commit and recording the step would a retry write again;
an upsert would then rewrite the same rows.) Records are held `batch_size` at a time:
each batch is written, then passed on to the following steps.

The columns written are the record's fields: a column a record does not name gets its
default (append, replace) or keeps its value (upsert); a field the table lacks fails the
step naming it. Values are converted as postgres_values.py describes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from psycopg import sql

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext
from infrastructure.plugins.postgres_connection import (
    PostgresConnection,
    connect,
    connection_hosts,
    connection_problems,
    database_error,
)
from infrastructure.plugins.postgres_values import column_writer

_TABLE = (
    "The table, or schema.table; names are used exactly as written (case-sensitive, no"
    " quotes needed)."
)
_KEY = "upsert only: the columns of a unique constraint or index that identify a row."
_BATCH = "Records held, written with one COPY, then passed on."
TableName = Annotated[str, msgspec.Meta(min_length=1, max_length=127, description=_TABLE)]
Column = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
_ORDINAL = "norn$ord"  # the temporary table's record order, so the last record wins
_STAGE = "norn_upsert"
_COLUMNS = """
SELECT a.attname, t.typname, t.typcategory, a.attgenerated <> ''
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""


@dataclass(frozen=True)
class _Column:
    writer: Any  # postgres_values.column_writer's, or None
    generated: bool


class OutputPostgres(Plugin):
    type, name = "Output", "postgres"
    description = "Write records into a PostgreSQL table: append, upsert on a key, or replace."

    class Config(PostgresConnection, kw_only=True):
        table: TableName
        mode: Literal["append", "upsert", "replace"] = "append"
        key: Annotated[list[Column], msgspec.Meta(max_length=32, description=_KEY)] = []
        batch_size: Annotated[int, msgspec.Meta(gt=0, le=100_000, description=_BATCH)] = 5000

    @classmethod
    def check(cls, config: Any) -> list[str]:
        problems = connection_problems(config)
        if not all(table_parts(config.table)):
            problems.append("config.table: a table name, or schema.table")
        if config.mode == "upsert" and not config.key:
            problems.append("config.key: required for mode upsert")
        if config.key and config.mode != "upsert":
            problems.append("config.key: only mode upsert uses a key")
        if len(set(config.key)) != len(config.key):
            problems.append("config.key: names a column twice")
        return problems

    @classmethod
    def destinations(cls, config: Any) -> list[str]:
        return connection_hosts(config)

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        target = sql.Identifier(*table_parts(config.table))
        written = batches = seen = 0
        async with connect(config, context) as connection:
            try:
                columns = await _columns(connection, config.table, target)
                for name in config.key:
                    if name not in columns:
                        raise PluginError(
                            f"key column {name!r} is not a column of {config.table}",
                            retryable=False,
                        )
                if config.mode == "replace":
                    await connection.execute(sql.SQL("TRUNCATE {}").format(target))
                writer = _Writer(connection, config, target, columns)
                batch: list[Record] = []
                async for record in records:
                    batch.append(record)
                    if len(batch) >= config.batch_size:
                        written += await writer.write(batch, seen)
                        batches, seen = batches + 1, seen + len(batch)
                        for done in batch:
                            yield done
                        batch = []
                        await context.checkpoint()
                if batch:
                    written += await writer.write(batch, seen)
                    batches += 1
                    for done in batch:
                        yield done
                await connection.commit()
            except psycopg.Error as error:
                raise database_error(f"writing to {config.table}", error, config) from None
        context.log(f"{config.mode}: {written} rows to {config.table} in {batches} batches")


def table_parts(table: str) -> tuple[str, ...]:
    """('schema', 'table') or ('table',); an empty part means the name is malformed."""
    parts = tuple(table.split("."))
    return parts if len(parts) <= 2 else ("",)


async def _columns(
    connection: psycopg.AsyncConnection, table: str, target: sql.Identifier
) -> dict[str, _Column]:
    found = await (
        await connection.execute(
            "SELECT c.oid, c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (target.as_string(connection),),
        )
    ).fetchone()
    if found is None:
        raise PluginError(f"table {table} does not exist (or is not visible)", retryable=False)
    if found[1] not in ("r", "p"):
        raise PluginError(f"{table} is not a table", retryable=False)
    rows = await (await connection.execute(_COLUMNS, (found[0],))).fetchall()
    return {
        name: _Column(column_writer(kind, category), generated)
        for name, kind, category, generated in rows
    }


class _Writer:
    def __init__(
        self,
        connection: psycopg.AsyncConnection,
        config: Any,
        target: sql.Identifier,
        columns: dict[str, _Column],
    ) -> None:
        self._connection = connection
        self._config = config
        self._target = target
        self._columns = columns
        self._staged: tuple[str, ...] | None = None  # the upsert stage's columns

    async def write(self, batch: list[Record], before: int) -> int:
        """Write one batch (records before + 1 ... are in it); how many rows it wrote.
        Consecutive records with the same fields are written together."""
        written = start = 0
        while start < len(batch):
            fields = batch[start].keys()
            end = start + 1
            while end < len(batch) and batch[end].keys() == fields:
                end += 1
            written += await self._write_alike(batch[start:end], before + start)
            start = end
        return written

    async def _write_alike(self, records: list[Record], before: int) -> int:
        fields = self._fields(records[0], before)
        if not fields and self._config.mode != "upsert":  # rows of defaults; COPY needs columns
            statement = sql.SQL("INSERT INTO {} SELECT FROM generate_series(1, %s)")
            await self._connection.execute(statement.format(self._target), (len(records),))
            return len(records)
        rows = self._rows(records, fields, before)
        if self._config.mode != "upsert":
            await self._copy(self._target, fields, rows)
            return len(rows)
        self._check_key(records, before)
        return await self._upsert(fields, rows)

    def _fields(self, record: Record, before: int) -> tuple[str, ...]:
        for name in record:
            column = self._columns.get(name)
            if column is None or column.generated:
                what = "a generated column of" if column else "not a column of"
                raise PluginError(
                    f"record {before + 1}: field {name!r} is {what} {self._config.table}"
                    f" (its columns: {_listed(self._columns)})",
                    retryable=False,
                )
        return tuple(record)

    def _rows(self, batch: list[Record], fields: tuple[str, ...], before: int) -> list[list[Any]]:
        rows = [[record[name] for name in fields] for record in batch]
        for i, name in enumerate(fields):
            writer = self._columns[name].writer
            if writer is None:
                continue
            for number, row in enumerate(rows, before + 1):
                try:
                    row[i] = writer(row[i])
                except ValueError as error:
                    raise PluginError(
                        f"record {number}: field {name!r}: {error}", retryable=False
                    ) from None
        return rows

    def _check_key(self, batch: list[Record], before: int) -> None:
        for number, record in enumerate(batch, before + 1):
            for name in self._config.key:
                if record.get(name) is None:
                    raise PluginError(
                        f"record {number} has no value for key field {name!r}", retryable=False
                    )

    async def _copy(self, into: sql.Composable, fields: tuple[str, ...], rows: list[Any]) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(into, _names(fields))
        async with self._connection.cursor().copy(statement) as copy:
            for row in rows:
                await copy.write_row(row)

    async def _upsert(self, fields: tuple[str, ...], rows: list[list[Any]]) -> int:
        stage = sql.Identifier(_STAGE)
        run = self._connection.execute
        if fields != self._staged:  # a stage of the batch's columns, with their types
            await run(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(stage))
            await run(
                sql.SQL(
                    "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, 0::bigint AS {}"
                    " FROM {} WITH NO DATA"
                ).format(stage, _names(fields), sql.Identifier(_ORDINAL), self._target)
            )
            self._staged = fields
        else:
            await run(sql.SQL("TRUNCATE {}").format(stage))
        for ordinal, row in enumerate(rows):
            row.append(ordinal)
        await self._copy(stage, (*fields, _ORDINAL), rows)
        key = _names(self._config.key)
        updated = [name for name in fields if name not in self._config.key]
        action = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updated
                )
            )
            if updated
            else sql.SQL("DO NOTHING")
        )
        merged = await run(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT DISTINCT ON ({}) {} FROM {} ORDER BY {}, {} DESC"
                " ON CONFLICT ({}) {}"
            ).format(
                self._target,
                _names(fields),
                key,
                _names(fields),
                stage,
                key,
                sql.Identifier(_ORDINAL),
                key,
                action,
            )
        )
        return max(merged.rowcount, 0)


def _names(names: tuple[str, ...] | list[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _listed(columns: dict[str, _Column], limit: int = 20) -> str:
    names = [n for n, c in columns.items() if not c.generated]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
