"""A database of the test's own for the database plugins (norn_t_pg_<random>, on the
server of NORN_TEST_DATABASE_URL, dropped at the end), and running the plugins on it
the way the executor does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infrastructure.plugins.base import Plugin, Record, StepContext
from tests.unit.plugins.helpers import make_context, stream


@dataclass(frozen=True)
class OwnDatabase:
    url: str
    connection: dict[str, Any]
    """The plugins' connection fields for it (no password: the test server trusts)."""

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []


def connection_fields(url: str, database: str) -> dict[str, Any]:
    info = conninfo_to_dict(url)
    fields: dict[str, Any] = {
        "host": info.get("host") or "127.0.0.1",
        "database": database,
        "user": info.get("user") or "postgres",
    }
    if info.get("port"):
        fields["port"] = int(info["port"])
    return fields


@pytest.fixture(scope="module")
def pg(pg_admin_url: str) -> Iterator[OwnDatabase]:
    name = f"norn_t_pg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield OwnDatabase(
            make_conninfo(pg_admin_url, dbname=name), connection_fields(pg_admin_url, name)
        )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def context(tmp_path: Path, **overrides: Any) -> StepContext:
    """A step context allowed to reach the (loopback) test server."""
    return make_context(tmp_path, **{"allow_private_networks": True, **overrides})


def start(
    plugin: type[Plugin], config: dict[str, Any], ctx: StepContext, records: Any = ()
) -> AsyncIterator[Record]:
    """The plugin's output stream, without the catalog's checks (some tests send what
    the checks would refuse, to show the server refuses it too)."""
    upstream = records if hasattr(records, "__anext__") else stream(records)
    return plugin().execute(plugin.parse_config(config), ctx, upstream)


async def run(
    plugin: type[Plugin], config: dict[str, Any], ctx: StepContext, records: Any = ()
) -> list[Record]:
    return [r async for r in start(plugin, config, ctx, records)]
