"""Input.postgres: one SQL query's rows as records, from a PostgreSQL database.

The query runs in a READ ONLY transaction through a server-side cursor (DECLARE ...
FETCH), `fetch_size` rows at a time, so memory stays bounded whatever the result's
size. Parameters are bound by the server (psycopg's %(name)s placeholders), never
spliced into the SQL text; a value `{"param": "<name>"}` takes the run's param of that
name. Values become JSON as postgres_values.py describes. Connections pass the guard of
postgres_guard.py; Output.postgres lives in postgres_output.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext
from infrastructure.plugins.postgres_connection import (
    PostgresConnection,
    connect,
    connection_hosts,
    connection_problems,
    database_error,
)
from infrastructure.plugins.postgres_output import OutputPostgres
from infrastructure.plugins.postgres_values import (
    SESSION_SETTINGS,
    prepare_reading,
    record_maker,
)

__all__ = ["InputPostgres", "OutputPostgres"]

_QUERY = (
    "One SELECT (or WITH ..., VALUES, TABLE) statement, run in a read-only transaction;"
    " %(name)s placeholders take `params` (write a literal % as %% when there are params)."
)
_PARAMS = (
    'Values for the query\'s %(name)s placeholders: a JSON value, or {"param": "<run'
    ' param>"} (optionally with "default") to take the run\'s param of that name.'
)
_FETCH = "Rows fetched from the server-side cursor at a time (memory stays bounded by it)."
_PLACEHOLDER = re.compile(r"%(%|\((?P<name>[^)]*)\)[sbt])?")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_LEADING = re.compile(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_READING = re.compile(r"(select|with|values|table)\b", re.IGNORECASE)
CURSOR_NAME = "norn_input"


class InputPostgres(Plugin):
    type, name = "Input", "postgres"
    description = "Run a read-only SQL query on PostgreSQL; each row becomes a record."

    class Config(PostgresConnection, kw_only=True):
        query: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000, description=_QUERY)]
        params: Annotated[dict[str, Any], msgspec.Meta(description=_PARAMS)] = {}
        fetch_size: Annotated[int, msgspec.Meta(gt=0, le=100_000, description=_FETCH)] = 1000

    @classmethod
    def check(cls, config: Any) -> list[str]:
        return connection_problems(config) + query_problems(config.query, config.params)

    @classmethod
    def destinations(cls, config: Any) -> list[str]:
        return connection_hosts(config)

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        async for _ in records:  # a dependency only orders this step after another
            pass
        values = bind_params(config.params, context.params)
        query = config.query.rstrip().rstrip(";")
        count = 0
        async with connect(config, context) as connection:
            prepare_reading(connection)
            await connection.set_read_only(True)
            try:
                await connection.execute(SESSION_SETTINGS)
                cursor = connection.cursor(name=CURSOR_NAME)
                await cursor.execute(query, values or None)
                make = record_maker(cursor.description or [])
                while rows := await cursor.fetchmany(config.fetch_size):
                    for row in rows:
                        yield make(row)
                    count += len(rows)
                    await context.checkpoint()
            except psycopg.Error as error:
                raise database_error("the query failed", error, config) from None
        context.log(f"read {count} rows from {config.host}:{config.port}/{config.database}")


def query_problems(query: str, params: dict[str, Any]) -> list[str]:
    problems = []
    if not _READING.match(_LEADING.sub("", query, count=1)):
        problems.append("config.query: must be one SELECT statement (or WITH ..., VALUES, TABLE)")
    used: set[str] = set()
    for match in _PLACEHOLDER.finditer(query):
        if match.group(1) is None and params:
            problems.append(
                "config.query: a % that is not a %(name)s placeholder must be written %%"
            )
            break
        if match.group("name") is not None:
            used.add(match.group("name"))
    for name in sorted(used - params.keys()):
        problems.append(f"config.params: the query uses %({name})s, which params lacks")
    for name, value in params.items():
        if not _PARAM_NAME.match(name):
            problems.append(f"config.params.{name}: a name of letters, digits and _")
        elif problem := _value_problem(value):
            problems.append(f"config.params.{name}: {problem}")
    return problems


def _value_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    if (
        not isinstance(value.get("param"), str)
        or not value["param"]
        or set(value)
        - {
            "param",
            "default",
        }
    ):
        return (
            'an object names a run param: {"param": "<name>"} or {"param": "<name>",'
            ' "default": <value>}'
        )
    return None


def bind_params(params: dict[str, Any], run_params: dict[str, Any]) -> dict[str, Any]:
    """The values bound to the query: run params looked up, objects as jsonb."""
    bound = {}
    for name, value in params.items():
        if isinstance(value, dict):
            if value["param"] in run_params:
                value = run_params[value["param"]]
            elif "default" in value:
                value = value["default"]
            else:
                raise PluginError(
                    f"params.{name}: the run has no param {value['param']!r} (and no default)",
                    retryable=False,
                )
        bound[name] = Jsonb(value) if isinstance(value, dict) else value
    return bound
