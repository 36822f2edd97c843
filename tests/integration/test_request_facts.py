"""The versions that authenticate a request, read on the event loop against real Postgres
(projections/request_facts.py): the requests that ask while a read is out share the next
statement, each is told only what it asked for, and none is told what was true before it
asked; a client gone mid-read, or a failed read, leaves the others' reads as they were."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from application.event_store import NornEventStore
from infrastructure.postgres import create_read_pool
from projections.request_facts import RequestFactsQuery
from tests.conftest import seed_tenant


class GatedPool:
    """The real pool, counting statements; a statement's answer can be held back at a
    gate (after the statement ran), and the next connection can be made to fail."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.statements: list[list[UUID]] = []
        self.gate: asyncio.Event | None = None
        self.ran = asyncio.Event()
        self.fail_next = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        if self.fail_next:
            self.fail_next = False
            raise psycopg.OperationalError("connection refused (the test's outage)")
        async with self.pool.connection() as conn:
            yield self._Gated(conn, self)

    class _Gated:
        def __init__(self, conn: Any, owner: GatedPool) -> None:
            self._conn, self._owner = conn, owner

        async def execute(self, query: str, params: Any, **kwargs: Any) -> Any:
            self._owner.statements.append(sorted(params[0]))
            cursor = await self._conn.execute(query, params, **kwargs)
            rows = await cursor.fetchall()
            self._owner.ran.set()
            if self._owner.gate is not None:
                await self._owner.gate.wait()
            return _Rows(rows)


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    async def fetchall(self) -> list[Any]:
        return self._rows


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[GatedPool]:
    read_pool = create_read_pool(database_url, max_size=4)
    await read_pool.open()
    yield GatedPool(read_pool)
    await read_pool.close()


def tenants(event_store: NornEventStore, count: int) -> list[UUID]:
    ids = [uuid4() for _ in range(count)]
    for n, tenant_id in enumerate(ids):
        seed_tenant(event_store, tenant_id, f"t{n}")
    return ids


async def test_requests_asking_together_share_a_statement_and_get_their_own_answer(
    event_store: NornEventStore, pool: GatedPool
) -> None:
    ids = tenants(event_store, 3)
    missing = uuid4()
    facts = RequestFactsQuery(pool)  # type: ignore[arg-type]
    asks = [[ids[0]], [ids[1], missing], [ids[2]], [ids[0], ids[2]]] * 5
    answers = await asyncio.gather(*(facts.read(ask) for ask in asks))
    assert len(pool.statements) == 1  # twenty requests, one statement
    for ask, answer in zip(asks, answers, strict=True):
        assert answer.versions == {i: 1 for i in ask if i != missing}


async def test_a_request_is_never_told_what_was_true_before_it_asked(
    event_store: NornEventStore, pool: GatedPool
) -> None:
    """A request asking while a read is out waits for the next one: the read out may
    have looked before the request's session (here: a tenant) changed."""
    [first] = tenants(event_store, 1)
    facts = RequestFactsQuery(pool)  # type: ignore[arg-type]
    pool.gate = asyncio.Event()
    early = asyncio.create_task(facts.read([first]))
    await pool.ran.wait()  # the first read has looked: no second tenant yet
    [second] = tenants(event_store, 1)
    late = asyncio.create_task(facts.read([first, second]))
    await asyncio.sleep(0.05)
    assert not late.done()  # not answered from the read that looked earlier
    pool.gate.set()
    assert (await early).versions == {first: 1}
    assert (await late).versions == {first: 1, second: 1}
    assert pool.statements == [[first], sorted([first, second])]


async def test_a_client_gone_mid_read_leaves_the_others_their_answer(
    event_store: NornEventStore, pool: GatedPool
) -> None:
    ids = tenants(event_store, 2)
    facts = RequestFactsQuery(pool)  # type: ignore[arg-type]
    pool.gate = asyncio.Event()
    gone = asyncio.create_task(facts.read([ids[0]]))
    stays = asyncio.create_task(facts.read([ids[1]]))
    await pool.ran.wait()
    gone.cancel()
    pool.gate.set()
    assert (await stays).versions == {ids[1]: 1}
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_failed_read_fails_its_requests_and_the_next_one_reads_again(
    event_store: NornEventStore, pool: GatedPool
) -> None:
    ids = tenants(event_store, 1)
    facts = RequestFactsQuery(pool)  # type: ignore[arg-type]
    pool.fail_next = True
    failed = await asyncio.gather(facts.read(ids), facts.read(ids), return_exceptions=True)
    assert [type(e) for e in failed] == [psycopg.OperationalError] * 2
    assert (await facts.read(ids)).versions == {ids[0]: 1}
