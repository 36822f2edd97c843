"""Reads that must agree with each other (a page of runs and those runs' steps) made in
one REPEATABLE READ transaction: one snapshot of the read models however many
statements they take. Read apart, a projection's commit can fall between two statements
and show a run `running` beside steps that have all finished, or a requeued run beside
its next attempt's steps.

The query classes take anything with a pool's `connection()`; `snapshot` hands them
one connection, inside its transaction, for as long as the block lasts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from psycopg import AsyncConnection


class ConnectionSource(Protocol):
    """A pool, or one connection lent as if it were one (`snapshot`)."""

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]: ...


class _Lent:
    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self._conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        yield self._conn


@asynccontextmanager
async def snapshot(pool: ConnectionSource) -> AsyncIterator[ConnectionSource]:
    """One pooled connection in a read-only REPEATABLE READ transaction, held for the
    block: every statement through what it yields sees the same committed state."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield _Lent(conn)
